// porta_softmax_forward / _backward (softmax and log-softmax) and porta_cross_entropy against the
// float64 reference: rows from 1 to 100003 elements (one element, less than a warp, many blocks),
// large offsets and spreads (the max subtraction must keep exp in range), in place where allowed,
// labels out of range.
//
// Tolerances, per element, with u = 2^-24, d = x - max(row), L = log(sum(exp(d))), D the
// softmax-weighted mean of |d| over the row, and every allowance doubled (2u, i.e. 2^-23, per
// rounding) to cover other orders of evaluation:
//   softmax         y:  y * (cols + 16 + 2|d| + 2D + 2|L| + 2|max|)          * 2^-23
//     exp(d) is within a few ulp plus u|d| (the rounding of d, amplified by exp), the row sum adds
//     cols roundings and the terms' own errors (at most 2D + 4 ulp, weighted), the division one
//     more; an implementation that forms exp(x - (max + L)) pays u|max + L| instead.
//   log-softmax     y:  (|x| + |max| + |d| + |y| + |L| + cols + 16 + 2D)    * 2^-23
//     absolute: the roundings of the subtractions and of L (whose error is the sum's relative one).
//   softmax backward:   dx = y (dy - sum(y dy)):
//                       |y| (2|dy| + 2|sum| + (cols + 4) sum|y dy|)          * 2^-23
//   log-softmax backward: dx = dy - exp(y) sum(dy):
//                       (2|dy| + exp(y) ((8 + 2|y|) |sum| + (cols + 4) sum|dy|)) * 2^-23
//   cross-entropy loss: the per-row log-sum-exp as above, plus the mean of rows terms:
//                       mean_r(cols + 16 + 2D + 2|L| + 2|max| + 2|x_label| + (rows + 4)|loss_r|)
//                                                                              * 2^-23
//   cross-entropy gradient: (softmax's allowance for p + 4|p - onehot|) / rows  * 2^-23
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "ops_test.h"

using namespace ops_test;

namespace {

struct RowStats {
  double max, log_sum, weighted_abs_d;
};

RowStats row_stats(const double* x, int64_t cols) {
  RowStats s{x[0], 0.0, 0.0};
  for (int64_t j = 1; j < cols; ++j) s.max = std::max(s.max, x[j]);
  double sum = 0.0, weighted = 0.0;
  for (int64_t j = 0; j < cols; ++j) {
    const double e = std::exp(x[j] - s.max);
    sum += e;
    if (e > 0.0) weighted += e * std::fabs(x[j] - s.max);  // -inf (masked) adds nothing
  }
  s.log_sum = std::log(sum);
  s.weighted_abs_d = weighted / sum;
  return s;
}

// The allowance of softmax's p_i over its value (see the top of the file), per unit of 2^-23.
// Multiply it by p only where p > 0 (masked elements have p = 0 and an infinite factor).
double softmax_factor(const RowStats& s, double x, int64_t cols) {
  const double d = std::fabs(x - s.max);
  return double(cols) + 16.0 + 2.0 * d + 2.0 * s.weighted_abs_d + 2.0 * std::fabs(s.log_sum) +
         2.0 * std::fabs(s.max);
}

// The one allowance that depends on the implementation: oneDNN 2.6 (PORTA_OPS=vendor on the CPU)
// evaluates log-softmax's log(sum) with a polynomial measured at up to 3.3e-6 absolute error
// (2^-18.2), more than the few ulp assumed above; it gets 2^-18 (32 units of 2^-23) more per
// element. Nothing else is loosened.
double log_approximation_allowance() {
  static const double allowance = [] {
    const char* ops = std::getenv("PORTA_OPS");
    const char* backend = nullptr;
    const bool vendor = ops && std::string(ops) == "vendor";
    return vendor && porta_backend_selected(&backend) == PORTA_SUCCESS &&
                   std::string(backend) == "cpu"
               ? 32.0
               : 0.0;
  }();
  return allowance;
}

std::vector<double> forward_scale(porta_softmax_mode_t mode, int64_t rows, int64_t cols,
                                  const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<double> scale(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const RowStats s = row_stats(&x[r * cols], cols);
    for (int64_t j = 0; j < cols; ++j) {
      const size_t i = static_cast<size_t>(r * cols + j);
      if (mode == PORTA_SOFTMAX) {
        scale[i] = y[i] > 0.0 ? y[i] * softmax_factor(s, x[i], cols) : 0.0;
      } else {
        scale[i] = std::fabs(x[i]) + std::fabs(s.max) + std::fabs(x[i] - s.max) + std::fabs(y[i]) +
                   std::fabs(s.log_sum) + double(cols) + 16.0 + 2.0 * s.weighted_abs_d +
                   log_approximation_allowance();
      }
    }
  }
  return scale;
}

std::vector<double> backward_scale(porta_softmax_mode_t mode, int64_t rows, int64_t cols,
                                   const std::vector<double>& y, const std::vector<double>& dy) {
  std::vector<double> scale(y.size());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0.0, magnitude = 0.0;
    for (int64_t j = 0; j < cols; ++j) {
      const size_t i = static_cast<size_t>(r * cols + j);
      sum += mode == PORTA_SOFTMAX ? y[i] * dy[i] : dy[i];
      magnitude += mode == PORTA_SOFTMAX ? std::fabs(y[i] * dy[i]) : std::fabs(dy[i]);
    }
    for (int64_t j = 0; j < cols; ++j) {
      const size_t i = static_cast<size_t>(r * cols + j);
      if (mode == PORTA_SOFTMAX) {
        scale[i] = std::fabs(y[i]) *
                   (2.0 * std::fabs(dy[i]) + 2.0 * std::fabs(sum) + double(cols + 4) * magnitude);
      } else {
        const double p = std::exp(y[i]);
        scale[i] = 2.0 * std::fabs(dy[i]) +
                   (p > 0.0 ? p * ((8.0 + 2.0 * std::fabs(y[i])) * std::fabs(sum) +
                                   double(cols + 4) * magnitude)
                            : 0.0);
      }
    }
  }
  return scale;
}

