// The packed path's bf16 micro-kernel, for CPUs with AVX512_BF16 (included by gemm_engine_cpu.h).
//
// vdpbf16ps multiplies 16 pairs of bf16 by 16 pairs and adds each pair's two products into an
// fp32 lane: twice the products of an fp32 FMA per instruction. Its operands are pairs along
// the depth: strip t of a panel of dn depths holds, as 32-bit words, strip[p * Width + w] =
// (depth 2p + 1 << 16) | depth 2p of wide index w, for p < ceil(dn / 2), an odd last depth
// paired with 0. A matrix contiguous along its wide side is paired straight from memory, and so
// are stride-1 windows (im2col of x, dy's gather view: gemm_engine_cpu_bf16_windows.h); every
// other operand (strided windows, depth-contiguous matrices) is packed as for fp32 by its own
// pack<Width>, whose fp32 values are bf16 widened exactly, and then narrowed in place into
// pairs; a bf16 A stored along the depth is read in place, two consecutive elements of a
// row being one pair (in blocks of even depth, which the plan keeps). The kernel keeps the fp32
// micro-tile (MR x NR accumulators, store_tile for alpha, beta and the edges), fed per pair of
// depths by MR broadcasts of A's pairs and NV loads of B's.
//
// Only the x86-64-v4 build has it, compiled with a target attribute and taken at run time where
// the CPU has the instruction; elsewhere bf16 stays widened to fp32. Products are exact in fp32
// either way and the sums are fp32, as on every other path; the instruction itself treats bf16
// subnormals (below 2^-126) as zero, whatever MXCSR says.
#pragma once

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__x86_64__)
#define PORTA_GEMM_BF16_DOT 1

#include <cpuid.h>

#include <type_traits>

