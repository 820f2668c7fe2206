// Kernels: 2-D convolution, NCHW, inputs in fp32, f16 or bf16 summed in fp32 into fp32 outputs:
// forward, backward-data and backward-weights, each an implicit GEMM on the engine
// (gemm_engine.h). Nothing is unfolded in memory: the operands (conv.h) compute where each
// element of the virtual im2col matrix (or dy gather) lives. The f16 and bf16 implicit GEMMs are
// in conv_half_kernels.cpp; the CPU's direct and Winograd kernels below take bf16 too.
//   forward:          y[K, (N,P,Q)]  = w[K, (C,R,S)]            x im2col(x)[(C,R,S), (N,P,Q)]
//   backward data:    dx[C, (N,H,W)] = w^T[C, (K,R,S)]          x gather(dy)[(K,R,S), (N,H,W)]
//   backward weights: dw[K, (C,R,S)] = dy[K, (N,P,Q)]           x im2col(x)^T[(N,P,Q), (C,R,S)]
// gather(dy)[(k,r,s), (n,h,w)] = dy[n, k, p, q] where h + pad_h - r * dilation_h = p * stride_h
// (likewise w, q); 0 where no such p, q exists in range. No atomics: each output element is
// summed by one work-group in a fixed order.
#include "conv.h"
#if PORTA_TARGET_CPU
#include "conv_direct_cpu.h"
#include "conv_direct_tiles.h"
#include "conv_winograd_cpu.h"
#endif

using porta_ops::ConvArgs;
using porta_ops::conv::backward_data;
using porta_ops::conv::backward_weights;
using porta_ops::conv::ConvProblem;
using porta_ops::conv::forward;
using porta_ops::conv::run;

// Each pass is one launch planned by plan_gemm (gemm_params.h) for its GEMM sizes, followed by
// its _f32_reduce kernel (same arguments) when the plan splits the depth. The reduction reads
// only the partials and the output, so the f32 one serves every dtype.

// Backward data on the CPU (and 1x1 forward on AVX2) reads the weights packed for all tiles at
// once where the host asked for it (packed_a), rather than packing them again for every column
// tile (backward data) or reading them in place (forward).
PORTA_DEVICE_FUNCTION void run_f32(const ConvProblem<float>& p, const ConvArgs& g) {
#if PORTA_TARGET_CPU
  if (g.packed_a) {
    const porta_ops::cpu::PackedRows a(p.a, g.packed_a, p.shape, g.tiles);
    return porta_ops::run_gemm(a, p.b, p.c, p.shape, g.tiles);
  }
#endif
  run(p, g);
}

// Packs the pass's A (w^T, or w for forward) into packed_a before the pass's kernel (a group per
// row tile and depth block).
PORTA_DEVICE_FUNCTION void pack_weights(const ConvProblem<float>& p, const ConvArgs& g) {
#if PORTA_TARGET_CPU
  porta_ops::cpu::pack_rows_ahead(porta_ops::cpu::PackedRows(p.a, g.packed_a, p.shape, g.tiles),
                                  p.shape, g.tiles);
#else
  (void)p, (void)g;
#endif
}

// The host packs forward's weights ahead only for 1x1 layers on the AVX2 build (8 fp32 lanes:
// conv.cpp); the other builds keep forward's kernel as it was, reading w in place.
PORTA_KERNEL_MAX_GROUP(conv2d_forward_f32, porta_ops::kEngineItems, ConvArgs g, const float* x,
                       const float* w, float* y) {
#if defined(__AVX2__) && !defined(__AVX512F__)
  run_f32(forward(g, x, w, y), g);
#else
  run(forward(g, x, w, y), g);
#endif
}

PORTA_KERNEL(conv2d_forward_f32_pack, ConvArgs g, const float* x, const float* w, float* y) {
  pack_weights(forward(g, x, w, y), g);
}

PORTA_KERNEL(conv2d_forward_f32_reduce, ConvArgs g, const float* x, const float* w, float* y) {
  const ConvProblem<float> p = forward(g, x, w, y);
  porta_ops::reduce_partials(p.c, p.shape, g.tiles);
}

