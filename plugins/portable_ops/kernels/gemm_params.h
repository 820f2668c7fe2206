// The parameters of the GEMM-engine kernels (gemm_f32 and the three conv2d_*_f32 kernels) and
// how the host picks their tiles. The host side (gemm.cpp, conv.cpp) includes it as well as the
// kernels (gemm.cpp, conv.cpp under kernels/), so that both agree on the layout of the argument
// structs, which the launch copies bytewise; the integer helpers come from common.h, whose dialect
// header compiles as host C++ too.
#pragma once

#include <stdint.h>

#include "common.h"

namespace porta_ops {

// Which of the engine's two paths a launch takes (kernels/gemm_engine.h).
enum : int32_t {
  // The target's own path: on the CPU the packed, register-blocked one (group = 1 work-item,
  // shared memory = the packed panels); on a GPU the tiled one.
  kGemmPathNative = 0,
  // The portable tiled path on any target (groups of kTiledItems x kTiledItems work-items, no
  // dynamic shared memory). The CPU runs it too, which is how it is tested without a GPU.
  kGemmPathTiled = 1,
  // The packed path with 16-bit inputs always widened to fp32, also where the CPU has a bf16
  // dot product (kernels/gemm_engine_cpu_bf16.h): what CPUs without one run, kept testable.
  kGemmPathWidened = 2,
};

// The tiled path: a group computes a kTiledM x kTiledN tile of C, kTiledK deep at a time, as
// kTiledItems x kTiledItems work-items with a kTiledPerItem x kTiledPerItem register block each.
inline constexpr int32_t kTiledM = 64;
inline constexpr int32_t kTiledN = 64;
inline constexpr int32_t kTiledK = 16;
inline constexpr int32_t kTiledItems = 16;
// The most work-items an engine kernel is launched with (the tiled path's group), which they
// declare (PORTA_KERNEL_MAX_GROUP) so that GPU compilers budget registers for no more.
inline constexpr int32_t kEngineItems = kTiledItems * kTiledItems;
inline constexpr int32_t kTiledPerItem = kTiledM / kTiledItems;

// Multiples the host keeps the CPU path's sizes to, so that every ISA build's micro-tile
// (kernels/gemm_engine.h: MR rows by NR columns, NR in {8, 16, 32}) divides the group's columns.
inline constexpr int32_t kCpuColumnMultiple = 32;
inline constexpr int32_t kCpuRowMultiple = 8;
// Floats between the CPU path's packed strips of A (a cache line), and the fewest rows a strip
// has in any ISA build (its MR), by which the plans count the gaps they make room for.
inline constexpr int32_t kCpuStripGap = 16;
inline constexpr int32_t kCpuFewestStripRows = 6;
inline constexpr int64_t strip_gap_bytes(int64_t block_rows) {
  return div_up(block_rows, kCpuFewestStripRows) * kCpuStripGap *
         static_cast<int64_t>(sizeof(float));
}

// How one launch cuts C: groups are numbered (see run_gemm in gemm_engine.h) with the row tile
// fastest, then the column tile, then the depth split, then the batch entry.
struct GemmTiles {
  int32_t tile_m;   // rows of C per group
  int32_t tile_n;   // columns of C per group
  int32_t tile_k;   // CPU: depth of one block of packed panels
  int32_t block_m;  // CPU: rows of A packed at once (<= tile_m)
  int64_t tiles_m;  // row tiles: ceil(m / tile_m)
  int64_t tiles_n;  // column tiles: ceil(n / tile_n)
  int32_t path;     // kGemmPath*
  // Split-K: with splits > 1, split s sums depths [s * split_depth, (s + 1) * split_depth) into
  // partials[(entry * splits + s) * m * n + i * n + j], and the op's _reduce kernel then adds
  // the splits up in order (deterministic) and applies alpha and beta.
  int32_t splits;
  int64_t split_depth;
  float* partials;
  // CPU: the kGemmPanels* operands whose panels the packed path reads where they are stored.
  int32_t panels_in_place;
  // CPU: the host's number for this launch (0: none), unique in the process, so that a thread's
  // group can tell a block of B packed by its previous group of the same launch (packed_gemm).
  uint64_t launch;
};

// Operands stored as packed panels are, at a stride: an fp32 B along its rows (NN, TN) has each
// NR-column strip's depths ldb apart. The CPU's micro-kernel reads such a strip where it is,
// given that distance. (An fp32 A along its columns, TN, is MR-row panels lda apart in the same
// way; read in place it measured slower than packed: docs/decisions.md.)
enum : int32_t {
  kGemmPanelsB = 2,
};

static_assert(sizeof(GemmTiles) == 72, "GemmTiles is copied bytewise between host and kernels");

// Work-items per group of the _reduce kernels, one output element each on a GPU; on the CPU,
// whose groups run on one thread, a group adds up a kReduceBlock x kReduceBlock block of C.
inline constexpr int32_t kReduceItems = 256;
inline constexpr int64_t kReduceBlock = 16;

// The _reduce kernel's groups for `batch` entries of m x n.
inline int64_t reduce_groups(int64_t m, int64_t n, int64_t batch, bool host) {
  return host ? div_up(m, kReduceBlock) * div_up(n, kReduceBlock) * batch
              : div_up(m * n * batch, kReduceItems);
}

// The one parameter of gemm_f32, gemm_f16 and gemm_bf16: C = alpha * op(A) op(B) + beta * C per
// batch entry, as porta_gemm; A and B hold elements of the kernel's dtype.
struct GemmArgs {
  const void* a;
  const void* b;
  float* c;
  int64_t m, n, k;
  int64_t lda, ldb, ldc;
  int64_t stride_a, stride_b, stride_c;
  int64_t batch;
  float alpha, beta;
  int32_t trans_a, trans_b;
  GemmTiles tiles;
};

// Output channels per group of the CPU's direct convolution (ConvArgs::direct_rows): a whole
// number of every build's micro-tile width.
inline constexpr int64_t kDirectOutputs = 32;
// Products per output of one depth block of the direct convolution: 32 input channels of a 3x3
// filter (a block's rows of the input stay in L1 over its nine taps), 288 of a 1x1 one.
inline constexpr int64_t kDirectBlockSteps = 288;
// A strided layer's outputs read x at most this many columns apart in the direct convolution: the
// step is a constant of its micro-tiles, so that each input it broadcasts is at its row's
// address plus a constant.
inline constexpr int64_t kDirectMaxStrideW = 2;
// Filters of any size go to the direct convolution where the layer has at most this many input
// channels (an image's colours, a spectrogram): the implicit GEMM's window then packs an element
// for every few products.
inline constexpr int64_t kDirectMaxAnyFilterChannels = 4;
// The words the direct convolution's packed weights take (kernels/conv_direct_cpu.h): `taps`
// taps of in_words input channels (or bf16 channel pairs) for whole groups of output channels.
// bf16's paired input follows them in the same buffer.
PORTA_OPS_HOST_DEVICE inline int64_t direct_packed_words(int64_t out_channels, int64_t in_words,
                                                         int64_t taps) {
  return (out_channels + kDirectOutputs - 1) / kDirectOutputs * kDirectOutputs * in_words * taps;
}

// The geometry of Winograd's F(4x4, 3x3) on the CPU (kernels/conv_winograd_cpu.h), forward (x
// into y) or backward data (dy into dx): `batch` images of height x width, 4 x 4 tiles of outputs
// in bands of four rows, slot_bands bands a group (a narrow image's several, up to kMaxTiles
// tiles). packed_a holds the transformed weights, packed_floats() of them; each group's shared
// memory its bands' transformed windows and their sums, shared_floats(). By points (where the
// transformed weights are large), packed_a holds each slot's (group of bands') transformed
// windows, then its sums for each output block, then each products group's transformed weights
// (by_points_floats() in all).
struct WinogradLayout {
  static constexpr int64_t kPoints = 36;   // a tile's 6 x 6 transformed points
  static constexpr int64_t kLanes = 16;    // tiles transformed together (one AVX-512 vector)
  static constexpr int64_t kOutputs = 32;  // output channels multiplied together
  // Tiles multiplied together: 14 x 2 accumulators, two weight vectors and a broadcast fill
  // AVX-512's 32 vector registers. A narrow image's bands go together up to this many tiles.
  static constexpr int64_t kMaxTiles = 14;
  int64_t height, width, in_channels, out_channels;
  int64_t batch, slot_bands;

