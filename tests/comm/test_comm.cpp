// porta-comm-tests: the collectives of porta_comm.h on CPU devices through the MPI engine, run
// by CTest under `mpirun -np 2` (every rank runs every test; a test fails if any check on any
// rank fails, since mpirun then exits non-zero). PORTA_CPU_DEVICES=2 gives each rank a second
// device for the wrong-device checks. The [comm-deadline] tests run under mpirun with a short
// PORTA_COMM_TIMEOUT: broken, they would wait for it. The [single-rank] test runs without mpirun,
// on the backend PORTA_BACKEND names (default cpu): tools/gpu-check runs it on a GPU to check NCCL
// or RCCL. The [comm-timeout] test also runs on the CUDA and HIP backends' stand-in drivers,
// through the NCCL and RCCL engines over stand-in libraries (tests/gpu/fake_nccl.cpp).
#define CATCH_CONFIG_RUNNER
#include <porta/porta_comm.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "../conformance/common.h"

using namespace porta_test;

namespace {

struct Launched {
  porta_comm_t comm = nullptr;
  int32_t rank = -1, size = 0;
  Launched() {
    PT_REQUIRE_OK(porta_comm_create_from_launcher(0, &comm));
    PT_REQUIRE_OK(porta_comm_rank(comm, &rank, &size, nullptr));
    REQUIRE(size >= 2);
  }
  ~Launched() { CHECK(Status{porta_comm_destroy(comm)} == Status{PORTA_SUCCESS}); }
};

std::vector<float> download_floats(const void* ptr, size_t count) {
  std::vector<float> host(count);
  PT_REQUIRE_OK(porta_memcpy(host.data(), ptr, count * sizeof(float)));
  return host;
}

uint16_t bf16(float value) {  // exact for the small integers used here
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return static_cast<uint16_t>(bits >> 16);
}

float from_bf16(uint16_t value) {
  uint32_t bits = uint32_t{value} << 16;
  float result;
  std::memcpy(&result, &bits, 4);
  return result;
}

double comm_timeout() {
  const char* text = std::getenv("PORTA_COMM_TIMEOUT");
  return text ? std::atof(text) : 300.0;
}

// Runs body on a thread of its own and waits for it at most a few PORTA_COMM_TIMEOUTs: a body
// stuck in MPI past every deadline cannot be ended, so the process exits failing (mpirun then
// ends the others) rather than hang the suite.
template <typename Body>
void within_deadlines(const char* what, Body&& body) {
  std::packaged_task<void()> task(std::forward<Body>(body));
  std::future<void> done = task.get_future();
  std::thread thread(std::move(task));
  if (done.wait_for(std::chrono::duration<double>(4 * comm_timeout() + 10)) !=
      std::future_status::ready) {
    std::printf("FAILED: %s still waits after 4 times PORTA_COMM_TIMEOUT\n", what);
    std::fflush(stdout);
    std::_Exit(1);
  }
  thread.join();
  done.get();
}

// How long call took, in seconds.
template <typename Call>
double seconds_taken(Call&& call) {
  const auto start = std::chrono::steady_clock::now();
  call();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("comm: CPU devices use the MPI engine", "[comm]") {
  const char* engine = nullptr;
  PT_REQUIRE_OK(porta_comm_engine(0, &engine));
  CHECK(std::string(engine) == "mpi");
}

TEST_CASE("comm: all_reduce sums and averages f32 and bf16, in place or not", "[comm]") {
  Launched l;
  Stream stream(0);
  constexpr size_t n = 1000;
  std::vector<float> mine(n);
  for (size_t i = 0; i < n; ++i) mine[i] = float(i % 17) + float(l.rank * 100);
  float expected_sum0 = 0;  // element i: sum over ranks of (i % 17 + rank * 100)
  for (int r = 0; r < l.size; ++r) expected_sum0 += float(r * 100);
  Buffer send(0, n * 4), recv(0, n * 4);
  for (porta_reduce_op_t op : {PORTA_REDUCE_SUM, PORTA_REDUCE_AVG}) {
    INFO("op " << op);
    PT_REQUIRE_OK(porta_memcpy(send.get(), mine.data(), n * 4));
    PT_REQUIRE_OK(porta_comm_all_reduce(l.comm, send.get(), recv.get(), n, PORTA_DTYPE_F32, op,
                                        stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    const std::vector<float> got = download_floats(recv.get(), n);
    for (size_t i = 0; i < n; ++i) {
      float sum = float(i % 17) * l.size + expected_sum0;
      REQUIRE(got[i] == (op == PORTA_REDUCE_SUM ? sum : sum / l.size));
    }
    // In place.
    PT_REQUIRE_OK(porta_comm_all_reduce(l.comm, send.get(), send.get(), n, PORTA_DTYPE_F32, op,
                                        stream.get()));
    CHECK(download_floats(send.get(), n) == got);
  }
  std::vector<uint16_t> halves(n);
  for (size_t i = 0; i < n; ++i) halves[i] = bf16(float(i % 8 + l.rank));
  Buffer hsend(0, n * 2);
  PT_REQUIRE_OK(porta_memcpy(hsend.get(), halves.data(), n * 2));
  PT_REQUIRE_OK(porta_comm_all_reduce(l.comm, hsend.get(), hsend.get(), n, PORTA_DTYPE_BF16,
                                      PORTA_REDUCE_SUM, stream.get()));
  std::vector<uint16_t> got(n);
  PT_REQUIRE_OK(porta_memcpy(got.data(), hsend.get(), n * 2));
  for (size_t i = 0; i < n; ++i) {
    float sum = 0;
    for (int r = 0; r < l.size; ++r) sum += float(i % 8 + r);
    REQUIRE(from_bf16(got[i]) == sum);
  }
}

TEST_CASE("comm: broadcast, all_gather, reduce_scatter and barrier", "[comm]") {
  Launched l;
  Stream stream(0);
  constexpr size_t n = 257;
  Buffer data(0, n * 4), out(0, n * 4 * l.size), block(0, n * 4);
  std::vector<float> mine(n);
  for (size_t i = 0; i < n; ++i) mine[i] = float(l.rank * 1000 + int(i));
  PT_REQUIRE_OK(porta_memcpy(data.get(), mine.data(), n * 4));
  // Broadcast from the last rank, into another buffer.
  const int32_t root = l.size - 1;
  PT_REQUIRE_OK(porta_comm_broadcast(l.comm, data.get(), block.get(), n, PORTA_DTYPE_F32, root,
                                     stream.get()));
  std::vector<float> got = download_floats(block.get(), n);
  for (size_t i = 0; i < n; ++i) REQUIRE(got[i] == float(root * 1000 + int(i)));
  // Gather everyone's, in rank order.
  PT_REQUIRE_OK(
      porta_comm_all_gather(l.comm, data.get(), out.get(), n, PORTA_DTYPE_F32, stream.get()));
  got = download_floats(out.get(), n * l.size);
  for (int r = 0; r < l.size; ++r) {
    for (size_t i = 0; i < n; ++i) REQUIRE(got[r * n + i] == float(r * 1000 + int(i)));
  }
  // Reduce-scatter the gathered blocks (each rank holds the same): block r summed over ranks.
  PT_REQUIRE_OK(porta_comm_reduce_scatter(l.comm, out.get(), block.get(), n, PORTA_DTYPE_F32,
                                          PORTA_REDUCE_AVG, stream.get()));
  got = download_floats(block.get(), n);
  for (size_t i = 0; i < n; ++i) REQUIRE(got[i] == float(l.rank * 1000 + int(i)));
  PT_REQUIRE_OK(porta_comm_barrier(l.comm, stream.get()));
  PT_REQUIRE_OK(porta_comm_barrier(l.comm, nullptr));
}

// Every rank makes the same bad calls: each refuses them before any data moves, and takes part in
// each one's arrival round as refused, so the ranks stay in step.
TEST_CASE("comm: bad arguments are refused before any data moves", "[comm][errors]") {
  Launched l;
  Stream stream(0), other_device(1);
  Buffer a(0, 64), b(0, 64), far(1, 64);
  auto reduce = [&](const void* s, void* r, size_t count, porta_dtype_t dtype, porta_reduce_op_t op,
                    porta_stream_t q) {
    return porta_comm_all_reduce(l.comm, s, r, count, dtype, op, q);
  };
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, reduce(a.get(), b.get(), 16, PORTA_DTYPE_F32,
                                                      PORTA_REDUCE_SUM, other_device.get()));
  const CallResult wrong = call_on_fresh_thread([&] {
    return reduce(a.get(), b.get(), 16, PORTA_DTYPE_F32, PORTA_REDUCE_SUM, other_device.get());
  });
  CHECK(wrong.message.find("the stream belongs to device 1, the communicator to device 0") !=
        std::string::npos);
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 reduce(a.get(), far.get(), 16, PORTA_DTYPE_F32, PORTA_REDUCE_SUM, stream.get()));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 reduce(a.get(), b.get(), 17, PORTA_DTYPE_F32, PORTA_REDUCE_SUM, stream.get()));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 reduce(a.get(), b.get(), 16, PORTA_DTYPE_F16, PORTA_REDUCE_SUM, stream.get()));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 reduce(a.get(), b.get(), 16, PORTA_DTYPE_F32, porta_reduce_op_t(7), stream.get()));
  int on_stack[16];
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 reduce(on_stack, b.get(), 16, PORTA_DTYPE_F32, PORTA_REDUCE_SUM, stream.get()));
  PT_CHECK_FAILS(
      PORTA_ERROR_INVALID_ARGUMENT,
      porta_comm_broadcast(l.comm, a.get(), b.get(), 16, PORTA_DTYPE_F32, l.size, stream.get()));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_comm_all_gather(l.comm, a.get(), b.get(), 16, PORTA_DTYPE_F32,
                                       stream.get()));  // recv too small for size * 16
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_comm_barrier(nullptr, stream.get()));
  // Counts whose bytes pass 2^64 (2^62 + 2 floats: 8 bytes once wrapped) are no small sizes.
  const size_t huge = (size_t{1} << 62) + 2;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 reduce(a.get(), b.get(), huge, PORTA_DTYPE_F32, PORTA_REDUCE_AVG, stream.get()));
  PT_CHECK_FAILS(
      PORTA_ERROR_INVALID_ARGUMENT,
      porta_comm_broadcast(l.comm, a.get(), b.get(), huge, PORTA_DTYPE_F32, 0, stream.get()));
  PT_CHECK_FAILS(
      PORTA_ERROR_INVALID_ARGUMENT,
      porta_comm_all_gather(l.comm, a.get(), b.get(), huge, PORTA_DTYPE_F32, stream.get()));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_comm_reduce_scatter(l.comm, a.get(), b.get(), size_t{1} << 61,
                                           PORTA_DTYPE_F32, PORTA_REDUCE_SUM, stream.get()));
  // send and recv overlapping, but not in place.
  float* a4 = a.as<float>();
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 reduce(a4, a4 + 1, 4, PORTA_DTYPE_F32, PORTA_REDUCE_SUM, stream.get()));
  PT_CHECK_FAILS(
      PORTA_ERROR_INVALID_ARGUMENT,
      porta_comm_broadcast(l.comm, a4, a4 + 1, 4, PORTA_DTYPE_F32, l.rank, stream.get()));
  // The communicator still works: every rank refused the same calls.
  PT_REQUIRE_OK(porta_comm_barrier(l.comm, stream.get()));
}

