// Kernels: 2-D max pooling, NCHW, and its gradient (no atomics, deterministic).
//
// All but one walk rows: the forward pass and the argmax pass rows of y (planes x out_h of them,
// out_w long), the backward passes rows of dx (planes x in_h, in_w long); the host's scatter
// walks whole planes. A group has group_size(0) items per row and group_size(1) rows; groups are
// numbered over a grid that may wrap into y.
//
// A window's maximum is its first in index order (row by row): ties go to the lowest index, a
// NaN wins (the first NaN: NaN propagates, as in PyTorch), and padding never takes part.
#include "common.h"

// The CPU's AVX-512 build walks rows of stride 2 (the usual 2x2 and 3x3 pooling) 16 outputs a
// step, however short the row: lanes past its end are blended away or left unstored, so no row
// needs a scalar tail (namespace avx512 below).
#if PORTA_TARGET_CPU && defined(__AVX512F__)
#include <optional>

#include "x86_intrinsics.h"
#define PORTA_POOL_AVX512 1
#else
#define PORTA_POOL_AVX512 0
#endif

// AVX2 CPUs without AVX-512 also take steps of 8 windows for rows of fewer windows and the
// disjoint backward (below). Without AVX2 (the baseline build) GCC
// splits those 8-lane vectors into SSE halves and emulates their blends, slower than the scalar
// code they replace (4-9x the samples): there no row takes steps (row_maxima_stride2).
#if PORTA_TARGET_CPU && defined(__AVX2__) && !PORTA_POOL_AVX512
#define PORTA_POOL_AVX2 1
#else
#define PORTA_POOL_AVX2 0
#endif

using porta_ops::kLanes;
constexpr int64_t kLineFloats = 16;  // the 4-byte elements of a 64-byte cache line

// The CPU's passes over rows of y ask for the input about kBytesAhead after theirs, and for the
// lines they will write there: the hardware prefetchers alone left the 3x3 stride 2 pooling's
// maxima waiting on memory (forward 74% of the copy's bandwidth, 97% with both; backward 61%,
// 92%), and the 2x2 pooling of rows of 28 at 76% (88%): docs/decisions.md, "Max-pool rows ask
// for their memory ahead".
constexpr int64_t kBytesAhead = 2048;

namespace {

// The window geometry of one spatial dimension.
struct Axis {
  int64_t in, out, window, stride, pad;

  // The input positions [*first, *last) of output position o's window that lie inside the input.
  PORTA_DEVICE_FUNCTION void clip(int64_t o, int64_t* first, int64_t* last) const {
    const int64_t start = o * stride - pad;
    *first = start > 0 ? start : 0;
    *last = start + window < in ? start + window : in;
  }
  // The input positions [*first, *last) that output position o owns where windows do not
  // overlap (stride >= window): from its window's start to the next window's, the first
  // output's from 0 and the last output's to the end of the input. They hold o's window (pad <
  // window <= stride, so every start but the first is positive) and tile the input.
  PORTA_DEVICE_FUNCTION void band(int64_t o, int64_t* first, int64_t* last) const {
    const int64_t start = o * stride - pad;
    *first = o == 0 ? 0 : start < in ? start : in;
    *last = o + 1 == out ? in : start + stride < in ? start + stride : in;
  }
  // The output positions [*first, *last) whose windows hold input position i.
  PORTA_DEVICE_FUNCTION void covering(int64_t i, int64_t* first, int64_t* last) const {
    const int64_t lo = i + pad - window + 1;  // o * stride >= lo
    *first = lo > 0 ? (lo + stride - 1) / stride : 0;
    const int64_t hi = (i + pad) / stride + 1;  // o * stride <= i + pad
    *last = hi < out ? hi : out;
  }
};

// v beats the running maximum m: larger, or a NaN over a number. Bitwise operators rather than ||
// and &&, and porta_ops::pick, keep the scans free of branches: comparisons of data mispredict.
PORTA_DEVICE_FUNCTION bool beats(float v, float m) { return (v > m) | ((v != v) & (m == m)); }

// A running window maximum and its index h * in_w + w in the plane, an Index (int32_t where
// planes have fewer than 2^31 elements: the vector loops then use lanes of that width).
template <class Index>
struct Max {
  float value = -INFINITY;
  Index at = 0;
  // Adds the candidate at index i; candidates come in index order, so ties keep the first.
  PORTA_DEVICE_FUNCTION void add(float v, int64_t i) {
    const bool take = beats(v, value);
    value = porta_ops::pick(take, v, value);
    at = take ? Index(i) : at;
  }
  // Adds the candidate at index i, in any order: the lower index wins ties (and among NaNs).
  PORTA_DEVICE_FUNCTION void merge(float v, Index i) {
    const bool tie = (v == value) | ((v != v) & (value != value));
    const bool take = beats(v, value) | (tie & (i < at));
    value = porta_ops::pick(take, v, value);
    at = take ? i : at;
  }
};

// The maximum of output (p, q)'s window in plane x.
template <class Index>
PORTA_DEVICE_FUNCTION Max<Index> window_max(const float* plane, const Axis& ah, const Axis& aw, int64_t p,
                                   int64_t q) {
  int64_t h0, h1, w0, w1;
  ah.clip(p, &h0, &h1);
  aw.clip(q, &w0, &w1);
  Max<Index> m;
  m.at = Index(h0 * aw.in + w0);  // stands where no element beats -inf: all are -inf
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t w = w0; w < w1; ++w) m.add(plane[h * aw.in + w], h * aw.in + w);
  }
  return m;
}

// The maxima of row p's windows on the CPU, a chunk of outputs at a time, in two steps whose
// loops vectorise: each column's maximum over the window rows (contiguous loads, the rows in
// order, so each column keeps its first maximum), then each window's over its columns, a column
// offset at a time across the outputs, the lower index winning ties; together that is the
// window's first maximum in index order. A window cut by the padding reads its first or last
// column again in place of the missing ones, which changes nothing. Then out(q, max) for every
// q. Windows wider than a chunk are left to window_max. Index is int32_t: the indices of a
// chunk's columns are formed in int32 lanes.
constexpr int32_t kChunk = 256;

template <class Out>
PORTA_DEVICE_FUNCTION void row_maxima_by_columns(const float* plane, const Axis& ah, const Axis& aw,
                                                 int64_t p, Out&& out) {
  int64_t h0, h1, unused;
  ah.clip(p, &h0, &h1);
  // The outputs of a chunk span (count - 1) * stride + window <= kChunk columns.
  const int64_t per_chunk = (kChunk - aw.window) / aw.stride + 1;
  const int32_t stride = int32_t(aw.stride);
  float value[kChunk], best[kChunk];
  int32_t at[kChunk], best_at[kChunk];
  for (int64_t q0 = 0; q0 < aw.out; q0 += per_chunk) {
    const int32_t count = int32_t(q0 + per_chunk < aw.out ? per_chunk : aw.out - q0);
    int64_t c0, c1;
    aw.clip(q0, &c0, &unused);
    aw.clip(q0 + count - 1, &unused, &c1);
    const int32_t n = int32_t(c1 - c0);
    const float* first_row = plane + h0 * aw.in + c0;
    const int32_t first_at = int32_t(h0 * aw.in + c0);
    for (int32_t k = 0; k < n; ++k) {
      value[k] = first_row[k];
      at[k] = first_at + k;
    }
    for (int64_t h = h0 + 1; h < h1; ++h) {
      const float* row = plane + h * aw.in + c0;
      const int32_t row_at = int32_t(h * aw.in + c0);
      for (int32_t k = 0; k < n; ++k) {
        const float v = row[k];
        const bool take = beats(v, value[k]);
        value[k] = porta_ops::pick(take, v, value[k]);
        at[k] = take ? row_at + k : at[k];
      }
    }
    // Output i's column j is at offset i * stride + first + j in the chunk, clamped to it.
    const int32_t first = int32_t(q0 * aw.stride - aw.pad - c0);
    for (int32_t i = 0; i < count; ++i) {
      int32_t k = i * stride + first;
      k = k < 0 ? 0 : k;
      best[i] = value[k];
      best_at[i] = at[k];
    }
    for (int32_t j = 1; j < int32_t(aw.window); ++j) {
      for (int32_t i = 0; i < count; ++i) {
        int32_t k = i * stride + first + j;
        k = k < 0 ? 0 : k > n - 1 ? n - 1 : k;
        const float v = value[k];
        const int32_t a = at[k];
        const bool tie = (v == best[i]) | ((v != v) & (best[i] != best[i]));
        const bool take = beats(v, best[i]) | (tie & (a < best_at[i]));
        best[i] = porta_ops::pick(take, v, best[i]);
        best_at[i] = take ? a : best_at[i];
      }
    }
    for (int32_t i = 0; i < count; ++i) out(q0 + i, Max<int32_t>{best[i], best_at[i]});
  }
}

#if PORTA_TARGET_CPU
// Windows of stride 2 across on the CPU, kStep windows a step in vectors of GCC's vector
// extension (an AVX2 register): each input row's maxima across first, the columns in order, then
// down the rows in order, which is the first maximum in index order with no comparison of
// indices. Column j of the step's windows is the even lanes of two loads. Only the windows inside
// the row take steps, the last step overlapping the one before it; those cut by the padding, at
// the row's ends, take window_max.
// (Loops over arrays of 16 lanes or of whole rows were left scalar or vectorised with remainder
// loops by GCC; steps of 16 lanes in the extension were split into scalar code on AVX2.)
constexpr int64_t kStep = 8;
typedef float Floats __attribute__((vector_size(kStep * sizeof(float))));
typedef int32_t Ints __attribute__((vector_size(kStep * sizeof(int32_t))));

PORTA_DEVICE_FUNCTION Floats load_floats(const float* at) {
  Floats v;
  __builtin_memcpy(&v, at, sizeof v);
  return v;
}

// beats() lane by lane: v larger than m, or a NaN over a number.
PORTA_DEVICE_FUNCTION Ints beats(const Floats& v, const Floats& m) {
  return (v > m) | ((v != v) & (m == m));
}

// The floats at row[at[l]] for the lanes l, each at[l] in [0, 2 kStep): a permutation of the
// row's first two steps. GCC spells it as one shuffle; clang's shuffles take constant indices
// only, so its (sanitizer) builds read the lanes one by one.
PORTA_DEVICE_FUNCTION Floats two_step_permute(const float* row, const Ints& at) {
#if defined(__clang__)
  Floats v;
  for (int64_t l = 0; l < kStep; ++l) v[l] = row[at[l]];
  return v;
#else
  return __builtin_shuffle(load_floats(row), load_floats(row + kStep), at);
#endif
}

// The 4 elements from at, each in two neighbouring lanes.
template <class T>
PORTA_DEVICE_FUNCTION auto pairs_of(const T* at) {
  typedef T Four __attribute__((vector_size(4 * sizeof(T))));
  Four v;
  __builtin_memcpy(&v, at, sizeof v);
  return __builtin_shufflevector(v, v, 0, 0, 1, 1, 2, 2, 3, 3);
}

