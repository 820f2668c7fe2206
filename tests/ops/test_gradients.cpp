// Finite-difference gradient checks: every backward op must be the gradient of its forward as
// porta_ops.h defines it, independently of how the reference backward was written.
//
// For a forward f and a random upstream gradient dy, L(v) = sum(dy * f(v)); its gradient with
// respect to each input v_j is estimated by float64 central differences
// (L(v + h e_j) - L(v - h e_j)) / 2h, with f the float64 reference forward evaluated at the very
// fp32 inputs given to Porta. Porta's backward (fp32) must match it, and so must the reference
// backward (a self-check of the reference the other files rely on).
//
// Tolerance: the op's own tolerance (see its test file) plus 1e-6 of the same scale (padded by
// 1e-3 of the largest scale, see check_gradient), for the central difference's error: for the
// bilinear ops (convolution, GEMM, bias) it is exact up to float64 rounding of L, ~1e-16 |L| / h,
// with h = 1e-3; for the smooth ones (softmax, cross-entropy) truncation adds ~h^2 |f'''| / 6 ~
// 1e-9 with h = 1e-4; ReLU and max-pooling are piecewise linear, so the difference is exact as long
// as no input is within h of a kink (ReLU: |x| >= 1e-2) or of another input of its window (pooling:
// all inputs 1e-3 apart). A wrong sign, a transposed or flipped kernel, a missing term or a wrong
// index is O(1) off.
#include <algorithm>
#include <cmath>
#include <functional>

#include "ops_test.h"

using namespace ops_test;

namespace {

constexpr double kFdSlack = 1e-6;

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// Central differences of loss at `at`, one input at a time.
std::vector<double> central_differences(
    std::vector<double> at, double h,
    const std::function<double(const std::vector<double>&)>& loss) {
  std::vector<double> gradient(at.size());
  for (size_t j = 0; j < at.size(); ++j) {
    const double saved = at[j];
    at[j] = saved + h;
    const double plus = loss(at);
    at[j] = saved - h;
    const double minus = loss(at);
    at[j] = saved;
    gradient[j] = (plus - minus) / (2.0 * h);
  }
  return gradient;
}

// Checks Porta's gradient and the reference's against the finite differences. The difference's
// own error does not shrink with the element: 1e-3 of the largest scale is added to each, so
// that float64 rounding of L (~1e-16 |L| / h, ~1e-12 here) never fails a tiny element.
void check_gradient(const std::string& what, const std::vector<float>& porta,
                    const std::vector<double>& reference, const std::vector<double>& numeric,
                    const std::vector<double>& scale, double op_tol, std::vector<int64_t> dims) {
  const double largest = *std::max_element(scale.begin(), scale.end());
  std::vector<double> padded(scale);
  for (double& s : padded) s += 1e-3 * largest;
  Comparison from_porta =
      compare(what + " (Porta) vs finite differences", porta, numeric, padded, op_tol + kFdSlack);
  PT_CHECK_CLOSE(from_porta.dims(dims));
  std::vector<float> rounded(reference.begin(), reference.end());
  Comparison from_reference =
      compare(what + " (reference) vs finite differences", rounded, numeric, padded, kFdSlack);
  PT_CHECK_CLOSE(from_reference.dims(dims));
}

}  // namespace

