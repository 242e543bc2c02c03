// Kernels that exercise the emulation itself (tests/test_cuda_build.py).
#include "common.cuh"

// y[i] = a * x[i] + y[i], grid-stride.
template <typename T>
__global__ void axpy(long long n, T a, const T* __restrict__ x, T* __restrict__ y) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x)
    y[i] = a * x[i] + y[i];
}

// out[i] = linear index of the thread that ran i over a 2-D grid of 2-D blocks.
__global__ void thread_ids(int* out) {
  int block = blockIdx.y * gridDim.x + blockIdx.x;
  int thread = threadIdx.y * blockDim.x + threadIdx.x;
  out[block * blockDim.x * blockDim.y + thread] = block * 1000 + thread;
}

// counts[v[i]] += 1 with atomics.
__global__ void histogram(int n, const int* v, int* counts) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    atomicAdd(counts + v[i], 1);
}

template <typename T>
__global__ void sigmoid_lowest(T* out) {
  out[0] = dlx_sigmoid(T(0.5));
  out[1] = dlx_lowest<T>();
  out[2] = tanh(T(0.5)) + exp(T(1)) + log(T(2)) + sqrt(T(2)) + fmax(T(1), T(2));
}
