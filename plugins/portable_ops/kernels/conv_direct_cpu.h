// 3x3 convolutions of stride 1 and padding 1 ("same") and 1x1 ones (the 3x3 code's centre tap
// alone) on the CPU, fp32 and bf16, as a direct convolution: forward (x and w) and backward data
// (dy and w flipped), both
//   out[n, o, h, w] = sum over i, ty, tx of wp[o, i, ty, tx] * in[n, i, h + ty - 1, w + tx - 1],
// and the forward of 1x1 layers of a stride (s_h, s_w), s_w at most kDirectMaxStrideW:
//   out[n, o, h, w] = sum over i of wp[o, i] * in[n, i, h * s_h, w * s_w].
// A micro-tile is up to kPositions outputs of one output row (or of two) by kNR output
// channels: the positions' inputs broadcast, the weights' kNR channels loaded as vectors, the
// sums held in registers over a block of input channels. Each filter tap adds to the positions
// it reaches only, so the taps that fall on the padding are not multiplied (the implicit GEMM's
// window holds them as zeros): 18% of the products of a 7x7 image, 9% of a 14x14. The weights
// are packed once per call (pack_direct_weights), so that a tap's kNR output channels are one
// run per input channel, and tiles of one shape take each channel block four at a time
// (tiles_together), so that its weights are read from L1 by three of them.
#pragma once

#include <type_traits>

#include "gemm_engine.h"

namespace porta_ops::cpu::direct {

// Positions per micro-tile: kPositions x kNV accumulators, kNV weight vectors and a broadcast fill
// the 32 vector registers of AVX-512 (14 x 2 + 3), or the 16 of AVX2 and SSE (6 x 2 + 3).
#if defined(__AVX512F__)
inline constexpr int kPositions = 14;
#else
inline constexpr int kPositions = 6;
#endif
// The filters (Taps): 3x3 taps of padding 1, a 1x1 layer's one (no padding), which is the 3x3
// code's centre tap alone, or kAnyTaps: a filter of any size known at run time, without padding
// (a padded layer's input is copied into planes with the padding around them first).
inline constexpr int kAnyTaps = 0;
inline constexpr int64_t kBlockSteps = kDirectBlockSteps;
// How far ahead a micro-tile fetches its operands, in steps (input channels): a tap's weights
// stream from the L2, and a pointwise layer's inputs, each channel's row read once per tile, from
// memory; a 3x3 layer's rows are read by three taps and the neighbouring tiles, so mostly from the
// cache. Without these a core with two 512-bit FMA units waited on them (docs/decisions.md,
// "Direct convolution on a core with two 512-bit FMA units").
inline constexpr int64_t kWeightsAhead = 16;
template <int Taps>
inline constexpr int64_t kInputsAhead = Taps == 1 ? 48 : 16;
// A filter of any size reads the same few rows (its few input channels) with every tap, from L1.
template <>
inline constexpr int64_t kInputsAhead<kAnyTaps> = 0;

// The step of a micro-tile: sum += an input (broadcast) times a tap's weights for kVL output
// channels. F32Dot: one channel's input by its weights (an FMA). For bf16 the inputs and the
// packed weights are words of two channels (bits 0-15 channel 2p, 16-31 channel 2p + 1), and
// "channel" below means a word: PairDot widens both halves to fp32 (exactly) and adds the two
// products in turn, on any CPU; Bf16Dot adds both in one vdpbf16ps, where the CPU has
// AVX512_BF16 (spelt in assembly so that no function needs a target of its own; the kernels
// take it only where has_bf16_dot() says so).
struct F32Dot {
  using Word = float;
  __attribute__((always_inline)) static void add(vfloat& sum, const float* input, vfloat weights) {
    sum += *input * weights;
  }
};
struct PairDot {
  using Word = uint32_t;
  typedef uint32_t vword __attribute__((vector_size(sizeof(vfloat))));
  __attribute__((always_inline)) static vfloat as_floats(vword bits) {
    vfloat v;
    __builtin_memcpy(&v, &bits, sizeof v);
    return v;
  }
  __attribute__((always_inline)) static void add(vfloat& sum, const uint32_t* input,
                                                 vfloat weights) {
    vword w;
    __builtin_memcpy(&w, &weights, sizeof w);
    sum += half_detail::float_of(*input << 16) * as_floats(w << 16);
    sum += half_detail::float_of(*input & 0xFFFF0000u) * as_floats(w & 0xFFFF0000u);
  }
};
#if defined(PORTA_GEMM_BF16_DOT)
struct Bf16Dot {
  using Word = uint32_t;
  __attribute__((always_inline)) static void add(vfloat& sum, const uint32_t* input,
                                                 vfloat weights) {
    asm("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(sum) : "v"(weights), "m"(*input));
  }
};
#endif

// The packed weights of a filter of taps() taps: per block of kNR output channels (o) and block
// of block_channels() input channels (i0, `count` of them), the taps' runs, each `count` vectors
// of kNR channels,
//   wp[((o / kNR) * in_channels + i0) * taps * kNR + (tap * count + i - i0) * kNR + o % kNR]
// Output channels past the last are zeros, so a micro-tile never reads past the block.
template <int Taps>
struct Packing {
  int64_t in_channels, out_channels;
  int64_t filter_h = 1, filter_w = 1;  // kAnyTaps's

