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

// exp(x) for float: Cephes's expf (x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, about
// 1 ulp). n in [-125, 128]; 2^n is built as 2^(n-1) * 2 so that n = 128 (x up to
// log(FLT_MAX)) needs no special case. Below -86.6 the result (under 2.4e-38, at or below
// the smallest normal float) is flushed to 0; above log(FLT_MAX) it is inf; NaN stays NaN.
inline float exp_f32(float x) {
    const float hi = 88.72283935546875f;  // log(FLT_MAX)
    const float lo = -86.6f;
    float xc = x > lo ? x : lo;  // NaN -> lo: keep the arithmetic below finite
    xc = xc < hi ? xc : hi;
    const float fx = std::floor(xc * 1.44269504088896341f + 0.5f);
    // r = x - fx * ln2 in two parts (fx * 0.693359375 is exact)
    float r = xc - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    const float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    const std::int32_t n = static_cast<std::int32_t>(fx);
    const float scale = bits_to_float((n + 126) << 23);  // 2^(n-1)
    float y = (p * scale) * 2.0f;
    y = x > hi ? std::numeric_limits<float>::infinity() : y;
    y = x < lo ? 0.0f : y;
    return x != x ? x : y;
}

// 1 / (1 + exp(-x)): 0 and 1 at the ends (exp overflowing to inf gives 0), NaN stays NaN.
inline float sigmoid(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

// tanh for float: Cephes's tanhf. |x| < 0.625: odd polynomial; else 1 - 2 / (exp(2|x|) + 1)
// (no cancellation to speak of there, the result is above 0.55); |x| > 9: +-1 exactly.
inline float tanh(float x) {
    const float a = std::fabs(x);
    const float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const float small = p * z * x + x;
    const float e = exp_f32(2.0f * (a < 9.0f ? a : 9.0f));
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
