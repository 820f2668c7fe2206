// 3x3 convolutions of stride 1 and padding 1 on AVX-512, fp32 or bf16 inputs (widened exactly
// as they are read, the arithmetic fp32), by Winograd's minimal filtering F(4x4, 3x3): forward
// (x and w) and backward data (dy and w turned round, as the direct convolution takes them).
// Each 4 x 4 tile of outputs is
//   Y = A^T [ sum over input channels i of (G g_i G^T) .* (B^T d_i B) ] A
// where d_i is the tile's 6 x 6 window of input channel i (zeros past the edges) and g_i the 3x3
// filter from channel i to the output channel: 36 products per input channel for 16 outputs
// instead of 144. The sums over the channels are 36 small GEMMs, one per transformed point.
//
// A group computes bands of four output rows, one, or several of a narrow image's (up to 14 tiles
// in all): it transforms their windows into its shared memory (V[point][channel][tile], 16 tiles
// a vector, the windows' columns picked out of the rows by permutes), then for each block of 32
// output channels multiplies them by the transformed weights (U, packed once per call by a kernel
// before it: U[block][point][channel][32]) in micro-tiles of up to 14 tiles by 32 channels, the
// shape of the direct convolution's, and transforms each tile's 36 sums back into its 16 outputs,
// stored a row of 16 positions at a time through 16 x 16 transposes. The products are a quarter of
// the direct convolution's; the transforms' additions round a little differently (about 3x the
// direct convolution's difference from a float64 reference, as oneDNN's Winograd kernels).
#pragma once

#include "conv_direct_cpu.h"
#include "gemm_engine.h"

namespace porta_ops::cpu::winograd {

using Layout = WinogradLayout;

inline constexpr int kPoints = Layout::kPoints;
inline constexpr int kLanes = Layout::kLanes;

#if defined(__AVX512F__)
inline constexpr int kMaxTiles = Layout::kMaxTiles;
static_assert(Layout::kOutputs == kNR && kLanes == kVL, "a block of outputs is a micro-tile's");

// Up to 16 lanes of x, dy or w as stored (masked; zeros elsewhere): fp32, or bf16 widened.
__attribute__((always_inline)) inline __m512 load_lanes(__mmask16 lanes, const float* p) {
  return _mm512_maskz_loadu_ps(lanes, p);
}
__attribute__((always_inline)) inline __m512 load_lanes(__mmask16 lanes, const bf16* p) {
  const __m512i bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
}

// 16 lanes gathered from base + index[lane] (masked; zeros elsewhere), fp32 or bf16 widened: a
// bf16 lane reads the 32-bit word from its element, whose upper half is shifted away.
__attribute__((always_inline)) inline __m512 gather_lanes(__mmask16 lanes, __m512i index,
                                                          const float* base) {
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, index, base, 4);
}
__attribute__((always_inline)) inline __m512 gather_lanes(__mmask16 lanes, __m512i index,
                                                          const bf16* base) {
  const __m512i words = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), lanes, index, base, 2);
  return _mm512_castsi512_ps(_mm512_slli_epi32(words, 16));
}

// B^T along one dimension of six vectors: o = B^T d.
__attribute__((always_inline)) inline void input_rows(const __m512 (&d)[6], __m512 (&o)[6]) {
  const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
  o[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
  o[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]));
  o[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3]));
  const __m512 d42 = _mm512_sub_ps(d[4], d[2]), d31 = _mm512_sub_ps(d[3], d[1]);
  o[3] = _mm512_fmadd_ps(two, d31, d42);
  o[4] = _mm512_fnmadd_ps(two, d31, d42);
  o[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
}

// G along one dimension: six vectors from three, o = G g.
__attribute__((always_inline)) inline void filter_rows(const __m512 (&g)[3], __m512 (&o)[6]) {
  const __m512 sixth = _mm512_set1_ps(1.0f / 6), quarter = _mm512_set1_ps(1.0f / 4);
  const __m512 outer = _mm512_add_ps(g[0], g[2]);  // g0 + g2
  o[0] = _mm512_mul_ps(quarter, g[0]);
  o[1] = _mm512_mul_ps(_mm512_set1_ps(-1.0f / 6), _mm512_add_ps(outer, g[1]));
  o[2] = _mm512_mul_ps(sixth, _mm512_sub_ps(g[1], outer));
  // g0 / 24 + g2 / 6 and g1 / 12
  const __m512 even = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 24), g[0], _mm512_mul_ps(sixth, g[2]));
  const __m512 odd = _mm512_mul_ps(_mm512_set1_ps(1.0f / 12), g[1]);
  o[3] = _mm512_add_ps(even, odd);
  o[4] = _mm512_sub_ps(even, odd);
  o[5] = g[2];
}

