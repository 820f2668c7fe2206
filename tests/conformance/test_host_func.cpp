// Host functions queued on streams (porta_stream_launch_host_func): ordering with kernels, copies
// and events, asynchrony, and argument errors. The functions here touch only host memory and make
// no Porta call, as the API asks of a portable host function.
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "common.h"

using namespace porta_test;

namespace {

// A gate a host function blocks on until the test opens it, so the test controls when the
// stream may advance past the function.
struct Gate {
  std::mutex mutex;
  std::condition_variable opened_cv;
  bool opened = false;
  std::atomic<bool> entered{false};
  std::atomic<bool> returned{false};

  void open() {
    {
      std::lock_guard lock(mutex);
      opened = true;
    }
    opened_cv.notify_all();
  }
  static void wait(void* data) {
    auto* gate = static_cast<Gate*>(data);
    gate->entered = true;
    std::unique_lock lock(gate->mutex);
    gate->opened_cv.wait(lock, [&] { return gate->opened; });
    gate->returned = true;
  }
};

// Copies a float from one host address to another when the stream reaches it.
struct HostCopy {
  const float* from;
  float* to;
  static void run(void* data) {
    auto* copy = static_cast<HostCopy*>(data);
    std::memcpy(copy->to, copy->from, sizeof(float));
  }
};

struct Sequence {
  std::mutex mutex;
  std::vector<int> seen;
};
struct Step {
  Sequence* sequence;
  int index;
  static void run(void* data) {
    auto* step = static_cast<Step*>(data);
    std::lock_guard lock(step->sequence->mutex);
    step->sequence->seen.push_back(step->index);
  }
};

void count_call(void* data) { static_cast<std::atomic<int>*>(data)->fetch_add(1); }

}  // namespace

TEST_CASE("host function: runs after the kernels and copies queued before it",
          "[host_func]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Buffer out(device, 256);
    Buffer staging(device, 256, Buffer::kPinned);
    PT_REQUIRE_OK(porta_memset(out.get(), 0xFF, 256));  // NaN until the spin writes it
    std::memset(staging.get(), 0xFF, 256);
    Stream stream(device);
    float seen = 0.0f;
    HostCopy copy{staging.as<float>(), &seen};
    // spin (long) -> copy to pinned memory -> the host function reads it.
    PT_REQUIRE_OK(launch_spin(device, spin, out.as<float>(), stream.get()));
    PT_REQUIRE_OK(porta_memcpy_async(staging.get(), out.get(), sizeof(float), stream.get()));
    PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), HostCopy::run, &copy));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    const std::vector<uint8_t> result = download(out.get(), sizeof(float));
    float expected;
    std::memcpy(&expected, result.data(), sizeof expected);
    CHECK(std::isfinite(expected));
    CHECK(seen == expected);  // not the NaN that was there before the spin finished
  }
}

TEST_CASE("host function: work queued after it waits until it returns", "[host_func]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Buffer staging(device, 256, Buffer::kPinned);
    Buffer target(device, 256);
    PT_REQUIRE_OK(porta_memset(target.get(), 0, 256));
    float* host = staging.as<float>();
    host[0] = 1.0f;
    Stream stream(device);
    Event after(device);
    Gate gate;
    const float written = 42.5f;
    HostCopy write{&written, host};

    const double start = now_ms();
    PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), Gate::wait, &gate));
    PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), HostCopy::run, &write));
    // The copy reads what the host function wrote, so it must not start before it returned.
    PT_REQUIRE_OK(porta_memcpy_async(target.get(), staging.get(), sizeof(float), stream.get()));
    PT_REQUIRE_OK(porta_event_record(after.get(), stream.get()));
    CHECK(now_ms() - start < 1000.0);  // queueing returned without waiting for the gate

    // Blocked in the first function: nothing after it has run.
    for (int i = 0; i < 2000 && !gate.entered; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(gate.entered);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    PT_CHECK_STATUS(PORTA_NOT_READY, porta_stream_query(stream.get()));
    PT_CHECK_STATUS(PORTA_NOT_READY, porta_event_query(after.get()));
    CHECK(host[0] == 1.0f);

    // Another stream waiting on the event also waits for the function.
    Stream other(device);
    Buffer second(device, 256);
    PT_REQUIRE_OK(porta_memset(second.get(), 0, 256));
    PT_REQUIRE_OK(porta_stream_wait_event(other.get(), after.get()));
    PT_REQUIRE_OK(porta_memcpy_async(second.get(), target.get(), sizeof(float), other.get()));

    gate.open();
    PT_REQUIRE_OK(porta_event_synchronize(after.get()));
    CHECK(gate.returned);
    CHECK(host[0] == written);
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(other.get()));
    float copied = 0.0f, waited = 0.0f;
    std::memcpy(&copied, download(target.get(), sizeof(float)).data(), sizeof(float));
    std::memcpy(&waited, download(second.get(), sizeof(float)).data(), sizeof(float));
    CHECK(copied == written);
    CHECK(waited == written);
  }
}