const char* name_of(porta_softmax_mode_t mode) {
  return mode == PORTA_SOFTMAX ? "softmax" : "log-softmax";
}

struct Rows {
  int64_t rows, cols;
  double stddev = 1.0, mean = 0.0;
  double masked = 0.0;      // the fraction of entries set to -infinity (never a whole row)
  bool misaligned = false;  // every array 4 to 12 bytes past a 256-byte boundary
  bool peaks = false;       // row r's maximum at column r % cols, 40 above the rest
};

// With shape.peaks: raises x[r][r % cols] by 40, so that each row's maximum sits at another
// column (first, last, either side of a vector's or an unrolled step's end).
void raise_peaks(const Rows& shape, std::vector<float>& x) {
  if (!shape.peaks) return;
  for (int64_t r = 0; r < shape.rows; ++r) x[r * shape.cols + r % shape.cols] += 40.0f;
}

// Sets about `fraction` of the entries of each row to -infinity, except column `keep[r]`.
void mask(Rng& rng, std::vector<float>& x, int64_t cols, double fraction,
          const std::vector<int64_t>& keep) {
  if (fraction <= 0.0) return;
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t r = static_cast<int64_t>(i) / cols, j = static_cast<int64_t>(i) % cols;
    if (j != keep[r] && rng.uniform() < fraction) x[i] = -std::numeric_limits<float>::infinity();
  }
}