// Packs the part of U of output block `block` and input channels 32 from i0: u = G g G^T of each
// 3x3 filter g, 16 output channels a vector, point p's of input channel i0 + i at
// u[(p * u_channels + i) * 32]. Forward: g[r][s] = w[o, i, r, s] (w is K x C x 3 x 3), each
// output channel's filters of the block one run of w; backward data: w[i, o, 2 - r, 2 - s], the
// filter turned round and its channels swapped, each input channel's filters of the block one
// run. The runs are staged in `staging` (room for 32 x 32 x 9 floats, direct::stage_runs; bf16
// staged as bf16 and widened as gathered), whose taps the vectors gather. Channels past the last
// output channel are zeros.
template <class T>
void pack_weights(const Layout& l, const T* w, bool backward_data, int64_t block, int64_t i0,
                  float* u, int64_t u_channels, float* room) {
  T* const staging = reinterpret_cast<T*>(room);
  constexpr int64_t kBlock = Layout::kOutputs, kTaps = 9;
  const int64_t o0 = block * kBlock;
  const int64_t inputs = min64(kBlock, l.in_channels - i0),
                outputs = min64(kBlock, l.out_channels - o0);
  // staging[(o * kBlock + i) * 9 + tap]: forward's runs are o's, backward data's i's.
  const int64_t runs = backward_data ? inputs : outputs;
  const int64_t length = (backward_data ? outputs : inputs) * kTaps;
  const T* const first = backward_data ? w + (i0 * l.out_channels + o0) * kTaps
                                       : w + (o0 * l.in_channels + i0) * kTaps;
  const int64_t run_step = (backward_data ? l.out_channels : l.in_channels) * kTaps;
  direct::stage_runs(first, runs, run_step, length, staging, kBlock * kTaps);
  // Lane o of input channel i at staging + (o * kBlock + i) * 9 (forward) or (i * kBlock + o) * 9.
  const int64_t lane_step = (backward_data ? 1 : kBlock) * kTaps;
  const int64_t input_step = (backward_data ? kBlock : 1) * kTaps;
  const __m512i lane =
      _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                         _mm512_set1_epi32(static_cast<int>(lane_step)));
  for (int64_t i = 0; i < inputs; ++i) {
    for (int64_t half = 0; half < kBlock / 16; ++half) {
      const int64_t lanes = min64(16, outputs - 16 * half);
      const __mmask16 real = static_cast<__mmask16>(lanes > 0 ? (1u << lanes) - 1 : 0);
      const T* const base = staging + 16 * half * lane_step + i * input_step;
      __m512 g[3][3];
      for (int r = 0; r < 3; ++r) {
        for (int c = 0; c < 3; ++c) {
          const int tap = backward_data ? (2 - r) * 3 + 2 - c : r * 3 + c;
          g[r][c] = gather_lanes(real, lane, base + tap);
        }
      }
      __m512 gg[6][3];  // G g: rows a, columns c
      for (int c = 0; c < 3; ++c) {
        const __m512 column[3] = {g[0][c], g[1][c], g[2][c]};
        __m512 rows[6];
        filter_rows(column, rows);
        for (int a = 0; a < 6; ++a) gg[a][c] = rows[a];
      }
      for (int a = 0; a < 6; ++a) {
        __m512 point[6];
        filter_rows(gg[a], point);
        for (int b = 0; b < 6; ++b) {
          _mm512_storeu_ps(u + ((a * 6 + b) * u_channels + i) * kBlock + 16 * half, point[b]);
        }
      }
    }
  }
}

// A^T along one dimension: four vectors from six, o = A^T m.
__attribute__((always_inline)) inline void output_rows(const __m512 (&m)[6], __m512 (&o)[4]) {
  const __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
  const __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
  o[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
  o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12);
  o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s34, s12);
  o[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d34, d12), m[5]);
}

// Where transformed rows of 16 lanes (tiles) go: (point, channel) at base + point * point_step +
// channel * 16.
struct Rows {
  float* base;
  int64_t point_step;

  float* at(int64_t point, int64_t channel) const {
    return base + point * point_step + channel * kLanes;
  }
};

// The bands a transform takes together: one, or two of at most kPairedTiles tiles (images at
// most 28 wide) side by side in the lanes, the second's tiles after the first's.
inline constexpr int kPairedTiles = 7;
template <class T>
struct Bands {
  const T* image[2];      // each band's image (its planes of x or dy)
  int64_t band[2];        // the band there
  int count;
};

// Calls transform(bands, j) for `count` bands from band `first` of a launch's (band n of image
// n / per_image, `images` image_size elements apart), two at a time where they have at most
// kPairedTiles tiles; j is the index of the first of them among the `count`.
template <class T, typename Transform>
inline void for_each_pair(const T* images, int64_t image_size, int64_t per_image, int64_t first,
                          int64_t count, int tiles, const Transform& transform) {
  const int64_t together = tiles <= kPairedTiles ? 2 : 1;
  for (int64_t j = 0; j < count; j += together) {
    Bands<T> pair{};
    pair.count = static_cast<int>(min64(together, count - j));
    for (int b = 0; b < pair.count; ++b) {
      pair.image[b] = images + (first + j + b) / per_image * image_size;
      pair.band[b] = (first + j + b) % per_image;
    }
    transform(pair, j);
  }
}

// Where pick_column's lanes come from: lane t takes element 4 t + j of the 32 in (a0, a1) below
// lane `split`, element 4 (t - split) + j of the 32 in (b0, b1) from it on (from_b).
struct Picks {
  __m512i base;
  __mmask16 from_b;

  explicit Picks(int split) : from_b(static_cast<__mmask16>(0xFFFF << split)) {
    const __m512i fourfold = _mm512_slli_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 2);
    base = _mm512_mask_sub_epi32(fourfold, from_b, fourfold, _mm512_set1_epi32(4 * split));
  }
};

// Column j of every tile's window (or tile) by two permutes, as Picks says.
__attribute__((always_inline)) inline __m512 pick_column(const Picks& picks, __m512 a0, __m512 a1,
                                                         __m512 b0, __m512 b1, int j) {
  const __m512i at = _mm512_add_epi32(picks.base, _mm512_set1_epi32(j));
  return _mm512_mask_blend_ps(picks.from_b, _mm512_permutex2var_ps(a0, at, a1),
                              _mm512_permutex2var_ps(b0, at, b1));
}

// A transform's input rows: row 4 band + first_row + r (r < rows) of each band's image, Vectors
// vectors of it from column first_column, masked to the image (zeros past its edges).
template <int Count, int Vectors, class T>
struct BandRows {
  const Bands<T>& bands;
  int64_t plane, width, height, first_row, rows, first_column;
  __mmask16 inside[Vectors];

  BandRows(const Layout& l, const Bands<T>& b, int64_t first_row_, int64_t rows_, int64_t column)
      : bands(b),
        plane(l.height * l.width),
        width(l.width),
        height(l.height),
        first_row(first_row_),
        rows(rows_),
        first_column(column) {
    for (int q = 0; q < Vectors; ++q) {
      unsigned lanes = 0;
      for (int k = 0; k < 16; ++k) {
        const int64_t at = first_column + 16 * q + k;
        if (at >= 0 && at < width) lanes |= 1u << k;
      }
      inside[q] = static_cast<__mmask16>(lanes);
    }
  }

