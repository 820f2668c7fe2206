#include "trainer.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <stdexcept>

#include "rng.h"

namespace porta_train {

void normalize_pixels(const uint8_t* pixels, int64_t count, float* out) {
  constexpr float kMean = 0.2860f, kStd = 0.3530f;  // of Fashion-MNIST's training images, in [0,1]
  for (int64_t i = 0; i < count; ++i) out[i] = (float(pixels[i]) / 255.0f - kMean) / kStd;
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Double-buffered input: batch j is normalised into pinned slot j % 2 and copied to that slot's
// device buffers on the copy stream, while the compute stream works on batch j - 1 from the other
// slot. Two events per slot order the streams:
//   copied[s]  recorded on the copy stream after the copy; the compute stream waits for it before
//              the batch's first op;
//   done[s]    recorded on the compute stream after the batch's last op; the copy stream waits
//              for it before overwriting the slot's device buffers, and the host waits for it
//              before overwriting the pinned buffers (which the previous copy read).
// The host thus runs at most two batches ahead of the device.
class InputPipeline {
 public:
  InputPipeline(const porta::stream& compute, const ImageSet& set, int64_t batch)
      : compute_(compute), copy_(compute.device()), set_(set), batch_(batch) {
    const porta_device_t device = compute.device();
    for (Slot& s : slots_) {
      s.host_x = porta::pinned_buffer<float>(device, size_t(batch * kPixels));
      s.host_y = porta::pinned_buffer<int32_t>(device, size_t(batch));
      s.x = porta::device_buffer<float>(device, size_t(batch * kPixels));
      s.y = porta::device_buffer<int32_t>(device, size_t(batch));
      s.copied = porta::event(device);
      s.done = porta::event(device);
    }
  }

  // Queues the copy of images order[0..rows) into slot j % 2. Returns after the batch that used
  // the slot before (j - 2) has completed on the device.
  void stage(int64_t j, const uint32_t* order, int64_t rows) {
    Slot& s = slots_[j % 2];
    if (s.in_use) s.done.synchronize();
    for (int64_t r = 0; r < rows; ++r) {
      const uint32_t image = order[r];
      normalize_pixels(&set_.pixels[size_t(image) * kPixels], kPixels,
                       &s.host_x[size_t(r * kPixels)]);
      s.host_y[size_t(r)] = set_.labels[image];
    }
    if (s.in_use) copy_.wait(s.done);
    s.x.copy_from_host_async(s.host_x.data(), size_t(rows * kPixels), copy_);
    s.y.copy_from_host_async(s.host_y.data(), size_t(rows), copy_);
    s.copied.record(copy_);
  }
  // The device buffers of batch j, once the compute stream has been told to wait for them.
  std::pair<const float*, const int32_t*> acquire(int64_t j) {
    Slot& s = slots_[j % 2];
    compute_.wait(s.copied);
    return {s.x.data(), s.y.data()};
  }
  void release(int64_t j) {
    Slot& s = slots_[j % 2];
    s.done.record(compute_);
    s.in_use = true;
  }
  // Waits for both streams (errors of queued work surface here).
  void finish() {
    copy_.synchronize();
    compute_.synchronize();
  }

 private:
  struct Slot {
    porta::pinned_buffer<float> host_x;
    porta::pinned_buffer<int32_t> host_y;
    porta::device_buffer<float> x;
    porta::device_buffer<int32_t> y;
    porta::event copied, done;
    bool in_use = false;
  };
  const porta::stream& compute_;
  porta::stream copy_;
  const ImageSet& set_;
  int64_t batch_;
  Slot slots_[2];
};

// Device slots for per-batch losses and their pinned host mirror.
struct LossLog {
  LossLog(porta_device_t device, int64_t count)
      : device(device, size_t(count)), host(device, size_t(count)) {}
  porta::device_buffer<float> device;
  porta::pinned_buffer<float> host;
};

}  // namespace

struct Trainer::Impl {
  Impl(Model& m, const ImageSet& t, const TrainSettings& s)
      : model(m),
        train(t),
        settings(s),
        compute(m.device()),
        micro_batches(t.count / (s.batch * s.grad_accum) * s.grad_accum),
        pipeline(compute, t, s.batch),
        losses(m.device(), std::max<int64_t>(micro_batches, 1)) {}
  Model& model;
  const ImageSet& train;
  TrainSettings settings;
  porta::stream compute;
  int64_t micro_batches;
  InputPipeline pipeline;
  LossLog losses;
  int64_t step = 0;  // optimiser steps so far
};

Trainer::Trainer(Model& model, const ImageSet& train, const TrainSettings& settings) {
  if (settings.batch < 1) throw std::invalid_argument("the batch size must be at least 1");
  if (settings.grad_accum < 1) {
    throw std::invalid_argument("gradient accumulation must be over at least 1 micro-batch");
  }
  if (settings.batch * settings.grad_accum > train.count) {
    throw std::invalid_argument("a step of " + std::to_string(settings.grad_accum) + " x " +
                                std::to_string(settings.batch) +
                                " images needs more than the training set's " +
                                std::to_string(train.count));
  }
  if (train.rows != kImageSide || train.cols != kImageSide) {
    throw std::invalid_argument("the network takes 28x28 images, the training set has " +
                                std::to_string(train.rows) + "x" + std::to_string(train.cols));
  }
  impl_ = std::make_unique<Impl>(model, train, settings);
}

Trainer::~Trainer() = default;

EpochResult Trainer::run_epoch(int epoch, const Progress& progress) {
  Impl& t = *impl_;
  const int64_t batch = t.settings.batch, accum = t.settings.grad_accum;
  std::vector<uint32_t> order(size_t(t.train.count));
  std::iota(order.begin(), order.end(), 0u);
  Rng rng(t.settings.seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch) + 1);
  rng.shuffle(order);