// The ranks must call the same collective with the same count, dtype, op and root: each rank
// compares every other's call with its own at the arrival, so all of them refuse a mismatch and
// none runs it, and the communicator stays usable.
TEST_CASE("comm: a collective the ranks call differently is refused on every rank", "[comm]") {
  Launched l;
  Stream stream(0);
  Buffer a(0, 64), b(0, 64);
  const auto refused = [&](porta_status_t status) {
    CHECK(Status{status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    CHECK(std::string(porta_last_error_message()).find("every rank must call the same") !=
          std::string::npos);
  };
  refused(porta_comm_all_reduce(l.comm, a.get(), b.get(), l.rank == 0 ? 4 : 8, PORTA_DTYPE_F32,
                                PORTA_REDUCE_SUM, stream.get()));
  refused(porta_comm_all_reduce(l.comm, a.get(), b.get(), 4,
                                l.rank == 0 ? PORTA_DTYPE_F32 : PORTA_DTYPE_BF16, PORTA_REDUCE_SUM,
                                stream.get()));
  refused(porta_comm_broadcast(l.comm, a.get(), b.get(), 4, PORTA_DTYPE_F32, l.rank, stream.get()));
  refused(l.rank == 0 ? porta_comm_barrier(l.comm, stream.get())
                      : porta_comm_all_reduce(l.comm, a.get(), b.get(), 4, PORTA_DTYPE_F32,
                                              PORTA_REDUCE_SUM, stream.get()));
  PT_REQUIRE_OK(porta_comm_barrier(l.comm, stream.get()));
}

// porta_comm_destroy while another thread is in a collective on the communicator: the handle is
// stale at once, the collective finishes on the communicator, which goes once it has returned.
TEST_CASE("comm: a communicator destroyed during a collective outlives it", "[comm]") {
  porta_comm_t comm = nullptr;
  PT_REQUIRE_OK(porta_comm_create_from_launcher(0, &comm));
  int32_t rank = -1;
  PT_REQUIRE_OK(porta_comm_rank(comm, &rank, nullptr, nullptr));
  porta_status_t barrier = PORTA_ERROR_INTERNAL;
  {
    // Rank 0 enters the barrier at once and waits there for the others, which come later.
    std::jthread waiter([&] {
      if (rank != 0) std::this_thread::sleep_for(std::chrono::milliseconds(400));
      barrier = porta_comm_barrier(comm, nullptr);
    });
    if (rank == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      CHECK(Status{porta_comm_destroy(comm)} == Status{PORTA_SUCCESS});
      CHECK(Status{porta_comm_barrier(comm, nullptr)} == Status{PORTA_ERROR_INVALID_HANDLE});
    }
  }
  CHECK(Status{barrier} == Status{PORTA_SUCCESS});
  if (rank != 0) CHECK(Status{porta_comm_destroy(comm)} == Status{PORTA_SUCCESS});
}

// A collective reads send after the work queued before it on the stream: here a host function
// that writes it late. bf16 all-reduce and reduce-scatter go through fp32 copies of send, made
// once that work has finished.
TEST_CASE("comm: collectives read send after the stream's earlier work", "[comm]") {
  Launched l;
  Stream stream(0);
  constexpr size_t n = 4;
  Buffer send(0, n * 4 * l.size), recv(0, n * 4);
  struct Late {
    void* send;
    std::vector<uint8_t> ones;  // 1.0 in every element
    static void write(void* data) {
      auto* late = static_cast<Late*>(data);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::memcpy(late->send, late->ones.data(), late->ones.size());  // host memory on a CPU
    }
  };
  for (porta_dtype_t dtype : {PORTA_DTYPE_F32, PORTA_DTYPE_BF16}) {
    INFO("dtype " << dtype);
    PT_REQUIRE_OK(porta_memset(send.get(), 0, n * 4 * l.size));
    Late late{send.get(), std::vector<uint8_t>(n * 4 * size_t(l.size))};
    for (size_t i = 0; i < late.ones.size(); i += 4) {
      const float one = 1.0f;
      const uint16_t half = bf16(1.0f);
      if (dtype == PORTA_DTYPE_F32) {
        std::memcpy(&late.ones[i], &one, 4);
      } else {
        std::memcpy(&late.ones[i], &half, 2);
        std::memcpy(&late.ones[i + 2], &half, 2);
      }
    }
    PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), &Late::write, &late));
    PT_REQUIRE_OK(porta_comm_reduce_scatter(l.comm, send.get(), recv.get(), n, dtype,
                                            PORTA_REDUCE_SUM, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    std::vector<uint16_t> got(2 * n);
    PT_REQUIRE_OK(porta_memcpy(got.data(), recv.get(), n * 4));
    const float first =
        dtype == PORTA_DTYPE_F32 ? download_floats(recv.get(), 1)[0] : from_bf16(got[0]);
    CHECK(first == float(l.size));
    PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), &Late::write, &late));
    PT_REQUIRE_OK(porta_comm_all_reduce(l.comm, send.get(), recv.get(), n, dtype, PORTA_REDUCE_SUM,
                                        stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    PT_REQUIRE_OK(porta_memcpy(got.data(), recv.get(), n * 4));
    const float reduced =
        dtype == PORTA_DTYPE_F32 ? download_floats(recv.get(), 1)[0] : from_bf16(got[0]);
    CHECK(reduced == float(l.size));
  }
}

