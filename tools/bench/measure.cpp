// One measurement: inputs, a warm-up, timed repetitions between Porta events, the output copied
// back (README.md beside this file, "How it measures").
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "case.h"

namespace bench {

namespace {

// Random normal numbers, fast enough for the largest shapes (hundreds of millions): splitmix64
// and the Box-Muller transform. The same seed gives the same numbers on every run.
class Normal {
 public:
  explicit Normal(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  float operator()() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(next() >> 11) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(radius * std::sin(2.0 * M_PI * u2));
    has_spare_ = true;
    return static_cast<float>(radius * std::cos(2.0 * M_PI * u2));
  }
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
  float spare_ = 0.0f;
  bool has_spare_ = false;
};

std::vector<float> random_normal(size_t n, uint64_t seed) {
  Normal normal(seed);
  std::vector<float> out(n);
  for (float& v : out) v = normal();
  return out;
}

// Round to nearest even; NaN stays a quiet NaN.
uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// IEEE binary16, round to nearest even, with subnormals and overflow to infinity.
uint16_t to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504: infinity
  if (abs < 0x38800000u) {                        // below 2^-14: subnormal or zero
    if (abs < 0x33000000u) return sign;           // below half the smallest subnormal
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24
    const uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    return sign | static_cast<uint16_t>(half + (rest > halfway || (rest == halfway && (half & 1))));
  }
  const uint32_t rebased = abs - (112u << 23);  // exponent bias 127 -> 15
  const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return sign | static_cast<uint16_t>(rounded >> 13);
}

DeviceArray upload(porta_device_t device, const std::vector<float>& values, porta_dtype_t dtype) {
  DeviceArray out{porta::device_buffer<uint8_t>(device, values.size() * dtype_size(dtype))};
  if (dtype == PORTA_DTYPE_F32) {
    out.buffer.copy_from_host(reinterpret_cast<const uint8_t*>(values.data()), out.buffer.size());
    return out;
  }
  std::vector<uint16_t> half(values.size());
  for (size_t i = 0; i < values.size(); ++i)
    half[i] = dtype == PORTA_DTYPE_BF16 ? to_bf16(values[i]) : to_f16(values[i]);
  out.buffer.copy_from_host(reinterpret_cast<const uint8_t*>(half.data()), out.buffer.size());
  return out;
}

// At most this many output elements are kept for the comparison: all of them for every shape
// of the quick suite.
constexpr size_t kMaxKept = size_t{1} << 24;

std::vector<float> keep_output(porta_device_t, const float* device_ptr, size_t count) {
  std::vector<float> all(count);
  porta::check(porta_memcpy(all.data(), device_ptr, count * sizeof(float)));
  if (count <= kMaxKept) return all;
  const size_t stride = (count + kMaxKept - 1) / kMaxKept;
  std::vector<float> kept;
  kept.reserve(count / stride + 1);
  for (size_t i = 0; i < count; i += stride) kept.push_back(all[i]);
  return kept;
}

// Input sets to rotate through so that one pass over them does not fit in the cache: at most
// 1024, all of them within a quarter of the device's memory, and at least 2 where that allows,
// so that the untimed call before a timed one reads other data (rep()).
int rotation_sets(size_t bytes_per_set, size_t cache_bytes, uint64_t device_memory) {
  size_t sets = (2 * cache_bytes + bytes_per_set - 1) / std::max<size_t>(bytes_per_set, 1);
  sets = std::clamp<size_t>(sets, 2, 1024);
  while (sets > 1 && sets * bytes_per_set > device_memory / 4) --sets;
  return static_cast<int>(sets);
}

// Fills c, which must stay where it is: run() refers to c's buffers.
void make_case(Case& c, porta_device_t device, const Shape& s, porta_dtype_t dtype,
               size_t cache_bytes, uint64_t device_memory) {
  // The operands' element counts: inputs, then the output.
  std::vector<size_t> in_counts;
  size_t out_count = 0;
  int64_t p = 0, q = 0;
  if (is_conv(s.op)) {
    const porta_conv2d_desc_t d = s.conv_desc(dtype);
    porta::check(porta_conv2d_output_size(&d, &p, &q));
  }
  const size_t x_count = size_t(s.batch) * s.c * s.h * s.w;
  const size_t w_count = size_t(s.filters) * s.c * s.r * s.s;
  const size_t y_count = size_t(s.batch) * s.filters * p * q;
  const size_t rc = size_t(s.rows) * s.cols;
  int64_t pool_h = 0, pool_w = 0;
  porta_pool2d_desc_t pool{};
  if (is_pool(s.op)) {
    pool.struct_size = sizeof pool;
    pool.batch = s.batch, pool.channels = s.c, pool.in_height = s.h, pool.in_width = s.w;
    pool.window_h = s.r, pool.window_w = s.s, pool.stride_h = s.sh, pool.stride_w = s.sw;
    pool.pad_h = s.ph, pool.pad_w = s.pw;
    porta::check(porta_pool2d_output_size(&pool, &pool_h, &pool_w));
  }
  const size_t pool_y = size_t(s.batch) * s.c * pool_h * pool_w;
  const size_t biased = size_t(s.batch) * s.c * s.cols;  // bias_add, bias_bwd
  switch (s.op) {
    case Op::gemm:
      in_counts = {size_t(s.m) * s.k, size_t(s.k) * s.n};
      out_count = size_t(s.m) * s.n;
      break;
    case Op::conv_fwd:
      in_counts = {x_count, w_count};
      out_count = y_count;
      break;
    case Op::conv_bwd_data:
      in_counts = {y_count, w_count};
      out_count = x_count;
      break;
    case Op::conv_bwd_weights:
      in_counts = {x_count, y_count};
      out_count = w_count;
      break;
    case Op::softmax:
      in_counts = {rc};
      out_count = rc;
      break;
    case Op::softmax_bwd:
      in_counts = {rc, rc};
      out_count = rc;
      break;
    case Op::cross_entropy:
      in_counts = {rc};
      out_count = rc;
      break;
    case Op::max_pool:
      in_counts = {x_count};
      out_count = pool_y;
      break;
    case Op::max_pool_bwd:
      in_counts = {x_count, pool_y};
      out_count = x_count;
      break;
    case Op::relu:
      in_counts = {rc};
      out_count = rc;
      break;
    case Op::relu_bwd:
      in_counts = {rc, rc};
      out_count = rc;
      break;
    case Op::bias_add:
      in_counts = {biased, size_t(s.c)};
      out_count = biased;
      break;
    case Op::bias_bwd:
      in_counts = {biased};
      out_count = size_t(s.c);
      break;
    case Op::adam:  // weights, grads, m, v; updated in place, the weights copied out
      in_counts = {rc, rc, rc, rc};
      out_count = rc;
      break;
    case Op::all_reduce:
    case Op::peer_copy:  // multi_device.cpp measures these
      throw porta::error(PORTA_ERROR_UNSUPPORTED, std::string(op_name(s.op)) + " is not an op");
  }
  const porta_dtype_t in_dtype = is_bandwidth_op(s.op) ? PORTA_DTYPE_F32 : dtype;
  if (is_bandwidth_op(s.op)) c.copy_floats = in_counts[0];
  const bool copy_apart = c.copy_floats > out_count;  // the output cannot hold the copy
  size_t set_bytes = (out_count + (copy_apart ? c.copy_floats : 0)) * sizeof(float);
  for (size_t n : in_counts) set_bytes += n * dtype_size(in_dtype);
  if (s.op == Op::cross_entropy) set_bytes += size_t(s.rows) * sizeof(int32_t);
  // One set must fit with room to spare (the host draws the inputs too, and on a CPU device that
  // is the same memory): a shape too large is refused here, naming its size, instead of filling
  // the memory until the system stops the process.
  if (set_bytes > device_memory / 2) {
    throw porta::error(PORTA_ERROR_OUT_OF_MEMORY, "the operands take " +
                                                      std::to_string(set_bytes >> 20) +
                                                      " MiB, more than half the device's " +
                                                      std::to_string(device_memory >> 20) + " MiB");
  }
  const int sets = rotation_sets(set_bytes, cache_bytes, device_memory);

  for (int set = 0; set < sets; ++set) {
    std::vector<DeviceArray> operands;
    for (size_t i = 0; i < in_counts.size(); ++i) {
      if (set > 0) {
        // The rotation is about addresses, not values: the other sets copy the first on the
        // device, where drawing them on the host would take seconds a shape on a GPU.
        const DeviceArray& first = c.inputs[0][i];
        DeviceArray copy{porta::device_buffer<uint8_t>(device, first.buffer.size())};
        porta::check(porta_memcpy(copy.get(), first.get(), first.buffer.size()));
        operands.push_back(std::move(copy));
        continue;
      }
      std::vector<float> values = random_normal(in_counts[i], 17u * i + 1u);
      if (s.op == Op::softmax_bwd && i == 0) {
        // y is a softmax output: positive rows that sum to 1.
        for (int64_t row = 0; row < s.rows; ++row) {
          float* y = values.data() + row * s.cols;
          double sum = 0.0;
          for (int64_t j = 0; j < s.cols; ++j) sum += y[j] = std::exp(y[j]);
          for (int64_t j = 0; j < s.cols; ++j) y[j] = static_cast<float>(y[j] / sum);
        }
      }
      if (s.op == Op::adam && i == 3) {
        for (float& v : values) v *= v;  // a second moment: never negative
      }
      operands.push_back(upload(device, values, in_dtype));
    }
    c.inputs.push_back(std::move(operands));
    if (s.op == Op::cross_entropy) {
      Normal bits(7000u + set);
      std::vector<int32_t> labels(s.rows);
      for (int32_t& l : labels) l = static_cast<int32_t>(bits.next() % uint64_t(s.cols));
      porta::device_buffer<int32_t> buffer(device, labels.size());
      buffer.copy_from_host(labels);
      c.labels.push_back(std::move(buffer));
    }
  }
  for (int set = 0; set < sets; ++set) {
    c.outputs.emplace_back(device, out_count);
    if (copy_apart) c.copy_buffers.emplace_back(device, c.copy_floats);
  }
  c.output_count = out_count;
  if (s.op == Op::cross_entropy) c.loss = porta::device_buffer<float>(device, 1);

  switch (s.op) {
    case Op::gemm: {
      porta_gemm_desc_t d{};
      d.struct_size = sizeof d;
      d.trans_a = s.trans_a ? PORTA_TRANSPOSE : PORTA_NO_TRANSPOSE;
      d.trans_b = s.trans_b ? PORTA_TRANSPOSE : PORTA_NO_TRANSPOSE;
      d.m = s.m, d.n = s.n, d.k = s.k;
      d.lda = s.trans_a ? s.m : s.k;
      d.ldb = s.trans_b ? s.k : s.n;
      d.ldc = s.n;
      d.alpha = 1.0f, d.beta = 0.0f;
      d.batch_count = 1;
      d.dtype = dtype;
      c.run = [&c, d](int set, porta_stream_t st) {
        porta::check(porta_gemm(st, &d, c.inputs[set][0].get(), c.inputs[set][1].get(),
                                c.outputs[set].data()));
      };
      break;
    }
    case Op::conv_fwd:
    case Op::conv_bwd_data:
    case Op::conv_bwd_weights: {
      const porta_conv2d_desc_t d = s.conv_desc(dtype);
      const Op op = s.op;
      c.run = [&c, d, op](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        const void* a = c.inputs[set][0].get();
        const void* b = c.inputs[set][1].get();
        porta::check(op == Op::conv_fwd        ? porta_conv2d_forward(st, &d, a, b, out)
                     : op == Op::conv_bwd_data ? porta_conv2d_backward_data(st, &d, a, b, out)
                                               : porta_conv2d_backward_weights(st, &d, a, b, out));
      };
      break;
    }
    case Op::softmax:
      c.run = [&c, s](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        porta::check(porta_softmax_forward(st, PORTA_SOFTMAX, s.rows, s.cols,
                                           static_cast<const float*>(c.inputs[set][0].get()), out));
      };
      break;
    case Op::softmax_bwd:
      c.run = [&c, s](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        porta::check(porta_softmax_backward(
            st, PORTA_SOFTMAX, s.rows, s.cols, static_cast<const float*>(c.inputs[set][0].get()),
            static_cast<const float*>(c.inputs[set][1].get()), out));
      };
      break;
    case Op::cross_entropy:
      c.run = [&c, s](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        porta::check(porta_cross_entropy(st, s.rows, s.cols,
                                         static_cast<const float*>(c.inputs[set][0].get()),
                                         c.labels[set].data(), c.loss.data(), out));
      };
      break;
    case Op::max_pool:
      c.run = [&c, pool](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        porta::check(porta_max_pool2d_forward(
            st, &pool, static_cast<const float*>(c.inputs[set][0].get()), out));
      };
      break;
    case Op::max_pool_bwd:
      c.run = [&c, pool](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        porta::check(
            porta_max_pool2d_backward(st, &pool, static_cast<const float*>(c.inputs[set][0].get()),
                                      static_cast<const float*>(c.inputs[set][1].get()), out));
      };
      break;
    case Op::relu:
      c.run = [&c, s](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        porta::check(
            porta_relu_forward(st, s.cols, static_cast<const float*>(c.inputs[set][0].get()), out));
      };
      break;
    case Op::relu_bwd:
      c.run = [&c, s](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        porta::check(porta_relu_backward(st, s.cols,
                                         static_cast<const float*>(c.inputs[set][0].get()),
                                         static_cast<const float*>(c.inputs[set][1].get()), out));
      };
      break;
    case Op::bias_add:
      c.run = [&c, s](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        porta::check(porta_bias_add(st, s.batch, s.c, s.cols,
                                    static_cast<const float*>(c.inputs[set][0].get()),
                                    static_cast<const float*>(c.inputs[set][1].get()), out));
      };
      break;
    case Op::bias_bwd:
      c.run = [&c, s](int set, porta_stream_t st) {
        float* out = c.outputs[set].data();
        porta::check(porta_bias_backward(st, s.batch, s.c, s.cols,
                                         static_cast<const float*>(c.inputs[set][0].get()), out));
      };
      break;
    case Op::adam: {
      porta_adam_params_t params{};
      params.struct_size = sizeof params;
      params.learning_rate = 1e-3f, params.beta1 = 0.9f, params.beta2 = 0.999f;
      params.epsilon = 1e-8f, params.step = 10;
      const size_t bytes = rc * sizeof(float);
      c.run = [&c, s, params](int set, porta_stream_t st) {
        std::vector<DeviceArray>& in = c.inputs[set];
        porta::check(porta_adam_update(
            st, s.cols, static_cast<float*>(in[0].get()), static_cast<const float*>(in[1].get()),
            static_cast<float*>(in[2].get()), static_cast<float*>(in[3].get()), &params));
      };
      c.to_plain = [&c, bytes](porta_stream_t st) {
        porta::check(porta_memcpy_async(c.outputs[0].data(), c.inputs[0][0].get(), bytes, st));
      };
      // Set 0's weights and moments as made, kept to restore before output().
      auto pristine = std::make_shared<std::vector<porta::device_buffer<uint8_t>>>();
      for (int i : {0, 2, 3}) {
        pristine->emplace_back(device, bytes);
        porta::check(porta_memcpy(pristine->back().data(), c.inputs[0][i].get(), bytes));
      }
      c.restore = [&c, pristine, bytes](porta_stream_t st) {
        const int slots[] = {0, 2, 3};
        for (size_t k = 0; k < 3; ++k) {
          porta::check(
              porta_memcpy_async(c.inputs[0][slots[k]].get(), (*pristine)[k].data(), bytes, st));
        }
      };
      break;
    }
    case Op::all_reduce:
    case Op::peer_copy:
      break;
  }
}

}  // namespace

