// The GEMM engine: C = alpha * A B + beta * C, with A (m x k) and B (k x n) read through
// operands ("loaders") and C written through an output view. gemm_f32 and the three convolutions
// are this one engine with different operands (an implicit GEMM: no im2col buffer is built):
//   gemm               A, B: strided matrices                 C: strided matrix
//   conv forward       A: w as K x CRS    B: im2col view of x   C: y as K x (N, P, Q)
//   conv backward data A: w^T, C x KRS    B: gather view of dy  C: dx as C x (N, H, W)
//   conv backward wts  A: dy as K x NPQ   B: im2col view^T      C: dw as K x CRS
//
// An operand is seen as `wide` x `depth`: A's wide index is its row i, B's its column j, and the
// depth is the shared k. Its elements are stored as T (float, bf16 or f16: half.h) and the
// engine sums in fp32 whatever T is. It offers
//   load(w, d)                     the stored element, for w and d in range;
//   at(w, d)                       the element as fp32 (the tiled path's loads);
//   pack<Width>(dst, w0, wn, d0, dn)  CPU only: elements w0 + [0, wn) x d0 + [0, dn) into
//                                  strips of Width wide indices, zero-padded (the packed path).
// Conv operands return 0 for the positions that fall into padding or between strides.
//
// Two paths, one entry (run_gemm):
// - Tiled (the portable source; what GPUs run): a group of 16 x 16 work-items computes a 64 x 64
//   tile of C; k goes by in blocks of 16 staged in PORTA_SHARED tiles; each work-item keeps a
//   4 x 4 register block (porta::exclusive) whose rows and columns are 16 apart, so that reads of
//   the B tile are conflict-free and the stores of a row of items are coalesced.
// - Packed (PORTA_TARGET_CPU): a group is one work-item computing a large tile of C. Per block of
//   tile_k depth it packs B's panel (tile_k x tile_n; on AVX-512 a conv window whose strips are
//   runs of x is read in place instead) and, block_m rows at a time, A's (unless A
//   is a plain matrix along the depth: read in place), into the group's shared memory, laid out for the micro-kernel: MR x NR of C in vector registers (GCC
//   vector extensions, so each ISA build uses its widest vectors), MR broadcasts of A and NV
//   vector loads of B per step of k.
// Every element of C is summed by one group in a fixed order, or, where the plan splits k
// (split-K: few tiles, deep k), by one group per split into a partial buffer that a second kernel
// adds up in split order. No atomics: results are the same bit for bit on every run of a plan.
#pragma once

#include <porta/porta_kernel.h>

#include "gemm_params.h"
#include "half.h"

#if PORTA_TARGET_CUDA
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#endif

namespace porta_ops {

// x -> (x / div) * outer + (x % div) * inner; a plain stride (x * inner) when div is 0. Maps a
// flattened index (a column (n, p*q) of a conv output, a depth (k, r*s) of w) to an offset.
struct Split {
  int64_t div, outer, inner;

  PORTA_DEVICE_FUNCTION int64_t operator()(int64_t x) const {
    return div > 0 ? (x / div) * outer + (x % div) * inner : x * inner;
  }
  static PORTA_DEVICE_FUNCTION Split stride(int64_t s) { return Split{0, 0, s}; }
};

// Walks Split offsets of consecutive indices without dividing.
struct SplitCursor {
  Split s;
  int64_t hi, lo;

  PORTA_DEVICE_FUNCTION SplitCursor(const Split& split, int64_t x) : s(split) {
    if (s.div > 0) {
      hi = x / s.div;
      lo = x % s.div;
    } else {
      hi = 0;
      lo = x;
    }
  }
  PORTA_DEVICE_FUNCTION int64_t offset() const { return hi * s.outer + lo * s.inner; }
  PORTA_DEVICE_FUNCTION void next() {
    if (++lo == s.div) {
      lo = 0;
      ++hi;
    }
  }
};

// A matrix in memory: element (w, d) at p[w * wide_stride + depth(d)], batch entry b at
// p + b * batch_stride. GEMM's A and B (either transpose) and the conv weights and dy as A.
#if PORTA_TARGET_CPU
// Rows of an operand along a block's depth in `count` runs of equal length: run r of a row at
// p + r * stride from its start (StridedOperand::row_runs). False where there are none.
template <class T>
struct RowRuns {
  const T* p = nullptr;
  int64_t count = 0, stride = 0;
  explicit operator bool() const { return p != nullptr; }
};
#endif

template <class T>
struct StridedOperand {
  using value_type = T;
  const T* p;
  int64_t wide_stride;
  Split depth;
  int64_t batch_stride;