  const int64_t total = t.micro_batches * batch;
  float* device_losses = t.losses.device.data();
  auto report = [&](int64_t completed) {
    if (!progress || completed <= 0) return;
    double sum = 0;
    for (int64_t i = 0; i < completed; ++i) sum += t.losses.host[size_t(i)];
    progress(completed * batch, total, sum / double(completed));
  };

  const Clock::time_point start = Clock::now();
  t.pipeline.stage(0, order.data(), batch);
  for (int64_t i = 0; i < t.micro_batches; ++i) {
    auto [x, labels] = t.pipeline.acquire(i);
    t.model.forward(t.compute, batch, x, labels, device_losses + i, true);
    t.model.backward(t.compute, batch, x, i % accum != 0);
    if (i % accum == accum - 1) t.model.update(t.compute, t.settings.update, ++t.step);
    porta::check(porta_memcpy_async(&t.losses.host[size_t(i)], device_losses + i, sizeof(float),
                                    t.compute.get()));
    t.pipeline.release(i);
    if (i + 1 < t.micro_batches) {
      t.pipeline.stage(i + 1, order.data() + (i + 1) * batch, batch);
      report(i);  // stage() returned once batches 0 .. i - 1 had completed
    }
  }
  t.pipeline.finish();
  EpochResult result;
  result.seconds = seconds_since(start);
  result.images = total;
  result.losses.assign(t.losses.host.begin(), t.losses.host.begin() + t.micro_batches);
  double sum = 0;
  for (float l : result.losses) sum += l;
  result.mean_loss = result.losses.empty() ? 0.0 : sum / double(result.losses.size());
  report(t.micro_batches);
  return result;
}

EvalResult evaluate(Model& model, const ImageSet& set, int64_t batch) {
  if (set.rows != kImageSide || set.cols != kImageSide) {
    throw std::invalid_argument("the network takes 28x28 images, the test set has " +
                                std::to_string(set.rows) + "x" + std::to_string(set.cols));
  }
  batch = std::min(batch, set.count);
  porta::stream compute(model.device());
  InputPipeline pipeline(compute, set, batch);
  const int64_t batches = (set.count + batch - 1) / batch;
  LossLog losses(model.device(), batches);
  porta::pinned_buffer<float> logits(model.device(), size_t(set.count * kClasses));
  std::vector<uint32_t> order(size_t(set.count));
  std::iota(order.begin(), order.end(), 0u);
  auto rows_of = [&](int64_t j) { return std::min(batch, set.count - j * batch); };

  const Clock::time_point start = Clock::now();
  pipeline.stage(0, order.data(), rows_of(0));
  for (int64_t j = 0; j < batches; ++j) {
    const int64_t rows = rows_of(j);
    auto [x, labels] = pipeline.acquire(j);
    model.forward(compute, rows, x, labels, losses.device.data() + j, false);
    porta::check(porta_memcpy_async(&logits[size_t(j * batch * kClasses)], model.logits(),
                                    size_t(rows * kClasses) * sizeof(float), compute.get()));
    porta::check(porta_memcpy_async(&losses.host[size_t(j)], losses.device.data() + j,
                                    sizeof(float), compute.get()));
    pipeline.release(j);
    if (j + 1 < batches) pipeline.stage(j + 1, order.data() + (j + 1) * batch, rows_of(j + 1));
  }
  pipeline.finish();

  EvalResult result;
  result.seconds = seconds_since(start);
  result.predictions.resize(size_t(set.count));
  int64_t correct = 0;
  for (int64_t i = 0; i < set.count; ++i) {
    const float* row = &logits[size_t(i * kClasses)];
    const auto best = static_cast<uint8_t>(std::max_element(row, row + kClasses) - row);
    result.predictions[size_t(i)] = best;
    correct += best == set.labels[size_t(i)];
  }
  double loss = 0;
  for (int64_t j = 0; j < batches; ++j) loss += double(losses.host[size_t(j)]) * double(rows_of(j));
  result.accuracy = double(correct) / double(set.count);
  result.mean_loss = loss / double(set.count);
  return result;
}

}  // namespace porta_train