int repetitions(const Settings& settings, const Shape& shape, bool gpu) {
  int reps = settings.reps > 0 ? settings.reps : gpu ? 100 : 20;
  if (settings.reps == 0 && shape.max_reps > 0) reps = std::min(reps, shape.max_reps);
  return reps;
}

struct Measurement::State {
  porta_device_t device = 0;
  porta_device_properties_t props{};
  Op op = Op::gemm;
  Case c;
  std::optional<porta::stream> stream;
  std::optional<porta::event> start, stop;
  std::optional<porta::module> kernels;  // bandwidth ops: the copy's
  std::optional<porta::kernel> copy;
};

Measurement::Measurement(porta_device_t device, bool gpu, const Settings& settings,
                         const Shape& shape, porta_dtype_t dtype, int reps,
                         BlockedAlgorithm blocked, const std::string& kernel_library)
    : state_(std::make_unique<State>()) {
  State& st = *state_;
  st.device = device;
  st.op = shape.op;
  const porta_device_properties_t props = porta::device_properties(device);
  st.props = props;
  // GPUs: the largest last-level caches today (256 MiB); the API does not report the size.
  const size_t cache = gpu ? size_t{256} << 20 : settings.cache_bytes;
  make_case(st.c, device, shape, dtype, cache, props.total_memory);
  if (blocked != BlockedAlgorithm::none) {
    make_blocked_conv(st.c, shape, dtype, blocked, std::max(props.compute_units, 1));
  }
  const int sets = static_cast<int>(st.c.inputs.size());
  st.stream.emplace(device);
  st.start.emplace(device);
  st.stop.emplace(device);
  // Every set once, and enough calls for clocks, caches and thread pools to settle.
  warmup_ = std::min(std::max(sets, gpu ? 10 : 2), std::max(reps, sets));
  for (int i = 0; i < warmup_; ++i) st.c.run(i % sets, st.stream->get());
  if (st.c.copy_floats > 0) {
    st.kernels.emplace(device, kernel_library);
    st.copy.emplace(st.kernels->kernel("peak_copy"));
    for (int i = 0; i < sets; ++i) copy_set(i);
  }
  st.stream->synchronize();
  if (st.c.check) st.c.check();
}

