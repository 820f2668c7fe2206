// test_kernels_gpu.cpp: the kernels of test_kernels.c for the GPU backends, with the same names,
// parameters and results, built by porta_add_kernel_library(... GPU_ONLY) into
// lib/porta_test_kernels_gpu.cuda.fatbin and .hip-<arch>.hsaco. Written against CUDA's names,
// which HIP shares (porta_kernel.h includes hip_runtime.h under hipcc).
#include <porta/porta_kernel.h>
#include <stdint.h>

#ifndef TEST_KERNELS_VARIANT
#define TEST_KERNELS_VARIANT 0
#endif

namespace {

__device__ uint64_t flat_global_index() {
  const uint64_t width = uint64_t{gridDim.x} * blockDim.x;
  const uint64_t height = uint64_t{gridDim.y} * blockDim.y;
  const uint64_t gx = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const uint64_t gy = uint64_t{blockIdx.y} * blockDim.y + threadIdx.y;
  const uint64_t gz = uint64_t{blockIdx.z} * blockDim.z + threadIdx.z;
  return (gz * height + gy) * width + gx;
}

}  // namespace

PORTA_KERNEL(saxpy, int n, float a, const float* x, float* y) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

PORTA_KERNEL(fill_index, uint32_t* out) {
  const uint64_t index = flat_global_index();
  out[index] = static_cast<uint32_t>(index);
}

PORTA_KERNEL(count_items, uint32_t* counts) { atomicAdd(&counts[flat_global_index()], 1u); }

// 1D; the launch provides blockDim.x floats of dynamic shared memory (the test never gives less).
PORTA_KERNEL(shared_reverse, float* data) {
  extern __shared__ float tile[];
  const uint32_t n = blockDim.x;
  float* block = data + uint64_t{blockIdx.x} * n;
  tile[threadIdx.x] = block[threadIdx.x];
  __syncthreads();
  block[threadIdx.x] = tile[n - 1 - threadIdx.x];
}

// A serial dependency chain per work-item, as on the CPU: slow on purpose.
PORTA_KERNEL(spin, int64_t iterations, float* out) {
  float v = static_cast<float>(threadIdx.x);
  for (int64_t k = 0; k < iterations; ++k) v = v * 0.999999f + 1.0f;
  out[uint64_t{blockIdx.x} * blockDim.x + threadIdx.x] = v;
}

PORTA_KERNEL(noop) {}

PORTA_KERNEL(variant, uint32_t* out) {
  if (blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && threadIdx.x == 0 &&
      threadIdx.y == 0 && threadIdx.z == 0) {
    *out = TEST_KERNELS_VARIANT;
  }
}