PORTA_KERNEL_MAX_GROUP(conv2d_backward_data_f32, porta_ops::kEngineItems, ConvArgs g,
                       const float* dy, const float* w, float* dx) {
  run_f32(backward_data(g, dy, w, dx), g);
}

PORTA_KERNEL(conv2d_backward_data_f32_pack, ConvArgs g, const float* dy, const float* w,
             float* dx) {
  pack_weights(backward_data(g, dy, w, dx), g);
}

PORTA_KERNEL(conv2d_backward_data_f32_reduce, ConvArgs g, const float* dy, const float* w,
             float* dx) {
  const ConvProblem<float> p = backward_data(g, dy, w, dx);
  porta_ops::reduce_partials(p.c, p.shape, g.tiles);
}

#if PORTA_TARGET_CPU
// Backward data of a strided layer on the CPU (ConvArgs::columns): the columns' GEMM (its
// _reduce where the plan splits the depth), then a group per group_size(1) rows of dx gathering
// them. The f16 and bf16 columns kernels are in conv_half_kernels.cpp; these two serve all.
using porta_ops::conv::backward_data_columns;

PORTA_KERNEL_MAX_GROUP(conv2d_backward_data_f32_columns, porta_ops::kEngineItems, ConvArgs g,
                       const float* dy, const float* w, float* dx) {
  (void)dx;
  run(backward_data_columns(g, dy, w), g);
}

PORTA_KERNEL(conv2d_backward_data_f32_columns_reduce, ConvArgs g, const float* dy, const float* w,
             float* dx) {
  (void)dx;
  const auto p = backward_data_columns(g, dy, w);
  porta_ops::reduce_partials(p.c, p.shape, g.tiles);
}

PORTA_KERNEL(conv2d_backward_data_col2im, ConvArgs g, const float* dy, const float* w, float* dx) {
  (void)dy, (void)w;
  const int64_t first = porta_ops::group_number() * porta::group_size(1);
  const int64_t rows = g.images * g.channels * g.height;
  porta::inner([&](uint32_t, uint32_t r) {
    if (first + r < rows) porta_ops::conv::col2im_row(g, first + r, dx);
  });
}

// The direct convolution of 3x3 layers of stride 1 and padding 1, and of 1x1 layers, strided ones
// forward only (ConvArgs::direct_rows; the filter's taps chosen by g.one_by_one()): a
// _pack_direct kernel packs the weights into packed_a, a group per (kDirectOutputs output
// channels, block of input channels), and for bf16 also pairs the input's channels after them,
// a group per image and pair; then a group per (kDirectOutputs output channels, image,
// direct_rows output rows) convolves. Forward convolves x (C channels) into y (K); backward data
// dy (K) into dx (C) with the filter turned round. bf16 3x3 layers on AMX tiles (direct_tiles)
// pack and convolve as conv_direct_tiles.h lays them out, in the same groups.
namespace direct = porta_ops::cpu::direct;

// Calls body(taps) with the filter's taps as a constant: 1 for a 1x1 layer, 9 for a 3x3 one, and
// with AnyFilter kAnyTaps for any_filter() layers (fp32's only).
template <bool AnyFilter = false, class Body>
PORTA_DEVICE_FUNCTION void with_taps(const ConvArgs& g, Body&& body) {
  if (g.one_by_one()) return body(std::integral_constant<int, 1>{});
  if constexpr (AnyFilter) {
    if (g.any_filter()) return body(std::integral_constant<int, direct::kAnyTaps>{});
  }
  body(std::integral_constant<int, 9>{});
}

template <int Taps>
PORTA_DEVICE_FUNCTION direct::Packing<Taps> direct_packing(const ConvArgs& g, bool backward_data,
                                                           int64_t per_word = 1) {
  const int64_t in_channels = backward_data ? g.out_channels : g.channels;
  return direct::Packing<Taps>{porta_ops::div_up(in_channels, per_word),
                               backward_data ? g.channels : g.out_channels, g.kernel_h, g.kernel_w};
}

template <int Taps>
PORTA_DEVICE_FUNCTION int64_t weight_groups(const direct::Packing<Taps>& packing) {
  return porta_ops::div_up(packing.out_channels, porta_ops::kDirectOutputs) *
         packing.channel_blocks();
}