// Stores the first count lanes of v at to (a plain store of the whole vector where count is
// kStep): a row of fewer windows than a step must not write past its end. Fewer lanes go as
// stores of 4, 2 and 1 of them, not lane by lane through memory.
template <class T, class V>
PORTA_DEVICE_FUNCTION void store_first(T* to, const V& v, int64_t count) {
  if (count >= kStep) {
    __builtin_memcpy(to, &v, sizeof v);
    return;
  }
  typedef T Four __attribute__((vector_size(4 * sizeof(T))));
  typedef T Two __attribute__((vector_size(2 * sizeof(T))));
  Four four = __builtin_shufflevector(v, v, 0, 1, 2, 3);
  if (count & 4) {
    __builtin_memcpy(to, &four, sizeof four);
    four = __builtin_shufflevector(v, v, 4, 5, 6, 7);
    to += 4;
  }
  Two two = __builtin_shufflevector(four, four, 0, 1);
  if (count & 2) {
    __builtin_memcpy(to, &two, sizeof two);
    two = __builtin_shufflevector(four, four, 2, 3);
    to += 2;
  }
  if (count & 1) *to = two[0];
}

// The windows [a, b) of a row that lie inside it: 2 q - pad >= 0 and 2 q - pad + window <= in.
// With `left`, a is 0 and the row's first step also holds the window cut on the left
// (joined_left).
struct Inside {
  int64_t a, b;
  bool left = false;
};
PORTA_DEVICE_FUNCTION Inside inside_stride2(const Axis& aw) {
  const int64_t last = aw.in - aw.window + aw.pad;
  return {(aw.pad + 1) / 2, porta_ops::min64(last >= 0 ? last / 2 + 1 : 0, aw.out)};
}

// Rows of fewer windows inside than a step (kShort: a row of 7 outputs) take one step, reading
// past the row's end, where that stays inside the tensor. They take instances of their own, out
// of line: inlined beside the loop over the steps of longer rows, their code made that loop
// 5-10% slower. Only on AVX2 (PORTA_POOL_AVX2): the AVX-512 build's own code takes the rows of
// stride 2 but for windows wider than 16, and its code here stays as it was measured.
constexpr bool kShortRows = PORTA_POOL_AVX2;

// The one window cut by the padding at a row's left end (pad 1 or 2: the 3x3 stride 2 pad 1
// pooling) joins the row's first step, from window 0, where that step's columns all lie in the
// row's first 2 kStep floats (window - pad <= 2) and those are inside the tensor ([plane, end)
// for every row of the plane): the columns left of the row are read as its first column, the
// window's first again, which changes neither its maximum nor that maximum's first index. Else it
// takes window_max, scalar (a quarter of the 3x3 forward's samples). AVX2 only, as kShortRows.
PORTA_DEVICE_FUNCTION Inside joined_left(const float* plane, const float* end, const Axis& ah,
                                         const Axis& aw, Inside s) {
  if (PORTA_POOL_AVX2 && s.a == 1 && s.b > s.a && aw.window - aw.pad <= 2 &&
      (ah.in - 1) * aw.in + 2 * kStep <= end - plane) {
    s.a = 0;
    s.left = true;
  }
  return s;
}

// Whether the windows inside a row take steps: at least kStep of them (kShort false), or fewer
// (kShort) whose one step, which reads kStep windows' columns, stays inside the tensor, [plane,
// end), over the window's input rows up to h1.
template <bool kShort>
PORTA_DEVICE_FUNCTION bool steps_fit(const float* plane, const float* end, int64_t h1,
                                     const Axis& aw, const Inside& s) {
  if constexpr (!kShort) return s.b - s.a >= kStep;
  return s.b - s.a < kStep && s.b > s.a &&
         (h1 - 1) * aw.in + 2 * s.a - aw.pad + aw.window + 2 * kStep - 2 <= end - plane;
}

// The maxima of the kStep windows from q0 over input rows [h0, h1), their indices h * in_w + w
// in the plane in `at` (left to the compiler to drop where unused).
struct StepMaxima {
  Floats value;
  Ints at;
};

// One input row's maxima across a step's windows, and their columns in the row.
struct Across {
  Floats value;
  Ints column;
};

// The last input row's Across of a step of an output row, kept for the same step of the next
// output row: with a window of 3 and a stride of 2 down, output row p's last input row is p + 1's
// first (as the AVX-512 build's SharedRow). Keyed by the row: the rows of a plane take the same
// steps (those of the tensor's last plane may lie otherwise than the others').
struct KeptAcross {
  const float* row = nullptr;
  Across across;
};
// One KeptAcross for each step of rows of up to kKeptSteps steps, for one plane geometry.
constexpr int64_t kKeptSteps = 16;
struct KeptSteps {
  KeptAcross step[kKeptSteps];
};

// The step's maxima down the rows [h0, h1) from their maxima across, across_of(row), each row's
// taken from `kept` where it holds it (if not null), the last row's left there.
template <class AcrossOf>
PORTA_DEVICE_FUNCTION StepMaxima down_rows(const float* plane, int64_t h0, int64_t h1,
                                           const Axis& aw, KeptAcross* kept, AcrossOf&& across_of) {
  StepMaxima best{};
  for (int64_t h = h0; h < h1; ++h) {
    const float* row = plane + h * aw.in;
    const Across across = kept && kept->row == row ? kept->across : across_of(row);
    if (kept && h + 1 == h1) *kept = {row, across};
    const Ints take = h == h0 ? ~Ints{} : beats(across.value, best.value);
    best.value = take ? across.value : best.value;
    best.at = take ? across.column + int32_t(h * aw.in) : best.at;
  }
  return best;
}

// Windows of any width, aw.window.
PORTA_DEVICE_FUNCTION StepMaxima any_step_maxima(const float* plane, int64_t h0, int64_t h1,
                                                 const Axis& aw, int64_t q0, KeptAcross* kept) {
  const Ints twice = {0, 2, 4, 6, 8, 10, 12, 14};
  return down_rows(plane, h0, h1, aw, kept, [&](const float* row) {
    const float* first = row + 2 * q0 - aw.pad;  // window l's column j: [2 l + j]
    Across across{};
    Ints j_taken{};
    for (int32_t j = 0; j < int32_t(aw.window); ++j) {
      // The even columns from j: the second vector starts one early, so that no read passes the
      // last window's last column.
      const Floats v = __builtin_shufflevector(load_floats(first + j), load_floats(first + j + 7),
                                               0, 2, 4, 6, 9, 11, 13, 15);
      const Ints take = j == 0 ? ~Ints{} : beats(v, across.value);
      across.value = take ? v : across.value;
      j_taken = take ? Ints{} + j : j_taken;
    }
    across.column = twice + j_taken + int32_t(2 * q0 - aw.pad);
    return across;
  });
}

// Windows 3 wide (the 3x3 pooling), in code of their own: columns 0 and 1 are the evens and odds
// of the 16 floats from the step's first column, column 2 the odds of the 16 from the next, one
// shuffle each within the register's halves (against two permutes and a blend for each column
// above). That leaves window l in lane (0, 1, 4, 5, 2, 3, 6, 7)[l]: the rows are taken in that
// order (their kept maxima too) and put back once per step.
PORTA_DEVICE_FUNCTION StepMaxima step_maxima3(const float* plane, int64_t h0, int64_t h1,
                                              const Axis& aw, int64_t q0, KeptAcross* kept) {
  const Ints twice = {0, 2, 8, 10, 4, 6, 12, 14};
  const StepMaxima m = down_rows(plane, h0, h1, aw, kept, [&](const float* row) {
    const float* first = row + 2 * q0 - aw.pad;
    const Floats a = load_floats(first), b = load_floats(first + kStep);
    const Floats c = load_floats(first + 1), d = load_floats(first + 1 + kStep);
    const Floats v[3] = {__builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14),
                         __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15),
                         __builtin_shufflevector(c, d, 1, 3, 9, 11, 5, 7, 13, 15)};
    Across across{v[0], {}};
    Ints j_taken{};
    for (int32_t j = 1; j < 3; ++j) {
      const Ints take = beats(v[j], across.value);
      across.value = take ? v[j] : across.value;
      j_taken = take ? Ints{} + j : j_taken;
    }
    across.column = twice + j_taken + int32_t(2 * q0 - aw.pad);
    return across;
  });
  return {__builtin_shufflevector(m.value, m.value, 0, 1, 4, 5, 2, 3, 6, 7),
          __builtin_shufflevector(m.at, m.at, 0, 1, 4, 5, 2, 3, 6, 7)};
}

PORTA_DEVICE_FUNCTION StepMaxima step_maxima(const float* plane, int64_t h0, int64_t h1,
                                             const Axis& aw, int64_t q0, KeptAcross* kept) {
  return aw.window == 3 ? step_maxima3(plane, h0, h1, aw, q0, kept)
                        : any_step_maxima(plane, h0, h1, aw, q0, kept);
}

// As step_maxima, for the step from window 0 that joined_left lets hold the window cut on the
// left: window l's column j is the row's 2 l + j - pad, or its first (0) where that lies left of
// the row, one of the row's first 2 kStep floats. (A function of its own: as one template with
// step_maxima, GCC laid the AVX-512 build's argmax kernel out differently.) Windows kWindow wide,
// or aw.window where kWindow is 0: the 3x3 pooling's take an instance whose columns unroll.
template <int32_t kWindow>
PORTA_DEVICE_FUNCTION StepMaxima left_step_maxima(const float* plane, int64_t h0, int64_t h1,
                                                  const Axis& aw, KeptAcross* kept) {
  const int32_t window = kWindow ? kWindow : int32_t(aw.window);
  const Ints twice = {0, 2, 4, 6, 8, 10, 12, 14};
  Ints columns[4];  // window <= pad + 2 <= 4 (joined_left)
  for (int32_t j = 0; j < window; ++j) {
    columns[j] = twice + (j - int32_t(aw.pad));
    columns[j] = columns[j] < 0 ? Ints{} : columns[j];
  }
  return down_rows(plane, h0, h1, aw, kept, [&](const float* row) {
    Across across{};
    for (int32_t j = 0; j < window; ++j) {
      const Ints at = columns[j];
      const Floats v = two_step_permute(row, at);
      const Ints take = j == 0 ? ~Ints{} : beats(v, across.value);
      across.value = take ? v : across.value;
      across.column = take ? at : across.column;
    }
    return across;
  });
}
PORTA_DEVICE_FUNCTION StepMaxima left_step_maxima(const float* plane, int64_t h0, int64_t h1,
                                                  const Axis& aw, KeptAcross* kept) {
  return aw.window == 3 ? left_step_maxima<3>(plane, h0, h1, aw, kept)
                        : left_step_maxima<0>(plane, h0, h1, aw, kept);
}

// Calls out(q0, count, maxima) for the steps over the windows [a, b) of a row (steps_fit<kShort>),
// whose windows take input rows [h0, h1): count is kStep, or with kShort the b - a lanes that
// exist of the row's one step from a. With s.left the first step is left_step_maxima. Steps
// share input rows with the row before through `kept` where it is not null.
template <bool kShort, class Out>
PORTA_DEVICE_FUNCTION void for_steps(const float* plane, int64_t h0, int64_t h1, const Axis& aw,
                                     const Inside& s, KeptSteps* kept, Out&& out) {
  int64_t n = 0;  // the steps taken
  const auto next = [&]() { return kept && n < kKeptSteps ? &kept->step[n++] : nullptr; };
  const bool left = PORTA_POOL_AVX2 && s.left;
  if (left) out(0, kShort ? s.b : kStep, left_step_maxima(plane, h0, h1, aw, next()));
  if constexpr (kShort) {
    if (!left) out(s.a, s.b - s.a, step_maxima(plane, h0, h1, aw, s.a, next()));
  } else {
    for (int64_t step = left ? kStep : s.a; step < s.b; step += kStep) {
      const int64_t q0 = porta_ops::min64(step, s.b - kStep);
      out(q0, kStep, step_maxima(plane, h0, h1, aw, q0, next()));
    }
  }
}