void Measurement::copy_set(int set) {
  State& st = *state_;
  queue_copy(*st.copy, *st.stream, st.props, st.c.copy_floats,
             static_cast<const float*>(st.c.inputs[set][0].get()), st.c.copy_target(set));
}

double Measurement::copy_bytes() const {
  return 2.0 * double(state_->c.copy_floats) * sizeof(float);  // read once, written once
}

Measurement::~Measurement() = default;

int Measurement::sets() const { return static_cast<int>(state_->c.inputs.size()); }

namespace {

// Holds a stream, from a host function queued first, until the host has queued the rest of a
// repetition: its events then time the work alone. Ungated, a device that finishes the work
// queued so far waits for the next call, and a CPU stream's worker sleeps meanwhile, its wake
// then timed with the call (bias_add 64x128x1: 19-23 us ungated, 5-6 us gated, on the 2-core
// development machine). Where the backend queues no host function the stream runs ungated.
// The host function owns the state it waits on, so that it stays valid whenever it runs.
class Gate {
 public:
  explicit Gate(const porta::stream& stream) : state_(std::make_shared<State>()) {
    auto* held = new std::shared_ptr<State>(state_);
    if (porta_stream_launch_host_func(stream.get(), &Gate::hold, held) != PORTA_SUCCESS) {
      delete held;
    }
  }
  ~Gate() { open(); }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  void open() {
    std::lock_guard lock(state_->mutex);
    state_->open = true;
    state_->opened.notify_all();
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable opened;
    bool open = false;
  };
  static void hold(void* user_data) {
    const std::unique_ptr<std::shared_ptr<State>> held(
        static_cast<std::shared_ptr<State>*>(user_data));
    State& state = **held;
    std::unique_lock lock(state.mutex);
    state.opened.wait(lock, [&] { return state.open; });
  }
  std::shared_ptr<State> state_;
};

}  // namespace