  // Fetches channel c's rows: each channel's are a plane apart, too far for the cache's own
  // prefetch, so a transform fetches those of a channel ahead while it transforms one.
  __attribute__((always_inline)) void prefetch(int64_t c) const {
    for (int b = 0; b < Count; ++b) {
      const T* const ahead = bands.image[b] + c * plane + first_column;
      const int64_t top = 4 * bands.band[b] + first_row;
      for (int64_t row = max64(0, top); row < min64(top + rows, height); ++row) {
        for (int q = 0; q < Vectors; ++q) {
          if (inside[q]) __builtin_prefetch(ahead + row * width + 16 * q);
        }
      }
    }
  }

  // Row r of channel c of each band into v; false where every band's is past the image.
  __attribute__((always_inline)) bool load(int64_t c, int r, __m512 (&v)[Count][Vectors]) const {
    bool any = false;
    for (int b = 0; b < Count; ++b) {
      const int64_t row = 4 * bands.band[b] + first_row + r;
      const bool in_image = row >= 0 && row < height;
      const T* const from = bands.image[b] + c * plane + row * width + first_column;
      for (int q = 0; q < Vectors; ++q) {
        v[b][q] = in_image ? load_lanes(inside[q], from + 16 * q) : __m512{};
      }
      any |= in_image;
    }
    return any;
  }
};

// The 6 x 6 windows of `tiles` tiles from t0 of each band of `bands` (output rows 4 band + [0, 4)
// of its image, in_channels planes), transformed into V.at(point, i)[lane + t] (the second
// band's from lane + tiles), and zeros after them up to lane + stored (lane + stored <= 16).
// Tile t's window has columns 4 t - 1 + [0, 6), picked out of its input rows by permutes: one
// band's rows five vectors from column 4 t0 - 1 (masked to the image), columns 4 and 5 being
// columns 0 and 1 one tile on; two bands' rows two vectors each, their 32 columns holding every
// window of the band's.
template <int Count, class T>
void transform_inputs_of(const Layout& l, const Bands<T>& bands, int64_t t0, int tiles, int lane,
                         int stored, Rows V) {
  constexpr int count = Count;  // bands.count, unrolled
  const __mmask16 written = static_cast<__mmask16>((1u << (count * tiles)) - 1);
  const __mmask16 store = static_cast<__mmask16>((1u << stored) - 1);
  constexpr int vectors = count == 1 ? 5 : 2;  // a band's row
  const BandRows<count, vectors, T> rows(l, bands, -1, 6, 4 * t0 - 1);
  const Picks picks(count == 1 ? 8 : tiles);
  alignas(64) float across[6][6][16];  // [window row][B^T column][tile]
  constexpr int64_t kAhead = 2;        // channels ahead whose rows are fetched
  for (int64_t i = 0; i < l.in_channels; ++i) {
    if (i + kAhead < l.in_channels) rows.prefetch(i + kAhead);
    for (int r = 0; r < 6; ++r) {
      __m512 v[count][vectors];  // [band][vector]
      if (!rows.load(i, r, v)) {
        for (int k = 0; k < 6; ++k) _mm512_store_ps(across[r][k], _mm512_setzero_ps());
        continue;
      }
      __m512 columns[6], t[6];
      if constexpr (count == 1) {
        for (int j = 0; j < 4; ++j) {
          columns[j] = pick_column(picks, v[0][0], v[0][1], v[0][2], v[0][3], j);
        }
        // Columns 4 and 5 are columns 0 and 1 one tile on: the last tile's from v[4].
        const __m512i next = _mm512_castps_si512(v[0][4]);
        columns[4] =
            _mm512_castsi512_ps(_mm512_alignr_epi32(next, _mm512_castps_si512(columns[0]), 1));
        columns[5] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_alignr_epi32(next, next, 1),
                                                             _mm512_castps_si512(columns[1]), 1));
      } else {
        for (int j = 0; j < 6; ++j) {
          columns[j] = pick_column(picks, v[0][0], v[0][1], v[1][0], v[1][1], j);
        }
      }
      input_rows(columns, t);
      for (int k = 0; k < 6; ++k) _mm512_store_ps(across[r][k], t[k]);
    }
    for (int k = 0; k < 6; ++k) {
      __m512 d[6], t[6];
      // The lanes past the tiles read as zeros.
      for (int r = 0; r < 6; ++r) d[r] = _mm512_maskz_load_ps(written, across[r][k]);
      input_rows(d, t);
      for (int a = 0; a < 6; ++a) _mm512_mask_storeu_ps(V.at(a * 6 + k, i) + lane, store, t[a]);
    }
  }
}

// transform_inputs_of for the bands' count.
template <class T>
void transform_inputs(const Layout& l, const Bands<T>& bands, int64_t t0, int tiles, int lane,
                      int stored, Rows V) {
  if (bands.count == 2) return transform_inputs_of<2>(l, bands, t0, tiles, lane, stored, V);
  transform_inputs_of<1>(l, bands, t0, tiles, lane, stored, V);
}