TEST_CASE("gradients: conv2d backward-data and backward-weights", "[gradients][conv]") {
  Env env;
  struct Case {
    int64_t n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w;
  };
  const Case cases[] = {
      {2, 3, 7, 6, 4, 3, 3, 1, 1, 2, 2, 1, 1},  // stride 2, padding
      {1, 2, 9, 8, 3, 3, 2, 2, 1, 1, 2, 2, 1},  // dilation, mixed strides
      {2, 2, 5, 5, 3, 1, 1, 0, 0, 1, 1, 1, 1},  // 1x1
  };
  uint64_t index = 0;
  for (const Case& c : cases) {
    porta_conv2d_desc_t d{};
    d.struct_size = sizeof d;
    d.batch = c.n, d.in_channels = c.c, d.in_height = c.h, d.in_width = c.w;
    d.out_channels = c.k, d.kernel_height = c.r, d.kernel_width = c.s;
    d.pad_h = c.pad_h, d.pad_w = c.pad_w, d.stride_h = c.stride_h, d.stride_w = c.stride_w;
    d.dilation_h = c.dilation_h, d.dilation_w = c.dilation_w, d.dtype = PORTA_DTYPE_F32;
    const uint64_t seed = seed_for(index++);
    INFO("conv x " << c.n << "x" << c.c << "x" << c.h << "x" << c.w << " w " << c.k << "x" << c.c
                   << "x" << c.r << "x" << c.s << ", seed " << seed);
    const ops_ref::ConvShape shape = ops_ref::conv_shape(d);
    Rng rng(seed);
    const std::vector<float> x = normal(rng, shape.x_count), w = normal(rng, shape.w_count),
                             dy = normal(rng, shape.y_count);
    const std::vector<double> xd = widen(x), wd = widen(w), dyd = widen(dy);

    Floats fx(env, x.size()), fw(env, w.size()), fdy(env, dy.size()), dx(env, x.size()),
        dw(env, w.size());
    fx.upload(x), fw.upload(w), fdy.upload(dy);
    PT_CHECK_OK(porta_conv2d_backward_data(env.stream(), &d, fdy.get(), fw.get(), dx.get()));
    PT_CHECK_OK(porta_conv2d_backward_weights(env.stream(), &d, fx.get(), fdy.get(), dw.get()));
    env.sync();

    std::vector<double> y(shape.y_count);
    const auto loss_of_x = [&](const std::vector<double>& v) {
      ops_ref::conv2d_forward(d, v.data(), wd.data(), y.data());
      return dot(dyd, y);
    };
    const auto loss_of_w = [&](const std::vector<double>& v) {
      ops_ref::conv2d_forward(d, xd.data(), v.data(), y.data());
      return dot(dyd, y);
    };
    std::vector<double> dx_ref(x.size()), dw_ref(w.size()), dx_scale(x.size()), dw_scale(w.size());
    ops_ref::conv2d_backward_data(d, dyd.data(), wd.data(), dx_ref.data());
    ops_ref::conv2d_backward_data(d, abs_of(dyd).data(), abs_of(wd).data(), dx_scale.data());
    ops_ref::conv2d_backward_weights(d, xd.data(), dyd.data(), dw_ref.data());
    ops_ref::conv2d_backward_weights(d, abs_of(xd).data(), abs_of(dyd).data(), dw_scale.data());
    check_gradient("conv dx", dx.download(), dx_ref, central_differences(xd, 1e-3, loss_of_x),
                   dx_scale, double(c.k * c.r * c.s + 2) * kUlp, {c.n, c.c, c.h, c.w});
    check_gradient("conv dw", dw.download(), dw_ref, central_differences(wd, 1e-3, loss_of_w),
                   dw_scale, double(c.n * shape.out_height * shape.out_width + 2) * kUlp,
                   {c.k, c.c, c.r, c.s});
  }
}

