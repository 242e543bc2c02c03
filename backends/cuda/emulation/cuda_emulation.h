// A small CPU emulation of the CUDA kernel language, enough to compile dlx's
// .cu sources with g++ and run them in CPU-only test runs.
//
// What it provides: the function qualifiers (__global__, __device__, __host__,
// __forceinline__, __restrict__), dim3 / uint3 and the built-in index variables
// blockIdx, threadIdx, blockDim, gridDim, atomicAdd, the float and double math
// functions by their unqualified names, and dlx_emulation::launch, which runs a
// kernel's whole grid.
//
// How a launch runs: every block, and every thread of a block, one after the
// other on the calling CPU thread. A kernel is therefore emulated correctly when
// its result does not depend on the order its threads run in, and it does not
// wait for other threads -- so: no __shared__ memory, no __syncthreads (not
// defined here: using it fails to compile), no warp intrinsics. Grid-stride
// loops and gather formulations satisfy this; atomicAdd is a plain add.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

using std::exp;
using std::fabs;
using std::fmax;
using std::fmin;
using std::log;
using std::pow;
using std::sqrt;
using std::tanh;

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 blockIdx = {0, 0, 0};
inline thread_local uint3 threadIdx = {0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

template <typename T>
inline T atomicAdd(T* address, T value) {
  T old = *address;
  *address = old + value;
  return old;
}

namespace dlx_emulation {

// Names of parameter types, checked by the Python launcher against the arrays
// and NumPy scalars it is given: "float32", "int64", ..., "*float32" for a pointer.
template <typename T>
struct type_name;
template <>
struct type_name<float> {
  static std::string get() { return "float32"; }
};
template <>
struct type_name<double> {
  static std::string get() { return "float64"; }
};
template <>
struct type_name<int> {
  static std::string get() { return "int32"; }
};
template <>
struct type_name<unsigned int> {
  static std::string get() { return "uint32"; }
};
template <>
struct type_name<long long> {
  static std::string get() { return "int64"; }
};
template <>
struct type_name<bool> {
  static std::string get() { return "bool"; }
};
template <>
struct type_name<unsigned char> {
  static std::string get() { return "uint8"; }
};
template <typename T>
struct type_name<T*> {
  static std::string get() { return "*" + type_name<std::remove_cv_t<T>>::get(); }
};

template <typename... Args>
std::string signature(void (*)(Args...)) {
  std::string names;
  ((names += type_name<std::remove_cv_t<Args>>::get() + ","), ...);
  return names;
}

template <typename... Args, std::size_t... I>
void call(void (*kernel)(Args...), void** args, std::index_sequence<I...>) {
  kernel(*static_cast<std::remove_cv_t<Args>*>(args[I])...);
}

// Runs kernel<<<grid, block>>>(args...): args[i] points at the value of
// parameter i, as in cudaLaunchKernel.
template <typename... Args>
void launch(void (*kernel)(Args...), const unsigned int* grid, const unsigned int* block,
            void** args) {
  gridDim = dim3(grid[0], grid[1], grid[2]);
  blockDim = dim3(block[0], block[1], block[2]);
  for (unsigned int bz = 0; bz < grid[2]; ++bz)
    for (unsigned int by = 0; by < grid[1]; ++by)
      for (unsigned int bx = 0; bx < grid[0]; ++bx) {
        blockIdx = {bx, by, bz};
        for (unsigned int tz = 0; tz < block[2]; ++tz)
          for (unsigned int ty = 0; ty < block[1]; ++ty)
            for (unsigned int tx = 0; tx < block[0]; ++tx) {
              threadIdx = {tx, ty, tz};
              call(kernel, args, std::index_sequence_for<Args...>{});
            }
      }
}

}  // namespace dlx_emulation