namespace porta_ops {
namespace cpu {

static_assert(kVL == 16, "vdpbf16ps fills zmm registers: 16 fp32 lanes");

// Whether the CPU has AMX tiles for bf16: AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and
// 22). Whether Linux lets the process use them is has_amx_bf16's question
// (gemm_engine_cpu_amx.h).
inline bool cpu_has_amx_bf16() {
  unsigned eax, ebx, ecx, edx;
  return __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx >> 22 & 1) && (edx >> 24 & 1);
}

// Whether to take vdpbf16ps (asked once): where the CPU has it, unless it also has AMX. On the
// AMX Xeons the instruction gives half the flops of the core's two FMA units (115-120 against
// 230-239 GFLOP/s a core, measured), so fp32 FMAs on bf16 widened exactly do more products a
// second; on the Zen 4, twice theirs.
inline bool has_bf16_dot() {
  static const bool yes = __builtin_cpu_supports("avx512bf16") && !cpu_has_amx_bf16();
  return yes;
}

template <class A, class B>
constexpr bool bf16_operands() {
  return std::is_same_v<typename A::value_type, bf16> &&
         std::is_same_v<typename B::value_type, bf16>;
}

typedef uint32_t vpair8 __attribute__((vector_size(32)));

// Narrows `strips` packed fp32 strips of Width x dn into depth pairs, in place (see the top).
// Each output word lies at or below the inputs it is made of and after every word already read,
// so reading 8 wide indices of a pair before writing them keeps every unread input intact.
template <int Width>
void pair_depths(float* panel, int64_t strips, int64_t dn) {
  static_assert(Width % 8 == 0, "whole 8-word chunks");
  const int64_t pairs = div_up(dn, 2);
  uint32_t* const out = reinterpret_cast<uint32_t*>(panel);
  for (int64_t t = 0; t < strips; ++t) {
    const float* strip = panel + t * Width * dn;
    uint32_t* paired = out + t * Width * pairs;
    for (int64_t p = 0; p < pairs; ++p) {
      const bool odd_end = 2 * p + 1 == dn;
      for (int w = 0; w < Width; w += 8) {
        vpair8 even, odd = vpair8{};
        __builtin_memcpy(&even, strip + 2 * p * Width + w, sizeof even);
        if (!odd_end) __builtin_memcpy(&odd, strip + (2 * p + 1) * Width + w, sizeof odd);
        const vpair8 word = (even >> 16) | (odd & 0xFFFF0000u);
        __builtin_memcpy(paired + p * Width + w, &word, sizeof word);
      }
    }
  }
}

// Packs x's panel as pair_depths leaves it: in general through x's own pack, then pair_depths.
// The fp32 strips take twice the room of the pairs they become, so they are packed a group at a
// time, each group at the place its pairs start (after the strips already paired) and as many
// strips as fit below `end`; packed_gemm_bf16 leaves room for at least one.
template <int Width, class Operand>
void pack_pairs_via_fp32(const Operand& x, float* dst, const float* end, int64_t w0, int64_t wn,
                         int64_t d0, int64_t dn) {
  const int64_t strips = div_up(wn, Width), pairs = div_up(dn, 2);
  for (int64_t t = 0; t < strips;) {
    float* const group = dst + t * Width * pairs;
    const int64_t n = min64(strips - t, max64(1, (end - group) / (Width * dn)));
    x.template pack<Width>(group, w0 + t * Width, min64(n * Width, wn - t * Width), d0, dn);
    pair_depths<Width>(group, n, dn);
    t += n;
  }
}
template <int Width, class Operand>
void pack_pairs(const Operand& x, float* dst, const float* end, int64_t w0, int64_t wn, int64_t d0,
                int64_t dn) {
  pack_pairs_via_fp32<Width>(x, dst, end, w0, wn, d0, dn);
}

// Window operands are paired as they are read (gemm_engine_cpu_bf16_windows.h).
template <int Width>
void pack_pairs(const WindowOperand<bf16>& x, float* dst, const float* end, int64_t w0, int64_t wn,
                int64_t d0, int64_t dn);

typedef uint16_t vbits8 __attribute__((vector_size(16)));
typedef uint16_t vbits16 __attribute__((vector_size(32)));
typedef uint32_t vpair16 __attribute__((vector_size(64)));

// out[w] = (odd[w] & odd_mask) << 16 | even[w] for w < Lanes.
template <class Bits, class Pairs>
__attribute__((always_inline)) inline void interleave(const uint16_t* even, const uint16_t* odd,
                                                      uint32_t odd_mask, uint32_t* out) {
  Bits e, o;
  __builtin_memcpy(&e, even, sizeof e);
  __builtin_memcpy(&o, odd, sizeof o);
  const Pairs word = __builtin_convertvector(e, Pairs) |
                     ((__builtin_convertvector(o, Pairs) & odd_mask) << 16);
  __builtin_memcpy(out, &word, sizeof word);
}

// A matrix contiguous along its wide side (GEMM's B as stored, A transposed) is paired straight
// from memory, two depth rows at a time: half the passes over the panel, none through fp32.
template <int Width>
void pack_pairs(const StridedOperand<bf16>& x, float* dst, const float* end, int64_t w0, int64_t wn,
                int64_t d0, int64_t dn) {
  if (x.wide_stride != 1) return pack_pairs_via_fp32<Width>(x, dst, end, w0, wn, d0, dn);
  const int64_t strips = div_up(wn, Width), pairs = div_up(dn, 2);
  uint32_t* const out = reinterpret_cast<uint32_t*>(dst);
  // Rows a few depths ahead are prefetched, as StridedOperand::pack does (short runs from a large
  // operand outpace the hardware prefetcher).
  constexpr int64_t kAhead = 8;
  SplitCursor cursor(x.depth, d0), ahead(x.depth, d0);
  for (int64_t d = 0; d < kAhead && d < dn; ++d) ahead.next();
  for (int64_t p = 0; p < pairs; ++p) {
    for (int64_t d = 2 * p + kAhead; d < 2 * p + kAhead + 2 && d < dn; ++d, ahead.next()) {
      const char* next = reinterpret_cast<const char*>(x.p + w0 + ahead.offset());
      for (int64_t byte = 0; byte < wn * int64_t(sizeof(bf16)); byte += 64) {
        __builtin_prefetch(next + byte);
      }
    }
    const uint16_t* even = &x.p[w0 + cursor.offset()].bits;
    cursor.next();
    const bool has_odd = 2 * p + 1 < dn;
    const uint16_t* odd = has_odd ? &x.p[w0 + cursor.offset()].bits : even;
    if (has_odd) cursor.next();
    const uint32_t odd_mask = has_odd ? 0xFFFFu : 0u;
    for (int64_t t = 0; t < strips; ++t) {
      uint32_t* __restrict row = out + t * Width * pairs + p * Width;
      const int64_t first = t * Width, n = min64(Width, wn - first);
      int w = 0;
      if (n == Width) {
        for (; w + 16 <= Width; w += 16) {
          interleave<vbits16, vpair16>(even + first + w, odd + first + w, odd_mask, row + w);
        }
        for (; w + 8 <= Width; w += 8) {
          interleave<vbits8, vpair8>(even + first + w, odd + first + w, odd_mask, row + w);
        }
      }
      for (; w < n; ++w) row[w] = even[first + w] | ((odd[first + w] & odd_mask) << 16);
      for (; w < Width; ++w) row[w] = 0;
    }
  }
}

// out = the product of an A strip of depth pairs (a.p[p * a.step + i]) and a B strip
// (b.p[p * b.step + j], 64-byte aligned: paired B is always packed, so b_next is unused), over
// `pairs` pairs. Not inlined: only this function is compiled for AVX512_BF16, and a call per
// micro-tile costs nothing next to its `pairs` steps.
__attribute__((target("avx512bf16"), noinline)) inline void micro_kernel_bf16(
    int64_t pairs, Strip<uint32_t> sa, Strip<uint32_t> sb, const uint32_t*, MicroTile& out) {
  const uint32_t* __restrict a = sa.p;
  const uint32_t* __restrict b = sb.p;
  __m512 c[kMR][kNV];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) c[i][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh bv[kNV];
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) bv[v] = (__m512bh)_mm512_load_si512(b + v * kVL);
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(int(a[i]));
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) c[i][v] = _mm512_dpbf16_ps(c[i][v], ai, bv[v]);
    }
    a += sa.step;
    b += sb.step;
  }
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) __builtin_memcpy(&out.v[i][v], &c[i][v], sizeof c[i][v]);
}

