// porta_conv2d_forward / _backward_data / _backward_weights against the float64 reference:
// stride 2, padding (also larger than half the kernel, and different per axis), dilation 2,
// 1x1 and 7x7 kernels, even and very wide kernels, non-square inputs, odd channel counts, outputs
// of width 1, DeepBench training layers scaled down; f16/bf16 inputs where offered.
//
// Tolerances: every output element is a sum of fp32 products, so, as for GEMM (test_gemm.cpp),
// its rounding error is at most gamma_n times the sum of the magnitudes of its terms, whatever
// the algorithm's order (direct, implicit GEMM, im2col + GEMM, split reductions), with n the
// number of terms plus one. We allow (n + 2) * 2^-23 = 2(n + 2)u times that magnitude sum (the
// reference computes it from absolute values), with n
//   forward:          C * R * S        (in_channels x kernel window)
//   backward-data:    K * R * S        (out_channels x kernel window: an upper bound on the
//                                       number of (k, r, s) that reach one input element)
//   backward-weights: N * P * Q        (batch x output positions)
// A Winograd or FFT algorithm can exceed it; porta_ops.h promises fp32 math, so that is a failure
// worth seeing.
//
// f16 and bf16 inputs are drawn as values the dtype holds exactly and the reference takes those,
// so only the fp32 accumulation is measured: products of 11- or 8-bit significands are exact in
// fp32, and the bound above holds unchanged, n terms per element as listed (it also covers tensor
// cores whose accumulation truncates: 2u per addition at most). All three passes are checked for
// both dtypes on strides, padding, dilation, 1x1 and 7x7 kernels, misaligned (2-byte) tensors and
// deep backward-weights reductions. The portable implementation must provide them.
#include <sstream>

#include "ops_test.h"

using namespace ops_test;