// Row p's window maxima for windows of stride 2 across, in steps: the values to values[q] unless
// it is null; if kIndexed, the indices h * in_w + w in the plane to at[q]. Returns false, doing
// nothing, for rows whose windows do not fit steps (row_maxima takes them). Rows taken one after
// the other share input rows through `kept` (for_steps) where it is not null.
template <bool kIndexed, bool kShort = false>
PORTA_DEVICE_FUNCTION bool row_maxima_stride2(const float* plane, const float* end, const Axis& ah,
                                              const Axis& aw, int64_t p, KeptSteps* kept,
                                              float* values, int32_t* at);

template <bool kIndexed>
__attribute__((noinline)) bool short_row_maxima_stride2(const float* plane, const float* end,
                                                        const Axis& ah, const Axis& aw, int64_t p,
                                                        KeptSteps* kept, float* values,
                                                        int32_t* at) {
  return row_maxima_stride2<kIndexed, true>(plane, end, ah, aw, p, kept, values, at);
}

template <bool kIndexed, bool kShort>
PORTA_DEVICE_FUNCTION bool row_maxima_stride2(const float* plane, const float* end, const Axis& ah,
                                              const Axis& aw, int64_t p, KeptSteps* kept,
                                              float* values, int32_t* at) {
  const Inside s = joined_left(plane, end, ah, aw, inside_stride2(aw));
  if constexpr (!kShort) {
    if (s.b - s.a < kStep) {
      return kShortRows &&
             short_row_maxima_stride2<kIndexed>(plane, end, ah, aw, p, kept, values, at);
    }
  }
  int64_t h0, h1;
  ah.clip(p, &h0, &h1);
  if (!steps_fit<kShort>(plane, end, h1, aw, s)) return false;
  const auto cut = [&](int64_t q) {
    const Max<int32_t> m = window_max<int32_t>(plane, ah, aw, p, q);
    if (values) values[q] = m.value;
    if constexpr (kIndexed) at[q] = m.at;
  };
  for (int64_t q = 0; q < s.a; ++q) cut(q);
  for_steps<kShort>(plane, h0, h1, aw, s, kept,
                    [&](int64_t q0, int64_t count, const StepMaxima& m) {
                      if (values) store_first(values + q0, m.value, count);
                      if constexpr (kIndexed) store_first(at + q0, m.at, count);
                    });
  for (int64_t q = s.b; q < aw.out; ++q) cut(q);
  return true;
}
#endif

#if PORTA_POOL_AVX2
// Where windows do not overlap, stride 2 across (windows up to 2 wide): writes the band of dx
// that row p owns (Axis::band, both ways), each element its window's dy where it is that
// window's maximum and 0 elsewhere. Each window inside the row owns its own two columns: a
// step's 16 columns compare its maxima's indices, each in two lanes, with their own. The rest
// of the band (the columns of the windows cut by the padding, and any past the last window) is
// zeroed, then takes those windows' dy one by one. Returns false, doing nothing, where the
// row's windows do not fit steps or a step's dy, read from dyr, would leave dy ([.., dy_end)).
template <bool kShort = false>
PORTA_DEVICE_FUNCTION bool band_stride2(const float* plane, const float* x_end, const float* dyr,
                                        const float* dy_end, float* dxp, const Axis& ah,
                                        const Axis& aw, int64_t p);

__attribute__((noinline)) bool short_band_stride2(const float* plane, const float* x_end,
                                                  const float* dyr, const float* dy_end, float* dxp,
                                                  const Axis& ah, const Axis& aw, int64_t p) {
  return band_stride2<true>(plane, x_end, dyr, dy_end, dxp, ah, aw, p);
}

template <bool kShort>
PORTA_DEVICE_FUNCTION bool band_stride2(const float* plane, const float* x_end, const float* dyr,
                                        const float* dy_end, float* dxp, const Axis& ah,
                                        const Axis& aw, int64_t p) {
  // A window 1 wide owns a second column only where the row has one: the last such takes the
  // way of the cut ones.
  Inside s = inside_stride2(aw);
  s.b = porta_ops::min64(s.b, (aw.in + aw.pad) / 2);
  if constexpr (!kShort) {
    if (s.b - s.a < kStep) return short_band_stride2(plane, x_end, dyr, dy_end, dxp, ah, aw, p);
  }
  int64_t h0, h1, b0, b1;
  ah.clip(p, &h0, &h1);
  ah.band(p, &b0, &b1);
  if (!steps_fit<kShort>(plane, x_end, h1, aw, s) || dy_end - dyr < s.a + kStep) return false;
  const int64_t c0 = 2 * s.a - aw.pad, c1 = 2 * s.b - aw.pad;  // the steps' columns
  for (int64_t h = b0; h < b1; ++h) {
    for (int64_t w = 0; w < c0; ++w) dxp[h * aw.in + w] = 0.0f;
    for (int64_t w = c1; w < aw.in; ++w) dxp[h * aw.in + w] = 0.0f;
  }
  const Ints iota = {0, 1, 2, 3, 4, 5, 6, 7};
  // Windows no taller than their stride down (the disjoint ones): no input row to share.
  for_steps<kShort>(
      plane, h0, h1, aw, s, nullptr, [&](int64_t q0, int64_t count, const StepMaxima& m) {
        const Floats dy = load_floats(dyr + q0);
        const Ints at_low = __builtin_shufflevector(m.at, m.at, 0, 0, 1, 1, 2, 2, 3, 3);
        const Ints at_high = __builtin_shufflevector(m.at, m.at, 4, 4, 5, 5, 6, 6, 7, 7);
        const Floats dy_low = __builtin_shufflevector(dy, dy, 0, 0, 1, 1, 2, 2, 3, 3);
        const Floats dy_high = __builtin_shufflevector(dy, dy, 4, 4, 5, 5, 6, 6, 7, 7);
        const int64_t c = 2 * q0 - aw.pad;
        for (int64_t h = b0; h < b1; ++h) {
          const Ints self = iota + int32_t(h * aw.in + c);
          float* to = dxp + h * aw.in + c;
          store_first(to, at_low == self ? dy_low : Floats{}, 2 * count);
          if (count > kStep / 2) {
            store_first(to + kStep, at_high == self + kStep ? dy_high : Floats{},
                        2 * count - kStep);
          }
        }
      });
  const auto cut = [&](int64_t q) { dxp[window_max<int32_t>(plane, ah, aw, p, q).at] = dyr[q]; };
  for (int64_t q = 0; q < s.a; ++q) cut(q);
  for (int64_t q = s.b; q < aw.out; ++q) cut(q);
  return true;
}
#endif

#if PORTA_POOL_AVX2
// 2x2 windows of stride 2, unpadded, that tile the input exactly (in = 2 out both ways), in rows
// of at least kStep - 1 outputs (porta-train's 14 and 7): output rows, and their input row
// pairs, follow each other through the whole tensor, so the forward takes a group's outputs as
// one run, kStep a step, whichever rows they lie in. Output k = r out_w + q has its window's top
// left at x[2 in_w r + 2 q]; a step's lanes lie in at most two rows, the lanes from out_w - q on
// in the next, whose top row is in_w floats on from the first row's bottom row. So the 16
// floats from each of the step's first window's three rows from the top (the third only for
// the next row's bottom) give the windows' four elements, evens and odds, taken in index order
// with the strict beats: the first maximum, as Max::add finds it.
PORTA_DEVICE_FUNCTION bool quad_runs(const Axis& ah, const Axis& aw) {
  return ah.window == 2 && aw.window == 2 && ah.stride == 2 && aw.stride == 2 && ah.pad == 0 &&
         aw.pad == 0 && ah.in == 2 * ah.out && aw.in == 2 * aw.out && aw.out >= kStep - 1;
}

// A step's window maxima, and in took[j] the lanes where element j + 1 beat the maximum of the
// ones before it.
struct QuadMaxima {
  Floats value;
  Ints took[3];
};

// Calls step(k, at, split, maxima) for the steps over outputs [begin, end) (rows out_w long) of
// x ([x, x_end)): at, the first window's top left in x; the lanes from split on lie in the next
// row (split >= kStep: none). Returns
// the first output not taken: the steps whose reads would leave x, at its end, are left.
template <class Step>
PORTA_DEVICE_FUNCTION int64_t for_quad_runs(const float* x, const float* x_end, int64_t out_w,
                                            int64_t begin, int64_t end, Step&& step) {
  const int64_t in_w = 2 * out_w;
  const Ints iota = {0, 1, 2, 3, 4, 5, 6, 7};
  const auto evens = [](const float* at) {
    return __builtin_shufflevector(load_floats(at), load_floats(at + kStep), 0, 2, 4, 6, 8, 10, 12,
                                   14);
  };
  const auto odds = [](const float* at) {
    return __builtin_shufflevector(load_floats(at), load_floats(at + kStep), 1, 3, 5, 7, 9, 11, 13,
                                   15);
  };
  int64_t k = begin, r = begin / out_w, q = begin - r * out_w;
  for (; k < end; k += kStep) {
    const float* at = x + 2 * in_w * r + 2 * q;
    if (x_end - at < 2 * in_w + 2 * kStep) break;
    const int64_t split = out_w - q;
    const Ints next = iota >= int32_t(split);
    Floats element[4] = {evens(at), odds(at), evens(at + in_w), odds(at + in_w)};
    if (split < kStep) {  // the third row only where the step reaches the next row
      const Floats below[2] = {evens(at + 2 * in_w), odds(at + 2 * in_w)};
      for (int j = 0; j < 2; ++j) {
        element[j] = next ? element[j + 2] : element[j];
        element[j + 2] = next ? below[j] : element[j + 2];
      }
    }
    QuadMaxima m{element[0], {}};
    for (int j = 0; j < 3; ++j) {
      const Floats v = element[j + 1];
      m.took[j] = beats(v, m.value);
      m.value = m.took[j] ? v : m.value;
    }
    step(k, at, split, m);
    for (q += kStep; q >= out_w; q -= out_w) ++r;
  }
  return k;
}

// Output k's window maximum, one window (its element j, 0 to 3 in index order, as the index).
PORTA_DEVICE_FUNCTION Max<int32_t> quad_max(const float* x, int64_t out_w, int64_t k) {
  const int64_t in_w = 2 * out_w;
  const float* at = x + 2 * in_w * (k / out_w) + 2 * (k % out_w);
  Max<int32_t> m;
  for (int32_t j = 0; j < 4; ++j) m.add(at[j / 2 * in_w + j % 2], j);
  return m;
}

