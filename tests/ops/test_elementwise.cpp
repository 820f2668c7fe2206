// The ops a CNN needs beside GEMM, convolution and softmax: bias add and its gradient, ReLU and
// its gradient, and the SGD-momentum and Adam updates, against the float64 reference.
//
// Tolerances:
//   bias add, ReLU forward and backward: exact. Each element is one correctly rounded fp32
//     addition (x + bias) or a selection, so the result must be the reference rounded to fp32.
//   bias backward: a sum of batch * spatial terms per channel, bounded as any fp32 sum by gamma_n
//     times the sum of the magnitudes, n = batch * spatial: we allow (n + 2) * 2^-23 times it.
//   SGD: velocity' = momentum * velocity + grad + weight_decay * w takes four roundings
//     (<= 4u of the magnitudes of its terms, allowed 2 * 2^-23 = 4u), and
//     w' = w - lr * velocity' one multiplication and one subtraction on top, with velocity's
//     error carried (allowed 2^-23 (|w'| + |w| + |lr| (|velocity'| + 2 sum of the magnitudes))).
//   Adam: m and v as SGD's velocity (4u and 8u of their terms' magnitudes, the square doubling
//     g's error); the step lr * m^ / (sqrt(v^) + eps) has a few roundings of its own, and the
//     bias corrections 1 - beta^step lose about u / (1 - beta^step) relative when formed in fp32
//     (catastrophic cancellation for beta2 = 0.999 and a small step); m's absolute error, divided
//     as m is, is carried as well. See adam_scale() for the formula.
// Multi-step runs compare each step with the reference applied to the device's own fp32 state
// from the step before, so errors do not compound across steps.
#include <array>
#include <limits>
#include <cmath>

#include "ops_test.h"

using namespace ops_test;

namespace {

struct BiasShape {
  int64_t batch, channels, spatial;
};

// The host sums runs of up to 8 channels in a group: {3, 37, 17}, {1, 70, 5} and {2, 200, 3}
// end on a partial run.
const BiasShape kBiasShapes[] = {{1, 1, 1},      {7, 33, 1},  {2, 7, 129},  {3, 64, 49},
                                 {1, 1, 100003}, {129, 5, 3}, {4, 1000, 1}, {1, 129, 7},
                                 {3, 37, 17},    {1, 70, 5},  {5, 1, 33},   {2, 200, 3}};

}  // namespace

TEST_CASE("bias add: exact, out of place and in place", "[bias]") {
  Env env;
  uint64_t index = 0;
  for (const BiasShape& s : kBiasShapes) {
    for (bool in_place : {false, true}) {
      const uint64_t seed = seed_for(index++);
      INFO("bias add " << s.batch << "x" << s.channels << "x" << s.spatial
                       << (in_place ? " in place" : "") << ", seed " << seed);
      Rng rng(seed);
      const size_t count = static_cast<size_t>(s.batch * s.channels * s.spatial);
      const std::vector<float> x = normal(rng, count), bias = normal(rng, s.channels);
      std::vector<double> ref(count);
      ops_ref::bias_add(s.batch, s.channels, s.spatial, widen(x).data(), widen(bias).data(),
                        ref.data());
      Floats dx(env, count), dbias(env, bias.size()), dy(env, in_place ? 0 : count);
      dx.upload(x);
      dbias.upload(bias);
      float* out = in_place ? dx.get() : dy.get();
      PT_CHECK_OK(
          porta_bias_add(env.stream(), s.batch, s.channels, s.spatial, dx.get(), dbias.get(), out));
      env.sync();
      const Floats& result = in_place ? dx : dy;
      Comparison cmp = compare_exact("y", result.download(), ref);
      PT_CHECK_CLOSE(cmp.dims({s.batch, s.channels, s.spatial}));
      result.check_guard("y");
      dbias.check_unchanged("bias");
      if (!in_place) dx.check_unchanged("x");
    }
  }
}