namespace {

struct ConvCase {
  int64_t n, c, h, w, k, r, s;
  int64_t pad_h = 0, pad_w = 0, stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
};

porta_conv2d_desc_t desc_of(const ConvCase& c, porta_dtype_t dtype = PORTA_DTYPE_F32) {
  porta_conv2d_desc_t d{};
  d.struct_size = sizeof d;
  d.batch = c.n, d.in_channels = c.c, d.in_height = c.h, d.in_width = c.w;
  d.out_channels = c.k, d.kernel_height = c.r, d.kernel_width = c.s;
  d.pad_h = c.pad_h, d.pad_w = c.pad_w, d.stride_h = c.stride_h, d.stride_w = c.stride_w;
  d.dilation_h = c.dilation_h, d.dilation_w = c.dilation_w;
  d.dtype = dtype;
  return d;
}

std::string describe(const porta_conv2d_desc_t& d) {
  std::ostringstream out;
  out << "x " << d.batch << "x" << d.in_channels << "x" << d.in_height << "x" << d.in_width
      << ", w " << d.out_channels << "x" << d.in_channels << "x" << d.kernel_height << "x"
      << d.kernel_width << ", pad " << d.pad_h << "," << d.pad_w << " stride " << d.stride_h << ","
      << d.stride_w << " dilation " << d.dilation_h << "," << d.dilation_w << " dtype " << d.dtype;
  return out.str();
}

// The three passes of one convolution on fresh data, each checked. A failing pass is a failure,
// except UNSUPPORTED for 16-bit inputs; either way it must have written nothing. Returns the
// first status that was not SUCCESS.
porta_status_t run_conv(const Env& env, const ConvCase& c, uint64_t seed,
                        porta_dtype_t dtype = PORTA_DTYPE_F32, bool misaligned = false) {
  const porta_conv2d_desc_t d = desc_of(c, dtype);
  INFO("conv " << describe(d) << (misaligned ? ", misaligned" : "") << ", seed " << seed);
  const ops_ref::ConvShape shape = ops_ref::conv_shape(d);
  int64_t p = 0, q = 0;
  PT_CHECK_OK(porta_conv2d_output_size(&d, &p, &q));
  CHECK(p == shape.out_height);
  CHECK(q == shape.out_width);

  Rng rng(seed);
  std::vector<float> x = normal(rng, shape.x_count), w = normal(rng, shape.w_count);
  const std::vector<float> dy = normal(rng, shape.y_count);
  std::vector<float> dy_in = dy;
  if (dtype == PORTA_DTYPE_F16) x = round_to_f16(x), w = round_to_f16(w), dy_in = round_to_f16(dy);
  if (dtype == PORTA_DTYPE_BF16) {
    x = round_to_bf16(x), w = round_to_bf16(w), dy_in = round_to_bf16(dy);
  }
  const std::vector<double> xd = widen(x), wd = widen(w), dyd = widen(dy_in);

  // Inputs in the dtype; outputs fp32, poisoned.
  const bool f32 = dtype == PORTA_DTYPE_F32;
  const auto lead = [&](int i) { return lead_for(misaligned, i); };
  Floats fx(env, f32 ? x.size() : 0, kGuard, lead(0)), fw(env, f32 ? w.size() : 0, kGuard, lead(1)),
      fdy(env, f32 ? dy.size() : 0, kGuard, lead(2));
  DeviceArray<uint16_t> hx(env, f32 ? 0 : x.size(), kGuard, lead(0)),
      hw(env, f32 ? 0 : w.size(), kGuard, lead(1)), hdy(env, f32 ? 0 : dy.size(), kGuard, lead(2));
  const void *px, *pw, *pdy;
  if (f32) {
    fx.upload(x), fw.upload(w), fdy.upload(dy);
    px = fx.get(), pw = fw.get(), pdy = fdy.get();
  } else {
    hx.upload(encode(dtype, x)), hw.upload(encode(dtype, w)), hdy.upload(encode(dtype, dy_in));
    px = hx.get(), pw = hw.get(), pdy = hdy.get();
  }
  Floats y(env, shape.y_count, kGuard, lead(1)), dx(env, shape.x_count, kGuard, lead(2)),
      dw(env, shape.w_count, kGuard, lead(0));

  const std::vector<int64_t> x_dims{d.batch, d.in_channels, d.in_height, d.in_width};
  const std::vector<int64_t> w_dims{d.out_channels, d.in_channels, d.kernel_height, d.kernel_width};
  const std::vector<int64_t> y_dims{d.batch, d.out_channels, p, q};
  porta_status_t first_failure = PORTA_SUCCESS;
  const auto outcome = [&](porta_status_t status, const Floats& out, const char* what) {
    env.sync();
    if (status != PORTA_SUCCESS) {
      INFO(what << ": " << porta_status_name(status) << ": " << porta_last_error_message());
      if (f32 || status != PORTA_ERROR_UNSUPPORTED || portable_ops()) {
        FAIL_CHECK("the pass failed");
      }
      out.check_unchanged(what);
      if (first_failure == PORTA_SUCCESS) first_failure = status;
      return false;
    }
    out.check_guard(what);
    return true;
  };

  {  // forward
    const porta_status_t status = porta_conv2d_forward(env.stream(), &d, px, pw, y.get());
    if (outcome(status, y, "y")) {
      std::vector<double> ref(shape.y_count), scale(shape.y_count);
      ops_ref::conv2d_forward(d, xd.data(), wd.data(), ref.data());
      ops_ref::conv2d_forward(d, abs_of(xd).data(), abs_of(wd).data(), scale.data());
      Comparison cmp = compare("forward y", y.download(), ref, scale,
                               double(d.in_channels * d.kernel_height * d.kernel_width + 2) * kUlp);
      PT_CHECK_CLOSE(cmp.dims(y_dims));
    }
  }
  {  // backward data
    const porta_status_t status = porta_conv2d_backward_data(env.stream(), &d, pdy, pw, dx.get());
    if (outcome(status, dx, "dx")) {
      std::vector<double> ref(shape.x_count), scale(shape.x_count);
      ops_ref::conv2d_backward_data(d, dyd.data(), wd.data(), ref.data());
      ops_ref::conv2d_backward_data(d, abs_of(dyd).data(), abs_of(wd).data(), scale.data());
      Comparison cmp =
          compare("backward-data dx", dx.download(), ref, scale,
                  double(d.out_channels * d.kernel_height * d.kernel_width + 2) * kUlp);
      PT_CHECK_CLOSE(cmp.dims(x_dims));
    }
  }
  {  // backward weights
    const porta_status_t status =
        porta_conv2d_backward_weights(env.stream(), &d, px, pdy, dw.get());
    if (outcome(status, dw, "dw")) {
      std::vector<double> ref(shape.w_count), scale(shape.w_count);
      ops_ref::conv2d_backward_weights(d, xd.data(), dyd.data(), ref.data());
      ops_ref::conv2d_backward_weights(d, abs_of(xd).data(), abs_of(dyd).data(), scale.data());
      Comparison cmp = compare("backward-weights dw", dw.download(), ref, scale,
                               double(d.batch * p * q + 2) * kUlp);
      PT_CHECK_CLOSE(cmp.dims(w_dims));
    }
  }
  if (f32) {
    fx.check_unchanged("x"), fw.check_unchanged("w"), fdy.check_unchanged("dy");
  } else {
    hx.check_unchanged("x"), hw.check_unchanged("w"), hdy.check_unchanged("dy");
  }
  return first_failure;
}

void run_f32(const Env& env, const ConvCase& c, uint64_t seed) { run_conv(env, c, seed); }

// On the CPU, forward and backward data of a 3x3 layer of stride 1 and padding 1, and the forward
// of a 1x1 layer (strided too) or of a filter of any size over at most 4 input channels, run as
// a direct convolution (kernels/conv_direct_cpu.h). The cases for the implicit GEMM's paths take
// such a layer dilated 2 down its rows instead, padded there for as many output rows (exactly so
// for filters of odd height): the same GEMM (its sizes, its output positions, its runs of x per
// tap), which the direct convolution does not take.
ConvCase implicit_gemm_twin(ConvCase c) {
  const bool undilated = c.dilation_h == 1 && c.dilation_w == 1;
  const bool unit_stride = c.stride_h == 1 && c.stride_w == 1;
  const bool same_3x3 = c.r == 3 && c.s == 3 && c.pad_h == 1 && c.pad_w == 1 && unit_stride;
  const bool one_by_one = c.r == 1 && c.s == 1 && c.pad_h == 0 && c.pad_w == 0;
  const bool any_filter = c.c <= 4 && c.r * c.s <= 288 && c.stride_w <= 2;
  if (undilated && (same_3x3 || one_by_one || any_filter)) {
    c.pad_h += (c.r - 1) / 2, c.dilation_h = 2;
  }
  return c;
}

void run_implicit_gemm_f32(const Env& env, const ConvCase& c, uint64_t seed) {
  run_conv(env, implicit_gemm_twin(c), seed);
}

// Each case in bf16 (or its implicit_gemm_twin), every other one from a misaligned offset; stops
// with a warning where this implementation has no bf16.
template <size_t N>
void run_bf16_cases(const Env& env, const ConvCase (&cases)[N], bool implicit_gemm = false) {
  uint64_t index = 0;
  for (const ConvCase& c : cases) {
    const bool misaligned = index % 2 == 1;
    if (run_conv(env, implicit_gemm ? implicit_gemm_twin(c) : c, seed_for(index++),
                 PORTA_DTYPE_BF16, misaligned) == PORTA_ERROR_UNSUPPORTED) {
      WARN("porta_conv2d_*: bf16 is UNSUPPORTED by this implementation");
      return;
    }
  }
}

}  // namespace

TEST_CASE("conv2d: forward and both backward passes, odd and non-square shapes", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {1, 1, 1, 1, 1, 1, 1},              // the smallest
      {2, 3, 7, 9, 5, 3, 3, 1, 1},        // 3x3 "same", non-square
      {1, 1, 33, 1, 1, 3, 1, 1, 0},       // a column
      {3, 7, 9, 9, 3, 2, 2},              // even kernel, no padding
      {1, 2, 5, 4, 7, 5, 4},              // the kernel covers the input: 1x1 output
      {2, 3, 8, 10, 4, 3, 3, 2, 2},       // padding beyond half the kernel
      {1, 4, 6, 11, 3, 3, 5, 0, 2},       // padding on one axis only
      {2, 5, 7, 7, 2, 3, 3, 0, 0, 5, 5},  // stride past the input: width-1 output
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
}

