// The GEMM engine's packed path, for the CPU (included by gemm_engine.h when PORTA_TARGET_CPU).
//
// A group computes its tile of C in blocks of tile_k depth. Per block it packs B's panel
// (tile_k x tile_n) into NR-column strips, then, block_m rows at a time, A's block into MR-row
// strips (both in the group's shared memory: the pool thread's scratch, which stays in its L2),
// and runs the micro-kernel over every (A strip, B strip) pair: an MR x NR block of C held in
// MR x NV vector registers over the block's depth, fed by MR broadcasts of A and NV aligned
// vector loads of B per step. The vectors are GCC vector extensions, so the x86-64-v4 build
// uses zmm registers (MR = 8, NR = 32: 16 accumulators), v3 ymm (6 x 16) and the baseline xmm
// (6 x 8), each with the FMA the level has. An fp32 A stored along the depth (GEMM's A as
// stored, conv's weights) is not packed: the micro-kernel broadcasts from its MR rows in place,
// which saves a transposing copy of every element (a third of the time of 2560x64x2560). On
// AVX-512 and AVX2, a conv window whose strips are runs of x is not packed either: the
// micro-kernel loads them from x under lane masks (window_gemm, at the end).
#pragma once

#include <type_traits>
#include <utility>

#if defined(__AVX2__) || defined(__AVX512F__)
#include "x86_intrinsics.h"
#endif

namespace porta_ops {
namespace cpu {

#if defined(__AVX512F__)
#define PORTA_GEMM_VECTOR_BYTES 64
inline constexpr int kMR = 8;
#elif defined(__AVX2__)
#define PORTA_GEMM_VECTOR_BYTES 32
inline constexpr int kMR = 6;
#else
#define PORTA_GEMM_VECTOR_BYTES 16
inline constexpr int kMR = 6;
#endif
typedef float vfloat __attribute__((vector_size(PORTA_GEMM_VECTOR_BYTES)));
inline constexpr int kVL = PORTA_GEMM_VECTOR_BYTES / 4;  // floats per vector
inline constexpr int kNV = 2;                            // vectors per row of the micro-tile
inline constexpr int kNR = kNV * kVL;
static_assert(kCpuColumnMultiple % kNR == 0, "the host's column multiple must fit every NR");

inline vfloat load(const float* p) {
  vfloat v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vfloat v) { __builtin_memcpy(p, &v, sizeof v); }

// One step of a 16 x 16 transpose: x and y, rows i and i + B, swap the lanes of the off-diagonal
// B x B blocks between them (x's lanes with bit B set for y's without).
template <int B, class V, int... L>
__attribute__((always_inline)) inline void swap_blocks(V& x, V& y,
                                                       std::integer_sequence<int, L...>) {
  const V upper = __builtin_shufflevector(x, y, ((L & B) ? 16 + L - B : L)...);
  const V lower = __builtin_shufflevector(x, y, ((L & B) ? 16 + L : L + B)...);
  x = upper;
  y = lower;
}

template <int B, class V>
__attribute__((always_inline)) inline void swap_blocks(V (&v)[16]) {
  for (int i = 0; i < 16; ++i) {
    if ((i & B) == 0) swap_blocks<B>(v[i], v[i + B], std::make_integer_sequence<int, 16>());
  }
}

// A 16 x 16 transpose of 32-bit lanes in registers (V: 16 of them, floats or words): rows v[i]
// become its columns.
template <class V>
__attribute__((always_inline)) inline void transpose16(V (&v)[16]) {
  swap_blocks<8>(v);
  swap_blocks<4>(v);
  swap_blocks<2>(v);
  swap_blocks<1>(v);
}

struct MicroTile {
  vfloat v[kMR][kNV];
};

// A micro-tile's sums over the first Rows rows, held in registers through a micro-kernel's depth
// loop. Each depth adds the outer product of A's column there (a(i) for row i) and B's row (NR
// floats, as kNV vectors or from memory); the kernels differ only in where they read the two.
template <int Rows>
struct Accumulators {
  vfloat c[Rows][kNV];

  __attribute__((always_inline)) Accumulators() {
#pragma GCC unroll 16
    for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) c[i][v] = vfloat{};
  }
  // The sums so far of a tile whose depth comes in several runs.
  __attribute__((always_inline)) explicit Accumulators(const MicroTile& from) {
#pragma GCC unroll 16
    for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) c[i][v] = from.v[i][v];
  }
  template <class ColumnOfA>
  __attribute__((always_inline)) void add(ColumnOfA a, const vfloat (&b)[kNV]) {
#pragma GCC unroll 16
    for (int i = 0; i < Rows; ++i) {
      const float ai = a(i);
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) c[i][v] += ai * b[v];
    }
  }
  template <class ColumnOfA>
  __attribute__((always_inline)) void add(ColumnOfA a, const float* __restrict b) {
    vfloat bv[kNV];
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) bv[v] = load(b + v * kVL);
    add(a, bv);
  }
  __attribute__((always_inline)) void store(MicroTile& out) const {
#pragma GCC unroll 16
    for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) out.v[i][v] = c[i][v];
  }
};

// A strip of a panel as the micro-kernel walks it: depth d's elements at p + d * step. Packed,
// step is the strip's width (MR for A, NR for B); read in place, the operand's distance between
// depths: an fp32 B stored along its rows (GEMM's B as stored, NN and TN) already has each
// NR-column strip's depths ldb apart, and an A stored along its columns (TN) its MR-row panels'.
template <class E>
struct Strip {
  const E* p;
  int64_t step;
};

// A block's panels of one operand (A's of MR rows, B's of NR columns; Width): panel t at
// p + t * across, depths step apart, all packed (across = Width * depth, step = Width) or read in
// place (across = Width, step = the operand's depth stride). An in-place operand's last panel, if
// partial, is packed at `tail` (index `last`), so that nothing outside the operand is read.
template <class E, int Width>
struct Panels {
  const E* p;
  int64_t across, step;
  const E* tail = nullptr;
  int64_t last = -1;

  static Panels packed(const E* p, int64_t depth) { return Panels{p, Width * depth, Width}; }
  Strip<E> operator[](int64_t t) const {
    return t == last ? Strip<E>{tail, Width} : Strip<E>{p + t * across, step};
  }
  bool in_place() const { return across == Width; }
  // What the first pass over panel t fetches for the next one: an in-place operand's next panel
  // streams from memory in rows `step` apart, which the hardware prefetcher does not follow.
  const E* ahead(int64_t t, int64_t count) const {
    return in_place() && t + 1 < count && t + 1 != last ? p + (t + 1) * across : nullptr;
  }
};

// Fetches the lines of an NR-wide strip's row at p: up to three where it need not be aligned,
// its two whole lines where it is (a packed strip).
template <bool Aligned = false>
__attribute__((always_inline)) inline void prefetch_strip_row(const float* p) {
#pragma GCC unroll 4
  for (int o = 0; o < kNR; o += 64 / int(sizeof(float))) __builtin_prefetch(p + o);
  if constexpr (!Aligned) __builtin_prefetch(p + kNR - 1);
}

// out = the kb-deep product of an A strip (kb x MR, a.p[d * a.step + i]) and a B strip (kb x NR,
// b.p[d * b.step + j]); with Fetch, the rows of the B strip at b_next (b.step apart) are
// fetched as the depth goes by. Packed: both strips packed, their steps constants (a step the
// compiler knows keeps the packed loop as fast as it was).
template <bool Fetch, bool Packed>
__attribute__((always_inline)) inline void micro_kernel_strided(int64_t kb, Strip<float> a,
                                                                Strip<float> b, const float* b_next,
                                                                MicroTile& out) {
  Accumulators<kMR> c;
  const float* __restrict pa = a.p;
  const float* __restrict pb = b.p;
  const int64_t a_step = Packed ? kMR : a.step, b_step = Packed ? kNR : b.step;
  // Four depths a pass, here and in the rows and staged kernels: the loop's own counting and
  // pointer steps come a quarter as often (docs/decisions.md, "The micro-kernels' depth loops
  // unrolled four times").
#pragma GCC unroll 4
  for (int64_t d = 0; d < kb; ++d) {
    if constexpr (Fetch) prefetch_strip_row(b_next + d * b.step);
    c.add([&](int i) { return pa[i]; }, pb);
    pa += a_step;
    pb += b_step;
  }
  c.store(out);
}

__attribute__((always_inline)) inline void micro_kernel(int64_t kb, Strip<float> a, Strip<float> b,
                                                        const float* b_next, MicroTile& out) {
  if (b_next) {
    micro_kernel_strided<true, false>(kb, a, b, b_next, out);
  } else if (a.step == kMR && b.step == kNR) {
    micro_kernel_strided<false, true>(kb, a, b, b_next, out);
  } else {
    micro_kernel_strided<false, false>(kb, a, b, b_next, out);
  }
}

// Rows of memory that micro-kernels fetch into L2 a few at a time as they go (packed_gemm: the
// rows that the next block's pack of a strided A reads, a few lines each, an operand's row apart,
// which the hardware prefetcher does not follow): row r at p + r * stride, `bytes` long.
struct RowFetch {
  const char* p = nullptr;
  int64_t stride = 0, bytes = 0, rows = 0;

  __attribute__((always_inline)) void fetch(int64_t r) const {
    const char* const row = p + r * stride;
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(row + o, 0, 2);
    __builtin_prefetch(row + bytes - 1, 0, 2);
  }
};

// micro_kernel over packed strips, fetching rows [first, first + count) of `rows` spread over its
// depth: the depth in as many segments, a row fetched as each begins.
__attribute__((always_inline)) inline void micro_kernel_fetching(int64_t kb, Strip<float> a,
                                                                 Strip<float> b,
                                                                 const RowFetch& rows,
                                                                 int64_t first, int64_t count,
                                                                 MicroTile& out) {
  Accumulators<kMR> c;
  const float* __restrict pa = a.p;
  const float* __restrict pb = b.p;
  const int64_t segments = max64(1, min64(count, kb)), gap = kb / segments;
  for (int64_t s = 0; s < segments; ++s) {
    for (int64_t r = count * s / segments; r < count * (s + 1) / segments; ++r) {
      rows.fetch(first + r);
    }
    const int64_t depths = s + 1 < segments ? gap : kb - s * gap;
#pragma GCC unroll 4
    for (int64_t d = 0; d < depths; ++d) {
      c.add([&](int i) { return pa[i]; }, pb);
      pa += kMR;
      pb += kNR;
    }
  }
  c.store(out);
}

// A packed B strip's rows are fetched this many depths ahead of the rows kernel: read from L2
// again for every panel of A, they kept it waiting (1760x128x1760 +3%, 2560x64x2560 +5% on the
// Xeon; the packed kernel, A packed too, measured the same with or without).
inline constexpr int64_t kStripAhead = 16;

// micro_kernel with A's MR rows read where they are (row r at a + r * lda, depths consecutive)
// instead of from a packed strip: an fp32 A stored along the depth needs no transposing copy.
// With FetchA, lines of the next panel's rows (next, also lda apart) are prefetched as the depth
// goes by, since MR short streams a row apart defeat the hardware prefetcher: one line a depth,
// the rows in turn (each row's line twice over its 16 depths). Fetched MR at a time, once per 16
// depths, they held the fill buffers that B's lines from L2 wait on (a row tile whose A streams
// from memory, alone: 0.57 of the FMA peak against 0.65 spread out, on the Xeon). They go to L2
// only: in L1 they would evict the current panel's lines, which share its sets where lda is a
// multiple of 4 KiB (1024^3). With Rows < MR, the micro-tile's first Rows rows only: a last panel
// of a few rows (the 3 of m = 35) then costs about its own rows' products rather than MR's. B and
// b_next as micro_kernel's. With `add`, the sums continue from out's (a depth in several runs).
template <int Rows, bool FetchA, bool Fetch, bool Packed>
__attribute__((always_inline)) inline void micro_kernel_rows_strided(int64_t kb, const float* a,
                                                                     int64_t lda, const float* next,
                                                                     Strip<float> b,
                                                                     const float* b_next,
                                                                     MicroTile& out, bool add) {
  const float* row[Rows];
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i) row[i] = a + i * lda;
  Accumulators<Rows> c = add ? Accumulators<Rows>(out) : Accumulators<Rows>();
  const float* __restrict pb = b.p;
  const int64_t b_step = Packed ? kNR : b.step;