// Forward and backward of one mode on fresh data, out of place or in place.
void run_softmax(const Env& env, porta_softmax_mode_t mode, const Rows& shape, bool in_place,
                 uint64_t seed) {
  const int64_t rows = shape.rows, cols = shape.cols;
  INFO(name_of(mode) << " " << rows << "x" << cols << " data N(" << shape.mean << ", "
                     << shape.stddev << "^2), " << shape.masked << " masked"
                     << (shape.misaligned ? ", misaligned" : "") << (in_place ? ", in place" : "")
                     << ", seed " << seed);
  const auto lead = [&](int i) { return lead_for(shape.misaligned, i); };
  Rng rng(seed);
  const size_t count = static_cast<size_t>(rows * cols);
  std::vector<float> x = normal(rng, count, shape.stddev, shape.mean);
  mask(rng, x, cols, shape.masked, std::vector<int64_t>(rows, 0));
  raise_peaks(shape, x);
  const std::vector<float> dy = normal(rng, count);
  const std::vector<double> xd = widen(x), dyd = widen(dy);

  // Forward.
  std::vector<double> ref(count);
  ops_ref::softmax_forward(mode, rows, cols, xd.data(), ref.data());
  {
    Floats dx_in(env, count, kGuard, lead(0)), dy_out(env, in_place ? 0 : count, kGuard, lead(1));
    dx_in.upload(x);
    float* out = in_place ? dx_in.get() : dy_out.get();
    PT_CHECK_OK(porta_softmax_forward(env.stream(), mode, rows, cols, dx_in.get(), out));
    env.sync();
    const Floats& result = in_place ? dx_in : dy_out;
    Comparison cmp = compare(std::string(name_of(mode)) + " forward y", result.download(), ref,
                             forward_scale(mode, rows, cols, xd, ref), kUlp);
    PT_CHECK_CLOSE(cmp.dims({rows, cols}));
    result.check_guard("y");
    if (!in_place) dx_in.check_unchanged("x");
  }

  // Backward, from the forward output rounded to fp32 (what a network would hold).
  std::vector<float> y(count);
  for (size_t i = 0; i < count; ++i) y[i] = static_cast<float>(ref[i]);
  const std::vector<double> yd = widen(y);
  std::vector<double> dref(count);
  ops_ref::softmax_backward(mode, rows, cols, yd.data(), dyd.data(), dref.data());
  {
    Floats dy_y(env, count, kGuard, lead(0)), dy_in(env, count, kGuard, lead(1)),
        dx_out(env, in_place ? 0 : count, kGuard, lead(2));
    dy_y.upload(y);
    dy_in.upload(dy);
    float* out = in_place ? dy_in.get() : dx_out.get();
    PT_CHECK_OK(
        porta_softmax_backward(env.stream(), mode, rows, cols, dy_y.get(), dy_in.get(), out));
    env.sync();
    const Floats& result = in_place ? dy_in : dx_out;
    Comparison cmp = compare(std::string(name_of(mode)) + " backward dx", result.download(), dref,
                             backward_scale(mode, rows, cols, yd, dyd), kUlp);
    PT_CHECK_CLOSE(cmp.dims({rows, cols}));
    result.check_guard("dx");
    dy_y.check_unchanged("y");
    if (!in_place) dy_in.check_unchanged("dy");
  }
}

const Rows kShapes[] = {
    {1, 1},
    {1, 7},
    {7, 1},
    {33, 129},
    {129, 33},
    {3, 1000},
    {5, 4097},
    {2, 33000},
    {1, 100003},
    {256, 256},
    {64, 1024},
    {16, 4096},             // DeepBench-like
    {300, 500},             // past one group on the host: groups of 16 rows, the last of 12
    {9, 257, 30.0, 100.0},  // spread and offset: exp(x) alone would overflow
    {4, 63, 1.0, -50.0},    // all very negative: exp(x) alone would underflow
};

}  // namespace

TEST_CASE("softmax: forward and backward, odd and long rows", "[softmax]") {
  Env env;
  uint64_t index = 0;
  for (const Rows& shape : kShapes)
    run_softmax(env, PORTA_SOFTMAX, shape, false, seed_for(index++));
}

TEST_CASE("log-softmax: forward and backward, odd and long rows", "[softmax]") {
  Env env;
  uint64_t index = 0;
  for (const Rows& shape : kShapes) {
    run_softmax(env, PORTA_LOG_SOFTMAX, shape, false, seed_for(index++));
  }
}

TEST_CASE("softmax and log-softmax: in place (y = x forward, dx = dy backward)", "[softmax]") {
  Env env;
  uint64_t index = 0;
  for (porta_softmax_mode_t mode : {PORTA_SOFTMAX, PORTA_LOG_SOFTMAX}) {
    for (const Rows& shape : {Rows{1, 1}, Rows{7, 33}, Rows{33, 129}, Rows{2, 4097}}) {
      run_softmax(env, mode, shape, true, seed_for(index++));
    }
  }
}

