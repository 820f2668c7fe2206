#include "trainer.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <utility>

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

// Averages gradients over the ranks while backward goes on. The training thread hands over each
// layer's gradient buffers as soon as the work producing them is queued (a bucket), with an event
// recorded after that work; a thread of its own makes its stream wait for the event and
// all-reduces the bucket there, while the compute stream runs the layers below.
class GradientSync {
 public:
  static constexpr int kMaxBuckets = 8;

  GradientSync(porta_comm_t comm, porta_device_t device) : comm_(comm), stream_(device) {
    for (auto& event : queued_) event = porta::event(device);
    done_ = porta::event(device);
    thread_ = std::thread([this] { run(); });
  }
  ~GradientSync() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  // On the training thread: the work producing buffers is queued on compute.
  void bucket(const porta::stream& compute, const Model::GradientBuffers& buffers) {
    std::lock_guard lock(mutex_);
    if (pending_.size() + handed_ >= kMaxBuckets) throw std::logic_error("too many buckets");
    porta::event& event = queued_[handed_++];
    event.record(compute);
    pending_.push_back(Bucket{&event, buffers});
    wake_.notify_all();
  }

  // On the training thread: waits until this step's buckets are reduced, and orders compute
  // after them. Rethrows what the all-reduce thread met.
  void finish(const porta::stream& compute) {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [&] { return pending_.empty() && !busy_; });
    handed_ = 0;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    done_.record(stream_);
    compute.wait(done_);
  }

  double seconds() const {
    std::lock_guard lock(mutex_);
    return seconds_;
  }

 private:
  struct Bucket {
    porta::event* after;
    Model::GradientBuffers buffers;
  };

  void run() {
    for (;;) {
      Bucket bucket;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
        if (pending_.empty()) return;
        bucket = std::move(pending_.front());
        pending_.pop_front();
        busy_ = true;
        // After a failure the rest are dropped: a peer that failed too will not call them, and
        // each would wait the whole timeout before finish() could report the first.
        if (error_) {
          busy_ = false;
          idle_.notify_all();
          continue;
        }
      }
      double spent = 0;
      try {
        stream_.wait(*bucket.after);
        stream_.synchronize();  // the gradients exist: from here on the time is the all-reduce's
        const Clock::time_point start = Clock::now();
        for (auto [data, count] : bucket.buffers) {
          porta::check(porta_comm_all_reduce(comm_, data, data, size_t(count), PORTA_DTYPE_F32,
                                             PORTA_REDUCE_AVG, stream_.get()));
        }
        stream_.synchronize();
        spent = seconds_since(start);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard lock(mutex_);
      seconds_ += spent;
      busy_ = false;
      idle_.notify_all();
    }
  }

  porta_comm_t comm_;
  porta::stream stream_;
  porta::event queued_[kMaxBuckets];
  porta::event done_;
  mutable std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<Bucket> pending_;
  int handed_ = 0;  // buckets handed over this step
  bool busy_ = false;
  bool stopping_ = false;
  std::exception_ptr error_;
  double seconds_ = 0;
  std::thread thread_;  // last: starts once the rest exists
};

int32_t comm_ranks(porta_comm_t comm, int32_t* rank) {
  int32_t size = 1;
  *rank = 0;
  if (comm) porta::check(porta_comm_rank(comm, rank, &size, nullptr));
  return size;
}

struct Trainer::Impl {
  Impl(Model& m, const ImageSet& t, const TrainSettings& s)
      : model(m),
        train(t),
        settings(s),
        ranks(comm_ranks(s.comm, &rank)),
        local(s.batch / ranks),
        compute(m.device()),
        micro_batches(t.count / (s.batch * s.grad_accum) * s.grad_accum),
        pipeline(compute, t, local),
        losses(m.device(), std::max<int64_t>(micro_batches, 1)) {
    if (s.comm) sync = std::make_unique<GradientSync>(s.comm, m.device());
  }
  Model& model;
  const ImageSet& train;
  TrainSettings settings;
  int32_t rank = 0;
  int32_t ranks;
  int64_t local;  // images of each micro-batch this rank trains on
  porta::stream compute;
  int64_t micro_batches;
  InputPipeline pipeline;
  LossLog losses;
  std::unique_ptr<GradientSync> sync;
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
  int32_t rank = 0;
  const int32_t ranks = comm_ranks(settings.comm, &rank);
  if (settings.batch % ranks != 0) {
    throw std::invalid_argument("the batch of " + std::to_string(settings.batch) +
                                " images does not split evenly over " + std::to_string(ranks) +
                                " ranks");
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
  const int64_t local = t.local, offset = t.rank * local;  // this rank's share of each batch
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
  const double allreduce_before = t.sync ? t.sync->seconds() : 0.0;
  t.pipeline.stage(0, order.data() + offset, local);
  for (int64_t i = 0; i < t.micro_batches; ++i) {
    auto [x, labels] = t.pipeline.acquire(i);
    const bool steps = i % accum == accum - 1;
    Model::GradientsQueued reduce;
    if (t.sync && steps) {
      reduce = [&](const Model::GradientBuffers& buffers) { t.sync->bucket(t.compute, buffers); };
    }
    t.model.forward(t.compute, local, x, labels, device_losses + i, true);
    t.model.backward(t.compute, local, x, i % accum != 0, reduce);
    if (steps) {
      if (t.sync) t.sync->finish(t.compute);
      t.model.update(t.compute, t.settings.update, ++t.step);
    }
    porta::check(porta_memcpy_async(&t.losses.host[size_t(i)], device_losses + i, sizeof(float),
                                    t.compute.get()));
    t.pipeline.release(i);
    if (i + 1 < t.micro_batches) {
      t.pipeline.stage(i + 1, order.data() + (i + 1) * batch + offset, local);
      report(i);  // stage() returned once batches 0 .. i - 1 had completed
    }
  }
  t.pipeline.finish();
  if (t.settings.comm && t.micro_batches > 0) {
    // Each rank logged the mean loss of its share: their mean is the whole batch's.
    porta::check(porta_comm_all_reduce(t.settings.comm, device_losses, device_losses,
                                       size_t(t.micro_batches), PORTA_DTYPE_F32, PORTA_REDUCE_AVG,
                                       t.compute.get()));
    porta::check(
        porta_memcpy(t.losses.host.data(), device_losses, size_t(t.micro_batches) * sizeof(float)));
  }
  EpochResult result;
  result.seconds = seconds_since(start);
  result.allreduce_seconds = t.sync ? t.sync->seconds() - allreduce_before : 0.0;
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