// Two threads of each rank make a communicator from the launcher at once: both are made, one after
// the other (which of one rank's pairs with which of another's is the order they were made in),
// and both work. Each thread then uses its own.
TEST_CASE("comm: communicators made from the launcher on two threads at once both work",
          "[comm-deadline]") {
  within_deadlines("concurrent porta_comm_create_from_launcher", [] {
    // A few rounds: two threads that start together do not always overlap.
    for (int round = 0; round < 64; ++round) {
      INFO("round " << round);
      porta_comm_t comms[2] = {nullptr, nullptr};
      porta_status_t made[2] = {PORTA_ERROR_INTERNAL, PORTA_ERROR_INTERNAL};
      porta_status_t met[2] = {PORTA_ERROR_INTERNAL, PORTA_ERROR_INTERNAL};
      porta_status_t destroyed[2] = {PORTA_ERROR_INTERNAL, PORTA_ERROR_INTERNAL};
      std::string messages[2];
      std::latch start(2);
      {
        std::vector<std::jthread> threads;
        for (int i = 0; i < 2; ++i) {
          threads.emplace_back([&, i] {
            start.arrive_and_wait();
            made[i] = porta_comm_create_from_launcher(0, &comms[i]);
            if (made[i] != PORTA_SUCCESS) {
              messages[i] = porta_last_error_message();
              return;
            }
            met[i] = porta_comm_barrier(comms[i], nullptr);
            if (met[i] != PORTA_SUCCESS) messages[i] = porta_last_error_message();
            destroyed[i] = porta_comm_destroy(comms[i]);
          });
        }
      }
      for (int i = 0; i < 2; ++i) {
        INFO("thread " << i << ": " << messages[i]);
        REQUIRE(Status{made[i]} == Status{PORTA_SUCCESS});
        REQUIRE(Status{met[i]} == Status{PORTA_SUCCESS});
        REQUIRE(Status{destroyed[i]} == Status{PORTA_SUCCESS});
      }
    }
  });
}