  PORTA_OPS_HOST_DEVICE int64_t bands() const { return (height + 3) / 4; }
  PORTA_OPS_HOST_DEVICE int64_t tiles() const { return (width + 3) / 4; }
  PORTA_OPS_HOST_DEVICE int64_t output_blocks() const {
    return (out_channels + kOutputs - 1) / kOutputs;
  }
  PORTA_OPS_HOST_DEVICE int64_t packed_floats() const {
    return output_blocks() * kPoints * in_channels * kOutputs;
  }
  PORTA_OPS_HOST_DEVICE int64_t transformed_floats() const {
    return kPoints * in_channels * kLanes;
  }
  PORTA_OPS_HOST_DEVICE int64_t sums_floats() const { return kPoints * kLanes * kOutputs; }
  PORTA_OPS_HOST_DEVICE int64_t shared_floats() const {
    return transformed_floats() + sums_floats();
  }
  PORTA_OPS_HOST_DEVICE int64_t slots() const {
    return (batch * bands() + slot_bands - 1) / slot_bands;
  }
  // The bands of slot `slot` (a group's, by bands), from band slot * slot_bands: the last's fewer.
  PORTA_OPS_HOST_DEVICE int64_t bands_of(int64_t slot) const {
    const int64_t rest = batch * bands() - slot * slot_bands;
    return rest < slot_bands ? rest : slot_bands;
  }
  // By points, a products group takes kGroupBlocks output blocks, transforming their weights
  // kGroupChannels input channels at a time into a buffer of its own.
  static constexpr int64_t kGroupBlocks = 2, kGroupChannels = 64;
  PORTA_OPS_HOST_DEVICE int64_t product_groups() const {
    return (output_blocks() + kGroupBlocks - 1) / kGroupBlocks;
  }
  PORTA_OPS_HOST_DEVICE int64_t group_weights_floats() const {
    return kGroupBlocks * kPoints * kGroupChannels * kOutputs;
  }
  PORTA_OPS_HOST_DEVICE int64_t slot_floats() const {
    return transformed_floats() + output_blocks() * sums_floats();
  }
  PORTA_OPS_HOST_DEVICE int64_t by_points_floats() const {
    return slots() * slot_floats() + product_groups() * group_weights_floats();
  }
  PORTA_OPS_HOST_DEVICE float* slot_inputs(float* packed, int64_t slot) const {
    return packed + slot * transformed_floats();
  }
  PORTA_OPS_HOST_DEVICE float* slot_sums(float* packed, int64_t slot, int64_t block) const {
    return packed + slots() * transformed_floats() +
           (slot * output_blocks() + block) * sums_floats();
  }
  PORTA_OPS_HOST_DEVICE float* group_weights(float* packed, int64_t group) const {
    return packed + slots() * slot_floats() + group * group_weights_floats();
  }
};

// What a launch of a Winograd kernel does (ConvArgs::winograd_step): its groups' whole work, or one
// of the steps by points (backward weights: inputs and products).
enum WinogradStep : int64_t {
  kWinogradGroups,
  kWinogradInputs,
  kWinogradProducts,
  kWinogradOutputs,
};

// Backward weights by Winograd's F(4x4, 3x3) on the CPU (kernels/conv_winograd_cpu.h). The tiles
// of all images go in slots of 16 (a narrow image's bands several to a slot, a wide one's in
// passes of 16 tiles), the slots in `runs` runs. A group per run transforms its run's tiles of dy
// and windows of x, `chunk` slots at a time, into its buffer, sums their products into sums of its
// own (36 points of K x columns()) and transforms those into its taps (K x columns() x 9), which
// the runs' add up into dw. packed_a holds each group's taps, sums, then buffer: dy's rows
// ([point][slot][k][16 tiles]), then x's transposed ([point][slot, tile][channel]). By points,
// one run of every slot in one chunk: its buffer only, x's rows a block of 32 channels at a time.
struct WinogradWeightsLayout {
  static constexpr int64_t kPoints = 36;   // a tile's 6 x 6 transformed points
  static constexpr int64_t kLanes = 16;    // tiles a slot holds (one AVX-512 vector)
  static constexpr int64_t kColumns = 32;  // x's channels multiplied together
  int64_t batch, height, width, in_channels, out_channels;
  int64_t runs, chunk;
  int64_t group_columns;  // by points: the blocks of kColumns channels a products group sums

