// Host side of the convolutions: each is a launch of the GEMM engine (kernels/conv_kernels.cpp),
// an implicit GEMM planned like a GEMM of its sizes, except on the CPU 3x3 layers of stride 1,
// 1x1 layers' forward, strided up to 2 across too (and pointwise layers' fp32 backward data where
// dy has as many channels as dx or more), and the fp32 forward of filters of any size over a few
// input channels, which are direct convolutions (launch_direct), strided layers' backward data,
// a GEMM of columns and a gather (launch_data_by_columns), and on AVX-512 the fp32 and bf16 3x3
// layers that Winograd's F(4x4, 3x3) takes (launch_winograd).
#include <algorithm>
#include <optional>
#include <string>

#include "checked.h"
#include "kernels/gemm_params.h"
#include "portable_ops.h"

namespace porta::portable_ops {

// gemm.cpp
porta_ops::GemmPlan plan_engine_launch(const Op& context, const char* op, int64_t m, int64_t n,
                                       int64_t k, int64_t batch, int64_t depth_period,
                                       std::optional<Scratch>& scratch, float** packed_a,
                                       bool deepen_ahead, int64_t extra_floats, float** extra);
bool plan_staged_launch(const Op& context, int64_t m, int64_t n, int64_t k,
                        const porta_ops::StagedWindow& window, std::optional<Scratch>& scratch,
                        porta_ops::GemmPlan* plan);
bool runs_packed_path(const Op& context);
bool bf16_on_matrix_units(const Op& context);
int32_t requested_gemm_path();

namespace {

enum class Pass { forward, backward_data, backward_weights };

[[noreturn]] void too_large() {
  plugin::throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                      "the convolution is too large for one launch of its kernels");
}

// The words of the input copy that the direct convolution reads after its packed weights
// (ConvArgs::direct_copy_rows), in_words channels (or bf16 channel pairs) of the whole batch.
Checked<int64_t> direct_copy_words(const porta_ops::ConvArgs& g, int64_t in_words,
                                   bool backward_data) {
  return Checked(g.batch) * in_words * g.direct_copy_rows(backward_data) *
         g.direct_copy_columns(backward_data);
}

// Forward or backward data of a 3x3 layer of stride 1 and padding 1 or of a pointwise layer
// (its backward data in fp32 where dy has as many channels as dx or more), or the forward of a
// 1x1 layer of stride up to 2 across or of an fp32 any_filter() layer (ConvArgs::direct_shape),
// on the CPU as a direct convolution (kernels/conv_direct_cpu.h), fp32 or bf16 (in words of
// channel pairs): the weights packed into the stream's scratch (and after them bf16's paired
// input, or a padded any_filter() layer's planes), then the outputs a group per kDirectOutputs
// channels of one image's rows. Whole images per group, unless that leaves fewer than four
// groups per thread to even out. on_tiles: bf16 3x3 on AMX tiles, whose weights and padded input
// take their own layout (kernels/conv_direct_tiles.h).
void launch_direct(Pass pass, const Op& op, porta_ops::ConvArgs g, porta_dtype_t dtype,
                   bool on_tiles, const void* in0, const void* in1, float* out) {
  using porta_ops::div_up;
  const bool backward_data = pass == Pass::backward_data, bf16 = dtype == PORTA_DTYPE_BF16;
  const int64_t in_words = div_up(backward_data ? g.out_channels : g.channels, bf16 ? 2 : 1);
  const int64_t out_channels = backward_data ? g.channels : g.out_channels;
  // The output's rows: a strided layer's fewer than x's.
  const int64_t out_rows = g.direct_out_rows(backward_data);
  // The input copy after the weights (ConvArgs::direct_copy_rows): bf16's channel pairs, or a
  // padded any_filter() layer's planes with their padding.
  const bool copies_input = bf16 || g.direct_copies_padding();
  const int64_t groups = div_up(out_channels, porta_ops::kDirectOutputs);
  const int64_t threads = std::max<int64_t>(op.properties->compute_units, 1);
  const int64_t taps = g.kernel_h * g.kernel_w;
  g.tiles.path = requested_gemm_path();  // bf16: widened where it says so
  g.direct_rows = out_rows;
  while (g.direct_rows > 1 && groups * g.batch * div_up(out_rows, g.direct_rows) < 4 * threads) {
    g.direct_rows = div_up(g.direct_rows, 2);
  }
  // bf16 3x3 on matrix units: the tiles' layout (kernels/conv_direct_tiles.h), its weights'
  // tiles and the input's padded planes, a pack group per (output block, pair block) and per
  // (image, pair).
  const porta_ops::DirectTileLayout tiles = g.tile_layout(backward_data);
  g.direct_tiles = on_tiles;
  const int64_t pair_planes = tiles.planes();
  const Checked<int64_t> packed_words =
      on_tiles ? Checked(tiles.output_blocks()) * porta_ops::kDirectOutputs * pair_planes * taps
               : Checked(groups) * porta_ops::kDirectOutputs * in_words * taps;
  const Checked<int64_t> input_words = on_tiles ? Checked(g.batch) * pair_planes * tiles.plane()
                                                : direct_copy_words(g, in_words, backward_data);
  const Checked<int64_t> bytes = (packed_words + (copies_input ? input_words : 0)) * int64_t{4};
  const Checked<int64_t> pack_groups =
      on_tiles
          ? Checked(tiles.output_blocks()) * tiles.pair_blocks() + Checked(g.batch) * pair_planes
          : Checked(groups) * div_up(in_words, porta_ops::kDirectBlockSteps / taps) +
                (copies_input ? Checked(g.batch) * in_words : 0);
  const Checked<int64_t> outputs = Checked(groups) * g.batch * div_up(out_rows, g.direct_rows);
  uint32_t pack_grid[3], grid[3];
  if (!bytes.valid() || !pack_groups.valid() || !outputs.valid() ||
      !porta_ops::plan_detail::flat_grid(pack_groups.value(), pack_grid) ||
      !porta_ops::plan_detail::flat_grid(outputs.value(), grid)) {
    too_large();
  }
  // Words read: by image, the input once and the weights once per image; by output channels,
  // the weights once and the input once per group (in MB, 14x14x1024 pointwise: 12.8 + 16.8
  // against 1 + 103; 7x7x512: 1.6 + 151 against 9.4 + 26).
  const Checked<int64_t> by_image = input_words + Checked(g.batch) * packed_words;
  const Checked<int64_t> by_outputs = packed_words + Checked(groups) * input_words;
  g.direct_by_image =
      by_image.valid() && (!by_outputs.valid() || by_image.value() < by_outputs.value());
  const Scratch scratch = scratch_for(op, static_cast<size_t>(bytes.value()));
  g.packed_a = scratch.as<float>();
  static const char* const pack_kernels[][2] = {
      {"conv2d_forward_f32_pack_direct", "conv2d_forward_bf16_pack_direct"},
      {"conv2d_backward_data_f32_pack_direct", "conv2d_backward_data_bf16_pack_direct"}};
  static const char* const kernels[][2] = {
      {"conv2d_forward_f32_direct", "conv2d_forward_bf16_direct"},
      {"conv2d_backward_data_f32_direct", "conv2d_backward_data_bf16_direct"}};
  const int index = static_cast<int>(pass);
  launch(op, pack_kernels[index][bf16], dim3(pack_grid[0], pack_grid[1], pack_grid[2]), dim3(1), 0,
         g, in0, in1, out);
  launch(op, kernels[index][bf16], dim3(grid[0], grid[1], grid[2]), dim3(1), 0, g, in0, in1, out);
}

// Backward data of a layer of stride above 1 on the CPU, a chunk of images at a time: the GEMM
// of their columns dcol[(C,R,S), (n,P,Q)] = w^T x dy into the stream's scratch, then dx
// gathered from them (kernels/conv.h: backward_data_columns, col2im_row). The implicit GEMM's
// gather(dy) is zero at all but one in stride_h x stride_w of its entries and multiplies them
// all the same: a 3x3 layer of stride 2 took 14 times oneDNN's time, the 7x7 stem 48 times.
// Chunks of up to kColumnsFloats of columns (or one image's), which the gather then reads from
// the cache.
constexpr int64_t kColumnsFloats = int64_t{1} << 20;

void launch_data_by_columns(const Op& op, porta_ops::ConvArgs g, porta_dtype_t dtype,
                            const void* dy, const void* w, float* dx) {
  const Checked<int64_t> crs = Checked(g.channels) * g.kernel_h * g.kernel_w;
  const Checked<int64_t> per_image = crs * g.out_h * g.out_w;
  const Checked<int64_t> rows_per_image = Checked(g.channels) * g.height;
  if (!per_image.valid() || !rows_per_image.valid()) too_large();
  const int64_t chunk =
      std::clamp<int64_t>(kColumnsFloats / std::max<int64_t>(per_image.value(), 1), 1, g.batch);
  // A group per a few rows of dx: about 16 groups a thread.
  const int64_t threads = std::max<int64_t>(op.properties->compute_units, 1);
  static const char* const kernels[] = {"conv2d_backward_data_f32_columns",
                                        "conv2d_backward_data_f16_columns",
                                        "conv2d_backward_data_bf16_columns"};
  for (int64_t first = 0; first < g.batch; first += chunk) {
    g.first_image = first;
    g.images = std::min(chunk, g.batch - first);
    const Checked<int64_t> columns = per_image * g.images, rows = rows_per_image * g.images;
    if (!columns.valid() || !rows.valid()) too_large();
    std::optional<Scratch> scratch;
    const porta_ops::GemmPlan plan = plan_engine_launch(
        op, "porta_conv2d_backward_data", crs.value(), g.images * g.out_h * g.out_w, g.out_channels,
        1, 0, scratch, nullptr, true, columns.value(), &g.columns);
    g.tiles = plan.tiles;
    launch(op, kernels[dtype], dim3(plan.grid[0], plan.grid[1], plan.grid[2]),
           dim3(plan.group[0], plan.group[1]), plan.shared_bytes, g, dy, w, dx);
    if (plan.tiles.splits > 1) {
      launch(op, "conv2d_backward_data_f32_columns_reduce",
             dim3(plan.reduce_grid[0], plan.reduce_grid[1], plan.reduce_grid[2]),
             dim3(porta_ops::kReduceItems), 0, g, dy, w, dx);
    }
    const int64_t rows_per_group =
        std::max<int64_t>(1, std::min<int64_t>(256, rows.value() / (16 * threads)));
    uint32_t grid[3];
    if (!porta_ops::plan_detail::flat_grid(porta_ops::div_up(rows.value(), rows_per_group), grid)) {
      too_large();
    }
    launch(op, "conv2d_backward_data_col2im", dim3(grid[0], grid[1], grid[2]),
           dim3(1, static_cast<uint32_t>(rows_per_group)), 0, g, dy, w, dx);
  }
}

// Winograd's kernels of the three passes, for fp32 and bf16 inputs, built for AVX-512 only.
constexpr const char* kWinogradKernels[2][3] = {
    {"conv2d_forward_f32_winograd", "conv2d_backward_data_f32_winograd",
     "conv2d_backward_weights_f32_winograd"},
    {"conv2d_forward_bf16_winograd", "conv2d_backward_data_bf16_winograd",
     "conv2d_backward_weights_bf16_winograd"}};
constexpr const char* kWinogradPackKernels[2][2] = {
    {"conv2d_forward_f32_pack_winograd", "conv2d_backward_data_f32_pack_winograd"},
    {"conv2d_forward_bf16_pack_winograd", "conv2d_backward_data_bf16_pack_winograd"}};

int winograd_dtype(porta_dtype_t dtype) { return dtype == PORTA_DTYPE_BF16 ? 1 : 0; }

// The layers it takes: takes_winograd, below.
constexpr int64_t kWinogradMinWidth = 25, kWinogradMinChannels = 16;
constexpr int64_t kWinogradMinNarrowChannels = 32, kWinogradMinWeightsChannels = 32;
constexpr int64_t kWinogradMinWeightsPositions = 256;

// Forward and backward data by points (launch_winograd, below) where a group's bands are whole
// (kMaxTiles tiles at most) and the transformed weights pass kWinogradPointsBytes, or the windows
// would not fit a group's shared memory: each group by bands reads all the weights, and by
// points each products group all the windows (measured: by points 1.4x faster at 7x7x512's 37.7
// MB, even at 14x14x256's 9.4 MB, 1.35x slower at 28x28x256's 9.4 MB, whose windows are more).
constexpr int64_t kWinogradPointsBytes = int64_t{16} << 20;

bool winograd_by_points(const Op& op, const porta_ops::WinogradLayout& l) {
  const Checked<int64_t> packed = Checked(l.packed_floats()) * int64_t{4};
  const Checked<int64_t> shared = Checked(l.shared_floats()) * int64_t{4};
  return l.tiles() <= l.kMaxTiles &&
         (!packed.valid() || packed.value() > kWinogradPointsBytes || !shared.valid() ||
          shared.value() > int64_t{op.properties->shared_memory_per_group});
}

// Forward or backward data of an fp32 or bf16 3x3 layer of stride 1 and padding 1 on AVX-512 by
// Winograd's F(4x4, 3x3) (kernels/conv_winograd_cpu.h): the weights transformed into the stream's
// scratch, then a group per band of four output rows of one image (or per several bands of a
// narrow image's, across images), its transformed windows and their sums in the group's shared
// memory; or by points (winograd_by_points), where each such group would read all the
// transformed weights for its few tiles, in three steps through the scratch: the windows of every
// group of bands (a slot) transformed; then a group per two output blocks transforms their
// weights a chunk of input channels at a time into a buffer of its own and multiplies every
// slot's windows by them, point by point; then the outputs.
void launch_winograd(Pass pass, const Op& op, porta_ops::ConvArgs g, porta_dtype_t dtype,
                     const void* in0, const void* in1, float* out) {
  const bool backward_data = pass == Pass::backward_data;
  // Narrow images' bands together, up to the tiles a micro-tile takes.
  const int64_t tiles = g.winograd_layout(backward_data).tiles();
  g.winograd = std::max<int64_t>(1, porta_ops::WinogradLayout::kMaxTiles / tiles);
  const porta_ops::WinogradLayout l = g.winograd_layout(backward_data);
  const bool by_points = winograd_by_points(op, l);
  if (!(Checked(g.batch) * l.bands()).valid()) too_large();
  const int64_t slots = l.slots();
  // By points: by_points_floats(), its products checked.
  const Checked<int64_t> scratch_bytes =
      (by_points ? Checked(slots) * l.slot_floats() +
                       Checked(l.product_groups()) * l.group_weights_floats()
                 : Checked(l.packed_floats())) *
      int64_t{4};
  const Checked<int64_t> pack_groups =
      Checked(l.output_blocks()) * porta_ops::div_up(l.in_channels, l.kOutputs);
  const Checked<int64_t> output_groups = Checked(slots) * l.output_blocks();
  if (!scratch_bytes.valid() || !pack_groups.valid() || !output_groups.valid()) too_large();
  const Scratch scratch = scratch_for(op, static_cast<size_t>(scratch_bytes.value()));
  g.packed_a = scratch.as<float>();
  const int index = static_cast<int>(pass);
  const char* const compute = kWinogradKernels[winograd_dtype(dtype)][index];
  const auto run = [&](const char* kernel, porta_ops::WinogradStep step, int64_t groups,
                       int64_t shared_floats) {
    uint32_t grid[3];
    if (!porta_ops::plan_detail::flat_grid(groups, grid)) too_large();
    g.winograd_step = step;
    launch(op, kernel, dim3(grid[0], grid[1], grid[2]), dim3(1),
           static_cast<uint32_t>(shared_floats * 4), g, in0, in1, out);
  };
  if (by_points) {
    run(compute, porta_ops::kWinogradInputs, slots, 0);
    run(compute, porta_ops::kWinogradProducts, l.product_groups(), 0);
    run(compute, porta_ops::kWinogradOutputs, output_groups.value(), 0);
    return;
  }
  run(kWinogradPackKernels[winograd_dtype(dtype)][index], porta_ops::kWinogradGroups,
      pack_groups.value(), 0);
  run(compute, porta_ops::kWinogradGroups, slots, l.shared_floats());
}

// Backward weights of such a layer by Winograd's F(4x4, 3x3) (kernels/conv_winograd_cpu.h): a
// group per run of slots transforms its slots a chunk at a time, sums their products into sums of
// its own and transforms those into taps, then a group per output channel adds up the runs' taps
// into dw. A run per thread, each its own sums; a chunk's transformed slots take about as much
// room as the sums they are added to, which balances the sums' passes against the buffer's size
// (measured: 2 slots at 56x56x64, with sums and buffer in L2, and 4-7 at 28x28x128, whose sums
// are past it either way). By points where the sums would pass kWinogradSumsBytes (each run's
// sums for all filters, and dy transformed again for every part of x's channels where they were
// cut to fit, measured 1.3x slower than the direct convolution at 7x7x512): every slot
// transformed once, a group per slot, then a group per block of filters sums every slot's
// products in its shared memory and transforms them into its part of dw.
constexpr int64_t kWinogradSumsBytes = int64_t{4} << 20, kWinogradMaxChunk = 8;
constexpr int64_t kWinogradSumsColumns = 4;

bool winograd_weights_by_points(const porta_ops::ConvArgs& g) {
  // dw's K x C x 9 floats are allocated: 36 x K x C fit an int64_t.
  return g.winograd_weights_layout().sums_floats() * 4 > kWinogradSumsBytes;
}

void launch_winograd_weights(const Op& op, porta_ops::ConvArgs g, porta_dtype_t dtype,
                             const void* x, const void* dy, float* dw) {
  const char* const kernel =
      kWinogradKernels[winograd_dtype(dtype)][static_cast<int>(Pass::backward_weights)];
  g.winograd_runs = g.winograd_chunk = g.winograd_columns = 1;
  const auto layout = [&] { return g.winograd_weights_layout(); };
  if (winograd_weights_by_points(g)) {
    g.winograd_chunk = layout().slots();  // one run of every slot
    // A products group's sums, up to kWinogradSumsColumns blocks of channels, in its shared
    // memory, so that each of dy's rows (from L3) serves that many blocks; its rows of x stay in
    // L2 from group to group where they are few (7x7x512: 4 blocks 6.3-6.7 ms, 1 6.7-7.4, 8
    // 6.7-6.9, 15 7.2-7.7).
    const int64_t block_bytes = layout().kPoints * layout().block_rows() * layout().kColumns * 4;
    g.winograd_columns = std::clamp<int64_t>(
        int64_t{op.properties->shared_memory_per_group} / block_bytes, 1, kWinogradSumsColumns);
    const porta_ops::WinogradWeightsLayout l = layout();
    // dy_floats() + x_floats(), their products checked.
    const Checked<int64_t> bytes =
        (Checked(l.slots()) * l.kLanes * (Checked(l.out_channels) + l.x_row_floats()) +
         2 * l.kLanes) *
        l.kPoints * int64_t{4};
    uint32_t slot_grid[3], block_grid[3];
    if (!bytes.valid() || !porta_ops::plan_detail::flat_grid(l.slots(), slot_grid) ||
        !porta_ops::plan_detail::flat_grid(l.filter_blocks(), block_grid)) {
      too_large();
    }
    const Scratch scratch = scratch_for(op, static_cast<size_t>(bytes.value()));
    g.packed_a = scratch.as<float>();
    g.winograd_step = porta_ops::kWinogradInputs;
    launch(op, kernel, dim3(slot_grid[0], slot_grid[1], slot_grid[2]), dim3(1), 0, g, x, dy, dw);
    g.winograd_step = porta_ops::kWinogradProducts;
    const int64_t shared_floats = l.kPoints * l.block_rows() * l.kColumns * l.group_columns;
    launch(op, kernel, dim3(block_grid[0], block_grid[1], block_grid[2]), dim3(1),
           static_cast<uint32_t>(shared_floats * 4), g, x, dy, dw);
    return;
  }
  g.winograd_chunk = std::clamp<int64_t>(
      porta_ops::div_up(layout().sums_floats(), layout().dy_floats() + layout().x_floats()), 1,
      kWinogradMaxChunk);
  const int64_t threads = std::max<int64_t>(op.properties->compute_units, 1);
  g.winograd_runs = std::clamp<int64_t>(threads, 1, layout().slots());
  const porta_ops::WinogradWeightsLayout l = layout();
  const Checked<int64_t> bytes = Checked(l.runs) * l.group_floats() * int64_t{4};
  uint32_t grid[3], add_grid[3];
  if (!bytes.valid() || !porta_ops::plan_detail::flat_grid(l.runs, grid) ||
      !porta_ops::plan_detail::flat_grid(l.out_channels, add_grid)) {
    too_large();
  }
  const Scratch scratch = scratch_for(op, static_cast<size_t>(bytes.value()));
  g.packed_a = scratch.as<float>();
  launch(op, kernel, dim3(grid[0], grid[1], grid[2]), dim3(1), 0, g, x, dy, dw);
  launch(op, "conv2d_backward_weights_f32_add_winograd",
         dim3(add_grid[0], add_grid[1], add_grid[2]), dim3(1), 0, g, x, dy, dw);
}

// PORTA_OPS_CONV_WINOGRAD: auto (default) lets Winograd's F(4x4, 3x3) take the layers where it
// is faster; off keeps every layer on the direct convolution or the implicit GEMM, whose sums
// round as a plain dot product's (Winograd's transforms add about 3x that error).
bool winograd_allowed() {
  static const bool allowed = setting_choice("PORTA_OPS_CONV_WINOGRAD", {"auto", "off"}) == 0;
  return allowed;
}

// Whether Winograd's F(4x4, 3x3) takes an fp32 or bf16 3x3 layer's pass: the host's kernel library
// built for AVX-512 (the only one with its kernels), at least two bands and two tiles of a band.
// Forward and backward data: at least kWinogradMinChannels input channels, where its rounding
// stays within the bound of a plain sum of that depth (the tests' tolerance: fewer channels,
// fewer terms to spread the transforms' error); images narrower than kWinogradMinWidth at least
// kWinogradMinNarrowChannels input and output channels (14x14 from 16 channels to 32 measured
// 1.3x slower than the direct convolution, from 32 to 64 1.15x faster); and the bands' transformed
// windows in a group's shared memory, or the layer by points (winograd_by_points). Backward
// weights: kWinogradMinWeightsChannels channels and output channels, its micro-tiles being 32
// channels wide (16 channels measured 1.3x slower than the direct convolution at 28x28); at
// least kWinogradMinWeightsPositions positions summed (batch x height x width), where its
// rounding stays within a plain sum's bound; and images at least kWinogradMinWidth wide, or by
// points (winograd_weights_by_points: narrower images' runs, few tiles each, measured slower
// than the direct convolution, 14x14x64 by points too, whose transformed slots outgrow the caches
// where the filters are few). bf16 forward and backward data as fp32's, except that where the
// direct convolution multiplies bf16 pairs in one instruction (vdpbf16ps: twice fp32's rate)
// only images at least kWinogradMinWidth wide: on the Zen 4 that was level with Winograd at
// 14x14x256 and faster at 7x7x512, where Winograd was 1.3-1.6x faster at 28x28x128 and 56x56x64
// (one core).

bool takes_winograd(Pass pass, const Op& op, const porta_ops::ConvArgs& g, porta_dtype_t dtype) {
  // fp32 and bf16 only, bf16 where no matrix tiles take it.
  const bool input_taken =
      dtype == PORTA_DTYPE_F32 || (dtype == PORTA_DTYPE_BF16 && !bf16_on_matrix_units(op));
  if (!input_taken || !g.same_3x3() || !runs_packed_path(op) || !winograd_allowed() ||
      !has_kernel(op, kWinogradKernels[winograd_dtype(dtype)][static_cast<int>(pass)])) {
    return false;
  }
  if (pass == Pass::backward_weights) {
    const Checked<int64_t> positions = Checked(g.batch) * g.height * g.width;
    return g.channels >= kWinogradMinWeightsChannels &&
           g.out_channels >= kWinogradMinWeightsChannels &&
           (!positions.valid() || positions.value() >= kWinogradMinWeightsPositions) &&
           (g.width >= kWinogradMinWidth || winograd_weights_by_points(g));
  }
  const porta_ops::WinogradLayout l = g.winograd_layout(pass == Pass::backward_data);
  const int64_t min_channels = l.width < kWinogradMinWidth ? kWinogradMinNarrowChannels : 0;
  const bool bf16_pairs_native = requested_gemm_path() == porta_ops::kGemmPathNative &&
                                 (op.properties->capabilities & PORTA_CAPABILITY_BF16);
  if (dtype == PORTA_DTYPE_BF16 && bf16_pairs_native && l.width < kWinogradMinWidth) return false;
  if (l.bands() < 2 || l.tiles() < 2 || l.in_channels < kWinogradMinChannels ||
      l.in_channels < min_channels || l.out_channels < min_channels) {
    return false;
  }
  if (winograd_by_points(op, l)) return true;
  const Checked<int64_t> shared = Checked(l.shared_floats()) * int64_t{4};
  return shared.valid() && shared.value() <= int64_t{op.properties->shared_memory_per_group};
}

// bf16 backward weights of a 3x3 layer of stride 1 and padding 1 on AMX tiles
// (kernels/conv_direct_tiles.h): x's padded planes and dy^T's pairs packed into the stream's
// scratch, then a group per 16 channels by 32 output channels.
void launch_weights_on_tiles(const Op& op, porta_ops::ConvArgs g, const void* x, const void* dy,
                             float* dw) {
  const porta_ops::DirectTileWeightsLayout l = g.tile_weights_layout();
  g.tiles.path = requested_gemm_path();
  const Checked<int64_t> planes = Checked(g.batch) * l.planes();
  const Checked<int64_t> steps = Checked(g.batch) * l.steps();
  const Checked<int64_t> bytes =
      (planes * l.plane() + Checked(g.batch) * l.depth() * 32 * l.output_pairs()) * int64_t{2};
  uint32_t pack_grid[3], grid[3];
  if (!bytes.valid() || !(planes + steps).valid() ||
      !porta_ops::plan_detail::flat_grid((planes + steps).value(), pack_grid) ||
      !porta_ops::plan_detail::flat_grid(l.groups(), grid)) {
    too_large();
  }
  const Scratch scratch = scratch_for(op, static_cast<size_t>(bytes.value()));
  g.packed_a = scratch.as<float>();
  launch(op, "conv2d_backward_weights_bf16_pack_tiles",
         dim3(pack_grid[0], pack_grid[1], pack_grid[2]), dim3(1), 0, g, x, dy, dw);
  launch(op, "conv2d_backward_weights_bf16_tiles", dim3(grid[0], grid[1], grid[2]), dim3(1), 0, g,
         x, dy, dw);
}

// Launches the pass's kernel with the convolution's geometry and the two inputs and the output.
porta_status_t launch_conv(Pass pass, const Op& op, const porta_conv2d_desc_t* desc,
                           const void* in0, const void* in1, float* out) {
  static const char* const ops[] = {"porta_conv2d_forward", "porta_conv2d_backward_data",
                                    "porta_conv2d_backward_weights"};
  static const char* const kernels[][3] = {
      {"conv2d_forward_f32", "conv2d_forward_f16", "conv2d_forward_bf16"},
      {"conv2d_backward_data_f32", "conv2d_backward_data_f16", "conv2d_backward_data_bf16"},
      {"conv2d_backward_weights_f32", "conv2d_backward_weights_f16",
       "conv2d_backward_weights_bf16"}};
  static const char* const reduce_kernels[] = {"conv2d_forward_f32_reduce",
                                               "conv2d_backward_data_f32_reduce",
                                               "conv2d_backward_weights_f32_reduce"};
  const int index = static_cast<int>(pass);
  return guarded(ops[index], [&] {
    // Both settings are read by every call, so that a bad value fails each one, not only the
    // layers whose path asks.
    requested_gemm_path();
    winograd_allowed();
    const porta_conv2d_desc_t& d = *desc;
    porta_ops::ConvArgs g{};
    g.batch = d.batch, g.channels = d.in_channels, g.height = d.in_height, g.width = d.in_width;
    g.out_channels = d.out_channels, g.kernel_h = d.kernel_height, g.kernel_w = d.kernel_width;
    porta::check(porta_conv2d_output_size(desc, &g.out_h, &g.out_w));
    g.pad_h = d.pad_h, g.pad_w = d.pad_w;
    g.stride_h = d.stride_h, g.stride_w = d.stride_w;
    g.dilation_h = d.dilation_h, g.dilation_w = d.dilation_w;
    const Checked<int64_t> crs = Checked(g.channels) * g.kernel_h * g.kernel_w;
    const Checked<int64_t> npq = Checked(g.batch) * g.out_h * g.out_w;
    Checked<int64_t> m = 0, n = 0, k = 0;
    switch (pass) {
      case Pass::forward:  // y[K, (N,P,Q)] = w[K, (C,R,S)] x im2col(x)
        m = g.out_channels, n = npq, k = crs;
        break;
      case Pass::backward_data:  // dx[C, (N,H,W)] = w^T x gather(dy)
        m = g.channels, n = Checked(g.batch) * g.height * g.width;
        k = Checked(g.out_channels) * g.kernel_h * g.kernel_w;
        break;
      default:  // dw[K, (C,R,S)] = dy[K, (N,P,Q)] x im2col(x)^T
        m = g.out_channels, n = crs, k = npq;
        break;
    }
    // libporta checked the tensors' sizes; this keeps the plugin safe on its own.
    if (!m.valid() || !n.valid() || !k.valid()) {
      plugin::throw_error(PORTA_ERROR_INVALID_ARGUMENT, "the convolution's GEMM sizes overflow");
    }
    // Their direct convolution leaves out the products of the taps on the padding, which the
    // implicit GEMM multiplies as zeros (18% of a 7x7 image's); a 1x1 layer's forward reads x in
    // place (strided: the inputs two apart, which the implicit GEMM packed into its window), as
    // does an fp32 any_filter() layer's (a padded one a copy with its padding), its tiles within
    // an image's rows, and so does a pointwise layer's fp32 backward data where dy has at least
    // as many channels as dx: the implicit GEMM's rows are then dx's few channels,
    // over which its pack of dy's window pays off poorly (56x56x64 to 64 at 0.33 of oneDNN,
    // direct 0.77). Where dx has more, the direct tiles' sums are shallow for their stores, and
    // bf16 ranged from 20% faster to 20% slower (docs/decisions.md, "Pointwise backward data").
    // bf16 on matrix units: a 3x3 layer's three passes on the tiles over padded planes of its
    // input (kernels/conv_direct_tiles.h), which multiply several times faster than the direct
    // convolution's fp32 lanes, where its images are at least kMinTilesWidth wide (the two border
    // columns of each padded row are computed and dropped); others go to the implicit GEMM on
    // the tiles.
    constexpr int64_t kMinTilesWidth = 14;
    const bool matrix_units = d.dtype == PORTA_DTYPE_BF16 && bf16_on_matrix_units(op);
    const bool on_tiles = matrix_units && g.same_3x3() && g.width >= kMinTilesWidth;
    const bool expanding = d.dtype == PORTA_DTYPE_F32 && g.out_channels >= g.channels;
    // An any_filter() layer (fp32) whose padding needs a copy of x, a whole batch's, up to
    // kMaxInputCopyBytes: past it the implicit GEMM, which copies nothing (a batch of 256 of the
    // stem's images would copy 162 MB).
    constexpr int64_t kMaxInputCopyBytes = int64_t{64} << 20;
    const Checked<int64_t> copy_bytes = direct_copy_words(g, g.channels, false) * int64_t{4};
    const bool copy_fits = !g.direct_copies_padding() ||
                           (copy_bytes.valid() && copy_bytes.value() <= kMaxInputCopyBytes);
    const bool direct = g.direct_shape(pass == Pass::forward) &&
                        (pass == Pass::forward || !g.pointwise() || expanding) &&
                        (!matrix_units || on_tiles) &&
                        (!g.any_filter() || (d.dtype == PORTA_DTYPE_F32 && copy_fits));
    if (pass == Pass::backward_data && (g.stride_h > 1 || g.stride_w > 1) && runs_packed_path(op)) {
      return launch_data_by_columns(op, g, d.dtype, in0, in1, out);
    }
    if (takes_winograd(pass, op, g, d.dtype)) {
      return pass == Pass::backward_weights ? launch_winograd_weights(op, g, d.dtype, in0, in1, out)
                                            : launch_winograd(pass, op, g, d.dtype, in0, in1, out);
    }
    if (pass != Pass::backward_weights && direct && runs_packed_path(op) &&
        (d.dtype == PORTA_DTYPE_F32 || d.dtype == PORTA_DTYPE_BF16)) {
      return launch_direct(pass, op, g, d.dtype, on_tiles, in0, in1, out);
    }
    if (pass == Pass::backward_weights && on_tiles) {
      return launch_weights_on_tiles(op, g, in0, in1, out);
    }
    std::optional<Scratch> scratch;
    porta_ops::GemmPlan plan;
    // fp32 backward weights on the CPU as dw^T = im2col(x) x dy^T, rather than with im2col^T
    // packed as B: for a filter of several taps or strided across, and output rows of at least
    // kMinStagedRow (strided, kMinStagedStridedRow), the window's rows staged from x's (conv.h:
    // backward_weights_transposed; narrower rows leave the micro-kernel too short a run per
    // output row: strided rows of 14 measured 1.3-2.4x slower); for a pointwise layer, x's rows
    // read in place (backward_weights_pointwise), where the plan splits the depth.
    constexpr int64_t kMinStagedRow = 14, kMinStagedStridedRow = 28;
    if (pass == Pass::backward_weights && d.dtype == PORTA_DTYPE_F32) {
      std::optional<porta_ops::StagedWindow> window;
      if (g.pointwise()) {
        window = porta_ops::StagedWindow::in_place(g.out_h, g.out_w);
      } else if (g.stride_w > 1 ? g.out_w >= kMinStagedStridedRow
                                : g.out_w >= kMinStagedRow && g.kernel_h * g.kernel_w > 1) {
        window =
            porta_ops::StagedWindow::of_layer(g.kernel_h, g.kernel_w, g.out_h, g.out_w, g.stride_h,
                                              g.stride_w, g.dilation_h, g.dilation_w);
      }
      g.transposed = window && plan_staged_launch(op, n.value(), m.value(), k.value(), *window,
                                                  scratch, &plan);
    }
    if (!g.transposed) {
      // Backward-weights' A, dy, runs along the depth within each image's output positions:
      // depth blocks planned within one image let the CPU read it in place.
      const int64_t depth_period = pass == Pass::backward_weights ? g.out_h * g.out_w : 0;
      // Backward data's w^T (fp32) is packed once by a kernel of its own on the CPU, rather than
      // by each column tile's groups (4 to 13 times on the deep layers). Forward reads w in
      // place, except 1x1 layers on AVX2 (8 fp32 lanes), where 6-row panels of w read in place
      // ran slower than packed ones (3x3 layers did not gain); there w keeps the depth blocks
      // planned for it in place, so that the sums are those of before (docs/decisions.md).
      const bool forward_ahead = pass == Pass::forward && g.kernel_h * g.kernel_w == 1 &&
                                 runs_on_host(op) && op.properties->subgroup_size == 8;
      const bool pack_a =
          d.dtype == PORTA_DTYPE_F32 && (pass == Pass::backward_data || forward_ahead);
      plan =
          plan_engine_launch(op, ops[index], m.value(), n.value(), k.value(), 1, depth_period,
                             scratch, pack_a ? &g.packed_a : nullptr, !forward_ahead, 0, nullptr);
      // A packed ahead takes no room in the groups' shared memory.
      porta_ops::balance_column_tiles(m.value(), n.value(), 1, op.properties->compute_units,
                                      op.properties->shared_memory_per_group,
                                      g.packed_a ? 0 : plan.tiles.block_m, &plan);
    }
    g.tiles = plan.tiles;
    if (g.packed_a) {
      uint32_t grid[3] = {1, 1, 1};
      if (!porta_ops::plan_detail::flat_grid(
              plan.tiles.tiles_m * porta_ops::div_up(k.value(), plan.tiles.tile_k), grid)) {
        plugin::throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                            "the convolution's weights are too large to pack in one launch");
      }
      static const char* const pack_kernels[] = {"conv2d_forward_f32_pack",
                                                 "conv2d_backward_data_f32_pack"};
      launch(op, pack_kernels[index], dim3(grid[0], grid[1], grid[2]), dim3(1), 0, g, in0, in1,
             out);
    }
    // The kernels' inputs are pointers of their dtype: the same bytes.
    launch(op, kernels[index][d.dtype], dim3(plan.grid[0], plan.grid[1], plan.grid[2]),
           dim3(plan.group[0], plan.group[1]), plan.shared_bytes, g, in0, in1, out);
    if (plan.tiles.splits > 1) {
      launch(op, reduce_kernels[index],
             dim3(plan.reduce_grid[0], plan.reduce_grid[1], plan.reduce_grid[2]),
             dim3(porta_ops::kReduceItems), 0, g, in0, in1, out);
    }
  });
}

}  // namespace

porta_status_t Ops::conv2d_forward(const Op* op, const porta_conv2d_forward_args_t* args) {
  return launch_conv(Pass::forward, *op, args->desc, args->x, args->w, args->y);
}

porta_status_t Ops::conv2d_backward_data(const Op* op,
                                         const porta_conv2d_backward_data_args_t* args) {
  return launch_conv(Pass::backward_data, *op, args->desc, args->dy, args->w, args->dx);
}

porta_status_t Ops::conv2d_backward_weights(const Op* op,
                                            const porta_conv2d_backward_weights_args_t* args) {
  return launch_conv(Pass::backward_weights, *op, args->desc, args->x, args->dy, args->dw);
}

}  // namespace porta::portable_ops