// y[k] for the outputs k in [begin, end) of y, from x ([x, x_end)), rows out_w long.
PORTA_DEVICE_FUNCTION void quad_run_maxima(const float* x, const float* x_end, float* y,
                                           int64_t out_w, int64_t begin, int64_t end) {
  int64_t k = for_quad_runs(x, x_end, out_w, begin, end,
                            [&](int64_t k, const float*, int64_t, const QuadMaxima& m) {
                              store_first(y + k, m.value, end - k);
                            });
  for (; k < end; ++k) y[k] = quad_max(x, out_w, k).value;
}

// Stores the first count of the 16 lanes that interleave a and b (a[0], b[0], a[1], ...) at to.
PORTA_DEVICE_FUNCTION void store_interleaved(float* to, const Floats& a, const Floats& b,
                                             int64_t count) {
  store_first(to, __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11), count);
  if (count > kStep) {
    store_first(to + kStep, __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15),
                count - kStep);
  }
}

// Backward of the same, windows disjoint: the dx that outputs [begin, end) own (their rows'
// input row pairs, whole), each element its window's dy where it is the maximum and 0 elsewhere.
// A step from at writes its row's part of the top row from at, the 16 floats from at + in_w
// (that row's bottom, then the next row's top) and the next row's bottom: whole vectors, the
// third before the second, which rewrites the part of it that lies in the next row's top row;
// the rest of that the later steps of the run write (the run is whole rows, so they are its).
PORTA_DEVICE_FUNCTION void quad_run_backward(const float* x, const float* x_end, const float* dy,
                                             float* dx, int64_t out_w, int64_t begin, int64_t end) {
  const int64_t in_w = 2 * out_w;
  // dy + k + kStep <= dy's end wherever the step's reads stay in x (four elements an output).
  int64_t k = for_quad_runs(
      x, x_end, out_w, begin, end,
      [&](int64_t k, const float* at, int64_t split, const QuadMaxima& m) {
        const Ints next = Ints{0, 1, 2, 3, 4, 5, 6, 7} >= int32_t(split);
        const Floats d = load_floats(dy + k);
        const Ints later = m.took[1] | m.took[2];
        const Floats g[4] = {(m.took[0] | later) ? Floats{} : d,
                             (m.took[0] & ~later) ? d : Floats{},
                             (m.took[1] & ~m.took[2]) ? d : Floats{}, m.took[2] ? d : Floats{}};
        const int64_t count = porta_ops::min64(end - k, kStep);
        float* to = dx + (at - x);
        store_interleaved(to, g[0], g[1], 2 * porta_ops::min64(split, count));
        if (count > split) store_interleaved(to + 2 * in_w, g[2], g[3], 2 * count);
        store_interleaved(to + in_w, next ? g[0] : g[2], next ? g[1] : g[3], 2 * count);
      });
  for (; k < end; ++k) {
    const float* at = x + 2 * in_w * (k / out_w) + 2 * (k % out_w);
    const int32_t chosen = quad_max(x, out_w, k).at;
    for (int32_t j = 0; j < 4; ++j) dx[at - x + j / 2 * in_w + j % 2] = j == chosen ? dy[k] : 0.0f;
  }
}
#endif

#if PORTA_POOL_AVX512
namespace avx512 {

using Mask = __mmask16;

// 16 candidates or window maxima: their values and indices h * in_w + w in the plane.
struct Maxima {
  __m512 value;
  __m512i at;
};

// The lanes k of a vector whose position first + k lies in [lo, hi).
inline Mask lanes_in(int64_t first, int64_t lo, int64_t hi) {
  const int64_t a = lo - first > 0 ? lo - first : 0;
  const int64_t b = hi - first < 16 ? hi - first : 16;
  return a >= b ? Mask(0) : Mask(((1u << b) - 1) & ~((1u << a) - 1));
}

inline __m512i iota() {
  return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
inline __m512i splat(int64_t v) { return _mm512_set1_epi32(int32_t(v)); }

// As beats(), 16 lanes at a time: v beats m where larger, or a NaN over a number.
inline Mask beats(__m512 v, __m512 m) {
  return _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(m, m, _CMP_ORD_Q), v, m, _CMP_NLE_UQ);
}

// The tensor a pointer lies in.
struct Extent {
  const void* begin;
  const void* end;
};

// The 16 elements from at in the lanes inside, fill in the others. Masked loads made the 3x3
// forward about seven times slower on the machine this was measured on (an AMD Zen 4), so lanes
// outside a row but inside the tensor are loaded plainly and replaced: only at the tensor's ends
// is the load masked, which never reads the lanes outside.
// (The empty asm keeps GCC from folding load and blend back into a masked load.)
inline __m512 load_lanes(const float* at, Mask inside, __m512 fill, const Extent& t) {
  if (at >= t.begin && at + 16 <= t.end) {
    __m512 v = _mm512_loadu_ps(at);
    asm("" : "+v"(v));
    return _mm512_mask_mov_ps(fill, inside, v);
  }
  return _mm512_mask_loadu_ps(fill, inside, at);
}

// Stores the lanes `lanes` of v at at: whole vectors with a plain store, which is also faster.
inline void store_lanes(float* at, Mask lanes, __m512 v) {
  if (lanes == Mask(0xffff)) {
    _mm512_storeu_ps(at, v);
  } else {
    _mm512_mask_storeu_ps(at, lanes, v);
  }
}
inline void store_lanes(int32_t* at, Mask lanes, __m512i v) {
  if (lanes == Mask(0xffff)) {
    _mm512_storeu_si512(at, v);
  } else {
    _mm512_mask_storeu_epi32(at, lanes, v);
  }
}

// Windows of stride 2 across take their maxima across each input row first, then down the
// rows. Column j of 16 windows from q0, columns c + 2k + j (c = 2 q0 - pad), is the even lanes of
// the 32 columns from c + j, picked by a permute. Both steps take a candidate only where it
// beats the maximum so far, columns in order and then rows in order, which leaves each window's
// first maximum in index order (row by row) with no comparison of indices. And an input row's
// maxima across serve every output row whose windows hold it (SharedRow).

// Which of the 16 windows from q0 each of their columns j lies inside the row for (inside[j]: k
// in [ceil(-first / 2), ceil((in - first) / 2)) for first = c + j), and for which windows it is
// the first that does (fresh[j]); and the index in the row of each window's first column inside
// it (first: c + 2k + j for window k's first j).
struct Columns {
  int64_t c;
  Mask inside[16], fresh[16];
  __m512i first;
};

inline Columns columns_of(const Axis& aw, int64_t q0) {
  const __m512i twice = _mm512_add_epi32(iota(), iota());
  Columns cols;
  cols.c = 2 * q0 - aw.pad;
  cols.first = _mm512_setzero_si512();
  Mask unset = Mask(0xffff);
  for (int64_t j = 0; j < aw.window; ++j) {
    const int64_t first = cols.c + j;
    cols.inside[j] = lanes_in(0, first < 0 ? (1 - first) / 2 : 0, (aw.in - first + 1) / 2);
    cols.fresh[j] = cols.inside[j] & unset;
    cols.first = _mm512_mask_add_epi32(cols.first, cols.fresh[j], twice, splat(first));
    unset &= Mask(~cols.inside[j]);
  }
  return cols;
}

// Column j of the 16 windows whose columns start at c in input row `row`: the even lanes of the
// 32 floats from c + j. Lanes outside the row are loaded as they lie in the tensor, for the
// caller to leave out; `plain` (plain_row): every column's 32 floats lie inside the tensor.
__attribute__((always_inline)) inline __m512 column(const Extent& x, const float* row,
                                                    const Axis& aw, int64_t c, int64_t j,
                                                    bool plain) {
  const __m512 lowest = _mm512_set1_ps(-INFINITY);
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  __m512 a, b;
  if (plain) {
    a = _mm512_loadu_ps(row + c + j);
    b = _mm512_loadu_ps(row + c + j + 16);
  } else {
    a = load_lanes(row + c + j, lanes_in(c + j, 0, aw.in), lowest, x);
    b = load_lanes(row + c + j + 16, lanes_in(c + j + 16, 0, aw.in), lowest, x);
  }
  return _mm512_permutex2var_ps(a, evens, b);
}

inline bool plain_row(const Extent& x, const float* row, const Axis& aw, int64_t c) {
  return row + c >= x.begin && row + c + aw.window + 31 <= x.end;
}

// The three columns of 16 windows 3 wide (the 3x3 pooling's), as column() gives them: 0 and 1
// the evens and odds of the 32 floats from c, 2 the evens of the 32 from c + 2, which is four
// loads and three permutes rather than six and three.
__attribute__((always_inline)) inline void columns3(const Extent& x, const float* row,
                                                    const Axis& aw, int64_t c, bool plain,
                                                    __m512 (&v)[3]) {
  const __m512 lowest = _mm512_set1_ps(-INFINITY);
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds = _mm512_add_epi32(evens, splat(1));
  __m512 at[4];
  for (int i = 0; i < 4; ++i) {
    const int64_t from = c + (i / 2) * 2 + (i % 2) * 16;
    at[i] = plain ? _mm512_loadu_ps(row + from)
                  : load_lanes(row + from, lanes_in(from, 0, aw.in), lowest, x);
  }
  v[0] = _mm512_permutex2var_ps(at[0], evens, at[1]);
  v[1] = _mm512_permutex2var_ps(at[0], odds, at[1]);
  v[2] = _mm512_permutex2var_ps(at[2], evens, at[3]);
}

// The 16 windows' maxima across input row `row`, at: their columns. Lanes outside the row are
// never taken.
inline Maxima across_row(const Extent& x, const float* row, const Axis& aw, const Columns& cols) {
  const __m512i twice = _mm512_add_epi32(iota(), iota());
  const int64_t c = cols.c;
  const bool plain = plain_row(x, row, aw, c);
  Maxima m{_mm512_set1_ps(-INFINITY), _mm512_setzero_si512()};
  for (int64_t j = 0; j < aw.window; ++j) {
    const __m512 v = column(x, row, aw, c, j, plain);
    // beats() where inside, or fresh. (Mask operations spelled out: GCC otherwise moves masks
    // through integer registers.)
    const Mask ordered = _mm512_cmp_ps_mask(m.value, m.value, _CMP_ORD_Q);
    const Mask take = _kor_mask16(
        cols.fresh[j],
        _mm512_mask_cmp_ps_mask(_kand_mask16(cols.inside[j], ordered), v, m.value, _CMP_NLE_UQ));
    m.value = _mm512_mask_mov_ps(m.value, take, v);
    m.at = _mm512_mask_add_epi32(m.at, take, twice, splat(c + j));
  }
  return m;
}

// The maxima in fewer instructions, where no input is NaN: the forward pass's values alone
// (Values), the argmax pass's with their indices (Indexed). A candidate is taken where it is
// larger (vmaxps(v, m) for values alone), the lanes inside the row only: where it ties, the
// maximum so far stands, so the first in index order does as with beats() (a tied zero's sign
// too), but a NaN loses to a number. So the candidates are also summed (a NaN in, a NaN out),
// and the windows whose sum is NaN are worked out again by beats() (row_maxima<Maxima>). With
// indices, each window starts at its first column inside the row, which stands where no
// candidate is larger (all -inf).
struct Values {
  __m512 value, sum;
};
struct Indexed {
  __m512 value, sum;
  __m512i at;
};

template <class Across>
inline Across across_row_values(const Extent& x, const float* row, const Axis& aw,
                                const Columns& cols) {
  const __m512i twice = _mm512_add_epi32(iota(), iota());
  const int64_t c = cols.c;
  const bool plain = plain_row(x, row, aw, c);
  Across m;
  m.value = _mm512_set1_ps(-INFINITY);
  m.sum = _mm512_setzero_ps();
  if constexpr (std::is_same_v<Across, Indexed>) m.at = cols.first;
  const auto add_column = [&](int64_t j, __m512 v) __attribute__((always_inline)) {
    if constexpr (std::is_same_v<Across, Indexed>) {
      const Mask take = _mm512_mask_cmp_ps_mask(cols.inside[j], v, m.value, _CMP_GT_OQ);
      m.value = _mm512_mask_mov_ps(m.value, take, v);
      m.at = _mm512_mask_add_epi32(m.at, take, twice, splat(c + j));
    } else {
      m.value = _mm512_mask_max_ps(m.value, cols.inside[j], v, m.value);
    }
    m.sum = _mm512_mask_add_ps(m.sum, cols.inside[j], m.sum, v);
  };
  if (aw.window == 3) {
    __m512 v[3];
    columns3(x, row, aw, c, plain, v);
    for (int j = 0; j < 3; ++j) add_column(j, v[j]);
    return m;
  }
  for (int64_t j = 0; j < aw.window; ++j) add_column(j, column(x, row, aw, c, j, plain));
  return m;
}

// The last input row's maxima across (Maxima, Values or Indexed) of each 16 windows of an output
// row, kept for the next output row: with a window of 3 and a stride of 2 down, output row p's
// last input row is p + 1's first. Rows of up to 16 * kSharedChunks outputs. Starts empty, for
// one plane geometry. It also keeps each 16 windows' Columns, the same on every row: working them
// out for each row took about a sixth of the 3x3 forward's time.
constexpr int64_t kSharedChunks = 8;
template <class Across>
struct SharedRow {
  const float* row[kSharedChunks] = {};
  Across across[kSharedChunks];
  bool known[kSharedChunks] = {};
  Columns columns[kSharedChunks];
};

// Takes input row h's maxima across (Values or Indexed) into the windows' maxima so far, best:
// the first row's as they are, a later row's where strictly larger, so that ties keep the first.
template <class Across>
__attribute__((always_inline)) inline void take_down(Across& best, const Across& across, int64_t h,
                                                     int64_t in_w, bool first) {
  constexpr bool kIndexed = std::is_same_v<Across, Indexed>;
  if (first) {
    best = across;
    if constexpr (kIndexed) best.at = _mm512_add_epi32(across.at, splat(h * in_w));
    return;
  }
  if constexpr (kIndexed) {
    const Mask take = _mm512_cmp_ps_mask(across.value, best.value, _CMP_GT_OQ);
    best.value = _mm512_mask_mov_ps(best.value, take, across.value);
    best.at = _mm512_mask_add_epi32(best.at, take, across.at, splat(h * in_w));
  } else {
    best.value = _mm512_max_ps(across.value, best.value);
  }
  best.sum = _mm512_add_ps(best.sum, across.sum);
}

// Where a step of windows q0 + [0, 16) of row p summed to a NaN (Values or Indexed, whose
// compares let a NaN lose), its maxima worked out again by the exact code (below).
template <class Across>
__attribute__((always_inline)) inline void exact_where_nan(Across& best, const Extent& x,
                                                           const float* plane, const Axis& ah,
                                                           const Axis& aw, int64_t p, int64_t q0);

// The maxima (Maxima, Values or Indexed) of windows q0 + [0, 16) of row p, sharing input rows
// through `shared` if not null. Inlined: a call returns the maxima through memory.
template <class Across>
__attribute__((always_inline)) inline Across row_maxima(const Extent& x, const float* plane,
                                                        const Axis& ah, const Axis& aw, int64_t p,
                                                        int64_t q0, SharedRow<Across>* shared) {
  constexpr bool kExact = std::is_same_v<Across, Maxima>;
  int64_t h0, h1;
  ah.clip(p, &h0, &h1);
  const int64_t chunk = q0 / 16;
  if (chunk >= kSharedChunks) shared = nullptr;
  if (shared && !shared->known[chunk]) {
    shared->columns[chunk] = columns_of(aw, q0);
    shared->known[chunk] = true;
  }
  Columns own;
  if (!shared) own = columns_of(aw, q0);
  const Columns& cols = shared ? shared->columns[chunk] : own;
  Across best{};
  for (int64_t h = h0; h < h1; ++h) {
    const float* row = plane + h * aw.in;
    const bool kept = shared && shared->row[chunk] == row;
    Across across;
    if (kept) {
      across = shared->across[chunk];
    } else if constexpr (kExact) {
      across = across_row(x, row, aw, cols);
    } else {
      across = across_row_values<Across>(x, row, aw, cols);
    }
    if (shared && h + 1 == h1) {
      shared->row[chunk] = row;
      shared->across[chunk] = across;
    }
    if constexpr (kExact) {
      const Mask take = h == h0 ? Mask(0xffff) : beats(across.value, best.value);
      best.value = _mm512_mask_mov_ps(best.value, take, across.value);
      best.at = _mm512_mask_add_epi32(best.at, take, across.at, splat(h * aw.in));
    } else {
      take_down(best, across, h, aw.in, h == h0);
    }
  }
  if constexpr (!kExact) exact_where_nan(best, x, plane, ah, aw, p, q0);
  return best;
}

template <class Across>
__attribute__((always_inline)) inline void exact_where_nan(Across& best, const Extent& x,
                                                           const float* plane, const Axis& ah,
                                                           const Axis& aw, int64_t p, int64_t q0) {
  if (_mm512_cmp_ps_mask(best.sum, best.sum, _CMP_UNORD_Q) == 0) return;
  const Maxima exact = row_maxima<Maxima>(x, plane, ah, aw, p, q0, nullptr);
  best.value = exact.value;
  if constexpr (std::is_same_v<Across, Indexed>) best.at = exact.at;
}

// Whether these rows take the vector code: stride 2 across, windows up to 16 wide, int32
// indices.
inline bool takes(const Axis& ah, const Axis& aw) {
  return aw.stride == 2 && aw.window <= 16 && ah.in * aw.in < INT32_MAX;
}

// Calls out(q0, lanes, maxima) for the windows of row p, 16 at a time (Maxima, Values or
// Indexed).
template <class Across, class Out>
void for_row_maxima(const Extent& x, const float* plane, const Axis& ah, const Axis& aw, int64_t p,
                    SharedRow<Across>* shared, Out&& out) {
  for (int64_t q0 = 0; q0 < aw.out; q0 += 16) {
    out(q0, lanes_in(q0, 0, aw.out), row_maxima<Across>(x, plane, ah, aw, p, q0, shared));
  }
}

// 3x3 windows of stride 2 (the 3x3 pooling) row after row of y, in a loop of the caller's: each
// 16 windows' columns worked out once, each input row's maxima across (Values or Indexed) taken
// once and kept for the next output row, whose first row it is; the steps with a NaN again by
// the exact code. The same maxima as row_maxima finds, without its work around them for each row
// (the kept rows found by a lookup, the columns by a copy): on a core with 256-bit units that
// work took more time than the maxima themselves.
inline bool windows3(const Axis& ah, const Axis& aw) {
  return ah.window == 3 && aw.window == 3 && ah.stride == 2 && aw.stride == 2 &&
         aw.out <= 16 * kSharedChunks && ah.in * aw.in < INT32_MAX;
}

template <class Across>
class Rows3 {
 public:
  explicit Rows3(const Axis& aw) : chunks_((aw.out + 15) / 16) {
    for (int64_t k = 0; k < chunks_; ++k) {
      cols_[k] = columns_of(aw, 16 * k);
      lanes_[k] = lanes_in(16 * k, 0, aw.out);
    }
  }