// This group's share of a direct convolution with out_channels outputs of `height` rows: image
// n, the group of kDirectOutputs output channels, direct_rows rows from `row`; false for the flat
// grid's spares.
struct DirectShare {
  int64_t n, group, row;
};
PORTA_DEVICE_FUNCTION bool direct_share(const ConvArgs& g, int64_t out_channels, int64_t height,
                                        DirectShare* s) {
  const int64_t chunks = porta_ops::div_up(height, g.direct_rows);
  const int64_t groups = porta_ops::div_up(out_channels, porta_ops::kDirectOutputs);
  const int64_t index = porta_ops::group_number();
  if (index >= groups * g.batch * chunks) return false;
  const int64_t chunk = index % chunks, rest = index / chunks;
  s->n = g.direct_by_image ? rest / groups : rest % g.batch;
  s->group = g.direct_by_image ? rest % groups : rest / g.batch;
  s->row = chunk * g.direct_rows;
  return true;
}

// fp32's input as it lies: forward's x, a 1x1 layer's outputs stride_h rows and stride_w columns
// apart in it; backward data's dy.
PORTA_DEVICE_FUNCTION direct::DirectInput direct_input(const ConvArgs& g, bool backward_data) {
  if (backward_data) return {g.out_w, g.out_h * g.out_w, 1, 1};
  return {g.width, g.height * g.width, g.stride_h, g.stride_w};
}

// The outputs of this group's share, from `in` laid out as `input` (its step across a constant
// of the micro-tiles: 1, or a strided layer's 2).
template <class Dot, class Word, int Taps>
PORTA_DEVICE_FUNCTION void run_direct(const ConvArgs& g, const Word* in,
                                      const direct::DirectInput& input, const Word* packed,
                                      float* out, const direct::Packing<Taps>& packing,
                                      bool backward_data) {
  const int64_t height = g.direct_out_rows(backward_data);
  DirectShare s;
  if (!direct_share(g, packing.out_channels, height, &s)) return;
  const auto run = [&](auto step) {
    const direct::Problem<Word, Taps, step.value> p{
        in, packed, out, packing, height, g.direct_out_columns(backward_data), input};
    direct::run_rows<Dot>(p, s.n, s.group, s.row, g.direct_rows);
  };
  // bf16 reads its copy of the positions read, a step of 1 (copied_input).
  if constexpr (std::is_same_v<Word, float> && (Taps == 1 || Taps == direct::kAnyTaps)) {
    static_assert(porta_ops::kDirectMaxStrideW == 2, "a step across for each stride");
    if (input.step_across == 2) return run(std::integral_constant<int, 2>{});
  }
  run(std::integral_constant<int, 1>{});
}

// The input copy after the packed weights in packed_a, laid out as copied_input: bf16's channel
// pairs, or a padded any_filter() layer's planes (fp32).
template <int Taps>
PORTA_DEVICE_FUNCTION float* input_copy(const ConvArgs& g, const direct::Packing<Taps>& packing) {
  return g.packed_a +
         porta_ops::direct_packed_words(packing.out_channels, packing.in_channels, packing.taps());
}
PORTA_DEVICE_FUNCTION direct::DirectInput copied_input(const ConvArgs& g, bool backward_data) {
  const int64_t rows = g.direct_copy_rows(backward_data);
  const int64_t columns = g.direct_copy_columns(backward_data);
  if (g.any_filter()) return {columns, rows * columns, g.stride_h, g.stride_w};
  return {columns, rows * columns, 1, 1};
}

// fp32: the packed weights, then a padded any_filter() layer's input planes.
PORTA_DEVICE_FUNCTION void pack_direct_f32(const ConvArgs& g, const float* in, const float* w,
                                           bool backward_data) {
  with_taps<true>(g, [&](auto taps) {
    const auto packing = direct_packing<taps.value>(g, backward_data);
    int64_t index = porta_ops::group_number();
    if (index < weight_groups(packing)) {
      // On the thread's stack, not in shared memory: a launch that needs none cannot fail after
      // the op has returned (the CPU backend reserves shared memory as the groups run).
      alignas(64) float staging[porta_ops::cpu::kNR * direct::kBlockSteps];
      direct::pack_direct_weights(packing, w, g.packed_a, backward_data, index, staging,
                                  packing.in_channels);
      return;
    }
    index -= weight_groups(packing);
    if (g.direct_copies_padding() && index < g.batch * g.channels) {
      direct::pad_plane(in, input_copy(g, packing), g.height, g.width, g.pad_h, g.pad_w, index);
    }
  });
}

