// The peak probes of porta-bench, written once in the dialect: the fp32 FMA rate and the copy
// bandwidth of a device. Achieved rates of the ops are quoted as a percentage of these.
#include <porta/porta_kernel.h>

namespace {

// Independent FMA chains per work-item. On the CPU the inner loop is vectorised across
// work-items, so each chain becomes one vector register: 8 of them cover the FMA latency of
// every x86 core with two FMA pipes (4 cycles x 2). A GPU hides latency with other warps, and
// more chains would only raise register pressure.
constexpr int kChains = 8;
// FMAs per chain between two inner loops: long enough that the barrier after each (on a GPU)
// and the load and store of the accumulators (on the CPU) cost nothing measurable.
constexpr int kSteps = 64;
constexpr uint32_t kMaxItems = 1024;

// Full unrolling, spelled for each compiler (GCC for the CPU, nvcc and hipcc for GPUs).
#if PORTA_TARGET_GPU
#define PEAK_UNROLL _Pragma("unroll")
#else
#define PEAK_UNROLL _Pragma("GCC unroll 64")
#endif

PORTA_DEVICE_FUNCTION float fma_(float x, float a, float b) {
#if PORTA_TARGET_GPU
  return fmaf(x, a, b);
#else
  // -ffp-contract=off is the ISO default, so a*x+b would stay two instructions: ask for the FMA.
  return __builtin_fmaf(x, a, b);
#endif
}

}  // namespace

// out[item of group] = the sum of kChains chains of rounds * kSteps dependent FMAs each:
// 2 * kChains * kSteps * rounds FLOPs per work-item. a and b keep the values finite (a < 1).
PORTA_KERNEL(peak_fma, uint32_t rounds, float a, float b, float* out) {
  porta::exclusive<float, kMaxItems> acc[kChains];
  const uint32_t items = porta::group_size(0);
  porta::inner([&](uint32_t item) {
    for (int c = 0; c < kChains; ++c) acc[c](item) = static_cast<float>(item + c) * 1e-3f;
  });
  for (uint32_t round = 0; round < rounds; ++round) {
    porta::inner([&](uint32_t item) {
      float x[kChains];
      PEAK_UNROLL
      for (int c = 0; c < kChains; ++c) x[c] = acc[c](item);
      PEAK_UNROLL
      for (int s = 0; s < kSteps; ++s) {
        PEAK_UNROLL
        for (int c = 0; c < kChains; ++c) x[c] = fma_(x[c], a, b);
      }
      PEAK_UNROLL
      for (int c = 0; c < kChains; ++c) acc[c](item) = x[c];
    });
  }
  const uint64_t first = static_cast<uint64_t>(porta::group_id(0)) * items;
  porta::inner([&](uint32_t item) {
    float sum = 0.0f;
    for (int c = 0; c < kChains; ++c) sum += acc[c](item);
    out[first + item] = sum;
  });
}

// dst = src over n floats. Each group copies one contiguous chunk of `chunk` floats (the last
// group what is left), kUnroll * items at a time, a work-item's elements `items` apart so that a
// GPU's accesses are coalesced. On the CPU one element per work-item per inner loop: that loop
// vectorises (GCC gives up on several strided streams, whose aliasing it cannot check).
PORTA_KERNEL(peak_copy, uint64_t n, uint64_t chunk, const float* src, float* dst) {
  constexpr uint32_t kUnroll = PORTA_TARGET_GPU ? 4 : 1;
  const uint64_t items = porta::group_size(0);
  const uint64_t begin = static_cast<uint64_t>(porta::group_id(0)) * chunk;
  const uint64_t end = begin + chunk < n ? begin + chunk : n;
  uint64_t base = begin;
  for (; base + kUnroll * items <= end; base += kUnroll * items) {
    // Pointers, not a captured index: the loop must not reload anything a store could change.
    const float* from = src + base;
    float* to = dst + base;
    porta::inner([&](uint32_t item) {
      PEAK_UNROLL
      for (uint32_t u = 0; u < kUnroll; ++u) to[u * items + item] = from[u * items + item];
    });
  }
  const float* from = src + base;
  float* to = dst + base;
  const uint64_t left = end - base;
  for (uint64_t done = 0; done < left; done += items) {
    porta::inner([&](uint32_t item) {
      if (done + item < left) to[done + item] = from[done + item];
    });
  }
}
