// bf16 3x3 convolutions of stride 1 and padding 1 on AMX tiles, forward and backward data as a
// direct convolution (ConvArgs::direct_tiles), backward weights from the same padded planes
// (below): no window is built. The input's channels are
// paired into words and each pair's plane padded with a zero border, rows (W + 2) words long, so
// that a tap's view of the input is the plane shifted by (ty - 1) * (W + 2) + tx - 1 words.
// A tile of B is then 16 channel pairs by 16 consecutive positions of the padded plane, loaded
// where it lies (rows a plane apart), and a tile of A the packed weights of 16 output channels
// by those 16 pairs at one tap:
//   C[o, q] += sum over pairs p, taps t of W[o, p, t] * X[p, q + shift(t)]
// over positions q of the padded plane. Positions on the border columns are computed and
// dropped (2 of every W + 2); C's rows are output channels, so each row of a stored tile is a
// run of an output row, stored under a lane mask. A group's 32 output channels and 32 positions
// at a time take the four accumulator tiles over the whole depth (pairs times nine taps); the
// products are exact and summed in fp32, the instruction taking subnormal inputs as zero, as on
// the AMX GEMM (gemm_engine_cpu_amx.h). Without AMX at run time (a kernel library for an older
// level on such a CPU, or Linux's permission refused) the same layout is summed one product at a
// time.
#pragma once

#include "conv_direct_cpu.h"