  // Calls out(q0, lanes, maxima) for the windows of row p of plane xp, 16 at a time.
  template <class Out>
  __attribute__((always_inline)) void row(const Extent& x, const float* xp, const Axis& ah,
                                          const Axis& aw, int64_t p, Out&& out) {
    int64_t h0, h1;
    ah.clip(p, &h0, &h1);
    for (int64_t k = 0; k < chunks_; ++k) {
      Across best;
      for (int64_t h = h0; h < h1; ++h) {
        const float* in = xp + h * aw.in;
        const Across across =
            in == kept_row_ ? kept_[k] : across_row_values<Across>(x, in, aw, cols_[k]);
        take_down(best, across, h, aw.in, h == h0);
        if (h + 1 == h1) kept_[k] = across;
      }
      exact_where_nan(best, x, xp, ah, aw, p, 16 * k);
      out(16 * k, lanes_[k], best);
    }
    kept_row_ = xp + (h1 - 1) * aw.in;
  }

 private:
  int64_t chunks_;
  Columns cols_[kSharedChunks];
  Mask lanes_[kSharedChunks];
  Across kept_[kSharedChunks];
  const float* kept_row_ = nullptr;  // the input row whose maxima across kept_ holds
};

// The forward's values over rows [begin, end) of y (planes x out_h of them), asking for the
// input rows and the lines of y `ahead` rows on (as prefetch_inputs and window_maxima do),
// planes and rows counted rather than divided out.
inline void forward3(const Extent& x, int64_t planes, const Axis& ah, const Axis& aw, float* y,
                     int64_t begin, int64_t end, int64_t ahead) {
  const float* const xs = static_cast<const float*>(x.begin);
  const int64_t plane_floats = ah.in * aw.in;
  Rows3<Values> rows(aw);
  int64_t plane = begin / ah.out, p = begin % ah.out;
  int64_t ahead_plane = (begin + ahead) / ah.out, ahead_p = (begin + ahead) % ah.out;
  for (int64_t row = begin; row < end; ++row) {
    if (ahead_plane < planes) {  // the input rows that row + ahead adds, y's lines for writing
      int64_t h0, h1, before0, before1;
      ah.clip(ahead_p, &h0, &h1);
      ah.clip(ahead_p - 1, &before0, &before1);
      const float* from =
          xs + ahead_plane * plane_floats + aw.in * (ahead_p > 0 && before1 > h0 ? before1 : h0);
      const float* to = xs + ahead_plane * plane_floats + aw.in * h1;
      for (; from < to; from += kLineFloats) porta_ops::prefetch(from);
      for (int64_t q = 0; q < aw.out; q += kLineFloats) {
        porta_ops::prefetch_for_writing(y + (row + ahead) * aw.out + q);
      }
    }
    float* yr = y + row * aw.out;
    rows.row(x, xs + plane * plane_floats, ah, aw, p, [&](int64_t q0, Mask lanes, const Values& m) {
      store_lanes(yr + q0, lanes, m.value);
    });
    if (++p == ah.out) p = 0, ++plane;
    if (++ahead_p == ah.out) ahead_p = 0, ++ahead_plane;
  }
}

// Where windows do not overlap: writes the part of dx that row p's windows q0 + [0, 16) own
// (Axis::band, both ways), each element the dy of its window if it is that window's maximum and
// 0 otherwise. Lane k of a column vector reads its window's maximum and dy with a permute.
inline void write_band(const Extent& whole_dy, float* dxp, const float* dyr, const Axis& ah,
                       const Axis& aw, int64_t p, int64_t q0, Mask lanes, const Maxima& m) {
  int64_t h0, h1, c0, c1, unused;
  ah.band(p, &h0, &h1);
  aw.band(q0, &c0, &unused);
  aw.band(q0 + 15 < aw.out ? q0 + 15 : aw.out - 1, &unused, &c1);
  const __m512 dy = load_lanes(dyr + q0, lanes, _mm512_setzero_ps(), whole_dy);
  const __m512i last = splat(aw.out - 1 - q0);
  for (int64_t c = c0; c < c1; c += 16) {
    const __m512i col = _mm512_add_epi32(iota(), splat(c));
    // The window that owns column c: (c + pad) / 2, the last one also the columns past it.
    const __m512i window =
        _mm512_min_epi32(_mm512_srli_epi32(_mm512_add_epi32(col, splat(aw.pad - 2 * q0)), 1), last);
    const __m512i at = _mm512_permutexvar_epi32(window, m.at);
    const __m512 g = _mm512_permutexvar_ps(window, dy);
    const Mask store = lanes_in(c, c0, c1);
    for (int64_t h = h0; h < h1; ++h) {
      const Mask chosen = _mm512_cmpeq_epi32_mask(at, _mm512_add_epi32(col, splat(h * aw.in)));
      store_lanes(dxp + h * aw.in + c, store, _mm512_maskz_mov_ps(chosen, g));
    }
  }
}

// 2x2 windows of stride 2, unpadded, all inside the input (porta-train's pooling): no column
// maxima, no bounds per window. Each output row's windows are taken 16 at a time from two
// vectors of each of its two input rows, the windows' four elements split out by permutes.
inline bool quads(const Axis& ah, const Axis& aw) {
  return ah.window == 2 && aw.window == 2 && ah.stride == 2 && aw.stride == 2 && ah.pad == 0 &&
         aw.pad == 0 && 2 * ah.out <= ah.in && 2 * aw.out <= aw.in && ah.in * aw.in < INT32_MAX;
}

// Windows q0 + [0, 16) of row p (the `lanes` that exist): their first maximum, as Max::add finds
// it taking the four elements in index order, and in took[j] the lanes where element j + 1
// beat the maximum of the ones before it.
struct Quads {
  __m512 value;
  Mask took[3];
};

inline Quads first_maximum(const __m512 element[4]) {
  Quads m{element[0], {}};
  for (int j = 0; j < 3; ++j) {
    m.took[j] = beats(element[j + 1], m.value);
    m.value = _mm512_mask_mov_ps(m.value, m.took[j], element[j + 1]);
  }
  return m;
}

// Each window's dy at the element that is its maximum, 0 at the others: four vectors.
inline void routed(const Quads& m, __m512 dy, __m512 g[4]) {
  const Mask later = m.took[1] | m.took[2];
  g[0] = _mm512_maskz_mov_ps(Mask(~(m.took[0] | later)), dy);
  g[1] = _mm512_maskz_mov_ps(Mask(m.took[0] & ~later), dy);
  g[2] = _mm512_maskz_mov_ps(Mask(m.took[1] & ~m.took[2]), dy);
  g[3] = _mm512_maskz_mov_ps(m.took[2], dy);
}

inline Quads quad_maxima(const Extent& x, const float* plane, int64_t in_w, int64_t p, int64_t q0,
                         int64_t count) {
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds = _mm512_add_epi32(evens, splat(1));
  const Mask low = lanes_in(0, 0, 2 * count), high = lanes_in(16, 0, 2 * count);
  const __m512 none = _mm512_setzero_ps();  // lanes past the row: computed, never stored
  __m512 element[4];
  for (int64_t r = 0; r < 2; ++r) {
    const float* at = plane + (2 * p + r) * in_w + 2 * q0;
    const __m512 a = load_lanes(at, low, none, x);
    const __m512 b = high ? load_lanes(at + 16, high, none, x) : a;
    element[2 * r] = _mm512_permutex2var_ps(a, evens, b);
    element[2 * r + 1] = _mm512_permutex2var_ps(a, odds, b);
  }
  return first_maximum(element);
}

// Calls out(q0, lanes, quads) for the windows of row p, 16 at a time.
template <class Out>
void for_quad_maxima(const Extent& x, const float* plane, const Axis& aw, int64_t p, Out&& out) {
  for (int64_t q0 = 0; q0 < aw.out; q0 += 16) {
    const int64_t count = aw.out - q0 < 16 ? aw.out - q0 : 16;
    out(q0, lanes_in(q0, 0, aw.out), quad_maxima(x, plane, aw.in, p, q0, count));
  }
}

// The maxima's indices h * in_w + w in the plane.
inline Maxima indexed(const Quads& m, int64_t in_w, int64_t p, int64_t q0) {
  __m512i offset = _mm512_setzero_si512();
  offset = _mm512_mask_mov_epi32(offset, m.took[0], splat(1));
  offset = _mm512_mask_mov_epi32(offset, m.took[1], splat(in_w));
  offset = _mm512_mask_mov_epi32(offset, m.took[2], splat(in_w + 1));
  const __m512i first =
      _mm512_add_epi32(_mm512_add_epi32(iota(), iota()), splat(2 * p * in_w + 2 * q0));
  return {m.value, _mm512_add_epi32(first, offset)};
}

// Backward: the two dx rows under windows q0 + [0, 16) of row p, each element the window's dy
// where it is the maximum and 0 elsewhere, interleaved back by permutes; then whatever of row
// p's band (Axis::band) lies past them, the column and row no window holds, zeroed.
inline void write_quads(const Extent& whole_dy, float* dxp, const float* dyr, const Axis& ah,
                        const Axis& aw, int64_t p, int64_t q0, Mask lanes, const Quads& m) {
  const __m512 dy = load_lanes(dyr + q0, lanes, _mm512_setzero_ps(), whole_dy);
  __m512 g[4];
  routed(m, dy, g);
  const __m512i front = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i back = _mm512_add_epi32(front, splat(8));
  const int64_t count = aw.out - q0 < 16 ? aw.out - q0 : 16;
  const Mask low = lanes_in(0, 0, 2 * count), high = lanes_in(16, 0, 2 * count);
  for (int64_t r = 0; r < 2; ++r) {
    float* at = dxp + (2 * p + r) * aw.in + 2 * q0;
    store_lanes(at, low, _mm512_permutex2var_ps(g[2 * r], front, g[2 * r + 1]));
    if (high) store_lanes(at + 16, high, _mm512_permutex2var_ps(g[2 * r], back, g[2 * r + 1]));
  }
  if (q0 + 16 < aw.out) return;
  int64_t h0, h1;
  ah.band(p, &h0, &h1);
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t w = h < 2 * p + 2 ? 2 * aw.out : 0; w < aw.in; ++w) dxp[h * aw.in + w] = 0.0f;
  }
}