// A count of 0 moves nothing but is still a collective: the ranks match it like any other, so a
// rank that calls it where another calls something else is refused on every rank, at once.
TEST_CASE("comm: a collective of count 0 is matched among the ranks", "[comm-deadline]") {
  within_deadlines("collectives of count 0", [] {
    Launched l;
    Stream stream(0);
    Buffer a(0, 64), b(0, 64);
    // Every rank: count 0, buffers unused (NULL), nothing moved.
    PT_CHECK_OK(porta_comm_all_reduce(l.comm, nullptr, nullptr, 0, PORTA_DTYPE_F32,
                                      PORTA_REDUCE_SUM, stream.get()));
    PT_CHECK_OK(
        porta_comm_broadcast(l.comm, nullptr, nullptr, 0, PORTA_DTYPE_F32, 0, stream.get()));
    PT_CHECK_OK(porta_comm_all_gather(l.comm, nullptr, nullptr, 0, PORTA_DTYPE_F32, stream.get()));
    PT_CHECK_OK(porta_comm_reduce_scatter(l.comm, nullptr, nullptr, 0, PORTA_DTYPE_BF16,
                                          PORTA_REDUCE_AVG, stream.get()));
    // Rank 0 count 0, the others 4: refused everywhere, naming the function once.
    CallResult result{};
    const double taken = seconds_taken([&] {
      result = call_on_fresh_thread([&] {
        return porta_comm_all_reduce(l.comm, a.get(), b.get(), l.rank == 0 ? 0 : 4, PORTA_DTYPE_F32,
                                     PORTA_REDUCE_SUM, stream.get());
      });
    });
    INFO(result.message);
    CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    CHECK(result.message.find("every rank must call the same") != std::string::npos);
    CHECK(result.message.rfind("porta_comm_all_reduce: mpi engine: ", 0) == 0);
    CHECK(result.message.find("porta_comm_all_reduce", 1) == std::string::npos);
    CHECK(taken < comm_timeout() / 2);
    // A broadcast of count 0 on the root only.
    result = call_on_fresh_thread([&] {
      return porta_comm_broadcast(l.comm, a.get(), b.get(), l.rank == 0 ? 0 : 4, PORTA_DTYPE_F32, 0,
                                  stream.get());
    });
    INFO(result.message);
    CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    // Still in step: a real all-reduce pairs with the other ranks' own.
    std::vector<float> ones(4, 1.0f);
    PT_REQUIRE_OK(porta_memcpy(a.get(), ones.data(), 16));
    PT_CHECK_OK(porta_comm_all_reduce(l.comm, a.get(), b.get(), 4, PORTA_DTYPE_F32,
                                      PORTA_REDUCE_SUM, stream.get()));
    PT_CHECK_OK(porta_stream_synchronize(stream.get()));
    CHECK(download_floats(b.get(), 4) == std::vector<float>(4, float(l.size)));
  });
}

