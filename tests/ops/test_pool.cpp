// porta_max_pool2d_forward / _backward against the float64 reference: windows that overlap,
// skip, cover the whole input, are not square, padding (which never wins, even over negative
// inputs), inputs no window size divides, ties, which go to the lowest index, and NaN, which wins.
//
// Tolerances: the forward is a selection, so exact. The backward sums, into each input element,
// the dy of every window whose first maximum it is: at most window_h * window_w windows (fewer
// unless stride 1), so as for any fp32 sum we allow (window_h * window_w + 2) * 2^-23 times the
// sum of the magnitudes (the reference backward on |dy|). A dy routed to the wrong element leaves
// one element short by |dy| and another over by as much, far outside that.
#include <algorithm>
#include <array>
#include <cmath>
#include <sstream>

#include "ops_test.h"

using namespace ops_test;

namespace {

struct PoolCase {
  int64_t n, c, h, w, window_h, window_w, stride_h, stride_w, pad_h, pad_w;
};

porta_pool2d_desc_t desc_of(const PoolCase& c) {
  porta_pool2d_desc_t d{};
  d.struct_size = sizeof d;
  d.batch = c.n, d.channels = c.c, d.in_height = c.h, d.in_width = c.w;
  d.window_h = c.window_h, d.window_w = c.window_w, d.stride_h = c.stride_h;
  d.stride_w = c.stride_w, d.pad_h = c.pad_h, d.pad_w = c.pad_w;
  return d;
}

std::string describe(const porta_pool2d_desc_t& d) {
  std::ostringstream out;
  out << "x " << d.batch << "x" << d.channels << "x" << d.in_height << "x" << d.in_width
      << ", window " << d.window_h << "x" << d.window_w << " stride " << d.stride_h << ","
      << d.stride_w << " pad " << d.pad_h << "," << d.pad_w;
  return out.str();
}

// The first output whose sign differs from the reference's (the value is compare_exact's
// concern), or -1. A NaN's sign counts too: y is an element of x.
int64_t first_sign_difference(const std::vector<float>& got, const std::vector<double>& ref) {
  for (size_t o = 0; o < got.size(); ++o) {
    if (std::signbit(got[o]) != std::signbit(ref[o])) return static_cast<int64_t>(o);
  }
  return -1;
}

// Forward and backward of one pooling on the given input and fresh dy. On the portable ops, y
// also keeps the sign of the element it is (a tied zero's, the first's): a library's may not.
void run_pool(const Env& env, const PoolCase& c, const std::vector<float>& x, Rng& rng) {
  const porta_pool2d_desc_t d = desc_of(c);
  INFO("max-pool " << describe(d));
  const ops_ref::PoolShape shape = ops_ref::pool_shape(d);
  int64_t p = 0, q = 0;
  PT_CHECK_OK(porta_pool2d_output_size(&d, &p, &q));
  CHECK(p == shape.out_height);
  CHECK(q == shape.out_width);
  REQUIRE(static_cast<int64_t>(x.size()) == shape.x_count);
  const std::vector<float> dy = normal(rng, shape.y_count);
  const std::vector<double> xd = widen(x), dyd = widen(dy);

  Floats dx_in(env, x.size()), y(env, shape.y_count), ddy(env, dy.size()), dx(env, x.size());
  dx_in.upload(x);
  ddy.upload(dy);
  PT_CHECK_OK(porta_max_pool2d_forward(env.stream(), &d, dx_in.get(), y.get()));
  PT_CHECK_OK(porta_max_pool2d_backward(env.stream(), &d, dx_in.get(), ddy.get(), dx.get()));
  env.sync();

  std::vector<double> y_ref(shape.y_count), dx_ref(shape.x_count), dx_scale(shape.x_count);
  ops_ref::max_pool2d_forward(d, xd.data(), y_ref.data());
  ops_ref::max_pool2d_backward(d, xd.data(), dyd.data(), dx_ref.data());
  ops_ref::max_pool2d_backward(d, xd.data(), abs_of(dyd).data(), dx_scale.data());
  const std::vector<float> y_got = y.download();
  Comparison forward = compare_exact("y", y_got, y_ref);
  PT_CHECK_CLOSE(forward.dims({d.batch, d.channels, p, q}));
  if (portable_ops()) CHECK(first_sign_difference(y_got, y_ref) == -1);
  Comparison backward =
      compare("dx", dx.download(), dx_ref, dx_scale, double(d.window_h * d.window_w + 2) * kUlp);
  PT_CHECK_CLOSE(backward.dims({d.batch, d.channels, d.in_height, d.in_width}));
  y.check_guard("y");
  dx.check_guard("dx");
  dx_in.check_unchanged("x");
  ddy.check_unchanged("dy");
}

// {n, c, h, w, window_h, window_w, stride_h, stride_w, pad_h, pad_w}
const PoolCase kCases[] = {
    {2, 3, 8, 8, 2, 2, 2, 2, 0, 0},     // the classic
    {1, 2, 7, 9, 2, 2, 2, 2, 0, 0},     // odd input: the last row and column are dropped
    {2, 4, 13, 11, 3, 3, 2, 2, 1, 1},   // 3x3 stride 2 pad 1 (ResNet)
    {1, 3, 9, 7, 3, 3, 1, 1, 0, 0},     // overlapping windows
    {2, 2, 7, 7, 3, 3, 1, 1, 1, 1},     // overlapping, "same" size
    {1, 5, 10, 12, 2, 3, 1, 2, 1, 0},   // non-square window and stride
    {3, 7, 5, 6, 5, 6, 1, 1, 0, 0},     // global: one window over the whole input
    {1, 2, 5, 5, 1, 1, 1, 1, 0, 0},     // 1x1 window: a copy
    {1, 3, 11, 11, 2, 2, 3, 3, 0, 0},   // stride past the window: some inputs in no window
    {2, 3, 1, 1, 1, 1, 1, 1, 0, 0},     // 1x1 input
    {2, 16, 33, 33, 3, 3, 2, 2, 0, 0},  // AlexNet-like, odd size
    {1, 2, 15, 12, 7, 5, 2, 2, 3, 2},   // large window, large padding
    {1, 1, 1, 129, 1, 4, 1, 3, 0, 1},   // a single row
    // Windows that do not overlap take one pass, and on the CPU rows of 16, 8 or 4 outputs at a
    // time: 14 and 7 outputs a row (porta-train's), 17 (an overlapping last block), 3 (none).
    {2, 3, 28, 28, 2, 2, 2, 2, 0, 0},
    {1, 4, 14, 14, 2, 2, 2, 2, 0, 0},
    {1, 2, 6, 34, 2, 2, 2, 2, 0, 0},
    {1, 2, 7, 6, 2, 2, 2, 2, 0, 0},
    {1, 2, 9, 9, 2, 2, 2, 2, 1, 1},    // padded: the first and last windows are cut
    {1, 3, 10, 13, 2, 2, 3, 3, 1, 1},  // gaps between the windows, padded
    {1, 2, 8, 40, 3, 3, 3, 3, 0, 0},   // 3x3 stride 3: the last rows and columns in none
    {2, 2, 5, 37, 1, 2, 1, 2, 0, 0},   // 1x2 windows
    // Stride 2 across takes 16 outputs at a time on the AVX-512 CPU build, masked where a row
    // ends or the padding cuts a window: rows of 2, 16, 17 and 35 outputs and a column left over.
    {1, 3, 4, 4, 2, 2, 2, 2, 0, 0},
    {1, 2, 4, 32, 2, 2, 2, 2, 0, 0},
    {1, 2, 6, 71, 2, 2, 2, 2, 0, 0},
    {1, 2, 9, 33, 2, 2, 2, 2, 1, 1},
    {2, 3, 9, 56, 3, 3, 2, 2, 1, 1},   // porta-bench's 3x3 stride 2 pad 1, narrower
    {1, 2, 7, 40, 3, 3, 2, 2, 0, 0},   // overlapping, unpadded
    {1, 2, 9, 37, 4, 4, 2, 2, 1, 1},   // a column in up to two windows, from either side
    {1, 2, 8, 45, 5, 5, 2, 2, 2, 2},   // in up to three
    {1, 2, 7, 33, 1, 1, 2, 2, 0, 0},   // 1x1 windows: every other column in none
    // On AVX2 CPUs, stride 2 across takes 8 windows inside the row a step, the last step
    // overlapping the one before, the windows cut by the padding one by one: 8 and 9 inside.
    {1, 2, 5, 19, 3, 3, 2, 2, 1, 1},
    {2, 2, 5, 21, 3, 3, 2, 2, 1, 1},
    // An input row's maxima across serve the next output row too, for rows of up to 128
    // outputs: 132 outputs (a chunk past those kept), and planes of 3 rows, several to a group.
    {1, 2, 7, 263, 3, 3, 2, 2, 1, 1},
    {3, 5, 5, 40, 3, 3, 2, 2, 1, 1},
    {1, 2, 8, 20, 3, 2, 1, 2, 1, 0},   // disjoint across, overlapping down
    {1, 1, 12, 40, 3, 9, 2, 2, 1, 4},  // wider than 8: the backward's general gather
    {1, 1, 4, 50, 2, 17, 2, 2, 0, 8},  // wider than 16: the general code throughout
    // 2x2 stride 2 unpadded takes its own AVX-512 path: a 1x1 output, from 2x2 and from 3x3
    // (odd: a row and a column in no window), odd planes of 7x7 outputs, rows of 10 and 18 whose
    // last vectors leave the tensor.
    {1, 1, 2, 2, 2, 2, 2, 2, 0, 0},
    {3, 2, 3, 3, 2, 2, 2, 2, 0, 0},
    {1, 3, 15, 15, 2, 2, 2, 2, 0, 0},
    {1, 1, 6, 20, 2, 2, 2, 2, 0, 0},
    {2, 1, 5, 36, 2, 2, 2, 2, 0, 0},
    // Rows of up to 8 outputs that tile the input exactly go 16 / out_w rows a step, across
    // planes: 7 (the last step one row, at the tensor's end), 3, 5 and 8 outputs a row.
    {1, 1, 6, 14, 2, 2, 2, 2, 0, 0},
    {3, 1, 6, 6, 2, 2, 2, 2, 0, 0},
    {2, 3, 10, 10, 2, 2, 2, 2, 0, 0},
    {1, 3, 4, 16, 2, 2, 2, 2, 0, 0},
    // On AVX2 without AVX-512, rows of stride 2 across with fewer windows inside than a step (8)
    // take one step reading past the row where that stays inside the tensor, and the disjoint
    // backward writes each step's columns of dx whole: rows of 4 (odd width), 8 and 9 windows,
    // padded rows of 2 and 6 inside, 1x1 windows, and 3x3 stride 2 with 6 inside.
    {2, 3, 6, 9, 2, 2, 2, 2, 0, 0},
    {3, 2, 4, 17, 2, 2, 2, 2, 0, 0},
    {2, 2, 6, 19, 2, 2, 2, 2, 0, 0},
    {2, 2, 5, 5, 2, 2, 2, 2, 1, 1},
    {2, 2, 6, 13, 2, 2, 2, 2, 1, 1},
    {2, 3, 6, 11, 1, 1, 2, 2, 0, 0},
    {2, 2, 7, 15, 3, 3, 2, 2, 1, 1},
    // The overlapping backward's steps of 8 columns: one step, two (the second overlapping),
    // none (the whole row column by column), and an odd unpadded row.
    {1, 2, 7, 9, 3, 3, 2, 2, 1, 1},
    {1, 2, 9, 17, 3, 3, 2, 2, 1, 1},
    {1, 2, 5, 7, 3, 3, 2, 2, 1, 1},
    {2, 2, 9, 23, 3, 3, 2, 2, 0, 0},
    // On AVX2 the window cut on the left (pad 1 or 2, window - pad <= 2) joins the row's first
    // step: 8 windows, all in that step; pad 2 with 4-wide windows. (Planes narrower than 16,
    // whose last plane's last row is too short to read, keep the cut window apart: 13x11 above.)
    {2, 2, 5, 16, 3, 3, 2, 2, 1, 1},
    {1, 2, 7, 21, 4, 4, 2, 2, 2, 2},
    // On AVX2, 2x2 stride 2 windows that tile the input exactly, in rows of 7 or more, take a
    // group's outputs as one run, forward and backward, steps lying across two rows: planes of
    // one row of 7, rows of 8 and 9, and a run whose last steps, at the tensor's end, go one by
    // one.
    {3, 2, 2, 14, 2, 2, 2, 2, 0, 0},
    {2, 3, 6, 16, 2, 2, 2, 2, 0, 0},
    {1, 5, 8, 18, 2, 2, 2, 2, 0, 0},
    // The host's overlapping backward finds a row's maxima into a buffer of 1024 outputs; wider
    // rows take their windows one by one: 1026 outputs of stride 2, 1028 of stride 1.
    {2, 1, 5, 2051, 3, 3, 2, 2, 1, 1},
    {1, 2, 4, 1030, 3, 3, 1, 1, 0, 0},
};

// run_pool over every case, on inputs make_x(count, rng) described by `inputs`.
template <class MakeX>
void run_cases(const char* inputs, MakeX&& make_x) {
  Env env;
  uint64_t index = 0;
  for (const PoolCase& c : kCases) {
    const uint64_t seed = seed_for(index++);
    INFO("seed " << seed << ", " << inputs);
    Rng rng(seed);
    run_pool(env, c, make_x(c.n * c.c * c.h * c.w, rng), rng);
  }
}

}  // namespace