  PORTA_OPS_HOST_DEVICE WinogradLayout image() const {
    return {height, width, in_channels, out_channels, batch, 1};
  }
  PORTA_OPS_HOST_DEVICE int64_t bands() const { return image().bands(); }
  PORTA_OPS_HOST_DEVICE int64_t tiles() const { return image().tiles(); }
  PORTA_OPS_HOST_DEVICE int64_t passes() const { return (tiles() + kLanes - 1) / kLanes; }
  PORTA_OPS_HOST_DEVICE int64_t bands_per_slot() const {
    return tiles() <= kLanes ? kLanes / tiles() : 1;
  }
  PORTA_OPS_HOST_DEVICE int64_t slots() const {
    return (batch * bands() + bands_per_slot() - 1) / bands_per_slot() * passes();
  }
  // x's channels to whole blocks of kColumns.
  PORTA_OPS_HOST_DEVICE int64_t columns() const {
    return (in_channels + kColumns - 1) / kColumns * kColumns;
  }
  PORTA_OPS_HOST_DEVICE int64_t taps_floats() const { return 9 * out_channels * columns(); }
  PORTA_OPS_HOST_DEVICE int64_t sums_floats() const { return kPoints * out_channels * columns(); }
  // The buffer's strides, each a line past a power of two: rows and points a power of two apart
  // would share the caches' sets (36 points' lines in a 16-way L2's).
  PORTA_OPS_HOST_DEVICE int64_t x_row_floats() const { return columns() + kLanes; }
  PORTA_OPS_HOST_DEVICE int64_t x_point_floats() const {
    return chunk * kLanes * x_row_floats() + kLanes;
  }
  PORTA_OPS_HOST_DEVICE int64_t dy_point_floats() const {
    return chunk * out_channels * kLanes + kLanes;
  }
  PORTA_OPS_HOST_DEVICE int64_t dy_floats() const { return kPoints * dy_point_floats(); }
  PORTA_OPS_HOST_DEVICE int64_t x_floats() const { return kPoints * x_point_floats(); }
  PORTA_OPS_HOST_DEVICE int64_t group_floats() const {
    return taps_floats() + sums_floats() + dy_floats() + x_floats();
  }
  PORTA_OPS_HOST_DEVICE int64_t packed_floats() const { return runs * group_floats(); }
  // The slots of run r: [first_slot(r), first_slot(r + 1)), none empty (runs <= slots()).
  PORTA_OPS_HOST_DEVICE int64_t first_slot(int64_t run) const { return run * slots() / runs; }
  // Output channels summed together: up to WinogradLayout::kMaxTiles, as even as they divide.
  PORTA_OPS_HOST_DEVICE int64_t block_rows() const {
    const int64_t blocks =
        (out_channels + WinogradLayout::kMaxTiles - 1) / WinogradLayout::kMaxTiles;
    return (out_channels + blocks - 1) / blocks;
  }
  PORTA_OPS_HOST_DEVICE int64_t row_blocks() const {
    return (out_channels + block_rows() - 1) / block_rows();
  }
  // By points: blocks of block_rows() output channels by group_columns blocks of kColumns
  // channels.
  PORTA_OPS_HOST_DEVICE int64_t filter_blocks() const {
    const int64_t blocks = columns() / kColumns;
    return row_blocks() * ((blocks + group_columns - 1) / group_columns);
  }
};

// The layout of packed_a for the bf16 3x3 direct convolution on AMX tiles
// (kernels/conv_direct_tiles.h, ConvArgs::direct_tiles): the weights' tiles, then the input's
// channel pairs, each pair's plane padded with a zero border (rows of W + 2 words).
struct DirectTileLayout {
  static constexpr int64_t kPairs = 16;  // channel pairs a tile holds (A's columns, B's rows)
  static constexpr int64_t kLanes = 16;  // output channels (A's rows) or positions (B's columns)
  static constexpr int64_t kGuard = 16;  // zero words before a padded plane
  static constexpr int kTaps = 9;
  int64_t height, width;  // the images'
  int64_t in_pairs, out_channels;

  PORTA_OPS_HOST_DEVICE int64_t pair_blocks() const { return (in_pairs + kPairs - 1) / kPairs; }
  PORTA_OPS_HOST_DEVICE int64_t output_blocks() const {
    return (out_channels + kDirectOutputs - 1) / kDirectOutputs;
  }
  PORTA_OPS_HOST_DEVICE int64_t row() const { return width + 2; }
  // Pair planes an image takes: whole blocks of kPairs, zero past the channels.
  PORTA_OPS_HOST_DEVICE int64_t planes() const { return pair_blocks() * kPairs; }
  // A padded plane's words: the guard, the padded image, and the reach of the last 32
  // positions' taps past it, to an odd number of lines, so that a tile's 16 rows, a plane
  // apart, fall in 16 sets of the caches (an even number put 28x28's 16 rows in two).
  PORTA_OPS_HOST_DEVICE int64_t plane() const {
    return ((kGuard + (height + 2) * row() + 2 * kLanes + kGuard + 15) / 16 | 1) * 16;
  }
  PORTA_OPS_HOST_DEVICE int64_t weight_words() const {
    return output_blocks() * kDirectOutputs * pair_blocks() * kPairs * kTaps;
  }
  // The weights' tile (o_tile, pair block, tap): 16 output channels' rows of 16 pair words.
  PORTA_OPS_HOST_DEVICE int64_t tile(int64_t o_tile, int64_t pair_block, int tap) const {
    return ((o_tile * pair_blocks() + pair_block) * kTaps + tap) * kLanes * kPairs;
  }
  // Image n's plane of pair p (its guard first).
  PORTA_OPS_HOST_DEVICE int64_t input(int64_t n, int64_t p) const {
    return weight_words() + (n * planes() + p) * plane();
  }
};

// The layout of packed_a for bf16 3x3 backward weights on AMX tiles (ConvArgs::direct_tiles,
// kernels/conv_direct_tiles.h), dw^T = im2col(x) x dy^T over the padded positions: x's planes
// padded as DirectTileLayout's but in bf16 elements and one channel a plane (A's tiles: 16
// channels by 32 positions at a tap's shift), then dy transposed into words of two positions by
// output channel (B's tiles: 16 position pairs by 16 output channels), zero on the border columns.
struct DirectTileWeightsLayout {
  static constexpr int64_t kGuard = 32;      // zero elements before a plane (64 bytes)
  static constexpr int64_t kPositions = 32;  // positions a step: a tile row's 16 pairs
  int64_t batch, channels, height, width, out_channels;