namespace {

// dbias of one shape against the float64 reference; dy stays as it was.
void check_bias_backward(Env& env, const BiasShape& s, uint64_t seed) {
  INFO("bias backward " << s.batch << "x" << s.channels << "x" << s.spatial << ", seed " << seed);
  Rng rng(seed);
  const size_t count = static_cast<size_t>(s.batch * s.channels * s.spatial);
  const std::vector<float> dy = normal(rng, count);
  std::vector<double> ref(s.channels), scale(s.channels);
  ops_ref::bias_backward(s.batch, s.channels, s.spatial, widen(dy).data(), ref.data());
  ops_ref::bias_backward(s.batch, s.channels, s.spatial, abs_of(widen(dy)).data(), scale.data());
  Floats ddy(env, count), dbias(env, s.channels);
  ddy.upload(dy);
  PT_CHECK_OK(
      porta_bias_backward(env.stream(), s.batch, s.channels, s.spatial, ddy.get(), dbias.get()));
  env.sync();
  PT_CHECK_CLOSE(
      compare("dbias", dbias.download(), ref, scale, double(s.batch * s.spatial + 2) * kUlp));
  dbias.check_guard("dbias");
  ddy.check_unchanged("dy");
}

}  // namespace

TEST_CASE("bias backward: sums over batch and spatial", "[bias]") {
  Env env;
  uint64_t index = 0;
  for (const BiasShape& s : kBiasShapes) {
    check_bias_backward(env, s, seed_for(index++));
  }
}

TEST_CASE("bias backward: long reductions and many channels", "[bias][large]") {
  Env env;
  // A fully connected layer's rows (spatial 1) above one group's elements on the host: 64
  // channels an item, the last item's a part of that.
  const BiasShape shapes[] = {{1, 1, (1 << 22) + 3}, {70001, 3, 1}, {1, 70001, 1},
                              {3, 70001, 2},         {2053, 100, 1}};
  uint64_t index = 0;
  for (const BiasShape& s : shapes) {
    check_bias_backward(env, s, seed_for(index++));
  }
}

namespace {

// 8192 elements, one group's span on the CPU, and one element or one pass of 256 past it;
// 131072, the most the CPU runs as one group, and one past it.
const int64_t kCounts[] = {1,    7,    33,    129,    1000,   8192,
                           8193, 8448, 65537, 131072, 131073, (1 << 20) + 3};

// ReLU forward and backward over x, out of place or in place, checked exactly.
void run_relu(const Env& env, const std::vector<float>& x, const std::vector<float>& dy,
              bool in_place, bool misaligned = false) {
  const auto lead = [&](int i) { return lead_for(misaligned, i); };
  const int64_t count = static_cast<int64_t>(x.size());
  std::vector<double> y_ref(x.size()), dx_ref(x.size());
  ops_ref::relu_forward(count, widen(x).data(), y_ref.data());
  ops_ref::relu_backward(count, widen(x).data(), widen(dy).data(), dx_ref.data());

  Floats dx_in(env, x.size(), kGuard, lead(0)), y(env, in_place ? 0 : x.size(), kGuard, lead(1));
  dx_in.upload(x);
  float* out = in_place ? dx_in.get() : y.get();
  PT_CHECK_OK(porta_relu_forward(env.stream(), count, dx_in.get(), out));
  env.sync();
  const Floats& forward = in_place ? dx_in : y;
  PT_CHECK_CLOSE(compare_exact("relu y", forward.download(), y_ref));
  forward.check_guard("y");
  if (!in_place) dx_in.check_unchanged("x");

  Floats xs(env, x.size(), kGuard, lead(0)), ddy(env, x.size(), kGuard, lead(1)),
      dx(env, in_place ? 0 : x.size(), kGuard, lead(2));
  xs.upload(x);
  ddy.upload(dy);
  out = in_place ? ddy.get() : dx.get();
  PT_CHECK_OK(porta_relu_backward(env.stream(), count, xs.get(), ddy.get(), out));
  env.sync();
  const Floats& backward = in_place ? ddy : dx;
  PT_CHECK_CLOSE(compare_exact("relu dx", backward.download(), dx_ref));
  backward.check_guard("dx");
  xs.check_unchanged("x");
  if (!in_place) ddy.check_unchanged("dy");
}

}  // namespace

TEST_CASE("relu: forward and backward, exact, out of place and in place", "[relu]") {
  Env env;
  uint64_t index = 0;
  for (int64_t count : kCounts) {
    for (bool in_place : {false, true}) {
      const uint64_t seed = seed_for(index++);
      INFO("relu count " << count << (in_place ? " in place" : "") << ", seed " << seed);
      Rng rng(seed);
      run_relu(env, normal(rng, count), normal(rng, count), in_place);
    }
  }
}