#pragma GCC unroll 4
  for (int64_t d = 0; d < kb; ++d) {
    if constexpr (FetchA) {
      if (const int64_t r = d & 7; r < Rows) __builtin_prefetch(next + r * lda + d, 0, 2);
    }
    if constexpr (Fetch) prefetch_strip_row(b_next + d * b.step);
    if constexpr (Packed) prefetch_strip_row<true>(pb + kStripAhead * kNR);
    c.add([&](int i) { return row[i][d]; }, pb);
    pb += b_step;
  }
  c.store(out);
}

template <int Rows = kMR>
__attribute__((always_inline)) inline void micro_kernel_rows(int64_t kb, const float* a,
                                                             int64_t lda, const float* next,
                                                             Strip<float> b, const float* b_next,
                                                             MicroTile& out, bool add = false) {
  const auto run = [&](auto fetch_a) __attribute__((always_inline)) {
    constexpr bool kFetchA = decltype(fetch_a)::value;
    if (b_next) {
      micro_kernel_rows_strided<Rows, kFetchA, true, false>(kb, a, lda, next, b, b_next, out, add);
    } else if (b.step == kNR) {
      micro_kernel_rows_strided<Rows, kFetchA, false, true>(kb, a, lda, next, b, b_next, out, add);
    } else {
      micro_kernel_rows_strided<Rows, kFetchA, false, false>(kb, a, lda, next, b, b_next, out, add);
    }
  };
  if (next) {
    run(std::true_type{});
  } else {
    run(std::false_type{});
  }
}

// Where a micro-tile's columns j + [0, cols) lie in a row of C: lane l at first + l for
// l < split, at second + l from there on. One run (split = cols) in a plain matrix; two where
// the strip crosses from one image of a conv output into the next; neither (runs false) where
// the columns are not consecutive (a column stride) or the images are narrower than a strip.
struct TileColumns {
  int64_t first, second;
  int split;
  bool runs;

  TileColumns(const Split& col, int64_t j, int cols) {
    const SplitCursor cursor(col, j);
    first = second = cursor.offset();
    split = cols;
    runs = col.inner == 1;
    if (col.div > 0 && col.div - cursor.lo < cols) {
      split = int(col.div - cursor.lo);
      second = col(j + split) - split;
      runs = runs && cols - split <= col.div;
    }
  }
};

// Fetches the lines of C that a micro-tile at row i will be added into, so that they arrive
// while it is computed (C's rows are far apart, and a tile of C does not stay in L2 between
// depth blocks); for writing, since every line is written. Inlined: GCC takes a function of
// prefetches alone for one without effects and drops its calls (the AVX-512 build did).
__attribute__((always_inline)) inline void prefetch_tile(const OutputView& c, int64_t i,
                                                         const TileColumns& at, int rows,
                                                         int cols) {
  if (!at.runs) return;
  const float* base = c.p + i * c.row_stride;
  // A run of at most NR lanes [lo, hi) touches the lines of lanes lo, lo + 16 and hi - 1.
  auto fetch = [&](const float* run, int lo, int hi) __attribute__((always_inline)) {
    if (lo >= hi) return;
    for (int r = 0; r < rows; ++r) {
      const float* row = run + r * c.row_stride;
      __builtin_prefetch(row + lo, 1);
      if (lo + 16 < hi) __builtin_prefetch(row + lo + 16, 1);
      __builtin_prefetch(row + hi - 1, 1);
    }
  };
  fetch(base + at.first, 0, at.split);
  fetch(base + at.second, at.split, cols);
}

// out[l] = alpha * x[l] (+ beta * out[l] where read) for lanes l in [lo, hi) of a micro-tile
// row: whole vectors where all their lanes are in range, masked ones on AVX-512, else one by one.
__attribute__((always_inline)) inline void store_lanes(const vfloat (&x)[kNV], float* out, int lo,
                                                       int hi, float alpha, float beta, bool read) {
#pragma GCC unroll 4
  for (int v = 0; v < kNV; ++v) {
    const int l0 = v * kVL;
    if (hi <= l0 || lo >= l0 + kVL) continue;
    const vfloat y = alpha * x[v];
    if (lo <= l0 && l0 + kVL <= hi) {
      store(out + l0, read ? y + beta * load(out + l0) : y);
      continue;
    }
#if defined(__AVX512F__)
    const int from = lo > l0 ? lo - l0 : 0, to = hi < l0 + kVL ? hi - l0 : kVL;
    const __mmask16 lanes = static_cast<__mmask16>(((1u << to) - 1) & ~((1u << from) - 1));
    __m512 z;
    __builtin_memcpy(&z, &y, sizeof z);
    if (read) {
      z = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(lanes, out + l0), z);
    }
    _mm512_mask_storeu_ps(out + l0, lanes, z);
#else
    float lane[kVL];
    __builtin_memcpy(lane, &y, sizeof lane);
    for (int l = lo > l0 ? lo : l0; l < hi && l < l0 + kVL; ++l) {
      out[l] = read ? lane[l - l0] + beta * out[l] : lane[l - l0];
    }
#endif
  }
}

// Adds the micro-tile into C at (i, j) (its columns at `at`): rows x cols of it are in range.
// The first block of the depth applies beta (and reads C only if beta != 0); later blocks
// accumulate.
inline void store_tile(const MicroTile& t, const OutputView& c, int64_t i, int64_t j,
                       const TileColumns& at, int rows, int cols, bool first) {
  float* base = c.p + i * c.row_stride;
  const bool read = !first || c.beta != 0.0f;
  const float beta = first ? c.beta : 1.0f;
  if (c.alpha == 0.0f) {  // as BLAS: A and B do not matter (NaN or not); only beta applies
    if (first) {
      for (int r = 0; r < rows; ++r) {
        SplitCursor cursor(c.col, j);
        for (int jj = 0; jj < cols; ++jj, cursor.next()) {
          float* e = base + r * c.row_stride + cursor.offset();
          *e = c.beta != 0.0f ? c.beta * *e : 0.0f;
        }
      }
    }
    return;
  }
  if (at.runs) {
    for (int r = 0; r < rows; ++r) {
      float* out = base + r * c.row_stride;
      store_lanes(t.v[r], out + at.first, 0, at.split, c.alpha, beta, read);
      if (at.split < cols) {
        store_lanes(t.v[r], out + at.second, at.split, cols, c.alpha, beta, read);
      }
    }
    return;
  }
  int64_t offs[kNR];
  SplitCursor cursor(c.col, j);
  for (int jj = 0; jj < cols; ++jj, cursor.next()) offs[jj] = cursor.offset();
  float tile[kMR][kNR];
  __builtin_memcpy(tile, &t, sizeof tile);
  for (int r = 0; r < rows; ++r) {
    float* out = base + r * c.row_stride;
    for (int jj = 0; jj < cols; ++jj) {
      float* e = out + offs[jj];
      const float x = c.alpha * tile[r][jj];
      *e = read ? x + beta * *e : x;
    }
  }
}

// One micro-tile of C, rows i to i + rows and columns j to j + cols: its lines of C fetched,
// compute(acc) run, the tile stored (added into C unless first).
template <class Compute>
__attribute__((always_inline)) inline void micro_tile(const OutputView& c, int64_t i, int64_t j,
                                                      int rows, int cols, bool first,
                                                      Compute compute) {
  const TileColumns at(c.col, j, cols);
  prefetch_tile(c, i, at, rows, cols);
  MicroTile acc;
  compute(acc);
  store_tile(acc, c, i, j, at, rows, cols, first);
}

// The micro-tiles of one panel of A's rows (C's rows i to i + panel_rows) across `cols` columns
// from j, NR at a time, compute(q, acc) run for strip q.
template <class Compute>
__attribute__((always_inline)) inline void for_each_strip(const OutputView& c, int64_t i, int64_t j,
                                                          int panel_rows, int64_t cols, bool first,
                                                          Compute compute) {
  const int64_t strips = div_up(cols, kNR);
  for (int64_t q = 0; q < strips; ++q) {
    micro_tile(c, i, j + q * kNR, panel_rows, int(min64(kNR, cols - q * kNR)), first,
               [&](MicroTile& acc) { compute(q, acc); });
  }
}

// The micro-tiles of a block of block_rows x cols at (i, j), compute(p, q, acc) run for A's
// panel p and B's strip q. Panels outer, where B's strips are packed: the block's B panel stays
// in L2 for every panel of A. Strips outer, where B is read in place (panels.in_place(): tiles of
// at most 64 rows): each strip then spans two or three lines per depth, and the whole block of
// them (256 x 256 on AVX2, 512 KiB of lines) does not stay in L2 from one panel of A to the
// next, while the tile's few rows of A (35 x 256 on 35x8457x2560) do, from strip to strip.
template <class Compute>
__attribute__((always_inline)) inline void for_each_pair(const OutputView& c, int64_t i, int64_t j,
                                                         int64_t block_rows, int64_t cols,
                                                         bool first, bool strips_outer,
                                                         Compute compute) {
  const int64_t panels = div_up(block_rows, kMR), strips = div_up(cols, kNR);
  const auto pair = [&](int64_t p, int64_t q) {
    micro_tile(c, i + p * kMR, j + q * kNR, int(min64(kMR, block_rows - p * kMR)),
               int(min64(kNR, cols - q * kNR)), first,
               [&](MicroTile& acc) { compute(p, q, acc); });
  };
  if (strips_outer) {
    for (int64_t q = 0; q < strips; ++q)
      for (int64_t p = 0; p < panels; ++p) pair(p, q);
  } else {
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t q = 0; q < strips; ++q) pair(p, q);
  }
}

// The micro-kernel over every (A panel, B strip) pair of a block of block_rows x cols, added
// into C at (i, j); `steps` is the panels' depth in Kernel's elements (depths, or pairs of them
// for bf16). Kernel is a template argument, so a micro-kernel compiled for another target
// (gemm_engine_cpu_bf16.h) is called as such and the loop around it is shared. The first panel's
// pass over each in-place B strip fetches the next strip (the rest find them in L2).
template <class Element,
          void (*Kernel)(int64_t, Strip<Element>, Strip<Element>, const Element*, MicroTile&)>
__attribute__((always_inline)) inline void multiply_strips(const Panels<Element, kMR>& pa,
                                                           const Panels<Element, kNR>& pb,
                                                           int64_t steps, int64_t block_rows,
                                                           int64_t cols, const OutputView& c,
                                                           int64_t i, int64_t j, bool first) {
  const int64_t b_strips = div_up(cols, kNR);
  for_each_pair(c, i, j, block_rows, cols, first, pb.in_place(),
                [&](int64_t p, int64_t q, MicroTile& acc) {
                  Kernel(steps, pa[p], pb[q], p == 0 ? pb.ahead(q, b_strips) : nullptr, acc);
                });
}

// multiply_strips over fp32 panels. Not a template and not inlined: one copy serves every
// operand type, which keeps the kernel library's compile time from growing with each dtype.
// With `ahead`, its rows are fetched over the micro-tiles, an even share each, where B's strips
// are packed (A's always are).
__attribute__((noinline)) inline void multiply_packed(const Panels<float, kMR>& pa,
                                                      const Panels<float, kNR>& pb, int64_t kb,
                                                      int64_t block_rows, int64_t cols,
                                                      const OutputView& c, int64_t i, int64_t j,
                                                      bool first, const RowFetch& ahead = {}) {
  if (ahead.rows == 0 || pb.in_place()) {
    return multiply_strips<float, micro_kernel>(pa, pb, kb, block_rows, cols, c, i, j, first);
  }
  const int64_t strips = div_up(cols, kNR), tiles = div_up(block_rows, kMR) * strips;
  for_each_pair(c, i, j, block_rows, cols, first, false, [&](int64_t p, int64_t q, MicroTile& acc) {
    const int64_t n = p * strips + q;  // panels outer
    const int64_t from = ahead.rows * n / tiles;
    micro_kernel_fetching(kb, pa[p], pb[q], ahead, from, ahead.rows * (n + 1) / tiles - from, acc);
  });
}

// A last panel of A read in place with fewer rows than the kernel reads (rows): its panel_rows
// rows of kb elements, lda apart, in `runs` runs `run_stride` apart, copied to scratch (rows x kb,
// each row's runs one after the other) with the last row repeated, so that every row the kernel
// reads is in range (store_tile drops the extra ones).
template <class T>
inline const T* padded_panel(const T* panel, int panel_rows, int rows, int64_t lda, int64_t kb,
                             int64_t runs, int64_t run_stride, T* scratch) {
  const int64_t run = kb / runs;
  for (int r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < runs; ++k) {
      __builtin_memcpy(scratch + r * kb + k * run,
                       panel + min64(r, panel_rows - 1) * lda + k * run_stride, run * sizeof(T));
    }
  }
  return scratch;
}