  PORTA_OPS_HOST_DEVICE int64_t row() const { return width + 2; }
  // The padded positions an image contributes, from its first output row's (row() on).
  PORTA_OPS_HOST_DEVICE int64_t depth() const {
    return (height * row() + kPositions - 1) / kPositions * kPositions;
  }
  // Elements a plane takes, an odd number of lines as DirectTileLayout's.
  PORTA_OPS_HOST_DEVICE int64_t plane() const {
    return ((kGuard + (height + 2) * row() + kPositions + kGuard + 31) / 32 | 1) * 32;
  }
  // Steps of kPositions positions an image takes.
  PORTA_OPS_HOST_DEVICE int64_t steps() const { return depth() / kPositions; }
  PORTA_OPS_HOST_DEVICE int64_t channel_blocks() const { return (channels + 15) / 16; }
  PORTA_OPS_HOST_DEVICE int64_t output_pairs() const { return (out_channels + 31) / 32; }
  // x's planes an image takes: whole blocks of 16 channels, zero past the channels.
  PORTA_OPS_HOST_DEVICE int64_t planes() const { return channel_blocks() * 16; }
  // x's plane of image n, channel c, in elements.
  PORTA_OPS_HOST_DEVICE int64_t x(int64_t n, int64_t c) const {
    return (n * planes() + c) * plane();
  }
  // dy^T's words of image n from position pair p: 32 * output_pairs() words a pair, after x's
  // planes (a whole number of 64-byte lines).
  PORTA_OPS_HOST_DEVICE int64_t dy(int64_t n, int64_t p) const {
    return x(batch, 0) / 2 + (n * depth() / 2 + p) * 32 * output_pairs();
  }
  // A group per (block of 16 channels, block of 32 output channels).
  PORTA_OPS_HOST_DEVICE int64_t groups() const { return channel_blocks() * output_pairs(); }
};

// The geometry of a 2-D convolution (NCHW), the first parameter of the conv2d_*_f32 kernels.
struct ConvArgs {
  int64_t batch, channels, height, width;    // N, C, H, W of x
  int64_t out_channels, kernel_h, kernel_w;  // K, R, S of w
  int64_t out_h, out_w;                      // P, Q of y
  int64_t pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w;
  GemmTiles tiles;
  // CPU, fp32 backward data (and 1x1 forward on AVX2): where the _pack kernel put w^T (w), packed
  // for every tile (kernels/gemm_engine_cpu.h: PackedRows); nullptr where each group packs its own
  // (reads w in place).
  float* packed_a;
  // CPU, fp32 backward weights: the GEMM is dw^T = im2col(x) x dy^T, planned by
  // plan_staged_window, its window as A staged from x's rows (conv.h: backward_weights_transposed)
  // or, for a pointwise layer, x's rows read in place (backward_weights_pointwise).
  int64_t transposed;
  // CPU, fp32 and bf16 forward and backward data of a 3x3 layer of stride 1 and padding 1 or a
  // pointwise one (direct_shape): the direct convolution (kernels/conv_direct_cpu.h) from the
  // weights packed into packed_a, each group direct_rows output rows of one image and
  // kDirectOutputs output channels; 0 otherwise. direct_by_image: the groups are numbered output
  // channels fastest, so that a thread's run of groups shares an image's input (read once, the
  // weights once per image), else images fastest (the weights read once, the input once per
  // group of output channels); the host takes the order that reads fewer bytes.
  int64_t direct_rows;
  int64_t direct_by_image;
  // bf16 3x3 on AMX tiles: packed_a laid out as tile_layout() (forward and backward data) or
  // tile_weights_layout() (backward weights) says (kernels/conv_direct_tiles.h).
  int64_t direct_tiles;
  // CPU with AVX-512, fp32 forward and backward data of a 3x3 layer of stride 1 and padding 1:
  // Winograd's F(4x4, 3x3) (kernels/conv_winograd_cpu.h) from the weights transformed into
  // packed_a as winograd_layout() says, each group this many bands of four output rows (images'
  // bands numbered one after another), their tiles multiplied together; 0 otherwise. By points,
  // a slot's bands; winograd_step says what the launch does.
  int64_t winograd, winograd_step;
  // CPU with AVX-512, fp32 backward weights of such a layer by Winograd's F(4x4, 3x3)
  // (winograd_weights_layout()): the slots' runs and the slots a group transforms at a time; by
  // points, the blocks of channels a products group sums.
  int64_t winograd_runs, winograd_chunk, winograd_columns;
  // CPU, backward data of a strided layer, a chunk of `images` images from first_image at a
  // time: each image's dcol[(C,R,S), (P,Q)] = w^T x dy into `columns`, then dx gathered from
  // them (conv.h: backward_data_columns, col2im_row).
  float* columns;
  int64_t first_image, images;

  // The tiles' layout of forward (x into y) or backward data (dy into dx): the input's channels
  // in pairs.
  PORTA_OPS_HOST_DEVICE DirectTileLayout tile_layout(bool backward_data) const {
    const int64_t in = backward_data ? out_channels : channels;
    return {height, width, (in + 1) / 2, backward_data ? channels : out_channels};
  }
  PORTA_OPS_HOST_DEVICE WinogradLayout winograd_layout(bool backward_data) const {
    return {height,
            width,
            backward_data ? out_channels : channels,
            backward_data ? channels : out_channels,
            batch,
            winograd};
  }
  PORTA_OPS_HOST_DEVICE WinogradWeightsLayout winograd_weights_layout() const {
    return {batch,        height,        width,          channels,
            out_channels, winograd_runs, winograd_chunk, winograd_columns};
  }
  PORTA_OPS_HOST_DEVICE DirectTileWeightsLayout tile_weights_layout() const {
    return {batch, channels, height, width, out_channels};
  }

  // The layers the CPU's direct convolution takes (kernels/conv_direct_cpu.h): 3x3 of stride 1
  // and padding 1, or 1x1 without padding, the forward of whose also strided ones, at most
  // kDirectMaxStrideW across; and the fp32 forward of any_filter() layers; undilated (a 1x1
  // layer's dilation changes nothing, but leaves its twin to the engine).
  PORTA_DEVICE_FUNCTION bool direct_shape(bool forward) const {
    const bool undilated = dilation_h == 1 && dilation_w == 1;
    const bool strided_1x1 = forward && one_by_one() && stride_w <= kDirectMaxStrideW;
    return undilated && (same_3x3() || pointwise() || strided_1x1 || (forward && any_filter()));
  }

  // A filter the direct convolution takes at its size (conv_direct_cpu.h: kAnyTaps), forward:
  // neither 3x3 of padding 1 nor 1x1, over at most kDirectMaxAnyFilterChannels input channels, of
  // up to kDirectBlockSteps taps, at most kDirectMaxStrideW across, undilated; a padded one reads a
  // copy of x with the padding around its planes (direct_copy_rows).
  PORTA_DEVICE_FUNCTION bool any_filter() const {
    return !same_3x3() && !one_by_one() && channels <= kDirectMaxAnyFilterChannels &&
           kernel_h * kernel_w <= kDirectBlockSteps && stride_w <= kDirectMaxStrideW &&
           dilation_h == 1 && dilation_w == 1;
  }

  // Whether the direct convolution reads a copy of x with its padding around its planes: a padded
  // any_filter() layer's.
  PORTA_DEVICE_FUNCTION bool direct_copies_padding() const {
    return any_filter() && (pad_h > 0 || pad_w > 0);
  }