PORTA_DEVICE_FUNCTION void run_direct_f32(const ConvArgs& g, const float* in, float* out,
                                          bool backward_data) {
  with_taps<true>(g, [&](auto taps) {
    const auto packing = direct_packing<taps.value>(g, backward_data);
    if (g.direct_copies_padding()) {
      return run_direct<direct::F32Dot>(g, input_copy(g, packing), copied_input(g, false),
                                        g.packed_a, out, packing, false);
    }
    run_direct<direct::F32Dot>(g, in, direct_input(g, backward_data), g.packed_a, out, packing,
                               backward_data);
  });
}

PORTA_KERNEL(conv2d_forward_f32_pack_direct, ConvArgs g, const float* x, const float* w, float* y) {
  (void)y;
  pack_direct_f32(g, x, w, false);
}

PORTA_KERNEL(conv2d_forward_f32_direct, ConvArgs g, const float* x, const float* w, float* y) {
  (void)w;
  run_direct_f32(g, x, y, false);
}

PORTA_KERNEL(conv2d_backward_data_f32_pack_direct, ConvArgs g, const float* dy, const float* w,
             float* dx) {
  (void)dx;
  pack_direct_f32(g, dy, w, true);
}

PORTA_KERNEL(conv2d_backward_data_f32_direct, ConvArgs g, const float* dy, const float* w,
             float* dx) {
  (void)w;
  run_direct_f32(g, dy, dx, true);
}

// Winograd's F(4x4, 3x3) for fp32 and bf16 3x3 layers of stride 1 and padding 1 on AVX-512
// (ConvArgs::winograd, kernels/conv_winograd_cpu.h): a _pack_winograd kernel transforms the
// weights into packed_a, a group per (block of 32 output channels, block of 32 input channels),
// then a group per ConvArgs::winograd bands of four output rows convolves, or, by points, the
// _winograd kernel's three steps do (ConvArgs::winograd_step). Only the AVX-512
// library has them: the host asks the library it loaded (conv.cpp: takes_winograd).
#if defined(__AVX512F__)
namespace winograd = porta_ops::cpu::winograd;

template <class T>
PORTA_DEVICE_FUNCTION void pack_winograd(const ConvArgs& g, const T* w, bool backward_data) {
  const porta_ops::WinogradLayout l = g.winograd_layout(backward_data);
  const int64_t index = porta_ops::group_number();
  if (index < l.output_blocks() * porta_ops::div_up(l.in_channels, l.kOutputs)) {
    // On the thread's stack, as the direct convolution's (pack_direct_f32).
    alignas(64) float staging[l.kOutputs * l.kOutputs * 9];
    const int64_t in_blocks = porta_ops::div_up(l.in_channels, l.kOutputs);
    const int64_t block = index / in_blocks, i0 = index % in_blocks * l.kOutputs;
    winograd::pack_weights(l, w, backward_data, block, i0,
                           g.packed_a + (block * l.kPoints * l.in_channels + i0) * l.kOutputs,
                           l.in_channels, staging);
  }
}

template <class T>
PORTA_DEVICE_FUNCTION void run_winograd(const ConvArgs& g, const T* in, const T* w, float* out,
                                        bool backward_data) {
  const porta_ops::WinogradLayout l = g.winograd_layout(backward_data);
  const int64_t group = porta_ops::group_number(), blocks = l.output_blocks();
  switch (g.winograd_step) {
    case porta_ops::kWinogradGroups:
      if (group < l.slots()) {
        winograd::run_bands(l, in, g.packed_a, out, group * l.slot_bands, l.bands_of(group),
                            porta::dynamic_shared_memory<float>());
      }
      break;
    case porta_ops::kWinogradInputs:
      if (group < l.slots()) winograd::transform_slot_inputs(l, in, group, g.packed_a);
      break;
    case porta_ops::kWinogradProducts:
      if (group < l.product_groups()) {
        alignas(64) float staging[l.kOutputs * l.kOutputs * 9];
        winograd::multiply_slots(l, w, backward_data, group, g.packed_a, staging);
      }
      break;
    case porta_ops::kWinogradOutputs:
      if (group < l.slots() * blocks) {
        winograd::transform_slot_outputs(l, group / blocks, group % blocks, g.packed_a, out);
      }
      break;
  }
}