// A call that libporta refuses on one rank only (a buffer too small there, a stream of another
// device) still takes part in the arrival round, marked refused: the other ranks fail at once
// naming it, and the next collective pairs with the next.
TEST_CASE("comm: a call refused on one rank fails on every rank at once and keeps them in step",
          "[comm-deadline]") {
  within_deadlines("a call refused on one rank", [] {
    Launched l;
    Stream stream(0), other_device(1);
    Buffer a(0, 16), b(0, 16);
    const bool refuses = l.rank == l.size - 1;
    const std::string named = "rank(s) " + std::to_string(l.size - 1) + " refused this all_reduce";
    CallResult result{};
    double taken = seconds_taken([&] {
      result = call_on_fresh_thread([&] {  // 8 floats do not fit in 16 bytes
        return porta_comm_all_reduce(l.comm, a.get(), b.get(), refuses ? 8 : 4, PORTA_DTYPE_F32,
                                     PORTA_REDUCE_SUM, stream.get());
      });
    });
    {
      INFO(result.message);
      CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
      if (!refuses) {
        CHECK(result.message.find(named) != std::string::npos);
        CHECK(result.message.find("porta_comm_all_reduce", 1) == std::string::npos);
        CHECK(taken < comm_timeout() / 2);
      }
    }
    taken = seconds_taken([&] {
      result = call_on_fresh_thread([&] {
        return porta_comm_all_reduce(l.comm, a.get(), b.get(), 4, PORTA_DTYPE_F32, PORTA_REDUCE_SUM,
                                     refuses ? other_device.get() : stream.get());
      });
    });
    {
      INFO(result.message);
      CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
      if (!refuses) CHECK(result.message.find(named) != std::string::npos);
      CHECK(taken < comm_timeout() / 2);
    }
    // In step: each rank's next all-reduce is the others' next.
    std::vector<float> mine(4, float(l.rank + 1));
    PT_REQUIRE_OK(porta_memcpy(a.get(), mine.data(), 16));
    PT_CHECK_OK(porta_comm_all_reduce(l.comm, a.get(), b.get(), 4, PORTA_DTYPE_F32,
                                      PORTA_REDUCE_SUM, stream.get()));
    PT_CHECK_OK(porta_stream_synchronize(stream.get()));
    CHECK(download_floats(b.get(), 4) == std::vector<float>(4, float(l.size * (l.size + 1) / 2)));
    PT_CHECK_OK(porta_comm_barrier(l.comm, stream.get()));
  });
}