namespace porta_ops::cpu::direct_tiles {

using Layout = DirectTileLayout;
inline constexpr int64_t kPairs = Layout::kPairs, kLanes = Layout::kLanes, kGuard = Layout::kGuard;
inline constexpr int kTaps = Layout::kTaps;

// The weights' tiles of one (output block, pair block): forward W[o, p, t] pairs w[o, 2p, t] and
// w[o, 2p + 1, t] (w is K x C x 3 x 3); backward data turns the filter round and swaps its
// channels, w[2p, o, 8 - t] and w[2p + 1, o, 8 - t]. Zero past the channels either side. A
// channel's nine taps lie together in w: each pair of them is read once, its taps spread over
// the nine tiles.
inline void pack_weights(const Layout& l, const uint16_t* w, bool backward_data, int64_t block,
                         int64_t pair_block, int64_t channels, uint32_t* words) {
  const int64_t w_in = backward_data ? l.out_channels : channels;  // w's C
  // A channel's taps, and the next channel's, in w.
  const int64_t next_channel = backward_data ? w_in * kTaps : kTaps;
  for (int64_t r = 0; r < kDirectOutputs; ++r) {
    const int64_t o = block * kDirectOutputs + r, o_tile = o / kLanes;
    uint32_t* const row = words + l.tile(o_tile, pair_block, 0) + o % kLanes * kPairs;
    for (int64_t q = 0; q < kPairs; ++q) {
      const int64_t c = 2 * (pair_block * kPairs + q);
      const bool lo = o < l.out_channels && c < channels;
      const bool hi = lo && c + 1 < channels;
      const uint16_t* taps = !lo             ? nullptr
                             : backward_data ? w + (c * w_in + o) * kTaps
                                             : w + (o * w_in + c) * kTaps;
      for (int tap = 0; tap < kTaps; ++tap) {
        const int t = backward_data ? kTaps - 1 - tap : tap;
        row[tap * kLanes * kPairs + q] =
            (lo ? uint32_t{taps[t]} : 0u) | (hi ? uint32_t{taps[t + next_channel]} << 16 : 0u);
      }
    }
  }
}

// A tap's shift in a padded plane of rows `row` elements long: tap (ty, tx) reads the plane
// (ty - 1) rows and (tx - 1) elements from the output's position.
inline int64_t tap_shift(int64_t row, int tap) { return (tap / 3 - 1) * row + tap % 3 - 1; }

// Writes a padded plane of `size` elements (guard, border, height x width image, border, reach
// past it), each element once: fill_row(h, to) writes the image's row h at `to`, the rest is
// zero.
template <class T, class FillRow>
inline void pad_plane(T* plane, int64_t size, int64_t guard, int64_t height, int64_t width,
                      FillRow fill_row) {
  const int64_t row = width + 2;
  // The guard, the top border row and row 0's left border; then each row, its right border and
  // the next row's left one; then the bottom border row's rest and the reach past it.
  T* to = plane + guard + row + 1;
  __builtin_memset(plane, 0, (to - plane) * sizeof(T));
  for (int64_t h = 0; h < height; ++h, to += row) {
    fill_row(h, to);
    to[width] = to[width + 1] = 0;
  }
  __builtin_memset(to, 0, (plane + size - to) * sizeof(T));
}

// Image n's padded plane of pair p from `in` (N x channels x H x W): the image's words paired,
// zero past the channels.
inline void pack_plane(const Layout& l, const uint16_t* in, int64_t channels, int64_t n, int64_t p,
                       uint32_t* words) {
  uint32_t* plane = words + l.input(n, p);
  const int64_t c = 2 * p, hw = l.height * l.width;
  if (c >= channels) {
    __builtin_memset(plane, 0, l.plane() * sizeof(uint32_t));
    return;
  }
  const uint16_t* even = in + (n * channels + c) * hw;
  const uint16_t* odd = c + 1 < channels ? even + hw : nullptr;
  pad_plane(plane, l.plane(), kGuard, l.height, l.width, [&](int64_t h, uint32_t* to) {
    const uint16_t* e = even + h * l.width;
    if (odd) {
      const uint16_t* o = odd + h * l.width;
      for (int64_t x = 0; x < l.width; ++x) to[x] = uint32_t{e[x]} | uint32_t{o[x]} << 16;
    } else {
      for (int64_t x = 0; x < l.width; ++x) to[x] = e[x];
    }
  });
}

// The output rows of positions [q, q + count) of the padded plane: output (h, x) is position
// (h + 1) * (W + 2) + x + 1. Calls store(h, first, end) for each row's lanes [first, end).
template <class Store>
inline void for_each_output_row(const Layout& l, int64_t q, int64_t count, Store store) {
  for (int64_t lane = 0; lane < count;) {
    const int64_t at = q + lane, h = at / l.row() - 1, x = at % l.row() - 1;
    const int64_t row_end = lane + (l.row() - 1 - x);  // the lane past this padded row
    const int64_t first = x < 0 ? lane + 1 : lane, end = min64(row_end - 1, count);
    if (h >= 0 && h < l.height && first < end) store(h, first, end);
    lane = row_end;
  }
}

// The exact fp32 product of two words' halves (half 0: bits 0-15, half 1: bits 16-31).
inline float half_product(uint32_t a, uint32_t b, int half) {
  const uint32_t ah = half ? a & 0xFFFF0000u : a << 16, bh = half ? b & 0xFFFF0000u : b << 16;
  return half_detail::float_of(ah) * half_detail::float_of(bh);
}

// Output rows [h0, h1) of image n, output channels of block `block`, one product at a time.
inline void run_scalar(const Layout& l, const uint32_t* words, float* out, int64_t n, int64_t block,
                       int64_t h0, int64_t h1) {
  const int64_t hw = l.height * l.width;
  for (int64_t o = block * kDirectOutputs; o < min64((block + 1) * kDirectOutputs, l.out_channels);
       ++o) {
    const int64_t o_tile = o / kLanes, r = o % kLanes;
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t x = 0; x < l.width; ++x) {
        const int64_t q = (h + 1) * l.row() + x + 1;
        float sum = 0.0f;
        for (int64_t pb = 0; pb < l.pair_blocks(); ++pb) {
          for (int tap = 0; tap < kTaps; ++tap) {
            const uint32_t* a = words + l.tile(o_tile, pb, tap) + r * kPairs;
            const int64_t at = kGuard + q + tap_shift(l.row(), tap);
            for (int64_t p = 0; p < kPairs; ++p) {
              const uint32_t b = words[l.input(n, pb * kPairs + p) + at];
              sum += half_product(a[p], b, 0);
              sum += half_product(a[p], b, 1);
            }
          }
        }
        out[(n * l.out_channels + o) * hw + h * l.width + x] = sum;
      }
    }
  }
}

