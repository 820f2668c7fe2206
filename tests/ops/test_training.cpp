// Training smoke tests: small networks trained for a few hundred steps on generated, learnable
// data with Porta's ops alone, on the device. Every forward and backward step is an op of
// porta_ops.h (GEMM for the dense layers and their gradients, conv2d, bias add/backward, ReLU,
// max-pool, softmax cross-entropy, and the SGD-momentum or Adam update); the host only generates
// the data, reads the losses, and counts correct answers.
//
// Asserted: the loss over the whole training set falls well below where it started (under 30%
// of it), and held-out accuracy is well above chance (chance is 25%). Fixed seeds make each run
// reproducible; the margins are wide enough that any correct implementation passes whatever the
// order of its fp32 sums, while a wrong gradient, a wrong transpose or a broken update stalls the
// loss.
#include <algorithm>
#include <cmath>
#include <memory>
#include <sstream>

#include "ops_test.h"

using namespace ops_test;

namespace {

enum class Optimizer { kSgd, kAdam };

const char* name_of(Optimizer o) { return o == Optimizer::kSgd ? "SGD-momentum" : "Adam"; }

// A parameter tensor with its gradient and optimiser state (velocity, or Adam's m and v).
struct Param {
  Param(const Env& env, const std::vector<float>& init)
      : count(static_cast<int64_t>(init.size())),
        w(env, init.size()),
        grad(env, init.size()),
        m(env, init.size()),
        v(env, init.size()) {
    w.upload(init);
    m.upload(std::vector<float>(init.size(), 0.0f));
    v.upload(std::vector<float>(init.size(), 0.0f));
  }
  int64_t count;
  Floats w, grad, m, v;
};

void update(const Env& env, Param& p, Optimizer optimizer, int64_t step) {
  if (optimizer == Optimizer::kSgd) {
    PT_REQUIRE_OK(porta_sgd_update(env.stream(), p.count, p.w.get(), p.grad.get(), p.m.get(), 0.05f,
                                   0.9f, 1e-4f));
  } else {
    porta_adam_params_t params{};
    params.struct_size = sizeof params;
    params.learning_rate = 0.01f, params.beta1 = 0.9f, params.beta2 = 0.999f;
    params.epsilon = 1e-8f, params.weight_decay = 1e-4f, params.step = step;
    PT_REQUIRE_OK(porta_adam_update(env.stream(), p.count, p.w.get(), p.grad.get(), p.m.get(),
                                    p.v.get(), &params));
  }
}

// C (m x n, packed) = op(A) op(B), packed operands.
void gemm(const Env& env, porta_transpose_t ta, porta_transpose_t tb, int64_t m, int64_t n,
          int64_t k, const float* a, const float* b, float* c) {
  porta_gemm_desc_t d{};
  d.struct_size = sizeof d;
  d.trans_a = ta, d.trans_b = tb, d.m = m, d.n = n, d.k = k;
  d.lda = ta == PORTA_TRANSPOSE ? m : k;
  d.ldb = tb == PORTA_TRANSPOSE ? k : n;
  d.ldc = n, d.alpha = 1.0f, d.beta = 0.0f, d.batch_count = 1, d.dtype = PORTA_DTYPE_F32;
  PT_REQUIRE_OK(porta_gemm(env.stream(), &d, a, b, c));
}

constexpr porta_transpose_t N = PORTA_NO_TRANSPOSE, T = PORTA_TRANSPOSE;

std::vector<float> scaled_normal(Rng& rng, size_t n, double stddev) {
  return normal(rng, n, stddev);
}

// Fraction of rows whose largest logit is the label.
double accuracy(const std::vector<float>& logits, const std::vector<int32_t>& labels,
                int64_t classes) {
  int64_t correct = 0;
  for (size_t r = 0; r < labels.size(); ++r) {
    const auto row = logits.begin() + static_cast<std::ptrdiff_t>(r * classes);
    correct += std::max_element(row, row + classes) - row == labels[r];
  }
  return double(correct) / double(labels.size());
}

struct Dataset {
  std::vector<float> x;  // count x features (or count x 1 x H x W images)
  std::vector<int32_t> labels;
  int64_t count;
};

// ---- the MLP ------------------------------------------------------------------------------------

// 8 Gaussian clusters in 16 dimensions, two per class (cluster i is class i % 4), so the classes
// are not linearly separable in general and the hidden layer has work to do.
constexpr int64_t kFeatures = 16, kHidden = 64, kClasses = 4, kClusters = 8;

Dataset clusters(Rng& rng, const std::vector<float>& centers, int64_t count) {
  Dataset d{std::vector<float>(count * kFeatures), std::vector<int32_t>(count), count};
  for (int64_t i = 0; i < count; ++i) {
    const int64_t cluster = rng.integer(0, kClusters - 1);
    d.labels[i] = static_cast<int32_t>(cluster % kClasses);
    for (int64_t f = 0; f < kFeatures; ++f) {
      d.x[i * kFeatures + f] = centers[cluster * kFeatures + f] + static_cast<float>(rng.normal());
    }
  }
  return d;
}

// 16 -> 64 (ReLU) -> 4, softmax cross-entropy.
class Mlp {
 public:
  Mlp(const Env& env, Rng& rng, int64_t max_rows)
      : env_(env),
        w1_(env, scaled_normal(rng, kFeatures * kHidden, std::sqrt(2.0 / kFeatures))),
        b1_(env, scaled_normal(rng, kHidden, 0.01)),
        w2_(env, scaled_normal(rng, kHidden * kClasses, std::sqrt(1.0 / kHidden))),
        b2_(env, scaled_normal(rng, kClasses, 0.01)),
        pre_(env, max_rows * kHidden),
        hidden_(env, max_rows * kHidden),
        logits_(env, max_rows * kClasses),
        dlogits_(env, max_rows * kClasses),
        dhidden_(env, max_rows * kHidden) {}