// Rows of at most 8 outputs whose windows tile the input exactly (in = 2 out both ways): output
// rows and their pairs of input rows then follow each other through the whole tensor, so a step
// takes 16 / out_w rows at once, lane l window l % out_w of row l / out_w. The lanes' offsets
// in the step's 4 input vectors, and back, are worked out once per group.
inline bool stacks(const Axis& ah, const Axis& aw) {
  return quads(ah, aw) && aw.out <= 8 && ah.in == 2 * ah.out && aw.in == 2 * aw.out;
}

struct Stack {
  int64_t rows;        // output rows a step
  __m512i element[4];  // lane l: the offset of its window's element j from the step's start
  __m512i window[4];   // lane k of input vector i: its window's lane, + 16 for odd columns
  Mask lower_row[4];   // ... and whether it is in the window's first row
};

inline Stack stack_of(int64_t out_w) {
  const int64_t in_w = 2 * out_w;
  Stack s;
  s.rows = 16 / out_w;
  alignas(64) int32_t element[4][16], window[4][16];
  for (int32_t l = 0; l < 16; ++l) {
    // Lanes past the step's windows get any offset in range: computed, never stored.
    const int32_t first = int32_t(l / out_w * 2 * in_w + l % out_w * 2) % 64;
    for (int32_t j = 0; j < 4; ++j) element[j][l] = (first + j / 2 * int32_t(in_w) + j % 2) % 64;
  }
  for (int32_t i = 0; i < 4; ++i) {
    s.lower_row[i] = 0;
    for (int32_t k = 0; k < 16; ++k) {
      const int32_t o = 16 * i + k, t = o / int32_t(2 * in_w), rest = o % int32_t(2 * in_w);
      const int32_t c = rest % int32_t(in_w);
      window[i][k] = t * int32_t(out_w) + c / 2 + 16 * (c % 2);
      if (rest < in_w) s.lower_row[i] |= Mask(1u << k);
    }
  }
  for (int j = 0; j < 4; ++j) {
    s.element[j] = _mm512_load_si512(element[j]);
    s.window[j] = _mm512_load_si512(window[j]);
  }
  return s;
}

// Calls out(lanes, quads, at) for output rows [begin, end) of y, s.rows a step: the windows of
// the step's rows in its lanes, at their first output's index in y.
template <class Out>
void for_stacked_maxima(const Extent& x, const Stack& s, int64_t out_w, int64_t begin, int64_t end,
                        Out&& out) {
  const __m512 none = _mm512_setzero_ps();
  Mask upper[4];
  for (int j = 0; j < 4; ++j) upper[j] = _mm512_cmpge_epi32_mask(s.element[j], splat(32));
  for (int64_t row = begin; row < end; row += s.rows) {
    const int64_t rows = end - row < s.rows ? end - row : s.rows, span = rows * 4 * out_w;
    const float* at = static_cast<const float*>(x.begin) + row * 4 * out_w;
    __m512 v[4];
    for (int i = 0; i < 4; ++i) {
      v[i] = 16 * i < span ? load_lanes(at + 16 * i, lanes_in(16 * i, 0, span), none, x) : none;
    }
    __m512 element[4];
    for (int j = 0; j < 4; ++j) {
      element[j] = _mm512_mask_mov_ps(_mm512_permutex2var_ps(v[0], s.element[j], v[1]), upper[j],
                                      _mm512_permutex2var_ps(v[2], s.element[j], v[3]));
    }
    out(row * out_w, lanes_in(0, 0, rows * out_w), first_maximum(element));
  }
}

// Backward of the same: dx of the step's rows, all of it, from the four routed dy vectors.
inline void write_stacked(const Extent& whole_dy, float* dx, const Stack& s, int64_t at, Mask lanes,
                          const Quads& m) {
  __m512 g[4];
  routed(m,
         load_lanes(static_cast<const float*>(whole_dy.begin) + at, lanes, _mm512_setzero_ps(),
                    whole_dy),
         g);
  const int64_t span = int64_t(_mm_popcnt_u32(lanes)) * 4, first = at * 4;
  for (int i = 0; i < 4 && 16 * i < span; ++i) {
    const __m512 v =
        _mm512_mask_mov_ps(_mm512_permutex2var_ps(g[2], s.window[i], g[3]), s.lower_row[i],
                           _mm512_permutex2var_ps(g[0], s.window[i], g[1]));
    store_lanes(dx + first + 16 * i, lanes_in(16 * i, 0, span), v);
  }
}

}  // namespace avx512
#endif