// micro_kernel_bf16 with A's MR rows read in place (row r at a + r * lda): two consecutive bf16
// of a row, read as one 32-bit word, are the depth pair the instruction wants. Lines of the next
// panel's rows (none where next is null) are prefetched one per row every 16 pairs; Rows as
// micro_kernel_rows'.
// B as micro_kernel_bf16's.
template <int Rows = kMR>
__attribute__((target("avx512bf16"), noinline)) inline void micro_kernel_bf16_rows(
    int64_t pairs, const bf16* a, int64_t lda, const bf16* next, Strip<uint32_t> sb,
    const uint32_t*, MicroTile& out) {
  const uint32_t* __restrict b = sb.p;
  const char* row[Rows];
  const char* next_row[Rows];
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i) {
    row[i] = reinterpret_cast<const char*>(a + i * lda);
    next_row[i] = reinterpret_cast<const char*>((next ? next : a) + i * lda);
  }
  __m512 c[Rows][kNV];
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) c[i][v] = _mm512_setzero_ps();
  constexpr int64_t kLinePairs = 64 / sizeof(uint32_t);
  for (int64_t p0 = 0; p0 < pairs; p0 += kLinePairs) {
    if (next) {
#pragma GCC unroll 16
      for (int i = 0; i < Rows; ++i) __builtin_prefetch(next_row[i] + p0 * sizeof(uint32_t));
    }
    const int64_t p_end = min64(p0 + kLinePairs, pairs);
    for (int64_t p = p0; p < p_end; ++p) {
      __m512bh bv[kNV];
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) bv[v] = (__m512bh)_mm512_load_si512(b + v * kVL);
#pragma GCC unroll 16
      for (int i = 0; i < Rows; ++i) {
        uint32_t pair;
        __builtin_memcpy(&pair, row[i] + p * sizeof(uint32_t), sizeof pair);
        const __m512bh ai = (__m512bh)_mm512_set1_epi32(int(pair));
#pragma GCC unroll 4
        for (int v = 0; v < kNV; ++v) c[i][v] = _mm512_dpbf16_ps(c[i][v], ai, bv[v]);
      }
      b += sb.step;
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) __builtin_memcpy(&out.v[i][v], &c[i][v], sizeof c[i][v]);
}

// multiply_rows_with over a paired B panel, A's rows read in place; kb is even.
__attribute__((noinline)) inline void multiply_rows_bf16(const bf16* a, int64_t lda,
                                                         const uint32_t* pb, int64_t kb,
                                                         int64_t block_rows, int64_t cols,
                                                         bf16* scratch, const OutputView& c,
                                                         int64_t i, int64_t j, bool first) {
  multiply_rows_with<bf16, uint32_t, micro_kernel_bf16_rows<>, micro_kernel_bf16_rows<kMR / 2>>(
      a, lda, Panels<uint32_t, kNR>::packed(pb, kb / 2), kb, kb / 2, block_rows, cols, scratch, c,
      i, j, first);
}

// multiply_strips over paired panels of `pairs` depth pairs.
__attribute__((noinline)) inline void multiply_packed_bf16(const uint32_t* pa, const uint32_t* pb,
                                                           int64_t pairs, int64_t block_rows,
                                                           int64_t cols, const OutputView& c,
                                                           int64_t i, int64_t j, bool first) {
  multiply_strips<uint32_t, micro_kernel_bf16>(Panels<uint32_t, kMR>::packed(pa, pairs),
                                               Panels<uint32_t, kNR>::packed(pb, pairs), pairs,
                                               block_rows, cols, c, i, j, first);
}

