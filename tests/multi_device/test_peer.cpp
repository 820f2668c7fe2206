// Copies between devices and event waits across devices.
#include <atomic>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "multi_device.h"

using namespace porta_test;

namespace {

constexpr size_t kSize = (size_t{1} << 20) + 77;

void check_pattern(const std::vector<uint8_t>& got, size_t from, size_t to, uint32_t seed) {
  for (size_t i = from; i < to; ++i) {
    if (got[i] != pattern_byte(i, seed)) {
      INFO("first wrong byte at " << i);
      REQUIRE(int(got[i]) == int(pattern_byte(i, seed)));
    }
  }
}

void check_value(const std::vector<uint8_t>& got, size_t from, size_t to, uint8_t value) {
  for (size_t i = from; i < to; ++i) {
    if (got[i] != value) {
      INFO("first wrong byte at " << i);
      REQUIRE(int(got[i]) == int(value));
    }
  }
}

}  // namespace

TEST_CASE("peer: devices of the cpu backend reach each other directly", "[peer]") {
  CpuDevices runtime("2");
  int32_t direct = -1;
  PT_REQUIRE_OK(porta_device_can_access_peer(0, 1, &direct));
  CHECK(direct == 1);
  direct = -1;
  PT_REQUIRE_OK(porta_device_can_access_peer(1, 0, &direct));
  CHECK(direct == 1);
  direct = -1;
  PT_REQUIRE_OK(porta_device_can_access_peer(1, 1, &direct));
  CHECK(direct == 1);
  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_device_can_access_peer(0, 2, &direct));
  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_device_can_access_peer(-1, 0, &direct));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_can_access_peer(0, 1, nullptr));
}

TEST_CASE("peer: copies between devices run in order on a stream of either device", "[peer]") {
  CpuDevices runtime("2");
  Buffer a0(0, kSize), b1(1, kSize);
  const std::vector<uint8_t> source = pattern(kSize, 7);
  PT_REQUIRE_OK(porta_memcpy(a0.get(), source.data(), kSize));
  for (porta_device_t device : {0, 1}) {
    INFO("stream of device " << device);
    Stream stream(device);
    std::vector<uint8_t> got(kSize);
    // Set, then half overwritten by the peer copy: only this order gives the expected bytes.
    if (device == 1) {
      PT_REQUIRE_OK(porta_memset_async(b1.get(), 0xA5, kSize, stream.get()));
      PT_REQUIRE_OK(porta_memcpy_async(b1.get(), a0.get(), kSize / 2, stream.get()));
      PT_REQUIRE_OK(porta_memcpy_async(got.data(), b1.get(), kSize, stream.get()));
      PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    } else {
      PT_REQUIRE_OK(porta_memset(b1.get(), 0xA5, kSize));
      PT_REQUIRE_OK(porta_memcpy_async(b1.get(), a0.get(), kSize / 2, stream.get()));
      PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
      PT_REQUIRE_OK(porta_memcpy(got.data(), b1.get(), kSize));
    }
    check_pattern(got, 0, kSize / 2, 7);
    check_value(got, kSize / 2, kSize, 0xA5);
  }
  // The blocking form, both ways.
  Buffer c0(0, kSize);
  PT_REQUIRE_OK(porta_memcpy(b1.get(), a0.get(), kSize));
  PT_REQUIRE_OK(porta_memcpy(c0.get(), b1.get(), kSize));
  check_pattern(download(c0.get(), kSize), 0, kSize, 7);
}

TEST_CASE("peer: a copy between devices refuses a stream of a third device and overruns",
          "[peer][errors]") {
  CpuDevices runtime("3");
  Buffer a0(0, 4096), b1(1, 4096);
  Stream stream2(2);
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_memcpy_async(b1.get(), a0.get(), 4096, stream2.get()));
  const CallResult result = call_on_fresh_thread(
      [&] { return porta_memcpy_async(b1.get(), a0.get(), 4096, stream2.get()); });
  CHECK(result.message.find("belongs to device 2; use a stream of either") != std::string::npos);
  Stream stream1(1);
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_memcpy_async(b1.bytes() + 1, a0.get(), 4096, stream1.get()));
}

TEST_CASE("peer: a stream waits on an event of another device", "[peer][kernels]") {
  CpuDevices runtime("2");
  Module module0(0);
  Buffer a0(0, kSize), b1(1, kSize), spin_out(0, 256);
  Stream stream0(0), stream1(1);
  Event done0(0);
  PT_REQUIRE_OK(porta_memset(a0.get(), 0x11, kSize));
  // Device 0 is busy for a while before it writes a0; device 1 copies a0 only after that.
  PT_REQUIRE_OK(launch_spin(0, module0.kernel("spin"), spin_out.as<float>(), stream0.get(), 2.0));
  PT_REQUIRE_OK(porta_memset_async(a0.get(), 0x5A, kSize, stream0.get()));
  PT_REQUIRE_OK(porta_event_record(done0.get(), stream0.get()));
  PT_REQUIRE_OK(porta_stream_wait_event(stream1.get(), done0.get()));
  PT_REQUIRE_OK(porta_memcpy_async(b1.get(), a0.get(), kSize, stream1.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream1.get()));
  check_value(download(b1.get(), kSize), 0, kSize, 0x5A);
}

