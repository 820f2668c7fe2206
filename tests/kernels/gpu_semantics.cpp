// Kernels that are wrong on a GPU but pass on the CPU backend, whose work-group body runs once per
// group with its work-items in a plain loop (porta_kernel.h). tests/spirv runs them on the
// OpenCL backend, which gives the GPU's answer; backends/cpu/README.md says what the CPU misses.
#include <math.h>
#include <porta/porta_kernel.h>

namespace {
constexpr uint32_t kItems = 256;  // the most work-items per group these kernels take
}

// A device function the compiler is told not to inline.
#if PORTA_TARGET_GPU
#define OUT_OF_LINE __device__ __attribute__((noinline))
#else
#define OUT_OF_LINE __attribute__((noinline))
#endif

// A value kept outside inner(): per group on the CPU, per work-item on a GPU, where only item 0
// ever sets its own copy. CPU: x[g] in every slot of group g; GPU: x[g], then zeros.
PORTA_KERNEL(keeps_value, const float* x, float* out) {
  float first = 0.0f;
  porta::inner([&](uint32_t item) {
    if (item == 0) first = x[porta::group_id(0)];
  });
  porta::inner(
      [&](uint32_t item) { out[porta::group_id(0) * porta::group_size(0) + item] = first; });
}

// Each item stores its value and reads its neighbour's (item + 1, wrapping) in the same inner
// loop: no barrier between the neighbour's store and the read. The slots start as NaN, so a read
// that comes first sees NaN. with_barrier = 1 splits the loop in two, the correct form.
PORTA_KERNEL(rotate, uint32_t with_barrier, const float* x, float* out) {
  PORTA_SHARED float tile[kItems];
  const uint32_t n = porta::group_size(0);
  const uint32_t base = porta::group_id(0) * n;
  porta::inner([&](uint32_t item) { tile[item] = NAN; });
  if (with_barrier) {
    porta::inner([&](uint32_t item) { tile[item] = x[base + item]; });
    porta::inner([&](uint32_t item) { out[base + item] = tile[(item + 1) % n]; });
  } else {
    porta::inner([&](uint32_t item) {
      tile[item] = x[base + item];
      out[base + item] = tile[(item + 1) % n];
    });
  }
}

namespace {
// Shared memory declared in a helper rather than the kernel body. Left out of line, a GPU
// compiler may make it one variable for all the groups running at once; the SPIR-V build's pass
// step inlines it into the kernel, so each group has its own.
OUT_OF_LINE void reverse_group(const float* in, float* out) {
  PORTA_SHARED float scratch[kItems];
  const uint32_t n = porta::group_size(0);
  const uint32_t base = porta::group_id(0) * n;
  porta::inner([&](uint32_t item) { scratch[item] = in[base + item]; });
  porta::inner([&](uint32_t item) { out[base + item] = scratch[n - 1 - item]; });
}
}  // namespace

PORTA_KERNEL(reverse_in_helper, const float* in, float* out) { reverse_group(in, out); }