// One point's sums of Tiles tiles and one block of 32 output channels: m[t * 36 * 32 + o] (= or
// +=) sum over i of v[i * 16 + t] * u[i * 32 + o] (v the point's transformed windows, V[point],
// u its transformed weights of the block, m the point's sums in M[tile][point][32]).
template <int Tiles>
__attribute__((noinline)) void multiply_point(const float* v, const float* u, int64_t in_channels,
                                              float* m, bool adds) {
  constexpr int64_t kAhead = 16;  // input channels ahead that U's lines are fetched (from L2)
  __m512 sum[Tiles][2];
#pragma GCC unroll 16
  for (int t = 0; t < Tiles; ++t) sum[t][0] = sum[t][1] = _mm512_setzero_ps();
  for (int64_t i = 0; i < in_channels; ++i, v += kLanes, u += kNR) {
    __builtin_prefetch(u + kAhead * kNR);
    __builtin_prefetch(u + kAhead * kNR + 16);
    const __m512 w0 = _mm512_loadu_ps(u), w1 = _mm512_loadu_ps(u + 16);
#pragma GCC unroll 16
    for (int t = 0; t < Tiles; ++t) {
      const __m512 x = _mm512_set1_ps(v[t]);
      sum[t][0] = _mm512_fmadd_ps(x, w0, sum[t][0]);
      sum[t][1] = _mm512_fmadd_ps(x, w1, sum[t][1]);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < Tiles; ++t) {
    for (int h = 0; h < 2; ++h) {
      float* const to = m + t * kPoints * kNR + 16 * h;
      _mm512_store_ps(to, adds ? _mm512_add_ps(sum[t][h], _mm512_load_ps(to)) : sum[t][h]);
    }
  }
}

// multiply_point for the tiles' runtime count, 1 to kMaxTiles.
template <int Tiles = kMaxTiles>
inline void multiply_point_of(int tiles, const float* v, const float* u, int64_t in_channels,
                              float* m, bool adds) {
  if constexpr (Tiles > 0) {
    if (tiles == Tiles) return multiply_point<Tiles>(v, u, in_channels, m, adds);
    multiply_point_of<Tiles - 1>(tiles, v, u, in_channels, m, adds);
  }
}

// M[(t * 36 + point) * 32 + o] = sum over i of V[point][i][t] * U[point][i][o] for `tiles` tiles
// and one block of 32 output channels (U the block's).
inline void multiply_points(int tiles, const float* V, const float* U, int64_t in_channels,
                            float* M) {
  for (int p = 0; p < kPoints; ++p) {
    multiply_point_of(tiles, V + p * in_channels * kLanes, U + p * in_channels * kNR, in_channels,
                      M + p * kNR, false);
  }
}

// The outputs of tiles t0 + [0, tiles) of the band in output block `block` from their sums M:
// each tile's 16 channels at a time through A^T m A, four tiles' rows (16 positions) gathered,
// transposed and stored a channel at a time, masked to the image.
inline void transform_outputs(const Layout& l, const float* M, int lane, int tiles, float* out,
                              int64_t band, int64_t t0, int64_t block) {
  const int64_t plane = l.height * l.width;
  alignas(64) float rows[4][16][16];  // [output row][position of four tiles][channel]
  for (int half = 0; half < 2; ++half) {
    const int64_t o0 = block * kNR + 16 * half;
    const int64_t channels = min64(16, l.out_channels - o0);
    if (channels <= 0) break;
    for (int first = 0; first < tiles; first += 4) {
      const int count = first + 4 <= tiles ? 4 : tiles - first;
      // Where these tiles' outputs go: output row r (of the band's rows in the image) of
      // channel o0 + o at row_at(r) + o * plane.
      const int64_t column = 4 * (t0 + first);
      const int out_rows = static_cast<int>(min64(4, l.height - 4 * band));
      const auto row_at = [&](int r) {
        return out + o0 * plane + (4 * band + r) * l.width + column;
      };
      // Their lines, fetched for writing while the tiles are transformed: their stores, a line
      // each per channel and row, waited on them from memory (56x56x64 forward 1.40 -> 1.33 ms,
      // backward data 1.38 -> 1.30, 28x28x128 forward 1.27 -> 1.18; fetched a group of tiles
      // ahead, no faster).
      for (int r = 0; r < out_rows; ++r) {
        const float* const to = row_at(r);
        for (int64_t o = 0; o < channels; ++o) {
          __builtin_prefetch(to + o * plane, 1);
          __builtin_prefetch(to + o * plane + 15, 1);
        }
      }
      for (int t = 0; t < count; ++t) {
        __m512 across[6][4];  // A^T along each row of the tile's 6 x 6 sums
        for (int a = 0; a < 6; ++a) {
          __m512 m[6];
          for (int b = 0; b < 6; ++b) {
            const int64_t tile = lane + first + t, p = a * 6 + b;
            m[b] = _mm512_load_ps(M + (tile * kPoints + p) * kNR + 16 * half);
          }
          output_rows(m, across[a]);
        }
        for (int c = 0; c < 4; ++c) {
          const __m512 m[6] = {across[0][c], across[1][c], across[2][c],
                               across[3][c], across[4][c], across[5][c]};
          __m512 y[4];
          output_rows(m, y);
          for (int r = 0; r < 4; ++r) _mm512_store_ps(rows[r][4 * t + c], y[r]);
        }
      }
      const int64_t positions = min64(4 * count, l.width - column);
      const __mmask16 lanes = static_cast<__mmask16>((1u << positions) - 1);
      for (int r = 0; r < out_rows; ++r) {
        __m512 v[16];
        for (int j = 0; j < 16; ++j) v[j] = j < 4 * count ? _mm512_load_ps(rows[r][j]) : __m512{};
        transpose16(v);
        float* const to = row_at(r);
        for (int64_t o = 0; o < channels; ++o) _mm512_mask_storeu_ps(to + o * plane, lanes, v[o]);
      }
    }
  }
}

// The windows of tiles t0 + [0, tiles) of `count` bands from band `first` of the launch (image
// first / bands, band first % bands, and on, across images; count * tiles at most kMaxTiles)
// transformed into V (V[point][channel][16 tiles]) side by side, two bands a transform where they
// are narrow enough.
template <class T>
void transform_band_inputs(const Layout& l, const T* in, int64_t first, int64_t count, int64_t t0,
                           int tiles, float* V) {
  for_each_pair(in, l.in_channels * l.height * l.width, l.bands(), first, count, tiles,
                [&](const Bands<T>& pair, int64_t j) {
                  transform_inputs(l, pair, t0, tiles, static_cast<int>(j) * tiles,
                                   pair.count * tiles, Rows{V, l.in_channels * kLanes});
                });
}

// The outputs of those tiles in output block `block` from their sums M (M[tile][point][32]).
inline void transform_band_outputs(const Layout& l, const float* M, float* out, int64_t first,
                                   int64_t count, int64_t t0, int tiles, int64_t block) {
  const int64_t out_image = l.out_channels * l.height * l.width, bands = l.bands();
  for (int64_t j = 0; j < count; ++j) {
    const int64_t band = first + j;
    transform_outputs(l, M, static_cast<int>(j) * tiles, tiles, out + band / bands * out_image,
                      band % bands, t0, block);
  }
}

// A group's `count` bands from band `first`, whose tiles together are at most kMaxTiles: their
// windows transformed, then each output block's products and outputs. A band of more tiles
// (count 1) goes kMaxTiles tiles at a time. V and M in the group's shared memory
// (Layout::shared_floats).
template <class T>
void run_bands(const Layout& l, const T* in, const float* packed, float* out, int64_t first,
               int64_t count, float* shared) {
  float* const V = shared;
  float* const M = shared + l.transformed_floats();
  const int64_t tiles = l.tiles();
  for (int64_t t0 = 0; t0 < tiles; t0 += kMaxTiles) {
    const int pass = static_cast<int>(min64(kMaxTiles, tiles - t0));
    transform_band_inputs(l, in, first, count, t0, pass, V);
    for (int64_t block = 0; block < l.output_blocks(); ++block) {
      multiply_points(static_cast<int>(count) * pass, V,
                      packed + block * kPoints * l.in_channels * kNR, l.in_channels, M);
      transform_band_outputs(l, M, out, first, count, t0, pass, block);
    }
  }
}

// By points, where U is large and each group's few tiles would read all of it for themselves
// (Layout::slots): the layer goes in three launches through packed_a (Layout::by_points_floats),
// so that each part of U is transformed and used where it stays in the cache: a group per slot
// transforms its bands' windows into the slot's V; a group per kGroupBlocks output blocks
// transforms their weights kGroupChannels input channels at a time into a buffer of its own and
// adds every slot's products over those channels, point by point, to the slots' M (each
// chunk's sums from zero, for the rounding); a group per (slot, output block) transforms M into
// outputs.
template <class T>
void transform_slot_inputs(const Layout& l, const T* in, int64_t slot, float* packed) {
  transform_band_inputs(l, in, slot * l.slot_bands, l.bands_of(slot), 0,
                        static_cast<int>(l.tiles()), l.slot_inputs(packed, slot));
}

template <class T>
void multiply_slots(const Layout& l, const T* w, bool backward_data, int64_t group, float* packed,
                    float* staging) {
  constexpr int64_t kChannels = Layout::kGroupChannels;
  const int64_t b0 = group * Layout::kGroupBlocks;
  const int64_t blocks = min64(Layout::kGroupBlocks, l.output_blocks() - b0);
  const int64_t channels = l.in_channels;
  float* const u = l.group_weights(packed, group);  // [block][point][channel][32]
  for (int64_t i0 = 0; i0 < channels; i0 += kChannels) {
    const int64_t chunk = min64(kChannels, channels - i0);
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t i = 0; i < chunk; i += kNR) {
        pack_weights(l, w, backward_data, b0 + b, i0 + i, u + (b * kPoints * kChannels + i) * kNR,
                     kChannels, staging);
      }
    }
    for (int p = 0; p < kPoints; ++p) {
      for (int64_t slot = 0; slot < l.slots(); ++slot) {
        const int tiles = static_cast<int>(l.bands_of(slot) * l.tiles());
        const float* const v = l.slot_inputs(packed, slot) + (p * channels + i0) * kLanes;
        for (int64_t b = 0; b < blocks; ++b) {
          multiply_point_of(tiles, v, u + (b * kPoints + p) * kChannels * kNR, chunk,
                            l.slot_sums(packed, slot, b0 + b) + p * kNR, i0 > 0);
        }
      }
    }
  }
}