TEST_CASE("gradients: GEMM as a linear layer's backward (dX = dY W^T, dW = X^T dY, ...)",
          "[gradients][gemm]") {
  // Y = X W (X: batch x in, W: in x out) and, as torch.nn.Linear stores it, Y = X W^T
  // (W: out x in). Their backward passes are GEMMs with transposes:
  //   Y = X W:    dX = dY W^T (NT),  dW = X^T dY (TN)
  //   Y = X W^T:  dX = dY W   (NN),  dW = dY^T X (TN)
  Env env;
  const int64_t shapes[][3] = {{7, 33, 5}, {1, 17, 9}, {33, 1, 7}, {9, 33, 17}};
  uint64_t index = 0;
  for (const auto& shape : shapes) {
    const int64_t batch = shape[0], in = shape[1], out = shape[2];
    for (bool torch_layout : {false, true}) {
      const uint64_t seed = seed_for(index++);
      INFO("linear batch " << batch << " in " << in << " out " << out
                           << (torch_layout ? " (W stored out x in)" : " (W stored in x out)")
                           << ", seed " << seed);
      Rng rng(seed);
      const std::vector<float> x = normal(rng, batch * in), w = normal(rng, in * out),
                               dy = normal(rng, batch * out);
      const std::vector<double> xd = widen(x), wd = widen(w), dyd = widen(dy);

      const auto desc = [](porta_transpose_t ta, porta_transpose_t tb, int64_t m, int64_t n,
                           int64_t k, int64_t lda, int64_t ldb) {
        porta_gemm_desc_t g{};
        g.struct_size = sizeof g;
        g.trans_a = ta, g.trans_b = tb, g.m = m, g.n = n, g.k = k;
        g.lda = lda, g.ldb = ldb, g.ldc = n, g.alpha = 1.0f, g.beta = 0.0f, g.batch_count = 1;
        g.dtype = PORTA_DTYPE_F32;
        return g;
      };
      constexpr porta_transpose_t N = PORTA_NO_TRANSPOSE, T = PORTA_TRANSPOSE;
      // The forward and the two backward GEMMs, with their operands (X, W, dY) in order.
      const porta_gemm_desc_t forward =
          torch_layout ? desc(N, T, batch, out, in, in, in) : desc(N, N, batch, out, in, in, out);
      const porta_gemm_desc_t backward_x =
          torch_layout ? desc(N, N, batch, in, out, out, in) : desc(N, T, batch, in, out, out, out);
      const porta_gemm_desc_t backward_w =
          torch_layout ? desc(T, N, out, in, batch, out, in) : desc(T, N, in, out, batch, in, out);

      Floats fx(env, x.size()), fw(env, w.size()), fdy(env, dy.size()), dx(env, x.size()),
          dw(env, w.size());
      fx.upload(x), fw.upload(w), fdy.upload(dy);
      PT_CHECK_OK(porta_gemm(env.stream(), &backward_x, fdy.get(), fw.get(), dx.get()));
      if (torch_layout) {
        PT_CHECK_OK(porta_gemm(env.stream(), &backward_w, fdy.get(), fx.get(), dw.get()));
      } else {
        PT_CHECK_OK(porta_gemm(env.stream(), &backward_w, fx.get(), fdy.get(), dw.get()));
      }
      env.sync();

      std::vector<double> y(batch * out);
      const auto loss_of_x = [&](const std::vector<double>& v) {
        ops_ref::gemm(forward, v.data(), wd.data(), y.data());
        return dot(dyd, y);
      };
      const auto loss_of_w = [&](const std::vector<double>& v) {
        ops_ref::gemm(forward, xd.data(), v.data(), y.data());
        return dot(dyd, y);
      };
      std::vector<double> dx_ref(x.size()), dw_ref(w.size()), dx_scale(x.size()),
          dw_scale(w.size());
      ops_ref::gemm(backward_x, dyd.data(), wd.data(), dx_ref.data());
      ops_ref::gemm(backward_x, abs_of(dyd).data(), abs_of(wd).data(), dx_scale.data());
      const std::vector<double>& first = torch_layout ? dyd : xd;
      const std::vector<double>& second = torch_layout ? xd : dyd;
      ops_ref::gemm(backward_w, first.data(), second.data(), dw_ref.data());
      ops_ref::gemm(backward_w, abs_of(first).data(), abs_of(second).data(), dw_scale.data());
      check_gradient("linear dX", dx.download(), dx_ref, central_differences(xd, 1e-3, loss_of_x),
                     dx_scale, double(out + 2) * kUlp, {batch, in});
      check_gradient("linear dW", dw.download(), dw_ref, central_differences(wd, 1e-3, loss_of_w),
                     dw_scale, double(batch + 2) * kUlp,
                     torch_layout ? std::vector<int64_t>{out, in} : std::vector<int64_t>{in, out});
    }
  }
}

TEST_CASE("gradients: softmax and log-softmax backward", "[gradients][softmax]") {
  // Porta's backward takes the forward output y; it gets the reference's, rounded to fp32, which
  // moves the result by about u relative: inside the op tolerance used below, which is the
  // softmax backward's (test_softmax.cpp) simplified to its dominant term, (cols + 8) * 2^-23
  // times sum_j |dL/dy_j| max(y_j, exp(y_j)) + |the element's own term|.
  Env env;
  const int64_t shapes[][2] = {{1, 1}, {3, 33}, {2, 129}, {5, 7}};
  uint64_t index = 0;
  for (porta_softmax_mode_t mode : {PORTA_SOFTMAX, PORTA_LOG_SOFTMAX}) {
    for (const auto& shape : shapes) {
      const int64_t rows = shape[0], cols = shape[1];
      const uint64_t seed = seed_for(index++);
      INFO((mode == PORTA_SOFTMAX ? "softmax " : "log-softmax ")
           << rows << "x" << cols << ", seed " << seed);
      Rng rng(seed);
      const std::vector<float> x = normal(rng, rows * cols, 2.0), dy = normal(rng, rows * cols);
      const std::vector<double> xd = widen(x), dyd = widen(dy);
      std::vector<double> y_ref(x.size());
      ops_ref::softmax_forward(mode, rows, cols, xd.data(), y_ref.data());
      const std::vector<float> y(y_ref.begin(), y_ref.end());

      Floats fy(env, y.size()), fdy(env, dy.size()), dx(env, x.size());
      fy.upload(y), fdy.upload(dy);
      PT_CHECK_OK(
          porta_softmax_backward(env.stream(), mode, rows, cols, fy.get(), fdy.get(), dx.get()));
      env.sync();

      std::vector<double> out(x.size());
      const auto loss = [&](const std::vector<double>& v) {
        ops_ref::softmax_forward(mode, rows, cols, v.data(), out.data());
        return dot(dyd, out);
      };
      std::vector<double> dx_ref(x.size()), scale(x.size());
      ops_ref::softmax_backward(mode, rows, cols, widen(y).data(), dyd.data(), dx_ref.data());
      for (int64_t r = 0; r < rows; ++r) {
        double magnitude = 0.0;
        for (int64_t j = 0; j < cols; ++j) {
          const size_t i = static_cast<size_t>(r * cols + j);
          magnitude += std::fabs(dyd[i]) * (mode == PORTA_SOFTMAX ? y_ref[i] : 1.0);
        }
        for (int64_t j = 0; j < cols; ++j) {
          const size_t i = static_cast<size_t>(r * cols + j);
          const double p = mode == PORTA_SOFTMAX ? y_ref[i] : std::exp(y_ref[i]);
          scale[i] = (mode == PORTA_SOFTMAX ? p : 1.0) * std::fabs(dyd[i]) + p * magnitude;
        }
      }
      check_gradient("dx", dx.download(), dx_ref, central_differences(xd, 1e-4, loss), scale,
                     double(cols + 8) * kUlp, {rows, cols});
    }
  }
}

