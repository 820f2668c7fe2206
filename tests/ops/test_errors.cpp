// Argument errors of every op (porta_ops.h's contract, checked by libporta before any op plugin
// runs): NULL buffers and descriptors, descriptors whose struct_size is too small, zero and
// negative sizes, inconsistent shapes and leading dimensions, buffers one element too small,
// host (pageable and pinned) memory where device memory is needed, outputs that overlap inputs
// where that is not allowed, unknown enumerators, non-finite or out-of-range hyperparameters, and
// a stale stream.
//
// Out-of-range enumerators are passed from C (bad_enums.c): only C can form them without undefined
// behaviour.
//
// Each call must fail with exactly the documented status and a message that names the offending
// argument (and, for a buffer that is too small, both sizes), and must leave every buffer as it
// was: outputs stay poisoned, inputs unchanged. Buffers here have no guard zone, so that "one
// element too small" is exactly that.
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "bad_enums.h"
#include "ops_test.h"

using namespace ops_test;

namespace {

constexpr porta_status_t kInvalid = PORTA_ERROR_INVALID_ARGUMENT;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// The words the message about a buffer one element too small must hold: its name, the elements
// it needs and the bytes it has.
std::string too_small(const std::string& function, const std::string& name, int64_t elements,
                      size_t element_size) {
  return function + " " + name + " " + std::to_string(elements) + " " +
         std::to_string((elements - 1) * int64_t(element_size));
}

// A stream handle that was valid once.
porta_stream_t stale_stream(const Env& env) {
  porta_stream_t stream = nullptr;
  PT_REQUIRE_OK(porta_stream_create(env.device(), &stream));
  PT_REQUIRE_OK(porta_stream_destroy(stream));
  return stream;
}

// Device memory of another device of the same backend, when there is one.
bool has_second_device() { return porta_test::devices().size() >= 2; }

// count floats of random data, exactly sized (no guard).
std::unique_ptr<Floats> filled(const Env& env, Rng& rng, size_t count) {
  auto array = std::make_unique<Floats>(env, count, 0, 0);
  array->upload(normal(rng, count));
  return array;
}

// count floats of poison, exactly sized: an output.
std::unique_ptr<Floats> output(const Env& env, size_t count) {
  return std::make_unique<Floats>(env, count, 0, 0);
}

}  // namespace