// Calls out(q, max) for the outputs q of row p of a plane that item takes (q = item, item +
// items, ...): one item per row (the CPU) by columns, several one window each.
template <class Index, class Out>
PORTA_DEVICE_FUNCTION void row_maxima(const float* plane, const Axis& ah, const Axis& aw, int64_t p,
                             uint32_t item, uint32_t items, Out&& out) {
  if constexpr (kLanes > 1) {
    if (items == 1 && aw.window <= kChunk) {
      row_maxima_by_columns(plane, ah, aw, p, out);
      return;
    }
  }
  for (int64_t q = item; q < aw.out; q += items) out(q, window_max<Index>(plane, ah, aw, p, q));
}

// What a group's rows of y, taken one after the other on the CPU, keep for the next row: the
// input rows' maxima across (values alone where no index is wanted).
template <bool kIndexed>
struct KeptRows {
#if PORTA_POOL_AVX512
  using Across = std::conditional_t<kIndexed, avx512::Indexed, avx512::Values>;
  avx512::SharedRow<Across> shared;
#endif
#if PORTA_TARGET_CPU && defined(__AVX2__)
  KeptSteps steps;  // the same, for the steps of 8 windows
#endif
};

// How many rows of y kBytesAhead of input is: at least one. (A stride of that many input rows or
// more is one row of y, so the product below stays small.)
PORTA_DEVICE_FUNCTION int64_t rows_ahead(const Axis& ah, const Axis& aw) {
  const int64_t row_bytes = aw.in * int64_t{sizeof(float)};
  if (ah.stride >= (kBytesAhead + row_bytes - 1) / row_bytes) return 1;
  const int64_t bytes = ah.stride * row_bytes;
  return (kBytesAhead + bytes - 1) / bytes;
}

// Asks for the input rows of row `row` of y, where it exists.
PORTA_DEVICE_FUNCTION void prefetch_inputs(int64_t planes, const Axis& ah, const Axis& aw,
                                           const float* x, int64_t row) {
  if (row >= planes * ah.out) return;
  const int64_t plane = row / ah.out;
  int64_t h0, h1;
  ah.clip(row - plane * ah.out, &h0, &h1);
  const float* rows = x + (plane * ah.in + h0) * aw.in;
  for (int64_t i = 0; i < (h1 - h0) * aw.in; i += kLineFloats) porta_ops::prefetch(rows + i);
}

// Row `row` of y (plane, p): hands store(base + q, max) each window maximum of the outputs q that
// item takes; on the AVX-512 CPU build, rows of stride 2 hand store(base + q0, lanes, maxima) 16
// at a time (the lanes that exist).
template <class Store>
PORTA_DEVICE_FUNCTION void row_window_maxima(int64_t planes, const Axis& ah, const Axis& aw,
                                             const float* x, int64_t row, uint32_t item,
                                             uint32_t items, KeptRows<Store::kIndexed>& kept,
                                             int64_t base, const Store& store) {
  (void)planes, (void)kept;  // only the CPU's vector code reads them
  const int64_t plane = row / ah.out;
  const int64_t p = row - plane * ah.out;
  const float* xp = x + plane * ah.in * aw.in;
  if (items == 1) prefetch_inputs(planes, ah, aw, x, row + rows_ahead(ah, aw));
#if PORTA_POOL_AVX512
  if (items == 1 && avx512::quads(ah, aw)) {
    avx512::for_quad_maxima({x, x + planes * ah.in * aw.in}, xp, aw, p,
                            [&](int64_t q0, avx512::Mask lanes, const avx512::Quads& m) {
                              store(base + q0, lanes, avx512::indexed(m, aw.in, p, q0));
                            });
    return;
  }
  if (items == 1 && avx512::takes(ah, aw)) {
    avx512::for_row_maxima(
        avx512::Extent{x, x + planes * ah.in * aw.in}, xp, ah, aw, p, &kept.shared,
        [&](int64_t q0, avx512::Mask lanes, const auto& m) { store(base + q0, lanes, m); });
    return;
  }
#endif
#if PORTA_TARGET_CPU && defined(__AVX2__)  // see PORTA_POOL_AVX2
  if (items == 1 && aw.stride == 2 && ah.in * aw.in < INT32_MAX &&
      row_maxima_stride2<Store::kIndexed>(xp, x + planes * ah.in * aw.in, ah, aw, p, &kept.steps,
                                          store.values(base), store.indices(base))) {
    return;
  }
#endif
  row_maxima<int32_t>(xp, ah, aw, p, item, items,
                      [&](int64_t q, const Max<int32_t>& m) { store(base + q, m); });
}

// Runs over rows of y (planes x out_h of them, out_w long) and hands store(i, max) each window
// maximum, i being the output's index in y (as row_window_maxima).
template <class Store>
PORTA_DEVICE_FUNCTION void window_maxima(int64_t planes, const Axis& ah, const Axis& aw,
                                         const float* x, const Store& store) {
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);
  KeptRows<Store::kIndexed> kept;
  const int64_t ahead = rows_ahead(ah, aw);
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;  // (plane, p)
    if (row >= planes * ah.out) return;
    if (items == 1 && row + ahead < planes * ah.out) {
      store.prefetch((row + ahead) * aw.out, aw.out);
    }
    row_window_maxima(planes, ah, aw, x, row, item, items, kept, row * aw.out, store);
  });
}

// window_maxima's stores: y, the maxima's values; argmax, their indices. kIndexed: whether the
// indices are wanted; values(i) and indices(i): where the row from output i goes, or null.
struct StoreValues {
  static constexpr bool kIndexed = false;
  float* y;
  PORTA_DEVICE_FUNCTION void operator()(int64_t i, const Max<int32_t>& m) const { y[i] = m.value; }
  // Where the outputs from index i go, for whole rows.
  PORTA_DEVICE_FUNCTION float* values(int64_t i) const { return y + i; }
  PORTA_DEVICE_FUNCTION int32_t* indices(int64_t) const { return nullptr; }
  // Asks for the lines of outputs [i, i + count), to be written.
  PORTA_DEVICE_FUNCTION void prefetch(int64_t i, int64_t count) const {
    for (int64_t k = 0; k < count; k += kLineFloats) porta_ops::prefetch_for_writing(y + i + k);
  }
#if PORTA_POOL_AVX512
  template <class Maxima>  // avx512::Maxima or Values
  void operator()(int64_t i, avx512::Mask lanes, const Maxima& m) const {
    avx512::store_lanes(y + i, lanes, m.value);
  }
#endif
};
struct StoreIndices {
  static constexpr bool kIndexed = true;
  int32_t* argmax;
  PORTA_DEVICE_FUNCTION float* values(int64_t) const { return nullptr; }
  PORTA_DEVICE_FUNCTION int32_t* indices(int64_t i) const { return argmax + i; }
  PORTA_DEVICE_FUNCTION void prefetch(int64_t i, int64_t count) const {
    for (int64_t k = 0; k < count; k += kLineFloats)
      porta_ops::prefetch_for_writing(argmax + i + k);
  }
  PORTA_DEVICE_FUNCTION void operator()(int64_t i, const Max<int32_t>& m) const {
    argmax[i] = m.at;
  }
#if PORTA_POOL_AVX512
  template <class Maxima>  // avx512::Maxima or Indexed
  void operator()(int64_t i, avx512::Mask lanes, const Maxima& m) const {
    avx512::store_lanes(argmax + i, lanes, m.at);
  }
#endif
};

// The largest group pool.cpp launches these kernels with (row_launch's max_items), declared so
// that GPU compilers budget their registers for no more: max_pool2d_backward needs 74 registers
// on sm_80, too many for a group of 1024.
constexpr uint32_t kPoolItems = 256;

}  // namespace

PORTA_KERNEL_MAX_GROUP(max_pool2d_forward, kPoolItems, int64_t planes, int64_t in_h, int64_t in_w,
                       int64_t out_h, int64_t out_w, int64_t window_h, int64_t window_w,
                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                       const float* x, float* y) {
  const Axis ah{in_h, out_h, window_h, stride_h, pad_h}, aw{in_w, out_w, window_w, stride_w, pad_w};
#if PORTA_POOL_AVX512 || PORTA_POOL_AVX2
  // The group's rows of y, where one item takes each (the host's plan on the CPU).
  const int64_t begin = porta_ops::group_index() * porta::group_size(1), rows = planes * out_h;
  const int64_t end = begin + porta::group_size(1) < rows ? begin + porta::group_size(1) : rows;
#endif
#if PORTA_POOL_AVX512
  if (porta::group_size(0) == 1 && avx512::stacks(ah, aw)) {
    avx512::for_stacked_maxima({x, x + planes * in_h * in_w}, avx512::stack_of(out_w), out_w, begin,
                               end, [&](int64_t at, avx512::Mask lanes, const avx512::Quads& m) {
                                 // Each output's 4 inputs are consecutive: x from 4 at on.
                                 for (int64_t i = 0; i < 4 * 16; i += kLineFloats) {
                                   porta_ops::prefetch(x + 4 * at + kBytesAhead / 4 + i);
                                 }
                                 porta_ops::prefetch_for_writing(y + at + kBytesAhead / 16);
                                 avx512::store_lanes(y + at, lanes, m.value);
                               });
    return;
  }
  if (porta::group_size(0) == 1 && avx512::windows3(ah, aw)) {
    avx512::forward3({x, x + planes * in_h * in_w}, planes, ah, aw, y, begin, end,
                     rows_ahead(ah, aw));
    return;
  }
#endif
#if PORTA_POOL_AVX2
  if (porta::group_size(0) == 1 && quad_runs(ah, aw)) {
    quad_run_maxima(x, x + planes * in_h * in_w, y, out_w, begin * out_w, end * out_w);
    return;
  }
#endif
  // Only the value is stored, which ties do not change: int32 indices do for any plane.
  window_maxima(planes, ah, aw, x, StoreValues{y});
}

// argmax[plane][p][q] = the index h * in_w + w of output (p, q)'s window maximum in its plane
// (planes of fewer than 2^31 elements).
PORTA_KERNEL_MAX_GROUP(max_pool2d_argmax, kPoolItems, int64_t planes, int64_t in_h, int64_t in_w,
                       int64_t out_h, int64_t out_w, int64_t window_h, int64_t window_w,
                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                       const float* x, int32_t* argmax) {
  window_maxima(planes, Axis{in_h, out_h, window_h, stride_h, pad_h},
                Axis{in_w, out_w, window_w, stride_w, pad_w}, x, StoreIndices{argmax});
}

// Where windows do not overlap (stride >= window, both ways), each dx element gets the dy of at
// most one window: one pass over rows of y, in which each output row zeroes the rows of dx it
// owns (Axis::band) and then stores each window's dy at its maximum (planes of fewer than 2^31
// elements). dx is written once, x and dy read once; no scratch. Several items per row zero
// their share of the band in a first pass, then store after the barrier.
PORTA_KERNEL_MAX_GROUP(max_pool2d_backward_disjoint, kPoolItems, int64_t planes, int64_t in_h,
                       int64_t in_w, int64_t out_h, int64_t out_w, int64_t window_h,
                       int64_t window_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, const float* x, const float* dy, float* dx) {
  const Axis ah{in_h, out_h, window_h, stride_h, pad_h};
  const Axis aw{in_w, out_w, window_w, stride_w, pad_w};
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);
  const int64_t rows = planes * out_h;
  // The band of output row `row` (plane, p) as a range of the plane: its rows are contiguous.
  const auto band = [&](int64_t row, int64_t* begin, int64_t* end) {
    int64_t h0, h1;
    ah.band(row % out_h, &h0, &h1);
    *begin = (row / out_h) * in_h * in_w + h0 * in_w;
    *end = (row / out_h) * in_h * in_w + h1 * in_w;
  };