TEST_CASE("relu: arrays at any 4-byte offset", "[relu]") {
  Env env;
  uint64_t index = 0;
  for (int64_t count : {7, 33, 1000, 65537}) {
    const uint64_t seed = seed_for(index++);
    INFO("relu count " << count << ", misaligned, seed " << seed);
    Rng rng(seed);
    run_relu(env, normal(rng, count), normal(rng, count), false, true);
  }
}

TEST_CASE("relu: at and around the kink (0 passes no gradient)", "[relu]") {
  Env env;
  const float tiny = 1e-40f;  // subnormal: a device that flushes it to 0 is within kAbsFloor
  const std::vector<float> x{0.0f, -0.0f, tiny, -tiny, 1e-30f, -1e-30f, 1.0f, -1.0f, 3e38f};
  const std::vector<float> dy{1.5f, -2.0f, 3.0f, 4.0f, -5.0f, 6.0f, 7.0f, 8.0f, -9.0f};
  run_relu(env, x, dy, false);
}

// Infinities are inputs like any other. A NaN gives 0 forward, as fmax(x, 0) does, and passes
// no gradient back (it is not > 0): the portable ops' rule; libraries differ (oneDNN's backward
// passes dy), so only the portable ops are held to it.
TEST_CASE("relu: infinities, and a NaN, which gives 0 and passes no gradient", "[relu]") {
  Env env;
  const float inf = std::numeric_limits<float>::infinity();
  for (const bool with_nan : {false, true}) {
    if (with_nan && !portable_ops()) {
      WARN("relu of NaN is checked on the portable ops only");
      continue;
    }
    for (int64_t count : {int64_t{9}, int64_t{1000}}) {
      INFO("relu count " << count << (with_nan ? ", NaN, inf and -inf" : ", inf and -inf"));
      std::vector<float> x(count), dy(count);
      for (int64_t i = 0; i < count; ++i) {
        const float v = std::array<float, 3>{with_nan ? NAN : 2.0f, inf, -inf}[i % 3];
        x[i] = i % 2 ? v : -v;
        dy[i] = 1.0f + float(i % 7);
      }
      run_relu(env, x, dy, false);
      run_relu(env, x, dy, true);
    }
  }
}

// The mask is a select, not a product: an infinite or NaN gradient where x <= 0 passes nothing
// (dy * 0 would be NaN), and passes through unchanged where x > 0. The portable ops' rule;
// oneDNN multiplies, so only the portable ops are held to it.
TEST_CASE("relu: infinite and NaN gradients are masked, not multiplied by 0", "[relu]") {
  if (!portable_ops()) {
    WARN("relu's mask of non-finite gradients is checked on the portable ops only");
    return;
  }
  Env env;
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t count : {int64_t{10}, int64_t{1000}}) {
    INFO("relu count " << count);
    std::vector<float> x(count), dy(count);
    for (int64_t i = 0; i < count; ++i) {
      x[i] = std::array<float, 5>{-1.0f, 0.0f, -0.0f, 2.0f, -inf}[i % 5];
      dy[i] = std::array<float, 3>{inf, -inf, NAN}[i % 3];
    }
    run_relu(env, x, dy, false);
    run_relu(env, x, dy, true);
  }
}

