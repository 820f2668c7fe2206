// The whole portable op set in PORTA_CPU_MODE=simt and racecheck, on small shapes: every op runs
// clean (no hazard: its stream succeeds) and gives what the fast mode gives, within the rounding
// that a different summation order allows. The shapes are small because racecheck is slow, but
// each still spans several work-groups, several phases and the GPU launch shapes' edge cases
// (partial tiles, split-K, rows longer and shorter than a group).
#include <porta/porta.h>
#include <porta/porta_ops.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

// A device buffer with a host copy of its contents.
struct Buffer {
  void* device = nullptr;
  size_t bytes = 0;
  explicit Buffer(size_t n_bytes) : bytes(n_bytes) {
    REQUIRE(porta_memory_alloc(0, bytes, &device) == PORTA_SUCCESS);
    REQUIRE(porta_memset(device, 0, bytes) == PORTA_SUCCESS);
  }
  ~Buffer() { porta_memory_free(device); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  float* f() const { return static_cast<float*>(device); }
  std::vector<float> read() const {
    // Rounded up: 16-bit outputs may hold an odd number of elements.
    std::vector<float> host((bytes + sizeof(float) - 1) / sizeof(float));
    REQUIRE(porta_memcpy(host.data(), device, bytes) == PORTA_SUCCESS);
    return host;
  }
};

std::vector<float> random_floats(size_t n, uint32_t seed, float low = -1.0f, float high = 1.0f) {
  std::mt19937 engine(seed);
  std::uniform_real_distribution<float> uniform(low, high);
  std::vector<float> values(n);
  for (float& v : values) v = uniform(engine);
  return values;
}

std::unique_ptr<Buffer> upload(const std::vector<float>& values) {
  auto buffer = std::make_unique<Buffer>(values.size() * sizeof(float));
  REQUIRE(porta_memcpy(buffer->device, values.data(), buffer->bytes) == PORTA_SUCCESS);
  return buffer;
}

using Results = std::map<std::string, std::vector<float>>;

// Runs op (queued on the default stream), waits, and keeps out's contents under name. A hazard
// fails the check here, with the checker's message.
template <class Op>
void run(Results& results, const std::string& name, const Buffer& out, Op&& op) {
  INFO(name);
  REQUIRE(op() == PORTA_SUCCESS);
  const porta_status_t status = porta_stream_synchronize(nullptr);
  INFO(porta_last_error_message());
  CHECK(status == PORTA_SUCCESS);
  results[name] = out.read();
}

// Every op of porta_ops.h, in the mode Porta was initialised with.
Results run_every_op() {
  Results r;
  // GEMM: partial tiles, a transpose, batches, alpha/beta; deep k with few tiles (split-K);
  // f16 and bf16 inputs through porta_convert.
  {
    const int64_t m = 37, n = 29, k = 45;
    auto a = upload(random_floats(2 * m * k, 1)), b = upload(random_floats(2 * k * n, 2));
    auto c0 = random_floats(2 * m * n, 3);
    Buffer c(c0.size() * sizeof(float));
    REQUIRE(porta_memcpy(c.device, c0.data(), c.bytes) == PORTA_SUCCESS);
    porta_gemm_desc_t d{};
    d.struct_size = sizeof(d);
    d.trans_a = PORTA_NO_TRANSPOSE, d.trans_b = PORTA_TRANSPOSE;
    d.m = m, d.n = n, d.k = k, d.lda = k, d.ldb = k, d.ldc = n;
    d.alpha = 1.5f, d.beta = 0.5f, d.batch_count = 2;
    d.stride_a = m * k, d.stride_b = k * n, d.stride_c = m * n, d.dtype = PORTA_DTYPE_F32;
    run(r, "gemm f32 NT batched", c,
        [&] { return porta_gemm(nullptr, &d, a->f(), b->f(), c.f()); });

    const int64_t deep = 600;
    auto da = upload(random_floats(8 * deep, 4)), db = upload(random_floats(deep * 8, 5));
    Buffer dc(8 * 8 * sizeof(float));
    porta_gemm_desc_t s{};
    s.struct_size = sizeof(s);
    s.m = 8, s.n = 8, s.k = deep, s.lda = deep, s.ldb = 8, s.ldc = 8;
    s.alpha = 1.0f, s.batch_count = 1, s.dtype = PORTA_DTYPE_F32;
    run(r, "gemm f32 deep k", dc,
        [&] { return porta_gemm(nullptr, &s, da->f(), db->f(), dc.f()); });

    for (porta_dtype_t dtype : {PORTA_DTYPE_F16, PORTA_DTYPE_BF16}) {
      const std::string type = dtype == PORTA_DTYPE_F16 ? "f16" : "bf16";
      Buffer ha(m * k * 2), hb(k * n * 2);
      run(r, "convert f32 to " + type, ha,
          [&] { return porta_convert(nullptr, m * k, PORTA_DTYPE_F32, a->f(), dtype, ha.device); });
      REQUIRE(porta_convert(nullptr, k * n, PORTA_DTYPE_F32, b->f(), dtype, hb.device) ==
              PORTA_SUCCESS);
      Buffer back(m * k * sizeof(float));
      run(r, "convert " + type + " to f32", back, [&] {
        return porta_convert(nullptr, m * k, dtype, ha.device, PORTA_DTYPE_F32, back.f());
      });
      Buffer hc(m * n * sizeof(float));
      porta_gemm_desc_t h = d;
      h.trans_b = PORTA_NO_TRANSPOSE, h.ldb = n, h.batch_count = 1, h.beta = 0.0f;
      h.dtype = dtype;
      run(r, "gemm " + type, hc,
          [&] { return porta_gemm(nullptr, &h, ha.device, hb.device, hc.f()); });
    }
  }
  // Convolution, the three passes: padding, stride and dilation; f32 and bf16.
  {
    porta_conv2d_desc_t d{};
    d.struct_size = sizeof(d);
    d.batch = 2, d.in_channels = 3, d.in_height = 9, d.in_width = 8;
    d.out_channels = 4, d.kernel_height = 3, d.kernel_width = 3;
    d.pad_h = 1, d.pad_w = 2, d.stride_h = 2, d.stride_w = 1, d.dilation_h = 1, d.dilation_w = 2;
    d.dtype = PORTA_DTYPE_F32;
    int64_t p = 0, q = 0;
    REQUIRE(porta_conv2d_output_size(&d, &p, &q) == PORTA_SUCCESS);
    const int64_t xs = d.batch * d.in_channels * d.in_height * d.in_width;
    const int64_t ws = d.out_channels * d.in_channels * 9, ys = d.batch * d.out_channels * p * q;
    auto x = upload(random_floats(xs, 6)), w = upload(random_floats(ws, 7));
    auto dy = upload(random_floats(ys, 8));
    Buffer y(ys * 4), dx(xs * 4), dw(ws * 4);
    run(r, "conv forward", y,
        [&] { return porta_conv2d_forward(nullptr, &d, x->f(), w->f(), y.f()); });
    run(r, "conv backward data", dx,
        [&] { return porta_conv2d_backward_data(nullptr, &d, dy->f(), w->f(), dx.f()); });
    run(r, "conv backward weights", dw,
        [&] { return porta_conv2d_backward_weights(nullptr, &d, x->f(), dy->f(), dw.f()); });
    Buffer hx(xs * 2), hw(ws * 2), hy(ys * 4);
    REQUIRE(porta_convert(nullptr, xs, PORTA_DTYPE_F32, x->f(), PORTA_DTYPE_BF16, hx.device) ==
            PORTA_SUCCESS);
    REQUIRE(porta_convert(nullptr, ws, PORTA_DTYPE_F32, w->f(), PORTA_DTYPE_BF16, hw.device) ==
            PORTA_SUCCESS);
    porta_conv2d_desc_t h = d;
    h.dtype = PORTA_DTYPE_BF16;
    run(r, "conv forward bf16", hy,
        [&] { return porta_conv2d_forward(nullptr, &h, hx.device, hw.device, hy.f()); });
  }
  // Row ops: rows one work-item takes whole, rows shorter than a group and rows longer than one
  // item's share.
  for (const auto& shape_of : {std::pair<int64_t, int64_t>{5, 7}, {6, 11}, {3, 700}}) {
    // Plain variables: clang 15 cannot capture structured bindings in the lambdas below.
    const int64_t rows = shape_of.first, cols = shape_of.second;
    const std::string shape = std::to_string(rows) + "x" + std::to_string(cols);
    auto x = upload(random_floats(rows * cols, 9, -4.0f, 4.0f));
    auto dy = upload(random_floats(rows * cols, 10));
    for (porta_softmax_mode_t mode : {PORTA_SOFTMAX, PORTA_LOG_SOFTMAX}) {
      const std::string name =
          std::string(mode == PORTA_SOFTMAX ? "softmax " : "log-softmax ") + shape;
      Buffer y(rows * cols * 4), dx(rows * cols * 4);
      run(r, name + " forward", y,
          [&] { return porta_softmax_forward(nullptr, mode, rows, cols, x->f(), y.f()); });
      run(r, name + " backward", dx, [&] {
        return porta_softmax_backward(nullptr, mode, rows, cols, y.f(), dy->f(), dx.f());
      });
    }
    std::vector<int32_t> labels(rows);
    for (int64_t i = 0; i < rows; ++i) labels[i] = int32_t((i * 7) % cols);
    Buffer label_buffer(rows * sizeof(int32_t)), loss(sizeof(float)), dlogits(rows * cols * 4);
    REQUIRE(porta_memcpy(label_buffer.device, labels.data(), label_buffer.bytes) == PORTA_SUCCESS);
    run(r, "cross-entropy " + shape, dlogits, [&] {
      return porta_cross_entropy(nullptr, rows, cols, x->f(),
                                 static_cast<const int32_t*>(label_buffer.device), loss.f(),
                                 dlogits.f());
    });
    r["cross-entropy loss " + shape] = loss.read();
  }
  // Bias, ReLU, pooling, the optimisers.
  {
    const int64_t batch = 3, channels = 5, spatial = 17, count = batch * channels * spatial;
    auto x = upload(random_floats(count, 11)), bias = upload(random_floats(channels, 12));
    auto dy = upload(random_floats(count, 13));
    Buffer y(count * 4), dbias(channels * 4), relu(count * 4), drelu(count * 4);
    run(r, "bias add", y, [&] {
      return porta_bias_add(nullptr, batch, channels, spatial, x->f(), bias->f(), y.f());
    });
    run(r, "bias backward", dbias,
        [&] { return porta_bias_backward(nullptr, batch, channels, spatial, dy->f(), dbias.f()); });
    run(r, "relu forward", relu,
        [&] { return porta_relu_forward(nullptr, count, x->f(), relu.f()); });
    run(r, "relu backward", drelu,
        [&] { return porta_relu_backward(nullptr, count, x->f(), dy->f(), drelu.f()); });

    // Overlapping windows (argmax, then a gather) and disjoint ones (one pass), padded.
    for (const int64_t window : {3, 2}) {
      porta_pool2d_desc_t p{};
      p.struct_size = sizeof(p);
      p.batch = 2, p.channels = 3, p.in_height = 8, p.in_width = 7;
      p.window_h = window, p.window_w = window, p.stride_h = 2, p.stride_w = 2;
      p.pad_h = 1, p.pad_w = 1;
      int64_t ph = 0, pw = 0;
      REQUIRE(porta_pool2d_output_size(&p, &ph, &pw) == PORTA_SUCCESS);
      const int64_t in = p.batch * p.channels * p.in_height * p.in_width;
      const int64_t out = p.batch * p.channels * ph * pw;
      auto px = upload(random_floats(in, 14)), pdy = upload(random_floats(out, 15));
      Buffer py(out * 4), pdx(in * 4);
      const std::string name = window == 3 ? "max-pool" : "max-pool 2x2";
      run(r, name + " forward", py,
          [&] { return porta_max_pool2d_forward(nullptr, &p, px->f(), py.f()); });
      run(r, name + " backward", pdx,
          [&] { return porta_max_pool2d_backward(nullptr, &p, px->f(), pdy->f(), pdx.f()); });
    }

    auto weights = upload(random_floats(count, 16)), velocity = upload(random_floats(count, 17));
    run(r, "sgd", *weights, [&] {
      return porta_sgd_update(nullptr, count, weights->f(), dy->f(), velocity->f(), 0.1f, 0.9f,
                              0.01f);
    });
    auto m = upload(random_floats(count, 18)), v = upload(random_floats(count, 19, 0.0f, 1.0f));
    porta_adam_params_t adam{};
    adam.struct_size = sizeof(adam);
    adam.learning_rate = 0.01f, adam.beta1 = 0.9f, adam.beta2 = 0.999f, adam.epsilon = 1e-8f;
    adam.weight_decay = 0.001f, adam.step = 3;
    run(r, "adam", *weights, [&] {
      return porta_adam_update(nullptr, count, weights->f(), dy->f(), m->f(), v->f(), &adam);
    });
  }
  return r;
}

Results run_in_mode(const char* mode) {
#ifndef PORTA_TEST_RACECHECK_BUILT
  if (std::string(mode) == "racecheck") {
    std::printf("skipped: this build (PORTA_SANITIZE) has no racecheck kernel builds\n");
    std::exit(77);
  }
#endif
  porta_init_options_t options{};
  options.struct_size = sizeof(options);
  options.backend = "cpu";
  options.cpu_mode = mode;
  REQUIRE(porta_init(&options) == PORTA_SUCCESS);
  Results results = run_every_op();
  size_t length = 0, count = 0;
  CHECK(porta_cpu_racecheck_report(nullptr, 0, &length, &count) == PORTA_SUCCESS);
  CHECK(count == 0);
  porta_shutdown();
  return results;
}

// The same ops and inputs in two modes agree to within a few units of the last place of the
// largest magnitude (sums run in another order).
void check_agree(const Results& expected, const Results& actual) {
  REQUIRE(expected.size() == actual.size());
  for (const auto& [name, want] : expected) {
    INFO(name);
    const std::vector<float>& got = actual.at(name);
    REQUIRE(got.size() == want.size());
    float scale = 0.0f;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    float worst = 0.0f;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
    CHECK(worst <= 1e-5f * std::max(scale, 1.0f));
  }
}

}  // namespace

TEST_CASE("simt: every portable op gives what the fast mode gives", "[ops][simt]") {
  const Results fast = run_in_mode("fast");
  check_agree(fast, run_in_mode("simt"));
}

TEST_CASE("racecheck: every portable op runs clean and gives what the fast mode gives",
          "[ops][racecheck]") {
  const Results fast = run_in_mode("fast");
  check_agree(fast, run_in_mode("racecheck"));
}