inline void transform_slot_outputs(const Layout& l, int64_t slot, int64_t block, float* packed,
                                   float* out) {
  transform_band_outputs(l, l.slot_sums(packed, slot, block), out, slot * l.slot_bands,
                         l.bands_of(slot), 0, static_cast<int>(l.tiles()), block);
}

// Backward weights: dw = G^T [ sum over the images' tiles of (A dy A^T) .* (B^T d B) ] G for each
// (output channel, input channel), the forward's products turned round (the derivative of
// Y = A^T [U .* V] A in U = G g G^T): for each of the 36 points, a GEMM of K x C over the tiles.
// A group per run of slots transforms a chunk of its slots at a time into a buffer of its own
// (transform_slot: dy's tiles as rows of 16 tiles, x's windows transposed to rows of channels),
// adds their products to sums of its own in micro-tiles of up to 14 output channels by 32
// channels, the forward's shape (multiply_lanes), and transforms the sums into taps
// (unpack_sums); a last launch adds up the runs' taps into dw (add_runs). Or by points, where
// the sums would be large (below). The sums run over every tile of every image, so narrow images
// fill the lanes too: several bands to a slot.
using WeightsLayout = WinogradWeightsLayout;

// A along one dimension: six vectors from four, o = A d.
__attribute__((always_inline)) inline void gradient_rows(const __m512 (&d)[4], __m512 (&o)[6]) {
  const __m512 four = _mm512_set1_ps(4.0f);
  const __m512 s02 = _mm512_add_ps(d[0], d[2]), s13 = _mm512_add_ps(d[1], d[3]);
  const __m512 even = _mm512_fmadd_ps(four, d[2], d[0]);  // d0 + 4 d2
  const __m512 d13 = _mm512_fmadd_ps(four, d[3], d[1]);
  const __m512 odd = _mm512_add_ps(d13, d13);  // 2 d1 + 8 d3
  o[0] = d[0];
  o[1] = _mm512_add_ps(s02, s13);
  o[2] = _mm512_sub_ps(s02, s13);
  o[3] = _mm512_add_ps(even, odd);
  o[4] = _mm512_sub_ps(even, odd);
  o[5] = d[3];
}

