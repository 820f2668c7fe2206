// The model and its training loop on the device PORTA_BACKEND selects, on generated images: the
// loss falls step by step, a seed fixes the loss curve bit for bit, and gradient accumulation
// over N micro-batches gives the update of one N times larger batch.
#include <catch2/catch.hpp>
#include <cmath>
#include <porta/porta.hpp>

#include "model.h"
#include "train_test.h"
#include "trainer.h"

using namespace porta_train;
using namespace train_test;

namespace {

// The loss of `model` on the first `rows` images of `set`.
float batch_loss(Model& model, const ImageSet& set, int64_t rows) {
  const porta_device_t device = model.device();
  porta::stream s(device);
  std::vector<float> x(size_t(rows * kPixels));
  normalize_pixels(set.pixels.data(), rows * kPixels, x.data());
  std::vector<int32_t> y(set.labels.begin(), set.labels.begin() + rows);
  porta::device_buffer<float> dx(device, x.size()), loss(device, 1);
  porta::device_buffer<int32_t> dy(device, y.size());
  dx.copy_from_host(x);
  dy.copy_from_host(y);
  model.forward(s, rows, dx.data(), dy.data(), loss.data(), false);
  s.synchronize();
  return loss.to_vector()[0];
}

std::vector<float> train_losses(const ImageSet& set, uint64_t seed, Optimizer optimizer,
                                int epochs) {
  Model model(porta::default_device(), 32, Precision::f32, false);
  model.initialize(seed);
  TrainSettings settings;
  settings.batch = 32;
  settings.seed = seed;
  settings.update.optimizer = optimizer;
  settings.update.learning_rate = optimizer == Optimizer::sgd ? 0.05f : 1e-3f;
  Trainer trainer(model, set, settings);
  std::vector<float> all;
  for (int e = 0; e < epochs; ++e) {
    const EpochResult r = trainer.run_epoch(e);
    all.insert(all.end(), r.losses.begin(), r.losses.end());
  }
  return all;
}

}  // namespace

TEST_CASE("model: two training steps on one batch lower its loss", "[model]") {
  const ImageSet set = synthetic_set(64, 11);
  for (Optimizer optimizer : {Optimizer::sgd, Optimizer::adam}) {
    INFO((optimizer == Optimizer::sgd ? "sgd" : "adam"));
    Model model(porta::default_device(), 64, Precision::f32, false);
    model.initialize(7);
    TrainSettings settings;
    settings.batch = 64;
    settings.update.optimizer = optimizer;
    settings.update.learning_rate = optimizer == Optimizer::sgd ? 0.01f : 1e-3f;
    const float before = batch_loss(model, set, 64);
    Trainer trainer(model, set, settings);  // one step per epoch: the batch is the whole set
    const EpochResult first = trainer.run_epoch(0);
    const float after_one = batch_loss(model, set, 64);
    trainer.run_epoch(1);
    const float after_two = batch_loss(model, set, 64);
    INFO("loss " << before << " -> " << after_one << " -> " << after_two);
    REQUIRE(first.losses.size() == 1);
    CHECK(std::isfinite(before));
    // The step's own loss is that of the starting weights (the same images, another order).
    CHECK(first.losses[0] == Approx(before).epsilon(1e-4));
    CHECK(after_one < before);
    CHECK(after_two < after_one);
  }
}

// The gradient against the loss itself: a small step against the gradient g lowers the loss by
// eps * |g|^2 to first order. A wrong transpose, a missing term or a gradient of the wrong layer
// breaks this identity by far more than the 20% allowed for curvature and ReLU/max-pool switches.
static void check_gradient_slope(Precision precision) {
  const ImageSet set = synthetic_set(32, 13);
  Model model(porta::default_device(), 32, precision, false);
  model.initialize(17);
  TrainSettings settings;
  settings.batch = 32;
  settings.update.optimizer = Optimizer::sgd;
  settings.update.momentum = 0.0f;
  const float before = batch_loss(model, set, 32);
  // First a step of lr 0 (weights unchanged) to get the gradient of this batch.
  settings.update.learning_rate = 0.0f;
  {
    Trainer probe(model, set, settings);
    probe.run_epoch(0);
  }
  porta::stream s(porta::default_device());
  double norm2 = 0;
  for (const Tensor& g : model.gradients(s)) {
    for (float v : g.values) norm2 += double(v) * double(v);
  }
  REQUIRE(norm2 > 0);
  // Then the step itself, sized to lower the loss by about 1% of it.
  const double eps = 0.01 * before / norm2;
  settings.update.learning_rate = float(eps);
  {
    Trainer step(model, set, settings);
    step.run_epoch(0);
  }
  const float after = batch_loss(model, set, 32);
  const double predicted = eps * norm2, actual = double(before) - double(after);
  INFO("loss " << before << " -> " << after << ": fell by " << actual << ", predicted "
               << predicted);
  CHECK(actual == Approx(predicted).epsilon(0.2));
}