  PORTA_DEVICE_FUNCTION T load(int64_t w, int64_t d) const { return p[w * wide_stride + depth(d)]; }
  PORTA_DEVICE_FUNCTION float at(int64_t w, int64_t d) const { return to_float(load(w, d)); }
  PORTA_DEVICE_FUNCTION StridedOperand entry(int64_t b) const {
    StridedOperand e = *this;
    e.p += b * batch_stride;
    return e;
  }
  // Whether neighbouring wide indices are neighbours in memory (the tiled path then lets
  // neighbouring work-items load along w, else along d).
  PORTA_DEVICE_FUNCTION bool wide_contiguous() const { return wide_stride == 1; }

#if PORTA_TARGET_CPU
  // As pack<Width> below, strip t at dst + t * across where across is not 0.
  template <int Width>
  void pack(float* dst, int64_t w0, int64_t wn, int64_t d0, int64_t dn, int64_t across = 0) const;
  // Where the rows from w0 lie along depths [d0, d0 + dn), wide_stride apart (a matrix stored
  // along the depth, or dy within one image): the first one's start, which the packed path reads
  // in place; nullptr where the depths are not consecutive in memory.
  const T* rows_in_place(int64_t w0, int64_t d0, int64_t dn) const {
    if (depth.inner != 1 || (depth.div > 0 && d0 / depth.div != (d0 + dn - 1) / depth.div)) {
      return nullptr;
    }
    return p + w0 * wide_stride + depth(d0);
  }
  // Where the rows from w0 lie along depths [d0, d0 + dn) in runs of consecutive elements: the
  // whole block as one run where rows_in_place finds it, else whole periods of a depth that
  // wraps (x's or dy's positions, image by image), run r of a row `stride` after run 0. The
  // packed path's fp32 kernel reads them where they lie; no runs where they are neither.
  RowRuns<T> row_runs(int64_t w0, int64_t d0, int64_t dn) const {
    if (const T* at = rows_in_place(w0, d0, dn)) return RowRuns<T>{at, 1, 0};
    if (depth.inner != 1 || depth.div <= 0 || d0 % depth.div != 0 || dn % depth.div != 0) {
      return RowRuns<T>{};
    }
    return RowRuns<T>{p + w0 * wide_stride + depth(d0), dn / depth.div, depth.outer};
  }
  // Where the panels from w0 lie at depths from d0, depth.inner apart, each of its wide indices
  // side by side (a matrix stored along the wide side): the first one's start, which the packed
  // path reads in place; nullptr where they are not.
  const T* panels_in_place(int64_t w0, int64_t d0) const {
    return wide_stride == 1 && depth.div == 0 ? p + w0 + depth(d0) : nullptr;
  }
#endif
};

// One side (wide or depth) of a sliding-window operand: index x = (o * d1 + a) * d2 + b, and
// the position (h, w) = (a * mh + ah, b * mw + aw) it contributes, with offset o * so.
struct WindowAxis {
  int64_t d1, d2;
  int64_t so;
  int64_t mh, ah, mw, aw;
};

// Where a WindowAxis index lands: the part of the offset that does not depend on the position
// validity (off), and the position (h, w).
struct WindowCoord {
  int64_t off, h, w;
};

// The im2col view of x and the gather view of dy. Element (wide, depth): the position
// (h, w) = wide's + depth's; when each coordinate is divisible by its step (1 except for the
// gather view of a strided convolution) and the quotients (h/step_h, w/step_w) lie in
// [0, bound_h) x [0, bound_w), the element is p[wide.off + depth.off + (h/step_h) * row +
// w/step_w]; otherwise 0 (padding, or no output position under a stride).
template <class T>
struct WindowOperand {
  using value_type = T;
  const T* p;
  WindowAxis wide, depth;
  int64_t bound_h, bound_w, row;
  int64_t step_h, step_w;

