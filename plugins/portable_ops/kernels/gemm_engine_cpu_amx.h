// The packed path's bf16 GEMM on AMX tiles, for the Xeons that have them (included by
// gemm_engine_cpu.h after gemm_engine_cpu_bf16.h, whose depth pairs it reads).
//
// TDPBF16PS adds into a 16 x 16 fp32 tile the products of a tile of A (16 rows of 16 depth
// pairs, 64 bytes a row) and a tile of B (16 depth pairs of 16 columns, 64 bytes a pair):
// 8192 products an instruction, 2.6-2.7 TFLOP/s a core measured on a loop from L1, against
// 230-239 GFLOP/s for fp32 FMAs on the same core. B's panel is the one the vdpbf16ps path packs
// (pack_pairs: strips of kNR = 32 columns, one pair row of 128 bytes after another), its strips
// padded with zero pairs to whole tiles. A's rows are read along the depth, as the instruction
// reads them: where they lie when a block's depths are one run of memory, in whole tiles; else
// packed, zero past the rows and depths. A step multiplies 32 rows by a strip into four
// accumulator tiles (tiles 0-3; A's in 4-5, B's in 6-7; a last group of at most 16 rows, one A
// tile into two), stored as fp32 micro-tiles
// through store_tile, so alpha, beta, the edges and the later depth blocks go as on every path.
// Products are exact and the sums fp32 in depth order, as elsewhere; the instruction takes
// subnormal inputs as zero and flushes subnormal sums.
#pragma once

#if PORTA_GEMM_BF16_DOT
#define PORTA_GEMM_AMX 1

#include <sys/syscall.h>
#include <unistd.h>

#include <utility>