TEST_CASE("conv2d: stride 2, dilation 2, and mixed strides and dilations", "[conv]") {
  Env env;
  const ConvCase cases[] = {
      {2, 4, 13, 11, 6, 3, 3, 1, 1, 2, 2},        // stride 2
      {1, 5, 12, 15, 4, 3, 3, 2, 2, 1, 1, 2, 2},  // dilation 2, "same" padding
      {2, 3, 17, 16, 7, 3, 3, 1, 1, 2, 2, 2, 2},  // stride 2 and dilation 2
      {1, 3, 9, 20, 5, 2, 3, 1, 0, 1, 3, 2, 1},   // stride 1x3, dilation 2x1
      {2, 2, 10, 9, 3, 3, 2, 0, 1, 3, 1, 1, 3},   // stride 3x1, dilation 1x3
      {1, 6, 15, 15, 2, 1, 1, 0, 0, 2, 2},        // 1x1 kernel, stride 2
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
}

// On the CPU, backward data of a layer of stride above 1 is a GEMM of each image's columns
// (w^T x dy) and then dx gathered from them, a chunk of images at a time: 1 Mi floats of columns
// a chunk (conv.cpp: launch_data_by_columns). The cases above cover the strides, paddings and
// dilations; these the chunks, a GEMM deep enough for its depth to be split, and rows and
// columns of dx that no tap reaches; in fp32, f16 and bf16.
TEST_CASE("conv2d: strided backward data through columns, a chunk of images at a time", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {3, 16, 108, 108, 8, 3, 3, 1, 1, 2, 2},  // 419,904 columns an image: chunks of 2, then 1
      {1, 1, 8, 8, 2048, 2, 2, 0, 0, 2, 2},    // 4 x 16 columns 2048 deep
      {2, 3, 11, 10, 4, 2, 2, 0, 0, 3, 3},     // 2x2 taps 3 apart: every third row, column missed
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
  for (porta_dtype_t dtype : {PORTA_DTYPE_F16, PORTA_DTYPE_BF16}) {
    for (const ConvCase& c : cases) {
      const bool misaligned = index % 2 == 1;
      if (run_conv(env, c, seed_for(index++), dtype, misaligned) == PORTA_ERROR_UNSUPPORTED) {
        WARN("porta_conv2d_*: dtype " << dtype << " is UNSUPPORTED by this implementation");
        break;
      }
    }
  }
}

TEST_CASE("conv2d: 1x1 and 7x7 kernels", "[conv]") {
  Env env;
  const ConvCase cases[] = {
      {3, 33, 7, 5, 17, 1, 1},              // 1x1: a GEMM over channels
      {1, 129, 3, 3, 7, 1, 1},              // 1x1, many channels
      {2, 3, 37, 37, 8, 7, 7, 3, 3, 2, 2},  // the ResNet stem, scaled
      {1, 3, 70, 66, 8, 7, 7, 3, 3, 2, 2},  // rows of 33: strips two apart over two rows
      {1, 2, 9, 13, 3, 7, 7, 3, 3},         // 7x7 "same" on a small input
      {1, 4, 20, 36, 6, 7, 7, 3, 3},        // 7x7 "same": strips read in place, 49 taps
      {1, 2, 40, 40, 3, 9, 9, 4, 4, 2, 2},  // 81 taps: more than the masks kept, gathered
      {1, 1, 7, 7, 1, 7, 7},                // 7x7 over a 7x7 input
  };
  // Those over a few channels are direct convolutions forward; their twins take the implicit
  // GEMM's windows.
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
  for (const ConvCase& c : cases) run_implicit_gemm_f32(env, c, seed_for(index++));
}

TEST_CASE("conv2d: tensors at any 4-byte offset", "[conv]") {
  Env env;
  const ConvCase cases[] = {
      {2, 3, 7, 9, 5, 3, 3, 1, 1},
      {2, 4, 13, 11, 6, 3, 3, 1, 1, 2, 2},
      {3, 33, 7, 5, 17, 1, 1},
      {2, 16, 14, 14, 16, 3, 3, 1, 1},
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_conv(env, c, seed_for(index++), PORTA_DTYPE_F32, true);
}

TEST_CASE("conv2d: DeepBench training layers, scaled down", "[conv][deepbench]") {
  // conv_problems.h (porta-bench's shapes) with N, C, K and the image divided down.
  Env env;
  const ConvCase cases[] = {
      {2, 16, 14, 14, 16, 3, 3, 1, 1},        // #2: 56x56x64, 3x3
      {2, 32, 7, 7, 31, 3, 3, 1, 1},          // #3: 28x28x128, 3x3
      {1, 64, 7, 7, 33, 3, 3, 1, 1},          // #4: 7x7x512, 3x3
      {2, 32, 15, 15, 16, 1, 1, 0, 0, 2, 2},  // #5: 1x1, stride 2
      {1, 129, 7, 7, 33, 1, 1},               // #6: 14x14x1024, 1x1
      {2, 1, 21, 87, 4, 5, 20, 0, 0, 2, 2},   // #8: speech, 5x20 kernel, stride 2
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
}

TEST_CASE("conv2d: porta-train layers, batch scaled down, f32 and bf16", "[conv]") {
  // 3x3 "same" on 28x28 and 14x14: the windows of backward-weights are gathered eight output
  // positions of a row at a time, masked where they cross the image's edges; C = 1 leaves the
  // im2col a single channel.
  Env env;
  const ConvCase cases[] = {
      {4, 1, 28, 28, 32, 3, 3, 1, 1},
      {2, 32, 14, 14, 64, 3, 3, 1, 1},
  };
  uint64_t index = 0;
  for (porta_dtype_t dtype : {PORTA_DTYPE_F32, PORTA_DTYPE_BF16}) {
    for (const ConvCase& c : cases) {
      if (run_conv(env, c, seed_for(index++), dtype) == PORTA_ERROR_UNSUPPORTED) break;
    }
  }
}

// The operands' own paths: backward-weights' dy read in place where a depth block stays within
// one image (blocks planned to divide the image's positions, blocks at odd offsets, blocks
// crossing images packed, split-K); backward-data split deep and with fewer rows than a
// micro-tile.
const ConvCase kOperandCases[] = {
    {1, 8, 4, 4, 512, 3, 3, 1, 1},   // backward-data: m = 8, k = 4608, split
    {1, 5, 6, 6, 7, 3, 3, 1, 1},     // C = 5: fewer rows than a micro-tile
    {3, 4, 18, 18, 16, 3, 3, 1, 1},  // 324 positions an image: blocks of 162
    {2, 3, 23, 23, 8, 3, 3, 1, 1},   // 529: blocks at odd offsets, one crossing
    {8, 2, 16, 18, 4, 3, 3, 1, 1},   // 288 an image, 2304 deep: split
};

TEST_CASE("conv2d: dy read in place within an image", "[conv]") {
  Env env;
  uint64_t index = 0;
  for (const ConvCase& c : kOperandCases) run_implicit_gemm_f32(env, c, seed_for(index++));
}

// bf16 rows in place are read as pairs of depths (vdpbf16ps), also from odd offsets; f16 takes
// no path of its own (its A is always packed).
TEST_CASE("conv2d: dy read in place within an image, bf16", "[conv][16bit]") {
  Env env;
  run_bf16_cases(env, kOperandCases, true);
}

// The CPU engine adds each 32-column micro-tile into an output row as one run of consecutive
// elements, or as two where the strip crosses from one image into the next (masked vector
// stores), and element by element where images are narrower than a strip; in a second depth
// block the runs are read and added to.
TEST_CASE("conv2d: output strips crossing images, within and past the first depth block",
          "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {3, 40, 14, 14, 300, 1, 1},      // 196 positions: two runs; backward data 300 deep
      {2, 8, 5, 7, 33, 3, 3, 1, 1},    // 35 positions: runs split at every lane, a last strip of 6
      {1, 16, 9, 9, 24, 3, 3, 1, 1},   // batch 1, 81 positions: a last strip of 17
      {5, 3, 4, 4, 40, 3, 3, 1, 1},    // 16 positions: three runs a strip, element by element
      {4, 24, 6, 6, 520, 3, 3, 1, 1},  // 36 positions, backward data 4680 deep: split
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_implicit_gemm_f32(env, c, seed_for(index++));
}

// On the CPU, forward and backward data of 3x3 layers of stride 1 and padding 1, pointwise
// layers' forward, and their fp32 backward data where dy has as many channels as dx or more, are
// direct convolutions: micro-tiles of up to 14 positions of a row (6 on AVX2 and the baseline),
// or of two rows where the image is at most half that wide, each tap leaving out the positions it
// would read from the padding (left and right edges, top and bottom rows); input channels in
// blocks of 32 (pointwise: 288), the last partial; output channels in groups of 32, micro-tiles
// of 32 (AVX2's 16, the baseline's 8), the last partial; an image's rows split among groups where
// there are few images; backward data's filter turned round and its channels swapped. Strided
// 1x1 layers' forward too, up to 2 across (a constant of the micro-tiles; 3 across is left to
// the implicit GEMM) and any stride down.
// {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w}
const ConvCase kDirectCases[] = {
    {1, 1, 1, 1, 1, 3, 3, 1, 1},     // one position: only the centre tap
    {2, 3, 1, 9, 5, 3, 3, 1, 1},     // one row: no tap above or below
    {2, 3, 9, 1, 5, 3, 3, 1, 1},     // one column: two-row tiles one position wide
    {3, 5, 7, 7, 33, 3, 3, 1, 1},    // 7 wide: two-row tiles and a last row on its own
    {2, 40, 6, 14, 7, 3, 3, 1, 1},   // a 14-position tile; 40 channels: a partial block
    {1, 33, 5, 29, 65, 3, 3, 1, 1},  // 14 + 14 + 1 positions; three output groups
    {2, 6, 4, 14, 50, 3, 3, 1, 1},   // a last micro-tile of 18 output channels: 16, then 2
    {2, 4, 3, 15, 3, 3, 3, 1, 1},    // a tile of one position at the right edge
    {1, 2, 8, 3, 4, 3, 3, 1, 1},     // 3 wide: two-row tiles on every build
    {1, 70, 4, 4, 96, 3, 3, 1, 1},   // 3 channel blocks (bf16: 2), 3 full output groups
    {1, 3, 11, 6, 8, 3, 3, 1, 1},    // one image: its rows split among groups, odd shares
    {2, 3, 1, 1, 5, 1, 1},           // pointwise: one position
    {2, 40, 5, 7, 33, 1, 1},         // 7 wide: two-row tiles; two output groups
    {1, 300, 3, 20, 40, 1, 1},       // 288 channels a block, then 12; 14 + 6 positions
    {1, 577, 2, 2, 3, 1, 1},         // three blocks (bf16: two), one partial output group
    {1, 33, 3, 20, 300, 1, 1},       // fp32 backward data: 288 + 12 channels of dy, 32 + 1 of dx
    {2, 40, 5, 7, 40, 1, 1},         // fp32 backward data: as many channels of dy as of dx
    {2, 40, 14, 14, 33, 1, 1, 0, 0, 2, 2},  // stride 2: 7x7 outputs, two-row tiles 28 apart in x
    {1, 300, 9, 57, 40, 1, 1, 0, 0, 2, 2},  // 14 + 14 + 1 positions, the last at x's last column
    {1, 5, 7, 30, 8, 1, 1, 0, 0, 3, 2},     // 3 down, 2 across: rows of 15, x's last row unread
    {2, 6, 5, 9, 4, 1, 1, 0, 0, 1, 2},      // 1 down, 2 across: two-row tiles of 5 positions
    {1, 4, 6, 12, 5, 1, 1, 0, 0, 1, 3},     // 3 across: the implicit GEMM
};

TEST_CASE("conv2d: 3x3 and pointwise layers as direct convolutions", "[conv]") {
  Env env;
  uint64_t index = 0;
  for (const ConvCase& c : kDirectCases) run_f32(env, c, seed_for(index++));
}

// On the CPU, the fp32 forward of a filter of any size over at most 4 input channels (an image's
// colours, a spectrogram), up to 288 taps and stride 2 across, is a direct convolution too: each
// tap a step over the block's channels, a padded layer's input first copied into planes with
// the padding around them. Two-row tiles of narrow outputs, partial output groups, several
// channel blocks (100 taps: 2 channels a block), strides down and across, padding per axis; and
// the layers just outside it (5 channels, 289 taps, 3 across), which the implicit GEMM takes.
TEST_CASE("conv2d: filters of any size over few channels as direct convolutions", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w}
  const ConvCase cases[] = {
      {2, 1, 11, 45, 33, 5, 20, 0, 0, 2, 2},  // DeepSpeech's 20x5, scaled: rows of 13; 33 outputs
      {2, 1, 12, 30, 6, 5, 5, 2, 2},          // 5x5 "same": rows of 14 + 14 + 2
      {1, 3, 9, 29, 40, 3, 3, 1, 1, 2, 2},    // 3x3 of stride 2: rows of 14 + 1
      {3, 4, 10, 12, 5, 3, 2, 0, 1, 1, 2},    // 3x2, padding across only: two-row tiles of 7
      {1, 2, 16, 20, 3, 4, 3, 2, 1, 3, 1},    // 4x3, 3 down, padding 2 and 1
      {1, 4, 12, 30, 5, 10, 10, 0, 0, 1, 2},  // 100 taps: two channel blocks of 2
      {1, 1, 18, 20, 3, 16, 18},              // 288 taps: blocks of one channel
      {1, 5, 9, 9, 4, 5, 5, 2, 2, 2, 2},      // 5 channels: the implicit GEMM
      {1, 1, 20, 20, 2, 17, 17},              // 289 taps: the implicit GEMM
      {1, 2, 12, 15, 3, 3, 3, 0, 0, 1, 3},    // 3 across: the implicit GEMM
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
}

// bf16 on AVX512_BF16 in words of two input channels: an odd channel count's last word paired
// with a zero, in the input and in the weights.
TEST_CASE("conv2d: 3x3 and pointwise layers as direct convolutions, bf16", "[conv][16bit]") {
  Env env;
  run_bf16_cases(env, kDirectCases);
}

// Layers at least 25 wide, which bf16 takes by Winograd too (below).
// {n, c, h, w, k, r, s, pad_h, pad_w}
const ConvCase kWinogradWideCases[] = {
    {1, 16, 5, 25, 3, 3, 3, 1, 1},   // 7 tiles, the last one column; a band of one row
    {2, 20, 8, 28, 33, 3, 3, 1, 1},  // two bands a group, across images; 33 outputs
    {1, 17, 6, 61, 40, 3, 3, 1, 1},  // 16 tiles: 14, then 2; 17 channels
    {3, 48, 9, 26, 16, 3, 3, 1, 1},  // nine bands, two a group: the last group has one
};

// fp32 3x3 layers with at least 16 input channels (narrower than 25, 32 input and output
// channels) by Winograd's F(4x4, 3x3) on AVX-512 (conv.cpp, kernels/conv_winograd_cpu.h), forward
// and backward data (backward data's input channels are the layer's outputs: with fewer than 16
// that pass stays direct), and backward weights where both channel counts are at least 32 (the
// next case; narrower than 25 only by points); the direct convolution takes them again under
// PORTA_OPS_CONV_WINOGRAD=off (cpu.ops.no_winograd.*) and on other ISA levels. Tiles cut by the
// right edge, bands by the bottom edge, bands of narrow images taken together across images, two
// a transform (an odd number of them: the last alone), wide rows in passes of 14 tiles, partial
// blocks of 32 input channels (the weights' transform) and of 32 and 16 outputs; and by points
// (transformed weights past 16 MiB): slots of four bands across images, the last of one band,
// products groups of two output blocks and of one (partial), channels in chunks of 64 and fewer.
TEST_CASE("conv2d: 3x3 layers by Winograd's minimal filtering", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w}
  const ConvCase cases[] = {
      {1, 33, 12, 100, 70, 3, 3, 1, 1},  // 25 tiles: 14 and 11; outputs 32 + 32 + 6
      {4, 32, 14, 14, 40, 3, 3, 1, 1},   // 14 wide: three bands a group, across images
      {3, 400, 9, 10, 390, 3, 3, 1, 1},  // by points: 24 MB of weights; slots of 4, 4 and 1 band
  };
  uint64_t index = 0;
  for (const ConvCase& c : kWinogradWideCases) run_f32(env, c, seed_for(index++));
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
}

// Backward weights by Winograd's F(4x4, 3x3) on AVX-512: the tiles of all images in slots of 16,
// a run of slots per thread, each summed a chunk of slots at a time and its sums transformed on
// their own, then the runs' added. Slots of two bands of narrow images, across images, a last slot
// of one band and its lanes after it empty, a wide image's tiles in passes of 16 and 2, runs of
// several chunks, output channels in uneven blocks, channels in blocks of 16 with a last partial
// one and a block of 32 past them. By points where the sums pass 4 MiB: blocks of filters, the
// last of fewer output channels or channels, summed over more slots than a chunk.
TEST_CASE("conv2d: backward weights by Winograd's minimal filtering", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w}
  const ConvCase cases[] = {
      {2, 40, 9, 26, 37, 3, 3, 1, 1},    // bands of one row at the bottom; 40 channels, 37 outputs
      {3, 33, 9, 25, 32, 3, 3, 1, 1},    // nine bands: a slot across images, the last one alone
      {1, 32, 6, 70, 33, 3, 3, 1, 1},    // 18 tiles: passes of 16 and 2, the last tile 2 wide
      {4, 32, 16, 28, 32, 3, 3, 1, 1},   // eight slots: runs of four chunks of one slot
      {1, 192, 5, 28, 160, 3, 3, 1, 1},  // sums of 4.4 MiB: by points, blocks of 14 and 6 rows
      {36, 200, 5, 5, 150, 3, 3, 1, 1},  // by points: nine slots (chunks of 8 and 1), 5 wide
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
}

// bf16 inputs through the same kernels, widened exactly as they are read: forward and backward
// data where images are at least 25 wide, by points too (a wide layer whose transformed weights
// pass 16 MiB), and backward weights as fp32's, every other case from a misaligned offset.
// Narrower images as fp32's where the direct convolution would widen bf16 pairs, not multiply
// them on vdpbf16ps (the cpu.ops.widened variant, and CPUs without AVX512_BF16). On a CPU with
// matrix tiles (AMX) the tiles take these layers; cpu.ops.widened runs Winograd there too.
TEST_CASE("conv2d: bf16 3x3 layers by Winograd's minimal filtering", "[conv][16bit]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w}
  const ConvCase cases[] = {
      {2, 40, 9, 26, 37, 3, 3, 1, 1},    // backward weights: bands of one row at the bottom
      {4, 32, 16, 28, 32, 3, 3, 1, 1},   // backward weights: eight slots, runs of four chunks
      {2, 400, 5, 28, 390, 3, 3, 1, 1},  // by points: 22 MB of weights; backward weights too
      {4, 32, 14, 14, 40, 3, 3, 1, 1},   // 14 wide: Winograd where bf16 pairs are widened
  };
  run_bf16_cases(env, kWinogradWideCases);
  run_bf16_cases(env, cases);
}

// bf16 3x3 layers at least 14 wide on a CPU's matrix tiles (AMX): forward and backward data a
// direct convolution over padded planes of channel pairs, 32 positions and 32 output channels a
// step, backward weights over x's padded planes and dy transposed into pairs of positions
// (conv.cpp, kernels/conv_direct_tiles.h). Pairs past a tile's 16 and an odd channel, outputs
// past a block's 32, steps crossing rows and ending past the image,
// rows shared out among groups. On
// other CPUs (and in the builds for older ISA levels, which sum the same layout one product at a
// time) the same shapes check whichever path takes them.
TEST_CASE("conv2d: bf16 3x3 layers on matrix tiles", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {2, 3, 4, 14, 5, 3, 3, 1, 1},     // two pairs, one of them half zero; 14 wide
      {1, 64, 16, 16, 48, 3, 3, 1, 1},  // two whole pair blocks; a block and a half of outputs
      {2, 35, 9, 30, 33, 3, 3, 1, 1},   // 18 pairs, the last half zero; one output past 32
      {1, 8, 1, 50, 4, 3, 3, 1, 1},     // one row: the taps above and below on the border only
      {3, 16, 20, 14, 16, 3, 3, 1, 1},  // three images' rows shared out among groups
  };
  run_bf16_cases(env, cases);
}

// On AVX-512 the CPU engine reads the window of a stride-1 layer whose output rows are as wide as
// its input's straight from x (forward, A's rows in place) or dy (backward data, A packed), a
// strip of 32 positions as one or two runs under lane masks per filter tap, taps outside and
// channels inside: the edges of the padding, strips crossing images or ending with the tile,
// partial panels of A, several depth blocks, blocks starting within a channel's taps; and the
// layers just outside it (one tap, rows narrower than the input's), which pack. (Its 3x3 layers
// of padding 1 and its layers of few channels are direct convolutions: their cases run dilated
// down the rows.)
TEST_CASE("conv2d: windows read in place, runs per strip under masks per tap", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {3, 5, 11, 13, 7, 3, 3, 1, 1},              // 143 positions: two runs, a last strip of 13
      {3, 3, 4, 8, 9, 3, 3, 1, 1},                // 32 positions: strips end with the images
      {2, 4, 5, 40, 6, 3, 3, 1, 1},               // rows wider than a strip
      {2, 41, 8, 8, 29, 3, 3, 1, 1},              // 369 deep: a block from within a channel
      {2, 3, 10, 9, 4, 3, 3, 0, 1},               // padding across only: 8 rows of 9
      {2, 3, 9, 9, 4, 5, 5, 2, 2},                // 25 taps
      {2, 3, 12, 11, 5, 3, 3, 2, 2, 1, 1, 2, 2},  // dilation 2
      {2, 9, 6, 7, 10, 1, 1},                     // 1x1: packed
      {2, 3, 10, 9, 4, 3, 3},                     // no padding: rows of 7, packed
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_implicit_gemm_f32(env, c, seed_for(index++));
}

// Where a CPU plan has few groups per thread, the columns are cut into other tiles so that the
// threads' shares even out (gemm_params.h: balance_column_tiles): wider tiles or narrower ones,
// a last tile partly past the end. These shapes are rebalanced on 2 threads (and some on 4).
TEST_CASE("conv2d: column tiles evened out over the threads", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {3, 8, 14, 14, 16, 3, 3, 1, 1},  // forward and backward data: narrower tiles
      {2, 16, 9, 9, 64, 3, 3, 1, 1},   // backward weights: wider tiles
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_implicit_gemm_f32(env, c, seed_for(index++));
}

// On the CPU, backward data's weights (w^T, fp32) are packed once per call by a kernel of their
// own, for every row tile and depth block, where the column tiles would pack them over 2^18
// elements again (gemm.cpp); each group reads its tile's strips from there. These shapes do so
// on 2 threads: row tiles of 208 rows (not a whole number of the narrower builds' 6-row strips),
// a partial last strip, several depth blocks with a partial last one, split-K, and windows read
// in place or packed.
TEST_CASE("conv2d: backward data's weights packed once for all tiles", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {1, 401, 16, 16, 26, 3, 3, 1, 1},  // two row tiles of 208 rows, four column tiles
      {2, 50, 16, 16, 90, 3, 3, 1, 1},   // 50 rows, 810 deep in one block, read in place
      {4, 37, 16, 16, 1100, 1, 1},       // 1x1, 1100 deep: blocks of 368, the last partial
      {8, 19, 7, 7, 300, 3, 3, 1, 1},    // 7x7 images, 2700 deep: split, packed windows
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_implicit_gemm_f32(env, c, seed_for(index++));
}

// On AVX2 CPUs (8 fp32 lanes), a 1x1 forward's weights are packed once per call the same way,
// where the column tiles would otherwise read them in place over 2^18 elements again, in the
// depth blocks planned for them in place. These shapes do so on 2 threads: row tiles of 208 rows
// (not a whole number of 6-row strips), 1100 deep with 91 rows (several blocks, a partial last
// strip), split-K on 7x7 images. Elsewhere they run the in-place path.
TEST_CASE("conv2d: 1x1 forward weights packed once for all tiles", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {1, 234, 16, 16, 401, 1, 1},  // two row tiles of 208 rows, four column tiles
      {4, 1100, 16, 16, 91, 1, 1},  // 1100 deep: blocks of 220, 91 rows
      {8, 2700, 7, 7, 24, 1, 1},    // 7x7 images, 2700 deep: split
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_implicit_gemm_f32(env, c, seed_for(index++));
}

// On the CPU, fp32 backward weights of filters with several taps and output rows of 14 or more,
// or strided across with rows of 28 or more, run as dw^T = im2col(x) x dy^T, A's rows read from
// x's rows staged per depth block with the window's zeros around them (gemm_params.h:
// plan_staged_window): the padding's edges, no padding, stride and dilation down, strides across
// (a run per tap across; 1x1, 2x2 and 7x7 filters, dilation; rows that no tap reaches not
// staged), partial panels and strips, row tiles starting within a channel's taps, split-K,
// blocks starting within an output row; and the layers left to the plain plan (1x1 of stride
// 1, strided rows of 14, too wide to stage).
TEST_CASE("conv2d: backward weights from staged rows of x", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {2, 5, 16, 14, 7, 3, 3, 1, 1},              // 45 rows, 7 columns: partial panel and strip
      {2, 3, 16, 18, 4, 3, 3},                    // no padding: rows of 16 from x's 18
      {1, 2, 14, 14, 3, 3, 5, 2, 3},              // padding beyond half the kernel, 3x5
      {2, 4, 21, 16, 6, 3, 3, 1, 1, 2, 1},        // stride 2 down: staged rows 2 apart
      {2, 3, 20, 18, 5, 3, 3, 2, 2, 1, 1, 2, 2},  // dilation 2
      {2, 4, 12, 56, 6, 3, 3, 1, 1, 2, 2},        // stride 2 across: rows of 28, a run per tap
      {2, 6, 10, 58, 5, 1, 1, 0, 0, 2, 2},        // 1x1 of stride 2: every other row and column
      {1, 3, 20, 86, 4, 2, 2, 0, 0, 3, 3},        // 2x2 of stride 3: a row of x between
      {1, 3, 12, 60, 8, 7, 7, 3, 3, 2, 2},        // 7x7 of stride 2: taps past both edges
      {1, 3, 12, 85, 5, 3, 3, 1, 2, 1, 3, 1, 2},  // stride 3 across, dilation 2 across
      {2, 4, 28, 28, 6, 3, 3, 1, 1, 2, 2},        // strided rows of 14: plain plan
      {2, 9, 14, 14, 10, 1, 1},                   // 1x1, 392 deep: not split, im2col^T packed
      {4, 16, 30, 30, 40, 3, 3, 1, 1},            // 3600 deep: split, several blocks a split
      {1, 130, 16, 16, 8, 3, 3, 1, 1},            // 1170 rows: tiles from within a channel
      {1, 1, 3, 2000, 4, 3, 3, 1, 1},             // rows of 2000: blocks within a row
      {1, 40, 3, 1500, 4, 3, 3, 1, 1},            // too wide to stage: im2col^T packed
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
}

// On the CPU, fp32 backward weights of pointwise layers (1x1, stride 1, no padding) whose depth
// splits run as dw^T = x x dy^T, x's rows read in place as A and dy^T packed (gemm_params.h:
// StagedWindow::in_place): blocks of whole images, each image a run of the rows kernel, with
// partial panels (padded, and short) and strips, images of 49 positions; blocks of whole output
// rows within larger images; two row tiles; and the layers left to the plain plan (no block size
// divides the image, or the depth does not split).
TEST_CASE("conv2d: pointwise backward weights from x's rows in place", "[conv]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {8, 45, 14, 14, 7, 1, 1},   // 45 rows, 7 columns, 1568 deep: blocks of whole images
      {32, 20, 7, 7, 24, 1, 1},   // images of 49, a short last panel
      {32, 19, 7, 7, 40, 1, 1},   // a last panel of 3 rows padded run by run, a partial strip
      {1, 8, 40, 40, 16, 1, 1},   // 1600 positions: blocks of whole output rows
      {16, 1200, 8, 8, 9, 1, 1},  // 1200 rows: two row tiles
      {1, 4, 37, 37, 8, 1, 1},    // 37 rows of 37: no block divides the image, plain plan
      {1, 30, 14, 14, 12, 1, 1},  // 196 deep: not split, plain plan
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
}

TEST_CASE("conv2d: more work-groups than one grid dimension holds", "[conv][large]") {
  // A batch of 70001 (> 65535) small images: the implicit GEMMs have 280004 columns (forward,
  // backward-data) or a reduction of 280004 terms (backward-weights).
  Env env;
  const ConvCase cases[] = {
      {70001, 1, 2, 2, 2, 1, 1},
      {70001, 2, 3, 3, 1, 2, 2, 0, 0, 1, 1},
  };
  uint64_t index = 0;
  for (const ConvCase& c : cases) run_f32(env, c, seed_for(index++));
}

// On CPUs with AVX512_BF16, bf16 depth blocks go about twice as deep as fp32's where outputs'
// images end inside 32-column strips (forward, backward data), and panels packed through fp32
// (windows, w^T) are packed a group of strips at a time so that the fp32 copy fits beside the
// pairs: groups of one strip up to the whole panel, a last strip partly outside the operand, an
// odd last block.
TEST_CASE("conv2d: bf16 deep blocks, panels packed a group of strips at a time", "[conv][16bit]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {2, 20, 9, 9, 64, 3, 3, 1, 1},     // backward data 576 deep, forward 180 (one block)
      {2, 21, 9, 9, 63, 3, 3, 1, 1},     // 567 deep, an odd last block
      {3, 24, 9, 9, 16, 3, 3, 1, 1},     // strips crossing two images' ends
      {2, 96, 15, 15, 128, 3, 3, 1, 1},  // backward data: w^T's 96 rows in groups too
      {2, 40, 7, 7, 600, 1, 1},          // 1x1 backward data: w^T paired from memory, no room kept
  };
  run_bf16_cases(env, cases, true);
}