  static PORTA_DEVICE_FUNCTION WindowCoord coord(const WindowAxis& x, int64_t o, int64_t a, int64_t b) {
    return WindowCoord{o * x.so, a * x.mh + x.ah, b * x.mw + x.aw};
  }
  static PORTA_DEVICE_FUNCTION WindowCoord coord_of(const WindowAxis& x, int64_t i) {
    const int64_t b = i % x.d2, t = i / x.d2;
    return coord(x, t / x.d1, t % x.d1, b);
  }
  // The stored element, T{} (zero) outside the input.
  PORTA_DEVICE_FUNCTION T element(const WindowCoord& u, const WindowCoord& v) const {
    int64_t h = u.h + v.h, w = u.w + v.w;
    if (step_h != 1 || step_w != 1) {
      if (h < 0 || w < 0 || h % step_h != 0 || w % step_w != 0) return T{};
      h /= step_h;
      w /= step_w;
    }
    if (static_cast<uint64_t>(h) >= static_cast<uint64_t>(bound_h) ||
        static_cast<uint64_t>(w) >= static_cast<uint64_t>(bound_w)) {
      return T{};
    }
    return p[u.off + v.off + h * row + w];
  }
  PORTA_DEVICE_FUNCTION T load(int64_t w, int64_t d) const {
    return element(coord_of(wide, w), coord_of(depth, d));
  }
  PORTA_DEVICE_FUNCTION float at(int64_t w, int64_t d) const { return to_float(load(w, d)); }
  PORTA_DEVICE_FUNCTION WindowOperand entry(int64_t) const { return *this; }
  PORTA_DEVICE_FUNCTION bool wide_contiguous() const { return wide.d2 > 1 && wide.mw == 1; }

#if PORTA_TARGET_CPU
  template <int Width>
  void pack(float* dst, int64_t w0, int64_t wn, int64_t d0, int64_t dn) const;
#endif
};

// Where C goes: element (i, j) at p[i * row_stride + col(j)], scaled as alpha * sum + beta * C
// (C not read when beta is 0). col must be strictly increasing in j.
struct OutputView {
  float* p;
  int64_t row_stride;
  Split col;
  int64_t batch_stride;
  float alpha, beta;