TEST_CASE("max-pool: forward and backward over overlapping, skipping and padded windows",
          "[pool]") {
  run_cases("inputs N(0, 1)", [](int64_t count, Rng& rng) { return normal(rng, count); });
}

TEST_CASE("max-pool: padding never wins, even over negative inputs", "[pool]") {
  Env env;
  uint64_t index = 0;
  for (const PoolCase& c : kCases) {
    if (c.pad_h == 0 && c.pad_w == 0) continue;
    const uint64_t seed = seed_for(index++);
    INFO("seed " << seed << ", inputs all below -3");
    Rng rng(seed);
    std::vector<float> x = normal(rng, c.n * c.c * c.h * c.w, 1.0, -6.0);
    for (float& v : x) v = std::min(v, -3.0f);
    run_pool(env, c, x, rng);
  }
}

TEST_CASE("max-pool: ties go to the lowest index, in forward and backward", "[pool]") {
  Env env;
  uint64_t index = 0;
  for (const PoolCase& c : kCases) {
    const uint64_t seed = seed_for(index++);
    Rng rng(seed);
    const int64_t count = c.n * c.c * c.h * c.w;
    {
      INFO("seed " << seed << ", inputs from {-2, -1, 1, 2}: ties everywhere");
      std::vector<float> x(count);
      for (float& v : x) {
        const int64_t level = rng.integer(0, 3);
        v = static_cast<float>(level < 2 ? level - 2 : level - 1);
      }
      run_pool(env, c, x, rng);
    }
    {
      INFO("seed " << seed << ", every input the same negative value");
      run_pool(env, c, std::vector<float>(count, -1.5f), rng);
    }
    {
      INFO("seed " << seed << ", every input -infinity: no candidate is larger than another");
      run_pool(env, c, std::vector<float>(count, -INFINITY), rng);
    }
  }
}