// On CPUs with AVX512_BF16, bf16 windows are paired as they are read: strips of consecutive
// columns interleave two masked runs per depth pair (forward, backward data), and backward
// weights' im2col^T loads 16 depths of a column as 8 pairs, under lane masks where they leave the
// input or span two images, element by element where they span more.
TEST_CASE("conv2d: bf16 windows paired as they are read", "[conv][16bit]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {2, 3, 12, 12, 5, 7, 7, 3, 3},        // 49 taps: strip masks cached per tap (up to 49 kept)
      {2, 3, 14, 14, 5, 9, 9, 4, 4},        // 81 taps: strip masks worked out per depth, not cached
      {1, 3, 70, 66, 8, 7, 7, 3, 3, 2, 2},  // the stem, scaled: runs two apart, 49 taps
      {6, 8, 3, 3, 16, 3, 3, 1, 1},         // 9 positions an image: depth blocks of many runs
      {3, 5, 7, 7, 9, 3, 3, 1, 1},          // blocks across images' ends, odd depths (147, 45)
      {2, 4, 5, 40, 8, 3, 3, 1, 1},         // rows wider than a strip, blocks across rows
      {2, 6, 10, 21, 7, 3, 3},              // no padding: rows of dy shorter than x's, runs per row
      {4, 3, 20, 20, 8, 3, 3, 1, 1},        // 1600 positions: several blocks and chunks of depths
      {2, 7, 6, 6, 11, 5, 5, 2, 2, 1, 1, 2, 2},  // dilation 2: taps' runs not adjacent
  };
  run_bf16_cases(env, cases, true);
}