// A dy A^T of the 4 x 4 tiles of dy, `tiles` tiles from t0 of each band of `bands` (its image's
// out_channels planes), into D.at(point, k)[lane + t] (the second band's from lane + tiles), zeros
// after them up to lane + stored: each row's vectors from column 4 t0 (masked to the image) give
// column j of every tile by permutes, as transform_inputs's windows.
template <int Count, class T>
void transform_gradients_of(const Layout& l, const Bands<T>& bands, int64_t t0, int tiles, int lane,
                            int stored, Rows D) {
  constexpr int count = Count;  // bands.count, unrolled
  const __mmask16 written = static_cast<__mmask16>((1u << (count * tiles)) - 1);
  const __mmask16 store = static_cast<__mmask16>((1u << stored) - 1);
  constexpr int vectors = count == 1 ? 4 : 2;  // a band's row
  const BandRows<count, vectors, T> rows(l, bands, 0, 4, 4 * t0);
  const Picks picks(count == 1 ? 8 : tiles);
  alignas(64) float across[4][6][16];  // [tile row][A column][tile]
  // Channels ahead whose rows are fetched, as transform_inputs's: four rows a channel, twice its
  // distance (56x56x64 backward weights 1.70-1.74 ms against 1.73-1.82 at two, eight no better).
  constexpr int64_t kAhead = 4;
  for (int64_t k = 0; k < l.out_channels; ++k) {
    if (k + kAhead < l.out_channels) rows.prefetch(k + kAhead);
    for (int r = 0; r < 4; ++r) {
      __m512 v[count][vectors];  // [band][vector]
      if (!rows.load(k, r, v)) {
        for (int b = 0; b < 6; ++b) _mm512_store_ps(across[r][b], _mm512_setzero_ps());
        continue;
      }
      __m512 columns[4], t[6];
      for (int j = 0; j < 4; ++j) {
        if constexpr (count == 1) {
          columns[j] = pick_column(picks, v[0][0], v[0][1], v[0][2], v[0][3], j);
        } else {
          columns[j] = pick_column(picks, v[0][0], v[0][1], v[1][0], v[1][1], j);
        }
      }
      gradient_rows(columns, t);
      for (int b = 0; b < 6; ++b) _mm512_store_ps(across[r][b], t[b]);
    }
    for (int b = 0; b < 6; ++b) {
      __m512 d[4], t[6];
      for (int r = 0; r < 4; ++r) d[r] = _mm512_maskz_load_ps(written, across[r][b]);
      gradient_rows(d, t);
      for (int a = 0; a < 6; ++a) _mm512_mask_storeu_ps(D.at(a * 6 + b, k) + lane, store, t[a]);
    }
  }
}

// transform_gradients_of for the bands' count.
template <class T>
void transform_gradients(const Layout& l, const Bands<T>& bands, int64_t t0, int tiles, int lane,
                         int stored, Rows D) {
  if (bands.count == 2) return transform_gradients_of<2>(l, bands, t0, tiles, lane, stored, D);
  transform_gradients_of<1>(l, bands, t0, tiles, lane, stored, D);
}

// Calls transform(bands, t0, tiles, lane, stored) for the bands of slot `slot`, two at a time
// where they are narrow enough (the pair's images, its pass's first tile and tile count, its
// first lane and the lanes it stores: the last call's fill the slot with zeros after its tiles).
// `images` are x's or dy's planes, `image_size` elements apart.
template <class T, typename Transform>
inline void for_each_band(const WeightsLayout& w, int64_t slot, const T* images, int64_t image_size,
                          const Transform& transform) {
  const int64_t t0 = slot % w.passes() * kLanes;
  const int tiles = static_cast<int>(min64(kLanes, w.tiles() - t0));
  const int64_t first = slot / w.passes() * w.bands_per_slot();
  const int64_t count = min64(w.bands_per_slot(), w.batch * w.bands() - first);
  for_each_pair(images, image_size, w.bands(), first, count, tiles,
                [&](const Bands<T>& pair, int64_t j) {
                  const int lane = static_cast<int>(j) * tiles;
                  const int stored =
                      j + pair.count < count ? pair.count * tiles : static_cast<int>(kLanes) - lane;
                  transform(pair, t0, tiles, lane, stored);
                });
}

// Where x's transformed windows go, transposed to rows of channels: channel c of the row of
// tile t at point p at base + p * point_step + t * row_step + c / 32 * block_step + c % 32.
struct ChannelRows {
  float* base;
  int64_t point_step, row_step, block_step;

  float* at(int p, int64_t t, int64_t c) const {
    return base + p * point_step + t * row_step + c / kNR * block_step + c % kNR;
  }
};

// Slot `slot`'s tiles of dy into rows dy_rows (D.at(point, k), K rows of the slot's 16 tiles a
// point) and its windows of x into x_rows, transposed (the slot's tile t is row t).
template <class T>
void transform_slot(const WeightsLayout& w, const T* x, const T* dy, int64_t slot, Rows dy_rows,
                    ChannelRows x_rows) {
  const Layout l = w.image();
  const int64_t plane = l.height * l.width, channels = l.in_channels;
  for_each_band(w, slot, dy, l.out_channels * plane,
                [&](const Bands<T>& bands, int64_t t0, int tiles, int lane, int stored) {
                  transform_gradients(l, bands, t0, tiles, lane, stored, dy_rows);
                });
  // 16 channels at a time into `block` (rows of tiles), then each point's 16 x 16 transposed.
  // Channels past x's to its last block of 32 are zeros.
  alignas(64) float block[kPoints][16][kLanes];
  for (int64_t b = 0; b < div_up(channels, kNR) * kNR; b += 16) {
    const int64_t count = max64(0, min64(16, channels - b));
    const Layout of_block{l.height, l.width, count, l.out_channels, l.batch, l.slot_bands};
    if (count > 0) {
      for_each_band(w, slot, x + b * plane, l.in_channels * plane,
                    [&](const Bands<T>& bands, int64_t t0, int tiles, int lane, int stored) {
                      transform_inputs(of_block, bands, t0, tiles, lane, stored,
                                       Rows{&block[0][0][0], 16 * kLanes});
                    });
    }
    for (int p = 0; p < kPoints; ++p) {
      __m512 v[16];
      for (int i = 0; i < 16; ++i) v[i] = i < count ? _mm512_load_ps(block[p][i]) : __m512{};
      transpose16(v);
      for (int t = 0; t < 16; ++t) _mm512_store_ps(x_rows.at(p, t, b), v[t]);
    }
  }
}