// An error of the stream's earlier work (here a host function that throws, on one rank) stays
// with the stream for its porta_stream_synchronize: the collective, queued after it, runs on
// every rank as any later work does, and takes nothing from the stream.
TEST_CASE("comm: a collective leaves an earlier error to its stream", "[comm-deadline]") {
  within_deadlines("a collective after a failed host function", [] {
    Launched l;
    Stream stream(0);
    Buffer a(0, 16);
    struct Throws {
      static void run(void*) { throw 42; }
    };
    const bool fails = l.rank == l.size - 1;
    if (fails) PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), &Throws::run, nullptr));
    std::vector<float> ones(4, 1.0f);
    PT_REQUIRE_OK(porta_memcpy(a.get(), ones.data(), 16));
    PT_CHECK_OK(porta_comm_all_reduce(l.comm, a.get(), a.get(), 4, PORTA_DTYPE_F32,
                                      PORTA_REDUCE_SUM, stream.get()));
    const CallResult synced =
        call_on_fresh_thread([&] { return porta_stream_synchronize(stream.get()); });
    INFO(synced.message);
    CHECK((synced.status != PORTA_SUCCESS) == fails);
    PT_CHECK_OK(porta_stream_synchronize(stream.get()));  // reported once
    CHECK(download_floats(a.get(), 4) == std::vector<float>(4, float(l.size)));
    PT_CHECK_OK(porta_comm_barrier(l.comm, stream.get()));
  });
}