namespace {

struct Sgd {
  float learning_rate, momentum, weight_decay;
};

// One SGD update of the device state (w, vel) with `grads`, checked against the reference
// applied to that state.
void sgd_step(const Env& env, Floats& w, Floats& g, Floats& vel, const std::vector<float>& grads,
              const Sgd& p) {
  const int64_t count = static_cast<int64_t>(grads.size());
  g.upload(grads);
  const std::vector<double> w0 = widen(w.download()), v0 = widen(vel.download());
  std::vector<double> w_ref = w0, v_ref = v0;
  ops_ref::sgd_update(count, w_ref.data(), widen(grads).data(), v_ref.data(), p.learning_rate,
                      p.momentum, p.weight_decay);
  PT_CHECK_OK(porta_sgd_update(env.stream(), count, w.get(), g.get(), vel.get(), p.learning_rate,
                               p.momentum, p.weight_decay));
  env.sync();
  std::vector<double> v_scale(count), w_scale(count);
  for (int64_t i = 0; i < count; ++i) {
    const double terms = std::fabs(double(p.momentum) * v0[i]) + std::fabs(double(grads[i])) +
                         std::fabs(double(p.weight_decay) * w0[i]);
    v_scale[i] = 2.0 * terms;
    w_scale[i] = std::fabs(w_ref[i]) + std::fabs(w0[i]) +
                 std::fabs(double(p.learning_rate)) * (std::fabs(v_ref[i]) + 2.0 * terms);
  }
  PT_CHECK_CLOSE(compare("velocity", vel.download(), v_ref, v_scale, kUlp));
  PT_CHECK_CLOSE(compare("weights", w.download(), w_ref, w_scale, kUlp));
  w.check_guard("weights");
  vel.check_guard("velocity");
  g.check_unchanged("grads");
}

// Runs `steps` SGD updates with fresh gradients, each checked.
void run_sgd(const Env& env, int64_t count, const Sgd& p, int steps, uint64_t seed) {
  INFO("sgd count " << count << " lr " << p.learning_rate << " momentum " << p.momentum
                    << " weight_decay " << p.weight_decay << ", seed " << seed);
  Rng rng(seed);
  Floats w(env, count), g(env, count), vel(env, count);
  w.upload(normal(rng, count));
  vel.upload(normal(rng, count, 0.1));
  for (int step = 1; step <= steps; ++step) {
    INFO("step " << step);
    sgd_step(env, w, g, vel, normal(rng, count), p);
  }
}

// The allowances of one Adam step (see the top of the file), per unit of 2^-23; c1 and c2 are
// the bias corrections 1 - beta^step.
void adam_scale(const porta_adam_params_t& p, double c1, double c2, double w0, double g, double m0,
                double v0, double w_ref, double m_ref, double v_ref, double& w_scale,
                double& m_scale, double& v_scale) {
  const double b1 = p.beta1, b2 = p.beta2, lr = std::fabs(double(p.learning_rate));
  const double g_abs = std::fabs(g) + 2.0 * std::fabs(double(p.weight_decay) * w0);
  const double m_terms = b1 * std::fabs(m0) + (1.0 - b1) * g_abs;
  m_scale = 2.0 * m_terms;
  v_scale = 4.0 * (b2 * v0 + (1.0 - b2) * g_abs * g_abs);
  const double denominator = std::sqrt(v_ref / c2) + double(p.epsilon);
  const double update = lr * std::fabs(m_ref) / c1 / denominator;
  w_scale = std::fabs(w_ref) + std::fabs(w0) + update * (16.0 + 2.0 / c1 + 2.0 / c2) +
            lr * 4.0 * m_terms / c1 / denominator;
}

void run_adam(const Env& env, int64_t count, porta_adam_params_t p,
              const std::vector<int64_t>& steps, bool fresh_state, uint64_t seed) {
  INFO("adam count " << count << " lr " << p.learning_rate << " betas " << p.beta1 << ", "
                     << p.beta2 << " epsilon " << p.epsilon << " weight_decay " << p.weight_decay
                     << (fresh_state ? " from m = v = 0" : "") << ", seed " << seed);
  Rng rng(seed);
  Floats w(env, count), g(env, count), m(env, count), v(env, count);
  w.upload(normal(rng, count));
  if (fresh_state) {
    m.upload(std::vector<float>(count, 0.0f));
    v.upload(std::vector<float>(count, 0.0f));
  } else {
    m.upload(normal(rng, count, 0.1));
    std::vector<float> second = normal(rng, count, 0.1);
    for (float& s : second) s = s * s;
    v.upload(second);
  }
  for (int64_t step : steps) {
    INFO("step " << step);
    p.step = step;
    const std::vector<float> grads = normal(rng, count);
    g.upload(grads);
    const std::vector<double> w0 = widen(w.download()), m0 = widen(m.download()),
                              v0 = widen(v.download());
    std::vector<double> w_ref = w0, m_ref = m0, v_ref = v0;
    ops_ref::adam_update(count, w_ref.data(), widen(grads).data(), m_ref.data(), v_ref.data(), p);
    PT_CHECK_OK(porta_adam_update(env.stream(), count, w.get(), g.get(), m.get(), v.get(), &p));
    env.sync();
    std::vector<double> w_scale(count), m_scale(count), v_scale(count);
    const double c1 = 1.0 - std::pow(double(p.beta1), double(step));
    const double c2 = 1.0 - std::pow(double(p.beta2), double(step));
    for (int64_t i = 0; i < count; ++i) {
      adam_scale(p, c1, c2, w0[i], grads[i], m0[i], v0[i], w_ref[i], m_ref[i], v_ref[i], w_scale[i],
                 m_scale[i], v_scale[i]);
    }
    PT_CHECK_CLOSE(compare("m", m.download(), m_ref, m_scale, kUlp));
    PT_CHECK_CLOSE(compare("v", v.download(), v_ref, v_scale, kUlp));
    PT_CHECK_CLOSE(compare("weights", w.download(), w_ref, w_scale, kUlp));
    w.check_guard("weights");
    m.check_guard("m");
    v.check_guard("v");
    g.check_unchanged("grads");
  }
}

porta_adam_params_t adam(float lr, float beta1, float beta2, float epsilon, float weight_decay) {
  porta_adam_params_t p{};
  p.struct_size = sizeof p;
  p.learning_rate = lr, p.beta1 = beta1, p.beta2 = beta2, p.epsilon = epsilon;
  p.weight_decay = weight_decay, p.step = 1;
  return p;
}

}  // namespace