// On CPUs with AVX512_BF16, the windows that fp32 reads in place are read in place as depth
// pairs too: two taps' runs of a strip (a channel's last tap and the next channel's first where
// the tap count is odd) interleaved in registers, pairs sharing their taps taken together. The
// cases of fp32's, and: an even tap count, an odd last depth, partial panels of A read in place.
TEST_CASE("conv2d: bf16 windows read in place as pairs of taps", "[conv][16bit]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {3, 5, 11, 13, 7, 3, 3, 1, 1},              // two runs, a last strip of 13; 45 and 63 deep
      {3, 3, 4, 8, 9, 3, 3, 1, 1},                // 32 positions: strips end with the images
      {2, 4, 5, 40, 6, 3, 3, 1, 1},               // rows wider than a strip
      {2, 41, 8, 8, 29, 3, 3, 1, 1},              // 369 and 261 deep: blocks within a channel
      {2, 96, 8, 8, 72, 3, 3, 1, 1},              // 864 and 648 deep: several blocks
      {2, 3, 10, 9, 4, 3, 3, 0, 1},               // padding across only: 8 rows of 9
      {2, 3, 9, 9, 4, 5, 5, 2, 2},                // 25 taps
      {2, 5, 9, 10, 7, 2, 3, 0, 1},               // 6 taps: pairs within a channel
      {2, 3, 12, 11, 5, 3, 3, 2, 2, 1, 1, 2, 2},  // dilation 2
  };
  run_bf16_cases(env, cases, true);
}