namespace {

void cross_entropy_bounds(int64_t rows, int64_t cols, const std::vector<double>& x,
                          const std::vector<int32_t>& labels, double& loss_scale,
                          std::vector<double>& grad_scale) {
  loss_scale = 0.0;
  grad_scale.assign(x.size(), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const RowStats s = row_stats(&x[r * cols], cols);
    const double label_logit = x[r * cols + labels[r]];
    const double row_loss = s.max + s.log_sum - label_logit;
    loss_scale += double(cols) + 16.0 + 2.0 * s.weighted_abs_d + 2.0 * std::fabs(s.log_sum) +
                  2.0 * std::fabs(s.max) + 2.0 * std::fabs(label_logit) +
                  double(rows + 4) * std::fabs(row_loss);
    for (int64_t j = 0; j < cols; ++j) {
      const size_t i = static_cast<size_t>(r * cols + j);
      const double p = std::exp(x[i] - s.max - s.log_sum);
      const double target = j == labels[r] ? 1.0 : 0.0;
      grad_scale[i] =
          ((p > 0.0 ? p * softmax_factor(s, x[i], cols) : 0.0) + 4.0 * std::fabs(p - target)) /
          double(rows);
    }
  }
  loss_scale /= double(rows);
}

// Cross-entropy on fresh logits and labels: loss with and without the gradient.
void run_cross_entropy(const Env& env, const Rows& shape, uint64_t seed) {
  const int64_t rows = shape.rows, cols = shape.cols;
  INFO("cross-entropy " << rows << "x" << cols << " logits N(" << shape.mean << ", " << shape.stddev
                        << "^2), " << shape.masked << " masked"
                        << (shape.misaligned ? ", misaligned" : "") << ", seed " << seed);
  const auto lead = [&](int i) { return lead_for(shape.misaligned, i); };
  Rng rng(seed);
  const size_t count = static_cast<size_t>(rows * cols);
  std::vector<float> logits = normal(rng, count, shape.stddev, shape.mean);
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (int32_t& label : labels) label = static_cast<int32_t>(rng.integer(0, cols - 1));
  mask(rng, logits, cols, shape.masked, std::vector<int64_t>(labels.begin(), labels.end()));
  raise_peaks(shape, logits);
  const std::vector<double> xd = widen(logits);
  std::vector<double> dref(count);
  const double loss_ref = ops_ref::cross_entropy(rows, cols, xd.data(), labels.data(), dref.data());
  double loss_scale;
  std::vector<double> grad_scale;
  cross_entropy_bounds(rows, cols, xd, labels, loss_scale, grad_scale);

  Floats dx(env, count, kGuard, lead(0)), loss(env, 1, kGuard, lead(1)),
      loss_only(env, 1, kGuard, lead(2)), dlogits(env, count, kGuard, lead(2));
  Labels dlabels(env, labels.size(), kGuard, lead(1));
  dx.upload(logits);
  dlabels.upload(labels);
  PT_CHECK_OK(porta_cross_entropy(env.stream(), rows, cols, dx.get(), dlabels.get(), loss.get(),
                                  dlogits.get()));
  PT_CHECK_OK(porta_cross_entropy(env.stream(), rows, cols, dx.get(), dlabels.get(),
                                  loss_only.get(), nullptr));
  env.sync();
  PT_CHECK_CLOSE(compare("loss", loss.download(), {loss_ref}, {loss_scale}, kUlp));
  PT_CHECK_CLOSE(
      compare("loss (without dlogits)", loss_only.download(), {loss_ref}, {loss_scale}, kUlp));
  Comparison cmp = compare("dlogits", dlogits.download(), dref, grad_scale, kUlp);
  PT_CHECK_CLOSE(cmp.dims({rows, cols}));
  loss.check_guard("loss");
  loss_only.check_guard("loss (without dlogits)");
  dlogits.check_guard("dlogits");
  dx.check_unchanged("logits");
  dlabels.check_unchanged("labels");
}

}  // namespace

TEST_CASE("cross-entropy: loss and gradient, odd and long rows", "[softmax][cross_entropy]") {
  Env env;
  uint64_t index = 0;
  for (const Rows& shape : kShapes) run_cross_entropy(env, shape, seed_for(index++));
  run_cross_entropy(env, {1000, 10}, seed_for(index++));  // many short rows: a long mean
}