Measurement::Times Measurement::rep(int i) {
  State& st = *state_;
  // An untimed call on the previous set, queued with the timed one: porta-bench waits for idle
  // threads before every repetition, so without it each call would be timed waking the threads
  // of a process that has just slept (tens of microseconds on a virtual machine, more for
  // OpenMP's), which no loop of calls pays. The timed set was last read sets() calls ago.
  Gate gate(*st.stream);
  st.c.run((i + sets() - 1) % sets(), st.stream->get());
  st.start->record(*st.stream);
  st.c.run(i % sets(), st.stream->get());
  st.stop->record(*st.stream);
  gate.open();
  st.stream->synchronize();
  if (st.c.check) st.c.check();
  Times times{porta::event::elapsed_ms(*st.start, *st.stop), std::nullopt};
  if (st.copy) {
    // The copy rate of this op's own memory, at the same moment: the host backs memory
    // unevenly, so a probe of other buffers at another time can read far faster or slower
    // (docs/decisions.md). Its set is half a rotation away from the op's, the one read longest
    // ago; the op has just woken the threads.
    Gate copy_gate(*st.stream);
    st.start->record(*st.stream);
    copy_set((i + sets() / 2) % sets());
    st.stop->record(*st.stream);
    copy_gate.open();
    st.stream->synchronize();
    times.copy_ms = porta::event::elapsed_ms(*st.start, *st.stop);
  }
  return times;
}