TEST_CASE("peer: a copy into a block freed to the pool is refused", "[peer][pool][errors]") {
  CpuDevices runtime("2");
  Stream stream1(1);
  Buffer a0(0, 4096);
  void* block = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc_async(1, 4096, stream1.get(), &block));
  PT_REQUIRE_OK(porta_memory_free_async(block, stream1.get()));
  const CallResult result = call_on_fresh_thread(
      [&] { return porta_memcpy_async(block, a0.get(), 4096, stream1.get()); });
  CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(result.message.find("dst: use after free") != std::string::npos);
  CHECK(result.message.find("a block of device 1 that porta_memory_free_async released") !=
        std::string::npos);
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memcpy(a0.get(), block, 16));
}

namespace {

// The CPU backend and a second copy of it registered as another backend (see CMakeLists.txt):
// no peer access, so copies between their devices are staged.
struct TwoBackends {
  TwoBackends() {
    porta_init_options_t options{};
    options.struct_size = sizeof(options);
    options.backend = "cpu,level_zero";
    options.plugin_path = PORTA_TEST_SECOND_BACKEND_DIR;
    status = porta_init(&options);
  }
  ~TwoBackends() { porta_shutdown(); }
  porta_status_t status;
};

}  // namespace

TEST_CASE("peer: copies between devices of two backends are staged through pinned memory",
          "[peer]") {
  TwoBackends runtime;
  PT_REQUIRE_OK(runtime.status);
  REQUIRE(device_count() == 2);
  REQUIRE(std::string(properties(0).backend) == "cpu");
  REQUIRE(std::string(properties(1).backend) == "level_zero");
  int32_t direct = -1;
  PT_REQUIRE_OK(porta_device_can_access_peer(0, 1, &direct));
  CHECK(direct == 0);

  // Larger than the 8 MiB staging buffer: the copy goes in several parts.
  constexpr size_t kLarge = (size_t{20} << 20) + 3;
  Buffer a0(0, kLarge), b1(1, kLarge), c0(0, kLarge);
  const std::vector<uint8_t> source = pattern(kLarge, 11);
  PT_REQUIRE_OK(porta_memcpy(a0.get(), source.data(), kLarge));
  Stream stream1(1), stream0(0);
  // Ordered after the stream's earlier work: the set comes first, the copy overwrites a part.
  PT_REQUIRE_OK(porta_memset_async(b1.get(), 0x77, kLarge, stream1.get()));
  PT_REQUIRE_OK(porta_memcpy_async(b1.get(), a0.get(), kLarge - 1000, stream1.get()));
  std::vector<uint8_t> got(kLarge);
  PT_REQUIRE_OK(porta_memcpy_async(got.data(), b1.get(), kLarge, stream1.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream1.get()));
  check_pattern(got, 0, kLarge - 1000, 11);
  check_value(got, kLarge - 1000, kLarge, 0x77);
  // Back, on a stream of the source's device this time, and blocking.
  PT_REQUIRE_OK(porta_memcpy_async(c0.get(), b1.get(), kLarge - 1000, stream1.get()));
  PT_REQUIRE_OK(porta_memcpy_async(c0.get(), b1.get(), kLarge, stream0.get()));
  PT_REQUIRE_OK(porta_memcpy(a0.get(), c0.get(), kLarge));
  got = download(a0.get(), kLarge);
  check_pattern(got, 0, kLarge - 1000, 11);
  check_value(got, kLarge - 1000, kLarge, 0x77);
  // Events do not cross backends.
  Event event0(0);
  PT_REQUIRE_OK(porta_event_record(event0.get(), stream0.get()));
  const CallResult wait =
      call_on_fresh_thread([&] { return porta_stream_wait_event(stream1.get(), event0.get()); });
  CHECK(Status{wait.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(wait.message.find("of the cpu backend") != std::string::npos);
  CHECK(wait.message.find("of the level_zero backend") != std::string::npos);
}

// The device the given stream does not belong to runs its half on a stream of its own: its
// default stream may hold unrelated work, here a host function that waits for this very copy.
TEST_CASE("peer: a staged copy does not wait for the other device's default stream", "[peer]") {
  TwoBackends runtime;
  PT_REQUIRE_OK(runtime.status);
  constexpr size_t kBytes = (size_t{9} << 20) + 5;  // two parts
  Buffer a0(0, kBytes), b1(1, kBytes);
  const std::vector<uint8_t> source = pattern(kBytes, 3);
  PT_REQUIRE_OK(porta_memcpy(a0.get(), source.data(), kBytes));
  porta_stream_t default0 = nullptr;
  PT_REQUIRE_OK(porta_stream_default(0, &default0));
  Stream stream1(1);
  {
    Hold hold(default0);
    PT_REQUIRE_OK(porta_memcpy_async(b1.get(), a0.get(), kBytes, stream1.get()));
    hold.release();
    PT_REQUIRE_OK(porta_stream_synchronize(default0));  // the hold's function has returned
  }
  check_pattern(download(b1.get(), kBytes), 0, kBytes, 3);
}

// The error of work queued before a staged copy is the stream's, for its synchronize to report:
// the copy runs after that work and returns only its own errors.
TEST_CASE("peer: a staged copy leaves an earlier error to its stream", "[peer][errors]") {
  TwoBackends runtime;
  PT_REQUIRE_OK(runtime.status);
  constexpr size_t kBytes = 4096;
  Buffer a0(0, kBytes), b1(1, kBytes);
  PT_REQUIRE_OK(porta_memset(a0.get(), 0x5A, kBytes));
  PT_REQUIRE_OK(porta_memset(b1.get(), 0, kBytes));
  Stream stream1(1);
  // On the CPU backend a host function's exception fails its stream
  // (porta_stream_launch_host_func).
  PT_REQUIRE_OK(porta_stream_launch_host_func(
      stream1.get(), [](void*) { throw std::runtime_error("failed on purpose"); }, nullptr));
  PT_CHECK_OK(porta_memcpy_async(b1.get(), a0.get(), kBytes, stream1.get()));
  check_value(download(b1.get(), kBytes), 0, kBytes, 0x5A);
  const CallResult later =
      call_on_fresh_thread([&] { return porta_stream_synchronize(stream1.get()); });
  CHECK(Status{later.status} == Status{PORTA_ERROR_INTERNAL});
  CHECK(later.message.find("failed on purpose") != std::string::npos);
  PT_CHECK_OK(porta_stream_synchronize(stream1.get()));
}

// A staged copy runs from the calling thread, part by part: a free of its source on another
// thread waits for it as for queued work, rather than unmapping the source under it.
TEST_CASE("peer: a free waits for a staged copy under way", "[peer]") {
  TwoBackends runtime;
  PT_REQUIRE_OK(runtime.status);
  constexpr size_t kBytes = size_t{128} << 20;  // 16 parts
  void* a0 = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(0, kBytes, &a0));
  const std::vector<uint8_t> source = pattern(kBytes, 5);
  PT_REQUIRE_OK(porta_memcpy(a0, source.data(), kBytes));
  Buffer b1(1, kBytes);
  Stream stream1(1);
  porta_status_t copied = PORTA_NOT_READY, freed = PORTA_NOT_READY;
  {
    Hold hold(stream1.get());  // the copy starts, then waits for this stream's earlier work
    std::thread copy([&] { copied = porta_memcpy_async(b1.get(), a0, kBytes, stream1.get()); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::thread free([&] { freed = porta_memory_free(a0); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    hold.release();
    copy.join();
    free.join();
  }
  CHECK(Status{copied} == Status{PORTA_SUCCESS});
  CHECK(Status{freed} == Status{PORTA_SUCCESS});
  check_pattern(download(b1.get(), kBytes), 0, kBytes, 5);
}

// porta_memory_free and porta_host_free wait for the work of every device, not only the memory's
// own: a copy queued on another device's stream reads device memory (and any device's stream
// pinned memory). Freed before the copy ran, the CPU backend's unmapped pages made it fault.
TEST_CASE("peer: freeing memory waits for the copies queued on other devices' streams", "[peer]") {
  CpuDevices runtime("2");
  constexpr size_t kBytes = 1 << 20;
  for (const bool pinned : {false, true}) {
    INFO((pinned ? "porta_host_free" : "porta_memory_free"));
    void* source = nullptr;
    if (pinned) {
      PT_REQUIRE_OK(porta_host_alloc(0, kBytes, &source));
      std::memset(source, 0x5a, kBytes);
    } else {
      PT_REQUIRE_OK(porta_memory_alloc(0, kBytes, &source));
      PT_REQUIRE_OK(porta_memset(source, 0x5a, kBytes));
    }
    Buffer target(1, kBytes);
    Stream other(1);
    std::atomic<bool> copied{false};
    {
      Hold hold(other.get());
      PT_REQUIRE_OK(porta_memcpy_async(target.get(), source, kBytes, other.get()));
      PT_REQUIRE_OK(porta_stream_launch_host_func(
          other.get(), [](void* done) { *static_cast<std::atomic<bool>*>(done) = true; }, &copied));
      std::jthread releaser([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        hold.release();
      });
      PT_CHECK_OK(pinned ? porta_host_free(source) : porta_memory_free(source));
      CHECK(copied);  // the free returned only after the copy
    }
    PT_REQUIRE_OK(porta_stream_synchronize(other.get()));
    CHECK(download(target.get(), 16) == std::vector<uint8_t>(16, 0x5a));
  }
}