TEST_CASE("sgd: momentum, weight decay, several steps", "[optimizer]") {
  Env env;
  const Sgd settings[] = {{0.1f, 0.9f, 0.0f},
                          {0.01f, 0.0f, 1e-2f},
                          {0.5f, 0.99f, 5e-4f},
                          {0.0f, 0.9f, 0.1f},
                          {-0.05f, 0.5f, 0.0f}};
  uint64_t index = 0;
  for (int64_t count : kCounts) {
    const Sgd& p = settings[index % std::size(settings)];
    run_sgd(env, count, p, count > 100000 ? 1 : 3, seed_for(index++));
  }
}

TEST_CASE("adam: bias correction at steps 1, 2, 10, 1000, weight decay, extreme betas",
          "[optimizer]") {
  Env env;
  const porta_adam_params_t settings[] = {
      adam(1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f), adam(1e-2f, 0.5f, 0.9f, 1e-6f, 1e-2f),
      adam(0.1f, 0.0f, 0.0f, 1e-8f, 0.0f),  // v = g^2: steps of lr * sign(g)
      adam(3e-4f, 0.99f, 0.9999f, 1e-3f, 0.1f)};
  uint64_t index = 0;
  for (int64_t count : kCounts) {
    const porta_adam_params_t& p = settings[index % std::size(settings)];
    run_adam(env, count, p,
             count > 100000 ? std::vector<int64_t>{7} : std::vector<int64_t>{1, 2, 10, 1000}, false,
             seed_for(index++));
  }
  // The usual start: m = v = 0 at step 1.
  run_adam(env, 129, settings[0], {1, 2, 3}, true, seed_for(index++));
}

TEST_CASE("elementwise ops past 65535 work-groups of 256 items (2^24 + 1 elements)",
          "[relu][bias][optimizer][large]") {
  // 2^24 + 1 = 257 * 65281 elements: a one-dimensional launch of 256-item groups needs more than
  // 65535 groups, the portable limit of a grid's x, so the grid must wrap. One normal sample is
  // drawn and reused (reversed, rotated, scaled) for the other inputs: drawing is the slow part.
  Env env;
  const int64_t count = (int64_t{1} << 24) + 1;
  const uint64_t seed = seed_for(0);
  INFO("seed " << seed);
  Rng rng(seed);
  const std::vector<float> x = normal(rng, count);
  const std::vector<float> reversed(x.rbegin(), x.rend());
  run_relu(env, x, reversed, false);
  {  // bias add over 257 channels of 65281
    const std::vector<float> bias = normal(rng, 257);
    std::vector<double> ref(count);
    ops_ref::bias_add(1, 257, 65281, widen(x).data(), widen(bias).data(), ref.data());
    Floats dx(env, count), db(env, 257), y(env, count);
    dx.upload(x);
    db.upload(bias);
    PT_CHECK_OK(porta_bias_add(env.stream(), 1, 257, 65281, dx.get(), db.get(), y.get()));
    env.sync();
    PT_CHECK_CLOSE(compare_exact("bias add y", y.download(), ref));
    y.check_guard("y");
  }
  {  // one SGD step
    Floats w(env, count), g(env, count), vel(env, count);
    w.upload(x);
    std::vector<float> velocity(x.begin() + 1, x.end());
    velocity.push_back(x.front());
    for (float& v : velocity) v *= 0.1f;
    vel.upload(velocity);
    sgd_step(env, w, g, vel, reversed, {0.1f, 0.9f, 1e-4f});
  }
}
