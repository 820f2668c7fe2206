// bf16 window operands (im2col of x, the gather view of dy) packed straight into depth pairs for
// vdpbf16ps (included at the end of gemm_engine_cpu.h, after the window packing it borrows from).
//
// Going through fp32 (WindowOperand::pack, then pair_depths) cost bf16 as much as fp32 per
// element: each element widened, stored, reloaded and narrowed. Here the 16-bit elements stay
// 16-bit: a strip of consecutive columns (forward, backward data) interleaves two masked 16-bit
// runs, a depth pair, into one row of 32-bit words (for a layer of stride 2, runs of elements
// two apart); a strip of scattered columns whose depths run along memory (backward
// weights' im2col^T) loads each column's 16 consecutive depths, which are already 8 pairs, and
// transposes 8 columns by 8 pairs. The gather views of strided layers go through fp32 as before.
// What the packing waits on is x's lines (short runs the hardware prefetcher does not follow), so
// the reads of the next depth block, which this thread packs next, are prefetched into L2.
// Windows whose strips are runs of x with few taps are not paired into a panel at all where fp32
// reads them in place: window_gemm_bf16 (at the end) pairs them in registers as it reads them.
#pragma once

#if PORTA_GEMM_BF16_DOT

namespace porta_ops {
namespace cpu {

// Bit w set where lane w of a strip (positions hh[w], ww[w]) lies inside the input, w < Width.
template <int Width>
uint32_t strip_lanes(const int64_t* hh, const int64_t* ww, const Inside& in) {
  static_assert(Width % 8 == 0 && Width <= 32, "whole lane groups, a bit per lane");
  uint32_t lanes = 0;
  for (int w = 0; w < Width; w += 8) lanes |= uint32_t(in.lanes8(hh + w, ww + w)) << w;
  return lanes;
}

// row[w] = (odd[w] << 16) | even[w] for w < Width, each of even and odd a strip of up to two runs
// of x (lanes from `split` on read from the second run, `jump` elements further) under its lane
// mask; lanes outside are zero and never read.
template <int Width>
__attribute__((always_inline)) inline void interleave_runs(uint32_t* row, const bf16* even,
                                                           uint32_t even_lanes, const bf16* odd,
                                                           uint32_t odd_lanes, int64_t jump,
                                                           uint32_t from_first) {
  for (int w = 0; w < Width; w += 16) {
    const auto run16 = [&](const bf16* run, uint32_t lanes) {
      const __mmask16 a = static_cast<__mmask16>((lanes & from_first) >> w);
      const __mmask16 b = static_cast<__mmask16>((lanes & ~from_first) >> w);
      return _mm512_cvtepu16_epi32(
          _mm256_mask_loadu_epi16(_mm256_maskz_loadu_epi16(a, run + w), b, run + jump + w));
    };
    const __m512i word =
        _mm512_or_si512(run16(even, even_lanes), _mm512_slli_epi32(run16(odd, odd_lanes), 16));
    _mm512_storeu_si512(row + w, word);
  }
}

// interleave_runs for a strip whose elements lie two apart in runs (a layer of stride 2 across,
// StridedRuns): per 16 lanes and per depth, one masked load per run of the 32 elements they span,
// the mask spread to the even ones, which leaves each lane's element the low half of a 32-bit
// word whose high half is 0.
template <int Width>
__attribute__((always_inline)) inline void interleave_two_apart(uint32_t* row, const bf16* even,
                                                                uint32_t even_lanes,
                                                                const bf16* odd, uint32_t odd_lanes,
                                                                const StridedRuns& runs) {
  for (int w = 0; w < Width; w += 16) {
    const auto evens16 = [&](const bf16* base, uint32_t lanes) {
      __m512i words = _mm512_setzero_si512();
      for (int k = 0; k < runs.count; ++k) {
        const uint32_t spread = spread_to_evens(lanes & runs.lanes[k], w);
        if (spread != 0)
          words = _mm512_mask_loadu_epi16(words, spread, base + runs.from[k] + 2 * w);
      }
      return words;
    };
    const __m512i word =
        _mm512_or_si512(evens16(even, even_lanes), _mm512_slli_epi32(evens16(odd, odd_lanes), 16));
    _mm512_storeu_si512(row + w, word);
  }
}

// Depths of a window panel handled at once (their coordinates live on the stack).
inline constexpr int kDepthChunk = 512;

// 16 consecutive depths of a window operand: n of them in the panel; whether they are up to two
// runs of x (then lanes from `split` on lie `jump` elements further on); the box of their
// positions.
struct DepthBlock {
  int n, split;
  bool runs;
  int64_t jump, h_lo, h_hi, w_lo, w_hi;
};

template <int Width>
void pack_pairs(const WindowOperand<bf16>& x, float* dst, const float* end, int64_t w0, int64_t wn,
                int64_t d0, int64_t dn) {
  static_assert(Width % 16 == 0 && kWindowChunk % Width == 0, "whole vectors and strips");
  if (x.step_h != 1 || x.step_w != 1)
    return pack_pairs_via_fp32<Width>(x, dst, end, w0, wn, d0, dn);
  constexpr int kStrips = kWindowChunk / Width;
  constexpr int64_t kOutside = INT64_MIN / 4;  // a position never inside
  const uint64_t bh = static_cast<uint64_t>(x.bound_h), bw = static_cast<uint64_t>(x.bound_w);
  const int64_t pairs = div_up(dn, 2);
  const bool masks_cached = x.depth.d1 * x.depth.d2 <= kMaskedShifts;
  const bool column_taps_cached = x.wide.d1 * x.wide.d2 <= kMaskedShifts;
  for (int64_t c0 = 0; c0 < wn; c0 += kWindowChunk) {
    const int64_t cn = min64(kWindowChunk, wn - c0);
    const int strips = int(div_up(cn, Width));
    uint32_t* const chunk = reinterpret_cast<uint32_t*>(dst) + (c0 / Width) * Width * pairs;
    // Per column: its offset in x and position, as WindowOperand::pack has them, and its tap
    // (-1 past the panel).
    int64_t off[kWindowChunk], hh[kWindowChunk], ww[kWindowChunk];
    int column_tap[kWindowChunk];
    WindowDigits wd(x.wide, w0 + c0);
    for (int w = 0; w < strips * Width; ++w, wd.next(x.wide)) {
      const WindowCoord u = x.coord(x.wide, wd.o, wd.a, wd.b);
      off[w] = u.off + u.h * x.row + u.w;
      hh[w] = w < cn ? u.h : kOutside;
      ww[w] = u.w;
      column_tap[w] = w < cn ? int(wd.a * x.wide.d2 + wd.b) : -1;
    }
    // A strip of columns consecutive in memory (one run, or two across images) is paired per
    // depth pair; its lane masks depend on the depth only through its tap, cached per tap where
    // there are few. Where they are, so is a strip whose elements lie two apart in runs (a layer
    // of stride 2 across).
    bool runs[kStrips], two_apart[kStrips], scattered = false;
    int split[kStrips];
    StridedRuns strided[kStrips];
    uint32_t tap_lanes[kStrips][kMaskedShifts];
    for (int t = 0; t < strips; ++t) {
      const int f = t * Width;
      const int n = int(min64(Width, cn - f));
      runs[t] = at_most_two_runs(off + f, n, &split[t]);
      two_apart[t] = !runs[t] && masks_cached && runs_two_apart(off + f, n, &strided[t]);
      scattered = scattered || (!runs[t] && !two_apart[t]);
      if (!(runs[t] || two_apart[t]) || !masks_cached) continue;
      for (int64_t a = 0; a < x.depth.d1; ++a) {
        for (int64_t b = 0; b < x.depth.d2; ++b) {
          const WindowCoord v = x.coord(x.depth, 0, a, b);
          tap_lanes[t][a * x.depth.d2 + b] = strip_lanes<Width>(hh + f, ww + f, {v.h, v.w, bh, bw});
        }
      }
    }
    // Depths a chunk at a time (a whole panel's, mostly), and within it strips outside and
    // blocks of 16 depths (8 pairs) inside, so that a strip's reads advance along x (the reads of
    // all strips at one depth block, from as many streams, measured 1.4x slower on backward
    // weights). next_off: the same depth of the next block.
    WindowDigits dd(x.depth, d0), next_dd(x.depth, d0 + dn);
    for (int64_t e0 = 0; e0 < dn; e0 += kDepthChunk) {
      const int en = int(min64(kDepthChunk, dn - e0));
      const int blocks = (en + 15) / 16;
      // Per depth: its offset, position (outside past the chunk), tap and the next block's offset.
      int64_t voff[kDepthChunk], vh[kDepthChunk], vw[kDepthChunk], next_off[kDepthChunk];
      int tap[kDepthChunk];
      for (int i = 0; i < blocks * 16; ++i) {
        const WindowCoord v = x.coord(x.depth, dd.o, dd.a, dd.b);
        const bool in_chunk = i < en;
        tap[i] = int(dd.a * x.depth.d2 + dd.b);
        voff[i] = in_chunk ? v.off + v.h * x.row + v.w : 0;
        vh[i] = in_chunk ? v.h : kOutside;
        vw[i] = v.w;
        const WindowCoord nv = x.coord(x.depth, next_dd.o, next_dd.a, next_dd.b);
        next_off[i] = nv.off + nv.h * x.row + nv.w;
        if (in_chunk) {
          dd.next(x.depth);
          next_dd.next(x.depth);
        }
      }
      // Per block: whether its depths are up to two runs of x (consecutive output positions of
      // one image, then of the next), where the second starts, and the box of their positions.
      DepthBlock block[kDepthChunk / 16];
      uint32_t tap_block_lanes[kDepthChunk / 16][kMaskedShifts];
      for (int k = 0; k < blocks; ++k) {
        DepthBlock& b = block[k];
        const int64_t* o = voff + 16 * k;
        b.n = min64(16, en - 16 * k);
        b.runs = at_most_two_runs(o, b.n, &b.split);
        b.h_lo = b.h_hi = vh[16 * k];
        b.w_lo = b.w_hi = vw[16 * k];
        for (int i = 1; i < b.n; ++i) {
          b.h_lo = min64(b.h_lo, vh[16 * k + i]);
          b.h_hi = max64(b.h_hi, vh[16 * k + i]);
          b.w_lo = min64(b.w_lo, vw[16 * k + i]);
          b.w_hi = max64(b.w_hi, vw[16 * k + i]);
        }
        b.jump = b.split < 16 ? o[b.split] - o[0] - b.split : 0;
        // Scattered columns (backward weights' filter taps (c, r, s)) with few taps share their
        // lanes over the block's depths per tap: worked out once per block, not per column.
        if (!scattered || !column_taps_cached) continue;
        for (int64_t a = 0; a < x.wide.d1; ++a) {
          for (int64_t tb = 0; tb < x.wide.d2; ++tb) {
            const WindowCoord u = x.coord(x.wide, 0, a, tb);
            const Inside in{u.h, u.w, bh, bw};
            const uint32_t low = in.lanes8(vh + 16 * k, vw + 16 * k);
            const uint32_t high = in.lanes8(vh + 16 * k + 8, vw + 16 * k + 8);
            tap_block_lanes[k][a * x.wide.d2 + tb] = low | high << 8;
          }
        }
      }
      for (int t = 0; t < strips; ++t) {
        const int f = t * Width;
        uint32_t* const strip_pairs = chunk + t * Width * pairs + (e0 / 2) * Width;
        if (two_apart[t]) {
          for (int i = 0; i < en; i += 2) {
            const uint32_t odd_lanes = i + 1 < en ? tap_lanes[t][tap[i + 1]] : 0u;
            interleave_two_apart<Width>(strip_pairs + (i / 2) * Width, x.p + off[f] + voff[i],
                                        tap_lanes[t][tap[i]], x.p + off[f] + voff[i + 1], odd_lanes,
                                        strided[t]);
          }
          continue;
        }
        if (runs[t]) {
          // Per depth pair, two masked runs of the strip interleaved.
          const int64_t jump = split[t] < Width ? off[f + split[t]] - off[f] - split[t] : 0;
          const uint32_t from_first = split[t] >= 32 ? ~0u : (1u << split[t]) - 1;
          const auto lanes = [&](int i) {
            if (i >= en) return 0u;
            if (masks_cached) return tap_lanes[t][tap[i]];
            return strip_lanes<Width>(hh + f, ww + f, {vh[i], vw[i], bh, bw});
          };
          for (int i = 0; i < en; i += 2) {
            __builtin_prefetch(x.p + off[f] + next_off[i], 0, 2);
            __builtin_prefetch(x.p + off[f] + next_off[i + 1], 0, 2);
            interleave_runs<Width>(strip_pairs + (i / 2) * Width, x.p + off[f] + voff[i], lanes(i),
                                   x.p + off[f] + voff[i + 1], lanes(i + 1), jump, from_first);
          }
          continue;
        }
        for (int k = 0; k < blocks; ++k) {
          const DepthBlock& b = block[k];
          const int64_t* o = voff + 16 * k;
          const int64_t* h = vh + 16 * k;
          const int64_t* v = vw + 16 * k;
          uint32_t* const out = strip_pairs + 8 * k * Width;
          const int block_pairs = (b.n + 1) / 2;
          if (!b.runs) {  // depths of more than two runs (images of fewer positions than 16)
            for (int q = 0; q < block_pairs; ++q) {
              for (int w = 0; w < Width; ++w) {
                const Inside in{hh[f + w], ww[f + w], bh, bw};
                const int64_t* at = o + 2 * q;
                const uint32_t even = in(h[2 * q], v[2 * q]) ? x.p[off[f + w] + at[0]].bits : 0;
                const uint32_t odd =
                    in(h[2 * q + 1], v[2 * q + 1]) ? x.p[off[f + w] + at[1]].bits : 0;
                out[q * Width + w] = odd << 16 | even;
              }
            }
            continue;
          }
          // Each column's 16 depths as 8 pairs, 8 columns transposed at once. A column whose
          // depths all lie inside (the block's box of positions, shifted by the column's, is
          // inside) is one plain load; others take two masked ones.
          const uint32_t first_run = (1u << b.split) - 1;
          const uint32_t whole =
              b.n == 16 && b.split == 16
                  ? strip_lanes<Width>(hh + f, ww + f, {b.h_lo, b.w_lo, bh, bw}) &
                        strip_lanes<Width>(hh + f, ww + f, {b.h_hi, b.w_hi, bh, bw})
                  : 0;
          if (k % 2 == 0) {  // a line per two blocks, of this block's run and the next's
            for (int c = f; c < f + Width; ++c) {
              __builtin_prefetch(x.p + off[c] + o[0] + 128, 0, 3);
              __builtin_prefetch(x.p + off[c] + next_off[16 * k], 0, 2);
            }
          }
          for (int g = 0; g < Width; g += 8) {
            vfloat8 r[8];
            if (((whole >> g) & 0xFF) == 0xFF) {
              for (int w = 0; w < 8; ++w)
                __builtin_memcpy(&r[w], x.p + off[f + g + w] + o[0], sizeof r[w]);
            } else {
              for (int w = 0; w < 8; ++w) {
                const int c = f + g + w;
                const bf16* run = x.p + off[c] + o[0];
                if ((whole >> (g + w)) & 1) {
                  __builtin_memcpy(&r[w], run, sizeof r[w]);
                  continue;
                }
                uint32_t lanes = 0;
                if (column_taps_cached) {
                  lanes = column_tap[c] < 0 ? 0 : tap_block_lanes[k][column_tap[c]];
                } else {
                  const Inside in{hh[c], ww[c], bh, bw};
                  lanes = uint32_t(in.lanes8(h, v)) | uint32_t(in.lanes8(h + 8, v + 8)) << 8;
                }
                const __m256i e = _mm256_mask_loadu_epi16(
                    _mm256_maskz_loadu_epi16(static_cast<__mmask16>(lanes & first_run), run),
                    static_cast<__mmask16>(lanes & ~first_run), run + b.jump);
                __builtin_memcpy(&r[w], &e, sizeof e);
              }
            }
            if (block_pairs == 8) {
              transpose8x8(r, reinterpret_cast<float*>(out + g), Width);
            } else {  // a last, shorter block: only its pairs
              float rows[8][8];
              transpose8x8(r, &rows[0][0], 8);
              for (int q = 0; q < block_pairs; ++q) {
                __builtin_memcpy(out + q * Width + g, rows[q], sizeof rows[q]);
              }
            }
          }
        }
      }
    }
  }
}

// A conv window whose strips are runs of x, multiplied without pairing it into a panel: the
// fp32 window_gemm's idea (gemm_engine_cpu.h) with depth pairs. A step of vdpbf16ps takes two
// consecutive depths, which are two filter taps of a channel, or a channel's last tap and the
// next one's first where the tap count is odd. So a block's pairs fall into classes that share
// both taps (and so both taps' lane masks): pair q, q + P, q + 2P, ... for P pairs per period of
// lcm(2, taps) depths, each a whole number of channels further on in x. The kernel goes class by
// class with the masks in mask registers; per step it loads the strip at both depths as 32
// 16-bit lanes each and interleaves them with vpunpck{l,h}wd, which pairs lanes within 128-bit
// quarters: the accumulators hold the columns in that order and are put back in order at the end.
struct WindowPairs {
  int64_t even, odd;  // the offsets in x of the class's first pair's depths
  int32_t first, count;
  int even_tap, odd_tap;
  bool odd_last;  // the last pair is the block's odd last depth alone
};

// micro_kernel_bf16 over a strip read from x: A's pair p of row i at a + i * row_bytes +
// p * PairBytes (rows in place: 4; packed: kMR words a pair); the next panel's rows and the
// lines of the strip read next are fetched meanwhile, as window_kernel does.
template <bool TwoRuns, int PairBytes>
__attribute__((target("avx512bf16"), noinline)) void window_kernel_bf16(
    const char* a, int64_t row_bytes, const char* next, int64_t pairs, const bf16* x,
    const bf16* x_next, const WindowStrip& s, const WindowPairs* classes, int nclasses,
    int64_t period, MicroTile& out) {
  static_assert(kNV == 2 && kVL == 16, "an AVX-512 micro-tile");
  const char* row[kMR];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) row[i] = a + i * row_bytes;
  if (next != a) {
    for (int64_t byte = 0; byte < pairs * PairBytes; byte += 64) {
#pragma GCC unroll 16
      for (int i = 0; i < kMR; ++i) __builtin_prefetch(next + i * row_bytes + byte);
    }
  }
  const bf16* const first = x + s.first;
  const int64_t jump = s.jump;
  __m512 c[kMR][kNV];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) c[i][v] = _mm512_setzero_ps();
  for (int k = 0; k < nclasses; ++k) {
    const WindowPairs& q = classes[k];
    const __mmask32 e1 = s.lanes[q.even_tap][0], e2 = s.lanes[q.even_tap][1];
    const __mmask32 o1 = s.lanes[q.odd_tap][0], o2 = s.lanes[q.odd_tap][1];
    const bf16* even = first + q.even;
    const bf16* odd = first + q.odd;
    const bf16* even_next = x_next + q.even;
    const bf16* odd_next = x_next + q.odd + kNR - 1;
    int64_t at = int64_t{q.first} * PairBytes;
    // The pairs with both depths, then the block's odd last depth alone (odd masks of none).
    const int32_t whole = q.count - int32_t(q.odd_last);
    for (int part = 0; part < 2; ++part) {
      const __mmask32 m1 = part == 0 ? o1 : 0, m2 = part == 0 ? o2 : 0;
      const int32_t steps = part == 0 ? whole : q.count - whole;
      for (int32_t n = 0; n < steps; ++n) {
        __builtin_prefetch(even_next);
        __builtin_prefetch(odd_next);
        __m512i ve = _mm512_maskz_loadu_epi16(e1, even);
        __m512i vo = _mm512_maskz_loadu_epi16(m1, odd);
        if constexpr (TwoRuns) {
          ve = _mm512_mask_loadu_epi16(ve, e2, even + jump);
          vo = _mm512_mask_loadu_epi16(vo, m2, odd + jump);
        }
        const __m512bh b0 = (__m512bh)_mm512_unpacklo_epi16(ve, vo);
        const __m512bh b1 = (__m512bh)_mm512_unpackhi_epi16(ve, vo);
#pragma GCC unroll 16
        for (int i = 0; i < kMR; ++i) {
          uint32_t word;
          __builtin_memcpy(&word, row[i] + at, sizeof word);
          const __m512bh ai = (__m512bh)_mm512_set1_epi32(int(word));
          c[i][0] = _mm512_dpbf16_ps(c[i][0], ai, b0);
          c[i][1] = _mm512_dpbf16_ps(c[i][1], ai, b1);
        }
        even += period;
        odd += period;
        even_next += period;
        odd_next += period;
        at += int64_t{nclasses} * PairBytes;  // a class has more than one pair only with all P
      }
    }
  }
  // Lanes l of c[i][0] hold columns 8 * (l / 4) + l % 4, those of c[i][1] the same plus 4.
  const __m512i low = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i high = _mm512_add_epi32(low, _mm512_set1_epi32(8));
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) {
    const __m512 lo = _mm512_permutex2var_ps(c[i][0], low, c[i][1]);
    const __m512 hi = _mm512_permutex2var_ps(c[i][0], high, c[i][1]);
    __builtin_memcpy(&out.v[i][0], &lo, sizeof lo);
    __builtin_memcpy(&out.v[i][1], &hi, sizeof hi);
  }
}