  PORTA_DEVICE_FUNCTION int64_t taps() const {
    return Taps == kAnyTaps ? filter_h * filter_w : Taps;
  }
  // kBlockSteps products: 32 channels of 3x3, 288 of 1x1.
  PORTA_DEVICE_FUNCTION int64_t block_channels() const { return kBlockSteps / taps(); }
  PORTA_DEVICE_FUNCTION int64_t channel_blocks() const {
    return (in_channels + block_channels() - 1) / block_channels();
  }
  PORTA_DEVICE_FUNCTION int64_t output_blocks() const { return (out_channels + kNR - 1) / kNR; }
  template <class Word>
  PORTA_DEVICE_FUNCTION const Word* block(const Word* wp, int64_t output_block, int64_t i0) const {
    return wp + (output_block * in_channels + i0) * taps() * kNR;
  }
};

// A group's output channels (kDirectOutputs) are this many blocks of kNR.
inline constexpr int64_t kBlocksPerGroup = kDirectOutputs / kNR;
static_assert(kDirectOutputs % kNR == 0, "a group's output channels are whole micro-tiles");

// Copies `runs` runs of `length` elements, run_step apart from `first`, to staging (`stride`
// apart), all their lines fetched first: a block of weights as w holds it, before it is written
// across into a packed layout (pack_direct_weights; the Winograd pack's too).
template <class T>
inline void stage_runs(const T* first, int64_t runs, int64_t run_step, int64_t length, T* staging,
                       int64_t stride) {
  for (int64_t r = 0; r < runs; ++r) {
    for (int64_t e = 0; e < length; e += 64 / int64_t{sizeof(T)}) {
      __builtin_prefetch(first + r * run_step + e);
    }
  }
  for (int64_t r = 0; r < runs; ++r) {
    for (int64_t e = 0; e < length; ++e) staging[r * stride + e] = first[r * run_step + e];
  }
}

// Writes a block's packed runs from its staged copy: staging[lane * lane_step + i * channel_step
// + tap of w] for each of `taps` taps of the packed filter (turned round for backward data),
// channel i. fp32 words are the staged floats; bf16 words pair channels 2p and 2p + 1 (`count`
// pairs). The steps are constants where the filter's size is.
template <bool TurnedRound, class T>
__attribute__((always_inline)) inline void write_packed(const T* staging, void* packed,
                                                        int64_t count, int64_t taps,
                                                        int64_t lane_step, int64_t channel_step) {
  constexpr bool kPairs = sizeof(T) == 2;
  using Word = std::conditional_t<kPairs, uint32_t, float>;
  Word* out = static_cast<Word*>(packed);
  for (int64_t tap = 0; tap < taps; ++tap) {
    const T* from = staging + (TurnedRound ? taps - 1 - tap : tap);
    for (int64_t i = 0; i < count; ++i, out += kNR, from += (kPairs ? 2 : 1) * channel_step) {
#pragma GCC unroll 32
      for (int lane = 0; lane < kNR; ++lane) {
        if constexpr (kPairs) {
          out[lane] = uint32_t{from[lane * lane_step]} |
                      uint32_t{from[lane * lane_step + channel_step]} << 16;
        } else {
          out[lane] = from[lane * lane_step];
        }
      }
    }
  }
}

// Packs the part `index` of (group of output channels, channel block) pairs. forward: wp[o, i,
// tap] is w[o, i, tap] (w is K x C x 3 x 3); backward data: w[i, o, 8 - tap], the filter turned
// round and its channels swapped, since dx is dy convolved with that. T is w's element: float,
// or bf16 (uint16_t) packed into words of channel pairs, `channels` being w's input channels
// (p.in_channels the pairs). Each output block's part of w is first copied into `staging` (kNR x
// kBlockSteps words) in the runs w holds it in, all of them fetched ahead at once, then written
// out across it: read across w's rows in place, the pack took three times as long.
template <int Taps, class T>
inline void pack_direct_weights(const Packing<Taps>& p, const T* w, void* wp, bool backward_data,
                                int64_t index, T* staging, int64_t channels) {
  const int64_t block = p.block_channels(), taps = p.taps();
  constexpr int64_t kPerWord = sizeof(T) == 2 ? 2 : 1;
  const int64_t first_block = index / p.channel_blocks() * kBlocksPerGroup;
  const int64_t i0 = (index % p.channel_blocks()) * block;
  const int64_t count = min64(block, p.in_channels - i0);          // words
  const int64_t staged = kPerWord * count;                         // channels staged, zeros too
  const int64_t real = min64(staged, channels - kPerWord * i0);    // of them, w's
  const int64_t end_block = min64(first_block + kBlocksPerGroup, p.output_blocks());
  const int64_t lane_floats = kPerWord * block * taps;  // forward: a lane's run
  const int64_t channel_floats = kNR * taps;            // backward data: a channel's run
  for (int64_t output_block = first_block; output_block < end_block; ++output_block) {
    const int64_t first = output_block * kNR, lanes = min64(kNR, p.out_channels - first);
    // The runs: forward's lane o holds (i, tap) for the block's channels, backward data's
    // channel i the lanes' taps. Lanes past the last output channel, and a pair's missing
    // channel, stage zeros.
    const int64_t runs = backward_data ? real : lanes;
    const int64_t length = backward_data ? lanes * taps : real * taps;
    const int64_t stride = backward_data ? channel_floats : lane_floats;
    const T* run = backward_data ? w + (kPerWord * i0 * p.out_channels + first) * taps
                                 : w + (first * channels + kPerWord * i0) * taps;
    const int64_t run_step = (backward_data ? p.out_channels : channels) * taps;
    stage_runs(run, runs, run_step, length, staging, stride);
    if (lanes < kNR || real < staged) {
      for (int64_t lane = 0; lane < kNR; ++lane) {
        for (int64_t i = lane < lanes ? real : 0; i < staged; ++i) {
          for (int64_t tap = 0; tap < taps; ++tap) {
            staging[backward_data ? i * channel_floats + lane * taps + tap
                                  : lane * lane_floats + i * taps + tap] = T{};
          }
        }
      }
    }
    void* out = static_cast<char*>(wp) +
                ((output_block * p.in_channels + i0) * taps * kNR) * int64_t{sizeof(float)};
    if (backward_data) {
      write_packed<true>(staging, out, count, taps, taps, channel_floats);
    } else {
      write_packed<false>(staging, out, count, taps, lane_floats, taps);
    }
  }
}

// The input as the micro-tiles read it: output (h, w) reads row h * step_down, column w * Step
// of the planes, whose rows are `width` long.
struct DirectInput {
  int64_t width, plane, step_down, step_across;
};

// Plane `index` (image n, channel c) of `in`, height x width, into out's planes of (height + 2 *
// pad_h) x (width + 2 * pad_w), zeros around it: the input a padded layer's filter of any size
// (kAnyTaps) reads, every tap then within it.
inline void pad_plane(const float* in, float* out, int64_t height, int64_t width, int64_t pad_h,
                      int64_t pad_w, int64_t index) {
  const int64_t rows = height + 2 * pad_h, columns = width + 2 * pad_w;
  const float* from = in + index * height * width;
  float* to = out + index * rows * columns;
  for (int64_t r = 0; r < rows; ++r, to += columns) {
    const int64_t h = r - pad_h;
    if (h < 0 || h >= height) {
      for (int64_t q = 0; q < columns; ++q) to[q] = 0.0f;
      continue;
    }
    for (int64_t q = 0; q < pad_w; ++q) to[q] = to[columns - 1 - q] = 0.0f;
    __builtin_memcpy(to + pad_w, from + h * width, width * sizeof(float));
  }
}

// Words of `count` positions `step` apart from e (low halves) and o (high halves, masked by
// odd_mask): step 1 and 2 in vectors, the latter reading the positions as the low halves of the
// run's 32-bit words up to `readable` elements from e and o (an odd run's last one alone).
inline void pair_run(const uint16_t* e, const uint16_t* o, uint32_t odd_mask, int64_t step,
                     int64_t count, int64_t readable, uint32_t* words) {
  int64_t q = 0;
  if (step == 1 && odd_mask == 0) {
    for (; q < count; ++q) words[q] = e[q];
    return;
  }
  if (step == 1) {
    for (; q < count; ++q) words[q] = uint32_t{e[q]} | uint32_t{o[q]} << 16;
    return;
  }
  if (step == 2) {
    for (const int64_t whole = min64(count, readable / 2); q < whole; ++q) {
      uint32_t low, high;
      __builtin_memcpy(&low, e + 2 * q, sizeof low);
      __builtin_memcpy(&high, o + 2 * q, sizeof high);
      words[q] = (low & 0xFFFFu) | (high & odd_mask) << 16;
    }
  }
  for (; q < count; ++q) {
    words[q] = uint32_t{e[q * step]} | (uint32_t{o[q * step]} & odd_mask) << 16;
  }
}

// bf16 inputs as words of channel pairs (Bf16Dot): plane `index` (image n, pair p) of out, rows x
// columns, is in[n, 2p + 1] << 16 | in[n, 2p] at the positions of `in` that the outputs read (a
// strided 1x1 layer's every other one: the pairs then are the outputs' size, read with a step of
// 1), the second 0 past the last of `channels`.
inline void pair_channels(const uint16_t* in, const DirectInput& from, uint32_t* out,
                          int64_t channels, int64_t rows, int64_t columns, int64_t index) {
  const int64_t pairs = (channels + 1) / 2, n = index / pairs, pair = index % pairs;
  const uint16_t* const even = in + (n * channels + 2 * pair) * from.plane;
  // A missing odd channel reads the even one's, masked to 0.
  const bool has_odd = 2 * pair + 1 < channels;
  const uint16_t* const odd = has_odd ? even + from.plane : even;
  const uint32_t odd_mask = has_odd ? 0xFFFFu : 0u;
  uint32_t* const to = out + index * rows * columns;
  if (from.step_across == 1 && from.step_down == 1 && columns == from.width) {  // one run
    return pair_run(even, odd, odd_mask, 1, rows * columns, rows * columns, to);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = r * from.step_down * from.width;
    pair_run(even + row, odd + row, odd_mask, from.step_across, columns, from.width,
             to + r * columns);
  }
}

// One tap over a channel block: in each row r of the micro-tile that RowMask names, positions
// [First, End) add in[i][offset + r * row_step + position * Step] times the tap's weights of
// input channel i. `in` is the block's first channel at the micro-tile's first output.
template <class Dot, int Rows, int Positions, int First, int End, unsigned RowMask, int Taps,
          int Step = 1, class Word = typename Dot::Word>
__attribute__((always_inline)) inline void add_tap(vfloat (&sum)[Rows][Positions][kNV],
                                                   const Word* in, int64_t offset, int64_t row_step,
                                                   int64_t plane, const Word* w, int64_t count) {
  // A pointer per row, so that each broadcast's address is the row's plus a constant.
  const Word* row_in[Rows];
#pragma GCC unroll 2
  for (int r = 0; r < Rows; ++r) row_in[r] = RowMask >> r & 1 ? in + offset + r * row_step : in;
  for (int64_t i = 0; i < count; ++i, w += kNR) {
#pragma GCC unroll 2
    for (int64_t line = 0; line < kNR; line += 64 / int64_t{sizeof(Word)}) {
      __builtin_prefetch(w + kWeightsAhead * kNR + line);
    }
#pragma GCC unroll 2
    for (int r = 0; r < Rows; ++r) {
      if (!(RowMask >> r & 1) || kInputsAhead<Taps> == 0) continue;
      // Every line the positions span (strided, up to three).
      const Word* ahead = row_in[r] + kInputsAhead<Taps> * plane;
#pragma GCC unroll 4
      for (int o = First * Step; o < (End - 1) * Step; o += 64 / int(sizeof(Word))) {
        __builtin_prefetch(ahead + o);
      }
      __builtin_prefetch(ahead + (End - 1) * Step);
    }
    vfloat weights[kNV];
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) __builtin_memcpy(&weights[v], w + v * kVL, sizeof weights[v]);
#pragma GCC unroll 2
    for (int r = 0; r < Rows; ++r) {
      if (!(RowMask >> r & 1)) continue;
#pragma GCC unroll 16
      for (int position = First; position < End; ++position) {
#pragma GCC unroll 4
        for (int v = 0; v < kNV; ++v) {
          Dot::add(sum[r][position][v], &row_in[r][position * Step], weights[v]);
        }
      }
      row_in[r] += plane;
    }
  }
}

// The three taps of a filter row (tx = 0, 1, 2) over a channel block, for the rows in RowMask.
// tx = 0 reads one column to the left: the first position's is the padding at the left edge;
// tx = 2 one to the right: the last position's is the padding at the right edge.
template <class Dot, int Rows, int Positions, unsigned RowMask, class Word = typename Dot::Word>
__attribute__((always_inline)) inline void add_filter_row(vfloat (&sum)[Rows][Positions][kNV],
                                                          const Word* in, int64_t offset,
                                                          int64_t row_step, int64_t plane,
                                                          const Word* w, int64_t count, bool left,
                                                          bool right) {
  if (left) {
    add_tap<Dot, Rows, Positions, 1, Positions, RowMask, 9>(sum, in, offset - 1, row_step, plane, w,
                                                            count);
  } else {
    add_tap<Dot, Rows, Positions, 0, Positions, RowMask, 9>(sum, in, offset - 1, row_step, plane, w,
                                                            count);
  }
  w += count * kNR;
  add_tap<Dot, Rows, Positions, 0, Positions, RowMask, 9>(sum, in, offset, row_step, plane, w,
                                                          count);
  w += count * kNR;
  if (right) {
    add_tap<Dot, Rows, Positions, 0, Positions - 1, RowMask, 9>(sum, in, offset + 1, row_step,
                                                                plane, w, count);
  } else {
    add_tap<Dot, Rows, Positions, 0, Positions, RowMask, 9>(sum, in, offset + 1, row_step, plane, w,
                                                            count);
  }
}

// The geometry of one call: out[n, o, h, w] of out_channels, height x width, from in[n, i, h', w']
// of in_channels (words) as `input` lays it out (a 3x3 layer's of the output's size, step 1),
// Step its step across.
template <class Word, int Taps, int Step = 1>
struct Problem {
  const Word* in;
  const Word* packed;
  float* out;
  Packing<Taps> packing;
  int64_t height, width;
  DirectInput input;
};

// Fetches, for writing, the lines of the Rows x Positions outputs from (row, column) of image n's
// output block, so that the stores at the end of its tile do not wait on them.
template <int Rows, int Positions, class Word, int Taps, int Step>
__attribute__((always_inline)) inline float* tile_output(const Problem<Word, Taps, Step>& p,
                                                         int64_t n, int64_t output_block,
                                                         int64_t row, int64_t column) {
  const int64_t plane = p.height * p.width, first = output_block * kNR;
  const int64_t channels = min64(kNR, p.packing.out_channels - first);
  float* const out = p.out + (n * p.packing.out_channels + first) * plane + row * p.width + column;
  for (int64_t o = 0; o < channels; ++o) {
#pragma GCC unroll 2
    for (int r = 0; r < Rows; ++r) {
      __builtin_prefetch(out + o * plane + r * p.width, 1);
      __builtin_prefetch(out + o * plane + r * p.width + Positions - 1, 1);
    }
  }
  return out;
}

// One channel block (from input channel i0) of the micro-tile of Rows x Positions outputs from
// (row, column) of image n's output block: its sums start from zero in registers and are then
// added to the tile's (`lanes`, set by the first block), so that no sum runs longer than a
// block's 288 products: rounding errors as the implicit GEMM's depth blocks keep them, not as
// one chain over the whole depth.
template <class Dot, int Rows, int Positions, class Word, int Taps, int Step>
__attribute__((always_inline)) inline void add_block(const Problem<Word, Taps, Step>& p, int64_t n,
                                                     int64_t output_block, int64_t row,
                                                     int64_t column, int64_t i0,
                                                     float (&lanes)[Rows][Positions][kNR]) {
  const int64_t plane = p.input.plane, in_channels = p.packing.in_channels;
  const int64_t row_step = p.input.step_down * p.input.width;
  vfloat sum[Rows][Positions][kNV];
#pragma GCC unroll 2
  for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 16
    for (int position = 0; position < Positions; ++position)
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) sum[r][position][v] = vfloat{};
  const int64_t count = min64(p.packing.block_channels(), in_channels - i0);
  const Word* w = p.packing.block(p.packed, output_block, i0);
  const Word* in = p.in + (n * in_channels + i0) * plane + row * row_step + column * Step;
  if constexpr (Taps == 1) {  // every row, every position
    add_tap<Dot, Rows, Positions, 0, Positions, (1u << Rows) - 1, 1, Step>(sum, in, 0, row_step,
                                                                           plane, w, count);
  } else if constexpr (Taps == kAnyTaps) {  // every tap, row and position: no padding
    for (int64_t r = 0; r < p.packing.filter_h; ++r) {
      for (int64_t s = 0; s < p.packing.filter_w; ++s, w += count * kNR) {
        add_tap<Dot, Rows, Positions, 0, Positions, (1u << Rows) - 1, kAnyTaps, Step>(
            sum, in, r * p.input.width + s, row_step, plane, w, count);
      }
    }
  } else {
    static_assert(Step == 1, "3x3 layers of stride 1 only");
    const bool left = column == 0, right = column + Positions == p.width;
    for (int ty = 0; ty < 3; ++ty, w += 3 * count * kNR) {
      // The rows whose input row (row + r + ty - 1) is in the image, not the padding.
      unsigned rows = 0;
      for (int r = 0; r < Rows; ++r) {
        const int64_t in_row = row + r + ty - 1;
        if (in_row >= 0 && in_row < p.height) rows |= 1u << r;
      }
      const int64_t offset = (ty - 1) * p.input.width;
      if (rows == 1) {
        add_filter_row<Dot, Rows, Positions, 1>(sum, in, offset, row_step, plane, w, count, left,
                                                right);
      } else if constexpr (Rows == 2) {
        if (rows == 2) {
          add_filter_row<Dot, 2, Positions, 2>(sum, in, offset, row_step, plane, w, count, left,
                                               right);
        } else if (rows == 3) {
          add_filter_row<Dot, 2, Positions, 3>(sum, in, offset, row_step, plane, w, count, left,
                                               right);
        }
      }
    }
  }
#pragma GCC unroll 2
  for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 16
    for (int position = 0; position < Positions; ++position) {
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) {
        float* to = &lanes[r][position][v * kVL];
        store(to, i0 == 0 ? sum[r][position][v] : load(to) + sum[r][position][v]);
      }
    }
  }
}