TEST_CASE("errors: gemm", "[errors][gemm]") {
  Env env;
  Rng rng(seed_for(0));
  const int64_t m = 5, n = 6, k = 7;
  porta_gemm_desc_t valid{};
  valid.struct_size = sizeof valid;
  valid.trans_a = PORTA_NO_TRANSPOSE, valid.trans_b = PORTA_NO_TRANSPOSE;
  valid.m = m, valid.n = n, valid.k = k, valid.lda = k, valid.ldb = n, valid.ldc = n;
  valid.alpha = 1.0f, valid.beta = 0.0f, valid.batch_count = 1, valid.dtype = PORTA_DTYPE_F32;
  auto a = filled(env, rng, m * k), b = filled(env, rng, k * n);
  auto c = output(env, m * n);
  auto small_a = filled(env, rng, m * k - 1), small_b = filled(env, rng, k * n - 1);
  auto small_c = output(env, m * n - 1);
  auto shared = output(env, m * k + m * n);  // a and c in one allocation, overlapping
  const Untouched untouched(env, {{"a", a.get()},
                                  {"b", b.get()},
                                  {"c", c.get()},
                                  {"small c", small_c.get()},
                                  {"shared", shared.get()}});
  const auto with = [&](auto change) {
    porta_gemm_desc_t d = valid;
    change(d);
    return d;
  };
  const auto gemm = [&](const porta_gemm_desc_t& d, const void* pa, const void* pb, float* pc) {
    return porta_gemm(env.stream(), &d, pa, pb, pc);
  };

  SECTION("the descriptor") {
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm descriptor",
                     porta_gemm(env.stream(), nullptr, a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm descriptor",
                     gemm(with([](auto& d) { d.struct_size = PORTA_GEMM_DESC_MIN_SIZE - 1; }),
                          a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm descriptor",
                     gemm(with([](auto& d) { d.struct_size = 0; }), a->get(), b->get(), c->get()));
  }
  SECTION("enumerators (set from C, see bad_enums.c)") {
    const auto bad = [&](int field, int value) {
      return porta_test_gemm_bad_enum(env.stream(), &valid, field, value, a->get(), b->get(),
                                      c->get());
    };
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm trans_a", bad(PORTA_TEST_TRANS_A, 2));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm trans_b", bad(PORTA_TEST_TRANS_B, -1));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm dtype", bad(PORTA_TEST_DTYPE, 3));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm dtype", bad(PORTA_TEST_DTYPE, 7));
  }
  SECTION("sizes") {
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm m",
                     gemm(with([](auto& d) { d.m = 0; }), a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm n",
                     gemm(with([](auto& d) { d.n = -1; }), a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm k",
                     gemm(with([](auto& d) { d.k = 0; }), a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm batch_count",
                     gemm(with([](auto& d) { d.batch_count = 0; }), a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(
        untouched, kInvalid, "porta_gemm a overflows",
        gemm(with([](auto& d) { d.m = int64_t{1} << 62; }), a->get(), b->get(), c->get()));
    // The last row's offset fits, the row's end past it does not.
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm a overflows",
                     gemm(with([](auto& d) {
                            d.m = 2;
                            d.k = d.lda = std::numeric_limits<int64_t>::max() - 3;
                          }),
                          a->get(), b->get(), c->get()));
  }
  SECTION("leading dimensions and strides") {
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm lda",
                     gemm(with([&](auto& d) { d.lda = k - 1; }), a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm ldb",
                     gemm(with([&](auto& d) { d.ldb = n - 1; }), a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm ldc",
                     gemm(with([&](auto& d) { d.ldc = n - 1; }), a->get(), b->get(), c->get()));
    // Transposed, A is stored k x m: lda = k (enough untransposed) is now too small.
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm lda",
                     gemm(with([&](auto& d) {
                            d.trans_a = PORTA_TRANSPOSE;
                            d.m = k + 1;
                          }),
                          a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(
        untouched, kInvalid, "porta_gemm ldb",
        gemm(with([&](auto& d) { d.trans_b = PORTA_TRANSPOSE; }), a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm stride_a",
                     gemm(with([](auto& d) { d.stride_a = -1; }), a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm stride_c spans",
                     gemm(with([&](auto& d) {
                            d.batch_count = 2;
                            d.stride_c = m * n - 1;  // the two C matrices would share an element
                          }),
                          a->get(), b->get(), c->get()));
    // Nor may they share rows without sharing elements: n columns each, side by side.
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm stride_c rows",
                     gemm(with([&](auto& d) {
                            d.n = n / 2, d.batch_count = 2;
                            d.stride_c = n / 2;
                          }),
                          a->get(), b->get(), c->get()));
  }
  SECTION("buffers") {
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm a", gemm(valid, nullptr, b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm b", gemm(valid, a->get(), nullptr, c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm c", gemm(valid, a->get(), b->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small("porta_gemm", "a", m * k, 4),
                     gemm(valid, small_a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small("porta_gemm", "b", k * n, 4),
                     gemm(valid, a->get(), small_b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small("porta_gemm", "c", m * n, 4),
                     gemm(valid, a->get(), b->get(), small_c->get()));
    // A larger leading dimension, or a second batch, grows the span past what a holds.
    PT_CHECK_REJECTS(
        untouched, kInvalid,
        "porta_gemm a " + std::to_string((m - 1) * (k + 1) + k) + " " + std::to_string(m * k * 4),
        gemm(with([&](auto& d) { d.lda = k + 1; }), a->get(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid,
                     "porta_gemm a " + std::to_string(2 * m * k) + " " + std::to_string(m * k * 4),
                     gemm(with([&](auto& d) {
                            d.batch_count = 2;
                            d.stride_a = m * k;
                            d.stride_c = m * n;
                          }),
                          a->get(), b->get(), shared->get()));
    // With 2-byte inputs, a holds twice as many elements: b's bytes are checked for 2-byte
    // elements, c's always for 4.
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm c",
                     gemm(with([](auto& d) { d.dtype = PORTA_DTYPE_BF16; }), small_a->get(),
                          small_b->get(), small_c->get()));
  }
  SECTION("host memory") {
    std::vector<float> host(m * k + m * n + k * n, 1.0f);
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm a",
                     gemm(valid, host.data(), b->get(), c->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm c",
                     gemm(valid, a->get(), b->get(), host.data() + m * k));
    CHECK(host == std::vector<float>(m * k + m * n + k * n, 1.0f));
    porta_test::Buffer pinned(env.device(), k * n * sizeof(float), porta_test::Buffer::kPinned);
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm b",
                     gemm(valid, a->get(), pinned.as<float>(), c->get()));
    if (has_second_device()) {
      porta_test::Buffer other(porta_test::devices()[1], k * n * sizeof(float));
      PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm b",
                       gemm(valid, a->get(), other.as<float>(), c->get()));
    }
  }
  SECTION("overlapping output") {
    float* base = shared->get();
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm c a", gemm(valid, base, b->get(), base + 3));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm c b",
                     gemm(valid, a->get(), base, base + m * k - 1));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_gemm c a", gemm(valid, base, b->get(), base));
  }
  SECTION("the stream") {
    const porta_stream_t stale = stale_stream(env);
    PT_CHECK_REJECTS(untouched, PORTA_ERROR_INVALID_HANDLE, "porta_gemm stream",
                     porta_gemm(stale, &valid, a->get(), b->get(), c->get()));
  }
}

TEST_CASE("errors: conv2d forward, backward-data, backward-weights, output size",
          "[errors][conv]") {
  Env env;
  Rng rng(seed_for(0));
  porta_conv2d_desc_t valid{};
  valid.struct_size = sizeof valid;
  valid.batch = 2, valid.in_channels = 3, valid.in_height = 6, valid.in_width = 5;
  valid.out_channels = 4, valid.kernel_height = 3, valid.kernel_width = 3;
  valid.pad_h = 1, valid.pad_w = 1, valid.stride_h = 1, valid.stride_w = 1;
  valid.dilation_h = 1, valid.dilation_w = 1, valid.dtype = PORTA_DTYPE_F32;
  const int64_t xs = 2 * 3 * 6 * 5, ws = 4 * 3 * 3 * 3, ys = 2 * 4 * 6 * 5;
  auto x = filled(env, rng, xs), w = filled(env, rng, ws), dy = filled(env, rng, ys);
  auto y = output(env, ys), dx = output(env, xs), dw = output(env, ws);
  auto small_x = filled(env, rng, xs - 1), small_w = filled(env, rng, ws - 1),
       small_y = output(env, ys - 1);
  const Untouched untouched(env, {{"x", x.get()},
                                  {"w", w.get()},
                                  {"dy", dy.get()},
                                  {"y", y.get()},
                                  {"dx", dx.get()},
                                  {"dw", dw.get()},
                                  {"small y", small_y.get()}});
  const auto with = [&](auto change) {
    porta_conv2d_desc_t d = valid;
    change(d);
    return d;
  };
  // The three passes with the valid buffers and a (possibly) changed descriptor.
  const auto forward = [&](const porta_conv2d_desc_t* d) {
    return porta_conv2d_forward(env.stream(), d, x->get(), w->get(), y->get());
  };
  const auto backward_data = [&](const porta_conv2d_desc_t* d) {
    return porta_conv2d_backward_data(env.stream(), d, dy->get(), w->get(), dx->get());
  };
  const auto backward_weights = [&](const porta_conv2d_desc_t* d) {
    return porta_conv2d_backward_weights(env.stream(), d, x->get(), dy->get(), dw->get());
  };

  SECTION("descriptors, for each pass") {
    const porta_conv2d_desc_t short_desc = with([](auto& d) { d.struct_size = sizeof d - 8; });
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward descriptor", forward(nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward descriptor", forward(&short_desc));
    PT_CHECK_REJECTS(
        untouched, kInvalid, "porta_conv2d_forward dtype",
        porta_test_conv2d_bad_dtype(0, env.stream(), &valid, 7, x->get(), w->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data descriptor",
                     backward_data(nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data descriptor",
                     backward_data(&short_desc));
    PT_CHECK_REJECTS(
        untouched, kInvalid, "porta_conv2d_backward_data dtype",
        porta_test_conv2d_bad_dtype(1, env.stream(), &valid, 3, dy->get(), w->get(), dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights descriptor",
                     backward_weights(nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights descriptor",
                     backward_weights(&short_desc));
    PT_CHECK_REJECTS(
        untouched, kInvalid, "porta_conv2d_backward_weights dtype",
        porta_test_conv2d_bad_dtype(2, env.stream(), &valid, -1, x->get(), dy->get(), dw->get()));
  }
  SECTION("sizes, zero and negative") {
    struct Field {
      const char* name;
      int64_t porta_conv2d_desc_t::*member;
    };
    const Field positive[] = {{"batch", &porta_conv2d_desc_t::batch},
                              {"in_channels", &porta_conv2d_desc_t::in_channels},
                              {"in_height", &porta_conv2d_desc_t::in_height},
                              {"in_width", &porta_conv2d_desc_t::in_width},
                              {"out_channels", &porta_conv2d_desc_t::out_channels},
                              {"kernel_height", &porta_conv2d_desc_t::kernel_height},
                              {"kernel_width", &porta_conv2d_desc_t::kernel_width},
                              {"stride_h", &porta_conv2d_desc_t::stride_h},
                              {"stride_w", &porta_conv2d_desc_t::stride_w},
                              {"dilation_h", &porta_conv2d_desc_t::dilation_h},
                              {"dilation_w", &porta_conv2d_desc_t::dilation_w}};
    for (const Field& field : positive) {
      for (int64_t value : {int64_t{0}, int64_t{-2}}) {
        const porta_conv2d_desc_t d = with([&](auto& e) { e.*field.member = value; });
        const std::string name = field.name;
        PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward " + name, forward(&d));
        PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data " + name,
                         backward_data(&d));
        PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights " + name,
                         backward_weights(&d));
      }
    }
    const porta_conv2d_desc_t pad_h = with([](auto& d) { d.pad_h = -1; });
    const porta_conv2d_desc_t pad_w = with([](auto& d) { d.pad_w = -1; });
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward pad_h", forward(&pad_h));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data pad_w",
                     backward_data(&pad_w));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights pad_h",
                     backward_weights(&pad_h));
  }
  SECTION("a kernel that does not fit the padded input; a size that overflows") {
    const porta_conv2d_desc_t big = with([](auto& d) { d.kernel_height = 9; });
    const porta_conv2d_desc_t dilated = with([](auto& d) { d.dilation_w = 4; });  // 9 wide
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward kernel", forward(&big));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data kernel",
                     backward_data(&dilated));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights kernel",
                     backward_weights(&big));
    const porta_conv2d_desc_t huge = with([](auto& d) {
      d.batch = int64_t{1} << 40;
      d.in_channels = int64_t{1} << 40;
    });
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward x overflows", forward(&huge));
  }
  SECTION("parameters whose shape formulas overflow") {
    constexpr int64_t k2to62 = int64_t{1} << 62;
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    // dilation (kernel - 1) + 1 overflows (it divided by zero in a plugin before).
    const porta_conv2d_desc_t dilated = with([&](auto& d) { d.dilation_h = d.stride_h = k2to62; });
    // in + 2 pad overflows (the output came out empty before).
    const porta_conv2d_desc_t padded = with([&](auto& d) { d.pad_w = kMax; });
    const porta_conv2d_desc_t padded_h = with([&](auto& d) { d.pad_h = kMax / 2; });
    const porta_conv2d_desc_t wide = with([&](auto& d) { d.dilation_w = kMax; });
    const struct {
      const porta_conv2d_desc_t* d;
      const char* names;
    } cases[] = {{&dilated, "dilation_h kernel_height overflows"},
                 {&padded, "in_width pad_w overflows"},
                 {&padded_h, "in_height pad_h overflows"},
                 {&wide, "dilation_w kernel_width overflows"}};
    for (const auto& c : cases) {
      const std::string names = c.names;
      PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward " + names, forward(c.d));
      PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data " + names,
                       backward_data(c.d));
      PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights " + names,
                       backward_weights(c.d));
      int64_t p = -7, q = -7;
      PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_output_size " + names,
                       porta_conv2d_output_size(c.d, &p, &q));
      CHECK(p == -7);
      CHECK(q == -7);
    }
    // Large values whose formulas do not overflow are shapes like any other: a 1x1 kernel
    // 2^62 apart, sliding 2^62 at a time, over 6 + 2 rows gives 1 row.
    const porta_conv2d_desc_t far = with([&](auto& d) {
      d.kernel_height = d.kernel_width = 1;
      d.dilation_h = d.stride_h = d.dilation_w = d.stride_w = k2to62;
    });
    int64_t p = 0, q = 0;
    PT_CHECK_OK(porta_conv2d_output_size(&far, &p, &q));
    CHECK(p == 1);
    CHECK(q == 1);
  }
  SECTION("buffers: NULL, one element too small, host memory, overlapping") {
    const auto& d = valid;
    const auto s = env.stream();
    // forward: x, w -> y
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward x",
                     porta_conv2d_forward(s, &d, nullptr, w->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward w",
                     porta_conv2d_forward(s, &d, x->get(), nullptr, y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward y",
                     porta_conv2d_forward(s, &d, x->get(), w->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small("porta_conv2d_forward", "x", xs, 4),
                     porta_conv2d_forward(s, &d, small_x->get(), w->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small("porta_conv2d_forward", "w", ws, 4),
                     porta_conv2d_forward(s, &d, x->get(), small_w->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small("porta_conv2d_forward", "y", ys, 4),
                     porta_conv2d_forward(s, &d, x->get(), w->get(), small_y->get()));
    std::vector<float> host(ys, 1.0f);
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward y",
                     porta_conv2d_forward(s, &d, x->get(), w->get(), host.data()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward x",
                     porta_conv2d_forward(s, &d, host.data(), w->get(), y->get()));
    CHECK(host == std::vector<float>(ys, 1.0f));
    // y == x: the x buffer is large enough for y too? No: give y the dy buffer, and x = dy.
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_forward y x",
                     porta_conv2d_forward(s, &d, dy->get(), w->get(), dy->get()));

    // backward-data: dy, w -> dx
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data dy",
                     porta_conv2d_backward_data(s, &d, nullptr, w->get(), dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data w",
                     porta_conv2d_backward_data(s, &d, dy->get(), nullptr, dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data dx",
                     porta_conv2d_backward_data(s, &d, dy->get(), w->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small("porta_conv2d_backward_data", "dy", ys, 4),
                     porta_conv2d_backward_data(s, &d, small_y->get(), w->get(), dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small("porta_conv2d_backward_data", "dx", xs, 4),
                     porta_conv2d_backward_data(s, &d, dy->get(), w->get(), small_x->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_data dx dy",
                     porta_conv2d_backward_data(s, &d, dy->get(), w->get(), dy->get()));

    // backward-weights: x, dy -> dw
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights x",
                     porta_conv2d_backward_weights(s, &d, nullptr, dy->get(), dw->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights dy",
                     porta_conv2d_backward_weights(s, &d, x->get(), nullptr, dw->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights dw",
                     porta_conv2d_backward_weights(s, &d, x->get(), dy->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small("porta_conv2d_backward_weights", "dw", ws, 4),
                     porta_conv2d_backward_weights(s, &d, x->get(), dy->get(), small_w->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights dw x",
                     porta_conv2d_backward_weights(s, &d, x->get(), dy->get(), x->get()));
    porta_test::Buffer pinned(env.device(), ws * sizeof(float), porta_test::Buffer::kPinned);
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_backward_weights dw",
                     porta_conv2d_backward_weights(s, &d, x->get(), dy->get(), pinned.as<float>()));
  }
  SECTION("the stream") {
    const porta_stream_t stale = stale_stream(env);
    PT_CHECK_REJECTS(untouched, PORTA_ERROR_INVALID_HANDLE, "porta_conv2d_forward stream",
                     porta_conv2d_forward(stale, &valid, x->get(), w->get(), y->get()));
  }
  SECTION("output size") {
    int64_t p = -7, q = -7;
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_output_size descriptor",
                     porta_conv2d_output_size(nullptr, &p, &q));
    const porta_conv2d_desc_t bad = with([](auto& d) { d.stride_h = 0; });
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_output_size stride_h",
                     porta_conv2d_output_size(&bad, &p, &q));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_output_size out_height",
                     porta_conv2d_output_size(&valid, nullptr, &q));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_conv2d_output_size out_width",
                     porta_conv2d_output_size(&valid, &p, nullptr));
    CHECK(p == -7);
    CHECK(q == -7);
  }
}

TEST_CASE("errors: softmax forward and backward", "[errors][softmax]") {
  Env env;
  Rng rng(seed_for(0));
  const int64_t rows = 3, cols = 5, count = rows * cols;
  auto x = filled(env, rng, count), dy = filled(env, rng, count);
  auto y = output(env, count), dx = output(env, count);
  auto small = filled(env, rng, count - 1), small_out = output(env, count - 1);
  auto shared = filled(env, rng, count + 1);  // x and y one element apart
  const Untouched untouched(env, {{"x", x.get()},
                                  {"dy", dy.get()},
                                  {"y", y.get()},
                                  {"dx", dx.get()},
                                  {"small out", small_out.get()},
                                  {"shared", shared.get()}});
  const auto s = env.stream();
  const auto fwd = "porta_softmax_forward", bwd = "porta_softmax_backward";
  const std::string f = fwd, b = bwd;

  SECTION("mode and sizes") {
    for (int mode : {2, -1}) {  // from C: see bad_enums.c
      PT_CHECK_REJECTS(
          untouched, kInvalid, f + " mode",
          porta_test_softmax_bad_mode(0, s, mode, rows, cols, x->get(), nullptr, y->get()));
      PT_CHECK_REJECTS(
          untouched, kInvalid, b + " mode",
          porta_test_softmax_bad_mode(1, s, mode, rows, cols, x->get(), dy->get(), dx->get()));
    }
    PT_CHECK_REJECTS(untouched, kInvalid, f + " rows",
                     porta_softmax_forward(s, PORTA_SOFTMAX, 0, cols, x->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " cols",
                     porta_softmax_forward(s, PORTA_LOG_SOFTMAX, rows, -3, x->get(), y->get()));
    PT_CHECK_REJECTS(
        untouched, kInvalid, b + " rows",
        porta_softmax_backward(s, PORTA_SOFTMAX, -1, cols, x->get(), dy->get(), dx->get()));
    PT_CHECK_REJECTS(
        untouched, kInvalid, b + " cols",
        porta_softmax_backward(s, PORTA_SOFTMAX, rows, 0, x->get(), dy->get(), dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " overflows",
                     porta_softmax_forward(s, PORTA_SOFTMAX, int64_t{1} << 40, int64_t{1} << 40,
                                           x->get(), y->get()));
  }
  SECTION("buffers") {
    const auto m = PORTA_SOFTMAX;
    PT_CHECK_REJECTS(untouched, kInvalid, f + " x",
                     porta_softmax_forward(s, m, rows, cols, nullptr, y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " y",
                     porta_softmax_forward(s, m, rows, cols, x->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "x", count, 4),
                     porta_softmax_forward(s, m, rows, cols, small->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "y", count, 4),
                     porta_softmax_forward(s, m, rows, cols, x->get(), small_out->get()));
    std::vector<float> host(count, 1.0f);
    PT_CHECK_REJECTS(untouched, kInvalid, f + " x",
                     porta_softmax_forward(s, m, rows, cols, host.data(), y->get()));
    // In place is allowed only as exactly the same buffer.
    PT_CHECK_REJECTS(untouched, kInvalid, f + " y x",
                     porta_softmax_forward(s, m, rows, cols, shared->get(), shared->get() + 1));

    PT_CHECK_REJECTS(untouched, kInvalid, b + " y",
                     porta_softmax_backward(s, m, rows, cols, nullptr, dy->get(), dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dy",
                     porta_softmax_backward(s, m, rows, cols, x->get(), nullptr, dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dx",
                     porta_softmax_backward(s, m, rows, cols, x->get(), dy->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "y", count, 4),
                     porta_softmax_backward(s, m, rows, cols, small->get(), dy->get(), dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "dy", count, 4),
                     porta_softmax_backward(s, m, rows, cols, x->get(), small->get(), dx->get()));
    PT_CHECK_REJECTS(
        untouched, kInvalid, too_small(b, "dx", count, 4),
        porta_softmax_backward(s, m, rows, cols, x->get(), dy->get(), small_out->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dx",
                     porta_softmax_backward(s, m, rows, cols, x->get(), dy->get(), host.data()));
    // dx may be dy, but not y, and not partly dy.
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dx y",
                     porta_softmax_backward(s, m, rows, cols, x->get(), dy->get(), x->get()));
    PT_CHECK_REJECTS(
        untouched, kInvalid, b + " dx dy",
        porta_softmax_backward(s, m, rows, cols, x->get(), shared->get(), shared->get() + 1));
  }
  SECTION("the stream") {
    const porta_stream_t stale = stale_stream(env);
    PT_CHECK_REJECTS(untouched, PORTA_ERROR_INVALID_HANDLE, f + " stream",
                     porta_softmax_forward(stale, PORTA_SOFTMAX, rows, cols, x->get(), y->get()));
  }
}

TEST_CASE("errors: cross-entropy", "[errors][cross_entropy]") {
  Env env;
  Rng rng(seed_for(0));
  const int64_t rows = 4, cols = 6, count = rows * cols;
  auto logits = filled(env, rng, count);
  auto loss = output(env, 1), dlogits = output(env, count), small_out = output(env, count - 1);
  auto small = filled(env, rng, count - 1);
  auto shared = output(env, count + 2);  // loss or labels inside dlogits / logits
  Labels labels(env, rows, 0, 0), small_labels(env, rows - 1, 0, 0);
  labels.upload({0, 5, 2, 3});
  small_labels.upload({0, 5, 2});
  const Untouched untouched(env, {{"logits", logits.get()},
                                  {"loss", loss.get()},
                                  {"dlogits", dlogits.get()},
                                  {"small out", small_out.get()},
                                  {"shared", shared.get()}});
  const auto s = env.stream();
  const std::string f = "porta_cross_entropy";
  const auto ce = [&](const float* x, const int32_t* l, float* out, float* d) {
    return porta_cross_entropy(s, rows, cols, x, l, out, d);
  };

  SECTION("sizes") {
    PT_CHECK_REJECTS(
        untouched, kInvalid, f + " rows",
        porta_cross_entropy(s, 0, cols, logits->get(), labels.get(), loss->get(), dlogits->get()));
    PT_CHECK_REJECTS(
        untouched, kInvalid, f + " cols",
        porta_cross_entropy(s, rows, -1, logits->get(), labels.get(), loss->get(), dlogits->get()));
  }
  SECTION("buffers") {
    PT_CHECK_REJECTS(untouched, kInvalid, f + " logits",
                     ce(nullptr, labels.get(), loss->get(), dlogits->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " logits",
                     ce(nullptr, labels.get(), loss->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " labels",
                     ce(logits->get(), nullptr, loss->get(), dlogits->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " loss",
                     ce(logits->get(), labels.get(), nullptr, dlogits->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "logits", count, 4),
                     ce(small->get(), labels.get(), loss->get(), dlogits->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "labels", rows, 4),
                     ce(logits->get(), small_labels.get(), loss->get(), dlogits->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "dlogits", count, 4),
                     ce(logits->get(), labels.get(), loss->get(), small_out->get()));
    std::vector<int32_t> host_labels{0, 1, 2, 3};
    PT_CHECK_REJECTS(untouched, kInvalid, f + " labels",
                     ce(logits->get(), host_labels.data(), loss->get(), dlogits->get()));
    float host_loss = 42.0f;
    PT_CHECK_REJECTS(untouched, kInvalid, f + " loss",
                     ce(logits->get(), labels.get(), &host_loss, dlogits->get()));
    CHECK(host_loss == 42.0f);
  }
  SECTION("overlaps: no output may share memory with an input or with the other output") {
    PT_CHECK_REJECTS(untouched, kInvalid, f + " dlogits logits",
                     ce(logits->get(), labels.get(), loss->get(), logits->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " loss logits",
                     ce(logits->get(), labels.get(), logits->get() + 3, dlogits->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " loss dlogits",
                     ce(logits->get(), labels.get(), shared->get() + 5, shared->get()));
    float* labels_as_floats = reinterpret_cast<float*>(labels.get());
    PT_CHECK_REJECTS(untouched, kInvalid, f + " loss labels",
                     ce(logits->get(), labels.get(), labels_as_floats + 1, dlogits->get()));
  }
  SECTION("the stream") {
    const porta_stream_t stale = stale_stream(env);
    PT_CHECK_REJECTS(untouched, PORTA_ERROR_INVALID_HANDLE, f + " stream",
                     porta_cross_entropy(stale, rows, cols, logits->get(), labels.get(),
                                         loss->get(), dlogits->get()));
  }
}

TEST_CASE("errors: bias add and bias backward", "[errors][bias]") {
  Env env;
  Rng rng(seed_for(0));
  const int64_t batch = 2, channels = 3, spatial = 4, count = batch * channels * spatial;
  auto x = filled(env, rng, count), bias = filled(env, rng, channels);
  auto y = output(env, count), dbias = output(env, channels);
  auto small = filled(env, rng, count - 1), small_bias = filled(env, rng, channels - 1);
  auto small_out = output(env, count - 1), shared = filled(env, rng, count + 1);
  const Untouched untouched(env, {{"x", x.get()},
                                  {"bias", bias.get()},
                                  {"y", y.get()},
                                  {"dbias", dbias.get()},
                                  {"small out", small_out.get()},
                                  {"shared", shared.get()}});
  const auto s = env.stream();
  const std::string f = "porta_bias_add", b = "porta_bias_backward";

  SECTION("sizes") {
    const int64_t bad[][3] = {{0, channels, spatial}, {batch, -1, spatial}, {batch, channels, 0}};
    const char* names[] = {"batch", "channels", "spatial"};
    for (int i = 0; i < 3; ++i) {
      PT_CHECK_REJECTS(
          untouched, kInvalid, f + " " + names[i],
          porta_bias_add(s, bad[i][0], bad[i][1], bad[i][2], x->get(), bias->get(), y->get()));
      PT_CHECK_REJECTS(
          untouched, kInvalid, b + " " + names[i],
          porta_bias_backward(s, bad[i][0], bad[i][1], bad[i][2], x->get(), dbias->get()));
    }
  }
  SECTION("buffers") {
    const auto add = [&](const float* px, const float* pb, float* py) {
      return porta_bias_add(s, batch, channels, spatial, px, pb, py);
    };
    const auto backward = [&](const float* pdy, float* pdb) {
      return porta_bias_backward(s, batch, channels, spatial, pdy, pdb);
    };
    PT_CHECK_REJECTS(untouched, kInvalid, f + " x", add(nullptr, bias->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " bias", add(x->get(), nullptr, y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " y", add(x->get(), bias->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "x", count, 4),
                     add(small->get(), bias->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "bias", channels, 4),
                     add(x->get(), small_bias->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "y", count, 4),
                     add(x->get(), bias->get(), small_out->get()));
    std::vector<float> host(count, 1.0f);
    PT_CHECK_REJECTS(untouched, kInvalid, f + " bias", add(x->get(), host.data(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " y bias", add(x->get(), bias->get(), bias->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " y x",
                     add(shared->get(), bias->get(), shared->get() + 1));

    PT_CHECK_REJECTS(untouched, kInvalid, b + " dy", backward(nullptr, dbias->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dbias", backward(x->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "dy", count, 4),
                     backward(small->get(), dbias->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "dbias", channels, 4),
                     backward(x->get(), small_bias->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dbias", backward(x->get(), host.data()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dbias dy",
                     backward(shared->get(), shared->get() + 1));
    CHECK(host == std::vector<float>(count, 1.0f));
  }
  SECTION("the stream") {
    const porta_stream_t stale = stale_stream(env);
    PT_CHECK_REJECTS(untouched, PORTA_ERROR_INVALID_HANDLE, b + " stream",
                     porta_bias_backward(stale, batch, channels, spatial, x->get(), dbias->get()));
  }
}

TEST_CASE("errors: relu forward and backward", "[errors][relu]") {
  Env env;
  Rng rng(seed_for(0));
  const int64_t count = 9;
  auto x = filled(env, rng, count), dy = filled(env, rng, count);
  auto y = output(env, count), dx = output(env, count), small = filled(env, rng, count - 1);
  auto small_out = output(env, count - 1), shared = filled(env, rng, count + 1);
  const Untouched untouched(env, {{"x", x.get()},
                                  {"dy", dy.get()},
                                  {"y", y.get()},
                                  {"dx", dx.get()},
                                  {"small out", small_out.get()},
                                  {"shared", shared.get()}});
  const auto s = env.stream();
  const std::string f = "porta_relu_forward", b = "porta_relu_backward";

  for (int64_t bad : {int64_t{0}, int64_t{-9}}) {
    PT_CHECK_REJECTS(untouched, kInvalid, f + " count",
                     porta_relu_forward(s, bad, x->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " count",
                     porta_relu_backward(s, bad, x->get(), dy->get(), dx->get()));
  }
  PT_CHECK_REJECTS(untouched, kInvalid, f + " x", porta_relu_forward(s, count, nullptr, y->get()));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " y", porta_relu_forward(s, count, x->get(), nullptr));
  PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "x", count, 4),
                   porta_relu_forward(s, count, small->get(), y->get()));
  PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "y", count, 4),
                   porta_relu_forward(s, count, x->get(), small_out->get()));
  std::vector<float> host(count, -1.0f);
  PT_CHECK_REJECTS(untouched, kInvalid, f + " y",
                   porta_relu_forward(s, count, x->get(), host.data()));
  CHECK(host == std::vector<float>(count, -1.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " y x",
                   porta_relu_forward(s, count, shared->get() + 1, shared->get()));

  PT_CHECK_REJECTS(untouched, kInvalid, b + " x",
                   porta_relu_backward(s, count, nullptr, dy->get(), dx->get()));
  PT_CHECK_REJECTS(untouched, kInvalid, b + " dy",
                   porta_relu_backward(s, count, x->get(), nullptr, dx->get()));
  PT_CHECK_REJECTS(untouched, kInvalid, b + " dx",
                   porta_relu_backward(s, count, x->get(), dy->get(), nullptr));
  PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "x", count, 4),
                   porta_relu_backward(s, count, small->get(), dy->get(), dx->get()));
  PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "dy", count, 4),
                   porta_relu_backward(s, count, x->get(), small->get(), dx->get()));
  PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "dx", count, 4),
                   porta_relu_backward(s, count, x->get(), dy->get(), small_out->get()));
  // dx may be dy, but not x.
  PT_CHECK_REJECTS(untouched, kInvalid, b + " dx x",
                   porta_relu_backward(s, count, x->get(), dy->get(), x->get()));
  PT_CHECK_REJECTS(untouched, kInvalid, b + " dx dy",
                   porta_relu_backward(s, count, x->get(), shared->get(), shared->get() + 1));
  const porta_stream_t stale = stale_stream(env);
  PT_CHECK_REJECTS(untouched, PORTA_ERROR_INVALID_HANDLE, f + " stream",
                   porta_relu_forward(stale, count, x->get(), y->get()));
}

TEST_CASE("errors: max-pool forward, backward and output size", "[errors][pool]") {
  Env env;
  Rng rng(seed_for(0));
  porta_pool2d_desc_t valid{};
  valid.struct_size = sizeof valid;
  valid.batch = 2, valid.channels = 3, valid.in_height = 6, valid.in_width = 5;
  valid.window_h = 2, valid.window_w = 2, valid.stride_h = 2, valid.stride_w = 2;
  valid.pad_h = 0, valid.pad_w = 1;
  const int64_t xs = 2 * 3 * 6 * 5, ys = 2 * 3 * 3 * 3;
  auto x = filled(env, rng, xs), dy = filled(env, rng, ys);
  auto y = output(env, ys), dx = output(env, xs);
  auto small_x = filled(env, rng, xs - 1), small_y = filled(env, rng, ys - 1);
  auto small_dx = output(env, xs - 1);
  const Untouched untouched(env, {{"x", x.get()},
                                  {"dy", dy.get()},
                                  {"y", y.get()},
                                  {"dx", dx.get()},
                                  {"small dx", small_dx.get()}});
  const auto s = env.stream();
  const std::string f = "porta_max_pool2d_forward", b = "porta_max_pool2d_backward";
  const auto with = [&](auto change) {
    porta_pool2d_desc_t d = valid;
    change(d);
    return d;
  };
  const auto forward = [&](const porta_pool2d_desc_t* d) {
    return porta_max_pool2d_forward(s, d, x->get(), y->get());
  };
  const auto backward = [&](const porta_pool2d_desc_t* d) {
    return porta_max_pool2d_backward(s, d, x->get(), dy->get(), dx->get());
  };

  SECTION("descriptors") {
    const porta_pool2d_desc_t short_desc = with([](auto& d) { d.struct_size = 8; });
    PT_CHECK_REJECTS(untouched, kInvalid, f + " descriptor", forward(nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " descriptor", forward(&short_desc));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " descriptor", backward(nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " descriptor", backward(&short_desc));
    struct Field {
      const char* name;
      int64_t porta_pool2d_desc_t::*member;
    };
    const Field positive[] = {{"batch", &porta_pool2d_desc_t::batch},
                              {"channels", &porta_pool2d_desc_t::channels},
                              {"in_height", &porta_pool2d_desc_t::in_height},
                              {"in_width", &porta_pool2d_desc_t::in_width},
                              {"window_h", &porta_pool2d_desc_t::window_h},
                              {"window_w", &porta_pool2d_desc_t::window_w},
                              {"stride_h", &porta_pool2d_desc_t::stride_h},
                              {"stride_w", &porta_pool2d_desc_t::stride_w}};
    for (const Field& field : positive) {
      for (int64_t value : {int64_t{0}, int64_t{-1}}) {
        const porta_pool2d_desc_t d = with([&](auto& e) { e.*field.member = value; });
        PT_CHECK_REJECTS(untouched, kInvalid, f + " " + field.name, forward(&d));
        PT_CHECK_REJECTS(untouched, kInvalid, b + " " + field.name, backward(&d));
      }
    }
    const porta_pool2d_desc_t negative_pad = with([](auto& d) { d.pad_h = -1; });
    const porta_pool2d_desc_t pad_as_window = with([](auto& d) { d.pad_w = 2; });
    const porta_pool2d_desc_t too_big = with([](auto& d) {
      d.window_h = 7;
      d.pad_h = 0;
    });
    PT_CHECK_REJECTS(untouched, kInvalid, f + " pad_h", forward(&negative_pad));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " padding", backward(&pad_as_window));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " window", forward(&too_big));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " window", backward(&too_big));
  }
  SECTION("parameters whose shape formulas overflow") {
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    const porta_pool2d_desc_t padded = with([&](auto& d) {
      d.pad_w = kMax - 1;
      d.window_w = kMax;
    });
    const porta_pool2d_desc_t tall = with([&](auto& d) {
      d.in_height = kMax;
      d.pad_h = 1;
    });
    PT_CHECK_REJECTS(untouched, kInvalid, f + " in_width pad_w overflows", forward(&padded));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " in_height pad_h overflows", backward(&tall));
    int64_t p = -7, q = -7;
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_pool2d_output_size in_width pad_w overflows",
                     porta_pool2d_output_size(&padded, &p, &q));
    PT_CHECK_REJECTS(untouched, kInvalid, "porta_pool2d_output_size in_height pad_h overflows",
                     porta_pool2d_output_size(&tall, &p, &q));
    CHECK(p == -7);
    CHECK(q == -7);
  }
  SECTION("buffers") {
    const auto& d = valid;
    PT_CHECK_REJECTS(untouched, kInvalid, f + " x",
                     porta_max_pool2d_forward(s, &d, nullptr, y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " y",
                     porta_max_pool2d_forward(s, &d, x->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "x", xs, 4),
                     porta_max_pool2d_forward(s, &d, small_x->get(), y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "y", ys, 4),
                     porta_max_pool2d_forward(s, &d, x->get(), small_y->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " y x",
                     porta_max_pool2d_forward(s, &d, x->get(), x->get()));
    std::vector<float> host(xs, 1.0f);
    PT_CHECK_REJECTS(untouched, kInvalid, f + " x",
                     porta_max_pool2d_forward(s, &d, host.data(), y->get()));

    PT_CHECK_REJECTS(untouched, kInvalid, b + " x",
                     porta_max_pool2d_backward(s, &d, nullptr, dy->get(), dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dy",
                     porta_max_pool2d_backward(s, &d, x->get(), nullptr, dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dx",
                     porta_max_pool2d_backward(s, &d, x->get(), dy->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "x", xs, 4),
                     porta_max_pool2d_backward(s, &d, small_x->get(), dy->get(), dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "dy", ys, 4),
                     porta_max_pool2d_backward(s, &d, x->get(), small_y->get(), dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(b, "dx", xs, 4),
                     porta_max_pool2d_backward(s, &d, x->get(), dy->get(), small_dx->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dx x",
                     porta_max_pool2d_backward(s, &d, x->get(), dy->get(), x->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, b + " dx",
                     porta_max_pool2d_backward(s, &d, x->get(), dy->get(), host.data()));
    CHECK(host == std::vector<float>(xs, 1.0f));
  }
  SECTION("the stream") {
    const porta_stream_t stale = stale_stream(env);
    PT_CHECK_REJECTS(untouched, PORTA_ERROR_INVALID_HANDLE, b + " stream",
                     porta_max_pool2d_backward(stale, &valid, x->get(), dy->get(), dx->get()));
  }
  SECTION("output size") {
    int64_t p = -7, q = -7;
    const std::string o = "porta_pool2d_output_size";
    PT_CHECK_REJECTS(untouched, kInvalid, o + " descriptor",
                     porta_pool2d_output_size(nullptr, &p, &q));
    const porta_pool2d_desc_t bad = with([](auto& d) { d.window_w = 0; });
    PT_CHECK_REJECTS(untouched, kInvalid, o + " window_w", porta_pool2d_output_size(&bad, &p, &q));
    PT_CHECK_REJECTS(untouched, kInvalid, o + " out_height",
                     porta_pool2d_output_size(&valid, nullptr, &q));
    CHECK(p == -7);
    CHECK(q == -7);
  }
}

TEST_CASE("errors: sgd update", "[errors][optimizer]") {
  Env env;
  Rng rng(seed_for(0));
  const int64_t count = 10;
  auto w = filled(env, rng, count), g = filled(env, rng, count), vel = filled(env, rng, count);
  auto small = filled(env, rng, count - 1), shared = filled(env, rng, count + 1);
  const Untouched untouched(env, {{"weights", w.get()},
                                  {"grads", g.get()},
                                  {"velocity", vel.get()},
                                  {"small", small.get()},
                                  {"shared", shared.get()}});
  const auto s = env.stream();
  const std::string f = "porta_sgd_update";
  const auto sgd = [&](float* pw, const float* pg, float* pv, float lr, float momentum,
                       float decay) {
    return porta_sgd_update(s, count, pw, pg, pv, lr, momentum, decay);
  };

  PT_CHECK_REJECTS(untouched, kInvalid, f + " count",
                   porta_sgd_update(s, 0, w->get(), g->get(), vel->get(), 0.1f, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " count",
                   porta_sgd_update(s, -1, w->get(), g->get(), vel->get(), 0.1f, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " learning_rate",
                   sgd(w->get(), g->get(), vel->get(), kNaN, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " momentum",
                   sgd(w->get(), g->get(), vel->get(), 0.1f, kInf, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " weight_decay",
                   sgd(w->get(), g->get(), vel->get(), 0.1f, 0.9f, -kInf));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " weights",
                   sgd(nullptr, g->get(), vel->get(), 0.1f, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " grads",
                   sgd(w->get(), nullptr, vel->get(), 0.1f, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " velocity",
                   sgd(w->get(), g->get(), nullptr, 0.1f, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "weights", count, 4),
                   sgd(small->get(), g->get(), vel->get(), 0.1f, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "grads", count, 4),
                   sgd(w->get(), small->get(), vel->get(), 0.1f, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "velocity", count, 4),
                   sgd(w->get(), g->get(), small->get(), 0.1f, 0.9f, 0.0f));
  std::vector<float> host(count, 1.0f);
  PT_CHECK_REJECTS(untouched, kInvalid, f + " weights",
                   sgd(host.data(), g->get(), vel->get(), 0.1f, 0.9f, 0.0f));
  CHECK(host == std::vector<float>(count, 1.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " weights grads",
                   sgd(w->get(), w->get(), vel->get(), 0.1f, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " velocity grads",
                   sgd(w->get(), vel->get(), vel->get(), 0.1f, 0.9f, 0.0f));
  PT_CHECK_REJECTS(untouched, kInvalid, f + " weights velocity",
                   sgd(shared->get(), g->get(), shared->get() + 1, 0.1f, 0.9f, 0.0f));
  const porta_stream_t stale = stale_stream(env);
  PT_CHECK_REJECTS(
      untouched, PORTA_ERROR_INVALID_HANDLE, f + " stream",
      porta_sgd_update(stale, count, w->get(), g->get(), vel->get(), 0.1f, 0.9f, 0.0f));
}

TEST_CASE("errors: adam update", "[errors][optimizer]") {
  Env env;
  Rng rng(seed_for(0));
  const int64_t count = 10;
  auto w = filled(env, rng, count), g = filled(env, rng, count), m = filled(env, rng, count);
  auto v = std::make_unique<Floats>(env, count, 0, 0);
  {
    std::vector<float> second = normal(rng, count);
    for (float& x : second) x *= x;
    v->upload(second);
  }
  auto small = filled(env, rng, count - 1), shared = filled(env, rng, count + 1);
  const Untouched untouched(env, {{"weights", w.get()},
                                  {"grads", g.get()},
                                  {"m", m.get()},
                                  {"v", v.get()},
                                  {"small", small.get()},
                                  {"shared", shared.get()}});
  const auto s = env.stream();
  const std::string f = "porta_adam_update";
  porta_adam_params_t valid{};
  valid.struct_size = sizeof valid;
  valid.learning_rate = 1e-3f, valid.beta1 = 0.9f, valid.beta2 = 0.999f, valid.epsilon = 1e-8f;
  valid.weight_decay = 0.0f, valid.step = 1;
  const auto with = [&](auto change) {
    porta_adam_params_t p = valid;
    change(p);
    return p;
  };
  const auto adam = [&](const porta_adam_params_t& p) {
    return porta_adam_update(s, count, w->get(), g->get(), m->get(), v->get(), &p);
  };
  const auto buffers = [&](float* pw, const float* pg, float* pm, float* pv) {
    return porta_adam_update(s, count, pw, pg, pm, pv, &valid);
  };

  SECTION("count and parameters") {
    PT_CHECK_REJECTS(untouched, kInvalid, f + " count",
                     porta_adam_update(s, 0, w->get(), g->get(), m->get(), v->get(), &valid));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " descriptor",
                     porta_adam_update(s, count, w->get(), g->get(), m->get(), v->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " descriptor",
                     adam(with([](auto& p) { p.struct_size = sizeof p - 8; })));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " learning_rate",
                     adam(with([](auto& p) { p.learning_rate = kNaN; })));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " weight_decay",
                     adam(with([](auto& p) { p.weight_decay = kInf; })));
    for (float beta : {1.0f, -0.1f, 1.5f, kNaN, kInf}) {
      PT_CHECK_REJECTS(untouched, kInvalid, f + " beta1",
                       adam(with([&](auto& p) { p.beta1 = beta; })));
      PT_CHECK_REJECTS(untouched, kInvalid, f + " beta2",
                       adam(with([&](auto& p) { p.beta2 = beta; })));
    }
    for (float epsilon : {0.0f, -1e-8f, kNaN, kInf}) {
      PT_CHECK_REJECTS(untouched, kInvalid, f + " epsilon",
                       adam(with([&](auto& p) { p.epsilon = epsilon; })));
    }
    for (int64_t step : {int64_t{0}, int64_t{-3}}) {
      PT_CHECK_REJECTS(untouched, kInvalid, f + " step",
                       adam(with([&](auto& p) { p.step = step; })));
    }
  }
  SECTION("buffers") {
    PT_CHECK_REJECTS(untouched, kInvalid, f + " weights",
                     buffers(nullptr, g->get(), m->get(), v->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " grads",
                     buffers(w->get(), nullptr, m->get(), v->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " m", buffers(w->get(), g->get(), nullptr, v->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " v", buffers(w->get(), g->get(), m->get(), nullptr));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "weights", count, 4),
                     buffers(small->get(), g->get(), m->get(), v->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "grads", count, 4),
                     buffers(w->get(), small->get(), m->get(), v->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "m", count, 4),
                     buffers(w->get(), g->get(), small->get(), v->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, too_small(f, "v", count, 4),
                     buffers(w->get(), g->get(), m->get(), small->get()));
    std::vector<float> host(count, 1.0f);
    PT_CHECK_REJECTS(untouched, kInvalid, f + " v",
                     buffers(w->get(), g->get(), m->get(), host.data()));
    CHECK(host == std::vector<float>(count, 1.0f));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " weights m",
                     buffers(w->get(), g->get(), w->get(), v->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " weights v",
                     buffers(w->get(), g->get(), m->get(), w->get()));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " m v",
                     buffers(w->get(), g->get(), shared->get(), shared->get() + 1));
    PT_CHECK_REJECTS(untouched, kInvalid, f + " m grads",
                     buffers(w->get(), g->get(), g->get(), v->get()));
  }
  SECTION("the stream") {
    const porta_stream_t stale = stale_stream(env);
    PT_CHECK_REJECTS(
        untouched, PORTA_ERROR_INVALID_HANDLE, f + " stream",
        porta_adam_update(stale, count, w->get(), g->get(), m->get(), v->get(), &valid));
  }
}
