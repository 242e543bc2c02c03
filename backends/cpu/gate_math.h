// Gate functions of the recurrent kernels (recurrent.cpp): sigmoid and tanh that a
// compiler vectorizes inside a loop.
//
// glibc's expf/tanhf are scalar calls, so a loop of them is slower than NumPy's SIMD
// ufuncs; the float versions here are branch-free (range reduction, a polynomial, selects
// for the special cases), accurate to a few ulp, saturate correctly for large |x| and pass
// NaN through. Double uses the exact std:: functions (the float64 path is for checking,
// not for speed).
#pragma once

#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
// GCC otherwise keeps to 256-bit vectors on AVX-512 machines; these loops are all
// arithmetic (no frequency penalty worth the halved width)
#pragma GCC target("prefer-vector-width=512")
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace dlx_cpu {
namespace gate {

inline float bits_to_float(std::int32_t i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}

// a * b + c, fused where the machine has FMA (explicit: the build turns off contraction, so
// that plain arithmetic rounds as NumPy's does; the gate functions are approximations anyway)
inline float madd(float a, float b, float c) {
#ifdef __FMA__
    return std::fma(a, b, c);
#else
    return a * b + c;
#endif
}

// exp(x) for x in [-86.6, 88.72] (no range checks): x = n ln2 + r, |r| <= ln2/2, and
// exp(r) = 1 + r + r^2 Q(r), Q of degree 4 fitted to the relative error (under 1 ulp);
// 2^n built as 2^(n-1) * 2 so that n = 128 (x up to log(FLT_MAX)) needs no special case.
inline float exp_core(float x) {
    const float fx = std::floor(madd(x, 1.44269504088896341f, 0.5f));
    float r = madd(fx, -0.693359375f, x);  // fx * 0.693359375 is exact
    r = madd(fx, 2.12194440e-4f, r);
    float q = 1.381459180265665e-3f;
    q = madd(q, r, 8.368712849915028e-3f);
    q = madd(q, r, 4.166838899254799e-2f);
    q = madd(q, r, 1.666652113199234e-1f);
    q = madd(q, r, 4.999999403953552e-1f);
    const float p = madd(q, r * r, r) + 1.0f;
    const std::int32_t n = static_cast<std::int32_t>(fx);
    return (p * bits_to_float((n + 126) << 23)) * 2.0f;  // 2^(n-1) * 2
}

constexpr float kExpHi = 88.72283935546875f;  // log(FLT_MAX)
constexpr float kExpLo = -86.6f;  // exp(x) < 2.4e-38 below: flushed to 0 (subnormal range)

// exp(x): inf above log(FLT_MAX), 0 below -86.6, NaN stays NaN.
inline float exp_f32(float x) {
    float xc = x > kExpLo ? x : kExpLo;  // NaN -> kExpLo: keep the arithmetic finite
    xc = xc < kExpHi ? xc : kExpHi;
    float y = exp_core(xc);
    y = x > kExpHi ? std::numeric_limits<float>::infinity() : y;
    y = x < kExpLo ? 0.0f : y;
    return x != x ? x : y;
}

// 1 / (1 + exp(-x)): 1 above 86.6; below -log(FLT_MAX) (true value under 2.9e-39, in the
// subnormal range) 0; NaN stays NaN.
inline float sigmoid(float x) {
    float t = -x > kExpLo ? -x : kExpLo;
    t = t < kExpHi ? t : kExpHi;
    float y = 1.0f / (1.0f + exp_core(t));
    y = -x > kExpHi ? 0.0f : y;
    return x != x ? x : y;
}

// tanh for float (after Cephes's tanhf): |x| < 0.625: odd polynomial; else
// 1 - 2 / (exp(2|x|) + 1) (no cancellation to speak of: the result is above 0.55);
// |x| > 9: +-1 exactly. NaN stays NaN.
inline float tanh(float x) {
    const float a = std::fabs(x);
    const float z = x * x;
    float p = -5.70498872745e-3f;
    p = madd(p, z, 2.06390887954e-2f);
    p = madd(p, z, -5.37397155531e-2f);
    p = madd(p, z, 1.33314422036e-1f);
    p = madd(p, z, -3.33332819422e-1f);
    const float small = madd(p * z, x, x);
    const float e = exp_core(2.0f * (a < 9.0f ? a : 9.0f));
    float large = 1.0f - 2.0f / (e + 1.0f);
    large = a > 9.0f ? 1.0f : large;
    large = std::copysign(large, x);
    const float y = a < 0.625f ? small : large;
    return x != x ? x : y;
}

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double tanh(double x) { return std::tanh(x); }

}  // namespace gate
}  // namespace dlx_cpu