  PORTA_DEVICE_FUNCTION OutputView entry(int64_t b) const {
    OutputView e = *this;
    e.p += b * batch_stride;
    return e;
  }
};

// The problem: sizes and the number of batch entries.
struct GemmShape {
  int64_t m, n, k, batch;
};

// This group's number in the flattened grid (gemm_params.h: flat_grid).
PORTA_DEVICE_FUNCTION int64_t group_number() {
  return (int64_t(porta::group_id(2)) * porta::group_count(1) + porta::group_id(1)) *
             porta::group_count(0) +
         porta::group_id(0);
}

// *e = alpha * sum + beta * *e, reading *e only when beta != 0 and ignoring sum when alpha is 0
// (as BLAS does: A and B do not matter then, NaN or not).
PORTA_DEVICE_FUNCTION void store_element(const OutputView& c, float* e, float sum) {
  const float v = c.alpha != 0.0f ? c.alpha * sum : 0.0f;
  *e = c.beta != 0.0f ? v + c.beta * *e : v;
}

/* ---- The tiled path (portable) ------------------------------------------------------------- */

struct TiledBlock {
  float v[kTiledPerItem][kTiledPerItem];
};

// Loads the kTiledK x kTiled(M|N) tile (wide from w0, depth from d0) of x into tile[d][w], zero
// outside the operand; item t of the group's kTiledItems^2 loads every kTiledItems^2-th element.
// Neighbouring items take neighbouring elements along the operand's contiguous direction.
template <class Operand, int32_t Wide>
PORTA_DEVICE_FUNCTION void load_tile(const Operand& x, float (*tile)[Wide + 1], int64_t w0, int64_t wn,
                            int64_t d0, int64_t dn, uint32_t t) {
  constexpr uint32_t kItems = kTiledItems * kTiledItems;
  const bool along_w = x.wide_contiguous();
  for (uint32_t e = t; e < uint32_t(kTiledK * Wide); e += kItems) {
    const uint32_t w = along_w ? e % Wide : e / kTiledK;
    const uint32_t d = along_w ? e / Wide : e % kTiledK;
    tile[d][w] = (w0 + w < wn && d0 + d < dn) ? x.at(w0 + w, d0 + d) : 0.0f;
  }
}

template <class A, class B>
PORTA_DEVICE_FUNCTION void tiled_gemm(const A& a, const B& b, const OutputView& c, const GemmShape& s,
                             int64_t i0, int64_t j0, int64_t d_begin, int64_t d_end) {
  // One column of padding: the loads along d write down a column, 16 banks apart otherwise.
  PORTA_SHARED float as[kTiledK][kTiledM + 1];
  PORTA_SHARED float bs[kTiledK][kTiledN + 1];
  porta::exclusive<TiledBlock, kTiledItems * kTiledItems> acc;
  porta::inner([&](uint32_t x, uint32_t y) {
    TiledBlock& r = acc(y * kTiledItems + x);
    for (int32_t i = 0; i < kTiledPerItem; ++i)
      for (int32_t j = 0; j < kTiledPerItem; ++j) r.v[i][j] = 0.0f;
  });
  for (int64_t d0 = d_begin; d0 < d_end; d0 += kTiledK) {
    porta::inner([&](uint32_t x, uint32_t y) {
      const uint32_t t = y * kTiledItems + x;
      load_tile<A, kTiledM>(a, as, i0, s.m, d0, d_end, t);
      load_tile<B, kTiledN>(b, bs, j0, s.n, d0, d_end, t);
    });
    porta::inner([&](uint32_t x, uint32_t y) {
      TiledBlock& r = acc(y * kTiledItems + x);
      for (int32_t d = 0; d < kTiledK; ++d) {
        float av[kTiledPerItem], bv[kTiledPerItem];
        for (int32_t i = 0; i < kTiledPerItem; ++i) av[i] = as[d][y + i * kTiledItems];
        for (int32_t j = 0; j < kTiledPerItem; ++j) bv[j] = bs[d][x + j * kTiledItems];
        for (int32_t i = 0; i < kTiledPerItem; ++i)
          for (int32_t j = 0; j < kTiledPerItem; ++j) r.v[i][j] += av[i] * bv[j];
      }
    });
  }
  porta::inner([&](uint32_t x, uint32_t y) {
    const TiledBlock& r = acc(y * kTiledItems + x);
    for (int32_t j = 0; j < kTiledPerItem; ++j) {
      const int64_t col = j0 + x + j * kTiledItems;
      if (col >= s.n) continue;
      float* out = c.p + c.col(col);
      for (int32_t i = 0; i < kTiledPerItem; ++i) {
        const int64_t row = i0 + y + i * kTiledItems;
        if (row >= s.m) continue;
        store_element(c, out + row * c.row_stride, r.v[i][j]);
      }
    }
  });
}

/* ---- The tiled path on NVIDIA tensor cores (sm_80 and later), f16 and bf16 ---------------- */
//
// The same launch as the tiled path (a group of kTiledItems^2 = 256 threads, 8 warps, computes a
// kTiledM x kTiledN = 64 x 64 tile of C), with the products done by warp matrix instructions on
// 16 x 16 x 16 fragments and fp32 accumulators: warp w owns rows 16 (w / 2) and the two 16-wide
// column blocks at 32 (w % 2). k goes by kWmmaK at a time: the threads stage the A and B tiles in
// shared memory as they are stored (16-bit), zero outside the operand; at the end the
// accumulators go through shared memory so that the threads can apply alpha and beta and store
// with bounds checks, coalesced along the rows of C.
#if PORTA_TARGET_CUDA && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define PORTA_GEMM_WMMA 1

template <class T>
struct wmma_type;
template <>
struct wmma_type<f16> {
  using type = __half;
};
template <>
struct wmma_type<bf16> {
  using type = __nv_bfloat16;
};

inline constexpr int32_t kWmmaK = 32;
// Row padding of the staged tiles (in elements): it keeps every fragment's start 32-byte aligned
// (wmma's requirement; the leading dimensions stay multiples of 16 bytes) and moves consecutive
// rows to other banks.
inline constexpr int32_t kWmmaPadHalf = 8;
inline constexpr int32_t kWmmaPadFloat = 4;
static_assert(kTiledM == 64 && kTiledN == 64 && kTiledItems == 16,
              "the tensor-core path is written for 64 x 64 tiles and 8 warps");

template <class A, class B>
__device__ void wmma_gemm(const A& a, const B& b, const OutputView& c, const GemmShape& s,
                          int64_t i0, int64_t j0, int64_t d_begin, int64_t d_end) {
  namespace wmma = nvcuda::wmma;
  using T = typename A::value_type;
  using V = typename wmma_type<T>::type;
  constexpr int32_t kLdA = kWmmaK + kWmmaPadHalf;    // as[i][d]
  constexpr int32_t kLdB = kTiledN + kWmmaPadHalf;   // bs[d][j]
  constexpr int32_t kLdC = kTiledN + kWmmaPadFloat;  // cs[i][j]
  // The staged tiles while k goes by, then the accumulators: never both at once.
  union Staging {
    struct {
      T a[kTiledM][kLdA];
      T b[kWmmaK][kLdB];
    } in;
    float c[kTiledM][kLdC];
  };
  __shared__ __align__(32) unsigned char staging_bytes[sizeof(Staging)];
  Staging& st = *reinterpret_cast<Staging*>(staging_bytes);

  const uint32_t t = threadIdx.y * kTiledItems + threadIdx.x;
  constexpr uint32_t kThreads = kTiledItems * kTiledItems;
  const uint32_t warp = t / 32;
  const int32_t wr = int32_t(warp / 2) * 16, wc = int32_t(warp % 2) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
  wmma::fill_fragment(acc[0], 0.0f);
  wmma::fill_fragment(acc[1], 0.0f);
  const bool a_along_w = a.wide_contiguous(), b_along_w = b.wide_contiguous();
  for (int64_t d0 = d_begin; d0 < d_end; d0 += kWmmaK) {
    // Neighbouring threads take neighbouring elements along each operand's contiguous side.
    // (Not unrolled: the loads of 8 elements in flight at once would double the registers.)
#pragma unroll 1
    for (uint32_t e = t; e < uint32_t(kTiledM * kWmmaK); e += kThreads) {
      const uint32_t w = a_along_w ? e % kTiledM : e / kWmmaK;
      const uint32_t d = a_along_w ? e / kTiledM : e % kWmmaK;
      st.in.a[w][d] = (i0 + w < s.m && d0 + d < d_end) ? a.load(i0 + w, d0 + d) : T{};
    }
#pragma unroll 1
    for (uint32_t e = t; e < uint32_t(kTiledN * kWmmaK); e += kThreads) {
      const uint32_t w = b_along_w ? e % kTiledN : e / kWmmaK;
      const uint32_t d = b_along_w ? e / kTiledN : e % kWmmaK;
      st.in.b[d][w] = (j0 + w < s.n && d0 + d < d_end) ? b.load(j0 + w, d0 + d) : T{};
    }
    __syncthreads();
#pragma unroll
    for (int32_t kk = 0; kk < kWmmaK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, V, wmma::row_major> fa;
      wmma::load_matrix_sync(fa, reinterpret_cast<const V*>(&st.in.a[wr][kk]), kLdA);
#pragma unroll
      for (int32_t f = 0; f < 2; ++f) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, V, wmma::row_major> fb;
        wmma::load_matrix_sync(fb, reinterpret_cast<const V*>(&st.in.b[kk][wc + 16 * f]), kLdB);
        wmma::mma_sync(acc[f], fa, fb, acc[f]);
      }
    }
    __syncthreads();  // before the next tiles (or the accumulators) overwrite these
  }
  wmma::store_matrix_sync(&st.c[wr][wc], acc[0], kLdC, wmma::mem_row_major);
  wmma::store_matrix_sync(&st.c[wr][wc + 16], acc[1], kLdC, wmma::mem_row_major);
  __syncthreads();
  for (uint32_t e = t; e < uint32_t(kTiledM * kTiledN); e += kThreads) {
    const int64_t row = i0 + e / kTiledN, col = j0 + e % kTiledN;
    if (row < s.m && col < s.n) {
      store_element(c, c.p + row * c.row_stride + c.col(col), st.c[e / kTiledN][e % kTiledN]);
    }
  }
}
#endif

}  // namespace porta_ops