#if PORTA_GEMM_AMX
// Output rows [h0, h1) of image n, block `block`'s 32 output channels, on the tiles: 32 positions
// of the padded plane at a time into tiles 0-3 (A's two tiles in 4-5, B's in 6-7).
__attribute__((target("amx-tile,amx-bf16"), noinline)) inline void run_amx(const Layout& l,
                                                                           const uint32_t* words,
                                                                           float* out, int64_t n,
                                                                           int64_t block,
                                                                           int64_t h0, int64_t h1) {
  static const TileConfig config;
  _tile_loadconfig(&config);
  constexpr int64_t kStep = 2 * kLanes;
  const int64_t plane_bytes = l.plane() * int64_t{sizeof(uint32_t)};
  const int64_t a_stride = kPairs * int64_t{sizeof(uint32_t)};
  const int64_t hw = l.height * l.width, first_o = block * kDirectOutputs;
  const int64_t channels = min64(kDirectOutputs, l.out_channels - first_o);
  const uint32_t* const a0 = words + l.tile(2 * block, 0, 0);
  const uint32_t* const a1 = words + l.tile(2 * block + 1, 0, 0);
  const uint32_t* const in = words + l.input(n, 0) + kGuard;
  float* const out_block = out + (n * l.out_channels + first_o) * hw;
  const int64_t q_begin = (h0 + 1) * l.row(), q_end = (h1 + 1) * l.row();
  // A step's sums are stored to the output while the next step's products run: two buffers.
  alignas(64) float sums[2][kDirectOutputs][kStep];
  const auto store = [&](const float(&step)[kDirectOutputs][kStep], int64_t q) {
    for_each_output_row(l, q, min64(kStep, q_end - q), [&](int64_t h, int64_t first, int64_t end) {
      // Lane j of this row's run goes to output column q + j - (h + 1) * (W + 2) - 1.
      const int64_t shift = h * l.width + q - (h + 1) * l.row() - 1;
      for (int64_t half = 0; half < kStep; half += kLanes) {
        const int64_t lo = max64(first, half), hi = min64(end, half + kLanes);
        if (lo >= hi) continue;
        const __mmask16 lanes =
            static_cast<__mmask16>(((1u << (hi - half)) - 1) & ~((1u << (lo - half)) - 1));
        for (int64_t o = 0; o < channels; ++o) {
          // Lanes outside [lo, hi) are masked: neither written nor read as addresses.
          float* const to = out_block + o * hw + shift + half;
          _mm512_mask_storeu_ps(to, lanes, _mm512_load_ps(&step[o][half]));
        }
      }
    });
  };
  for (int64_t q = q_begin, s = 0; q < q_end; q += kStep, s ^= 1) {
    // The lines the step's sums will be stored to, fetched for writing while the tiles multiply:
    // each output channel's run is at most kStep floats from the step's first output.
    const int64_t first_out = max64(0, (q / l.row() - 1) * l.width + max64(0, q % l.row() - 1));
    const int64_t last_out = min64(hw, first_out + kStep) - 1;
    for (int64_t o = 0; o < channels; ++o) {
      const float* const run = out_block + o * hw;
      __builtin_prefetch(run + first_out, 1);
      __builtin_prefetch(run + min64(first_out + kLanes, last_out), 1);
      __builtin_prefetch(run + last_out, 1);
    }
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t pb = 0; pb < l.pair_blocks(); ++pb) {
      const uint32_t* const rows = in + pb * kPairs * l.plane() + q;
      for (int tap = 0; tap < kTaps; ++tap) {
        const uint32_t* b = rows + tap_shift(l.row(), tap);
        const int64_t tile = (pb * kTaps + tap) * kLanes * kPairs;
        _tile_loadd(6, b, plane_bytes);
        _tile_loadd(7, b + kLanes, plane_bytes);
        _tile_loadd(4, a0 + tile, a_stride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a1 + tile, a_stride);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
    if (q > q_begin) store(sums[s ^ 1], q - kStep);
    constexpr int64_t kRowBytes = kStep * sizeof(float);
    _tile_stored(0, &sums[s][0][0], kRowBytes);
    _tile_stored(1, &sums[s][0][kLanes], kRowBytes);
    _tile_stored(2, &sums[s][kLanes][0], kRowBytes);
    _tile_stored(3, &sums[s][kLanes][kLanes], kRowBytes);
  }
  // The last step's sums.
  const int64_t steps = div_up(q_end - q_begin, kStep);
  if (steps > 0) store(sums[(steps - 1) & 1], q_begin + (steps - 1) * kStep);
  _tile_release();
}
#endif

// A group's share as the fp32 direct convolution numbers it: output rows [h0, h1) of image n in
// block `block`'s output channels.
inline void run(const Layout& l, const uint32_t* words, float* out, int64_t n, int64_t block,
                int64_t h0, int64_t h1, bool native) {
#if PORTA_GEMM_AMX
  if (native && has_amx_bf16()) return run_amx(l, words, out, n, block, h0, h1);
#endif
  (void)native;
  run_scalar(l, words, out, n, block, h0, h1);
}

/* ---- Backward weights: dw^T = im2col(x) x dy^T over the padded positions ------------------ */
//
// A tap t's rows of im2col(x) are x's padded planes shifted by t's offset, so a tile of A (16
// channels by 32 positions, 16 pairs of consecutive positions each) loads where it lies, as the
// forward's B does; dy^T is packed into words of two positions by output channel (B's tiles, 16
// pairs by 16 outputs), zero on the border columns, so that the positions computed there add
// nothing. A group takes 16 channels by 32 output channels, all nine taps, over every image's
// positions: a chunk of them at a time, two taps at a time by B's two tiles.

using WeightsLayout = DirectTileWeightsLayout;

// x's padded plane of image n, channel c, in bf16 elements: zero past the channels.
inline void pack_x_plane(const WeightsLayout& l, const uint16_t* x, int64_t n, int64_t c,
                         uint16_t* elements) {
  uint16_t* const plane = elements + l.x(n, c);
  if (c >= l.channels) {
    __builtin_memset(plane, 0, l.plane() * sizeof(uint16_t));
    return;
  }
  const uint16_t* image = x + (n * l.channels + c) * l.height * l.width;
  pad_plane(plane, l.plane(), l.kGuard, l.height, l.width, [&](int64_t h, uint16_t* to) {
    __builtin_memcpy(to, image + h * l.width, l.width * sizeof(uint16_t));
  });
}

// The output position (h * W + x) at padded position q, or -1 on a border column or past the
// image.
inline int64_t output_at(const WeightsLayout& l, int64_t q) {
  const int64_t h = q / l.row() - 1, x = q % l.row() - 1;
  return h < l.height && x >= 0 && x < l.width ? h * l.width + x : -1;
}

// dy^T's 16 position pairs of one step (image n, positions row() + 32 * step on): word (p, k)
// holds dy[n, k] at the pair's two positions, zero on the border columns, past the image and
// past the output channels.
inline void pack_dy_step(const WeightsLayout& l, const uint16_t* dy, int64_t n, int64_t step,
                         uint32_t* words) {
  const int64_t outputs = 32 * l.output_pairs(), hw = l.height * l.width;
  const uint16_t* const image = dy + n * l.out_channels * hw;
  uint32_t* const to = words + l.dy(n, step * (l.kPositions / 2));
  for (int64_t p = 0; p < l.kPositions / 2; ++p) {
    const int64_t q = l.row() + step * l.kPositions + 2 * p;
    const int64_t even = output_at(l, q), odd = output_at(l, q + 1);
    uint32_t* const row = to + p * outputs;
    for (int64_t k = 0; k < outputs; ++k) {
      const uint16_t* at = image + k * hw;
      const bool real = k < l.out_channels;
      row[k] = (real && even >= 0 ? uint32_t{at[even]} : 0u) |
               (real && odd >= 0 ? uint32_t{at[odd]} << 16 : 0u);
    }
  }
}

#if PORTA_GEMM_AMX
// pack_dy_step by vectors, on the AMX CPUs (which all have AVX512_VBMI2): an output channel's 32
// positions of the step are one expanding load of dy's run under the mask of those inside the
// image (the run skips the border columns as the mask does), and 16 channels' words are
// transposed in registers into 16 pair rows. One element a word took a third of the pass.
__attribute__((target("avx512vbmi2"))) inline void pack_dy_step_vectors(const WeightsLayout& l,
                                                                        const uint16_t* dy,
                                                                        int64_t n, int64_t step,
                                                                        uint32_t* words) {
  const int64_t outputs = 32 * l.output_pairs(), hw = l.height * l.width;
  const uint16_t* const image = dy + n * l.out_channels * hw;
  uint32_t* const to = words + l.dy(n, step * (l.kPositions / 2));
  const int64_t q0 = l.row() + step * l.kPositions;
  uint32_t inside = 0;
  int64_t first = 0;
  for (int64_t i = l.kPositions - 1; i >= 0; --i) {
    if (const int64_t at = output_at(l, q0 + i); at >= 0) {
      inside |= 1u << i;
      first = at;
    }
  }
  for (int64_t k0 = 0; k0 < outputs; k0 += 16) {
    vpair16 v[16];
    for (int64_t j = 0; j < 16; ++j) {
      const __m512i run =
          k0 + j < l.out_channels && inside != 0
              ? _mm512_maskz_expandloadu_epi16(inside, image + (k0 + j) * hw + first)
              : _mm512_setzero_si512();
      __builtin_memcpy(&v[j], &run, sizeof run);
    }
    transpose16(v);
    for (int64_t p = 0; p < 16; ++p) __builtin_memcpy(to + p * outputs + k0, &v[p], sizeof v[p]);
  }
}
#endif

// Group `group`'s share: channels c0 + [0, 16) by outputs k0 + [0, 32), all nine taps.
struct WeightsShare {
  int64_t c0, k0;
  WeightsShare(const WeightsLayout& l, int64_t group)
      : c0(group % l.channel_blocks() * 16), k0(group / l.channel_blocks() * 32) {}
};

// dw[k, c, tap] from sums[tap][c - c0][k - k0], inside the layer.
inline void store_weights(const WeightsLayout& l, const WeightsShare& s,
                          const float (&sums)[kTaps][16][32], float* dw) {
  for (int64_t k = 0; k < 32 && s.k0 + k < l.out_channels; ++k) {
    for (int64_t c = 0; c < 16 && s.c0 + c < l.channels; ++c) {
      for (int tap = 0; tap < kTaps; ++tap) {
        dw[((s.k0 + k) * l.channels + s.c0 + c) * kTaps + tap] = sums[tap][c][k];
      }
    }
  }
}

// The share one product at a time, from the same layout.
inline void run_weights_scalar(const WeightsLayout& l, const void* packed, float* dw,
                               int64_t group) {
  const WeightsShare s(l, group);
  const uint16_t* const x = static_cast<const uint16_t*>(packed);
  const uint32_t* const words = static_cast<const uint32_t*>(packed);
  float sums[kTaps][16][32];
  for (int tap = 0; tap < kTaps; ++tap) {
    for (int64_t c = 0; c < 16; ++c) {
      for (int64_t k = 0; k < 32; ++k) {
        float sum = 0.0f;
        for (int64_t n = 0; n < l.batch; ++n) {
          const uint16_t* plane =
              x + l.x(n, s.c0 + c) + l.kGuard + l.row() + tap_shift(l.row(), tap);
          for (int64_t p = 0; p < l.depth() / 2; ++p) {
            const uint32_t pair = uint32_t{plane[2 * p]} | uint32_t{plane[2 * p + 1]} << 16;
            const uint32_t d = words[l.dy(n, p) + s.k0 + k];
            sum += half_product(pair, d, 0);
            sum += half_product(pair, d, 1);
          }
        }
        sums[tap][c][k] = sum;
      }
    }
  }
  store_weights(l, s, sums, dw);
}

#if PORTA_GEMM_AMX
// Steps of positions a chunk: its lines of x (16 planes) and of dy^T stay in L1 while the nine
// taps take them, two at a time into the four accumulators (two taps by two blocks of 16 output
// channels), which are kept in memory between.
inline constexpr int64_t kChunkSteps = 8;

// Taps [t, t + Count) over steps [first, end) of image n: accumulators loaded from and stored
// back to sums[t...] (tap t in 0-1, t + 1 in 2-3), B's tiles in 4 and 7, A's in 5 and 6.
template <int Count>
__attribute__((target("amx-tile,amx-bf16"), always_inline)) inline void add_taps(
    const WeightsLayout& l, const uint16_t* rows, const uint32_t* b, int64_t first, int64_t end,
    int t, float (&sums)[kTaps][16][32]) {
  const int64_t a_stride = l.plane() * int64_t{sizeof(uint16_t)};
  const int64_t b_stride = 32 * l.output_pairs() * int64_t{sizeof(uint32_t)};
  const int64_t pair_words = 32 * l.output_pairs() * (l.kPositions / 2);
  constexpr int64_t kRowBytes = 32 * sizeof(float);
  _tile_loadd(0, &sums[t][0][0], kRowBytes);
  _tile_loadd(1, &sums[t][0][16], kRowBytes);
  if constexpr (Count > 1) {
    _tile_loadd(2, &sums[t + 1][0][0], kRowBytes);
    _tile_loadd(3, &sums[t + 1][0][16], kRowBytes);
  }
  for (int64_t step = first; step < end; ++step) {
    const uint16_t* const a = rows + step * l.kPositions;
    _tile_loadd(4, b + step * pair_words, b_stride);
    _tile_loadd(7, b + step * pair_words + 16, b_stride);
    _tile_loadd(5, a + tap_shift(l.row(), t), a_stride);
    _tile_dpbf16ps(0, 5, 4);
    _tile_dpbf16ps(1, 5, 7);
    if constexpr (Count > 1) {
      _tile_loadd(6, a + tap_shift(l.row(), t + 1), a_stride);
      _tile_dpbf16ps(2, 6, 4);
      _tile_dpbf16ps(3, 6, 7);
    }
  }
  _tile_stored(0, &sums[t][0][0], kRowBytes);
  _tile_stored(1, &sums[t][0][16], kRowBytes);
  if constexpr (Count > 1) {
    _tile_stored(2, &sums[t + 1][0][0], kRowBytes);
    _tile_stored(3, &sums[t + 1][0][16], kRowBytes);
  }
}

__attribute__((target("amx-tile,amx-bf16"), noinline)) inline void run_weights_amx(
    const WeightsLayout& l, const void* packed, float* dw, int64_t group) {
  static const TileConfig config;
  _tile_loadconfig(&config);
  const WeightsShare s(l, group);
  const uint16_t* const x = static_cast<const uint16_t*>(packed);
  const uint32_t* const words = static_cast<const uint32_t*>(packed);
  alignas(64) float sums[kTaps][16][32] = {};
  const int64_t steps = l.steps();
  for (int64_t n = 0; n < l.batch; ++n) {
    const uint16_t* const rows = x + l.x(n, s.c0) + l.kGuard + l.row();
    const uint32_t* const b = words + l.dy(n, 0) + s.k0;
    for (int64_t first = 0; first < steps; first += kChunkSteps) {
      const int64_t end = min64(first + kChunkSteps, steps);
      add_taps<2>(l, rows, b, first, end, 0, sums);
      add_taps<2>(l, rows, b, first, end, 2, sums);
      add_taps<2>(l, rows, b, first, end, 4, sums);
      add_taps<2>(l, rows, b, first, end, 6, sums);
      add_taps<1>(l, rows, b, first, end, 8, sums);
    }
  }
  _tile_release();
  store_weights(l, s, sums, dw);
}
#endif

inline void run_weights(const WeightsLayout& l, const void* packed, float* dw, int64_t group,
                        bool native) {
#if PORTA_GEMM_AMX
  if (native && has_amx_bf16()) return run_weights_amx(l, packed, dw, group);
#endif
  (void)native;
  run_weights_scalar(l, packed, dw, group);
}

}  // namespace porta_ops::cpu::direct_tiles