// multiply_window for depth pairs: A's block_rows x kb block in place (InPlace: rows lda apart,
// a partial last panel copied to scratch) or paired into panels (pa).
template <bool InPlace>
__attribute__((noinline)) void multiply_window_bf16(
    const void* a, int64_t lda, const bf16* x, const WindowStrip* strips,
    const WindowPairs* classes, int nclasses, int64_t period, int64_t kb, int64_t block_rows,
    int64_t cols, bf16* scratch, const OutputView& c, int64_t i, int64_t j, bool first) {
  constexpr int kPairBytes = InPlace ? sizeof(uint32_t) : kMR * sizeof(uint32_t);
  const int64_t pairs = div_up(kb, 2);
  const int64_t a_panels = div_up(block_rows, kMR), b_panels = div_up(cols, kNR);
  for (int64_t p = 0; p < a_panels; ++p) {
    const int panel_rows = int(min64(kMR, block_rows - p * kMR));
    const char* panel;
    const char* next;
    int64_t row_bytes;
    if constexpr (InPlace) {
      const bf16* rows = static_cast<const bf16*>(a) + p * kMR * lda;
      const bf16* following = p + 1 < a_panels ? rows + kMR * lda : rows;
      row_bytes = lda * int64_t(sizeof(bf16));
      if (panel_rows < kMR) {
        rows = following = padded_panel(rows, panel_rows, kMR, lda, kb, 1, 0, scratch);
        row_bytes = kb * int64_t(sizeof(bf16));
      }
      panel = reinterpret_cast<const char*>(rows);
      next = reinterpret_cast<const char*>(following);
    } else {
      panel = reinterpret_cast<const char*>(static_cast<const uint32_t*>(a) + p * kMR * pairs);
      next = panel;
      row_bytes = sizeof(uint32_t);
    }
    for_each_strip(c, i + p * kMR, j, panel_rows, cols, first, [&](int64_t q, MicroTile& acc) {
      // The next panel's lines are fetched during the first strip; later strips reread this one.
      const char* ahead = q == 0 ? next : panel;
      const bf16* x_next = x + strips[q + 1 < b_panels ? q + 1 : 0].first;
      if (strips[q].two_runs) {
        window_kernel_bf16<true, kPairBytes>(panel, row_bytes, ahead, pairs, x, x_next, strips[q],
                                             classes, nclasses, period, acc);
      } else {
        window_kernel_bf16<false, kPairBytes>(panel, row_bytes, ahead, pairs, x, x_next, strips[q],
                                              classes, nclasses, period, acc);
      }
    });
  }
}