// multiply_strips with A's block_rows x kb elements (T) read in place by Kernel from a, rows lda
// apart, `steps` deep in Kernel's steps. A last panel of fewer than MR rows is padded in
// `scratch` (padded_panel); one of at most MR / 2 rows goes to Short, Kernel for MR / 2 rows,
// which computes only those. fp32 rows may come in `runs` runs of the depth, `run_stride` apart
// (StridedOperand::row_runs): each micro-tile then takes them in turn, its sums kept in registers
// from one run to the next, so that C is added into once per block however many runs it has.
template <class T, class Element, auto Kernel, auto Short>
__attribute__((always_inline)) inline void multiply_rows_with(
    const T* a, int64_t lda, const Panels<Element, kNR>& pb, int64_t kb, int64_t steps,
    int64_t block_rows, int64_t cols, T* scratch, const OutputView& c, int64_t i, int64_t j,
    bool first, int64_t runs = 1, int64_t run_stride = 0) {
  const int64_t a_panels = div_up(block_rows, kMR), b_strips = div_up(cols, kNR);
  const int64_t run_steps = steps / runs;
  // The last panel, padded once before the walk if partial (its runs then one after the other).
  const int last_rows = int(block_rows - (a_panels - 1) * kMR);
  const bool last_short = last_rows <= kMR / 2;
  const T* last = a + (a_panels - 1) * kMR * lda;
  int64_t last_lda = lda, last_run_stride = run_stride;
  if (const int kernel_rows = last_short ? kMR / 2 : kMR; last_rows < kernel_rows) {
    last = padded_panel(last, last_rows, kernel_rows, lda, kb, runs, run_stride, scratch);
    last_lda = kb;
    last_run_stride = kb / runs;
  }
  for_each_pair(c, i, j, block_rows, cols, first, pb.in_place(),
                [&](int64_t p, int64_t q, MicroTile& acc) {
                  const bool is_last = p + 1 == a_panels;
                  const T* panel = is_last ? last : a + p * kMR * lda;
                  const int64_t panel_lda = is_last ? last_lda : lda;
                  const int64_t panel_run_stride = is_last ? last_run_stride : run_stride;
                  // The next panel's lines are fetched during the first strip (none after:
                  // later strips reread this one from L1). The first panel's pass over an
                  // in-place B fetches its next strip.
                  const T* fetch = q == 0 && !is_last ? panel + kMR * lda : nullptr;
                  const Element* b_next = p == 0 ? pb.ahead(q, b_strips) : nullptr;
                  const Strip<Element> b = pb[q];
                  // The kernel as a constant, so that its call is inlined as before.
                  const auto run = [&](auto kernel) __attribute__((always_inline)) {
                    if constexpr (std::is_same_v<T, float>) {
                      for (int64_t r = 0; r < runs; ++r) {
                        const int64_t b_offset = r * run_steps * b.step;
                        decltype(kernel)::value(run_steps, panel + r * panel_run_stride, panel_lda,
                                                fetch ? fetch + r * run_stride : nullptr,
                                                Strip<Element>{b.p + b_offset, b.step},
                                                b_next ? b_next + b_offset : nullptr, acc, r > 0);
                      }
                    } else {
                      decltype(kernel)::value(steps, panel, panel_lda, fetch, b, b_next, acc);
                    }
                  };
                  if (is_last && last_short) {
                    run(std::integral_constant<decltype(Short), Short>{});
                  } else {
                    run(std::integral_constant<decltype(Kernel), Kernel>{});
                  }
                });
}

// multiply_rows_with for fp32 (not inlined, as multiply_packed), A's rows in a's runs.
__attribute__((noinline)) inline void multiply_rows(const RowRuns<float>& a, int64_t lda,
                                                    const Panels<float, kNR>& pb, int64_t kb,
                                                    int64_t block_rows, int64_t cols,
                                                    float* scratch, const OutputView& c, int64_t i,
                                                    int64_t j, bool first) {
  multiply_rows_with<float, float, micro_kernel_rows<>, micro_kernel_rows<kMR / 2>>(
      a.p, lda, pb, kb, kb, block_rows, cols, scratch, c, i, j, first, a.count, a.stride);
}

// A conv's weights as A, packed for the whole launch by a kernel before it (pack_rows_ahead)
// rather than by every column tile's group again: row tile i's depth block at d0 holds the
// tile's rows in MR-row strips as StridedOperand::pack lays them out, at
// p + i * padded * k + d0 * padded (padded: tile_m rounded up to MR). Blocks start at multiples
// of tile_k (split-K rounds its splits to them), so every block before d0 is tile_k deep. The
// tiled path reads `a` itself.
struct PackedRows {
  using value_type = float;
  StridedOperand<float> a;
  float* p;
  int64_t tile_m, padded, k;

  PackedRows(const StridedOperand<float>& a, float* p, const GemmShape& s, const GemmTiles& t)
      : a(a), p(p), tile_m(t.tile_m), padded(div_up(t.tile_m, kMR) * kMR), k(s.k) {}
  float load(int64_t w, int64_t d) const { return a.load(w, d); }
  float at(int64_t w, int64_t d) const { return a.at(w, d); }
  PackedRows entry(int64_t) const { return *this; }
  bool wide_contiguous() const { return a.wide_contiguous(); }
  // Rows from w0 (a multiple of MR within its row tile) at depths [d0, d0 + dn).
  float* block(int64_t w0, int64_t d0, int64_t dn) const {
    return p + w0 / tile_m * padded * k + d0 * padded + w0 % tile_m * dn;
  }
};

// The launch before one on PackedRows: group g packs row tile g % tiles_m at depth block
// g / tiles_m, tile_k deep (one group per pair).
inline void pack_rows_ahead(const PackedRows& a, const GemmShape& s, const GemmTiles& t) {
  const int64_t g = group_number();
  const int64_t i0 = g % t.tiles_m * t.tile_m, d0 = g / t.tiles_m * t.tile_k;
  if (d0 >= s.k) return;
  const int64_t kb = min64(t.tile_k, s.k - d0);
  a.a.pack<kMR>(a.block(i0, d0, kb), i0, min64(t.tile_m, s.m - i0), d0, kb);
}

// A group's tile of C as packed_gemm walks it, fp32 and bf16 alike: its rows and columns, the
// rows of A packed at a time (whole strips), and the panels in the group's shared memory, B's
// first so that its strips stay 64-byte aligned (the shared memory is).
struct TileWalk {
  int64_t rows, cols, block_m;
  float* pb;
  float* pa;
  TileWalk(const GemmShape& s, const GemmTiles& t, int64_t i0, int64_t j0)
      : rows(min64(t.tile_m, s.m - i0)),
        cols(min64(t.tile_n, s.n - j0)),
        block_m(t.block_m >= kMR ? t.block_m / kMR * kMR : kMR),
        pb(porta::dynamic_shared_memory<float>()),
        pa(pb + (t.panels_in_place & kGemmPanelsB ? kNR : div_up(t.tile_n, kNR) * kNR) * t.tile_k) {
  }
};

// The panels of an operand's block (wide indices w0 + [0, wn), depths d0 + [0, kb)) as the
// micro-kernel reads them: in place where the plan says so and the operand is stored that way
// (StridedOperand::panels_in_place), with a partial last panel packed at dst; else all packed at
// dst.
template <int Width, class Operand>
Panels<float, Width> block_panels(const Operand& x, bool in_place, float* dst, int64_t w0,
                                  int64_t wn, int64_t d0, int64_t kb) {
  if constexpr (std::is_same_v<Operand, StridedOperand<float>>) {
    if (const float* at = in_place ? x.panels_in_place(w0, d0) : nullptr) {
      Panels<float, Width> panels{at, Width, x.depth.inner};
      if (const int64_t whole = wn / Width; whole * Width < wn) {
        x.template pack<Width>(dst, w0 + whole * Width, wn - whole * Width, d0, kb);
        panels.tail = dst;
        panels.last = whole;
      }
      return panels;
    }
  }
  x.template pack<Width>(dst, w0, wn, d0, kb);
  return Panels<float, Width>::packed(dst, kb);
}

}  // namespace cpu
}  // namespace porta_ops

// bf16 operands on vdpbf16ps where the CPU has it, or on AMX tiles (packed_gemm hands them over).
#include "gemm_engine_cpu_bf16.h"
#include "gemm_engine_cpu_amx.h"