TEST_CASE("softmax and cross-entropy: more rows than one grid dimension holds, very long rows",
          "[softmax][cross_entropy][large]") {
  Env env;
  uint64_t index = 0;
  for (const Rows& shape : {Rows{70001, 3}, Rows{1, (1 << 22) + 5}}) {
    run_softmax(env, PORTA_SOFTMAX, shape, false, seed_for(index++));
    run_softmax(env, PORTA_LOG_SOFTMAX, shape, false, seed_for(index++));
    run_cross_entropy(env, shape, seed_for(index++));
  }
  run_cross_entropy(env, {300007, 2}, seed_for(index++));  // a mean over 300007 rows
}

TEST_CASE("cross-entropy: a label out of range makes the loss and its row NaN",
          "[softmax][cross_entropy]") {
  Env env;
  const uint64_t seed = seed_for(0);
  INFO("seed " << seed);
  Rng rng(seed);
  const int64_t rows = 6, cols = 33;
  const std::vector<float> logits = normal(rng, rows * cols);
  const std::vector<int32_t> labels{3, -1, 0, 33, 32, 1 << 30};
  std::vector<double> dref(rows * cols);
  const double loss_ref =
      ops_ref::cross_entropy(rows, cols, widen(logits).data(), labels.data(), dref.data());
  REQUIRE(std::isnan(loss_ref));
  double loss_scale;
  std::vector<double> grad_scale;
  std::vector<int32_t> valid = labels;  // the bounds of the valid rows (the others expect NaN)
  for (int32_t& label : valid) label = std::clamp(label, 0, int32_t(cols - 1));
  cross_entropy_bounds(rows, cols, widen(logits), valid, loss_scale, grad_scale);

  Floats dx(env, logits.size()), loss(env, 1), dlogits(env, logits.size());
  Labels dlabels(env, labels.size());
  dx.upload(logits);
  dlabels.upload(labels);
  PT_CHECK_OK(porta_cross_entropy(env.stream(), rows, cols, dx.get(), dlabels.get(), loss.get(),
                                  dlogits.get()));
  env.sync();
  CHECK(std::isnan(loss.download()[0]));
  Comparison cmp =
      compare("dlogits (rows 1, 3 and 5 NaN)", dlogits.download(), dref, grad_scale, kUlp);
  PT_CHECK_CLOSE(cmp.dims({rows, cols}));
  dlogits.check_guard("dlogits");
}

TEST_CASE("softmax, log-softmax and cross-entropy: masked (-infinity) entries", "[softmax]") {
  // exp(-inf - max) = 0: a masked entry gets probability 0 (log-probability -inf) and passes no
  // gradient back, and the rest of its row is the softmax of the others; the label is never
  // masked. Every row keeps at least one finite entry.
  Env env;
  uint64_t index = 0;
  for (const Rows& shape : {Rows{7, 33, 1.0, 0.0, 0.5}, Rows{3, 1000, 1.0, 0.0, 0.9},
                            Rows{33, 2, 1.0, 0.0, 0.5}, Rows{2, 4097, 3.0, 0.0, 0.3}}) {
    run_softmax(env, PORTA_SOFTMAX, shape, false, seed_for(index++));
    run_softmax(env, PORTA_LOG_SOFTMAX, shape, false, seed_for(index++));
    run_cross_entropy(env, shape, seed_for(index++));
  }
}

TEST_CASE("softmax, log-softmax and cross-entropy: arrays at any 4-byte offset", "[softmax]") {
  Env env;
  uint64_t index = 0;
  for (Rows shape : {Rows{7, 33}, Rows{3, 1000}, Rows{33, 129}, Rows{2, 4097}}) {
    shape.misaligned = true;
    run_softmax(env, PORTA_SOFTMAX, shape, false, seed_for(index++));
    run_softmax(env, PORTA_LOG_SOFTMAX, shape, false, seed_for(index++));
    run_cross_entropy(env, shape, seed_for(index++));
  }
}

