// The network porta-train trains, built from Porta's operator set alone:
//
//   conv1 3x3, 1 -> 32, pad 1, ReLU, max-pool 2x2   28x28 -> 14x14
//   conv2 3x3, 32 -> 64, pad 1, ReLU, max-pool 2x2  14x14 -> 7x7
//   fc1 3136 -> 128, ReLU
//   fc2 128 -> 10, softmax cross-entropy
//
// Forward, backward and the optimiser update are queued on one stream of the model's device; the
// host only queues work. Parameters are fp32 (the master copy); with Precision::bf16, convolutions
// and GEMMs read bf16 copies of their operands and still accumulate and write fp32.
#pragma once

#include <porta/porta_ops.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <porta/porta.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint.h"

namespace porta_train {

enum class Precision { f32, bf16 };

// The operator set in use lacks what a setting needs (bf16 operands, for one).
class unsupported_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
enum class Optimizer { sgd, adam };

struct UpdateSettings {
  Optimizer optimizer = Optimizer::adam;
  float learning_rate = 1e-3f;
  float momentum = 0.9f;  // SGD
  float weight_decay = 0.0f;
  float beta1 = 0.9f, beta2 = 0.999f, epsilon = 1e-8f;  // Adam
  int64_t accumulated = 1;  // micro-batches summed into the gradient (see Model::update)
};

constexpr int64_t kImageSide = 28;
constexpr int64_t kPixels = kImageSide * kImageSide;
constexpr int64_t kClasses = 10;

// Device memory in stream order (porta_memory_alloc_async): a batch's activations are allocated
// on the stream that computes them and freed there once used, so from the second batch on the
// device pool hands the same blocks back without the driver or a synchronisation.
class StreamBuffer {
 public:
  StreamBuffer() = default;
  ~StreamBuffer();
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;

  // Frees the current block on s (if any), then allocates count floats on s.
  void reset(porta_device_t device, int64_t count, const porta::stream& s);
  // Frees the block on s.
  void release(const porta::stream& s);
  float* data() const { return data_; }

 private:
  float* data_ = nullptr;
};

// Time per op kind, for --profile: each op is timed alone, between two synchronisations of its
// stream (so a profiled run is slower than a plain one; the shares are what it is for).
struct OpProfile {
  struct Entry {
    std::string kind;
    int64_t calls = 0;
    double seconds = 0.0;
  };
  std::vector<Entry> entries;  // in the order the kinds first ran
  void add(const char* kind, double seconds);
};

class Model {
 public:
  // Buffers for batches of up to max_rows images. accumulate: keep a second set of gradient
  // buffers so that backward can add into the first (gradient accumulation).
  Model(porta_device_t device, int64_t max_rows, Precision precision, bool accumulate);
  ~Model();

  // He-normal weights and zero biases from `seed` (splitmix64 + Box-Muller: the same values on
  // every platform); resets the optimiser state.
  void initialize(uint64_t seed);
  // The parameters, by their checkpoint names; fp32. Waits for `s`.
  std::vector<Tensor> parameters(const porta::stream& s) const;
  // Replaces the parameters; throws checkpoint_error naming the tensor whose name or shape does
  // not match, before changing anything.
  void load(const std::vector<Tensor>& tensors, const porta::stream& s);
  // The names and shapes the model expects, in checkpoint order.
  static std::vector<std::pair<std::string, std::vector<int64_t>>> layout();

  // Forward over rows images x (rows x 1 x 28 x 28, fp32, device) with labels (device): the mean
  // loss goes to *loss (device); with `gradient` the logits' gradient is kept for backward.
  void forward(const porta::stream& s, int64_t rows, const float* x, const int32_t* labels,
               float* loss, bool gradient);
  // Gradient buffers (device, fp32) whose computation has just been queued: (data, count).
  using GradientBuffers = std::vector<std::pair<float*, int64_t>>;
  using GradientsQueued = std::function<void(const GradientBuffers&)>;
  // The gradients of the last forward (which had gradient = true): written to the gradient
  // buffers, or added to them with accumulate = true. queued, if given, is called on this thread
  // as the work producing each layer's final parameter gradients is queued (output layer first,
  // or all at once after accumulation), so that they can be all-reduced while backward goes on.
  void backward(const porta::stream& s, int64_t rows, const float* x, bool accumulate,
                const GradientsQueued& queued = {});
  // One optimiser step (step counts from 1) from the gradient buffers. With
  // settings.accumulated = N the buffers hold the sum of N micro-batch means, and the update is
  // that of their mean.
  void update(const porta::stream& s, const UpdateSettings& settings, int64_t step);

  // The gradient buffers (what update() would apply), by parameter name. Waits for `s`.
  std::vector<Tensor> gradients(const porta::stream& s) const;

  // Device logits of the last forward (rows x 10).
  const float* logits() const { return logits_.data(); }
  porta_device_t device() const { return device_; }
  // Times every op queued from now on into *profile (nullptr: none, the default).
  void set_profile(OpProfile* profile) { profile_ = profile; }
  Precision precision() const { return precision_; }

 private:
  struct Param;
  struct Operand;
  Param& param(size_t i) { return *params_[i]; }
  const void* operand(const porta::stream& s, size_t slot, const float* src, int64_t count,
                      bool refresh);
  porta_dtype_t dtype() const;
  // Queues one op (queue()), timed as `kind` when profiling.
  template <class Queue>
  void run(const porta::stream& s, const char* kind, Queue&& queue);

  porta_device_t device_;
  int64_t max_rows_;
  Precision precision_;
  bool accumulate_;
  std::vector<std::unique_ptr<Param>> params_;
  // Activations and their gradients, each sized for the batch: the forward pass's live until the
  // next forward, backward's until the end of backward.
  StreamBuffer a1_, h1_, p1_, a2_, h2_, p2_, z3_, h3_, logits_, dlogits_;
  StreamBuffer dh3_, dp2_, dh2_, dp1_, dh1_;
  std::vector<std::unique_ptr<Operand>> operands_;  // bf16 copies (Precision::bf16 only)
  OpProfile* profile_ = nullptr;
};

}  // namespace porta_train