  // Forward over rows samples; the loss goes to *loss (device), the gradient of the logits to
  // dlogits_ when backward follows.
  void forward(int64_t rows, const float* x, const int32_t* labels, float* loss, bool gradient) {
    gemm(env_, N, N, rows, kHidden, kFeatures, x, w1_.w.get(), pre_.get());
    PT_REQUIRE_OK(
        porta_bias_add(env_.stream(), rows, kHidden, 1, pre_.get(), b1_.w.get(), pre_.get()));
    PT_REQUIRE_OK(porta_relu_forward(env_.stream(), rows * kHidden, pre_.get(), hidden_.get()));
    gemm(env_, N, N, rows, kClasses, kHidden, hidden_.get(), w2_.w.get(), logits_.get());
    PT_REQUIRE_OK(porta_bias_add(env_.stream(), rows, kClasses, 1, logits_.get(), b2_.w.get(),
                                 logits_.get()));
    PT_REQUIRE_OK(porta_cross_entropy(env_.stream(), rows, kClasses, logits_.get(), labels, loss,
                                      gradient ? dlogits_.get() : nullptr));
  }

  void backward_and_update(int64_t rows, const float* x, Optimizer optimizer, int64_t step) {
    const auto s = env_.stream();
    gemm(env_, T, N, kHidden, kClasses, rows, hidden_.get(), dlogits_.get(), w2_.grad.get());
    PT_REQUIRE_OK(porta_bias_backward(s, rows, kClasses, 1, dlogits_.get(), b2_.grad.get()));
    gemm(env_, N, T, rows, kHidden, kClasses, dlogits_.get(), w2_.w.get(), dhidden_.get());
    PT_REQUIRE_OK(
        porta_relu_backward(s, rows * kHidden, pre_.get(), dhidden_.get(), dhidden_.get()));
    gemm(env_, T, N, kFeatures, kHidden, rows, x, dhidden_.get(), w1_.grad.get());
    PT_REQUIRE_OK(porta_bias_backward(s, rows, kHidden, 1, dhidden_.get(), b1_.grad.get()));
    for (Param* p : {&w1_, &b1_, &w2_, &b2_}) update(env_, *p, optimizer, step);
  }

  std::vector<float> logits(int64_t rows) const {
    std::vector<float> all = logits_.download();
    all.resize(static_cast<size_t>(rows * kClasses));
    return all;
  }