// m[r][0, 32) (= or +=) sum over `slots` slots' 16 tiles t of d[slot][r][t] times x's row of t,
// v[t][0, 32), for Rows_ output channels r (up to kMaxTiles: 2 Rows_ accumulators, two vectors
// of x and a broadcast of dy fill the 32 vector registers).
template <int Rows_>
__attribute__((noinline)) void multiply_lanes(const float* d, int64_t d_slot_step, const float* v,
                                              int64_t v_step, int64_t slots, float* m,
                                              int64_t m_step, bool adds) {
  __m512 sum[Rows_][2];
#pragma GCC unroll 16
  for (int r = 0; r < Rows_; ++r) sum[r][0] = sum[r][1] = _mm512_setzero_ps();
  // The run's sums that this chunk's are added to, fetched while they are computed: a run's sums
  // outgrow L2 (28x28x128's 2.4 MB), and their lines from L3 kept the store waiting (1.57 ->
  // 1.48 ms; fetched for the first chunk's stores too, no faster).
  if (adds) {
#pragma GCC unroll 16
    for (int r = 0; r < Rows_; ++r) {
      __builtin_prefetch(m + r * m_step, 1);
      __builtin_prefetch(m + r * m_step + 16, 1);
    }
  }
  for (int64_t s = 0; s < slots; ++s, d += d_slot_step) {
    for (int t = 0; t < kLanes; ++t, v += v_step) {
      const __m512 w0 = _mm512_load_ps(v), w1 = _mm512_load_ps(v + 16);
#pragma GCC unroll 16
      for (int r = 0; r < Rows_; ++r) {
        const __m512 g = _mm512_set1_ps(d[r * kLanes + t]);
        sum[r][0] = _mm512_fmadd_ps(g, w0, sum[r][0]);
        sum[r][1] = _mm512_fmadd_ps(g, w1, sum[r][1]);
      }
    }
  }
  // The chunk's sums added to the run's: each rounds over a chunk's products, not the run's.
#pragma GCC unroll 16
  for (int r = 0; r < Rows_; ++r) {
    for (int h = 0; h < 2; ++h) {
      float* const to = m + r * m_step + 16 * h;
      _mm512_storeu_ps(to, adds ? _mm512_add_ps(sum[r][h], _mm512_loadu_ps(to)) : sum[r][h]);
    }
  }
}

// multiply_lanes for the rows' runtime count, 1 to kMaxTiles.
template <int Rows_ = kMaxTiles>
inline void multiply_lanes_of(int rows, const float* d, int64_t d_slot_step, const float* v,
                              int64_t v_step, int64_t slots, float* m, int64_t m_step, bool adds) {
  if constexpr (Rows_ > 0) {
    if (rows == Rows_)
      return multiply_lanes<Rows_>(d, d_slot_step, v, v_step, slots, m, m_step, adds);
    multiply_lanes_of<Rows_ - 1>(rows, d, d_slot_step, v, v_step, slots, m, m_step, adds);
  }
}

// G^T along one dimension: three vectors from six, o = G^T m.
__attribute__((always_inline)) inline void sum_rows(const __m512 (&m)[6], __m512 (&o)[3]) {
  const __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
  const __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
  const __m512 sixth = _mm512_set1_ps(1.0f / 6);
  // m0 / 4 - (m1 + m2) / 6 + (m3 + m4) / 24
  o[0] =
      _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 4), m[0],
                      _mm512_fmsub_ps(_mm512_set1_ps(1.0f / 24), s34, _mm512_mul_ps(sixth, s12)));
  // (m3 - m4) / 12 - (m1 - m2) / 6
  o[1] = _mm512_fmsub_ps(_mm512_set1_ps(1.0f / 12), d34, _mm512_mul_ps(sixth, d12));
  // ((m3 + m4) - (m1 + m2)) / 6 + m5
  o[2] = _mm512_fmadd_ps(sixth, _mm512_sub_ps(s34, s12), m[5]);
}

// Taps from sums, G^T M G for each of `rows` output channels by `channels` channels, 16 channels
// at a time: the sums of (point, row r, channel c) at sums[point * point_step + r * row_step + c],
// the taps of (r, c) at taps[r * taps_row_step + c * 9], as dw's. The nine taps of 16 channels
// (a vector each) are 144 floats in a row there, which nine gathers from a staging of them in
// taps' order fill (scattering each tap: 7x7x512's backward weights by points 13% slower).
inline void unpack_sums(const float* sums, int64_t point_step, int64_t row_step, int64_t rows,
                        int64_t channels, float* taps, int64_t taps_row_step) {
  // Float e of taps' vector j is tap (16 j + e) % 9 of channel (16 j + e) / 9.
  __m512i order[9];
  for (int j = 0; j < 9; ++j) {
    alignas(64) int32_t at[16];
    for (int e = 0; e < 16; ++e) at[e] = (16 * j + e) % 9 * 16 + (16 * j + e) / 9;
    order[j] = _mm512_load_si512(at);
  }
  alignas(64) float staged[9][16];  // [tap][channel]
  for (int64_t k = 0; k < rows; ++k) {
    for (int64_t c0 = 0; c0 < channels; c0 += 16) {
      const float* const m = sums + k * row_step + c0;
      __m512 across[6][3];  // G^T along each row of the 6 x 6 sums
      for (int a = 0; a < 6; ++a) {
        __m512 row[6];
        for (int b = 0; b < 6; ++b) row[b] = _mm512_loadu_ps(m + (a * 6 + b) * point_step);
        sum_rows(row, across[a]);
      }
      for (int s = 0; s < 3; ++s) {
        const __m512 column[6] = {across[0][s], across[1][s], across[2][s],
                                  across[3][s], across[4][s], across[5][s]};
        __m512 out[3];
        sum_rows(column, out);
        for (int r = 0; r < 3; ++r) _mm512_store_ps(staged[r * 3 + s], out[r]);
      }
      const int64_t floats = min64(16, channels - c0) * 9;
      float* const to = taps + k * taps_row_step + c0 * 9;
      for (int j = 0; j < 9 && 16 * j < floats; ++j) {
        const __mmask16 lanes = static_cast<__mmask16>((1u << min64(16, floats - 16 * j)) - 1);
        _mm512_mask_storeu_ps(to + 16 * j, lanes, _mm512_i32gather_ps(order[j], &staged[0][0], 4));
      }
    }
  }
}