// Stores a tile's sums, kNR output channels per position, to the output, which has positions
// along its rows. On AVX-512 each 16 channels of a row's positions are transposed in registers
// and stored a channel at a time, masked to the tile's positions (1-4% faster than an element
// at a time, which the narrower builds keep).
template <int Rows, int Positions, class Word, int Taps, int Step>
__attribute__((always_inline)) inline void store_tile(const Problem<Word, Taps, Step>& p,
                                                      int64_t output_block, float* out,
                                                      const float (&lanes)[Rows][Positions][kNR]) {
  const int64_t plane = p.height * p.width;
  const int64_t channels = min64(kNR, p.packing.out_channels - output_block * kNR);
#if defined(__AVX512F__)
  static_assert(kVL == 16 && Positions <= kVL, "a row of the tile is one transposed block");
  constexpr __mmask16 kPositionLanes = static_cast<__mmask16>((1u << Positions) - 1);
  for (int r = 0; r < Rows; ++r) {
    for (int64_t first = 0; first < channels; first += kVL) {
      vfloat v[kVL];
#pragma GCC unroll 16
      for (int j = 0; j < kVL; ++j) v[j] = j < Positions ? load(&lanes[r][j][first]) : vfloat{};
      transpose16(v);
      float* const to = out + first * plane + r * p.width;
      const int64_t count = min64(kVL, channels - first);
      for (int64_t o = 0; o < count; ++o) {
        _mm512_mask_storeu_ps(to + o * plane, kPositionLanes, v[o]);
      }
    }
  }
#else
  for (int64_t o = 0; o < channels; ++o) {
    for (int r = 0; r < Rows; ++r) {
      for (int position = 0; position < Positions; ++position) {
        out[o * plane + r * p.width + position] = lanes[r][position][o];
      }
    }
  }
#endif
}