TEST_CASE("host function: many run once each, in queue order", "[host_func]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    Buffer buffer(device, 4096);
    Sequence sequence;
    constexpr int kSteps = 500;
    std::vector<Step> steps(kSteps);
    for (int i = 0; i < kSteps; ++i) {
      steps[i] = Step{&sequence, i};
      PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), Step::run, &steps[i]));
      // Interleaved with other work, which must not reorder them.
      if (i % 50 == 0)
        PT_REQUIRE_OK(porta_memset_async(buffer.get(), i & 0xFF, 4096, stream.get()));
    }
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    std::vector<int> expected(kSteps);
    for (int i = 0; i < kSteps; ++i) expected[i] = i;
    CHECK(sequence.seen == expected);
  }
}

TEST_CASE("host function: the NULL stream is the default device's default stream", "[host_func]") {
  std::atomic<int> calls{0};
  PT_REQUIRE_OK(porta_stream_launch_host_func(nullptr, count_call, &calls));
  PT_REQUIRE_OK(porta_stream_synchronize(nullptr));
  CHECK(calls == 1);
  for (porta_device_t device : devices()) {
    porta_stream_t stream = nullptr;
    PT_REQUIRE_OK(porta_stream_default(device, &stream));
    PT_REQUIRE_OK(porta_stream_launch_host_func(stream, count_call, &calls));
    PT_REQUIRE_OK(porta_stream_synchronize(stream));
  }
  CHECK(calls == 1 + device_count());
}

TEST_CASE("host function: argument errors queue nothing", "[host_func][errors]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    std::atomic<int> calls{0};
    Stream stream(device);
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_stream_launch_host_func(stream.get(), nullptr, &calls));
    porta_stream_t destroyed = nullptr;
    PT_REQUIRE_OK(porta_stream_create(device, &destroyed));
    PT_REQUIRE_OK(porta_stream_destroy(destroyed));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_stream_launch_host_func(destroyed, count_call, &calls));
    auto made_up = reinterpret_cast<porta_stream_t>(uintptr_t{0x7f00dead0000});
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_stream_launch_host_func(made_up, count_call, &calls));
    Event event(device);
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_stream_launch_host_func(reinterpret_cast<porta_stream_t>(event.get()),
                                                 count_call, &calls));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(calls == 0);
    // user_data is only handed over: NULL is fine.
    static std::atomic<int> null_calls{0};
    null_calls = 0;
    PT_REQUIRE_OK(porta_stream_launch_host_func(
        stream.get(), [](void* data) { null_calls += data == nullptr ? 1 : 100; }, nullptr));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(null_calls == 1);
  }
}

