// The training and evaluation loops of porta-train. Input batches are normalised on the host into
// page-locked (pinned) buffers and copied to the device on a copy stream of their own, while the
// compute stream works on the previous batch; events order the two streams (see InputPipeline in
// trainer.cpp).
#pragma once

#include <porta/porta_comm.h>

#include <cstdint>
#include <functional>
#include <porta/porta.hpp>
#include <vector>

#include "idx.h"
#include "model.h"

namespace porta_train {

struct TrainSettings {
  int64_t batch = 64;  // images per micro-batch, over all ranks
  // Data parallelism: with a communicator each rank trains on its share (batch / ranks images,
  // by rank) of every micro-batch, and the gradients are averaged over the ranks in buckets, a
  // layer each, while backward still runs. Every rank then takes the same step.
  porta_comm_t comm = nullptr;
  int64_t grad_accum = 1;  // micro-batches per optimiser step
  uint64_t seed = 1;       // batch order (the weights are seeded by Model::initialize)
  UpdateSettings update;
};

struct EpochResult {
  double seconds = 0;         // wall time, from the first batch queued to the last one done
  int64_t images = 0;         // images trained on (incomplete final steps are left out)
  double mean_loss = 0;       // over the epoch's micro-batches
  std::vector<float> losses;     // per micro-batch, in order (over all ranks)
  double allreduce_seconds = 0;  // spent all-reducing gradients (0 with one process)
};

// Called on the host as batches complete: images done so far, the epoch's total, the mean loss
// of the completed micro-batches.
using Progress = std::function<void(int64_t done, int64_t total, double mean_loss)>;

class Trainer {
 public:
  // The model must hold batches of settings.batch rows (and gradient accumulation if
  // settings.grad_accum > 1). Throws std::invalid_argument for settings that cannot work with this
  // data (a batch larger than the training set, for one).
  Trainer(Model& model, const ImageSet& train, const TrainSettings& settings);
  ~Trainer();
  // One pass over a fresh shuffle of the training set (epoch counts from 0).
  EpochResult run_epoch(int epoch, const Progress& progress = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct EvalResult {
  double accuracy = 0;
  double mean_loss = 0;
  std::vector<uint8_t> predictions;  // per image, the class with the largest logit
  double seconds = 0;
};

// Forward passes over the whole set in batches of up to `batch` images (the model must hold them).
EvalResult evaluate(Model& model, const ImageSet& set, int64_t batch);

// Pixels as the network sees them: x / 255, then standardised with Fashion-MNIST's training-set
// mean and standard deviation.
void normalize_pixels(const uint8_t* pixels, int64_t count, float* out);

}  // namespace porta_train