// Padding and strides are 64-bit: one of 2^32 or more is the convolution it says (here a window
// of padding alone, so zeros), or UNSUPPORTED where a library takes 32 bits. oneDNN's had become
// a pad of 0 and a stride of 1, and the unpadded products.
TEST_CASE("conv2d: padding and strides past 32 bits are as given or UNSUPPORTED", "[conv]") {
  Env env;
  porta_conv2d_desc_t d{};
  d.struct_size = sizeof d;
  d.batch = d.in_channels = d.in_height = d.in_width = d.out_channels = 1;
  d.kernel_height = d.kernel_width = 1;
  d.pad_h = int64_t{1} << 32;
  d.stride_h = (int64_t{1} << 34) + 1;
  d.stride_w = d.dilation_h = d.dilation_w = 1;
  d.dtype = PORTA_DTYPE_F32;
  int64_t p = 0, q = 0;
  REQUIRE(porta_conv2d_output_size(&d, &p, &q) == PORTA_SUCCESS);
  REQUIRE(p * q == 1);
  DeviceArray<float> x(env, 1), w(env, 1), dy(env, 1), y(env, 1), dx(env, 1), dw(env, 1);
  x.upload({3.0f});
  w.upload({2.0f});
  dy.upload({5.0f});
  const porta_status_t statuses[] = {
      porta_conv2d_forward(env.stream(), &d, x.get(), w.get(), y.get()),
      porta_conv2d_backward_data(env.stream(), &d, dy.get(), w.get(), dx.get()),
      porta_conv2d_backward_weights(env.stream(), &d, x.get(), dy.get(), dw.get())};
  REQUIRE(porta_stream_synchronize(env.stream()) == PORTA_SUCCESS);
  const DeviceArray<float>* outputs[] = {&y, &dx, &dw};
  for (int pass = 0; pass < 3; ++pass) {
    INFO("pass " << pass << ": " << porta_status_name(statuses[pass]));
    if (statuses[pass] == PORTA_ERROR_UNSUPPORTED && !portable_ops()) continue;
    REQUIRE(statuses[pass] == PORTA_SUCCESS);
    CHECK(outputs[pass]->download() == std::vector<float>{0.0f});
  }
}