// On the CPU backend a host function may make Porta calls that do not wait (the GPU drivers
// forbid their own API there): one still queued when porta_shutdown is called must not keep it
// waiting, which it did while shutdown held the runtime alone as it waited for the devices.
TEST_CASE("host function: one that calls Porta does not keep porta_shutdown waiting",
          "[host_func]") {
  if (!is_cpu_backend()) {
    WARN("skipped on " << backend_name() << ": a portable host function makes no Porta call");
    return;
  }
  struct Call {
    porta_stream_t stream = nullptr;
    std::atomic<int> status{1};  // not yet run
    static void run(void* data) {
      auto* call = static_cast<Call*>(data);
      call->status = porta_stream_query(call->stream);  // NOT_READY: this function is pending
    }
  };
  Gate gate;
  Call call;
  // Raw handles: porta_shutdown releases them.
  PT_REQUIRE_OK(porta_stream_create(devices().front(), &call.stream));
  PT_REQUIRE_OK(porta_stream_launch_host_func(call.stream, &Gate::wait, &gate));
  PT_REQUIRE_OK(porta_stream_launch_host_func(call.stream, &Call::run, &call));
  std::thread opener([&] {
    while (!gate.entered) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // porta_shutdown is waiting
    gate.open();
  });
  const porta_status_t shutdown = porta_shutdown();
  opener.join();
  CHECK(Status{shutdown} == Status{PORTA_SUCCESS});
  CHECK(Status{call.status.load()} == Status{PORTA_NOT_READY});
  PT_REQUIRE_OK(porta_init(nullptr));
}

