// Streams: creation, the default stream, asynchrony, in-order execution, query, synchronize,
// cross-stream waits and native handles.
#include <cmath>

#include "common.h"

using namespace porta_test;

TEST_CASE("stream: create, query its device, destroy", "[stream]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    porta_stream_t stream = nullptr;
    PT_REQUIRE_OK(porta_stream_create(device, &stream));
    REQUIRE(stream != nullptr);
    porta_device_t owner = -1;
    PT_REQUIRE_OK(porta_stream_device(stream, &owner));
    CHECK(owner == device);
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(stream));  // nothing queued
    PT_CHECK_OK(porta_stream_synchronize(stream));
    PT_REQUIRE_OK(porta_stream_destroy(stream));

    // Several at once are distinct.
    std::vector<porta_stream_t> streams(16);
    for (auto& s : streams) PT_REQUIRE_OK(porta_stream_create(device, &s));
    std::vector<porta_stream_t> sorted = streams;
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
    for (auto& s : streams) PT_CHECK_OK(porta_stream_destroy(s));

    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_create(device, nullptr));
  }
}

TEST_CASE("stream: the default stream", "[stream]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    porta_stream_t first = nullptr, second = nullptr;
    PT_REQUIRE_OK(porta_stream_default(device, &first));
    PT_REQUIRE_OK(porta_stream_default(device, &second));
    REQUIRE(first != nullptr);
    CHECK(first == second);  // created with the device, the same until shutdown
    porta_device_t owner = -1;
    PT_REQUIRE_OK(porta_stream_device(first, &owner));
    CHECK(owner == device);
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(first));
    PT_CHECK_OK(porta_stream_synchronize(first));

    // It cannot be destroyed, and stays usable after trying.
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_destroy(first));
    PT_CHECK_OK(porta_stream_synchronize(first));
    Buffer buffer(device, 64);
    PT_CHECK_OK(porta_memset_async(buffer.get(), 7, 64, first));
    PT_CHECK_OK(porta_stream_synchronize(first));
    CHECK(download(buffer.get(), 64) == std::vector<uint8_t>(64, 7));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_default(device, nullptr));
  }

  // NULL names the default device's default stream.
  porta_device_t default_device = -1;
  PT_REQUIRE_OK(porta_device_default(&default_device));
  porta_device_t owner = -1;
  PT_REQUIRE_OK(porta_stream_device(nullptr, &owner));
  CHECK(owner == default_device);
  PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(nullptr));
  PT_CHECK_OK(porta_stream_synchronize(nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_destroy(nullptr));
  PT_CHECK_OK(porta_stream_synchronize(nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_device(nullptr, nullptr));
}

TEST_CASE("stream: work is queued asynchronously", "[stream]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Buffer out(device, 256);
    PT_REQUIRE_OK(porta_memset(out.get(), 0xFF, 256));  // a NaN until the spin writes it
    Stream stream(device);
    const int64_t iterations = spin_iterations(device);
    INFO("spin of " << iterations << " iterations, about " << kSpinTargetMs << " ms");

    const double start = now_ms();
    PT_REQUIRE_OK(launch_spin(device, spin, out.as<float>(), stream.get()));
    const double queued = now_ms() - start;
    // The query right after must see the spin still running.
    PT_CHECK_STATUS(PORTA_NOT_READY, porta_stream_query(stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    const double finished = now_ms() - start;
    INFO("the launch returned after " << queued << " ms, the work ended after " << finished
                                      << " ms");
    // Queuing takes microseconds and the work tens of milliseconds; comparing the two (rather
    // than either with a fixed time) keeps the check valid on a loaded or slow host.
    CHECK(queued < finished / 3);
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(stream.get()));
    // Synchronize returned after the kernel wrote its result.
    float result = 0;
    PT_REQUIRE_OK(porta_memcpy(&result, out.get(), sizeof(result)));
    CHECK(std::isfinite(result));
  }
}

TEST_CASE("stream: work on one stream runs in order", "[stream]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    porta_kernel_t spin = module.kernel("spin");
    Stream stream(device);
    constexpr int kN = 1000;
    Buffer x(device, kN * sizeof(float)), y(device, kN * sizeof(float)), scratch(device, 256);
    Buffer host(device, kN * sizeof(float), Buffer::kPinned);
    std::vector<float> ones(kN, 1.0f), zeros(kN, 0.0f);

    // A slow kernel first, so that everything after it is queued behind real work.
    PT_REQUIRE_OK(launch_spin(device, spin, scratch.as<float>(), stream.get(), 0.3));
    PT_REQUIRE_OK(porta_memcpy_async(x.get(), ones.data(), kN * sizeof(float), stream.get()));
    PT_REQUIRE_OK(porta_memcpy_async(y.get(), zeros.data(), kN * sizeof(float), stream.get()));
    // y = 2x + y, ten times: each launch must see the previous one's result. Small integers
    // times a power of two are exact in float, so the result is compared exactly.
    for (int i = 0; i < 10; ++i) {
      PT_REQUIRE_OK(launch_saxpy(saxpy, kN, 2.0f, x.as<float>(), y.as<float>(), 64, stream.get()));
    }
    PT_REQUIRE_OK(porta_memcpy_async(host.get(), y.get(), kN * sizeof(float), stream.get()));
    // A memset after the copy must not affect what was copied.
    PT_REQUIRE_OK(porta_memset_async(y.get(), 0, kN * sizeof(float), stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    for (int i = 0; i < kN; ++i) {
      INFO("element " << i);
      REQUIRE(host.as<float>()[i] == 20.0f);
    }
  }
}

TEST_CASE("stream: destroy waits for queued work", "[stream]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Buffer buffer(device, 4096), scratch(device, 256);
    PT_REQUIRE_OK(porta_memset(buffer.get(), 0, 4096));
    porta_stream_t stream = nullptr;
    PT_REQUIRE_OK(porta_stream_create(device, &stream));
    PT_REQUIRE_OK(launch_spin(device, spin, scratch.as<float>(), stream, 0.3));
    PT_REQUIRE_OK(porta_memset_async(buffer.get(), 0x5A, 4096, stream));
    PT_REQUIRE_OK(porta_stream_destroy(stream));
    // The memset queued behind the spin has happened by the time destroy returned. The check
    // reads through another stream, so it does not wait for anything itself.
    Stream other(device);
    std::vector<uint8_t> host(4096, 0);
    PT_REQUIRE_OK(porta_memcpy_async(host.data(), buffer.get(), 4096, other.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(other.get()));
    CHECK(host == std::vector<uint8_t>(4096, 0x5A));
  }
}

TEST_CASE("stream: wait_event orders work across streams without blocking the host",
          "[stream]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Stream producer(device), consumer(device);
    Event ready(device);
    constexpr size_t kSize = 1 << 16;
    Buffer buffer(device, kSize), scratch(device, 256);
    Buffer host(device, kSize, Buffer::kPinned);
    PT_REQUIRE_OK(porta_memset(buffer.get(), 0x11, kSize));
    std::memset(host.get(), 0, kSize);

    // producer: spin, then overwrite the buffer, then mark it ready.
    PT_REQUIRE_OK(launch_spin(device, spin, scratch.as<float>(), producer.get()));
    PT_REQUIRE_OK(porta_memset_async(buffer.get(), 0x22, kSize, producer.get()));
    PT_REQUIRE_OK(porta_event_record(ready.get(), producer.get()));
    // consumer: wait for it, then read the buffer. Without the wait the copy would run at once
    // and see 0x11.
    const double start = now_ms();
    PT_REQUIRE_OK(porta_stream_wait_event(consumer.get(), ready.get()));
    PT_REQUIRE_OK(porta_memcpy_async(host.get(), buffer.get(), kSize, consumer.get()));
    const double queued = now_ms() - start;
    PT_CHECK_STATUS(PORTA_NOT_READY, porta_stream_query(consumer.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(consumer.get()));
    const double finished = now_ms() - start;
    // The host was not held up: queuing the wait and the copy took a small part of the time the
    // consumer stream then spent waiting for the producer.
    INFO("queued in " << queued << " ms, done after " << finished << " ms");
    CHECK(queued < finished / 3);
    CHECK(std::vector<uint8_t>(host.bytes(), host.bytes() + kSize) ==
          std::vector<uint8_t>(kSize, 0x22));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(ready.get()));
  }
}

TEST_CASE("stream: copies on another stream run while a kernel computes",
          "[stream]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    if (!(properties(device).capabilities & PORTA_CAPABILITY_ASYNC_COPY)) {
      WARN("device " << device << " does not claim PORTA_CAPABILITY_ASYNC_COPY: not checked");
      continue;
    }
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Stream compute(device), copy(device);
    Event copied(device);
    constexpr size_t kSize = size_t{16} << 20;
    Buffer buffer(device, kSize), scratch(device, 256);
    Buffer host_in(device, kSize, Buffer::kPinned), host_out(device, kSize, Buffer::kPinned);
    std::memset(host_in.get(), 0x5A, kSize);
    std::memset(host_out.get(), 0, kSize);

    // A kernel of about kSpinTargetMs on one stream, then both copy directions on another. A
    // backend that ran copies behind kernels (one queue, or one engine) would finish the copies
    // only after the kernel, so the compute stream would be idle by the time they are done. On a
    // busy machine the copies can be starved for longer than the kernel runs, so a kernel that
    // ended first is tried again four times as long, twice; a serialising backend fails all three.
    porta_status_t compute_state = PORTA_SUCCESS;
    for (double scale = 1.0; scale <= 16.0 && compute_state != PORTA_NOT_READY; scale *= 4.0) {
      PT_REQUIRE_OK(launch_spin(device, spin, scratch.as<float>(), compute.get(), scale));
      PT_REQUIRE_OK(porta_memcpy_async(buffer.get(), host_in.get(), kSize, copy.get()));
      PT_REQUIRE_OK(porta_memcpy_async(host_out.get(), buffer.get(), kSize, copy.get()));
      PT_REQUIRE_OK(porta_event_record(copied.get(), copy.get()));
      PT_REQUIRE_OK(porta_event_synchronize(copied.get()));
      compute_state = porta_stream_query(compute.get());
      PT_REQUIRE_OK(porta_stream_synchronize(compute.get()));
    }
    PT_CHECK_STATUS(PORTA_NOT_READY, compute_state);
    CHECK(std::vector<uint8_t>(host_out.bytes(), host_out.bytes() + kSize) ==
          std::vector<uint8_t>(kSize, 0x5A));
  }
}