TEST_CASE(
    "softmax, log-softmax and cross-entropy: rows about a vector's width, the maximum "
    "anywhere, either side of the longest cached row",
    "[softmax]") {
  // On the CPU a row is one work-item's: 16 lanes to a vector, the maximum found 64 elements at
  // a time, then 16 (100: one step of 64, two of 16, 4 left), and rows up to 65536 elements in
  // three passes over the cached row (longer ones with the online normaliser). Each length is
  // taken with the maximum at every column of interest.
  Env env;
  uint64_t index = 0;
  for (const Rows& shape :
       {Rows{17, 15, 1.0, 0.0, 0.0, false, true}, Rows{17, 16, 1.0, 0.0, 0.0, false, true},
        Rows{18, 17, 1.0, 0.0, 0.0, false, true}, Rows{64, 63, 1.0, 0.0, 0.0, false, true},
        Rows{65, 64, 1.0, 0.0, 0.0, false, true}, Rows{66, 65, 1.0, 0.0, 0.0, false, true},
        Rows{130, 129, 3.0, 0.0, 0.3, false, true}, Rows{100, 100, 1.0, 0.0, 0.0, false, true},
        Rows{2, 65536}, Rows{2, 65537}, Rows{2, 65536, 2.0, 0.0, 0.5},
        Rows{2, 65537, 2.0, 0.0, 0.5}}) {
    run_softmax(env, PORTA_SOFTMAX, shape, false, seed_for(index++));
    run_softmax(env, PORTA_LOG_SOFTMAX, shape, false, seed_for(index++));
    run_cross_entropy(env, shape, seed_for(index++));
  }
  for (porta_softmax_mode_t mode : {PORTA_SOFTMAX, PORTA_LOG_SOFTMAX}) {
    run_softmax(env, mode, Rows{66, 65, 1.0, 0.0, 0.0, false, true}, true, seed_for(index++));
    run_softmax(env, mode, Rows{2, 65536}, true, seed_for(index++));
  }
}

TEST_CASE("softmax, log-softmax and cross-entropy: values near the float limits", "[softmax]") {
  // Rows spread over +-3e38, so that x - max reaches -infinity: softmax only, whose outputs stay
  // in range (log-softmax's would not). Rows offset by +-2e38, and rows with every element but
  // one masked: all three.
  Env env;
  uint64_t index = 0;
  run_softmax(env, PORTA_SOFTMAX, Rows{5, 1000, 6e37, 0.0}, false, seed_for(index++));
  for (const Rows& shape :
       {Rows{3, 70, 2e37, 2e38}, Rows{4, 33, 2e37, -2e38}, Rows{6, 40, 1.0, 0.0, 0.999}}) {
    run_softmax(env, PORTA_SOFTMAX, shape, false, seed_for(index++));
    run_softmax(env, PORTA_LOG_SOFTMAX, shape, false, seed_for(index++));
    run_cross_entropy(env, shape, seed_for(index++));
  }
}

// A row holding a NaN or +infinity has no finite maximum to subtract: every element of its
// softmax and log-softmax is NaN, and the other rows are unaffected. The portable ops' rule;
// oneDNN keeps the finite elements' exp(x - max) = 0, so only the portable ops are held to it.
TEST_CASE("softmax and log-softmax: a NaN or +infinity makes its whole row NaN", "[softmax]") {
  if (!portable_ops()) {
    WARN("softmax of rows with a NaN or +infinity is checked on the portable ops only");
    return;
  }
  Env env;
  const float inf = std::numeric_limits<float>::infinity();
  for (const int64_t cols : {int64_t{3}, int64_t{100}}) {
    for (const porta_softmax_mode_t mode : {PORTA_SOFTMAX, PORTA_LOG_SOFTMAX}) {
      // Rows: NaN first, +inf last, NaN in the middle, finite.
      const int64_t rows = 4;
      std::vector<float> x(static_cast<size_t>(rows * cols));
      for (int64_t i = 0; i < rows * cols; ++i) x[i] = float(i % cols) * 0.25f;
      x[0 * cols] = NAN;
      x[1 * cols + cols - 1] = inf;
      x[2 * cols + cols / 2] = NAN;
      Floats in(env, x.size(), kGuard), out(env, x.size(), kGuard);
      in.upload(x);
      PT_CHECK_OK(porta_softmax_forward(env.stream(), mode, rows, cols, in.get(), out.get()));
      env.sync();
      const std::vector<float> y = out.download();
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          INFO(name_of(mode) << " " << rows << "x" << cols << " at row " << r << " column " << c);
          CHECK(std::isnan(y[r * cols + c]) == (r < 3));
        }
      }
      out.check_guard("y");
    }
  }
}