// Up to kTogether micro-tiles of one shape (Rows x Positions) of an output block, from (row[t],
// column[t]): the whole depth, each channel block for all of them before the next, so that the
// block's weights (36 KiB) are read from L1 by all but the first tile rather than from L2 by
// each (56x56x64 forward 1.2-1.3x: docs/decisions.md, "Direct convolution: a channel block's
// weights for four tiles"); then their sums stored to the block's output channels. Two rows a
// tile where the image is narrow (7x7: 14 positions, not 7), so that each load of weights feeds
// as many products. A layer has at least one input channel, so at least one block.
inline constexpr int kTogether = 4;

struct Tiles {
  int rows = 0, positions = 0, count = 0;  // the shape, and how many
  int64_t row[kTogether], column[kTogether];
};

template <class Dot, int Rows, int Positions, class Word, int Taps, int Step>
__attribute__((noinline)) void tiles_together(const Problem<Word, Taps, Step>& p, int64_t n,
                                              int64_t output_block, const Tiles& tiles) {
  float* out[kTogether];
  for (int t = 0; t < tiles.count; ++t) {
    out[t] = tile_output<Rows, Positions>(p, n, output_block, tiles.row[t], tiles.column[t]);
  }
  alignas(64) float lanes[kTogether][Rows][Positions][kNR];
  int64_t i0 = 0;
  do {
    for (int t = 0; t < tiles.count; ++t) {
      add_block<Dot, Rows, Positions>(p, n, output_block, tiles.row[t], tiles.column[t], i0,
                                      lanes[t]);
    }
  } while ((i0 += p.packing.block_channels()) < p.packing.in_channels);
  for (int t = 0; t < tiles.count; ++t) {
    store_tile<Rows, Positions>(p, output_block, out[t], lanes[t]);
  }
}