namespace porta_ops {
namespace cpu {

#if defined(__AVX512F__) || defined(__AVX2__)
// A conv whose window's strips are runs of x, multiplied without packing the window (defined
// below); false where the window is packed instead.
template <class A>
bool window_gemm(const A& a, const WindowOperand<float>& b, const OutputView& c, const GemmShape& s,
                 const GemmTiles& t, int64_t i0, int64_t j0, int64_t d_begin, int64_t d_end);
#endif

// The block of B a thread packed last into its shared memory (packed_gemm): the launch
// (GemmTiles::launch), the operand (a batch entry's), where the block went, its columns and
// depths. The CPU backend runs a thread's groups of one launch one after another on the same
// shared memory and leaves it as the last group left it, so a group whose block matches
// multiplies it as it lies: a row tile after another of the same columns packs nothing (a
// plain GEMM's B is the same block for every row tile where the depth takes one block). In
// static TLS, as porta::detail::current_group.
struct PackedB {
  uint64_t launch = 0;
  const void* operand = nullptr;
  const float* at = nullptr;
  int64_t j0 = 0, d0 = 0, kb = 0;
  bool operator==(const PackedB&) const = default;
};
inline thread_local PackedB last_packed_b __attribute__((tls_model("initial-exec")));

template <class A, class B>
void packed_gemm(const A& a, const B& b, const OutputView& c, const GemmShape& s,
                 const GemmTiles& t, int64_t i0, int64_t j0, int64_t d_begin, int64_t d_end) {
  // What the shared memory holds; whatever runs below may write it, so the record is cleared
  // until the block it describes is known to be there.
  PackedB held = std::exchange(last_packed_b, PackedB{});
#if PORTA_GEMM_AMX
  if constexpr (bf16_operands<A, B>() && std::is_same_v<A, StridedOperand<bf16>>) {
    if (t.path == kGemmPathNative && has_amx_bf16() &&
        packed_gemm_amx(a, b, c, s, t, i0, j0, d_begin, d_end)) {
      return;
    }
  }
#endif
#if PORTA_GEMM_BF16_DOT
  if constexpr (bf16_operands<A, B>()) {
    if (t.path == kGemmPathNative && has_bf16_dot()) {
      return packed_gemm_bf16(a, b, c, s, t, i0, j0, d_begin, d_end);
    }
  }
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
  if constexpr (std::is_same_v<B, WindowOperand<float>>) {
    if (window_gemm(a, b, c, s, t, i0, j0, d_begin, d_end)) return;
  }
#endif
  const int64_t kc = t.tile_k;
  const auto [rows, cols, block_m, pb, pa] = TileWalk(s, t, i0, j0);
  const bool b_panels = t.panels_in_place & kGemmPanelsB;
  // Blocks worth remembering: packed whole into pb (in place, a partial last strip may be packed
  // there instead), in a launch the host numbered.
  const bool remember = !b_panels && t.launch != 0;
  for (int64_t d0 = d_begin; d0 < d_end; d0 += kc) {
    const int64_t kb = min64(kc, d_end - d0);
    const bool first = d0 == d_begin;
    const PackedB block{t.launch, b.p, pb, j0, d0, kb};
    const bool packed_before = remember && block == held;
    const Panels<float, kNR> bp = packed_before
                                      ? Panels<float, kNR>::packed(pb, kb)
                                      : block_panels<kNR>(b, b_panels, pb, j0, cols, d0, kb);
    held = remember ? block : PackedB{};
    last_packed_b = held;
    if constexpr (std::is_same_v<A, StridedOperand<float>>) {
      if (const RowRuns<float> runs = a.row_runs(i0, d0, kb)) {  // rows along the depth
        multiply_rows(runs, a.wide_stride, bp, kb, rows, cols, pa, c, i0, j0, first);
        continue;
      }
    }
    if constexpr (std::is_same_v<A, PackedRows>) {  // packed already, the tile's rows in a row
      multiply_packed(Panels<float, kMR>::packed(a.block(i0, d0, kb), kb), bp, kb, rows, cols, c,
                      i0, j0, first);
    } else {
      // A strided A (the only other kind packed here), its strips a line further apart than
      // their MR x kb floats (kCpuStripGap): at kb = 128 or 256 those are a multiple of 4 KiB,
      // and the pack would write each depth's row of every strip into one set of L1 (TN
      // 3072x128x1024: 4-5% of the time).
      // A block of an A stored along the wide side (TN) is a few lines at each depth, a row of
      // the operand apart, which the pack waited on from memory (a fifth of 3072x128x1024's
      // time): the next block's are fetched while this one is multiplied (against oneDNN
      // 0.89-0.92 -> 0.93-0.98).
      Panels<float, kMR> ap = Panels<float, kMR>::packed(pa, kb);
      ap.across += kCpuStripGap;
      for (int64_t ib = 0; ib < rows; ib += block_m) {
        const int64_t block_rows = min64(block_m, rows - ib);
        a.template pack<kMR>(pa, i0 + ib, block_rows, d0, kb, ap.across);
        // The next block: the next rows at this depth, or the first at the next.
        const bool last_rows = ib + block_m >= rows;
        const int64_t next_ib = last_rows ? 0 : ib + block_m, next_d0 = last_rows ? d0 + kc : d0;
        RowFetch ahead;
        if (next_d0 < d_end) {
          if (const auto* const at = a.panels_in_place(i0 + next_ib, next_d0)) {
            const int64_t element = sizeof(*at);
            ahead = RowFetch{reinterpret_cast<const char*>(at), a.depth.inner * element,
                             min64(block_m, rows - next_ib) * element, min64(kc, d_end - next_d0)};
          }
        }
        multiply_packed(ap, bp, kb, block_rows, cols, c, i0 + ib, j0, first, ahead);
      }
    }
  }
}

// A window as A: backward weights as dw^T = im2col(x) x dy^T, its rows staged from x per depth
// block (defined below). Only the host's staged plans put a window on this side (conv.cpp), all
// of stride 1 across; a window is never packed as A.
template <class B>
void packed_gemm(const WindowOperand<float>& a, const B& b, const OutputView& c,
                 const GemmShape& s, const GemmTiles& t, int64_t i0, int64_t j0, int64_t d_begin,
                 int64_t d_end);

}  // namespace cpu

/* ---- Packing --------------------------------------------------------------------------------- */
//
// pack<Width>(dst, w0, wn, d0, dn) fills ceil(wn / Width) strips, strip t at dst + t * Width * dn
// (a strided operand's at dst + t * across where given: packed_gemm leaves a line between A's)
// holding wide indices w0 + t * Width + [0, Width) (zero past wn) by depth d0 + [0, dn), as
// dst[d * Width + w]. A whole panel at a time, so that for each depth the source is read along
// the wide side across all strips (long runs where the operand is contiguous that way).

namespace cpu {

typedef float vfloat8 __attribute__((vector_size(32)));
typedef int32_t vint8 __attribute__((vector_size(32)));

// A two-vector shuffle with constant indices, in GCC's or clang's spelling.
#if defined(__clang__)
#define PORTA_GEMM_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define PORTA_GEMM_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, vint8{__VA_ARGS__})
#endif

typedef uint16_t vhalf8 __attribute__((vector_size(16)));
typedef uint32_t vuint8 __attribute__((vector_size(32)));

// Eight consecutive elements as fp32 into v: 16-bit ones are widened in vector registers (bf16
// by a shift; f16 by F16C where the level has it, else by half.h's branch-free formula). v is an
// output parameter because returning a 32-byte vector changes the ABI below AVX (-Wpsabi).
__attribute__((always_inline)) inline void load8(const float* p, vfloat8& v) {
  __builtin_memcpy(&v, p, sizeof v);
}
__attribute__((always_inline)) inline void load8(const bf16* p, vfloat8& v) {
  vhalf8 h;
  __builtin_memcpy(&h, p, sizeof h);
  const vuint8 u = __builtin_convertvector(h, vuint8) << 16;
  __builtin_memcpy(&v, &u, sizeof v);
}
__attribute__((always_inline)) inline void load8(const f16* p, vfloat8& v) {
#if defined(__F16C__)
  const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  __builtin_memcpy(&v, &x, sizeof v);
#else
  float f[8];
  for (int i = 0; i < 8; ++i) f[i] = to_float(p[i]);
  load8(f, v);
#endif
}

#if defined(__AVX512BW__) && defined(__AVX512VL__)
// Sixteen 16-bit elements as fp32: bf16 by a shift, f16 by vcvtph2ps.
inline __m512 widen16(__m256i v, bf16) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}
inline __m512 widen16(__m256i v, f16) { return _mm512_cvtph_ps(v); }
#endif

// out[w] = src[w] as fp32 for w < Width: whole vectors for fp32 (GCC turns a plain copy loop
// into a call to memmove, a sixth of the time of packing a strip), sixteen (AVX-512) or eight at
// a time through load8 for 16-bit elements, which GCC does not vectorise on its own.
template <int Width, class T>
__attribute__((always_inline)) inline void widen(const T* __restrict src, float* __restrict out) {
  int w = 0;
  if constexpr (sizeof(T) == sizeof(float)) {
#pragma GCC unroll 8
    for (; w + kVL <= Width; w += kVL) store(out + w, load(src + w));
  }
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  if constexpr (sizeof(T) != sizeof(float)) {
    for (; w + 16 <= Width; w += 16) {
      _mm512_storeu_ps(
          out + w, widen16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + w)), T{}));
    }
  }
#endif
#pragma GCC unroll 8
  for (; w + 8 <= Width; w += 8) {
    vfloat8 v;
    load8(src + w, v);
    __builtin_memcpy(out + w, &v, sizeof v);
  }
  for (; w < Width; ++w) out[w] = to_float(src[w]);
}