  // The direct convolution's output planes, rows x columns: forward's y, backward data's dx
  // (stride 1: dy's size).
  PORTA_DEVICE_FUNCTION int64_t direct_out_rows(bool backward_data) const {
    return backward_data ? height : out_h;
  }
  PORTA_DEVICE_FUNCTION int64_t direct_out_columns(bool backward_data) const {
    return backward_data ? width : out_w;
  }

  // The planes of the input copy that the direct convolution reads, rows x columns (words): an
  // any_filter() layer's padded x; bf16's channel pairs of the positions the outputs read
  // otherwise, as many as the outputs.
  PORTA_DEVICE_FUNCTION int64_t direct_copy_rows(bool backward_data) const {
    return any_filter() ? height + 2 * pad_h : direct_out_rows(backward_data);
  }
  PORTA_DEVICE_FUNCTION int64_t direct_copy_columns(bool backward_data) const {
    return any_filter() ? width + 2 * pad_w : direct_out_columns(backward_data);
  }

  // A 3x3 filter of stride 1 and padding 1, undilated: the output as large as the input.
  PORTA_DEVICE_FUNCTION bool same_3x3() const {
    return kernel_h == 3 && kernel_w == 3 && stride_h == 1 && stride_w == 1 && pad_h == 1 &&
           pad_w == 1 && dilation_h == 1 && dilation_w == 1;
  }

  // A 1x1 filter without padding: output (p, q) reads x at (p * stride_h, q * stride_w) alone.
  PORTA_DEVICE_FUNCTION bool one_by_one() const {
    return kernel_h == 1 && kernel_w == 1 && pad_h == 0 && pad_w == 0;
  }

