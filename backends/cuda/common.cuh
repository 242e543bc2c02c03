// Shared by every dlx CUDA source: `#include "common.cuh"` is the only include
// a .cu file in this folder has.
//
// Under nvcc / NVRTC this is plain CUDA. Under a host C++ compiler (no
// __CUDACC__) it pulls in the project's emulation header, so the same kernels
// compile with g++ and run on the CPU in the test suite (see
// backends/cuda_modules.py). Kernels written for both worlds follow the rules in
// emulation/cuda_emulation.h: grid-stride loops, no shared memory, no
// __syncthreads, no warp intrinsics, no other headers.
#pragma once

#ifndef __CUDACC__
#include "emulation/cuda_emulation.h"
#endif

// The most negative finite value of T (NVRTC has no <cfloat> / INFINITY).
template <typename T>
__device__ __forceinline__ T dlx_lowest();
template <>
__device__ __forceinline__ float dlx_lowest<float>() {
  return -3.402823466e+38f;
}
template <>
__device__ __forceinline__ double dlx_lowest<double>() {
  return -1.7976931348623157e+308;
}

// Logistic sigmoid 1 / (1 + e^-x) in the precision of T.
template <typename T>
__device__ __forceinline__ T dlx_sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}