#if PORTA_TARGET_CPU
#include "gemm_engine_cpu.h"
#endif

namespace porta_ops {

// The engine's entry: this group's tile of C (or, with split-K, its partial product over one
// depth split) for the launch planned by plan_gemm (gemm_params.h), on the path the plan chose.
template <class A, class B>
PORTA_DEVICE_FUNCTION void run_gemm(const A& a, const B& b, const OutputView& c, const GemmShape& s,
                           const GemmTiles& t) {
  int64_t g = group_number();
  if (g >= t.tiles_m * t.tiles_n * t.splits * s.batch) return;  // the grid's surplus
  const int64_t tm = g % t.tiles_m;
  g /= t.tiles_m;
  const int64_t tn = g % t.tiles_n;
  g /= t.tiles_n;
  const int64_t split = g % t.splits;
  const int64_t entry = g / t.splits;
  const int64_t i0 = tm * t.tile_m, j0 = tn * t.tile_n;
  const int64_t d_begin = split * t.split_depth;
  const int64_t d_end = d_begin + t.split_depth < s.k ? d_begin + t.split_depth : s.k;
  OutputView out = c.entry(entry);
  if (t.splits > 1) {
    out = OutputView{
        t.partials + (entry * t.splits + split) * s.m * s.n, s.n, Split::stride(1), 0, 1.0f, 0.0f};
  }
#if PORTA_TARGET_CPU
  if (t.path != kGemmPathTiled) {
    cpu::packed_gemm(a.entry(entry), b.entry(entry), out, s, t, i0, j0, d_begin, d_end);
    return;
  }
#endif
#if PORTA_GEMM_WMMA
  using TA = typename A::value_type;
  if constexpr (sizeof(TA) == 2 && std::is_same_v<TA, typename B::value_type>) {
    wmma_gemm(a.entry(entry), b.entry(entry), out, s, i0, j0, d_begin, d_end);
    return;
  }
#endif
  tiled_gemm(a.entry(entry), b.entry(entry), out, s, i0, j0, d_begin, d_end);
}

// The second kernel of a split-K launch: C = alpha * (sum of the splits' partials, in split
// order) + beta * C. On a GPU one work-item per element of C over a 1-D grid of kReduceItems-item
// groups; on the CPU a group per block of C (reduce_groups).
PORTA_DEVICE_FUNCTION void reduce_partials(const OutputView& c, const GemmShape& s, const GemmTiles& t) {
  const int64_t per_entry = s.m * s.n;
#if PORTA_TARGET_CPU
  // One pool thread runs the group's kReduceBlock x kReduceBlock block: the splits added along
  // its rows in vector lanes, then stored along C's contiguous direction, whole lines either way
  // (conv backward weights' dw^T lies column by column, its columns C * R * S floats apart).
  constexpr int64_t kB = kReduceBlock;
  const int64_t blocks_m = div_up(s.m, kB), blocks_n = div_up(s.n, kB);
  int64_t g = group_number();
  const int64_t bj = g % blocks_n;
  g /= blocks_n;
  const int64_t bi = g % blocks_m, entry = g / blocks_m;
  if (entry >= s.batch) return;
  const int64_t i0 = bi * kB, j0 = bj * kB;
  const int64_t rows = min64(kB, s.m - i0), cols = min64(kB, s.n - j0);
  const float* part = t.partials + entry * t.splits * per_entry + i0 * s.n + j0;
  float sum[kB][kB];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t x = 0; x < cols; ++x) sum[r][x] = 0.0f + part[r * s.n + x];  // as the GPU's: -0
  }
  for (int32_t split = 1; split < t.splits; ++split) {
    const float* p = part + split * per_entry;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t x = 0; x < cols; ++x) sum[r][x] += p[r * s.n + x];
    }
  }
  const OutputView out = c.entry(entry);
  int64_t col[kB];
  SplitCursor at(out.col, j0);
  for (int64_t x = 0; x < cols; ++x, at.next()) col[x] = at.offset();
  float* const base = out.p + i0 * out.row_stride;
  if (out.row_stride == 1) {
    for (int64_t x = 0; x < cols; ++x) {
      for (int64_t r = 0; r < rows; ++r) store_element(out, base + col[x] + r, sum[r][x]);
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      float* const row = base + r * out.row_stride;
      for (int64_t x = 0; x < cols; ++x) store_element(out, row + col[x], sum[r][x]);
    }
  }
#else
  const int64_t first = group_number() * porta::group_size(0);
  porta::inner([&](uint32_t item) {
    const int64_t e = first + item;
    if (e >= per_entry * s.batch) return;
    const int64_t entry = e / per_entry, ij = e % per_entry;
    const float* part = t.partials + entry * t.splits * per_entry + ij;
    float sum = 0.0f;
    for (int32_t split = 0; split < t.splits; ++split) sum += part[split * per_entry];
    const OutputView out = c.entry(entry);
    store_element(out, out.p + (ij / s.n) * out.row_stride + out.col(ij % s.n), sum);
  });
#endif
}

}  // namespace porta_ops