// window_gemm for bf16 on vdpbf16ps; false where the window is paired into panels instead. With
// no panel of B, A's panel (and the fp32 strips it may be paired from) takes the shared memory up
// to end, so that blocks go deeper than packed_gemm_bf16's of kc: fewer passes over C.
template <class A>
bool window_gemm_bf16(const A& a, const WindowOperand<bf16>& b, const OutputView& c,
                      const GemmShape& s, const GemmTiles& t, int64_t i0, int64_t j0,
                      int64_t d_begin, int64_t d_end, int64_t kc, const float* end) {
  constexpr int64_t kMaxStrips = 8, kMaxRows = 128;  // as window_gemm's
  if (!strips_are_runs(b) || t.tile_n > kMaxStrips * kNR || t.tile_m > kMaxRows) return false;
  const auto [rows, cols, block_m, pa, after_b] = TileWalk(s, t, i0, j0);  // A's panel first
  const int64_t max_depth = max64(kc, 2 * ((end - pa) / (block_m + kMR)));
  const int64_t blocks = div_up(d_end - d_begin, max_depth);
  kc = min64(max_depth, div_up(div_up(d_end - d_begin, blocks), 2) * 2);
  WindowStrip strips[kMaxStrips];
  if (!window_strips(b, j0, cols, strips)) return false;
  // Pairs per period of lcm(2, taps) depths, and the period's elements of x.
  const int64_t taps = b.depth.d1 * b.depth.d2;
  const int period_pairs = int(taps % 2 == 1 ? taps : taps / 2);
  const int64_t period = 2 * period_pairs / taps * b.depth.so;
  WindowPairs classes[kMaskedShifts];
  for (int64_t d0 = d_begin; d0 < d_end; d0 += kc) {
    const int64_t kb = min64(kc, d_end - d0), pairs = div_up(kb, 2);
    const bool first = d0 == d_begin;
    const int nclasses = int(min64(period_pairs, pairs));
    WindowDigits dd(b.depth, d0);
    for (int q = 0; q < nclasses; ++q) {
      WindowPairs& w = classes[q];
      const WindowCoord even = WindowOperand<bf16>::coord(b.depth, dd.o, dd.a, dd.b);
      w.even = even.off + even.h * b.row + even.w;
      w.even_tap = int(dd.a * b.depth.d2 + dd.b);
      dd.next(b.depth);
      const WindowCoord odd = WindowOperand<bf16>::coord(b.depth, dd.o, dd.a, dd.b);
      w.odd = odd.off + odd.h * b.row + odd.w;
      w.odd_tap = int(dd.a * b.depth.d2 + dd.b);
      dd.next(b.depth);
      w.first = q;
      w.count = int32_t((pairs - 1 - q) / period_pairs + 1);
      w.odd_last = kb % 2 == 1 && (pairs - 1) % period_pairs == q;
    }
    if constexpr (std::is_same_v<A, StridedOperand<bf16>>) {
      // Rows of A along the depth are read in place (pairs of an even block never straddle it).
      if (const bf16* rows_at = kb % 2 == 0 ? a.rows_in_place(i0, d0, kb) : nullptr) {
        multiply_window_bf16<true>(rows_at, a.wide_stride, b.p, strips, classes, nclasses, period,
                                   kb, rows, cols, reinterpret_cast<bf16*>(pa), c, i0, j0, first);
        continue;
      }
    }
    for (int64_t ib = 0; ib < rows; ib += block_m) {
      const int64_t block_rows = min64(block_m, rows - ib);
      pack_pairs<kMR>(a, pa, end, i0 + ib, block_rows, d0, kb);
      multiply_window_bf16<false>(pa, 0, b.p, strips, classes, nclasses, period, kb, block_rows,
                                  cols, nullptr, c, i0 + ib, j0, first);
    }
  }
  return true;
}

}  // namespace cpu
}  // namespace porta_ops

#endif