// Whether A's panels over depths [d_begin, d_begin + depth) are paired without an fp32 copy:
// read in place (all of it one run, in blocks of even depth), or paired straight from memory;
// packed_gemm_bf16 then leaves no room for one.
template <class A>
bool pairs_in_place(const A& a, int64_t d_begin, int64_t depth) {
  if constexpr (std::is_same_v<A, StridedOperand<bf16>>) {
    return a.wide_stride == 1 || (depth % 2 == 0 && a.rows_in_place(0, d_begin, depth));
  }
  return false;
}

// A conv window whose strips are runs of x, multiplied without pairing it into a panel (defined
// in gemm_engine_cpu_bf16_windows.h); false where it is paired instead.
template <class A>
bool window_gemm_bf16(const A& a, const WindowOperand<bf16>& b, const OutputView& c,
                      const GemmShape& s, const GemmTiles& t, int64_t i0, int64_t j0,
                      int64_t d_begin, int64_t d_end, int64_t kc, const float* end);

// packed_gemm for bf16 operands on vdpbf16ps: the same tiles and shared memory, each panel
// paired as it is packed. Pairs take half the room of fp32 depths, so where storing C is costly
// the blocks go about twice as deep as the plan's tile_k: a micro-tile then runs as many steps
// per store of C as fp32's does, instead of half (storing C, scattered where a strip crosses the
// end of a conv output's image, weighed up to a third of the kernel's time). The room left after
// the panels' pairs holds the fp32 strips of the last group packed (at least one strip of B,
// then of A: see pack_pairs_via_fp32).
template <class A, class B>
void packed_gemm_bf16(const A& a, const B& b, const OutputView& c, const GemmShape& s,
                      const GemmTiles& t, int64_t i0, int64_t j0, int64_t d_begin, int64_t d_end) {
  const auto [rows, cols, block_m, pb, pa_fp32] = TileWalk(s, t, i0, j0);
  const int64_t panel_cols = div_up(t.tile_n, kNR) * kNR;
  const float* const end = pa_fp32 + int64_t{t.block_m} * t.tile_k;
  const int64_t depth = d_end - d_begin;
  const int64_t a_room = block_m + (pairs_in_place(a, d_begin, depth) ? 0 : kMR);
  const int64_t max_pairs = (end - pb) / max64(panel_cols + a_room, panel_cols + kNR);
  // Only where C's strips are scattered (a conv output whose images end inside strips) does a
  // store weigh that much; elsewhere the plan's depth keeps a B strip at half fp32's room in L1,
  // and was as fast or faster (1x1 backward weights). tile_k depths fit as for fp32 in any case.
  // Blocks of even depth (A's rows read in place pair within a block), evened out.
  const bool scattered_c = c.col.div > 0 && c.col.div % kNR != 0;
  const int64_t max_depth = scattered_c ? max64(t.tile_k, 2 * max_pairs) : t.tile_k;
  const int64_t blocks = div_up(depth, max_depth);
  const int64_t kc = min64(max_depth, div_up(div_up(depth, blocks), 2) * 2);
  float* const pa = pb + panel_cols * div_up(kc, 2);
  if constexpr (std::is_same_v<B, WindowOperand<bf16>>) {
    if (window_gemm_bf16(a, b, c, s, t, i0, j0, d_begin, d_end, kc, end)) return;
  }
  for (int64_t d0 = d_begin; d0 < d_end; d0 += kc) {
    const int64_t kb = min64(kc, d_end - d0), pairs = div_up(kb, 2);
    const bool first = d0 == d_begin;
    pack_pairs<kNR>(b, pb, end, j0, cols, d0, kb);
    if constexpr (std::is_same_v<A, StridedOperand<bf16>>) {
      // Rows of A along the depth are read in place (pairs of an even block never straddle it).
      const bf16* rows_at = kb % 2 == 0 ? a.rows_in_place(i0, d0, kb) : nullptr;
      if (rows_at) {
        multiply_rows_bf16(rows_at, a.wide_stride, reinterpret_cast<const uint32_t*>(pb), kb, rows,
                           cols, reinterpret_cast<bf16*>(pa), c, i0, j0, first);
        continue;
      }
    }
    for (int64_t ib = 0; ib < rows; ib += block_m) {
      const int64_t block_rows = min64(block_m, rows - ib);
      pack_pairs<kMR>(a, pa, end, i0 + ib, block_rows, d0, kb);
      multiply_packed_bf16(reinterpret_cast<const uint32_t*>(pa),
                           reinterpret_cast<const uint32_t*>(pb), pairs, block_rows, cols, c,
                           i0 + ib, j0, first);
    }
  }
}

}  // namespace cpu
}  // namespace porta_ops

#endif