// Calls tiles_together<Dot, Rows, positions> for the tiles' runtime width, up to kPositions /
// Rows.
template <class Dot, int Rows, int Positions = kPositions / Rows, class Word, int Taps, int Step>
inline void tiles_of(const Tiles& tiles, const Problem<Word, Taps, Step>& p, int64_t n,
                     int64_t output_block) {
  if constexpr (Positions > 0) {
    if (tiles.positions == Positions) {
      return tiles_together<Dot, Rows, Positions>(p, n, output_block, tiles);
    }
    tiles_of<Dot, Rows, Positions - 1>(tiles, p, n, output_block);
  }
}

// A group's share: rows [first_row, first_row + rows) of image n in the output channels of
// `group`, in micro-tiles of up to kPositions positions: of one row, or of two where the image
// is at most kPositions / 2 wide. Tiles of one shape go kTogether at a time, in the walk's order
// (across a row, then down).
template <class Dot, class Word, int Taps, int Step>
inline void run_rows(const Problem<Word, Taps, Step>& p, int64_t n, int64_t group,
                     int64_t first_row, int64_t rows) {
  const int64_t end_row = min64(first_row + rows, p.height);
  const int64_t end_block = min64((group + 1) * kBlocksPerGroup, p.packing.output_blocks());
  const bool narrow = 2 * p.width <= kPositions;
  for (int64_t output_block = group * kBlocksPerGroup; output_block < end_block; ++output_block) {
    Tiles together;
    const auto flush = [&] {
      if (together.rows == 2) {
        tiles_of<Dot, 2>(together, p, n, output_block);
      } else if (together.rows == 1) {
        tiles_of<Dot, 1>(together, p, n, output_block);
      }
      together.count = 0;
    };
    const auto add = [&](int tile_rows, int64_t positions, int64_t row, int64_t column) {
      if (together.count > 0 && (tile_rows != together.rows || positions != together.positions)) {
        flush();
      }
      together.rows = tile_rows;
      together.positions = static_cast<int>(positions);
      together.row[together.count] = row;
      together.column[together.count] = column;
      if (++together.count == kTogether) flush();
    };
    for (int64_t row = first_row; row < end_row;) {
      if (narrow && row + 1 < end_row) {
        add(2, p.width, row, 0);
        row += 2;
        continue;
      }
      for (int64_t column = 0; column < p.width; column += kPositions) {
        add(1, min64(kPositions, p.width - column), row, column);
      }
      ++row;
    }
    if (together.count > 0) flush();
  }
}

}  // namespace porta_ops::cpu::direct