// Run `run`'s slots, `chunk` slots at a time: transformed into its buffer, their products added
// to its sums (36 points of K x columns()), stored by the first chunk. Output channels in blocks
// of up to 14, as even as they divide.
template <class T>
void run_weights_group(const WeightsLayout& w, const T* x, const T* dy, int64_t run,
                       float* packed) {
  const int64_t width = w.columns(), out = w.out_channels;
  float* const taps = packed + run * w.group_floats();
  float* const sums = taps + w.taps_floats();
  float* const dy_rows = sums + w.sums_floats();
  float* const x_rows = dy_rows + w.dy_floats();
  const int64_t dy_point_step = w.dy_point_floats(), x_point_step = w.x_point_floats();
  const int64_t row_step = w.x_row_floats();
  const int64_t block_rows = w.block_rows();
  const int64_t first = w.first_slot(run), end = w.first_slot(run + 1);
  for (int64_t s0 = first; s0 < end; s0 += w.chunk) {
    const int64_t count = min64(w.chunk, end - s0);
    for (int64_t j = 0; j < count; ++j) {
      transform_slot(w, x, dy, s0 + j, Rows{dy_rows + j * out * kLanes, dy_point_step},
                     ChannelRows{x_rows + j * kLanes * row_step, x_point_step, row_step, kNR});
    }
    for (int p = 0; p < kPoints; ++p) {
      for (int64_t k0 = 0; k0 < out; k0 += block_rows) {
        const int rows = static_cast<int>(min64(block_rows, out - k0));
        for (int64_t c = 0; c < w.in_channels; c += kNR) {
          multiply_lanes_of(rows, dy_rows + p * dy_point_step + k0 * kLanes, out * kLanes,
                            x_rows + p * x_point_step + c, row_step, count,
                            sums + (p * out + k0) * width + c, width, s0 > first);
        }
      }
    }
  }
  unpack_sums(sums, out * width, width, out, width, taps, width * 9);
}

// dw from the groups' taps: output channel k's filters, the sum of the runs'.
inline void add_runs(const WeightsLayout& w, const float* packed, int64_t k, float* dw) {
  const int64_t floats = w.in_channels * 9, run_step = w.group_floats();
  const float* const taps = packed + k * w.columns() * 9;
  float* const to = dw + k * floats;
  for (int64_t f = 0; f < floats; f += 16) {
    const __mmask16 lanes = static_cast<__mmask16>((1u << min64(16, floats - f)) - 1);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t run = 0; run < w.runs; ++run) {
      sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(lanes, taps + run * run_step + f));
    }
    _mm512_mask_storeu_ps(to + f, lanes, sum);
  }
}

// By points, where one run's sums of every filter would be large (layers of many channels): a
// group per slot transforms its tiles of dy and windows of all of x's channels into packed_a
// (laid out as one run of all slots in one chunk), then a group per block of filters
// (WeightsLayout::block_rows() output channels by group_columns blocks of 32 channels) sums
// every slot's products at each point into its shared memory (kSumChunk slots at a time, each
// chunk's from zero, for the rounding) and transforms them into its taps of dw.
inline constexpr int64_t kSumChunk = 8;

// x's rows by points, from row `first`: each block of 32 channels on its own, a point's rows of
// the block one after another (a block's rows of all points read together, 32 floats apart).
inline ChannelRows by_points_x_rows(const WeightsLayout& w, float* packed, int64_t first) {
  const int64_t point_step = w.chunk * kLanes * kNR;
  return {packed + w.dy_floats() + first * kNR, point_step, kNR, kPoints * point_step};
}

template <class T>
void transform_weights_slot(const WeightsLayout& w, const T* x, const T* dy, int64_t slot,
                            float* packed) {
  transform_slot(w, x, dy, slot, Rows{packed + slot * w.out_channels * kLanes, w.dy_point_floats()},
                 by_points_x_rows(w, packed, slot * kLanes));
}

inline void sum_filter_block(const WeightsLayout& w, int64_t block, const float* packed,
                             float* sums, float* dw) {
  const int64_t out = w.out_channels, slots = w.chunk;
  const int64_t k0 = block % w.row_blocks() * w.block_rows();
  const int64_t c0 = block / w.row_blocks() * w.group_columns * kNR;
  const int64_t columns = min64(w.group_columns, div_up(w.in_channels - c0, kNR));
  const int rows = static_cast<int>(min64(w.block_rows(), out - k0));
  const int64_t block_sums = kPoints * rows * kNR;  // sums of one block of 32 channels
  const float* const dy_rows = packed + k0 * kLanes;
  const ChannelRows x_rows = by_points_x_rows(w, const_cast<float*>(packed), 0);
  for (int p = 0; p < kPoints; ++p) {
    // The next point's rows of dy, from L3 (its rows of x stay in L2 from block to block).
    if (p + 1 < kPoints) {
      for (int64_t s = 0; s < slots; ++s) {
        const float* const next = dy_rows + (p + 1) * w.dy_point_floats() + s * out * kLanes;
        for (int r = 0; r < rows; ++r) __builtin_prefetch(next + r * kLanes);
      }
    }
    // Each block of channels in turn, dy's rows of the point from L1 after the first.
    for (int64_t j = 0; j < columns; ++j) {
      for (int64_t s0 = 0; s0 < slots; s0 += kSumChunk) {
        multiply_lanes_of(rows, dy_rows + p * w.dy_point_floats() + s0 * out * kLanes, out * kLanes,
                          x_rows.at(p, s0 * kLanes, c0 + j * kNR), x_rows.row_step,
                          min64(kSumChunk, slots - s0), sums + j * block_sums + p * rows * kNR, kNR,
                          s0 > 0);
      }
    }
  }
  for (int64_t j = 0; j < columns; ++j) {
    const int64_t c = c0 + j * kNR;
    unpack_sums(sums + j * block_sums, rows * kNR, kNR, rows, min64(kNR, w.in_channels - c),
                dw + (k0 * w.in_channels + c) * 9, w.in_channels * 9);
  }
}

#endif

}  // namespace porta_ops::cpu::winograd