TEST_CASE("comm: wrong ranks, sizes and mismatched ids are named", "[comm][errors]") {
  int32_t rank = -1, size = 0;
  {
    Launched l;
    rank = l.rank;
    size = l.size;
  }
  porta_comm_unique_id_t id{};
  PT_REQUIRE_OK(porta_comm_get_unique_id(0, &id));
  porta_comm_t comm = nullptr;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_comm_create(0, size, size, &id, &comm));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_comm_create(0, 0, 0, &id, &comm));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_comm_create(0, rank, size, nullptr, &comm));
  const CallResult too_big =
      call_on_fresh_thread([&] { return porta_comm_create(0, rank, size + 1, &id, &comm); });
  CHECK(Status{too_big.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(too_big.message.find("but mpirun started " + std::to_string(size)) != std::string::npos);
  const CallResult swapped = call_on_fresh_thread(
      [&] { return porta_comm_create(0, (rank + 1) % size, size, &id, &comm); });
  CHECK(Status{swapped.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(swapped.message.find("this process is MPI rank " + std::to_string(rank)) !=
        std::string::npos);
  // Each rank made its own id: they differ, and rank 0's view names the others.
  const CallResult mismatched =
      call_on_fresh_thread([&] { return porta_comm_create(0, rank, size, &id, &comm); });
  CHECK(Status{mismatched.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(mismatched.message.find("the unique ids differ: rank(s) 1") != std::string::npos);
  CHECK(comm == nullptr);
}

TEST_CASE("comm: one rank on the default device all-reduces, gathers and broadcasts",
          "[single-rank]") {
  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  const char* engine = nullptr;
  PT_REQUIRE_OK(porta_comm_engine(device, &engine));
  INFO("engine " << engine << " on " << properties(device).name);
  porta_comm_unique_id_t id{};
  PT_REQUIRE_OK(porta_comm_get_unique_id(device, &id));
  porta_comm_t comm = nullptr;
  PT_REQUIRE_OK(porta_comm_create(device, 0, 1, &id, &comm));
  Stream stream(device);
  constexpr size_t n = 4099;
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = float(i % 251) - 100.0f;
  Buffer a(device, n * 4), b(device, n * 4);
  PT_REQUIRE_OK(porta_memcpy(a.get(), values.data(), n * 4));
  for (porta_reduce_op_t op : {PORTA_REDUCE_SUM, PORTA_REDUCE_AVG}) {
    PT_REQUIRE_OK(
        porta_comm_all_reduce(comm, a.get(), b.get(), n, PORTA_DTYPE_F32, op, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(download_floats(b.get(), n) == values);  // one rank: the sum and the mean are itself
  }
  std::vector<uint16_t> halves(n);
  for (size_t i = 0; i < n; ++i) halves[i] = bf16(float(i % 64));
  PT_REQUIRE_OK(porta_memcpy(a.get(), halves.data(), n * 2));
  PT_REQUIRE_OK(porta_comm_all_reduce(comm, a.get(), a.get(), n, PORTA_DTYPE_BF16, PORTA_REDUCE_SUM,
                                      stream.get()));
  PT_REQUIRE_OK(
      porta_comm_all_gather(comm, a.get(), b.get(), n / 2, PORTA_DTYPE_F32, stream.get()));
  PT_REQUIRE_OK(
      porta_comm_broadcast(comm, b.get(), b.get(), n / 2, PORTA_DTYPE_F32, 0, stream.get()));
  PT_REQUIRE_OK(porta_comm_barrier(comm, stream.get()));
  std::vector<uint16_t> got(n);
  PT_REQUIRE_OK(porta_memcpy(got.data(), b.get(), n * 2));
  for (size_t i = 0; i < (n / 2) * 2; ++i) REQUIRE(got[i] == halves[i]);
  PT_REQUIRE_OK(porta_comm_destroy(comm));
}

namespace {

// An engine that runs collectives on the caller's thread (MPI's) works on the buffers outside any
// stream: a free or a pool trim on another thread must wait for it, as it waits for the devices'
// queued work, rather than unmap the memory under it (SIGSEGV).
// All-reduces of n floats in place on buffer, run on another thread until one fails; release()
// lets the memory go once two have run. It must wait for the one under way (else SIGSEGV), and
// the next finds no memory there.
template <typename Release>
void collectives_while_released(porta_device_t device, void* buffer, size_t n, Release&& release) {
  porta_comm_unique_id_t id{};
  PT_REQUIRE_OK(porta_comm_get_unique_id(device, &id));
  porta_comm_t comm = nullptr;
  PT_REQUIRE_OK(porta_comm_create(device, 0, 1, &id, &comm));
  std::atomic<int> runs{0};
  std::atomic<porta_status_t> last{PORTA_SUCCESS};
  std::thread worker([&] {
    porta_status_t status;
    while ((status = porta_comm_all_reduce(comm, buffer, buffer, n, PORTA_DTYPE_F32,
                                           PORTA_REDUCE_AVG, nullptr)) == PORTA_SUCCESS) {
      ++runs;
    }
    last = status;
  });
  while (runs < 2 && last == PORTA_SUCCESS) std::this_thread::yield();
  release();
  worker.join();
  CHECK(runs >= 2);
  CHECK(Status{last.load()} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  PT_REQUIRE_OK(porta_comm_destroy(comm));
}

}  // namespace

TEST_CASE("comm: a free waits for a collective another thread runs on its memory",
          "[single-rank]") {
  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  constexpr size_t n = size_t{1} << 22;
  void* buffer = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(device, n * sizeof(float), &buffer));
  PT_REQUIRE_OK(porta_memset(buffer, 0, n * sizeof(float)));
  collectives_while_released(device, buffer, n, [&] { PT_CHECK_OK(porta_memory_free(buffer)); });
}

// The block goes back to the pool, and the trim gives it back to the backend: only once the
// collective under way has finished with it.
TEST_CASE("comm: a pool trim waits for a collective another thread runs on its memory",
          "[single-rank]") {
  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  Stream stream(device);
  PT_REQUIRE_OK(porta_memory_pool_set_release_threshold(device, UINT64_MAX));
  constexpr size_t n = size_t{1} << 22;
  void* buffer = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc_async(device, n * sizeof(float), stream.get(), &buffer));
  PT_REQUIRE_OK(porta_memset_async(buffer, 0, n * sizeof(float), stream.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
  collectives_while_released(device, buffer, n, [&] {
    PT_CHECK_OK(porta_memory_free_async(buffer, stream.get()));
    PT_CHECK_OK(porta_memory_pool_trim(device, 0));
  });
  PT_REQUIRE_OK(porta_memory_pool_set_release_threshold(device, 0));
}

TEST_CASE("comm: a collective a rank never joins times out naming that rank", "[comm-timeout]") {
  Launched l;
  Stream stream(0);
  Buffer a(0, 64);
  if (l.rank == 0) {
    // The MPI engine fails the collective itself. NCCL and RCCL queue it; the watchdog aborts
    // it after PORTA_COMM_TIMEOUT, and the next call (a barrier, which waits for it) says so.
    const auto start = std::chrono::steady_clock::now();
    CallResult result = call_on_fresh_thread([&] {
      return porta_comm_all_reduce(l.comm, a.get(), a.get(), 16, PORTA_DTYPE_F32, PORTA_REDUCE_SUM,
                                   stream.get());
    });
    if (result.status == PORTA_SUCCESS) {
      result = call_on_fresh_thread([&] { return porta_comm_barrier(l.comm, stream.get()); });
    }
    INFO(result.message);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(60));
    CHECK(Status{result.status} == Status{PORTA_ERROR_DEVICE_LOST});
    CHECK(result.message.find("rank(s) 1 of " + std::to_string(l.size) + " did not arrive") !=
          std::string::npos);
    // And the communicator says so from then on, at once, for a count of 0 too.
    PT_CHECK_FAILS(PORTA_ERROR_DEVICE_LOST, porta_comm_barrier(l.comm, stream.get()));
    PT_CHECK_FAILS(PORTA_ERROR_DEVICE_LOST,
                   porta_comm_all_reduce(l.comm, nullptr, nullptr, 0, PORTA_DTYPE_F32,
                                         PORTA_REDUCE_SUM, stream.get()));
  } else {
    // Away without calling MPI until rank 0 has looked (its watchdog fires after the timeout): the
    // arrival record must be read without this rank's help, as when a rank hangs.
    const char* timeout = std::getenv("PORTA_COMM_TIMEOUT");
    std::this_thread::sleep_for(
        std::chrono::duration<double>(3 * std::atof(timeout ? timeout : "2")));
  }
}

int main(int argc, char** argv) {
  Catch::Session session;
  if (int error = session.applyCommandLine(argc, argv); error != 0) return error;
  // CPU devices unless PORTA_BACKEND says otherwise; two of them, for the wrong-device checks.
  porta_init_options_t options{};
  options.struct_size = sizeof(options);
  const char* backend = std::getenv("PORTA_BACKEND");
  options.backend = backend && *backend ? backend : "cpu";
  options.cpu_devices = "2";
  if (porta_init(&options) != PORTA_SUCCESS) {
    std::printf("FAILED: %s\n", porta_last_error_message());
    return 1;
  }
  const int failures = session.run();
  porta_shutdown();
  return failures;
}