TEST_CASE("conv2d: f16 and bf16 inputs are exact-product fp32 convolutions, or UNSUPPORTED",
          "[conv][16bit]") {
  Env env;
  // {n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w}
  const ConvCase cases[] = {
      {1, 1, 1, 1, 1, 1, 1},                      // the smallest
      {2, 3, 9, 8, 4, 3, 3, 1, 1, 2, 1, 1, 2},    // stride 2x1, dilation 1x2
      {2, 3, 7, 9, 5, 3, 3, 1, 1},                // 3x3 "same", non-square
      {3, 7, 9, 9, 3, 2, 2},                      // even kernel, no padding
      {2, 3, 8, 10, 4, 3, 3, 2, 2},               // padding beyond half the kernel
      {2, 4, 13, 11, 6, 3, 3, 1, 1, 2, 2},        // stride 2 (a strided gather of dy)
      {2, 3, 17, 16, 7, 3, 3, 1, 1, 2, 2, 2, 2},  // stride 2 and dilation 2
      {3, 33, 7, 5, 17, 1, 1},                    // 1x1
      {2, 3, 37, 37, 8, 7, 7, 3, 3, 2, 2},        // 7x7 stem
      {2, 16, 14, 14, 16, 3, 3, 1, 1},            // a DeepBench layer, scaled
      {64, 4, 12, 12, 3, 3, 3, 1, 1},             // deep backward-weights: 9216 terms
  };
  uint64_t index = 0;
  for (porta_dtype_t dtype : {PORTA_DTYPE_F16, PORTA_DTYPE_BF16}) {
    for (const ConvCase& c : cases) {
      const bool misaligned = index % 2 == 1;
      const porta_status_t status = run_conv(env, c, seed_for(index++), dtype, misaligned);
      if (status == PORTA_ERROR_UNSUPPORTED) {
        WARN("porta_conv2d_*: dtype " << dtype << " is UNSUPPORTED by this implementation");
        break;
      }
    }
  }
}