// dst[i * dst_stride + w] = r[w][i] for an 8 x 8 block: an in-register transpose (the
// unpack / shuffle / lane-swap network), whatever the vector width of the build.
__attribute__((always_inline)) inline void transpose8x8(vfloat8 r[8], float* dst,
                                                        int64_t dst_stride) {
  vfloat8 t[8];
  for (int w = 0; w < 8; w += 2) {
    t[w] = PORTA_GEMM_SHUFFLE(r[w], r[w + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[w + 1] = PORTA_GEMM_SHUFFLE(r[w], r[w + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int w = 0; w < 8; w += 4) {
    r[w] = PORTA_GEMM_SHUFFLE(t[w], t[w + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    r[w + 1] = PORTA_GEMM_SHUFFLE(t[w], t[w + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    r[w + 2] = PORTA_GEMM_SHUFFLE(t[w + 1], t[w + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    r[w + 3] = PORTA_GEMM_SHUFFLE(t[w + 1], t[w + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int w = 0; w < 4; ++w) {
    t[w] = PORTA_GEMM_SHUFFLE(r[w], r[w + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    t[w + 4] = PORTA_GEMM_SHUFFLE(r[w], r[w + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
  for (int i = 0; i < 8; ++i) __builtin_memcpy(dst + i * dst_stride, &t[i], sizeof(vfloat8));
}

// The same with rows[w] read from memory, eight elements each.
template <class T>
inline void transpose8x8(const T* const rows[8], float* dst, int64_t dst_stride) {
  vfloat8 r[8];
  for (int w = 0; w < 8; ++w) load8(rows[w], r[w]);
  transpose8x8(r, dst, dst_stride);
}

}  // namespace cpu

template <class T>
template <int Width>
void StridedOperand<T>::pack(float* dst, int64_t w0, int64_t wn, int64_t d0, int64_t dn,
                             int64_t across) const {
  const int64_t strips = div_up(wn, Width);
  if (across == 0) across = Width * dn;
  if (wide_stride == 1) {  // contiguous along w: per depth, one run across the strips
    // Rows a few depths ahead are prefetched: each row is one short run (a panel's width), too
    // short for the hardware prefetcher to get ahead of a large operand streamed from memory.
    constexpr int64_t kAhead = 8;
    SplitCursor cursor(depth, d0), ahead(depth, d0);
    for (int64_t d = 0; d < kAhead && d < dn; ++d) ahead.next();
    const auto fetch_ahead = [&](int64_t d) {
      if (d + kAhead < dn) {
        const char* next = reinterpret_cast<const char*>(p + w0 + ahead.offset());
        for (int64_t byte = 0; byte < wn * int64_t(sizeof(T)); byte += 64) {
          __builtin_prefetch(next + byte);
        }
        ahead.next();
      }
    };
    // Strip t's row of one depth, from that depth's source row.
    const auto copy_row = [&](const T* __restrict src, float* __restrict out, int64_t t) {
      const int64_t n = min64(Width, wn - t * Width);
      if (n == Width) {
        cpu::widen<Width>(src + t * Width, out);
      } else {
        for (int w = 0; w < n; ++w) out[w] = to_float(src[t * Width + w]);
        for (int w = int(n); w < Width; ++w) out[w] = 0.0f;
      }
    };
    int64_t d = 0;
#if defined(__AVX512DQ__)
    if constexpr (2 * Width == cpu::kVL) {
      // Two consecutive depths of an 8-wide strip are 64 bytes: taken in pairs, each strip gets
      // one whole-vector store, not two half ones into the same line.
      for (; d + 2 <= dn; d += 2) {
        const T* __restrict first = p + w0 + cursor.offset();
        cursor.next();
        const T* __restrict second = p + w0 + cursor.offset();
        cursor.next();
        fetch_ahead(d);
        fetch_ahead(d + 1);
        for (int64_t t = 0; t < strips; ++t) {
          float* __restrict out = dst + t * across + d * Width;
          if (wn - t * Width >= Width) {
            cpu::vfloat8 lo, hi;
            cpu::load8(first + t * Width, lo);
            cpu::load8(second + t * Width, hi);
            _mm512_storeu_ps(out, _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1));
          } else {
            copy_row(first, out, t);
            copy_row(second, out + Width, t);
          }
        }
      }
    }
#endif
    for (; d < dn; ++d, cursor.next()) {
      const T* __restrict src = p + w0 + cursor.offset();
      fetch_ahead(d);
      for (int64_t t = 0; t < strips; ++t) copy_row(src, dst + t * across + d * Width, t);
    }
    return;
  }
  if (depth.inner == 1) {
    // Contiguous along d within runs (all of it, or up to each wrap of the split): transposes,
    // 8 rows by 8 depths at a time where whole, element by element elsewhere. Runs outside,
    // strips inside, so that the source is read in address order where it is contiguous.
    SplitCursor cursor(depth, d0);
    for (int64_t d = 0; d < dn;) {
      const int64_t run = depth.div > 0 ? min64(dn - d, depth.div - cursor.lo) : dn - d;
      const T* src = p + cursor.offset();
      for (int64_t t = 0; t < strips; ++t) {
        float* const strip = dst + t * across;
        const int64_t first = w0 + t * Width;
        const int n = int(min64(Width, wn - t * Width));
        int64_t i = 0;
        if (n == Width && Width % 8 == 0) {
          // Each of the strip's rows is a stream of its own; lines kAhead depths ahead are
          // prefetched, once per line, or the transposes wait on memory (a third of the time of
          // 2560x64x2560 went to packing A without).
          constexpr int64_t kAhead = 256 / sizeof(T);
          constexpr int64_t kLine = 64 / sizeof(T);
          for (; i + 8 <= run; i += 8) {
            for (int g = 0; g < Width; g += 8) {
              const T* rows[8];
              for (int w = 0; w < 8; ++w) rows[w] = src + (first + g + w) * wide_stride + i;
              if (i % kLine == 0 && i + kAhead < run) {
                for (int w = 0; w < 8; ++w) __builtin_prefetch(rows[w] + kAhead);
              }
              cpu::transpose8x8(rows, strip + (d + i) * Width + g, Width);
            }
          }
        }
        for (int64_t j = i; j < run; ++j) {
          float* out = strip + (d + j) * Width;
          for (int w = 0; w < n; ++w) out[w] = to_float(src[(first + w) * wide_stride + j]);
          for (int w = n; w < Width; ++w) out[w] = 0.0f;
        }
      }
      d += run;
      if (depth.div > 0) {
        cursor.lo = 0;
        ++cursor.hi;
      }
    }
    return;
  }
  SplitCursor cursor(depth, d0);
  for (int64_t d = 0; d < dn; ++d, cursor.next()) {
    const T* src = p + w0 * wide_stride + cursor.offset();
    for (int64_t t = 0; t < strips; ++t) {
      float* out = dst + t * across + d * Width;
      const int n = int(min64(Width, wn - t * Width));
      for (int w = 0; w < n; ++w) out[w] = to_float(src[(t * Width + w) * wide_stride]);
      for (int w = n; w < Width; ++w) out[w] = 0.0f;
    }
  }
}

namespace cpu {
// The digits (o, a, b) of a WindowAxis index, stepped without dividing.
struct WindowDigits {
  int64_t o, a, b;
  WindowDigits(const WindowAxis& x, int64_t i) {
    b = i % x.d2;
    const int64_t t = i / x.d2;
    a = t % x.d1;
    o = t / x.d1;
  }
  void next(const WindowAxis& x) {
    if (++b == x.d2) {
      b = 0;
      if (++a == x.d1) {
        a = 0;
        ++o;
      }
    }
  }
};

// The test every element of a window operand goes through: whether lane i's position
// (h[i], w[i]), shifted by (dh, dw), lies inside the input, [0, bh) x [0, bw) (unsigned compares
// catch the negative side too). The lanes are a strip's columns at one depth (shifted by the
// depth's position), or one column's depths (shifted by the column's).
struct Inside {
  int64_t dh, dw;
  uint64_t bh, bw;

  bool operator()(int64_t h, int64_t w) const {
    return (static_cast<uint64_t>(h + dh) < bh) & (static_cast<uint64_t>(w + dw) < bw);
  }
  // Whether every position of the box [h_lo, h_hi] x [w_lo, w_hi] is inside.
  bool all(int64_t h_lo, int64_t h_hi, int64_t w_lo, int64_t w_hi) const {
    return (*this)(h_lo, w_lo) && (*this)(h_hi, w_hi);
  }
#if defined(__AVX512F__)
  // Lanes [0, 8) at once: bit i for lane i.
  __mmask8 lanes8(const int64_t* h, const int64_t* w) const {
    const __m512i y = _mm512_add_epi64(_mm512_loadu_si512(h), _mm512_set1_epi64(dh));
    const __m512i x = _mm512_add_epi64(_mm512_loadu_si512(w), _mm512_set1_epi64(dw));
    return _mm512_cmplt_epu64_mask(y, _mm512_set1_epi64(int64_t(bh))) &
           _mm512_cmplt_epu64_mask(x, _mm512_set1_epi64(int64_t(bw)));
  }
#elif defined(__AVX2__)
  // Lanes [0, 4) at once, all ones where inside. AVX2 has no unsigned 64-bit compare: the sign
  // bits are flipped and the compare is signed.
  __m256i lanes4(const int64_t* h, const int64_t* w) const {
    const __m256i flip = _mm256_set1_epi64x(INT64_MIN);
    const __m256i y =
        _mm256_xor_si256(_mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)),
                                          _mm256_set1_epi64x(dh)),
                         flip);
    const __m256i x =
        _mm256_xor_si256(_mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)),
                                          _mm256_set1_epi64x(dw)),
                         flip);
    return _mm256_and_si256(
        _mm256_cmpgt_epi64(_mm256_xor_si256(_mm256_set1_epi64x(int64_t(bh)), flip), y),
        _mm256_cmpgt_epi64(_mm256_xor_si256(_mm256_set1_epi64x(int64_t(bw)), flip), x));
  }
#endif
};

// v[i] = p[i] as fp32 for the lanes (h[i], w[i]) inside, 0 elsewhere, for i < 8: consecutive
// elements at the input's edge. AVX-512 loads them under a mask (lanes outside are never read);
// GCC leaves the plain loop scalar.
template <class T>
__attribute__((always_inline)) inline void load8_inside(const T* p, const int64_t* h,
                                                        const int64_t* w, const Inside& in,
                                                        vfloat8& v) {
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  const __mmask8 lanes = in.lanes8(h, w);
  if constexpr (sizeof(T) == sizeof(float)) {
    const __m256 x = _mm256_maskz_loadu_ps(lanes, p);
    __builtin_memcpy(&v, &x, sizeof v);
    return;
  } else {
    T raw[8];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(raw), _mm_maskz_loadu_epi16(lanes, p));
    load8(raw, v);
    return;
  }
#else
  T raw[8];
  for (int i = 0; i < 8; ++i) raw[i] = in(h[i], w[i]) ? p[i] : T{};
  load8(raw, v);
#endif
}

// out[w] = run[w] as fp32 for the lanes (h[w], w[w]) inside, else 0, for w < Width. GCC
// vectorises the fp32 loop itself (16 lanes at a time on AVX-512, faster than load8_inside's 8);
// 16-bit elements take load8_inside.
template <int Width, class T>
inline void masked_run(float* __restrict out, const T* run, const int64_t* hh, const int64_t* ww,
                       const Inside& in) {
  int w = 0;
  if constexpr (sizeof(T) != sizeof(float)) {
    for (; w + 8 <= Width; w += 8) {
      vfloat8 v;
      load8_inside(run + w, hh + w, ww + w, in, v);
      __builtin_memcpy(out + w, &v, sizeof v);
    }
  }
  for (; w < Width; ++w) out[w] = in(hh[w], ww[w]) ? to_float(run[w]) : 0.0f;
}

// out[w] = (w < split ? first : second)[w] as fp32 where bit w of lanes is set, else 0, for
// w < Width: a strip of one run of consecutive elements (split = Width), or of two (it crosses
// from one image into the next), under a mask worked out beforehand. Lanes outside are never read.
template <int Width, class T>
inline void masked_copy(float* __restrict out, const T* first, const T* second, int split,
                        uint32_t lanes) {
  static_assert(Width <= 32, "a bit per lane");
  constexpr uint32_t kAll = Width == 32 ? ~0u : (1u << Width) - 1;
  if (split == Width && lanes == kAll) return widen<Width>(first, out);
  int w = 0;
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  if constexpr (sizeof(T) == sizeof(float)) {
    if (split == Width) {  // one run: one masked load a vector, not two merged
      for (; w + 16 <= Width; w += 16) {
        const __mmask16 a = static_cast<__mmask16>(lanes >> w);
        _mm512_storeu_ps(out + w, _mm512_maskz_loadu_ps(a, first + w));
      }
    }
  }
  const uint32_t from_first = split >= 32 ? ~0u : (1u << split) - 1;
  for (; w + 16 <= Width; w += 16) {
    const __mmask16 a = static_cast<__mmask16>((lanes & from_first) >> w);
    const __mmask16 b = static_cast<__mmask16>((lanes & ~from_first) >> w);
    if constexpr (sizeof(T) == sizeof(float)) {
      const __m512 v = _mm512_maskz_loadu_ps(a, first + w);
      _mm512_storeu_ps(out + w, _mm512_mask_loadu_ps(v, b, second + w));
    } else {  // widened in registers (a round trip through memory stalls store forwarding)
      const __m256i v =
          _mm256_mask_loadu_epi16(_mm256_maskz_loadu_epi16(a, first + w), b, second + w);
      _mm512_storeu_ps(out + w, widen16(v, T{}));
    }
  }
#endif
  for (; w < Width; ++w) {
    out[w] = (lanes >> w) & 1 ? to_float(w < split ? first[w] : second[w]) : 0.0f;
  }
}

// A strip whose elements lie two apart in runs (the output positions of a convolution of stride
// 2 across, row after row of them): run k covers the lanes of bit mask lanes[k], lane w of it at
// element 2 w + from[k] (from the strip's base). At most kStridedRuns runs (rows of at least 4
// outputs for a strip of 32).
inline constexpr int kStridedRuns = 8;
struct StridedRuns {
  int count;
  int64_t from[kStridedRuns];
  uint32_t lanes[kStridedRuns];
};

// Whether offsets o[0, n) are such runs, two apart, relative to o[0].
inline bool runs_two_apart(const int64_t* o, int n, StridedRuns* r) {
  r->count = 0;
  for (int i = 0; i < n; ++i) {
    if (i == 0 || o[i] != o[i - 1] + 2) {
      if (r->count == kStridedRuns) return false;
      r->from[r->count] = o[i] - o[0] - 2 * i;
      r->lanes[r->count++] = 0;
    }
    r->lanes[r->count - 1] |= 1u << i;
  }
  return true;
}

#if defined(__BMI2__)
// Lanes w + [0, 16) of a lane mask spread over the 32 elements they span two apart: bit 2i set
// where lane w + i is.
inline uint32_t spread_to_evens(uint32_t lanes, int w) {
  return _pdep_u32(lanes >> w & 0xFFFFu, 0x55555555u);
}
#endif

// out[w] = base[2 w + from[k]] as fp32 for the lanes w of run k whose bit is set in lanes, else
// 0, for w < Width. On AVX-512 each 16 lanes are, per run, two masked loads of the 32 elements
// they span (the mask spread to the even ones), and then a permute of the evens. Lanes outside
// are never read.
template <int Width, class T>
inline void masked_copy_two_apart(float* __restrict out, const T* base, const StridedRuns& runs,
                                  uint32_t lanes) {
  static_assert(Width <= 32, "a bit per lane");
  int w = 0;
#if defined(__AVX512F__) && defined(__BMI2__)
  if constexpr (sizeof(T) == sizeof(float)) {
    const __m512i evens =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (; w + 16 <= Width; w += 16) {
      __m512 low = _mm512_setzero_ps(), high = _mm512_setzero_ps();
      for (int k = 0; k < runs.count; ++k) {
        const uint32_t spread = spread_to_evens(lanes & runs.lanes[k], w);
        if (spread == 0) continue;
        const T* const at = base + runs.from[k] + 2 * w;
        low = _mm512_mask_loadu_ps(low, static_cast<__mmask16>(spread), at);
        high = _mm512_mask_loadu_ps(high, static_cast<__mmask16>(spread >> 16), at + 16);
      }
      _mm512_storeu_ps(out + w, _mm512_permutex2var_ps(low, evens, high));
    }
  }
#endif
  for (int k = 0; k < runs.count; ++k) {
    for (int v = w; v < Width; ++v) {
      if ((runs.lanes[k] >> v) & 1) {
        out[v] = (lanes >> v) & 1 ? to_float(base[runs.from[k] + 2 * v]) : 0.0f;
      }
    }
  }
}

// Whether offsets o[0, n) are at most two runs of consecutive elements (a strip or a block of
// depths crossing from one image into the next); *split is the index the second run starts at
// (n if there is one run).
inline bool at_most_two_runs(const int64_t* o, int n, int* split) {
  *split = n;
  for (int i = 1; i < n; ++i) {
    if (o[i] == o[i - 1] + 1) continue;
    if (*split != n) return false;
    *split = i;
  }
  return true;
}

// out[w] = src[off[w]] as fp32 for the lanes (h[w], w[w]) inside, else 0, for w < Width. GCC
// does not vectorise this (a masked gather) itself, so the AVX-512 and AVX2 builds spell out the
// gathers; masked-off lanes are never read. The gathers are fp32 only (x86 has no 16-bit
// gather): 16-bit elements are loaded by a plain loop as stored, then widened together.
template <int Width, class T>
inline void gather_strip(float* __restrict out, const T* src, const int64_t* off, const int64_t* hh,
                         const int64_t* ww, const Inside& in) {
  if constexpr (sizeof(T) == sizeof(float)) {
    int w = 0;
#if defined(__AVX512F__)
    for (; w + 8 <= Width; w += 8) {
      const __m256 e = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), in.lanes8(hh + w, ww + w),
                                                _mm512_loadu_si512(off + w), src, 4);
      _mm256_storeu_ps(out + w, e);
    }
#elif defined(__AVX2__)
    for (; w + 4 <= Width; w += 4) {
      // The 64-bit lane masks, narrowed to the 32-bit lanes of the result.
      const __m128 mask = _mm256_castps256_ps128(
          _mm256_permutevar8x32_ps(_mm256_castsi256_ps(in.lanes4(hh + w, ww + w)),
                                   _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
      const __m128 e = _mm256_mask_i64gather_ps(
          _mm_setzero_ps(), src, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(off + w)),
          mask, 4);
      _mm_storeu_ps(out + w, e);
    }
#endif
    for (; w < Width; ++w) out[w] = in(hh[w], ww[w]) ? src[off[w]] : 0.0f;
  } else {  // gathered as stored, then converted at once
    T raw[Width];
    for (int i = 0; i < Width; ++i) raw[i] = in(hh[i], ww[i]) ? src[off[i]] : T{};
    widen<Width>(raw, out);
  }
}

// Columns of a window panel handled at once (their coordinates live on the stack).
inline constexpr int kWindowChunk = 256;
// Depth positions (r, s) whose lane masks a chunk's consecutive strips keep: filters up to 7x7
// (the stem's 49 taps took a gather per strip and depth with 32).
inline constexpr int kMaskedShifts = 49;
}  // namespace cpu

template <class T>
template <int Width>
void WindowOperand<T>::pack(float* dst, int64_t w0, int64_t wn, int64_t d0, int64_t dn) const {
  static_assert(cpu::kWindowChunk % Width == 0, "chunks hold whole strips");
  constexpr int kStrips = cpu::kWindowChunk / Width;
  const uint64_t bh = static_cast<uint64_t>(bound_h), bw = static_cast<uint64_t>(bound_w);
  const bool linear = step_h == 1 && step_w == 1;
  for (int64_t c0 = 0; c0 < wn; c0 += cpu::kWindowChunk) {
    const int64_t cn = min64(cpu::kWindowChunk, wn - c0);
    const int strips = int(div_up(cn, Width));
    float* const chunk = dst + (c0 / Width) * Width * dn;
    // Per column: with a linear view, off = off + h * row + w (positions add up, so the depth's
    // part adds on); otherwise the plain coordinates for element().
    WindowCoord u[cpu::kWindowChunk];
    int64_t off[cpu::kWindowChunk], hh[cpu::kWindowChunk], ww[cpu::kWindowChunk];
    cpu::WindowDigits wd(wide, w0 + c0);
    for (int w = 0; w < cn; ++w, wd.next(wide)) {
      u[w] = coord(wide, wd.o, wd.a, wd.b);
      off[w] = u[w].off + u[w].h * row + u[w].w;
      hh[w] = u[w].h;
      ww[w] = u[w].w;
    }
    for (int w = int(cn); w < strips * Width; ++w) {
      off[w] = 0;
      hh[w] = INT64_MIN / 4;  // never in range
      ww[w] = 0;
    }
    // A strip whose elements are consecutive in memory (a stretch of a row, or of several rows
    // when the output is as wide as the input) takes (masked) vector loads instead of gathers,
    // and plain copies at depths where the whole strip is inside the input. So does one of two
    // such runs (it crosses from one image into the next) where the masks below are kept.
    // A strip whose elements lie two apart in runs (a layer of stride 2 across) takes masked
    // loads of the elements they span and a permute, where the masks are kept (few taps).
    bool consecutive[kStrips], two_apart[kStrips];
    cpu::StridedRuns runs[kStrips];
    int second_run[kStrips];  // the lane where the second run starts; Width if none
    int64_t h_lo[kStrips], h_hi[kStrips], w_lo[kStrips], w_hi[kStrips];
    const bool masks_cached = depth.d1 * depth.d2 <= cpu::kMaskedShifts;
    for (int t = 0; t < strips; ++t) {
      const int f = t * Width;
      const int n = int(min64(Width, cn - f));
      consecutive[t] = cpu::at_most_two_runs(off + f, n, &second_run[t]) && n == Width;
      two_apart[t] = !consecutive[t] && masks_cached && linear && n == Width &&
                     cpu::runs_two_apart(off + f, n, &runs[t]);
      h_lo[t] = h_hi[t] = hh[f];
      w_lo[t] = w_hi[t] = ww[f];
      for (int w = f + 1; w < f + n; ++w) {
        h_lo[t] = hh[w] < h_lo[t] ? hh[w] : h_lo[t];
        h_hi[t] = hh[w] > h_hi[t] ? hh[w] : h_hi[t];
        w_lo[t] = ww[w] < w_lo[t] ? ww[w] : w_lo[t];
        w_hi[t] = ww[w] > w_hi[t] ? ww[w] : w_hi[t];
      }
    }
    // Which lanes of a consecutive strip lie inside the input depends on the depth only through
    // its position (a, b), not its offset o: with few positions (a conv's filter taps (r, s)),
    // each strip's lane masks are worked out once per chunk and every depth is one copy of a
    // shifted run under its mask (the channels c repeat the taps' masks).
    uint32_t lane_masks[kStrips][cpu::kMaskedShifts];
    if (masks_cached && linear) {
      for (int t = 0; t < strips; ++t) {
        if (!consecutive[t] && !two_apart[t]) continue;
        for (int64_t a = 0; a < depth.d1; ++a) {
          for (int64_t b = 0; b < depth.d2; ++b) {
            const WindowCoord v = coord(depth, 0, a, b);
            const cpu::Inside in{v.h, v.w, bh, bw};
            uint32_t lanes = 0;
            for (int w = 0; w < Width; ++w) {
              lanes |= uint32_t(in(hh[t * Width + w], ww[t * Width + w])) << w;
            }
            lane_masks[t][a * depth.d2 + b] = lanes;
          }
        }
      }
    }
    cpu::WindowDigits dd(depth, d0);
    if (!linear) {  // the gather view of a strided convolution
      for (int64_t d = 0; d < dn; ++d, dd.next(depth)) {
        const WindowCoord v = coord(depth, dd.o, dd.a, dd.b);
        for (int t = 0; t < strips; ++t) {
          float* out = chunk + t * Width * dn + d * Width;
          for (int w = 0; w < Width; ++w) {
            out[w] = t * Width + w < cn ? to_float(element(u[t * Width + w], v)) : 0.0f;
          }
        }
      }
      continue;
    }
    // Per 8 columns: the range of their positions, for the transposing path below.
    int64_t g_hlo[cpu::kWindowChunk / 8], g_hhi[cpu::kWindowChunk / 8];
    int64_t g_wlo[cpu::kWindowChunk / 8], g_whi[cpu::kWindowChunk / 8];
    if (Width % 8 == 0) {
      for (int g = 0; g < strips * Width / 8; ++g) {
        g_hlo[g] = g_wlo[g] = INT64_MAX;
        g_hhi[g] = g_whi[g] = INT64_MIN;
        for (int w = g * 8; w < g * 8 + 8; ++w) {
          g_hlo[g] = hh[w] < g_hlo[g] ? hh[w] : g_hlo[g];
          g_hhi[g] = hh[w] > g_hhi[g] ? hh[w] : g_hhi[g];
          g_wlo[g] = ww[w] < g_wlo[g] ? ww[w] : g_wlo[g];
          g_whi[g] = ww[w] > g_whi[g] ? ww[w] : g_whi[g];
        }
      }
    }
    // Depths 8 at a time: their coordinates, and whether their offsets are consecutive (a
    // stretch of output positions of one image: the im2col^T of backward-weights, whose
    // columns are scattered but whose depths run along rows). next_off: the same depth of the
    // next block, which this thread packs next: its reads of x are fetched into L2 meanwhile,
    // since a strip's short runs, a channel apart, are nothing the hardware prefetcher follows.
    cpu::WindowDigits nd(depth, d0 + dn);
    for (int64_t d = 0; d < dn; d += 8) {
      const int bn = int(min64(8, dn - d));
      int64_t voff[8], vh[8], vw[8], shift[8], next_off[8];
      for (int i = 0; i < bn; ++i, dd.next(depth), nd.next(depth)) {
        const WindowCoord v = coord(depth, dd.o, dd.a, dd.b);
        shift[i] = dd.a * depth.d2 + dd.b;
        voff[i] = v.off + v.h * row + v.w;
        vh[i] = v.h;
        vw[i] = v.w;
        const WindowCoord nv = coord(depth, nd.o, nd.a, nd.b);
        next_off[i] = nv.off + nv.h * row + nv.w;
      }
      // Or two apart (a layer of stride 2 across): the AVX-512 build then takes the evens of
      // 16 floats per column where the block is inside, before the transpose.
      bool depth_run = bn == 8, depths_two_apart = bn == 8;
      int64_t vh_lo = vh[0], vh_hi = vh[0], vw_lo = vw[0], vw_hi = vw[0];
      for (int i = 1; i < bn; ++i) {
        depth_run = depth_run && voff[i] == voff[0] + i;
        depths_two_apart = depths_two_apart && voff[i] == voff[0] + 2 * i;
        vh_lo = vh[i] < vh_lo ? vh[i] : vh_lo;
        vh_hi = vh[i] > vh_hi ? vh[i] : vh_hi;
        vw_lo = vw[i] < vw_lo ? vw[i] : vw_lo;
        vw_hi = vw[i] > vw_hi ? vw[i] : vw_hi;
      }
      for (int t = 0; t < strips; ++t) {
        float* const strip = chunk + t * Width * dn;
        const int64_t* so = off + t * Width;
        const int64_t* sh = hh + t * Width;
        const int64_t* sw = ww + t * Width;
        if (consecutive[t] && (masks_cached || second_run[t] == Width)) {
          const int split = second_run[t];
          // The second run's start, less the lanes before it.
          const int64_t jump = split < Width ? so[split] - so[0] - split : 0;
          for (int i = 0; i < bn; ++i) {
            float* __restrict out = strip + (d + i) * Width;
            const T* __restrict run = p + voff[i] + so[0];
            const cpu::Inside in{vh[i], vw[i], bh, bw};
            for (int l = 0; l < Width; l += 64 / int(sizeof(T))) {
              __builtin_prefetch(p + next_off[i] + so[0] + l, 0, 2);
            }
            __builtin_prefetch(p + next_off[i] + so[0] + Width - 1, 0, 2);
            if (masks_cached) {
              cpu::masked_copy<Width>(out, run, run + jump, split, lane_masks[t][shift[i]]);
            } else if (in.all(h_lo[t], h_hi[t], w_lo[t], w_hi[t])) {
              cpu::widen<Width>(run, out);
            } else {
              cpu::masked_run<Width>(out, run, sh, sw, in);
            }
          }
          continue;
        }
        if (two_apart[t]) {
          for (int i = 0; i < bn; ++i) {
            for (int k = 0; k < runs[t].count; ++k) {
              __builtin_prefetch(p + next_off[i] + so[0] + runs[t].from[k], 0, 2);
            }
            cpu::masked_copy_two_apart<Width>(strip + (d + i) * Width, p + voff[i] + so[0], runs[t],
                                              lane_masks[t][shift[i]]);
          }
          continue;
        }
        if (depth_run && Width % 8 == 0) {
          for (int g = 0; g < Width / 8; ++g) {
            const int gi = t * Width / 8 + g;
            float* const out = strip + d * Width + g * 8;
            const bool inside = cpu::Inside{vh_lo, vw_lo, bh, bw}(g_hlo[gi], g_wlo[gi]) &&
                                cpu::Inside{vh_hi, vw_hi, bh, bw}(g_hhi[gi], g_whi[gi]);
            for (int w = 0; w < 8; ++w) {
              __builtin_prefetch(p + so[g * 8 + w] + next_off[0], 0, 2);
            }
            if (inside) {
              const T* rows[8];
              for (int w = 0; w < 8; ++w) rows[w] = p + so[g * 8 + w] + voff[0];
              cpu::transpose8x8(rows, out, Width);
              continue;
            }
            // Column w's eight depths, masked by their positions shifted by the column's.
            cpu::vfloat8 r[8];
            for (int w = 0; w < 8; ++w) {
              const int c = g * 8 + w;
              cpu::load8_inside(p + so[c] + voff[0], vh, vw, cpu::Inside{sh[c], sw[c], bh, bw},
                                r[w]);
            }
            cpu::transpose8x8(r, out, Width);
          }
          continue;
        }
#if defined(__AVX512F__)
        if constexpr (sizeof(T) == sizeof(float) && Width % 8 == 0) {
          if (depths_two_apart) {
            const __m512i evens =
                _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
            for (int g = 0; g < Width / 8; ++g) {
              const int gi = t * Width / 8 + g;
              float* const out = strip + d * Width + g * 8;
              const bool inside = cpu::Inside{vh_lo, vw_lo, bh, bw}(g_hlo[gi], g_wlo[gi]) &&
                                  cpu::Inside{vh_hi, vw_hi, bh, bw}(g_hhi[gi], g_whi[gi]);
              if (!inside) {
                for (int i = 0; i < bn; ++i) {
                  cpu::gather_strip<8>(strip + (d + i) * Width + g * 8, p + voff[i], so + g * 8,
                                       sh + g * 8, sw + g * 8, cpu::Inside{vh[i], vw[i], bh, bw});
                }
                continue;
              }
              cpu::vfloat8 r[8];
              for (int w = 0; w < 8; ++w) {
                // The 15 floats that hold the 8 depths, the 16th never read.
                const __m512 run = _mm512_maskz_loadu_ps(0x7FFF, p + so[g * 8 + w] + voff[0]);
                const __m256 v = _mm512_castps512_ps256(_mm512_permutexvar_ps(evens, run));
                __builtin_memcpy(&r[w], &v, sizeof v);
              }
              cpu::transpose8x8(r, out, Width);
            }
            continue;
          }
        }
#endif
        for (int i = 0; i < bn; ++i) {
          cpu::gather_strip<Width>(strip + (d + i) * Width, p + voff[i], so, sh, sw,
                                   cpu::Inside{vh[i], vw[i], bh, bw});
        }
      }
    }
  }
}

/* ---- Windows as A, staged from x's rows ----------------------------------------------------- */
//
// Backward weights as dw^T[(c,r,s), k] = im2col(x)[(c,r,s), (n,p,q)] x dy^T: A's row (c, r, s) at
// the depths of one output row (n, p) reads x's row h = p * stride_h - pad_h + r * dil_h, from
// w = s * dil_w - pad_w on, stride_w apart. Per depth block, the group copies the rows of x that
// its tile's channels reach from the block's output rows into shared memory, padded with the
// zeros the window reads outside x (staged[channel][h][w]); the micro-kernel then reads A's rows
// there in place, an output row at a time. Of stride 1 across, a channel's R * S rows are shifts
// of the same few staged rows, so each element of x is copied about once per tile rather than
// R * S times and transposed, as packing im2col(x)^T as B did; of a larger stride, each tap
// across stages its own run of the row (staged[channel][h][s][q]), still a plain copy rather than
// a transposing one. B is dy^T, K columns, packed by transposing dy (one element per R * S * C
// products, against one per K for im2col^T). The host plans the tiles (gemm_params.h:
// plan_staged_window) so that the staged rows fit beside B's panel.

namespace cpu {

// micro_kernel_rows with A's rows at rows[i], the depths in segments: the first first_len long,
// the others len, each the next output row's run, skip elements on from the end of the last.
template <int Rows = kMR>
__attribute__((always_inline)) inline void micro_kernel_segments(const float* const* rows,
                                                                 int64_t kb, int64_t first_len,
                                                                 int64_t len, int64_t skip,
                                                                 const float* __restrict b,
                                                                 MicroTile& out) {
  const float* row[Rows];
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i) row[i] = rows[i];
  Accumulators<Rows> c;
  for (int64_t d = 0, n = first_len; d < kb; d += n, n = len) {
    n = min64(n, kb - d);
#pragma GCC unroll 4
    for (int64_t e = 0; e < n; ++e) {
      c.add([&](int i) { return row[i][e]; }, b);
      b += kNR;
    }
#pragma GCC unroll 16
    for (int i = 0; i < Rows; ++i) row[i] += n + skip;
  }
  c.store(out);
}

// A staged row of a layer strided across: for each of the taps across, its q_len elements of
// x's row `row` (inside: the row lies within x), from w0 + tap * dilation on, stride apart; zero
// where they fall outside [0, bound_w). Stride 2 on AVX-512 takes 16 a step, the 31 elements
// they span loaded under masks and their evens permuted together.
inline void stage_strided(const float* row, bool inside, int64_t bound_w, int64_t w0,
                          int64_t dilation, int64_t stride, int64_t taps, int64_t q_len,
                          float* dst) {
  for (int64_t s = 0; s < taps; ++s, dst += q_len) {
    const int64_t first = w0 + s * dilation;
    // [lo, hi): the q whose element lies inside the row.
    int64_t lo = q_len, hi = q_len;
    if (inside && first + (q_len - 1) * stride >= 0 && first < bound_w) {
      lo = first >= 0 ? 0 : (stride - 1 - first) / stride;
      hi = min64(q_len, (bound_w - 1 - first) / stride + 1);
    }
    for (int64_t q = 0; q < lo; ++q) dst[q] = 0.0f;
    int64_t q = lo;
#if defined(__AVX512F__)
    if (stride == 2) {
      const __m512i evens =
          _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
      for (; q < hi; q += 16) {
        const int n = int(min64(16, hi - q));
        const uint32_t span = (uint32_t{1} << (2 * n - 1)) - 1;  // elements 2i, i < n, and between
        const float* at = row + first + 2 * q;
        const __m512 low = _mm512_maskz_loadu_ps(static_cast<__mmask16>(span), at);
        const __m512 high = _mm512_maskz_loadu_ps(static_cast<__mmask16>(span >> 16), at + 16);
        _mm512_mask_storeu_ps(dst + q, static_cast<__mmask16>((1u << n) - 1),
                              _mm512_permutex2var_ps(low, evens, high));
      }
      q = hi;
    }
#endif
    for (; q < hi; ++q) dst[q] = row[first + q * stride];
    for (q = hi; q < q_len; ++q) dst[q] = 0.0f;
  }
}

// The micro-kernel over a staged block: every pair of A's panels of MR rows (row i of the tile
// at rows[i]) and strips of B's packed panel, strips outer (panels outer measured 6% slower on
// 28x28x128's four strips, the same on 56x56x64's two). Not inlined, as multiply_packed.
__attribute__((noinline)) inline void multiply_staged(const float* const* rows, const float* pb,
                                                      int64_t kb, int64_t first_len, int64_t len,
                                                      int64_t skip, int64_t block_rows,
                                                      int64_t cols, const OutputView& c,
                                                      int64_t i, int64_t j, bool first) {
  for_each_pair(c, i, j, block_rows, cols, first, true, [&](int64_t p, int64_t q, MicroTile& acc) {
    const int panel_rows = int(min64(kMR, block_rows - p * kMR));
    // A partial last panel repeats its last row (its products are not stored).
    const float* panel[kMR];
    for (int r = 0; r < kMR; ++r) panel[r] = rows[p * kMR + min64(r, panel_rows - 1)];
    micro_kernel_segments(panel, kb, first_len, len, skip, pb + q * kNR * kb, acc);
  });
}

}  // namespace cpu

// Channels of x whose rows a staged block fetches ahead of the one it copies.
inline constexpr int64_t kStageAhead = 2;

template <class B>
void cpu::packed_gemm(const WindowOperand<float>& a, const B& b, const OutputView& c,
                      const GemmShape& s, const GemmTiles& t, int64_t i0, int64_t j0,
                      int64_t d_begin, int64_t d_end) {
  const WindowAxis &taps = a.wide, &at = a.depth;  // (c, r, s) and (n, p, q); at.mw: stride_w
  const auto [rows, cols, block_m, pb, staged] = TileWalk(s, t, i0, j0);
  (void)block_m;
  const int64_t per_channel = taps.d1 * taps.d2, positions = at.d1 * at.d2, q_len = at.d2;
  const int64_t c_lo = i0 / per_channel, c_hi = (i0 + rows - 1) / per_channel;
  // A staged row: the window's reach across, from w0; strided, a run of q_len per tap across,
  // tap_step apart (StagedWindow::of_layer).
  const bool strided = at.mw != 1;
  const int64_t width = strided ? taps.d2 * q_len : (taps.d2 - 1) * taps.mw + q_len;
  const int64_t tap_step = strided ? q_len : taps.mw, w0 = taps.aw + at.aw;
  // The elements of x's row the window reads, from w0.
  const int64_t reach_w = (taps.d2 - 1) * taps.mw + (q_len - 1) * at.mw + 1;
  const int64_t reach_h = (taps.d1 - 1) * taps.mh + 1;
  // Staged rows from one output row to the next: stride_h, or where that passes the rows an
  // output row reaches (a 1x1 filter strided down), only those, gap rows of x skipped.
  const int64_t row_step = min64(at.mh, reach_h), gap = at.mh - row_step;
  const int64_t bound_w = a.bound_w;
  const float* row_of[kMaxStagedTileM];
  for (int64_t d0 = d_begin, kb; d0 < d_end; d0 += kb) {
    const int64_t image = d0 / positions, pos = d0 % positions;
    kb = min64(min64(t.tile_k, d_end - d0), positions - pos);  // within one image
    const bool first = d0 == d_begin;
    b.template pack<kNR>(pb, j0, cols, d0, kb);
    const int64_t p0 = pos / q_len, q0 = pos % q_len, p1 = (pos + kb - 1) / q_len;
    const int64_t height = (p1 - p0) * row_step + reach_h, h0 = p0 * at.mh + at.ah + taps.ah;
    const int64_t channel = height * width;
    const auto row_at = [&](int64_t y) { return h0 + y + y / reach_h * gap; };  // x's row
    // The rows a channel stages, kStageAhead channels before it: a few short runs per channel,
    // a plane apart, which the hardware prefetcher does not follow.
    const int64_t run_lo = max64(w0, 0), run_hi = min64(w0 + reach_w, bound_w);
    const RowFetch fetch{reinterpret_cast<const char*>(a.p + image * at.so + run_lo),
                         a.row * int64_t(sizeof(float)),
                         max64(run_hi - run_lo, 1) * int64_t(sizeof(float)), 0};
    // (Inlined, as prefetch_tile is.)
    const auto fetch_channel = [&](int64_t ch) __attribute__((always_inline)) {
      if (ch > c_hi) return;
      RowFetch at_channel = fetch;
      at_channel.p += ch * taps.so * int64_t(sizeof(float));
      for (int64_t y = 0; y < height; ++y) {
        const int64_t h = row_at(y);
        if (h >= 0 && h < a.bound_h) at_channel.fetch(h);
      }
    };
    for (int64_t ch = c_lo; ch < c_lo + kStageAhead; ++ch) fetch_channel(ch);
    for (int64_t ch = c_lo; ch <= c_hi; ++ch) {
      fetch_channel(ch + kStageAhead);
      const float* src = a.p + ch * taps.so + image * at.so;
      float* dst = staged + (ch - c_lo) * channel;
      for (int64_t y = 0; y < height; ++y, dst += width) {
        const int64_t h = row_at(y);
        const bool inside = h >= 0 && h < a.bound_h;
        if (strided) {
          stage_strided(inside ? src + h * a.row : src, inside, bound_w, w0, taps.mw, at.mw,
                        taps.d2, q_len, dst);
          continue;
        }
        // [lo, hi) of the staged row lies inside x.
        const int64_t lo = inside ? min64(max64(-w0, 0), width) : width;
        const int64_t hi = lo < width ? max64(min64(bound_w - w0, width), lo) : width;
        for (int64_t w = 0; w < lo; ++w) dst[w] = 0.0f;
        if (hi > lo) {
          __builtin_memcpy(dst + lo, src + h * a.row + w0 + lo, (hi - lo) * sizeof(float));
        }
        for (int64_t w = hi; w < width; ++w) dst[w] = 0.0f;
      }
    }
    WindowDigits rd(taps, i0);
    for (int64_t r = 0; r < rows; ++r, rd.next(taps)) {
      row_of[r] = staged + (rd.o - c_lo) * channel + rd.a * taps.mh * width + rd.b * tap_step + q0;
    }
    multiply_staged(row_of, pb, kb, q_len - q0, q_len, row_step * width - q_len, rows, cols, c, i0,
                    j0, first);
  }
}

/* ---- Windows read in place ------------------------------------------------------------------ */
//
// Where a window's strips are runs of x (stride 1 and rows as wide as the input's, so that
// consecutive output positions are consecutive elements of an image: "same" layers, forward on x
// and backward data on dy; in fp32 other than 3x3 ones, which are direct convolutions:
// conv_direct_cpu.h), the micro-kernel reads its B vectors straight from x: strip j
// at depth (c, r, s) is the run at the strip's first column plus the depth's offset, under lane
// masks that depend on the tap (r, s) only. The kernel takes a depth block's taps outside and
// its channels inside, so that each tap's masks are set up once and each step is two
// loads from x, a channel on from the last, instead of two loads from a packed panel (masked
// only where the tap leaves a vector partly outside the input, at the image's edges); the
// panel's stores are gone, and the taps of a channel read the same few lines. (The sums come in
// that order: tap by tap, not depth by depth.) A strip that crosses from one image into the next
// is two runs, merged by a second pair of masked loads. AVX-512 and AVX2 (vmaskmovps, its masks
// vectors rather than mask registers); the baseline build, 1x1 filters (no lines shared between
// depths: packing B pays, as in any GEMM) and tiles of many rows (each packed element feeds them
// all) pack the window (measured in docs/decisions.md).

#if defined(__AVX512F__) || defined(__AVX2__)
namespace cpu {

// A tap's lane masks (bit l for lane l of a strip) as the build's masked loads take them: the
// lanes of each run, per vector of the strip. Lanes outside a mask are neither read nor faulted
// on, and load as 0.
struct TapMasks {
#if defined(__AVX512F__)
  __mmask16 run[2][kNV];
  __attribute__((always_inline)) explicit TapMasks(const uint32_t (&lanes)[2]) {
    for (int r = 0; r < 2; ++r)
      for (int v = 0; v < kNV; ++v) run[r][v] = static_cast<__mmask16>(lanes[r] >> (16 * v));
  }
#else
  __m256i run[2][kNV];
  __attribute__((always_inline)) explicit TapMasks(const uint32_t (&lanes)[2]) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (int r = 0; r < 2; ++r) {
      for (int v = 0; v < kNV; ++v) {
        const __m256i bits = _mm256_set1_epi32(int(lanes[r] >> (8 * v)));
        run[r][v] = _mm256_cmpeq_epi32(_mm256_and_si256(bits, bit), bit);
      }
    }
  }
#endif
};

// A strip's NR floats at a depth: the first run's lanes from first, with TwoRuns the second's
// from second merged in (the runs' lanes are disjoint). Vectors without their bit in Masked have
// every lane in the first run and are loaded whole: a masked load's mask takes a register, and
// a tile of accumulators leaves AVX2 too few for two.
template <bool TwoRuns, unsigned Masked = (1u << kNV) - 1>
__attribute__((always_inline)) inline void load_runs(const float* first, const float* second,
                                                     const TapMasks& m, vfloat (&out)[kNV]) {
#if defined(__AVX512F__)
  __m512 x[kNV];
#pragma GCC unroll 4
  for (int v = 0; v < kNV; ++v) {
    x[v] = Masked >> v & 1 ? _mm512_maskz_loadu_ps(m.run[0][v], first + v * kVL)
                           : _mm512_loadu_ps(first + v * kVL);
  }
  if constexpr (TwoRuns) {
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) x[v] = _mm512_mask_loadu_ps(x[v], m.run[1][v], second + v * kVL);
  }
#else
  __m256 x[kNV];
#pragma GCC unroll 4
  for (int v = 0; v < kNV; ++v) {
    x[v] = Masked >> v & 1 ? _mm256_maskload_ps(first + v * kVL, m.run[0][v])
                           : _mm256_loadu_ps(first + v * kVL);
  }
  if constexpr (TwoRuns) {
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) {
      x[v] = _mm256_or_ps(x[v], _mm256_maskload_ps(second + v * kVL, m.run[1][v]));
    }
  }
#endif
  __builtin_memcpy(out, x, sizeof x);
}

// Which vectors of a strip a run of lanes leaves partial (bit v: vector v).
inline unsigned partial_vectors(uint32_t lanes) {
  constexpr uint32_t kVector = kVL >= 32 ? ~0u : (1u << kVL) - 1;
  unsigned partial = 0;
  for (int v = 0; v < kNV; ++v) partial |= unsigned((lanes >> (v * kVL) & kVector) != kVector) << v;
  return partial;
}

// A strip of NR columns of a window read in place: lane l at x + first + l for the lanes of the
// first run, at x + first + jump + l for those of the second, plus the depth's offset; per tap,
// the lanes of each run that lie inside the input (none past the tile's columns).
struct WindowStrip {
  int64_t first, jump;
  bool two_runs;
  uint32_t lanes[kMaskedShifts][2];
};

// The depths of a block at one filter tap: the first at index first of the block, count of
// them a channel apart (channel x elements), the first one's offset in x.
struct WindowTap {
  int64_t off;
  int32_t first, count;
};

// Whether every strip of NR consecutive columns is at most two runs of x (the window's rows are
// as wide as its input's, images of at least NR positions) with its lanes' masks fixed per tap
// (2 to kMaskedShifts taps).
template <class T>
bool strips_are_runs(const WindowOperand<T>& b) {
  const int64_t taps = b.depth.d1 * b.depth.d2;
  return b.step_h == 1 && b.step_w == 1 && b.wide.mw == 1 && b.wide.mh * b.row == b.wide.d2 &&
         b.wide.d1 * b.wide.d2 >= kNR && taps > 1 && taps <= kMaskedShifts;
}

// The strips of columns j0 + [0, cols): their runs and lane masks per tap. False if one is not
// at most two runs (then the window is packed).
template <class T>
bool window_strips(const WindowOperand<T>& b, int64_t j0, int64_t cols, WindowStrip* strips) {
  WindowDigits wd(b.wide, j0);
  for (int64_t f = 0; f < cols; f += kNR) {
    const int n = int(min64(kNR, cols - f));
    int64_t off[kNR], hh[kNR], ww[kNR];
    for (int l = 0; l < n; ++l, wd.next(b.wide)) {
      const WindowCoord u = WindowOperand<T>::coord(b.wide, wd.o, wd.a, wd.b);
      off[l] = u.off + u.h * b.row + u.w;
      hh[l] = u.h;
      ww[l] = u.w;
    }
    int split;
    if (!at_most_two_runs(off, n, &split)) return false;
    WindowStrip& s = strips[f / kNR];
    s.first = off[0];
    s.jump = split < n ? off[split] - off[0] - split : 0;
    s.two_runs = split < n;
    const uint32_t from_first = split >= 32 ? ~0u : (1u << split) - 1;
    for (int64_t a = 0; a < b.depth.d1; ++a) {
      for (int64_t e = 0; e < b.depth.d2; ++e) {
        const WindowCoord v = WindowOperand<T>::coord(b.depth, 0, a, e);
        const Inside in{v.h, v.w, uint64_t(b.bound_h), uint64_t(b.bound_w)};
        uint32_t lanes = 0;
        for (int l = 0; l < n; ++l) lanes |= uint32_t(in(hh[l], ww[l])) << l;
        s.lanes[a * b.depth.d2 + e][0] = lanes & from_first;
        s.lanes[a * b.depth.d2 + e][1] = lanes & ~from_first;
      }
    }
  }
  return true;
}

// micro_kernel_rows (A's MR rows lda apart) with B's two vectors per depth loaded from x + first
// under the strip's masks (TwoRuns merges the second run's lanes), taps outside and channels
// inside, so that each tap's masks are set up once. The next panel's rows (next) and the
// lines of the strip this thread reads next (x_next) are fetched meanwhile: its reads jump from
// channel to channel, which the hardware prefetcher does not follow.
template <bool TwoRuns, int DepthStep>
__attribute__((always_inline)) inline void window_kernel(int64_t kb, const float* a, int64_t lda,
                                                         const float* next, const float* x,
                                                         const float* x_next, const WindowStrip& s,
                                                         const WindowTap* taps, int ntaps,
                                                         int64_t channel, MicroTile& out) {
  const float* row[kMR];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) row[i] = a + i * lda;
  if (next != a) {
    for (int64_t d = 0; d < kb; d += 64 / sizeof(float)) {
#pragma GCC unroll 16
      for (int i = 0; i < kMR; ++i) __builtin_prefetch(next + i * lda + d);
    }
  }
  const float* const first = x + s.first;
  const float* const second = first + s.jump;
  Accumulators<kMR> c;
  // Tap t's channels; B's vectors in the set `masked` (bit v: vector v) under the tap's masks.
  const auto channels = [&](int t, const TapMasks& masks, auto masked)
      __attribute__((always_inline)) {
    int64_t o = taps[t].off;
    int64_t d = taps[t].first;
    for (int32_t n = 0; n < taps[t].count; ++n, o += channel, d += ntaps) {
      __builtin_prefetch(x_next + o);
      __builtin_prefetch(x_next + o + kNR - 1);
      vfloat bv[kNV];
      load_runs<TwoRuns, decltype(masked)::value>(first + o, second + o, masks, bv);
      c.add([&](int i) { return row[i][d * DepthStep]; }, bv);
    }
  };
  using None = std::integral_constant<unsigned, 0>;
  using First = std::integral_constant<unsigned, 1>;
  using Second = std::integral_constant<unsigned, 2>;
  using Both = std::integral_constant<unsigned, 3>;
  static_assert(kNV == 2, "the sets of vectors above");
  for (int t = 0; t < ntaps; ++t) {
    const TapMasks masks(s.lanes[t]);
    if constexpr (TwoRuns) {
      channels(t, masks, Both{});
    } else {
      // Most taps leave a strip whole, or one of its vectors partial (an edge of the image).
      switch (partial_vectors(s.lanes[t][0])) {
        case 0:
          channels(t, masks, None{});
          break;
        case 1:
          channels(t, masks, First{});
          break;
        case 2:
          channels(t, masks, Second{});
          break;
        default:
          channels(t, masks, Both{});
      }
    }
  }
  c.store(out);
}

// multiply_rows (InPlace) or multiply_packed with B's strips read from x: A's block_rows x kb
// block in place (rows lda apart, a partial last panel copied to scratch) or packed.
template <bool InPlace>
__attribute__((noinline)) void multiply_window(const float* a, int64_t lda, const float* x,
                                               const WindowStrip* strips, const WindowTap* taps,
                                               int ntaps, int64_t channel, int64_t kb,
                                               int64_t block_rows, int64_t cols, float* scratch,
                                               const OutputView& c, int64_t i, int64_t j,
                                               bool first) {
  constexpr int kStep = InPlace ? 1 : kMR;  // between depths of a row of A
  const int64_t a_panels = div_up(block_rows, kMR), b_panels = div_up(cols, kNR);
  for (int64_t p = 0; p < a_panels; ++p) {
    const int panel_rows = int(min64(kMR, block_rows - p * kMR));
    const float* panel = InPlace ? a + p * kMR * lda : a + p * kMR * kb;
    const float* next = InPlace && p + 1 < a_panels ? panel + kMR * lda : panel;
    int64_t ld = InPlace ? lda : 1;
    if (InPlace && panel_rows < kMR) {
      panel = next = padded_panel(panel, panel_rows, kMR, lda, kb, 1, 0, scratch);
      ld = kb;
    }
    for_each_strip(c, i + p * kMR, j, panel_rows, cols, first, [&](int64_t q, MicroTile& acc) {
      // The next panel's lines are fetched during the first strip; later strips reread this one.
      const float* ahead = q == 0 ? next : panel;
      const float* x_next = x + strips[q + 1 < b_panels ? q + 1 : 0].first;
      if (strips[q].two_runs) {
        window_kernel<true, kStep>(kb, panel, ld, ahead, x, x_next, strips[q], taps, ntaps, channel,
                                   acc);
      } else {
        window_kernel<false, kStep>(kb, panel, ld, ahead, x, x_next, strips[q], taps, ntaps,
                                    channel, acc);
      }
    });
  }
}

template <class A>
bool window_gemm(const A& a, const WindowOperand<float>& b, const OutputView& c, const GemmShape& s,
                 const GemmTiles& t, int64_t i0, int64_t j0, int64_t d_begin, int64_t d_end) {
  // Tiles of more rows pack: each packed element then feeds more micro-tiles than reading x
  // in place saves (measured: 64 and 128 rows gain, 256 even, 512 lose; docs/decisions.md).
  // Up to the plan's widest tile (256 columns).
  constexpr int64_t kMaxStrips = 256 / kNR, kMaxRows = 128;
  if (!strips_are_runs(b) || t.tile_n > kMaxStrips * kNR || t.tile_m > kMaxRows) return false;
  const auto [rows, cols, block_m, pb, pa] = TileWalk(s, t, i0, j0);
  WindowStrip strips[kMaxStrips];
  if (!window_strips(b, j0, cols, strips)) return false;
  const int ntaps = int(b.depth.d1 * b.depth.d2);
  WindowTap taps[kMaskedShifts];
  for (int64_t d0 = d_begin; d0 < d_end; d0 += t.tile_k) {
    const int64_t kb = min64(t.tile_k, d_end - d0);
    const bool first = d0 == d_begin;
    WindowDigits dd(b.depth, d0);
    for (int64_t d = 0; d < ntaps; ++d, dd.next(b.depth)) {
      const WindowCoord v = WindowOperand<float>::coord(b.depth, dd.o, dd.a, dd.b);
      const int64_t tap = dd.a * b.depth.d2 + dd.b;
      taps[tap] = WindowTap{v.off + v.h * b.row + v.w, int32_t(d),
                            int32_t(d < kb ? (kb - 1 - d) / ntaps + 1 : 0)};
    }
    if constexpr (std::is_same_v<A, StridedOperand<float>>) {
      if (const float* rows_at = a.rows_in_place(i0, d0, kb)) {  // rows along the depth
        multiply_window<true>(rows_at, a.wide_stride, b.p, strips, taps, ntaps, b.depth.so, kb,
                              rows, cols, pa, c, i0, j0, first);
        continue;
      }
    }
    if constexpr (std::is_same_v<A, PackedRows>) {
      multiply_window<false>(a.block(i0, d0, kb), 0, b.p, strips, taps, ntaps, b.depth.so, kb, rows,
                             cols, pa, c, i0, j0, first);
    } else {
      for (int64_t ib = 0; ib < rows; ib += block_m) {
        const int64_t block_rows = min64(block_m, rows - ib);
        a.template pack<kMR>(pa, i0 + ib, block_rows, d0, kb);
        multiply_window<false>(pa, 0, b.p, strips, taps, ntaps, b.depth.so, kb, block_rows, cols,
                               pa, c, i0 + ib, j0, first);
      }
    }
  }
  return true;
}

}  // namespace cpu
#endif

}  // namespace porta_ops

// bf16 window operands paired as they are read (after the window packing they borrow from).
#include "gemm_engine_cpu_bf16_windows.h"