  // A 1x1 filter of stride 1 and no padding: x[n, c, h, w] is im2col(x), its positions the
  // outputs'.
  PORTA_DEVICE_FUNCTION bool pointwise() const {
    return one_by_one() && stride_h == 1 && stride_w == 1;
  }
};

// What the host knows of the device when it plans a launch.
struct GemmTarget {
  bool host;             // the CPU backend: the packed path
  int64_t threads;       // compute units: threads on the CPU, SMs / CUs on a GPU
  int64_t shared_bytes;  // shared memory a group may use
};

// A launch of the engine: the tiles, and the grid, group and shared memory that go with them;
// with split-K, the partials the host must provide and the launch of the _reduce kernel.
struct GemmPlan {
  GemmTiles tiles;
  uint32_t grid[3];
  uint32_t group[2];
  uint32_t shared_bytes;
  int64_t partial_floats;  // 0 without split-K
  uint32_t reduce_grid[3];
};

namespace plan_detail {
inline int64_t round_up(int64_t a, int64_t b) { return div_up(a, b) * b; }

// Spreads `groups` group numbers over x, then y, then z, each at most 65535 (the portable limit of
// y and z, and what keeps x within every backend's range too). Returns false if they don't fit.
inline bool flat_grid(int64_t groups, uint32_t grid[3]) {
  constexpr int64_t kMax = 65535;
  const int64_t x = min64(groups, kMax);
  const int64_t rest = div_up(groups, x);
  const int64_t y = min64(rest, kMax);
  const int64_t z = div_up(rest, y);
  if (z > kMax) return false;
  grid[0] = static_cast<uint32_t>(x);
  grid[1] = static_cast<uint32_t>(y);
  grid[2] = static_cast<uint32_t>(z);
  return true;
}

// Depth splits that bring `groups` groups up to about `want`, each at least min_depth deep, at
// most max_splits, and within max_floats of partial products (m * n * batch per split). On the
// CPU the total is also rounded to a multiple of the threads when that is cheap, since a few
// large groups balance badly.
inline int64_t choose_splits(int64_t groups, int64_t want, int64_t k, int64_t min_depth,
                             int64_t max_splits, int64_t per_split_floats, int64_t max_floats,
                             int64_t threads) {
  if (groups >= want || k < 2 * min_depth) return 1;
  int64_t splits = min64(min64(div_up(want, groups), k / min_depth), max_splits);
  if (threads > 1) {
    for (int64_t s = splits; s <= min64(k / min_depth, 2 * splits); ++s) {
      if (groups * s % threads == 0) {
        splits = s;
        break;
      }
    }
  }
  splits = min64(splits, max64(1, max_floats / max64(1, per_split_floats)));
  return max64(1, splits);
}
}  // namespace plan_detail

// Tiles, grid, group and shared memory for an m x n x k GEMM over `batch` entries.
//
// CPU: a group is one work-item that computes a tile_m x tile_n tile of C, k in blocks of tile_k:
// per block it packs tile_k x tile_n of B once, then for each block_m rows of its tile packs
// block_m x tile_k of A and runs the micro-kernel over the pair. Both packed blocks are the
// group's shared memory, so (block_m + tile_n) * tile_k floats fit the device's limit (half the
// core's L2, 256 KiB to 1 MiB), and with the C tile they stay in the L2. Large tiles pack each
// element of A and B fewer times (A once per column tile, B once per row tile, unless the
// thread's previous row tile packed the same block). The grid still needs several groups per
// thread, about 4: tiles shrink first (columns to 64, then rows to 64; an A read in place, rows
// to 128 before that), then a deep product splits k (split-K, a fixed-order reduction after),
// then rows shrink further; tiles are evened out so that the last row or column tile is not a
// sliver.
//
// GPU (and the tiled path anywhere): kTiledM x kTiledN tiles, kTiledItems^2 work-items, and
// split-K up to about 2 groups per compute unit when the tiles alone are fewer than the units
// (conv backward-weights: a small dw, a deep N*P*Q).
// a_in_place: fp32 A stored along the depth, which the CPU path reads where it is
// (kernels/gemm_engine_cpu.h: multiply_rows) rather than packing block_m rows of it: shared memory
// then holds B's panel and one MR-row panel of A (a partial last one), and the blocks go as deep
// as that room allows (the whole depth of 2560x64x2560 and 1760x128x1760). Deeper blocks add
// into C fewer times, and a pass over a C that does not stay in the cache costs more than the
// kernel gains from a shallower block (2560x64x2560 and 1760x128x1760 5-9% faster at their whole
// depth than in blocks of 1024 or less).
// a_ahead: A packed for the whole launch before it (conv backward data's weights: ConvArgs::
// packed_a), which takes no shared memory at all; deeper blocks as for a_in_place.
// panels: the kGemmPanels* operands that could be read in place as panels (gemm.cpp). Packing a
// panel costs about a read and a write of it, which pays where each packed element feeds many
// products: B is read in place where a tile has at most kMaxRowsPanelsB rows (35x8457x2560: B
// streamed once from memory by the micro-kernel rather than packed first). Its blocks then need
// no room in shared memory but a partial last strip's.
// Returns false when the grid would not fit (more than 2^48 groups).
inline bool plan_gemm(int64_t m, int64_t n, int64_t k, int64_t batch, const GemmTarget& target,
                      int32_t path, GemmPlan* out, bool a_in_place = false, bool a_ahead = false,
                      int32_t panels = 0) {
  using namespace plan_detail;
  GemmPlan plan{};
  GemmTiles& t = plan.tiles;
  t.path = target.host ? path : kGemmPathTiled;
  const int64_t threads = max64(1, target.threads);
  const int64_t per_split = m * n * batch;  // partial products per split
  int64_t splits = 1;
  if (t.path == kGemmPathTiled) {
    constexpr int64_t kMinSplitDepth = 256, kMaxSplits = 64;
    constexpr int64_t kMaxPartialFloats = int64_t{64} << 20;  // 256 MiB
    t.tile_m = kTiledM;
    t.tile_n = kTiledN;
    t.tile_k = kTiledK;
    t.block_m = kTiledM;
    const int64_t tiles = div_up(m, kTiledM) * div_up(n, kTiledN) * batch;
    // A GPU splits only when the tiles cannot even give each compute unit one group.
    const int64_t tiled_want = target.host ? 4 * threads : tiles < threads ? 2 * threads : 0;
    splits = choose_splits(tiles, tiled_want, k, kMinSplitDepth, kMaxSplits, per_split,
                           kMaxPartialFloats, target.host ? threads : 1);
    plan.group[0] = plan.group[1] = kTiledItems;
    plan.shared_bytes = 0;
  } else {
    constexpr int64_t kMaxTileN = 256, kMinTileN = 64, kMaxBlockM = 96, kMaxTileM = 384;
    constexpr int64_t kMinTileMBeforeSplit = 64;
    // Not below the tiles that read B in place (kMaxRowsPanelsB, below).
    constexpr int64_t kMinRowsFirst = 128;
    constexpr int64_t kMaxTileK = 256;
    constexpr int64_t kMinSplitDepth = 512, kMaxSplits = 16;
    constexpr int64_t kMaxPartialFloats = int64_t{16} << 20;  // 64 MiB
    // A small product takes fewer groups, down to one per thread: each group packs its own panel
    // of B (64^3 in 8 groups packed B 8 times, half the kernels' time), which costs more than
    // a thread left idle for a fraction of a microsecond.
    constexpr double kMinGroupProducts = 1 << 17;
    const double products = static_cast<double>(m) * n * k * batch;
    const int64_t want = products >= 4.0 * threads * kMinGroupProducts
                             ? 4 * threads
                             : max64(threads, static_cast<int64_t>(products / kMinGroupProducts));
    const int64_t rows = round_up(m, kCpuRowMultiple), cols = round_up(n, kCpuColumnMultiple);
    int64_t tile_n = min64(cols, kMaxTileN);
    int64_t tile_m = min64(rows, kMaxTileM);
    auto tiles = [&] { return div_up(m, tile_m) * div_up(n, tile_n) * batch; };
    // Smaller tiles before split-K, whose reduction is a second pass over C (a fifth of the time
    // of 2560x64x2560 when it split); the depth splits only when tiles of 64 rows are too few.
    // An A read in place shrinks its rows first, down to kMinRowsFirst: a row tile streams its
    // rows of A once whatever its width, and a thread's next row tile multiplies the block of B
    // it packed last again (packed_gemm), so narrower columns would only stream A once more.
    if (a_in_place) {
      while (tiles() < want && tile_m > kMinRowsFirst) tile_m -= kCpuRowMultiple;
    }
    while (tiles() < want && tile_n > kMinTileN) tile_n -= kCpuColumnMultiple;
    while (tiles() < want && tile_m > kMinTileMBeforeSplit) tile_m -= kCpuRowMultiple;
    splits = choose_splits(tiles(), want, k, kMinSplitDepth, kMaxSplits, per_split,
                           kMaxPartialFloats, threads);
    while (tiles() * splits < want && tile_m > kCpuRowMultiple) tile_m -= kCpuRowMultiple;
    // Even out: the same number of tiles, as equal as the multiples allow.
    tile_n = round_up(div_up(n, div_up(n, tile_n)), kCpuColumnMultiple);
    tile_m = round_up(div_up(m, div_up(m, tile_m)), kCpuRowMultiple);
    // A blocks of at most kMaxBlockM rows, evened out over the tile's rows.
    const int64_t block_m = round_up(div_up(tile_m, div_up(tile_m, kMaxBlockM)), kCpuRowMultiple);
    constexpr int64_t kMaxRowsPanelsB = 64;
    if (tile_m <= kMaxRowsPanelsB) t.panels_in_place |= panels & kGemmPanelsB;
    const bool b_panels = t.panels_in_place & kGemmPanelsB;
    const int64_t depth = div_up(k, splits);
    // B's block read in place is read again from L2 by every panel of A: as deep as a packed one.
    // Otherwise an A not packed per block leaves the room to B alone: as deep as it holds.
    int64_t tile_k = (a_in_place || a_ahead) && !b_panels ? depth : min64(depth, kMaxTileK);
    const int64_t a_rows = a_ahead ? 0 : a_in_place ? kCpuRowMultiple : block_m;
    const int64_t b_cols = b_panels ? kCpuColumnMultiple : tile_n;
    const int64_t per_depth = (a_rows + b_cols) * static_cast<int64_t>(sizeof(float));
    // A packed per block takes a gap after each strip besides.
    const int64_t gaps = a_ahead || a_in_place ? 0 : strip_gap_bytes(block_m);
    const int64_t room = max64(per_depth, target.shared_bytes - gaps);
    if (tile_k * per_depth > room) tile_k = max64(1, room / per_depth);
    // An even split of the depth into blocks, so the last is not a sliver either.
    tile_k = div_up(depth, div_up(depth, tile_k));
    // Even where the depth takes several blocks, so that no pair of depths straddles two: the
    // bf16 kernel reads A's rows in place as pairs (kernels/gemm_engine_cpu_bf16.h).
    if (tile_k % 2 == 1 && tile_k < depth) {
      if ((tile_k + 1) * per_depth <= room) {
        ++tile_k;
      } else if (tile_k > 1) {
        --tile_k;
      }
    }
    t.tile_m = static_cast<int32_t>(tile_m);
    t.tile_n = static_cast<int32_t>(tile_n);
    t.tile_k = static_cast<int32_t>(tile_k);
    t.block_m = static_cast<int32_t>(block_m);
    plan.group[0] = plan.group[1] = 1;
    plan.shared_bytes = static_cast<uint32_t>(tile_k * per_depth + gaps);
  }
  t.tiles_m = div_up(m, t.tile_m);
  t.tiles_n = div_up(n, t.tile_n);
  // Whole tile_k blocks per split where that loses nothing; then drop splits left empty.
  t.split_depth = div_up(k, splits);
  if (splits > 1) t.split_depth = round_up(t.split_depth, t.tile_k);
  t.splits = static_cast<int32_t>(div_up(k, t.split_depth));
  t.partials = nullptr;
  plan.partial_floats = t.splits > 1 ? per_split * t.splits : 0;
  int64_t groups;
  if (__builtin_mul_overflow(t.tiles_m, t.tiles_n, &groups) ||
      __builtin_mul_overflow(groups, batch * t.splits, &groups) || !flat_grid(groups, plan.grid) ||
      !flat_grid(reduce_groups(m, n, batch, target.host), plan.reduce_grid)) {
    return false;
  }
  *out = plan;
  return true;
}

// Conv backward weights on the CPU as dw^T = im2col(x) x dy^T (conv.h:
// backward_weights_transposed): A is the window, whose rows (c, r, s) the packed path reads from
// x's rows staged per depth block (kernels/gemm_engine_cpu.h, packed_gemm of a window), B is dy^T,
// packed. The geometry the staged rows take (for a pointwise layer, none: in_place):
struct StagedWindow {
  int64_t taps;       // R * S: A's rows per channel
  int64_t positions;  // P * Q: depths per image
  int64_t row;        // Q: depths per output row
  int64_t row_step;   // min(stride_h, reach_h): staged rows from one output row to the next
  int64_t reach_h;    // (R - 1) * dilation_h + 1: staged rows one output row reads
  int64_t width;      // a staged row: (S - 1) * dilation_w + Q, or S * Q strided across