#if PORTA_POOL_AVX512
  if (items == 1 && avx512::stacks(ah, aw)) {
    const int64_t end =
        first_row + porta::group_size(1) < rows ? first_row + porta::group_size(1) : rows;
    const avx512::Stack s = avx512::stack_of(out_w);
    avx512::for_stacked_maxima(
        {x, x + planes * in_h * in_w}, s, out_w, first_row, end,
        [&](int64_t at, avx512::Mask lanes, const avx512::Quads& m) {
          avx512::write_stacked({dy, dy + rows * out_w}, dx, s, at, lanes, m);
        });
    return;
  }
#endif
#if PORTA_POOL_AVX2
  if (items == 1 && quad_runs(ah, aw)) {
    const int64_t end =
        first_row + porta::group_size(1) < rows ? first_row + porta::group_size(1) : rows;
    quad_run_backward(x, x + planes * in_h * in_w, dy, dx, out_w, first_row * out_w, end * out_w);
    return;
  }
#endif
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;
    if (items == 1 || row >= rows) return;
    int64_t begin, end;
    band(row, &begin, &end);
    for (int64_t i = begin + item; i < end; i += items) dx[i] = 0.0f;
  });
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;
    if (row >= rows) return;
    const int64_t plane = row / out_h;
    const float* dyr = dy + row * out_w;
    float* dxp = dx + plane * in_h * in_w;
#if PORTA_POOL_AVX512
    // Writes dx once, its band a window's maxima at a time.
    if (items == 1 && avx512::quads(ah, aw)) {
      const int64_t p = row - plane * out_h;
      avx512::for_quad_maxima(
          {x, x + planes * in_h * in_w}, x + plane * in_h * in_w, aw, p,
          [&](int64_t q0, avx512::Mask lanes, const avx512::Quads& m) {
            avx512::write_quads({dy, dy + rows * out_w}, dxp, dyr, ah, aw, p, q0, lanes, m);
          });
      return;
    }
    if (items == 1 && avx512::takes(ah, aw)) {
      const avx512::Extent whole_x{x, x + planes * in_h * in_w}, whole_dy{dy, dy + rows * out_w};
      avx512::for_row_maxima<avx512::Maxima>(whole_x, x + plane * in_h * in_w, ah, aw,
                                             row - plane * out_h, nullptr,
                             [&](int64_t q0, avx512::Mask lanes, const avx512::Maxima& m) {
                               avx512::write_band(whole_dy, dxp, dyr, ah, aw, row - plane * out_h,
                                                  q0, lanes, m);
                             });
      return;
    }
#endif
#if PORTA_POOL_AVX2
    if (items == 1 && aw.stride == 2 && in_h * in_w < INT32_MAX &&
        band_stride2(x + plane * in_h * in_w, x + planes * in_h * in_w, dyr, dy + rows * out_w, dxp,
                     ah, aw, row - plane * out_h)) {
      return;
    }
#endif
    if (items == 1) {
      int64_t begin, end;
      band(row, &begin, &end);
      for (int64_t i = begin; i < end; ++i) dx[i] = 0.0f;
    }
    row_maxima<int32_t>(x + plane * in_h * in_w, ah, aw, row - plane * out_h, item, items,
                        [&](int64_t q, const Max<int32_t>& m) { dxp[m.at] = dyr[q]; });
  });
}

namespace {

// Runs body(item, items, plane, h, dx_row) over the rows of dx (planes x in_h of them).
template <class Body>
PORTA_DEVICE_FUNCTION void dx_rows(int64_t planes, const Axis& ah, const Axis& aw, float* dx, Body&& body) {
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;  // (plane, h)
    if (row >= planes * ah.in) return;
    const int64_t plane = row / ah.in;
    body(item, items, plane, row - plane * ah.in, dx + row * aw.in);
  });
}

// The sum of dyp[p][q] over the outputs (p, q), p in [p0, p1), whose windows cover (h, w) and
// chose it (chosen(p, q) == h * in_w + w), in increasing (p, q) order.
template <class Chosen>
PORTA_DEVICE_FUNCTION float gather_column(const Axis& aw, int64_t h, int64_t w, int64_t p0,
                                          int64_t p1, const float* dyp, Chosen&& chosen) {
  int64_t q0, q1;
  aw.covering(w, &q0, &q1);
  const int64_t self = h * aw.in + w;
  float sum = 0.0f;
  for (int64_t p = p0; p < p1; ++p) {
    for (int64_t q = q0; q < q1; ++q) {
      if (chosen(p, q) == self) sum += dyp[p * aw.out + q];
    }
  }
  return sum;
}

// dxr[w] for w = item, item + items, ... of row h: the sum of dyp[p][q] over the outputs (p, q)
// whose windows cover (h, w) and chose it (chosen(p, q) == h * in_w + w), in increasing (p, q)
// order.
template <class Chosen>
PORTA_DEVICE_FUNCTION void gather_row(const Axis& ah, const Axis& aw, int64_t h, uint32_t item,
                             uint32_t items, const float* dyp, float* dxr, Chosen&& chosen) {
  int64_t p0, p1;
  ah.covering(h, &p0, &p1);
  for (int64_t w = item; w < aw.in; w += items) {
    dxr[w] = gather_column(aw, h, w, p0, p1, dyp, chosen);
  }
}

}  // namespace

// dx[h][w] = sum of dy[p][q] over the outputs (p, q) whose window maximum, from
// max_pool2d_argmax, is (h, w), added in increasing (p, q) order. Rows over dx, each item finding
// the outputs that cover each of its elements: no atomics, as a GPU needs (the host scatters:
// max_pool2d_backward_scatter).
PORTA_KERNEL_MAX_GROUP(max_pool2d_backward_gather, kPoolItems, int64_t planes, int64_t in_h,
                       int64_t in_w, int64_t out_h, int64_t out_w, int64_t window_h,
                       int64_t window_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, const int32_t* argmax, const float* dy, float* dx) {
  const Axis ah{in_h, out_h, window_h, stride_h, pad_h};
  const Axis aw{in_w, out_w, window_w, stride_w, pad_w};
  dx_rows(planes, ah, aw, dx,
          [&](uint32_t item, uint32_t items, int64_t plane, int64_t h, float* dxr) {
            const int32_t* ap = argmax + plane * out_h * out_w;
            const float* dyp = dy + plane * out_h * out_w;
            gather_row(ah, aw, h, item, items, dyp, dxr,
                       [&](int64_t p, int64_t q) { return int64_t(ap[p * out_w + q]); });
          });
}

// max_pool2d_backward_gather on the host, a work-item per plane of dx: the plane zeroed, then
// row by row of y, the row's window maxima found as max_pool2d_argmax finds them, into a buffer
// that stays in L1, and each output's dy added to the element its window chose, the outputs in
// increasing (p, q) order, so that every element gets the gather's sum, in its order. Each output
// is visited once, where the gather visits it for every row its window covers and compares it
// with each column; and the indices never travel to memory and back, as argmax's pass and a
// separate scatter's had them (the 3x3 stride 2 backward 1.2x the bytes). Rows of y wider than
// the buffer find each window's maximum one by one, and so do the builds for other targets,
// which never launch this kernel (pool.cpp), so that no GPU kernel carries the buffer.
#if PORTA_TARGET_CPU
constexpr int64_t kScatterRow = 1024;
#endif

PORTA_KERNEL_MAX_GROUP(max_pool2d_backward_scatter, kPoolItems, int64_t planes, int64_t in_h,
                       int64_t in_w, int64_t out_h, int64_t out_w, int64_t window_h,
                       int64_t window_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, const float* x, const float* dy, float* dx) {
  const Axis ah{in_h, out_h, window_h, stride_h, pad_h};
  const Axis aw{in_w, out_w, window_w, stride_w, pad_w};
  const int64_t first_plane = porta_ops::group_index() * porta::group_size(1);
#if PORTA_TARGET_CPU
  KeptRows<true> kept;
#endif
#if PORTA_POOL_AVX512
  std::optional<avx512::Rows3<avx512::Indexed>> rows3;
  if (avx512::windows3(ah, aw)) rows3.emplace(aw);
#endif
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t plane = first_plane + r;
    if (item != 0 || plane >= planes) return;
    const int64_t inputs = in_h * in_w;
    float* dxp = dx + plane * inputs;
    for (int64_t i = 0; i < inputs; ++i) dxp[i] = 0.0f;
    for (int64_t p = 0; p < out_h; ++p) {
      const float* dyr = dy + (plane * out_h + p) * out_w;
#if PORTA_TARGET_CPU
      if (out_w <= kScatterRow) {
        if (plane + 1 < planes) {  // the next plane's dx, for writing, each row of y a share
          const int64_t share = (inputs + out_h - 1) / out_h;
          const int64_t from = p * share, to = porta_ops::min64(from + share, inputs);
          for (int64_t i = from; i < to; i += kLineFloats)
            porta_ops::prefetch_for_writing(dxp + inputs + i);
        }
        int32_t at[kScatterRow];
        const auto find_indices = [&] {
#if PORTA_POOL_AVX512
          if (rows3) {
            prefetch_inputs(planes, ah, aw, x, plane * out_h + p + rows_ahead(ah, aw));
            rows3->row({x, x + planes * inputs}, x + plane * inputs, ah, aw, p,
                       [&](int64_t q0, avx512::Mask lanes, const avx512::Indexed& m) {
                         avx512::store_lanes(at + q0, lanes, m.at);
                       });
            return;
          }
#endif
          row_window_maxima(planes, ah, aw, x, plane * out_h + p, 0, 1, kept, 0, StoreIndices{at});
        };
        find_indices();
        for (int64_t q = 0; q < out_w; ++q) dxp[at[q]] += dyr[q];
        continue;
      }
#endif
      for (int64_t q = 0; q < out_w; ++q) {
        dxp[window_max<int32_t>(x + plane * inputs, ah, aw, p, q).at] += dyr[q];
      }
    }
  });
}

// As max_pool2d_backward_gather, finding each window's maximum again instead of reading it: no
// scratch, for planes too large for int32 indices.
PORTA_KERNEL_MAX_GROUP(max_pool2d_backward, kPoolItems, int64_t planes, int64_t in_h, int64_t in_w,
                       int64_t out_h, int64_t out_w, int64_t window_h, int64_t window_w,
                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                       const float* x, const float* dy, float* dx) {
  const Axis ah{in_h, out_h, window_h, stride_h, pad_h};
  const Axis aw{in_w, out_w, window_w, stride_w, pad_w};
  dx_rows(planes, ah, aw, dx,
          [&](uint32_t item, uint32_t items, int64_t plane, int64_t h, float* dxr) {
            const float* xp = x + plane * in_h * in_w;
            gather_row(ah, aw, h, item, items, dy + plane * out_h * out_w, dxr,
                       [&](int64_t p, int64_t q) {
                         return window_max<int64_t>(xp, ah, aw, p, q).at;
                       });
          });
}