namespace porta_ops {
namespace cpu {

// Whether to take AMX (asked once): the CPU has the tiles (cpu_has_amx_bf16), and Linux lets the
// process use their state (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, Linux 5.16 and later;
// the permission is the whole process's).
inline bool has_amx_bf16() {
  static const bool yes = [] {
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return cpu_has_amx_bf16() && syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return yes;
}

inline constexpr int64_t kTilePairs = 16;  // depth pairs a tile holds
inline constexpr int64_t kTileRows = 16;   // rows of A a tile holds
inline constexpr int64_t kAmxRows = 32;    // rows of A a step multiplies: two tiles

// Palette 1, eight tiles of 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// 16 rows x 32 depths of an A whose rows lie side by side at each depth (wide_stride 1: a
// transposed A, conv backward data's w^T), as pack_rows_amx lays them out: each depth's 16 rows
// one load, the depths of a pair merged into words, and the 16 x 16 words transposed in
// registers, so that each row's 16 pairs are one store. depth[e] points at depth e's first row.
__attribute__((always_inline)) inline void pack_pairs16(const bf16* const (&depth)[32],
                                                        uint32_t* dst, int64_t pairs) {
  vpair16 v[16];
  for (int p = 0; p < 16; ++p) {
    interleave<vbits16, vpair16>(&depth[2 * p]->bits, &depth[2 * p + 1]->bits, 0xFFFFFFFFu,
                                 reinterpret_cast<uint32_t*>(&v[p]));
  }
  transpose16(v);
  for (int r = 0; r < 16; ++r) __builtin_memcpy(dst + r * pairs, &v[r], sizeof v[r]);
}

// Packs rows [w0, w0 + rows) of A over depths [d0, d0 + kb) as tiles read them: row r at
// dst + r * pairs words, its depths side by side, zero from kb to 2 * pairs and in the rows
// from `rows` to `padded_rows`. Runs of consecutive depths (a matrix stored along the depth, the
// taps of one filter channel) are copied whole; otherwise a depth is read at a time across the
// rows.
inline void pack_rows_amx(const StridedOperand<bf16>& a, uint32_t* dst, int64_t w0, int64_t rows,
                          int64_t padded_rows, int64_t d0, int64_t kb, int64_t pairs) {
  const auto row_at = [&](int64_t r) { return reinterpret_cast<uint16_t*>(dst + r * pairs); };
  constexpr int64_t kMinRun = 8;  // depths; shorter runs (a pointwise filter's) go as strides
  if (a.depth.inner == 1 && (a.depth.div == 0 || a.depth.div >= kMinRun)) {
    // A plain stride is one run, from d0 (hi 0, lo d0 below).
    const int64_t run = a.depth.div > 0 ? a.depth.div : d0 + kb;
    const int64_t outer = a.depth.div > 0 ? a.depth.outer : 0;
    for (int64_t r = 0; r < rows; ++r) {
      const bf16* row = a.p + (w0 + r) * a.wide_stride;
      uint16_t* to = row_at(r);
      for (int64_t d = 0, hi = d0 / run, lo = d0 % run; d < kb; ++hi, lo = 0) {
        const int64_t n = min64(run - lo, kb - d);
        const bf16* from = row + hi * outer + lo;
        // A filter's few taps: one masked copy (lanes past n neither read nor written).
        if (n <= 32) {
          const __mmask32 lanes = static_cast<__mmask32>((uint64_t{1} << n) - 1);
          _mm512_mask_storeu_epi16(to + d, lanes, _mm512_maskz_loadu_epi16(lanes, from));
        } else {
          for (int64_t e = 0; e < n; ++e) to[d + e] = from[e].bits;
        }
        d += n;
      }
    }
  } else {
    int64_t first_row = 0;
    if (a.wide_stride == 1) {
      // 16 rows by 32 depths at a time, transposed in registers; across the rows first, so that
      // each depth's run of A is read along its lines.
      const int64_t whole_rows = rows / 16 * 16, whole_depths = kb / 32 * 32;
      // The next 32 depths' runs are asked for before this 32's are packed: each is a few lines
      // of its own, too short for the hardware prefetcher, and a wait on each in turn.
      SplitCursor ahead(a.depth, d0);
      const bf16 *depth[32], *next[32];
      const auto step = [&] {
        for (int e = 0; e < 32; ++e, ahead.next()) {
          next[e] = a.p + w0 + ahead.offset();
          const char* const run = reinterpret_cast<const char*>(next[e]);
          for (int64_t b = 0; b < whole_rows * 2; b += 64) __builtin_prefetch(run + b);
        }
      };
      if (whole_depths > 0) step();
      for (int64_t d = 0; d < whole_depths; d += 32) {
        for (int e = 0; e < 32; ++e) depth[e] = next[e];
        if (d + 32 < whole_depths) step();
        for (int64_t r = 0; r < whole_rows; r += 16) {
          pack_pairs16(depth, dst + r * pairs + d / 2, pairs);
          for (int e = 0; e < 32; ++e) depth[e] += 16;
        }
      }
      for (int64_t d = whole_depths; d < kb; ++d) {
        const bf16* const at = a.p + w0 + a.depth(d0 + d);
        for (int64_t r = 0; r < whole_rows; ++r) row_at(r)[d] = at[r].bits;
      }
      first_row = whole_rows;
    }
    // 32 rows at a time: their lines being written stay in L1 while the depths go by.
    for (int64_t r0 = first_row; r0 < rows; r0 += kAmxRows) {
      const int64_t r_end = min64(r0 + kAmxRows, rows);
      for (int64_t d = 0; d < kb; ++d) {
        const bf16* depth = a.p + w0 * a.wide_stride + a.depth(d0 + d);
        for (int64_t r = r0; r < r_end; ++r) row_at(r)[d] = depth[r * a.wide_stride].bits;
      }
    }
  }
  for (int64_t r = 0; r < padded_rows; ++r) {
    const int64_t from = r < rows ? kb : 0;
    __builtin_memset(row_at(r) + from, 0, (2 * pairs - from) * sizeof(uint16_t));
  }
}

// Spreads `strips` strips of `pairs` pair rows (pack_pairs' layout) to `padded` pair rows each,
// the new rows zero. The last strip moves first: each lands at or after where it was.
inline void pad_strips(uint32_t* panel, int64_t strips, int64_t pairs, int64_t padded) {
  for (int64_t t = strips - 1; t >= 0; --t) {
    uint32_t* to = panel + t * kNR * padded;
    __builtin_memmove(to, panel + t * kNR * pairs, kNR * pairs * sizeof(uint32_t));
    __builtin_memset(to + kNR * pairs, 0, kNR * (padded - pairs) * sizeof(uint32_t));
  }
}

// C's block_rows x cols at (i, j) from A's rows, a_stride bytes apart (packed by pack_rows_amx,
// padded to a multiple of kTileRows, or in place) and B's padded strips (`pairs` pair rows
// each), `pairs` a multiple of kTilePairs. Strips outer: a strip (pairs x 128 bytes) stays in L1
// for every 32 rows.
__attribute__((target("amx-tile,amx-bf16"), noinline)) inline void multiply_amx(
    const char* pa, int64_t a_stride, const uint32_t* pb, int64_t pairs, int64_t block_rows,
    int64_t cols, const OutputView& c, int64_t i, int64_t j, bool first) {
  static const TileConfig config;
  _tile_loadconfig(&config);
  alignas(64) float sums[kAmxRows][kNR];
  const int64_t b_stride = kNR * sizeof(uint32_t);
  const int64_t strips = div_up(cols, kNR);
  for (int64_t q = 0; q < strips; ++q) {
    const uint32_t* strip = pb + q * kNR * pairs;
    const int strip_cols = int(min64(kNR, cols - q * kNR));
    const TileColumns at(c.col, j + q * kNR, strip_cols);
    for (int64_t r0 = 0; r0 < block_rows; r0 += kAmxRows) {
      const char* rows = pa + r0 * a_stride;
      // A last group of at most 16 rows takes one A tile and two accumulators.
      const bool two_tiles = block_rows - r0 > kTileRows;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t p = 0; p < pairs; p += kTilePairs) {
        _tile_loadd(4, rows + p * sizeof(uint32_t), a_stride);
        _tile_loadd(6, strip + p * kNR, b_stride);
        _tile_loadd(7, strip + p * kNR + kTilePairs, b_stride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        if (two_tiles) {
          _tile_loadd(5, rows + kTileRows * a_stride + p * sizeof(uint32_t), a_stride);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
      }
      constexpr int64_t kRowBytes = kNR * sizeof(float);
      _tile_stored(0, &sums[0][0], kRowBytes);
      _tile_stored(1, &sums[0][kTilePairs], kRowBytes);
      _tile_stored(2, &sums[kTileRows][0], kRowBytes);
      _tile_stored(3, &sums[kTileRows][kTilePairs], kRowBytes);
      for (int64_t m = 0; m < kAmxRows && r0 + m < block_rows; m += kMR) {
        MicroTile tile;
        __builtin_memcpy(&tile, sums[m], sizeof tile);
        store_tile(tile, c, i + r0 + m, j + q * kNR, at, int(min64(kMR, block_rows - r0 - m)),
                   strip_cols, first);
      }
    }
  }
  _tile_release();
}

// packed_gemm for bf16 operands on AMX: the plan's tiles and shared memory, B's panel paired and
// padded, A packed a block of rows at a time or read in place. Blocks go as deep as the room
// allows, in multiples of 32 depths, evened out: up to twice the plan's tile_k (pairs take half
// fp32's room), or without that cap for a plain A stored along the depth, which is read in place
// and so costs nothing deeper, while each block stores C once more (1024^3: one block instead of
// two, 11% faster). False, and nothing done, where the room holds no block of 32 depths.
template <class B>
bool packed_gemm_amx(const StridedOperand<bf16>& a, const B& b, const OutputView& c,
                     const GemmShape& s, const GemmTiles& t, int64_t i0, int64_t j0,
                     int64_t d_begin, int64_t d_end) {
  const auto [rows, cols, block_m, pb, pa_fp32] = TileWalk(s, t, i0, j0);
  const float* const end = pa_fp32 + int64_t{t.block_m} * t.tile_k;
  const int64_t panel_cols = div_up(t.tile_n, kNR) * kNR;
  const int64_t depth = d_end - d_begin;
  // The deepest block beside a block of A's rows: room for B's pairs and A's rows, and for the
  // fp32 strip pack_pairs may stage (2 * kNR words a pair) after B's.
  const int64_t room = end - pb;
  const bool plain = a.depth.div == 0 && a.depth.inner == 1;
  const auto max_pairs_beside = [&](int64_t block) {
    const int64_t room_pairs = room / (panel_cols + max64(block, 2 * kNR));
    return (plain ? room_pairs : min64(room_pairs, t.tile_k)) / kTilePairs * kTilePairs;
  };
  int64_t block = min64(div_up(block_m, kAmxRows), div_up(rows, kAmxRows)) * kAmxRows;
  int64_t max_pairs = max_pairs_beside(block);
  // Rounding the block up to whole tiles may cost a depth block (C stored and read once more,
  // 344 x 256 x 256 in two blocks of 128); one tile of rows fewer then.
  if (const int64_t fewer = max_pairs_beside(block - kAmxRows);
      block > kAmxRows && max_pairs > 0 &&
      div_up(depth, 2 * fewer) < div_up(depth, 2 * max_pairs)) {
    block -= kAmxRows;
    max_pairs = fewer;
  }
  if (max_pairs == 0) return false;
  const int64_t blocks = div_up(depth, 2 * max_pairs);
  const int64_t kc = div_up(div_up(depth, blocks), 2 * kTilePairs) * 2 * kTilePairs;
  uint32_t* const pbw = reinterpret_cast<uint32_t*>(pb);
  uint32_t* const paw = pbw + panel_cols * (kc / 2);
  for (int64_t d0 = d_begin; d0 < d_end; d0 += kc) {
    const int64_t kb = min64(kc, d_end - d0), pairs = div_up(kb, 2);
    const int64_t padded = div_up(pairs, kTilePairs) * kTilePairs;
    const bool first = d0 == d_begin;
    const bool one_run =
        a.depth.inner == 1 && (a.depth.div == 0 || d0 / a.depth.div == (d0 + kb - 1) / a.depth.div);
    pack_pairs<kNR>(b, pb, end, j0, cols, d0, kb);
    if (padded != pairs) pad_strips(pbw, div_up(cols, kNR), pairs, padded);
    for (int64_t ib = 0; ib < rows; ib += block) {
      const int64_t block_rows = min64(block, rows - ib);
      // Rows whose block of depths is one run of memory (a matrix stored along the depth; dy's
      // rows within an image), in whole tiles, are read where they lie.
      if (one_run && kb % (2 * kTilePairs) == 0 && block_rows % kTileRows == 0) {
        const bf16* const at = a.p + (i0 + ib) * a.wide_stride + a.depth(d0);
        multiply_amx(reinterpret_cast<const char*>(at), a.wide_stride * int64_t(sizeof(bf16)), pbw,
                     padded, block_rows, cols, c, i0 + ib, j0, first);
        continue;
      }
      pack_rows_amx(a, paw, i0 + ib, block_rows, div_up(block_rows, kTileRows) * kTileRows, d0, kb,
                    padded);
      multiply_amx(reinterpret_cast<const char*>(paw), padded * int64_t(sizeof(uint32_t)), pbw,
                   padded, block_rows, cols, c, i0 + ib, j0, first);
    }
  }
  return true;
}

}  // namespace cpu
}  // namespace porta_ops

#endif
