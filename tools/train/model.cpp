#include "model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "rng.h"

namespace porta_train {

namespace {

constexpr int64_t kC1 = 32, kC2 = 64, kSide2 = kImageSide / 2, kSide3 = kImageSide / 4;
constexpr int64_t kFlat = kC2 * kSide3 * kSide3;  // 3136
constexpr int64_t kHidden = 128;

constexpr porta_transpose_t N = PORTA_NO_TRANSPOSE, T = PORTA_TRANSPOSE;

// C (m x n, packed) = op(A) op(B) with packed operands of `dtype`.
void gemm(const porta::stream& s, porta_dtype_t dtype, porta_transpose_t ta, porta_transpose_t tb,
          int64_t m, int64_t n, int64_t k, const void* a, const void* b, float* c) {
  porta_gemm_desc_t d{};
  d.struct_size = sizeof d;
  d.trans_a = ta, d.trans_b = tb, d.m = m, d.n = n, d.k = k;
  d.lda = ta == T ? m : k;
  d.ldb = tb == T ? k : n;
  d.ldc = n, d.alpha = 1.0f, d.beta = 0.0f, d.batch_count = 1, d.dtype = dtype;
  porta::check(porta_gemm(s.get(), &d, a, b, c));
}

porta_conv2d_desc_t conv_desc(int64_t rows, int64_t in_channels, int64_t side, int64_t out_channels,
                              porta_dtype_t dtype) {
  porta_conv2d_desc_t d{};
  d.struct_size = sizeof d;
  d.batch = rows, d.in_channels = in_channels, d.in_height = side, d.in_width = side;
  d.out_channels = out_channels, d.kernel_height = 3, d.kernel_width = 3;
  d.pad_h = 1, d.pad_w = 1, d.stride_h = 1, d.stride_w = 1;
  d.dilation_h = 1, d.dilation_w = 1, d.dtype = dtype;
  return d;
}

porta_pool2d_desc_t pool_desc(int64_t rows, int64_t channels, int64_t side) {
  porta_pool2d_desc_t d{};
  d.struct_size = sizeof d;
  d.batch = rows, d.channels = channels, d.in_height = side, d.in_width = side;
  d.window_h = 2, d.window_w = 2, d.stride_h = 2, d.stride_w = 2;
  return d;
}

// The descriptors of a batch of `rows` images: the two convolutions and the pools after them.
struct BatchDescs {
  porta_conv2d_desc_t c1, c2;
  porta_pool2d_desc_t pool1, pool2;
};
BatchDescs batch_descs(int64_t rows, porta_dtype_t dtype) {
  return {conv_desc(rows, 1, kImageSide, kC1, dtype), conv_desc(rows, kC1, kSide2, kC2, dtype),
          pool_desc(rows, kC1, kImageSide), pool_desc(rows, kC2, kSide2)};
}

// Parameter indices, in checkpoint order.
enum : size_t { kW1, kB1, kW2, kB2, kW3, kB3, kW4, kB4, kParamCount };

// The bf16 copies of what convolutions and GEMMs read (Precision::bf16): the four weights, the
// layers' inputs, and the gradients that flow into their backward passes.
enum : size_t {
  kOpW1,
  kOpW2,
  kOpW3,
  kOpW4,
  kOpX,
  kOpP1,
  kOpP2,
  kOpH3,
  kOpDLogits,
  kOpDH3,
  kOpDH2,
  kOpDH1,
  kOperandCount
};

}  // namespace

// A parameter with its gradient (and a second gradient buffer for accumulation) and the
// optimiser state: SGD's velocity in m, Adam's moments in m and v.
struct Model::Param {
  Param(porta_device_t device, std::string name_, std::vector<int64_t> shape_, bool accumulate)
      : name(std::move(name_)), shape(std::move(shape_)) {
    count = 1;
    for (int64_t d : shape) count *= d;
    const size_t n = static_cast<size_t>(count);
    w = porta::device_buffer<float>(device, n);
    grad = porta::device_buffer<float>(device, n);
    if (accumulate) grad2 = porta::device_buffer<float>(device, n);
    m = porta::device_buffer<float>(device, n);
    v = porta::device_buffer<float>(device, n);
  }
  std::string name;
  std::vector<int64_t> shape;
  int64_t count;
  porta::device_buffer<float> w, grad, grad2, m, v;
};

// A bf16 copy of an fp32 tensor, refreshed before each use.
struct Model::Operand {
  Operand(porta_device_t device, int64_t count) : bits(device, static_cast<size_t>(count)) {}
  porta::device_buffer<uint16_t> bits;
};

std::vector<std::pair<std::string, std::vector<int64_t>>> Model::layout() {
  return {{"conv1.weight", {kC1, 1, 3, 3}},    {"conv1.bias", {kC1}},
          {"conv2.weight", {kC2, kC1, 3, 3}},  {"conv2.bias", {kC2}},
          {"fc1.weight", {kHidden, kFlat}},    {"fc1.bias", {kHidden}},
          {"fc2.weight", {kClasses, kHidden}}, {"fc2.bias", {kClasses}}};
}

// Mixed precision needs bf16 GEMM and convolution and a conversion op from the implementation
// in use. Asking the ops themselves, once, on tiny shapes, turns a missing one into one clear
// message before training starts instead of an error in the middle of the first step.
void check_bf16_support(porta_device_t device) {
  porta::stream s(device);
  porta::device_buffer<uint16_t> in(device, 16);
  porta::device_buffer<float> out(device, 16);
  in.memset(0);
  out.memset(0);
  porta_gemm_desc_t g{};
  g.struct_size = sizeof g;
  g.m = g.n = g.k = g.lda = g.ldb = g.ldc = 1;
  g.alpha = 1.0f, g.batch_count = 1, g.dtype = PORTA_DTYPE_BF16;
  porta_status_t status =
      porta_convert(s.get(), 4, PORTA_DTYPE_F32, out.data(), PORTA_DTYPE_BF16, in.data());
  if (status == PORTA_SUCCESS)
    status = porta_gemm(s.get(), &g, in.data(), in.data() + 1, out.data());
  if (status == PORTA_SUCCESS) {
    const porta_conv2d_desc_t c = conv_desc(1, 1, 2, 1, PORTA_DTYPE_BF16);
    status = porta_conv2d_forward(s.get(), &c, in.data(), in.data() + 4, out.data());
  }
  if (status == PORTA_SUCCESS) status = porta_stream_synchronize(s.get());
  if (status != PORTA_SUCCESS) {
    throw unsupported_error(std::string("--precision bf16 is not supported by this build's "
                                        "operator set: ") +
                            porta_status_name(status) + ": " + porta_last_error_message());
  }
}

StreamBuffer::~StreamBuffer() {
  if (data_) porta_memory_free(data_);  // waits for the work that may still use it
}

void StreamBuffer::reset(porta_device_t device, int64_t count, const porta::stream& s) {
  release(s);
  void* ptr = nullptr;
  porta::check(
      porta_memory_alloc_async(device, static_cast<size_t>(count) * sizeof(float), s.get(), &ptr));
  data_ = static_cast<float*>(ptr);
}

void StreamBuffer::release(const porta::stream& s) {
  if (!data_) return;
  porta::check(porta_memory_free_async(data_, s.get()));
  data_ = nullptr;
}

Model::Model(porta_device_t device, int64_t max_rows, Precision precision, bool accumulate)
    : device_(device), max_rows_(max_rows), precision_(precision), accumulate_(accumulate) {
  if (precision == Precision::bf16) check_bf16_support(device);
  for (auto& [name, shape] : layout()) {
    params_.push_back(std::make_unique<Param>(device, name, shape, accumulate));
  }
  // Every batch asks for the same activation blocks again: keep them cached across the
  // synchronisations between batches instead of returning them to the backend each time.
  porta::check(porta_memory_pool_set_release_threshold(device, UINT64_MAX));
  if (precision == Precision::bf16) {
    const int64_t counts[kOperandCount] = {kC1 * 9,
                                           kC2 * kC1 * 9,
                                           kHidden * kFlat,
                                           kClasses * kHidden,
                                           max_rows * kPixels,
                                           max_rows * kC1 * kSide2 * kSide2,
                                           max_rows * kFlat,
                                           max_rows * kHidden,
                                           max_rows * kClasses,
                                           max_rows * kHidden,
                                           max_rows * kC2 * kSide2 * kSide2,
                                           max_rows * kC1 * kPixels};
    for (int64_t count : counts) operands_.push_back(std::make_unique<Operand>(device, count));
  }
}

Model::~Model() = default;

porta_dtype_t Model::dtype() const {
  return precision_ == Precision::bf16 ? PORTA_DTYPE_BF16 : PORTA_DTYPE_F32;
}

void OpProfile::add(const char* kind, double seconds) {
  for (Entry& e : entries) {
    if (e.kind == kind) {
      ++e.calls;
      e.seconds += seconds;
      return;
    }
  }
  entries.push_back({kind, 1, seconds});
}

template <class Queue>
void Model::run(const porta::stream& s, const char* kind, Queue&& queue) {
  if (!profile_) {
    queue();
    return;
  }
  s.synchronize();  // what was queued before is not this op's
  const auto start = std::chrono::steady_clock::now();
  queue();
  s.synchronize();
  profile_->add(kind,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

// In f32, the tensor itself; in bf16, slot i refreshed from it (when `refresh`) on s.
const void* Model::operand(const porta::stream& s, size_t i, const float* src, int64_t count,
                           bool refresh) {
  if (precision_ == Precision::f32) return src;
  uint16_t* bits = operands_[i]->bits.data();
  if (refresh) {
    run(s, "convert", [&] {
      porta::check(porta_convert(s.get(), count, PORTA_DTYPE_F32, src, PORTA_DTYPE_BF16, bits));
    });
  }
  return bits;
}

void Model::initialize(uint64_t seed) {
  Rng rng(seed);
  for (size_t i = 0; i < kParamCount; ++i) {
    Param& p = param(i);
    std::vector<float> values(static_cast<size_t>(p.count), 0.0f);
    if (p.shape.size() > 1) {  // weights; biases start at zero
      int64_t fan_in = 1;
      for (size_t d = 1; d < p.shape.size(); ++d) fan_in *= p.shape[d];
      // He initialisation for the layers followed by ReLU, LeCun for the logits.
      const double stddev = std::sqrt((i == kW4 ? 1.0 : 2.0) / double(fan_in));
      for (float& v : values) v = static_cast<float>(stddev * rng.normal());
    }
    p.w.copy_from_host(values);
    p.m.memset(0);
    p.v.memset(0);
  }
}

std::vector<Tensor> Model::parameters(const porta::stream& s) const {
  s.synchronize();
  std::vector<Tensor> out;
  for (const auto& p : params_) out.push_back({p->name, p->shape, p->w.to_vector()});
  return out;
}

std::vector<Tensor> Model::gradients(const porta::stream& s) const {
  s.synchronize();
  std::vector<Tensor> out;
  for (const auto& p : params_) out.push_back({p->name, p->shape, p->grad.to_vector()});
  return out;
}

void Model::load(const std::vector<Tensor>& tensors, const porta::stream& s) {
  const auto expected = layout();
  if (tensors.size() != expected.size()) {
    throw checkpoint_error("the checkpoint holds " + std::to_string(tensors.size()) +
                           " tensors, the model has " + std::to_string(expected.size()));
  }
  // Look everything up and check it before the first write: a bad file changes nothing.
  std::vector<const Tensor*> found;
  for (const auto& [name, shape] : expected) {
    const Tensor* t = nullptr;
    for (const Tensor& candidate : tensors) {
      if (candidate.name == name) t = &candidate;
    }
    if (!t) throw checkpoint_error("the checkpoint has no tensor named " + name);
    if (t->shape != shape) {
      throw checkpoint_error("tensor " + name + " has shape " + shape_string(t->shape) +
                             ", the model expects " + shape_string(shape));
    }
    // Training never saves such weights (it stops at a loss that is not finite).
    const auto bad =
        std::find_if(t->values.begin(), t->values.end(), [](float v) { return !std::isfinite(v); });
    if (bad != t->values.end()) {
      throw checkpoint_error("tensor " + name + " holds " + std::to_string(*bad) + " at index " +
                             std::to_string(bad - t->values.begin()) + ": weights must be finite");
    }
    found.push_back(t);
  }
  s.synchronize();
  for (size_t i = 0; i < kParamCount; ++i) {
    param(i).w.copy_from_host(found[i]->values);
    param(i).m.memset(0);
    param(i).v.memset(0);
  }
}

void Model::forward(const porta::stream& s, int64_t rows, const float* x, const int32_t* labels,
                    float* loss, bool gradient) {
  if (rows < 1 || rows > max_rows_) {
    throw std::invalid_argument("batch of " + std::to_string(rows) + " rows, the model holds " +
                                std::to_string(max_rows_));
  }
  const porta_stream_t q = s.get();
  const porta_dtype_t dt = dtype();
  const auto [c1, c2, pool1, pool2] = batch_descs(rows, dt);

  // Each operand is converted right before its first reader; backward reuses these copies (the
  // weights do not change before the update).
  auto in = [&](size_t slot, const float* src, int64_t count) {
    return operand(s, slot, src, count, true);
  };
  const std::pair<StreamBuffer*, int64_t> activations[] = {{&a1_, kC1 * kPixels},
                                                           {&h1_, kC1 * kPixels},
                                                           {&p1_, kC1 * kSide2 * kSide2},
                                                           {&a2_, kC2 * kSide2 * kSide2},
                                                           {&h2_, kC2 * kSide2 * kSide2},
                                                           {&p2_, kFlat},
                                                           {&z3_, kHidden},
                                                           {&h3_, kHidden},
                                                           {&logits_, kClasses},
                                                           {&dlogits_, kClasses}};
  for (auto [buffer, per_row] : activations) buffer->reset(device_, rows * per_row, s);
  const void* x_in = in(kOpX, x, rows * kPixels);
  const void* w1 = in(kOpW1, param(kW1).w.data(), param(kW1).count);
  run(s, "conv2d_forward",
      [&] { porta::check(porta_conv2d_forward(q, &c1, x_in, w1, a1_.data())); });
  run(s, "bias_add", [&] {
    porta::check(
        porta_bias_add(q, rows, kC1, kPixels, a1_.data(), param(kB1).w.data(), a1_.data()));
  });
  run(s, "relu_forward",
      [&] { porta::check(porta_relu_forward(q, rows * kC1 * kPixels, a1_.data(), h1_.data())); });
  run(s, "max_pool2d_forward",
      [&] { porta::check(porta_max_pool2d_forward(q, &pool1, h1_.data(), p1_.data())); });

  const void* p1 = in(kOpP1, p1_.data(), rows * kC1 * kSide2 * kSide2);
  const void* w2 = in(kOpW2, param(kW2).w.data(), param(kW2).count);
  run(s, "conv2d_forward", [&] { porta::check(porta_conv2d_forward(q, &c2, p1, w2, a2_.data())); });
  run(s, "bias_add", [&] {
    porta::check(
        porta_bias_add(q, rows, kC2, kSide2 * kSide2, a2_.data(), param(kB2).w.data(), a2_.data()));
  });
  run(s, "relu_forward", [&] {
    porta::check(porta_relu_forward(q, rows * kC2 * kSide2 * kSide2, a2_.data(), h2_.data()));
  });
  run(s, "max_pool2d_forward",
      [&] { porta::check(porta_max_pool2d_forward(q, &pool2, h2_.data(), p2_.data())); });

  const void* p2 = in(kOpP2, p2_.data(), rows * kFlat);
  const void* w3 = in(kOpW3, param(kW3).w.data(), param(kW3).count);
  run(s, "gemm", [&] { gemm(s, dt, N, T, rows, kHidden, kFlat, p2, w3, z3_.data()); });
  run(s, "bias_add", [&] {
    porta::check(porta_bias_add(q, rows, kHidden, 1, z3_.data(), param(kB3).w.data(), z3_.data()));
  });
  run(s, "relu_forward",
      [&] { porta::check(porta_relu_forward(q, rows * kHidden, z3_.data(), h3_.data())); });

  const void* h3 = in(kOpH3, h3_.data(), rows * kHidden);
  const void* w4 = in(kOpW4, param(kW4).w.data(), param(kW4).count);
  run(s, "gemm", [&] { gemm(s, dt, N, T, rows, kClasses, kHidden, h3, w4, logits_.data()); });
  run(s, "bias_add", [&] {
    porta::check(
        porta_bias_add(q, rows, kClasses, 1, logits_.data(), param(kB4).w.data(), logits_.data()));
  });
  run(s, "cross_entropy", [&] {
    porta::check(porta_cross_entropy(q, rows, kClasses, logits_.data(), labels, loss,
                                     gradient ? dlogits_.data() : nullptr));
  });
}

void Model::backward(const porta::stream& s, int64_t rows, const float* x, bool accumulate,
                     const GradientsQueued& queued) {
  if (accumulate && !accumulate_) {
    throw std::logic_error("this model was built without gradient accumulation");
  }
  const porta_stream_t q = s.get();
  const porta_dtype_t dt = dtype();
  const auto [c1, c2, pool1, pool2] = batch_descs(rows, dt);
  // With accumulation the gradients land in grad2 and are added to grad at the end.
  auto g = [&](size_t i) { return accumulate ? param(i).grad2.data() : param(i).grad.data(); };
  // Operands of the forward pass, already converted, and gradients, converted here.
  auto kept = [&](size_t slot, const float* src) { return operand(s, slot, src, 0, false); };
  auto in = [&](size_t slot, const float* src, int64_t count) {
    return operand(s, slot, src, count, true);
  };

  const std::pair<StreamBuffer*, int64_t> gradients[] = {{&dh3_, kHidden},
                                                         {&dp2_, kFlat},
                                                         {&dh2_, kC2 * kSide2 * kSide2},
                                                         {&dp1_, kC1 * kSide2 * kSide2},
                                                         {&dh1_, kC1 * kPixels}};
  for (auto [buffer, per_row] : gradients) buffer->reset(device_, rows * per_row, s);
  const void* dlogits = in(kOpDLogits, dlogits_.data(), rows * kClasses);
  run(s, "gemm", [&] {
    gemm(s, dt, T, N, kClasses, kHidden, rows, dlogits, kept(kOpH3, h3_.data()), g(kW4));
  });
  run(s, "bias_backward",
      [&] { porta::check(porta_bias_backward(q, rows, kClasses, 1, dlogits_.data(), g(kB4))); });
  // A layer's parameter gradients are final here unless accumulation adds to them at the end.
  auto layer_done = [&](size_t weights, size_t bias) {
    if (queued && !accumulate) {
      queued({{param(weights).grad.data(), param(weights).count},
              {param(bias).grad.data(), param(bias).count}});
    }
  };
  layer_done(kW4, kB4);
  run(s, "gemm", [&] {
    gemm(s, dt, N, N, rows, kHidden, kClasses, dlogits, kept(kOpW4, param(kW4).w.data()),
         dh3_.data());
  });
  run(s, "relu_backward", [&] {
    porta::check(porta_relu_backward(q, rows * kHidden, z3_.data(), dh3_.data(), dh3_.data()));
  });

  const void* dh3 = in(kOpDH3, dh3_.data(), rows * kHidden);
  run(s, "gemm",
      [&] { gemm(s, dt, T, N, kHidden, kFlat, rows, dh3, kept(kOpP2, p2_.data()), g(kW3)); });
  run(s, "bias_backward",
      [&] { porta::check(porta_bias_backward(q, rows, kHidden, 1, dh3_.data(), g(kB3))); });
  layer_done(kW3, kB3);
  run(s, "gemm", [&] {
    gemm(s, dt, N, N, rows, kFlat, kHidden, dh3, kept(kOpW3, param(kW3).w.data()), dp2_.data());
  });
  run(s, "max_pool2d_backward", [&] {
    porta::check(porta_max_pool2d_backward(q, &pool2, h2_.data(), dp2_.data(), dh2_.data()));
  });
  run(s, "relu_backward", [&] {
    porta::check(
        porta_relu_backward(q, rows * kC2 * kSide2 * kSide2, a2_.data(), dh2_.data(), dh2_.data()));
  });

  run(s, "bias_backward", [&] {
    porta::check(porta_bias_backward(q, rows, kC2, kSide2 * kSide2, dh2_.data(), g(kB2)));
  });
  const void* dh2 = in(kOpDH2, dh2_.data(), rows * kC2 * kSide2 * kSide2);
  run(s, "conv2d_backward_weights", [&] {
    porta::check(porta_conv2d_backward_weights(q, &c2, kept(kOpP1, p1_.data()), dh2, g(kW2)));
  });
  layer_done(kW2, kB2);
  run(s, "conv2d_backward_data", [&] {
    porta::check(
        porta_conv2d_backward_data(q, &c2, dh2, kept(kOpW2, param(kW2).w.data()), dp1_.data()));
  });
  run(s, "max_pool2d_backward", [&] {
    porta::check(porta_max_pool2d_backward(q, &pool1, h1_.data(), dp1_.data(), dh1_.data()));
  });
  run(s, "relu_backward", [&] {
    porta::check(
        porta_relu_backward(q, rows * kC1 * kPixels, a1_.data(), dh1_.data(), dh1_.data()));
  });

  run(s, "bias_backward",
      [&] { porta::check(porta_bias_backward(q, rows, kC1, kPixels, dh1_.data(), g(kB1))); });
  const void* dh1 = in(kOpDH1, dh1_.data(), rows * kC1 * kPixels);
  run(s, "conv2d_backward_weights",
      [&] { porta::check(porta_conv2d_backward_weights(q, &c1, kept(kOpX, x), dh1, g(kW1))); });
  layer_done(kW1, kB1);

  for (StreamBuffer* buffer : {&dh3_, &dp2_, &dh2_, &dp1_, &dh1_}) buffer->release(s);

  if (accumulate) {
    // grad += grad2, elementwise: a bias add over one row whose channels are the elements.
    for (auto& p : params_) {
      run(s, "bias_add", [&] {
        porta::check(
            porta_bias_add(q, 1, p->count, 1, p->grad.data(), p->grad2.data(), p->grad.data()));
      });
    }
    if (queued) {
      GradientBuffers all;
      for (auto& p : params_) all.emplace_back(p->grad.data(), p->count);
      queued(all);
    }
  }
}

void Model::update(const porta::stream& s, const UpdateSettings& u, int64_t step) {
  // The gradient buffers hold the sum G = N * g of N micro-batch means. Updating with G and
  // scaled hyper-parameters is exactly the update with g: SGD with lr / N and weight decay * N
  // (the velocity becomes N times larger), Adam with epsilon * N and weight decay * N (its moments
  // scale by N and N^2, and the ratio m / sqrt(v) is unchanged). No extra pass over the gradients.
  const float n = static_cast<float>(u.accumulated);
  for (auto& p : params_) {
    if (u.optimizer == Optimizer::sgd) {
      run(s, "sgd_update", [&] {
        porta::check(porta_sgd_update(s.get(), p->count, p->w.data(), p->grad.data(), p->m.data(),
                                      u.learning_rate / n, u.momentum, u.weight_decay * n));
      });
    } else {
      porta_adam_params_t a{};
      a.struct_size = sizeof a;
      a.learning_rate = u.learning_rate;
      a.beta1 = u.beta1, a.beta2 = u.beta2;
      a.epsilon = u.epsilon * n;
      a.weight_decay = u.weight_decay * n;
      a.step = step;
      run(s, "adam_update", [&] {
        porta::check(porta_adam_update(s.get(), p->count, p->w.data(), p->grad.data(), p->m.data(),
                                       p->v.data(), &a));
      });
    }
  }
}

}  // namespace porta_train