 private:
  const Env& env_;
  Param w1_, b1_, w2_, b2_;
  Floats pre_, hidden_, logits_, dlogits_, dhidden_;
};

// ---- the CNN ------------------------------------------------------------------------------------

// 12x12 images of a short bar (5 pixels, brightness 2) on noise N(0, 0.5^2), anywhere in the
// image: class 0 horizontal, 1 vertical, 2 diagonal, 3 anti-diagonal.
constexpr int64_t kSide = 12;

Dataset bars(Rng& rng, int64_t count) {
  Dataset d{normal(rng, count * kSide * kSide, 0.5), std::vector<int32_t>(count), count};
  const int64_t dr[] = {0, 1, 1, 1}, dc[] = {1, 0, 1, -1};
  for (int64_t i = 0; i < count; ++i) {
    const int32_t label = static_cast<int32_t>(rng.integer(0, 3));
    d.labels[i] = label;
    const int64_t r0 = rng.integer(0, kSide - 1 - 4 * dr[label]);
    const int64_t c0 =
        dc[label] < 0 ? rng.integer(4, kSide - 1) : rng.integer(0, kSide - 1 - 4 * dc[label]);
    for (int64_t t = 0; t < 5; ++t) {
      d.x[(i * kSide + r0 + t * dr[label]) * kSide + c0 + t * dc[label]] += 2.0f;
    }
  }
  return d;
}

// conv 1->4 3x3 pad 1, ReLU; conv 4->8 3x3 pad 1 stride 2 (12 -> 6), ReLU; max-pool 2x2 (6 -> 3);
// dense 72 -> 4; softmax cross-entropy. The first convolution needs no data gradient; the second
// does.
class Cnn {
 public:
  static constexpr int64_t kC1 = 4, kC2 = 8, kMid = 6, kPooled = 3;
  static constexpr int64_t kFlat = kC2 * kPooled * kPooled;

  Cnn(const Env& env, Rng& rng, int64_t max_rows)
      : env_(env),
        conv1_(env, scaled_normal(rng, kC1 * 1 * 9, std::sqrt(2.0 / 9))),
        bias1_(env, scaled_normal(rng, kC1, 0.01)),
        conv2_(env, scaled_normal(rng, kC2 * kC1 * 9, std::sqrt(2.0 / (kC1 * 9)))),
        bias2_(env, scaled_normal(rng, kC2, 0.01)),
        dense_(env, scaled_normal(rng, kFlat * kClasses, std::sqrt(1.0 / kFlat))),
        bias3_(env, scaled_normal(rng, kClasses, 0.01)),
        a1_(env, max_rows * kC1 * kSide * kSide),
        h1_(env, max_rows * kC1 * kSide * kSide),
        a2_(env, max_rows * kC2 * kMid * kMid),
        h2_(env, max_rows * kC2 * kMid * kMid),
        pooled_(env, max_rows * kFlat),
        logits_(env, max_rows * kClasses),
        dlogits_(env, max_rows * kClasses),
        dpooled_(env, max_rows * kFlat),
        dh2_(env, max_rows * kC2 * kMid * kMid),
        dh1_(env, max_rows * kC1 * kSide * kSide) {}

  void forward(int64_t rows, const float* x, const int32_t* labels, float* loss, bool gradient) {
    const auto s = env_.stream();
    const porta_conv2d_desc_t c1 = conv1(rows), c2 = conv2(rows);
    const porta_pool2d_desc_t p = pool(rows);
    PT_REQUIRE_OK(porta_conv2d_forward(s, &c1, x, conv1_.w.get(), a1_.get()));
    PT_REQUIRE_OK(
        porta_bias_add(s, rows, kC1, kSide * kSide, a1_.get(), bias1_.w.get(), a1_.get()));
    PT_REQUIRE_OK(porta_relu_forward(s, rows * kC1 * kSide * kSide, a1_.get(), h1_.get()));
    PT_REQUIRE_OK(porta_conv2d_forward(s, &c2, h1_.get(), conv2_.w.get(), a2_.get()));
    PT_REQUIRE_OK(porta_bias_add(s, rows, kC2, kMid * kMid, a2_.get(), bias2_.w.get(), a2_.get()));
    PT_REQUIRE_OK(porta_relu_forward(s, rows * kC2 * kMid * kMid, a2_.get(), h2_.get()));
    PT_REQUIRE_OK(porta_max_pool2d_forward(s, &p, h2_.get(), pooled_.get()));
    gemm(env_, N, N, rows, kClasses, kFlat, pooled_.get(), dense_.w.get(), logits_.get());
    PT_REQUIRE_OK(
        porta_bias_add(s, rows, kClasses, 1, logits_.get(), bias3_.w.get(), logits_.get()));
    PT_REQUIRE_OK(porta_cross_entropy(s, rows, kClasses, logits_.get(), labels, loss,
                                      gradient ? dlogits_.get() : nullptr));
  }