PORTA_KERNEL(conv2d_forward_f32_pack_winograd, ConvArgs g, const float* x, const float* w,
             float* y) {
  (void)x, (void)y;
  pack_winograd(g, w, false);
}

PORTA_KERNEL(conv2d_forward_f32_winograd, ConvArgs g, const float* x, const float* w, float* y) {
  run_winograd(g, x, w, y, false);
}

PORTA_KERNEL(conv2d_backward_data_f32_pack_winograd, ConvArgs g, const float* dy, const float* w,
             float* dx) {
  (void)dy, (void)dx;
  pack_winograd(g, w, true);
}

PORTA_KERNEL(conv2d_backward_data_f32_winograd, ConvArgs g, const float* dy, const float* w,
             float* dx) {
  run_winograd(g, dy, w, dx, true);
}

PORTA_KERNEL(conv2d_forward_bf16_pack_winograd, ConvArgs g, const porta_ops::bf16* x,
             const porta_ops::bf16* w, float* y) {
  (void)x, (void)y;
  pack_winograd(g, w, false);
}

PORTA_KERNEL(conv2d_forward_bf16_winograd, ConvArgs g, const porta_ops::bf16* x,
             const porta_ops::bf16* w, float* y) {
  run_winograd(g, x, w, y, false);
}

PORTA_KERNEL(conv2d_backward_data_bf16_pack_winograd, ConvArgs g, const porta_ops::bf16* dy,
             const porta_ops::bf16* w, float* dx) {
  (void)dy, (void)dx;
  pack_winograd(g, w, true);
}

PORTA_KERNEL(conv2d_backward_data_bf16_winograd, ConvArgs g, const porta_ops::bf16* dy,
             const porta_ops::bf16* w, float* dx) {
  run_winograd(g, dy, w, dx, true);
}

// Backward weights: a group per run of slots sums its products and
// transforms them into taps, then a group per output channel adds up the runs' taps into dw; or,
// by points, the _winograd kernel's two steps (ConvArgs::winograd_step). The adding kernel reads
// neither x nor dy, so the fp32 one serves bf16 too.
template <class T>
PORTA_DEVICE_FUNCTION void run_winograd_weights(const ConvArgs& g, const T* x, const T* dy,
                                                float* dw) {
  const porta_ops::WinogradWeightsLayout l = g.winograd_weights_layout();
  const int64_t group = porta_ops::group_number();
  switch (g.winograd_step) {
    case porta_ops::kWinogradGroups:
      if (group < l.runs) winograd::run_weights_group(l, x, dy, group, g.packed_a);
      break;
    case porta_ops::kWinogradInputs:
      if (group < l.slots()) winograd::transform_weights_slot(l, x, dy, group, g.packed_a);
      break;
    case porta_ops::kWinogradProducts:
      if (group < l.filter_blocks()) {
        winograd::sum_filter_block(l, group, g.packed_a, porta::dynamic_shared_memory<float>(), dw);
      }
      break;
    default:
      break;
  }
}

PORTA_KERNEL(conv2d_backward_weights_f32_winograd, ConvArgs g, const float* x, const float* dy,
             float* dw) {
  run_winograd_weights(g, x, dy, dw);
}

PORTA_KERNEL(conv2d_backward_weights_bf16_winograd, ConvArgs g, const porta_ops::bf16* x,
             const porta_ops::bf16* dy, float* dw) {
  run_winograd_weights(g, x, dy, dw);
}

PORTA_KERNEL(conv2d_backward_weights_f32_add_winograd, ConvArgs g, const float* x, const float* dy,
             float* dw) {
  (void)x, (void)dy;
  const porta_ops::WinogradWeightsLayout l = g.winograd_weights_layout();
  const int64_t k = porta_ops::group_number();
  if (k < l.out_channels) winograd::add_runs(l, g.packed_a, k, dw);
}
#endif

