// Kernels with the mistakes that run right on the CPU's fast mode and wrong on a GPU, each beside
// its correct version: what PORTA_CPU_MODE=racecheck must report, and must not. Groups of at most
// kMaxItems items; n is the group size (one group per launch unless said otherwise).
#include <porta/porta_kernel.h>

#include <array>
#include <cstdint>
#include <vector>

namespace {
constexpr uint32_t kMaxItems = 256;
}

// y[i] = x[i - 1] (0 for i = 0) through shared memory, without a barrier between the store and
// the neighbour's load: the fast mode's item loop happens to store first.
PORTA_KERNEL(missing_barrier, uint32_t n, const float* x, float* y) {
  PORTA_SHARED float tile[kMaxItems];
  porta::inner([&](uint32_t item) {
    tile[item] = x[item];
    y[item] = item > 0 && item < n ? tile[item - 1] : 0.0f;
  });
}
PORTA_KERNEL(missing_barrier_fixed, uint32_t n, const float* x, float* y) {
  PORTA_SHARED float tile[kMaxItems];
  porta::inner([&](uint32_t item) { tile[item] = x[item]; });
  porta::inner([&](uint32_t item) { y[item] = item > 0 && item < n ? tile[item - 1] : 0.0f; });
}

// y[p] = x[2p] + x[2p + 1]: both items of a pair add into one shared slot in the same phase.
PORTA_KERNEL(shared_conflict, uint32_t n, const float* x, float* y) {
  PORTA_SHARED float pair_sum[kMaxItems / 2];
  porta::inner([&](uint32_t item) {
    if (item % 2 == 0) pair_sum[item / 2] = 0.0f;
  });
  porta::inner([&](uint32_t item) { pair_sum[item / 2] += x[item]; });
  porta::inner([&](uint32_t item) {
    if (item % 2 == 0 && item < n) y[item / 2] = pair_sum[item / 2];
  });
}
PORTA_KERNEL(shared_conflict_fixed, uint32_t n, const float* x, float* y) {
  PORTA_SHARED float pair_sum[kMaxItems / 2];
  porta::inner([&](uint32_t item) {
    if (item % 2 == 0) pair_sum[item / 2] = x[item] + x[item + 1];
  });
  porta::inner([&](uint32_t item) {
    if (item % 2 == 0 && item < n) y[item / 2] = pair_sum[item / 2];
  });
}

// Doubles y in the first half of the group only. The condition reads item 0's slot of an
// exclusive outside inner(): the same value for all on the CPU, each item's own on a GPU, so only
// some items reach the second barrier.
PORTA_KERNEL_MAX_GROUP(divergent_barrier, kMaxItems, uint32_t n, float* y) {
  porta::exclusive<uint32_t, kMaxItems> mine;
  porta::inner([&](uint32_t item) { mine(item) = item; });
  if (mine(0) < n / 2) {
    porta::inner([&](uint32_t item) { y[item] *= 2.0f; });
  }
}
PORTA_KERNEL(divergent_barrier_fixed, uint32_t n, float* y) {
  porta::inner([&](uint32_t item) {
    if (item < n / 2) y[item] *= 2.0f;
  });
}

// y[i] = x[i] / (the group's sum of x): the sum is kept in a variable outside inner(), one per
// group on the CPU, one per item (its own element only) on a GPU.
PORTA_KERNEL(kept_value, uint32_t n, const float* x, float* y) {
  float total = 0.0f;
  porta::inner([&](uint32_t item) { total += x[item]; });
  porta::inner([&](uint32_t item) {
    if (item < n) y[item] = x[item] / total;
  });
}
PORTA_KERNEL(kept_value_fixed, uint32_t n, const float* x, float* y) {
  PORTA_SHARED float total;
  porta::inner([&](uint32_t item) {
    if (item == 0) {
      float sum = 0.0f;
      for (uint32_t i = 0; i < n; ++i) sum += x[i];
      total = sum;
    }
  });
  porta::inner([&](uint32_t item) {
    if (item < n) y[item] = x[item] / total;
  });
}

// y[0] = the sum of x, every item adding into it unguarded; the fixed one adds atomically.
PORTA_KERNEL(global_race, uint32_t n, const float* x, float* y) {
  porta::inner([&](uint32_t item) {
    if (item < n) y[0] += x[item];
  });
}
PORTA_KERNEL(global_race_fixed, uint32_t n, const float* x, float* y) {
  porta::inner([&](uint32_t item) {
    if (item < n) porta::atomic_add(y, x[item]);
  });
}

#if !PORTA_TARGET_GPU  // host C++'s library: the host's builds only (fast, simt, racecheck)
// Kernels whose library calls throw, as host C++ does: every mode fails the launch with the
// exception's status and goes on. A vector of `bytes` per item (2^62 bytes cannot be had).
PORTA_KERNEL(throws_bad_alloc, uint64_t bytes, float* y) {
  std::vector<char> held(bytes);
  porta::inner([&](uint32_t item) { y[item] = float(held.size()); });
}
// y[i] = 1, then y[i] = a[i % 4], but item 1 reads a[n]: out of range for n > 3, thrown while the
// items after it in the phase wait at its barrier and those before it have not yet started it.
PORTA_KERNEL(throws_out_of_range, uint32_t n, float* y) {
  const std::array<float, 4> a{1.0f, 2.0f, 3.0f, 4.0f};
  porta::inner([&](uint32_t item) { y[item] = 1.0f; });
  porta::inner([&](uint32_t item) { y[item] = a.at(item == 1 ? n : item % 4); });
}
#endif