TEST_CASE("gradients: cross-entropy dlogits", "[gradients][cross_entropy]") {
  // Scale: (p + |p - onehot|) / rows per element, the gradient's own magnitude; tolerance
  // (cols + 16) * 2^-23 for the softmax inside (test_softmax.cpp), at logits of spread 2.
  Env env;
  const int64_t shapes[][2] = {{1, 1}, {5, 17}, {3, 129}, {33, 2}};
  uint64_t index = 0;
  for (const auto& shape : shapes) {
    const int64_t rows = shape[0], cols = shape[1];
    const uint64_t seed = seed_for(index++);
    INFO("cross-entropy " << rows << "x" << cols << ", seed " << seed);
    Rng rng(seed);
    const std::vector<float> logits = normal(rng, rows * cols, 2.0);
    std::vector<int32_t> labels(rows);
    for (int32_t& label : labels) label = static_cast<int32_t>(rng.integer(0, cols - 1));
    const std::vector<double> xd = widen(logits);

    Floats fx(env, logits.size()), loss(env, 1), dlogits(env, logits.size());
    Labels fl(env, labels.size());
    fx.upload(logits);
    fl.upload(labels);
    PT_CHECK_OK(porta_cross_entropy(env.stream(), rows, cols, fx.get(), fl.get(), loss.get(),
                                    dlogits.get()));
    env.sync();

    const auto loss_of = [&](const std::vector<double>& v) {
      return ops_ref::cross_entropy(rows, cols, v.data(), labels.data(), nullptr);
    };
    std::vector<double> d_ref(logits.size()), scale(logits.size());
    ops_ref::cross_entropy(rows, cols, xd.data(), labels.data(), d_ref.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        const size_t i = static_cast<size_t>(r * cols + j);
        const double target = j == labels[r] ? 1.0 : 0.0;
        const double p = d_ref[i] * double(rows) + target;
        scale[i] = (p + std::fabs(p - target)) / double(rows);
      }
    }
    check_gradient("dlogits", dlogits.download(), d_ref, central_differences(xd, 1e-4, loss_of),
                   scale, double(cols + 16 + 4 * 2) * kUlp, {rows, cols});
  }
}

TEST_CASE("gradients: bias backward", "[gradients][bias]") {
  Env env;
  const int64_t shapes[][3] = {{1, 1, 1}, {3, 7, 5}, {2, 33, 1}, {4, 3, 49}};
  uint64_t index = 0;
  for (const auto& shape : shapes) {
    const int64_t batch = shape[0], channels = shape[1], spatial = shape[2];
    const uint64_t seed = seed_for(index++);
    INFO("bias " << batch << "x" << channels << "x" << spatial << ", seed " << seed);
    Rng rng(seed);
    const size_t count = static_cast<size_t>(batch * channels * spatial);
    const std::vector<float> x = normal(rng, count), bias = normal(rng, channels),
                             dy = normal(rng, count);
    const std::vector<double> xd = widen(x), dyd = widen(dy);

    Floats fdy(env, count), dbias(env, channels);
    fdy.upload(dy);
    PT_CHECK_OK(
        porta_bias_backward(env.stream(), batch, channels, spatial, fdy.get(), dbias.get()));
    env.sync();

    std::vector<double> y(count);
    const auto loss = [&](const std::vector<double>& b) {
      ops_ref::bias_add(batch, channels, spatial, xd.data(), b.data(), y.data());
      return dot(dyd, y);
    };
    std::vector<double> ref(channels), scale(channels);
    ops_ref::bias_backward(batch, channels, spatial, dyd.data(), ref.data());
    ops_ref::bias_backward(batch, channels, spatial, abs_of(dyd).data(), scale.data());
    check_gradient("dbias", dbias.download(), ref, central_differences(widen(bias), 1e-3, loss),
                   scale, double(batch * spatial + 2) * kUlp, {channels});
  }
}