// A host function's own stream waits for it, so a call that waits for streams or devices could
// wait there for ever: each is refused with UNAVAILABLE, and changes nothing.
TEST_CASE("host function: calls that wait are refused there, and change nothing",
          "[host_func]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) {
    WARN("skipped on " << backend_name() << ": a portable host function makes no Porta call");
    return;
  }
  const porta_device_t device = devices().front();
  struct Waits {
    porta_device_t device;
    porta_stream_t stream;
    porta_event_t event;
    porta_module_t module;
    void* memory;
    void* pinned;
    std::vector<std::pair<std::string, porta_status_t>> statuses;
    std::string message;
    static void run(void* data) {
      auto* w = static_cast<Waits*>(data);
      char byte = 1;
      const auto record = [&](const char* call, porta_status_t status) {
        w->statuses.emplace_back(call, status);
      };
      record("porta_stream_synchronize", porta_stream_synchronize(w->stream));
      w->message = porta_last_error_message();
      record("porta_stream_destroy", porta_stream_destroy(w->stream));
      record("porta_event_synchronize", porta_event_synchronize(w->event));
      record("porta_device_synchronize", porta_device_synchronize(w->device));
      record("porta_memory_free", porta_memory_free(w->memory));
      record("porta_host_free", porta_host_free(w->pinned));
      record("porta_module_unload", porta_module_unload(w->module));
      record("porta_memory_pool_trim", porta_memory_pool_trim(w->device, 0));
      record("porta_memcpy", porta_memcpy(w->memory, &byte, 1));
      record("porta_memset", porta_memset(w->memory, 0, 1));
      record("porta_shutdown", porta_shutdown());
    }
  };
  Stream stream(device);
  Event event(device);
  Module module(device);
  Buffer memory(device, 64), pinned(device, 64, Buffer::kPinned);
  PT_REQUIRE_OK(porta_memset(memory.get(), 7, 64));
  Waits waits{device, stream.get(), event.get(), module.get(), memory.get(), pinned.get(), {}, {}};
  PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), &Waits::run, &waits));
  PT_REQUIRE_OK(porta_event_record(event.get(), stream.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
  REQUIRE(waits.statuses.size() == 11);
  for (const auto& [call, status] : waits.statuses) {
    INFO(call);
    CHECK(Status{status} == Status{PORTA_ERROR_UNAVAILABLE});
  }
  CHECK_THAT(waits.message, Catch::Matchers::Contains("called from a host function"));
  // Nothing changed: every object is still there, the memory as it was.
  PT_CHECK_OK(porta_event_synchronize(event.get()));
  PT_CHECK_OK(porta_device_synchronize(device));
  CHECK(download(memory.get(), 64) == std::vector<uint8_t>(64, 7));
  CHECK(module.kernel("saxpy") != nullptr);
  PT_CHECK_OK(porta_stream_query(stream.get()));
}

// A chain of host functions, each queueing the next (a non-waiting call, allowed on the CPU
// backend), outlives porta_shutdown's first wait for the devices; once shutdown is under way the
// next link is refused, so the chain ends and shutdown does not wait for it forever.
TEST_CASE("host function: a chain that queues itself again ends at porta_shutdown", "[host_func]") {
  if (!is_cpu_backend()) {
    WARN("skipped on " << backend_name() << ": a portable host function makes no Porta call");
    return;
  }
  struct Chain {
    porta_stream_t stream = nullptr;
    std::atomic<int> runs{0};
    std::atomic<int> refused{0};
    static void run(void* data) {
      auto* chain = static_cast<Chain*>(data);
      ++chain->runs;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      const porta_status_t status = porta_stream_launch_host_func(chain->stream, &run, chain);
      if (status == PORTA_ERROR_UNAVAILABLE) ++chain->refused;
    }
  };
  Chain chain;
  PT_REQUIRE_OK(porta_stream_create(devices().front(), &chain.stream));  // shutdown releases it
  PT_REQUIRE_OK(porta_stream_launch_host_func(chain.stream, &Chain::run, &chain));
  while (chain.runs < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(Status{porta_shutdown()} == Status{PORTA_SUCCESS});
  CHECK(chain.refused == 1);
  const int runs = chain.runs;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(chain.runs == runs);
  PT_REQUIRE_OK(porta_init(nullptr));
}

// A synchronize waits for the work queued before it: another thread that keeps queueing must not
// keep it waiting (OpenCL's clFinish waits until the queue has drained).
TEST_CASE("host function: synchronize is not kept waiting by another thread's new work",
          "[host_func]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    std::atomic<bool> stop{false};
    std::atomic<int> calls{0};
    std::atomic<porta_status_t> queued{PORTA_SUCCESS};
    // Up to 1000 calls ahead of the stream: never drained while it runs, nor growing unbounded.
    std::thread producer([&] {
      for (int count = 0; !stop && queued == PORTA_SUCCESS;) {
        if (count - calls > 1000) {
          std::this_thread::yield();
          continue;
        }
        queued = porta_stream_launch_host_func(stream.get(), count_call, &calls);
        ++count;
      }
    });
    while (calls < 10) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (int i = 0; i < 20; ++i) PT_CHECK_OK(porta_stream_synchronize(stream.get()));
    stop = true;
    producer.join();
    CHECK(Status{queued.load()} == Status{PORTA_SUCCESS});
    PT_CHECK_OK(porta_stream_synchronize(stream.get()));
  }
}

// fn must not throw; where the backend's own thread runs it (CPU, OpenCL, Level Zero) one that
// does is reported by the stream's next synchronize and the stream goes on. A GPU driver's
// thread cannot be protected so.
TEST_CASE("host function: one that throws is reported by the next synchronize", "[host_func]") {
  const std::string backend = backend_name();
  if (backend == "cuda" || backend == "hip") {
    WARN("skipped on " << backend << ": the driver's thread runs host functions");
    return;
  }
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    std::atomic<int> calls{0};
    PT_REQUIRE_OK(porta_stream_launch_host_func(
        stream.get(), [](void*) { throw std::runtime_error("thrown by a host function"); },
        nullptr));
    PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), count_call, &calls));
    const porta_status_t status = porta_stream_synchronize(stream.get());
    CHECK(Status{status} == Status{PORTA_ERROR_INTERNAL});
    CHECK(std::string(porta_last_error_message()).find("thrown by a host function") !=
          std::string::npos);
    CHECK(calls == 1);
    PT_CHECK_OK(porta_stream_synchronize(stream.get()));
  }
}