TEST_CASE("stream: waiting on an event never recorded does not wait", "[stream]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    Event never(device);
    Buffer buffer(device, 64);
    PT_REQUIRE_OK(porta_stream_wait_event(stream.get(), never.get()));
    PT_REQUIRE_OK(porta_memset_async(buffer.get(), 3, 64, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(download(buffer.get(), 64) == std::vector<uint8_t>(64, 3));
    // The default stream (NULL) can wait too.
    porta_device_t default_device = 0;
    PT_REQUIRE_OK(porta_device_default(&default_device));
    if (device == default_device) PT_CHECK_OK(porta_stream_wait_event(nullptr, never.get()));
  }
}

TEST_CASE("stream: native handle", "[stream]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    void* native = reinterpret_cast<void*>(0x1);
    if (is_cpu_backend()) {
      PT_CHECK_FAILS(PORTA_ERROR_UNSUPPORTED, porta_stream_native_handle(stream.get(), &native));
      CHECK(native == reinterpret_cast<void*>(0x1));
    } else {
      PT_REQUIRE_OK(porta_stream_native_handle(stream.get(), &native));
      CHECK(native != nullptr);
    }
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_native_handle(stream.get(), nullptr));
  }
}

TEST_CASE("stream: device_synchronize does not disturb a stream's errors or state", "[stream]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    Buffer buffer(device, 1 << 20);
    for (int i = 0; i < 8; ++i) {
      PT_REQUIRE_OK(porta_memset_async(buffer.get(), i, 1 << 20, stream.get()));
    }
    PT_REQUIRE_OK(porta_device_synchronize(device));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(stream.get()));
    CHECK(download(buffer.get(), 16) == std::vector<uint8_t>(16, 7));
  }
}