TEST_CASE("model: the gradient is the loss's slope", "[model]") {
  check_gradient_slope(Precision::f32);
}

// With bf16 operands the gradient is that of a slightly different function (operands rounded to
// 8 bits of mantissa), still well within the tolerance; a bf16 copy of the wrong tensor is not.
TEST_CASE("model: the gradient is the loss's slope with bf16 operands", "[model][bf16]") {
  try {
    Model probe(porta::default_device(), 1, Precision::bf16, false);
  } catch (const unsupported_error& e) {
    skip(e.what());
    return;
  }
  check_gradient_slope(Precision::bf16);
}

TEST_CASE("model: a few epochs on generated images learn them", "[model]") {
  const ImageSet train = synthetic_set(512, 21), test = synthetic_set(256, 22);
  Model model(porta::default_device(), 64, Precision::f32, false);
  model.initialize(3);
  TrainSettings settings;
  settings.batch = 32;
  Trainer trainer(model, train, settings);
  const EpochResult first = trainer.run_epoch(0);
  const EpochResult second = trainer.run_epoch(1);
  const EvalResult eval = evaluate(model, test, 64);
  INFO("epoch losses " << first.mean_loss << ", " << second.mean_loss << "; accuracy "
                       << eval.accuracy);
  CHECK(second.mean_loss < first.mean_loss);
  CHECK(eval.accuracy > 0.9);
  CHECK(eval.predictions.size() == 256);
  CHECK(first.images == 512);
}

TEST_CASE("model: the same seed gives the same loss curve, bit for bit", "[model][determinism]") {
  const ImageSet set = synthetic_set(384, 31);
  for (Optimizer optimizer : {Optimizer::sgd, Optimizer::adam}) {
    INFO((optimizer == Optimizer::sgd ? "sgd" : "adam"));
    const std::vector<float> a = train_losses(set, 5, optimizer, 2);
    const std::vector<float> b = train_losses(set, 5, optimizer, 2);
    const std::vector<float> c = train_losses(set, 6, optimizer, 2);
    REQUIRE(a.size() == 24);
    CHECK(a == b);
    CHECK(a != c);  // the seed matters: the test could tell two different runs apart
  }
}

TEST_CASE("model: gradient accumulation equals one larger batch", "[model]") {
  const ImageSet set = synthetic_set(256, 41);
  for (Optimizer optimizer : {Optimizer::sgd, Optimizer::adam}) {
    INFO((optimizer == Optimizer::sgd ? "sgd" : "adam"));
    std::vector<std::vector<Tensor>> results;
    for (int64_t accum : {int64_t(1), int64_t(4)}) {
      Model model(porta::default_device(), 64, Precision::f32, accum > 1);
      model.initialize(9);
      TrainSettings settings;
      settings.batch = 64 / accum;
      settings.grad_accum = accum;
      settings.seed = 9;
      settings.update.optimizer = optimizer;
      settings.update.learning_rate = optimizer == Optimizer::sgd ? 0.05f : 1e-3f;
      settings.update.weight_decay = 1e-3f;  // checks its scaling too
      settings.update.accumulated = accum;
      Trainer trainer(model, set, settings);
      // The same images per step either way: the shuffle depends on the seed only.
      trainer.run_epoch(0);
      porta::stream s(porta::default_device());
      results.push_back(model.parameters(s));
    }
    // Four steps; only the order of fp32 sums differs. Adam divides by the root of the second
    // moment, so a gradient element near zero, whose sign depends on that order, can move
    // differently by up to a fraction of one step (lr): hence the absolute floor of lr / 10.
    // SGD is linear in the gradient, and its check is the strict one.
    const double floor = optimizer == Optimizer::sgd ? 0.0 : 1e-4;
    for (size_t t = 0; t < results[0].size(); ++t) {
      const auto& a = results[0][t].values;
      const auto& b = results[1][t].values;
      double scale = 0, worst = 0;
      for (float v : a) scale = std::max(scale, double(std::fabs(v)));
      for (size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
      }
      INFO(results[0][t].name << ": largest difference " << worst << ", largest value " << scale);
      CHECK(worst <= 1e-4 * scale + floor);
    }
  }
}