  void backward_and_update(int64_t rows, const float* x, Optimizer optimizer, int64_t step) {
    const auto s = env_.stream();
    const porta_conv2d_desc_t c1 = conv1(rows), c2 = conv2(rows);
    const porta_pool2d_desc_t p = pool(rows);
    gemm(env_, T, N, kFlat, kClasses, rows, pooled_.get(), dlogits_.get(), dense_.grad.get());
    PT_REQUIRE_OK(porta_bias_backward(s, rows, kClasses, 1, dlogits_.get(), bias3_.grad.get()));
    gemm(env_, N, T, rows, kFlat, kClasses, dlogits_.get(), dense_.w.get(), dpooled_.get());
    PT_REQUIRE_OK(porta_max_pool2d_backward(s, &p, h2_.get(), dpooled_.get(), dh2_.get()));
    PT_REQUIRE_OK(
        porta_relu_backward(s, rows * kC2 * kMid * kMid, a2_.get(), dh2_.get(), dh2_.get()));
    PT_REQUIRE_OK(porta_bias_backward(s, rows, kC2, kMid * kMid, dh2_.get(), bias2_.grad.get()));
    PT_REQUIRE_OK(porta_conv2d_backward_weights(s, &c2, h1_.get(), dh2_.get(), conv2_.grad.get()));
    PT_REQUIRE_OK(porta_conv2d_backward_data(s, &c2, dh2_.get(), conv2_.w.get(), dh1_.get()));
    PT_REQUIRE_OK(
        porta_relu_backward(s, rows * kC1 * kSide * kSide, a1_.get(), dh1_.get(), dh1_.get()));
    PT_REQUIRE_OK(porta_bias_backward(s, rows, kC1, kSide * kSide, dh1_.get(), bias1_.grad.get()));
    PT_REQUIRE_OK(porta_conv2d_backward_weights(s, &c1, x, dh1_.get(), conv1_.grad.get()));
    for (Param* q : {&conv1_, &bias1_, &conv2_, &bias2_, &dense_, &bias3_}) {
      update(env_, *q, optimizer, step);
    }
  }

  std::vector<float> logits(int64_t rows) const {
    std::vector<float> all = logits_.download();
    all.resize(static_cast<size_t>(rows * kClasses));
    return all;
  }

 private:
  static porta_conv2d_desc_t conv(int64_t rows, int64_t in_channels, int64_t side,
                                  int64_t out_channels, int64_t stride) {
    porta_conv2d_desc_t d{};
    d.struct_size = sizeof d;
    d.batch = rows, d.in_channels = in_channels, d.in_height = side, d.in_width = side;
    d.out_channels = out_channels, d.kernel_height = 3, d.kernel_width = 3;
    d.pad_h = 1, d.pad_w = 1, d.stride_h = stride, d.stride_w = stride;
    d.dilation_h = 1, d.dilation_w = 1, d.dtype = PORTA_DTYPE_F32;
    return d;
  }
  static porta_conv2d_desc_t conv1(int64_t rows) { return conv(rows, 1, kSide, kC1, 1); }
  static porta_conv2d_desc_t conv2(int64_t rows) { return conv(rows, kC1, kSide, kC2, 2); }
  static porta_pool2d_desc_t pool(int64_t rows) {
    porta_pool2d_desc_t d{};
    d.struct_size = sizeof d;
    d.batch = rows, d.channels = kC2, d.in_height = kMid, d.in_width = kMid;
    d.window_h = 2, d.window_w = 2, d.stride_h = 2, d.stride_w = 2;
    return d;
  }