namespace direct_tiles = porta_ops::cpu::direct_tiles;

// A group per (output block, pair block) packs the weights' tiles, then a group per (image,
// pair) the input's padded plane.
PORTA_DEVICE_FUNCTION void pack_direct_tiles(const ConvArgs& g, const porta_ops::bf16* in,
                                             const porta_ops::bf16* w, bool backward_data) {
  const direct_tiles::Layout l = g.tile_layout(backward_data);
  const int64_t channels = backward_data ? g.out_channels : g.channels;
  uint32_t* const words = reinterpret_cast<uint32_t*>(g.packed_a);
  int64_t index = porta_ops::group_number();
  if (index < l.output_blocks() * l.pair_blocks()) {
    return direct_tiles::pack_weights(l, reinterpret_cast<const uint16_t*>(w), backward_data,
                                      index / l.pair_blocks(), index % l.pair_blocks(), channels,
                                      words);
  }
  index -= l.output_blocks() * l.pair_blocks();
  if (index < g.batch * l.planes()) {
    direct_tiles::pack_plane(l, reinterpret_cast<const uint16_t*>(in), channels, index / l.planes(),
                             index % l.planes(), words);
  }
}

PORTA_DEVICE_FUNCTION void run_direct_tiles(const ConvArgs& g, float* out, bool backward_data) {
  const direct_tiles::Layout l = g.tile_layout(backward_data);
  DirectShare s;
  if (direct_share(g, l.out_channels, g.height, &s)) {
    direct_tiles::run(l, reinterpret_cast<const uint32_t*>(g.packed_a), out, s.n, s.group, s.row,
                      porta_ops::min64(s.row + g.direct_rows, g.height),
                      g.tiles.path == porta_ops::kGemmPathNative);
  }
}

// bf16: the packed weights, then the input's channel pairs, in packed_a as words.
PORTA_DEVICE_FUNCTION void pack_direct_bf16(const ConvArgs& g, const porta_ops::bf16* in,
                                            const porta_ops::bf16* w, bool backward_data) {
  if (g.direct_tiles) return pack_direct_tiles(g, in, w, backward_data);
  with_taps(g, [&](auto taps) {
    const auto packing = direct_packing<taps.value>(g, backward_data, 2);
    uint32_t* const words = reinterpret_cast<uint32_t*>(g.packed_a);
    const int64_t channels = backward_data ? g.out_channels : g.channels;
    int64_t index = porta_ops::group_number();
    if (index < weight_groups(packing)) {
      alignas(64) uint16_t staging[porta_ops::cpu::kNR * 2 * direct::kBlockSteps];
      direct::pack_direct_weights(packing, reinterpret_cast<const uint16_t*>(w), words,
                                  backward_data, index, staging, channels);
      return;
    }
    index -= weight_groups(packing);
    if (index < g.batch * packing.in_channels) {
      direct::pair_channels(reinterpret_cast<const uint16_t*>(in), direct_input(g, backward_data),
                            reinterpret_cast<uint32_t*>(input_copy(g, packing)), channels,
                            g.direct_copy_rows(backward_data), g.direct_copy_columns(backward_data),
                            index);
    }
  });
}

PORTA_DEVICE_FUNCTION void run_direct_bf16(const ConvArgs& g, float* out, bool backward_data) {
  if (g.direct_tiles) return run_direct_tiles(g, out, backward_data);
  with_taps(g, [&](auto taps) {
    const auto packing = direct_packing<taps.value>(g, backward_data, 2);
    const uint32_t* const words = reinterpret_cast<const uint32_t*>(g.packed_a);
    const uint32_t* const in = reinterpret_cast<const uint32_t*>(input_copy(g, packing));
#if defined(PORTA_GEMM_BF16_DOT)
    if (g.tiles.path == porta_ops::kGemmPathNative && porta_ops::cpu::has_bf16_dot()) {
      return run_direct<direct::Bf16Dot>(g, in, copied_input(g, backward_data), words, out, packing,
                                         backward_data);
    }
#endif
    run_direct<direct::PairDot>(g, in, copied_input(g, backward_data), words, out, packing,
                                backward_data);
  });
}

