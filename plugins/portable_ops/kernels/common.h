// Helpers shared by the portable kernels.
#pragma once

#include <math.h>
#include <porta/porta_kernel.h>

namespace porta_ops {

// The global index of work-item `item` in a 1-D launch whose grid may wrap into y (see
// launch_elementwise in portable_ops.h).
PORTA_DEVICE_FUNCTION int64_t linear_index(uint32_t item) {
  const int64_t group = int64_t(porta::group_id(1)) * porta::group_count(0) + porta::group_id(0);
  return group * porta::group_size(0) + item;
}

// This group's index in a grid that may wrap into y.
PORTA_DEVICE_FUNCTION int64_t group_index() {
  return int64_t(porta::group_id(1)) * porta::group_count(0) + porta::group_id(0);
}

// Calls f(i) for the indices i < count of a 1-D launch (launch_elementwise): the groups split
// [0, count) into equal spans, whole passes of their items (one pass on a GPU, several on the
// host), which each group walks a pass at a time: full passes without a bounds check, only the
// last with one. Under a condition the compiler may not move stores and divisions into the
// vector loop without AVX-512 masking, so a check on every item would keep the CPU loop scalar
// elsewhere. The spans follow from the grid alone, so any grid covers count.
template <class F>
PORTA_DEVICE_FUNCTION void for_each_index(int64_t count, F&& f) {
  const int64_t items = porta::group_size(0);
  const int64_t groups = int64_t(porta::group_count(0)) * porta::group_count(1);
  const int64_t passes = ((count + groups - 1) / groups + items - 1) / items;
  const int64_t first = group_index() * passes * items;
  const int64_t end = first + passes * items < count ? first + passes * items : count;
  int64_t pass = first;
  for (; pass + items <= end; pass += items) porta::inner([&](uint32_t item) { f(pass + item); });
  if (pass < end) {
    porta::inner([&](uint32_t item) {
      if (pass + item < end) f(pass + item);
    });
  }
}

// Asks a CPU to bring p into its cache ahead of use, where the hardware prefetchers would not
// guess it. A GPU hides memory latency with other warps instead.
PORTA_DEVICE_FUNCTION void prefetch(const void* p) {
#if PORTA_TARGET_CPU
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

// The same for a line about to be written, asked for owned. Only where measured to pay: owning
// the lines ahead of the stores made the softmax rows slower on a Zen 4 host (docs/decisions.md,
// "Softmax rows: no prefetch for writing") and max-pooling faster on a Xeon ("Max-pool rows ask
// for their memory ahead").
PORTA_DEVICE_FUNCTION void prefetch_for_writing(void* p) {
#if PORTA_TARGET_CPU
  __builtin_prefetch(p, 1);
#else
  (void)p;
#endif
}

// The most work-items a group has (and the size of the per-item arrays in shared memory).
inline constexpr uint32_t kMaxItems = 1024;

// Integer helpers for the host's launch plans (gemm_params.h) and the kernels alike.
#if PORTA_TARGET_GPU
#define PORTA_OPS_HOST_DEVICE __host__ __device__
#else
#define PORTA_OPS_HOST_DEVICE
#endif
PORTA_OPS_HOST_DEVICE constexpr int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
PORTA_OPS_HOST_DEVICE constexpr int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
PORTA_OPS_HOST_DEVICE constexpr int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Consecutive elements a work-item takes at a time when it walks a row. On the CPU that is a
// vector's worth or two, so that a loop over the lanes of a block vectorises and its lanes are
// independent accumulators (a compiler may not reorder a plain float reduction); on a GPU it is
// one, so that neighbouring work-items read neighbouring words.
#if PORTA_TARGET_CPU
inline constexpr uint32_t kLanes = 16;
#else
inline constexpr uint32_t kLanes = 1;
#endif

// kLanes floats as one value, for sums and maxima carried from block to block. GCC splits a
// carried array of kLanes floats into kLanes scalars (an extract and a scalar add per lane and
// block); vectors stay in registers. On the CPU the value is made of Vectors, as wide as the
// build's registers: one where they hold kLanes floats (AVX-512), else an array of them (kParts).
// A generic vector wider than the registers GCC keeps on the stack, with every add a store and
// reloads through general registers and every compare and select done lane by lane: that made
// the row ops on AVX2 three times slower than on AVX-512. On a GPU kLanes is 1 and Lanes a float.
#if PORTA_TARGET_CPU
#if defined(__AVX512F__)
inline constexpr uint32_t kVectorBytes = 64;
#elif defined(__AVX__)
inline constexpr uint32_t kVectorBytes = 32;
#else
inline constexpr uint32_t kVectorBytes = 16;  // SSE2, NEON
#endif
typedef float Vector __attribute__((vector_size(kVectorBytes)));
#else
typedef float Vector;
#endif
inline constexpr uint32_t kParts = kLanes * sizeof(float) / sizeof(Vector);

// Lanes [p * sizeof(Vector) / 4, (p + 1) * sizeof(Vector) / 4) in part[p].
struct VectorParts {
  Vector part[kParts];
};

typedef std::conditional_t<kParts == 1, Vector, VectorParts> Lanes;
static_assert(sizeof(Lanes) == kLanes * sizeof(float), "Lanes holds kLanes floats");

// Part p of v: v itself when it is one Vector.
PORTA_DEVICE_FUNCTION Vector& part(Vector& v, uint32_t) { return v; }
PORTA_DEVICE_FUNCTION Vector& part(VectorParts& v, uint32_t p) { return v.part[p]; }

// op(a, b) a Vector at a time.
template <class Op>
PORTA_DEVICE_FUNCTION Lanes lanewise(Lanes a, Lanes b, Op&& op) {
  for (uint32_t p = 0; p < kParts; ++p) part(a, p) = op(part(a, p), part(b, p));
  return a;
}

PORTA_DEVICE_FUNCTION Lanes add(Lanes a, Lanes b) {
  return lanewise(a, b, [](Vector u, Vector w) { return u + w; });
}

// The larger of a and b lane by lane; b where either is a NaN.
PORTA_DEVICE_FUNCTION Lanes larger(Lanes a, Lanes b) {
  return lanewise(a, b, [](Vector u, Vector w) { return u > w ? u : w; });
}

// Every lane v.
PORTA_DEVICE_FUNCTION Lanes splat_lanes(float v) {
  Lanes out;
  for (uint32_t p = 0; p < kParts; ++p) part(out, p) = Vector{} + v;
  return out;
}

// The kLanes floats from p, a Vector at a time: copied whole, the parts went through the stack.
PORTA_DEVICE_FUNCTION Lanes load_lanes(const float* p) {
  Lanes out;
  for (uint32_t i = 0; i < kParts; ++i) {
    __builtin_memcpy(&part(out, i), p + i * (sizeof(Vector) / sizeof(float)), sizeof(Vector));
  }
  return out;
}

PORTA_DEVICE_FUNCTION Lanes as_lanes(const float (&v)[kLanes]) { return load_lanes(v); }

// Walks work-item `item` of `items` along n elements: blocks of kLanes consecutive elements are
// dealt out round-robin (item i takes blocks i, i + items, ...), and the partial block at the
// end goes to the item whose turn it is. Calls f(index, lane) for every element it takes, the
// elements of one lane in increasing order.
template <class F>
PORTA_DEVICE_FUNCTION void walk(int64_t n, uint32_t item, uint32_t items, F&& f) {
  const int64_t blocks = n / kLanes;
  for (int64_t b = item; b < blocks; b += items) {
    const int64_t first = b * kLanes;
    for (uint32_t lane = 0; lane < kLanes; ++lane) f(first + lane, lane);
  }
  if (kLanes > 1 && int64_t(item) == blocks % items) {
    const int64_t first = blocks * kLanes;
    const uint32_t rest = uint32_t(n - first);
    for (uint32_t lane = 0; lane < rest; ++lane) f(first + lane, lane);
  }
}

// A count known at compile time: walk_blocks() hands one over for the full blocks, so that loops
// bounded by it unroll and vectorise. (Not std::integral_constant: its conversion is a host
// function to nvcc.)
template <uint32_t N>
struct fixed_count {
  PORTA_DEVICE_FUNCTION constexpr operator uint32_t() const { return N; }
};

// Like walk(), a block at a time: f(first, count) for the count consecutive elements from first,
// where count is a fixed_count<kLanes> for full blocks and a uint32_t for the partial block.
template <class F>
PORTA_DEVICE_FUNCTION void walk_blocks(int64_t n, uint32_t item, uint32_t items, F&& f) {
  const int64_t blocks = n / kLanes;
  for (int64_t b = item; b < blocks; b += items) f(b * kLanes, fixed_count<kLanes>{});
  if (kLanes > 1 && int64_t(item) == blocks % items) {
    const int64_t first = blocks * kLanes;
    f(first, uint32_t(n - first));
  }
}

// out[i] = op(a[i]) (and b[i], in the second form) for the elements item takes in walk(). out
// may be a or b: each block is loaded whole before it is stored, which also spares the compiler
// the aliasing check that keeps a store-as-you-go loop from vectorising.
template <class Op>
PORTA_DEVICE_FUNCTION void map(int64_t n, uint32_t item, uint32_t items, const float* a, float* out,
                      Op&& op) {
  walk_blocks(n, item, items, [&](int64_t first, auto count) {
    float va[kLanes];
    for (uint32_t lane = 0; lane < count; ++lane) va[lane] = a[first + lane];
    for (uint32_t lane = 0; lane < count; ++lane) va[lane] = op(first + lane, va[lane]);
    for (uint32_t lane = 0; lane < count; ++lane) out[first + lane] = va[lane];
  });
}
template <class Op>
PORTA_DEVICE_FUNCTION void map(int64_t n, uint32_t item, uint32_t items, const float* a, const float* b,
                      float* out, Op&& op) {
  walk_blocks(n, item, items, [&](int64_t first, auto count) {
    float va[kLanes], vb[kLanes];
    for (uint32_t lane = 0; lane < count; ++lane) va[lane] = a[first + lane];
    for (uint32_t lane = 0; lane < count; ++lane) vb[lane] = b[first + lane];
    for (uint32_t lane = 0; lane < count; ++lane) va[lane] = op(first + lane, va[lane], vb[lane]);
    for (uint32_t lane = 0; lane < count; ++lane) out[first + lane] = va[lane];
  });
}

// Folds the lanes v[0, kLanes) with op in a halving tree (log2(kLanes) steps, each a vector
// operation on the CPU); destroys v.
template <class Op>
PORTA_DEVICE_FUNCTION float fold_lanes(float (&v)[kLanes], Op&& op) {
  for (uint32_t width = kLanes / 2; width > 0; width /= 2) {
    for (uint32_t lane = 0; lane < width; ++lane) v[lane] = op(v[lane], v[lane + width]);
  }
  return v[0];
}

// The work-item of `items` that takes element i in walk().
PORTA_DEVICE_FUNCTION uint32_t walker_of(int64_t i, uint32_t items) { return uint32_t(i / kLanes % items); }

// The lowest finite float: the start of a running maximum. Unlike -infinity, x - lowest is never
// NaN for x = -infinity, so masked (-inf) elements need no special case.
inline constexpr float kLowest = -3.40282347e+38f;

// c ? a : b. On the CPU as bit masks: GCC turns a plain ?: between floats into a branch, and
// unless AVX-512 masking is available, floating-point work it then moves into the branch keeps the
// loop from vectorising (the work might trap).
PORTA_DEVICE_FUNCTION float pick(bool c, float a, float b) {
#if PORTA_TARGET_GPU
  return c ? a : b;
#else
  uint32_t ai, bi;
  __builtin_memcpy(&ai, &a, sizeof ai);
  __builtin_memcpy(&bi, &b, sizeof bi);
  const uint32_t mask = 0u - uint32_t(c);
  const uint32_t bits = (ai & mask) | (bi & ~mask);
  float out;
  __builtin_memcpy(&out, &bits, sizeof out);
  return out;
#endif
}

// The sum and the maximum of the lanes, folded with fold_lanes().
PORTA_DEVICE_FUNCTION float sum_lanes(float (&v)[kLanes]) {
  return fold_lanes(v, [](float u, float w) { return u + w; });
}
PORTA_DEVICE_FUNCTION float max_lanes(float (&v)[kLanes]) {
  return fold_lanes(v, [](float u, float w) { return pick(w > u, w, u); });
}

namespace detail {
// 2^n * p(r) with r = x - n*ln2, |r| <= ln2/2 (Cephes' expf without its range checks), p of
// degree 6: 1 + r + r^2 q(r), q a Chebyshev fit of degree 4 to (e^r - 1 - r) / r^2 on that
// interval: one multiply-add fewer than Cephes' degree 7, for about the same error (every float
// in [-87, 88.3] checked against the double exponential: at most 1.08 ulp, Cephes' 1.01). So
// within 2 ulp for x in [-87, 88.3]; garbage outside (no clamp: see pick()), NaN for NaN.
PORTA_DEVICE_FUNCTION float exp_in_range(float x) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + kRound;
  const float n = t - kRound;
  uint32_t bits;
  __builtin_memcpy(&bits, &t, sizeof bits);
  const uint32_t scale_bits = (bits - 0x4B400000u + 127u) << 23;  // 2^n
  float scale;
  __builtin_memcpy(&scale, &scale_bits, sizeof scale);
  float r = x - n * 0.693359375f;  // ln2 in two parts; n * 0.693359375 is exact
  r = r + n * 2.12194440e-4f;
  float p = 1.3926175889e-3f;
  p = p * r + 8.3631733432e-3f;
  p = p * r + 4.1666556150e-2f;
  p = p * r + 1.6666577756e-1f;
  p = p * r + 0.5f;
  p = p * (r * r) + r + 1.0f;
  return p * scale;
}
}  // namespace detail

// e^x. On a GPU the vendor's expf. On the CPU one that vectorises (libm's does not without
// -ffast-math): within 2 ulp; 0 below -87 (where e^x is subnormal), +infinity above 88.3.
PORTA_DEVICE_FUNCTION float exp_f32(float x) {
#if PORTA_TARGET_GPU
  return expf(x);
#else
  return pick(x < -87.0f, 0.0f, pick(x > 88.3f, INFINITY, detail::exp_in_range(x)));
#endif
}

// e^x for x <= 0 (or NaN), as exp_f32 with one check fewer: what softmax needs, x - max.
PORTA_DEVICE_FUNCTION float exp_nonpositive(float x) {
#if PORTA_TARGET_GPU
  return expf(x);
#else
  return pick(x < -87.0f, 0.0f, detail::exp_in_range(x));
#endif
}

// A running softmax normaliser: the maximum m of the values seen and s = sum of e^(value - m).
// Starts at m = kLowest, s = 0. A NaN makes s NaN; so does +infinity once anything else is
// added, as in the textbook two-pass form.

// Adds v, with one exponential: the smaller of v and m is scaled to the larger.
PORTA_DEVICE_FUNCTION void online_add(float& m, float& s, float v) {
  const bool up = v > m;
  const float hi = pick(up, v, m);
  const float lo = pick(up, m, v);
  const float e = exp_nonpositive(lo - hi);
  s = pick(up, s * e + 1.0f, s + e);
  m = hi;
}

// Adds the values v[0, K): their maximum first, then one rescale of s and K exponentials, which
// is fewer operations per value than K online_add calls.
template <uint32_t K>
PORTA_DEVICE_FUNCTION void online_add_many(float& m, float& s, const float (&v)[K]) {
  float hi = m;
  for (uint32_t k = 0; k < K; ++k) hi = pick(v[k] > hi, v[k], hi);
  float sum = s * exp_nonpositive(m - hi);
  for (uint32_t k = 0; k < K; ++k) sum += exp_nonpositive(v[k] - hi);
  s = sum;
  m = hi;
}

// Merges another running normaliser (m2, s2) into (m, s).
PORTA_DEVICE_FUNCTION void online_merge(float& m, float& s, float m2, float s2) {
  const float hi = pick(m2 > m, m2, m);
  s = s * exp_nonpositive(m - hi) + s2 * exp_nonpositive(m2 - hi);
  m = hi;
}

}  // namespace porta_ops