TEST_CASE("gradients: relu backward, away from the kink", "[gradients][relu]") {
  Env env;
  uint64_t index = 0;
  for (int64_t count : {1, 7, 129, 1000}) {
    const uint64_t seed = seed_for(index++);
    INFO("relu count " << count << ", seed " << seed);
    Rng rng(seed);
    const std::vector<float> x = normal_away_from_zero(rng, count, 1e-2), dy = normal(rng, count);
    const std::vector<double> xd = widen(x), dyd = widen(dy);
    Floats fx(env, count), fdy(env, count), dx(env, count);
    fx.upload(x), fdy.upload(dy);
    PT_CHECK_OK(porta_relu_backward(env.stream(), count, fx.get(), fdy.get(), dx.get()));
    env.sync();

    std::vector<double> y(count);
    const auto loss = [&](const std::vector<double>& v) {
      ops_ref::relu_forward(count, v.data(), y.data());
      return dot(dyd, y);
    };
    std::vector<double> ref(count);
    ops_ref::relu_backward(count, xd.data(), dyd.data(), ref.data());
    check_gradient("relu dx", dx.download(), ref, central_differences(xd, 1e-4, loss), abs_of(dyd),
                   kU, {count});
  }
}

TEST_CASE("gradients: max-pool backward, inputs without ties", "[gradients][pool]") {
  Env env;
  struct Case {
    int64_t n, c, h, w, window_h, window_w, stride_h, stride_w, pad_h, pad_w;
  };
  const Case cases[] = {{2, 3, 9, 8, 3, 3, 2, 2, 1, 1},   // overlapping, padded
                        {1, 2, 7, 7, 2, 2, 1, 1, 0, 0},   // stride 1: heavy overlap
                        {1, 2, 6, 10, 2, 3, 2, 3, 0, 1},  // non-square
                        {2, 1, 5, 5, 5, 5, 1, 1, 0, 0}};  // global
  uint64_t index = 0;
  for (const Case& c : cases) {
    porta_pool2d_desc_t d{};
    d.struct_size = sizeof d;
    d.batch = c.n, d.channels = c.c, d.in_height = c.h, d.in_width = c.w;
    d.window_h = c.window_h, d.window_w = c.window_w, d.stride_h = c.stride_h;
    d.stride_w = c.stride_w, d.pad_h = c.pad_h, d.pad_w = c.pad_w;
    const uint64_t seed = seed_for(index++);
    INFO("max-pool x " << c.n << "x" << c.c << "x" << c.h << "x" << c.w << " window " << c.window_h
                       << "x" << c.window_w << ", seed " << seed);
    const ops_ref::PoolShape shape = ops_ref::pool_shape(d);
    Rng rng(seed);
    const std::vector<float> x = normal_distinct(rng, shape.x_count, 1e-3),
                             dy = normal(rng, shape.y_count);
    const std::vector<double> xd = widen(x), dyd = widen(dy);
    Floats fx(env, x.size()), fdy(env, dy.size()), dx(env, x.size());
    fx.upload(x), fdy.upload(dy);
    PT_CHECK_OK(porta_max_pool2d_backward(env.stream(), &d, fx.get(), fdy.get(), dx.get()));
    env.sync();

    std::vector<double> y(shape.y_count);
    const auto loss = [&](const std::vector<double>& v) {
      ops_ref::max_pool2d_forward(d, v.data(), y.data());
      return dot(dyd, y);
    };
    std::vector<double> ref(x.size()), scale(x.size());
    ops_ref::max_pool2d_backward(d, xd.data(), dyd.data(), ref.data());
    ops_ref::max_pool2d_backward(d, xd.data(), abs_of(dyd).data(), scale.data());
    check_gradient("max-pool dx", dx.download(), ref, central_differences(xd, 1e-4, loss), scale,
                   double(c.window_h * c.window_w + 2) * kUlp, {c.n, c.c, c.h, c.w});
  }
}
