// Ops on several streams and host threads at once, and on streams that come and go. Some ops
// keep per-stream scratch memory between their kernels (the portable cross-entropy and max-pool
// backward do); these tests catch scratch shared between streams, or freed or reused while queued
// work still needs it. Such a mix-up gives values wrong by their own size, so the checks here use
// simple bounds: max-pool exact and GEMM at its own tolerance (test_gemm.cpp), cross-entropy at
// (cols + rows + 64) * 2^-23 of |value| plus a floor of |loss| + 1, or 1/rows for the gradient
// (looser than test_softmax.cpp's derivation, but 1000 times tighter than any mix-up).
#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <thread>

#include "ops_test.h"

using namespace ops_test;

namespace {

// One cross-entropy, one max-pool backward and one GEMM, with inputs uploaded and outputs
// poisoned, and their expected results.
struct Work {
  Work(const Env& env, uint64_t seed, int64_t rows, int64_t cols, int64_t side)
      : rows(rows),
        cols(cols),
        logits(env, rows * cols),
        dlogits(env, rows * cols),
        loss(env, 1),
        labels(env, rows),
        pool_x(env, 2 * side * side),
        pool_dy(env, 2 * (side / 2) * (side / 2)),
        pool_dx(env, 2 * side * side),
        a(env, rows * 9),
        b(env, 9 * cols),
        c(env, rows * cols) {
    Rng rng(seed);
    std::vector<float> x = normal(rng, rows * cols);
    std::vector<int32_t> l(rows);
    for (int32_t& label : l) label = static_cast<int32_t>(rng.integer(0, cols - 1));
    logits.upload(x);
    labels.upload(l);
    std::vector<double> d(rows * cols);
    loss_ref = ops_ref::cross_entropy(rows, cols, widen(x).data(), l.data(), d.data());
    dlogits_ref = d;

    pool.struct_size = sizeof pool;
    pool.batch = 2, pool.channels = 1, pool.in_height = side, pool.in_width = side;
    pool.window_h = pool.window_w = pool.stride_h = pool.stride_w = 2;
    const std::vector<float> px = normal(rng, pool_x.size()), pdy = normal(rng, pool_dy.size());
    pool_x.upload(px);
    pool_dy.upload(pdy);
    pool_ref.resize(px.size());
    ops_ref::max_pool2d_backward(pool, widen(px).data(), widen(pdy).data(), pool_ref.data());

    gemm.struct_size = sizeof gemm;
    gemm.m = rows, gemm.n = cols, gemm.k = 9, gemm.lda = 9, gemm.ldb = cols, gemm.ldc = cols;
    gemm.alpha = 1.0f, gemm.batch_count = 1, gemm.dtype = PORTA_DTYPE_F32;
    const std::vector<float> va = normal(rng, a.size()), vb = normal(rng, b.size());
    a.upload(va);
    b.upload(vb);
    gemm_ref.resize(c.size());
    gemm_scale.resize(c.size());
    ops_ref::gemm(gemm, widen(va).data(), widen(vb).data(), gemm_ref.data());
    ops_ref::gemm(gemm, abs_of(widen(va)).data(), abs_of(widen(vb)).data(), gemm_scale.data());
  }

  // Queues the three ops; no Catch assertion (this runs on other threads).
  porta_status_t queue(porta_stream_t stream) {
    porta_status_t status = porta_cross_entropy(stream, rows, cols, logits.get(), labels.get(),
                                                loss.get(), dlogits.get());
    if (status == PORTA_SUCCESS) {
      status = porta_max_pool2d_backward(stream, &pool, pool_x.get(), pool_dy.get(), pool_dx.get());
    }
    if (status == PORTA_SUCCESS) status = porta_gemm(stream, &gemm, a.get(), b.get(), c.get());
    return status;
  }

  // Checks the results (after the stream was synchronised), with the op files' tolerances.
  void check() const {
    const double lenient = double(cols + rows + 64) * kUlp;
    PT_CHECK_CLOSE(
        compare("loss", loss.download(), {loss_ref}, {std::fabs(loss_ref) + 1.0}, lenient));
    std::vector<double> grad_scale(dlogits_ref.size());
    for (size_t i = 0; i < grad_scale.size(); ++i) {
      grad_scale[i] = std::fabs(dlogits_ref[i]) + 1.0 / double(rows);
    }
    PT_CHECK_CLOSE(compare("dlogits", dlogits.download(), dlogits_ref, grad_scale, lenient));
    PT_CHECK_CLOSE(compare_exact("max-pool dx", pool_dx.download(), pool_ref));
    PT_CHECK_CLOSE(compare("gemm C", c.download(), gemm_ref, gemm_scale, 11 * kUlp));
  }

  int64_t rows, cols;
  Floats logits, dlogits, loss;
  Labels labels;
  Floats pool_x, pool_dy, pool_dx, a, b, c;
  porta_pool2d_desc_t pool{};
  porta_gemm_desc_t gemm{};
  double loss_ref;
  std::vector<double> dlogits_ref, pool_ref, gemm_ref, gemm_scale;
};

}  // namespace