  // The window of a layer of R x S filters and P x Q outputs. Of stride 1 across, a staged row
  // is the taps' reach along x's row; strided, a run of Q per tap across.
  static PORTA_OPS_HOST_DEVICE StagedWindow of_layer(int64_t r, int64_t s, int64_t p, int64_t q,
                                                     int64_t stride_h, int64_t stride_w,
                                                     int64_t dilation_h, int64_t dilation_w) {
    const int64_t reach_h = (r - 1) * dilation_h + 1;
    return {r * s,   p * q,
            q,       stride_h < reach_h ? stride_h : reach_h,
            reach_h, stride_w == 1 ? (s - 1) * dilation_w + q : s * q};
  }

  // A pointwise layer's (ConvArgs::pointwise): nothing staged, A's rows are x's, read in place
  // within an image (conv.h: backward_weights_pointwise).
  static PORTA_OPS_HOST_DEVICE StagedWindow in_place(int64_t p, int64_t q) {
    return {1, p * q, q, 1, 1, 0};
  }
  PORTA_OPS_HOST_DEVICE bool staged() const { return width > 0; }

  // The floats staged for a depth block of kb (within one image, from any position) of a tile
  // of `rows` rows of A starting anywhere: its channels' rows that the block's output rows reach.
  // In place, a partial last panel of A, padded (kCpuRowMultiple rows).
  PORTA_OPS_HOST_DEVICE int64_t floats(int64_t rows, int64_t kb) const {
    if (!staged()) return kCpuRowMultiple * kb;
    const int64_t channels = div_up(rows - 1, taps) + 1;
    const int64_t out_rows = min64(div_up(kb - 1, row) + 1, positions / row);
    return channels * ((out_rows - 1) * row_step + reach_h) * width;
  }
};

// The most rows of A a staged tile takes (the kernel keeps a pointer per row on its stack).
inline constexpr int64_t kMaxStagedTileM = 1152;

// The CPU plan of a staged window (m = C*R*S rows, n = K columns, k = N*P*Q deep), or of a
// pointwise layer's x read in place (StagedWindow::in_place). Each tile packs B (dy^T) for its
// depth again, so the tiles take all rows they can (up to kMaxStagedTileM) and all columns (up to
// 256), and the depth splits instead (split-K: a partial dw^T per split, added up by the _reduce
// kernel) into about kGroupsPerThread groups per thread. Depth blocks are whole output rows where
// a row fits (then no block starts within a row), as deep as shared memory holds B's panel beside
// the staged rows, up to 1024; x read in place takes whole images where one fits (each image a
// run of the rows kernel: StridedOperand::row_runs), else a block within one image. Returns false
// where not even one depth of a tile fits (staged, an output row or kMinStagedDepth), or the
// grid would not hold the groups; in place, also where a block would cross images within a run
// or the depth does not split.
inline bool plan_staged_window(int64_t m, int64_t n, int64_t k, const StagedWindow& w,
                               const GemmTarget& target, int32_t path, GemmPlan* out) {
  using namespace plan_detail;
  constexpr int64_t kMaxTileN = 256, kMaxTileK = 1024, kGroupsPerThread = 2;
  constexpr int64_t kMinSplitDepth = 512, kMaxSplits = 16;
  constexpr int64_t kMaxPartialFloats = int64_t{16} << 20;  // 64 MiB
  GemmPlan plan{};
  GemmTiles& t = plan.tiles;
  t.path = path;
  const int64_t threads = max64(1, target.threads);
  const int64_t tile_n = round_up(div_up(n, div_up(n, kMaxTileN)), kCpuColumnMultiple);
  const int64_t tile_m = round_up(div_up(m, div_up(m, kMaxStagedTileM)), kCpuRowMultiple);
  t.tiles_m = div_up(m, tile_m);
  t.tiles_n = div_up(n, tile_n);
  const int64_t splits =
      choose_splits(t.tiles_m * t.tiles_n, kGroupsPerThread * threads, k, kMinSplitDepth,
                    kMaxSplits, m * n, kMaxPartialFloats, threads);
  const int64_t depth = div_up(k, splits);
  const int64_t room = target.shared_bytes / int64_t(sizeof(float));
  auto fits = [&](int64_t kb) { return tile_n * kb + w.floats(tile_m, kb) <= room; };
  int64_t tile_k = min64(depth, kMaxTileK);
  if (w.staged()) tile_k = min64(tile_k, w.positions);
  while (tile_k > 1 && !fits(tile_k)) --tile_k;
  // Staged, a block copies its rows whole however few depths it takes: blocks shorter than an
  // output row and than kMinStagedDepth copy more than they multiply (DeepSpeech's 20x5 filter
  // over rows of 341, blocks of 1: 45x the plain plan's time).
  constexpr int64_t kMinStagedDepth = 64;
  if (!fits(tile_k) || (w.staged() && tile_k < min64(kMinStagedDepth, w.row))) return false;
  if (!w.staged() && tile_k >= w.positions) {  // whole images
    tile_k = tile_k / w.positions * w.positions;
  } else if (tile_k >= w.row) {  // whole output rows, a divisor of the image's where one is near
    const int64_t rows = tile_k / w.row, image_rows = w.positions / w.row;
    int64_t even = rows;
    while (2 * even >= rows && image_rows % even != 0) --even;
    tile_k = (2 * even >= rows ? even : rows) * w.row;
  }
  t.tile_m = static_cast<int32_t>(tile_m);
  t.tile_n = static_cast<int32_t>(tile_n);
  t.tile_k = static_cast<int32_t>(tile_k);
  t.block_m = static_cast<int32_t>(w.staged() ? tile_m : kCpuRowMultiple);
  t.split_depth = splits > 1 ? round_up(depth, tile_k) : k;
  t.splits = static_cast<int32_t>(div_up(k, t.split_depth));
  // A read in place needs every block within one image or of whole images (else it packs blocks
  // of kCpuRowMultiple rows, all the room it has), and a split depth: the partials are stored as
  // the micro-tiles lie, where dw^T itself takes a scattered store of each micro-tile per block.
  if (!w.staged() && ((w.positions % tile_k != 0 && tile_k % w.positions != 0) || t.splits == 1)) {
    return false;
  }
  t.partials = nullptr;
  plan.group[0] = plan.group[1] = 1;
  plan.shared_bytes =
      static_cast<uint32_t>((tile_n * tile_k + w.floats(tile_m, tile_k)) * sizeof(float));
  plan.partial_floats = t.splits > 1 ? m * n * t.splits : 0;
  if (!flat_grid(t.tiles_m * t.tiles_n * t.splits, plan.grid) ||
      !flat_grid(reduce_groups(m, n, 1, true), plan.reduce_grid)) {
    return false;
  }
  *out = plan;
  return true;
}

// For a depth made of runs of `period` consecutive elements of A's rows (conv backward-weights:
// dy's output positions of one image), a CPU plan whose tile_k divides the period keeps every
// depth block within one run, so that the packed path reads A in place (StridedOperand::
// rows_in_place) instead of packing it. Takes the largest even divisor of the period between half
// the planned tile_k and tile_k (shared memory then has room), with the splits rounded to it;
// keeps the plan where there is none or the tiled path runs.
inline void align_depth_blocks(int64_t period, int64_t m, int64_t n, int64_t k, int64_t batch,
                               GemmPlan* plan) {
  using namespace plan_detail;
  GemmTiles& t = plan->tiles;
  if (t.path == kGemmPathTiled || period <= 0 || k <= t.tile_k) return;
  int64_t tile_k = t.tile_k;
  while (tile_k >= 2 && 2 * tile_k >= t.tile_k && (period % tile_k != 0 || tile_k % 2 != 0)) {
    --tile_k;
  }
  if (tile_k < 2 || 2 * tile_k < t.tile_k) return;
  t.tile_k = static_cast<int32_t>(tile_k);
  if (t.splits > 1) {
    t.split_depth = round_up(t.split_depth, tile_k);
    t.splits = static_cast<int32_t>(div_up(k, t.split_depth));
    plan->partial_floats = t.splits > 1 ? m * n * batch * t.splits : 0;
    flat_grid(t.tiles_m * t.tiles_n * batch * t.splits, plan->grid);  // fewer groups: it fits
  }
}

// The products (rows x columns of C) that the busiest of `threads` threads computes when they
// claim a plan's groups one at a time in grid order, as the CPU backend's pool does.
inline int64_t busiest_thread(int64_t m, int64_t n, int64_t batch, const GemmTiles& t,
                              int64_t threads) {
  constexpr int64_t kMaxThreads = 256;
  int64_t load[kMaxThreads] = {};
  threads = min64(max64(1, threads), kMaxThreads);
  const int64_t groups = t.tiles_m * t.tiles_n * t.splits * batch;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t i = g % t.tiles_m, j = g / t.tiles_m % t.tiles_n;
    int64_t* idle = load;
    for (int64_t* l = load + 1; l < load + threads; ++l) idle = *l < *idle ? l : idle;
    *idle += min64(t.tile_m, m - i * t.tile_m) * min64(t.tile_n, n - j * t.tile_n);
  }
  int64_t most = 0;
  for (int64_t l = 0; l < threads; ++l) most = max64(most, load[l]);
  return most;
}