std::vector<float> Measurement::output() {
  State& st = *state_;
  if (st.c.restore) st.c.restore(st.stream->get());
  st.c.run(0, st.stream->get());
  if (st.c.to_plain) st.c.to_plain(st.stream->get());
  st.stream->synchronize();
  if (st.c.check) st.c.check();
  std::vector<float> out = keep_output(st.device, st.c.outputs[0].data(), st.c.output_count);
  if (st.op == Op::cross_entropy) {
    float loss = 0.0f;
    st.c.loss.copy_to_host(&loss, 1);
    out.push_back(loss);
  }
  return out;
}

void summarise(Record& r) {
  if (r.times_ms.empty()) return;
  const auto median = [](std::vector<double> ms) {
    std::sort(ms.begin(), ms.end());
    const size_t n = ms.size();
    return n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  };
  r.median_ms = median(r.times_ms);
  r.min_ms = *std::min_element(r.times_ms.begin(), r.times_ms.end());
  r.max_ms = *std::max_element(r.times_ms.begin(), r.times_ms.end());
  r.reps = static_cast<int>(r.times_ms.size());
  if (r.shape.flops() > 0) r.gflops = r.shape.flops() / (r.median_ms * 1e6);
  if (is_bandwidth_op(r.op)) r.gbps = r.shape.bytes() / (r.median_ms * 1e6);
  if (!r.copy_times_ms.empty() && r.copy_bytes > 0) {
    const double copy_ms = median(r.copy_times_ms);
    if (copy_ms > 0) r.copy_gbps = r.copy_bytes / (copy_ms * 1e6);
  }
}

}  // namespace bench