PORTA_KERNEL(conv2d_forward_bf16_pack_direct, ConvArgs g, const porta_ops::bf16* x,
             const porta_ops::bf16* w, float* y) {
  (void)y;
  pack_direct_bf16(g, x, w, false);
}

PORTA_KERNEL(conv2d_forward_bf16_direct, ConvArgs g, const porta_ops::bf16* x,
             const porta_ops::bf16* w, float* y) {
  (void)x, (void)w;
  run_direct_bf16(g, y, false);
}

PORTA_KERNEL(conv2d_backward_data_bf16_pack_direct, ConvArgs g, const porta_ops::bf16* dy,
             const porta_ops::bf16* w, float* dx) {
  (void)dx;
  pack_direct_bf16(g, dy, w, true);
}

PORTA_KERNEL(conv2d_backward_data_bf16_direct, ConvArgs g, const porta_ops::bf16* dy,
             const porta_ops::bf16* w, float* dx) {
  (void)dy, (void)w;
  run_direct_bf16(g, dx, true);
}

// bf16 3x3 backward weights on AMX tiles: a group per (image, channel) packs x's padded plane,
// then a group per (image, step of positions) dy^T's pairs; then a group per (16 channels, 32
// output channels) sums over every image.
PORTA_KERNEL(conv2d_backward_weights_bf16_pack_tiles, ConvArgs g, const porta_ops::bf16* x,
             const porta_ops::bf16* dy, float* dw) {
  (void)dw;
  const direct_tiles::WeightsLayout l = g.tile_weights_layout();
  const int64_t planes = l.planes(), steps = l.steps();
  int64_t index = porta_ops::group_number();
  if (index < g.batch * planes) {
    return direct_tiles::pack_x_plane(l, reinterpret_cast<const uint16_t*>(x), index / planes,
                                      index % planes, reinterpret_cast<uint16_t*>(g.packed_a));
  }
  index -= g.batch * planes;
  if (index < g.batch * steps) {
    const auto* const from = reinterpret_cast<const uint16_t*>(dy);
    auto* const to = reinterpret_cast<uint32_t*>(g.packed_a);
#if PORTA_GEMM_AMX
    if (porta_ops::cpu::has_amx_bf16()) {
      return direct_tiles::pack_dy_step_vectors(l, from, index / steps, index % steps, to);
    }
#endif
    direct_tiles::pack_dy_step(l, from, index / steps, index % steps, to);
  }
}

PORTA_KERNEL(conv2d_backward_weights_bf16_tiles, ConvArgs g, const porta_ops::bf16* x,
             const porta_ops::bf16* dy, float* dw) {
  (void)x, (void)dy;
  const direct_tiles::WeightsLayout l = g.tile_weights_layout();
  const int64_t group = porta_ops::group_number();
  if (group < l.groups()) {
    direct_tiles::run_weights(l, g.packed_a, dw, group, g.tiles.path == porta_ops::kGemmPathNative);
  }
}
#endif

// Calls pass(problem) with backward weights as the host planned it: on the CPU, transposed
// (dw^T = im2col(x) x dy^T) with x's rows read in place for a pointwise layer or staged for
// others; the plain GEMM elsewhere.
template <class Pass>
PORTA_DEVICE_FUNCTION void with_backward_weights(const ConvArgs& g, const float* x, const float* dy,
                                                 float* dw, Pass&& pass) {
#if PORTA_TARGET_CPU
  if (g.transposed && g.pointwise()) {
    return pass(porta_ops::conv::backward_weights_pointwise(g, x, dy, dw));
  }
  if (g.transposed) return pass(porta_ops::conv::backward_weights_transposed(g, x, dy, dw));
#endif
  pass(backward_weights(g, x, dy, dw));
}

PORTA_KERNEL_MAX_GROUP(conv2d_backward_weights_f32, porta_ops::kEngineItems, ConvArgs g,
                       const float* x, const float* dy, float* dw) {
  with_backward_weights(g, x, dy, dw, [&](const auto& p) { run(p, g); });
}

PORTA_KERNEL(conv2d_backward_weights_f32_reduce, ConvArgs g, const float* x, const float* dy,
             float* dw) {
  with_backward_weights(g, x, dy, dw,
                        [&](const auto& p) { porta_ops::reduce_partials(p.c, p.shape, g.tiles); });
}