TEST_CASE("streams: ops from several host threads on their own streams at once", "[streams]") {
  // Each thread alternates a small and a large problem 8 times without waiting in between, so
  // the per-stream scratch grows while earlier work is queued, and the threads contend for it.
  Env env;
  constexpr int kThreads = 4, kRounds = 8;
  std::vector<std::unique_ptr<porta_test::Stream>> streams;
  std::vector<std::unique_ptr<Work>> small, large;
  for (int t = 0; t < kThreads; ++t) {
    streams.push_back(std::make_unique<porta_test::Stream>(env.device()));
    small.push_back(std::make_unique<Work>(env, seed_for(2 * t), 5 + t, 7, 6));
    large.push_back(std::make_unique<Work>(env, seed_for(2 * t + 1), 3000 + 17 * t, 33, 64));
  }
  std::vector<porta_status_t> status(kThreads, PORTA_SUCCESS);
  std::vector<std::string> message(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds && status[t] == PORTA_SUCCESS; ++round) {
        status[t] = (round % 2 ? large : small)[t]->queue(streams[t]->get());
      }
      if (status[t] == PORTA_SUCCESS) status[t] = porta_stream_synchronize(streams[t]->get());
      if (status[t] != PORTA_SUCCESS) message[t] = porta_last_error_message();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t << ": " << message[t]);
    REQUIRE(porta_test::Status{status[t]} == porta_test::Status{PORTA_SUCCESS});
    small[t]->check();
    large[t]->check();
  }
}

TEST_CASE("streams: a stream created after another was destroyed gets correct results",
          "[streams]") {
  // Each round creates a stream, queues work larger than the last round's, and destroys the
  // stream (which waits for it); the next stream may inherit the dead one's scratch.
  Env env;
  for (int round = 0; round < 4; ++round) {
    INFO("round " << round);
    Work work(env, seed_for(round), 100 << (2 * round), 9, 8 << round);
    {
      porta_test::Stream stream(env.device());
      PT_REQUIRE_OK(work.queue(stream.get()));
    }
    env.sync();
    work.check();
  }
}

TEST_CASE("streams: a small op right after a large one on the same stream", "[streams]") {
  // The large op grows the scratch (freeing the old buffer once the device is idle); the small
  // one after it, and a small one before it, must both see their own data.
  Env env;
  Work before(env, seed_for(0), 7, 5, 4), big(env, seed_for(1), 5000, 17, 96),
      after(env, seed_for(2), 9, 3, 6);
  PT_REQUIRE_OK(before.queue(env.stream()));
  PT_REQUIRE_OK(big.queue(env.stream()));
  PT_REQUIRE_OK(after.queue(env.stream()));
  env.sync();
  before.check();
  big.check();
  after.check();
}

// Sanitizer builds (GCC names them; clang answers __has_feature).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PT_SANITIZED 1
#elif defined(__has_feature)  // clang
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PT_SANITIZED 1
#endif
#endif

// A host thread with a small stack that queues ops and synchronizes: a backend that runs the
// work on the waiting thread (the CPU's does) must not do so where the stack has no room for it.
// Sanitizer builds skip it: their own frames alone outgrow such a stack.
TEST_CASE("streams: a thread with a small stack queues ops and synchronizes", "[streams]") {
#if defined(PT_SANITIZED)
  WARN("skipped in a sanitizer build: its instrumented frames need more than 64 KiB of stack");
#else
  Env env;
  constexpr int64_t n = 256;  // a 256^3 GEMM's groups took more than 64 KiB of stack
  DeviceArray<float> a(env, n * n), b(env, n * n), c(env, n * n);
  a.upload(std::vector<float>(n * n, 1.0f));
  b.upload(std::vector<float>(n * n, 0.5f));
  porta_gemm_desc_t d{};
  d.struct_size = sizeof d;
  d.m = d.n = d.k = n, d.lda = d.ldb = d.ldc = n;
  d.alpha = 1.0f, d.batch_count = 1, d.dtype = PORTA_DTYPE_F32;
  struct Call {
    const Env* env;
    const porta_gemm_desc_t* desc;
    const float *a, *b;
    float* c;
    porta_status_t status = PORTA_SUCCESS;
    static void* run(void* data) {
      auto* call = static_cast<Call*>(data);
      // Again and again: the stream's worker may take a single call before the thread waits.
      for (int i = 0; i < 50 && call->status == PORTA_SUCCESS; ++i) {
        call->status = porta_gemm(call->env->stream(), call->desc, call->a, call->b, call->c);
        if (call->status == PORTA_SUCCESS) {
          call->status = porta_stream_synchronize(call->env->stream());
        }
      }
      return nullptr;
    }
  } call{&env, &d, a.get(), b.get(), c.get()};
  pthread_attr_t attr;
  REQUIRE(pthread_attr_init(&attr) == 0);
  REQUIRE(pthread_attr_setstacksize(&attr, size_t{64} << 10) == 0);
  pthread_t thread;
  REQUIRE(pthread_create(&thread, &attr, Call::run, &call) == 0);
  REQUIRE(pthread_join(thread, nullptr) == 0);
  pthread_attr_destroy(&attr);
  PT_REQUIRE_OK(call.status);
  const std::vector<float> result = c.download();
  CHECK(std::count(result.begin(), result.end(), 0.5f * n) == n * n);  // exact in fp32
#endif
}