  const Env& env_;
  Param conv1_, bias1_, conv2_, bias2_, dense_, bias3_;
  Floats a1_, h1_, a2_, h2_, pooled_, logits_, dlogits_, dpooled_, dh2_, dh1_;
};

// ---- the loop
// -------------------------------------------------------------------------------------

struct Outcome {
  double initial_loss, final_loss, accuracy;
  std::vector<float> losses;  // per step, on the step's batch
};

// Trains `net` on `train` for `steps` minibatches of `batch` (consecutive slices, wrapping), and
// measures the loss over all of `train` before and after, and the accuracy on `test`.
template <class Net>
Outcome train(const Env& env, Net& net, const Dataset& train, const Dataset& test, int64_t features,
              int64_t batch, int64_t steps, Optimizer optimizer) {
  Floats x(env, train.x.size()), x_test(env, test.x.size()), losses(env, steps), eval_loss(env, 2);
  Labels labels(env, train.labels.size()), labels_test(env, test.labels.size());
  x.upload(train.x);
  x_test.upload(test.x);
  labels.upload(train.labels);
  labels_test.upload(test.labels);

  net.forward(train.count, x.get(), labels.get(), eval_loss.get(), false);
  const int64_t batches = train.count / batch;
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t first = (step % batches) * batch;
    const float* xb = x.get() + first * features;
    net.forward(batch, xb, labels.get() + first, losses.get() + step, true);
    net.backward_and_update(batch, xb, optimizer, step + 1);
  }
  net.forward(train.count, x.get(), labels.get(), eval_loss.get() + 1, false);
  env.sync();
  const std::vector<float> train_losses = eval_loss.download();
  net.forward(test.count, x_test.get(), labels_test.get(), eval_loss.get(), false);
  env.sync();
  return {train_losses[0], train_losses[1], accuracy(net.logits(test.count), test.labels, kClasses),
          losses.download()};
}

void check(const Outcome& o) {
  std::ostringstream curve;
  for (size_t i = 0; i < o.losses.size(); i += o.losses.size() / 10) {
    curve << " [" << i << "] " << o.losses[i];
  }
  INFO("training-set loss " << o.initial_loss << " -> " << o.final_loss << ", held-out accuracy "
                            << o.accuracy << "; batch losses:" << curve.str());
  if (verbose()) {
    WARN("training-set loss " << o.initial_loss << " -> " << o.final_loss << ", held-out accuracy "
                              << o.accuracy);
  }
  for (float l : o.losses) REQUIRE(std::isfinite(l));
  CHECK(std::isfinite(o.initial_loss));
  CHECK(o.final_loss < 0.3 * o.initial_loss);
  CHECK(o.accuracy > 0.8);
}

}  // namespace

TEST_CASE("training: a 2-layer MLP on Gaussian clusters, SGD-momentum and Adam", "[training]") {
  Env env;
  const uint64_t seed = seed_for(0);
  Rng rng(seed);
  const std::vector<float> centers = normal(rng, kClusters * kFeatures, 1.5);
  const Dataset train_set = clusters(rng, centers, 1024), test_set = clusters(rng, centers, 512);
  for (Optimizer optimizer : {Optimizer::kSgd, Optimizer::kAdam}) {
    INFO(name_of(optimizer) << ", seed " << seed);
    Rng init(seed + 1);  // the same initial weights for both optimisers
    Mlp net(env, init, 1024);
    check(train(env, net, train_set, test_set, kFeatures, 64, 300, optimizer));
  }
}

TEST_CASE("training: a small CNN (conv, ReLU, max-pool, dense) on bar images", "[training]") {
  Env env;
  const uint64_t seed = seed_for(0);
  Rng rng(seed);
  const Dataset train_set = bars(rng, 2048), test_set = bars(rng, 512);
  for (Optimizer optimizer : {Optimizer::kSgd, Optimizer::kAdam}) {
    INFO(name_of(optimizer) << ", seed " << seed);
    Rng init(seed + 1);
    Cnn net(env, init, 2048);
    check(train(env, net, train_set, test_set, kSide * kSide, 32, 250, optimizer));
  }
}