// Zeros of either sign compare equal, so the first in index order stands, sign and all, as
// the element the backward routes dy to (run_pool checks the signs on the portable ops).
TEST_CASE("max-pool: -0 and +0 tie, and the first keeps its sign", "[pool]") {
  run_cases("inputs from {-1, -0, +0}", [](int64_t count, Rng& rng) {
    std::vector<float> x(count);
    for (float& v : x) v = std::array<float, 3>{-1.0f, -0.0f, 0.0f}[rng.integer(0, 2)];
    return x;
  });
}

TEST_CASE("max-pool: a NaN wins its window, the first of several", "[pool]") {
  run_cases("one input in eight NaN", [](int64_t count, Rng& rng) {
    std::vector<float> x = normal(rng, count);
    for (float& v : x) v = rng.integer(0, 7) == 0 ? NAN : v;
    return x;
  });
}

TEST_CASE("max-pool: more planes and rows than one grid dimension holds", "[pool][large]") {
  Env env;
  const PoolCase cases[] = {
      {70001, 1, 2, 2, 2, 2, 2, 2, 0, 0},  // 70001 planes of one window
      {1, 1, 70001, 3, 2, 3, 1, 1, 1, 0},  // one tall plane
  };
  uint64_t index = 0;
  for (const PoolCase& c : cases) {
    const uint64_t seed = seed_for(index++);
    INFO("seed " << seed);
    Rng rng(seed);
    run_pool(env, c, normal(rng, c.n * c.c * c.h * c.w), rng);
  }
}