// A CPU plan with few groups per thread loses the difference between its busiest thread and
// the average at the end of every call: 13 tiles on 2 threads, or 8 whose last is a sliver, or 9
// (an eighth of a conv backward-weights). Where the groups are that few (the pool then hands them
// out one at a time), this cuts the columns into between half and twice as many tiles, of 64 to
// 256 columns within `shared_bytes`, where that lowers the busiest thread's share; the most
// tiles among equals, which absorb a thread that starts late. a_rows: the rows of A a group
// keeps in shared memory beside B's panel (the plan's block_m, or 0 where A is packed ahead).
inline void balance_column_tiles(int64_t m, int64_t n, int64_t batch, int64_t threads,
                                 int64_t shared_bytes, int64_t a_rows, GemmPlan* plan) {
  using namespace plan_detail;
  constexpr int64_t kMinTileN = 64, kMaxTileN = 256, kMaxGroupsPerThread = 16;
  GemmTiles& t = plan->tiles;
  const int64_t others = t.tiles_m * t.splits * batch;
  if (t.path == kGemmPathTiled || threads < 2 ||
      others * t.tiles_n > kMaxGroupsPerThread * threads) {
    return;
  }
  const int64_t per_column = int64_t{t.tile_k} * static_cast<int64_t>(sizeof(float));
  GemmTiles best = t;
  int64_t best_load = busiest_thread(m, n, batch, t, threads);
  for (int64_t tiles_n = div_up(t.tiles_n, 2); tiles_n <= 2 * t.tiles_n; ++tiles_n) {
    GemmTiles c = t;
    c.tile_n = static_cast<int32_t>(round_up(div_up(n, tiles_n), kCpuColumnMultiple));
    c.tiles_n = div_up(n, c.tile_n);
    if (c.tile_n > kMaxTileN || c.tile_n < min64(kMinTileN, t.tile_n) ||
        others * c.tiles_n > kMaxGroupsPerThread * threads ||
        (a_rows + c.tile_n) * per_column + strip_gap_bytes(a_rows) > shared_bytes) {
      continue;
    }
    // Strictly less than the plan's own; then the most tiles.
    const int64_t load = busiest_thread(m, n, batch, c, threads);
    if (load < best_load ||
        (load == best_load && best.tile_n != t.tile_n && c.tiles_n > best.tiles_n)) {
      best = c;
      best_load = load;
    }
  }
  if (best.tile_n == t.tile_n) return;
  t = best;
  plan->shared_bytes = static_cast<uint32_t>(
      max64(plan->shared_bytes, (a_rows + t.tile_n) * per_column + strip_gap_bytes(a_rows)));
  flat_grid(others * t.tiles_n, plan->grid);  // a few groups: it fits
}

}  // namespace porta_ops
