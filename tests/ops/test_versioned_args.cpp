// The structs of porta_ops.h with callers of three generations: one built against the first
// release (struct_size PORTA_<STRUCT>_MIN_SIZE and not a byte more: an allocation of exactly that
// size, so a read past it is caught by the sanitized build), one built against a later release
// (a field appended), and one whose struct_size is below the first release's (INVALID_ARGUMENT).
// The first two must compute what a current caller gets, bit for bit.
#include <memory>

#include "ops_test.h"

using namespace ops_test;

namespace {

template <typename T>
struct Newer {
  T known;
  uint64_t appended;
};

// run(const Desc*) queues the op, whose result read() returns after a sync.
template <typename Desc, typename Run, typename Read>
void check_versioned(const Env& env, const Desc& current, size_t min_size, Run&& run, Read&& read) {
  REQUIRE(min_size <= sizeof(Desc));
  PT_REQUIRE_OK(run(&current));
  env.sync();
  const std::vector<float> expected = read();

  SECTION("a caller of the first release") {
    std::unique_ptr<unsigned char[]> old(new unsigned char[min_size]);
    std::memcpy(old.get(), &current, min_size);
    std::memcpy(old.get(), &min_size, sizeof(min_size));
    PT_REQUIRE_OK(run(reinterpret_cast<const Desc*>(old.get())));
    env.sync();
    CHECK(read() == expected);
  }
  SECTION("a caller of a later release, with a field appended") {
    Newer<Desc> newer;
    std::memset(&newer, 0x7F, sizeof(newer));
    newer.known = current;
    newer.known.struct_size = sizeof(newer);
    PT_REQUIRE_OK(run(&newer.known));
    env.sync();
    CHECK(read() == expected);
  }
  SECTION("a struct_size below the first release's") {
    Desc small = current;
    small.struct_size = min_size - 1;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, run(&small));
  }
}

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = scale * static_cast<float>(i % 7) - 1.0f;
  return values;
}

}  // namespace

TEST_CASE("versioned args: porta_gemm_desc_t", "[versioned]") {
  Env env;
  Floats a(env, 16), b(env, 16), c(env, 16);
  a.upload(ramp(16, 0.5f));
  b.upload(ramp(16, 0.25f));
  porta_gemm_desc_t d;
  std::memset(&d, 0, sizeof(d));
  d.struct_size = sizeof(d);
  d.m = d.n = d.k = 4;
  d.lda = d.ldb = d.ldc = 4;
  d.alpha = 1.0f;
  d.batch_count = 1;
  d.dtype = PORTA_DTYPE_F32;
  check_versioned(
      env, d, PORTA_GEMM_DESC_MIN_SIZE,
      [&](const porta_gemm_desc_t* desc) {
        c.poison();
        return porta_gemm(env.stream(), desc, a.get(), b.get(), c.get());
      },
      [&] { return c.download(); });
}

TEST_CASE("versioned args: porta_conv2d_desc_t", "[versioned]") {
  Env env;
  Floats x(env, 2 * 16), w(env, 3 * 2 * 9), y(env, 3 * 16);
  x.upload(ramp(32, 0.5f));
  w.upload(ramp(54, 0.125f));
  porta_conv2d_desc_t d;
  std::memset(&d, 0, sizeof(d));
  d.struct_size = sizeof(d);
  d.batch = 1, d.in_channels = 2, d.in_height = d.in_width = 4;
  d.out_channels = 3, d.kernel_height = d.kernel_width = 3;
  d.pad_h = d.pad_w = 1;
  d.stride_h = d.stride_w = d.dilation_h = d.dilation_w = 1;
  d.dtype = PORTA_DTYPE_F32;
  check_versioned(
      env, d, PORTA_CONV2D_DESC_MIN_SIZE,
      [&](const porta_conv2d_desc_t* desc) {
        y.poison();
        return porta_conv2d_forward(env.stream(), desc, x.get(), w.get(), y.get());
      },
      [&] { return y.download(); });
}

TEST_CASE("versioned args: porta_pool2d_desc_t", "[versioned]") {
  Env env;
  Floats x(env, 2 * 16), y(env, 2 * 4);
  x.upload(ramp(32, 0.5f));
  porta_pool2d_desc_t d;
  std::memset(&d, 0, sizeof(d));
  d.struct_size = sizeof(d);
  d.batch = 1, d.channels = 2, d.in_height = d.in_width = 4;
  d.window_h = d.window_w = d.stride_h = d.stride_w = 2;
  check_versioned(
      env, d, PORTA_POOL2D_DESC_MIN_SIZE,
      [&](const porta_pool2d_desc_t* desc) {
        y.poison();
        return porta_max_pool2d_forward(env.stream(), desc, x.get(), y.get());
      },
      [&] { return y.download(); });
}

TEST_CASE("versioned args: porta_adam_params_t", "[versioned]") {
  Env env;
  Floats weights(env, 64), grads(env, 64), m(env, 64), v(env, 64);
  grads.upload(ramp(64, 0.25f));
  porta_adam_params_t p;
  std::memset(&p, 0, sizeof(p));
  p.struct_size = sizeof(p);
  p.learning_rate = 0.01f;
  p.beta1 = 0.9f;
  p.beta2 = 0.999f;
  p.epsilon = 1e-8f;
  p.step = 3;
  check_versioned(
      env, p, PORTA_ADAM_PARAMS_MIN_SIZE,
      [&](const porta_adam_params_t* params) {
        weights.upload(ramp(64, 1.0f));
        m.upload(ramp(64, 0.0625f));
        v.upload(std::vector<float>(64, 0.5f));
        return porta_adam_update(env.stream(), 64, weights.get(), grads.get(), m.get(), v.get(),
                                 params);
      },
      [&] { return weights.download(); });
}
