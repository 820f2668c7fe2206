// Events: create, record, query, synchronize, elapsed time, destroy.
#include <cmath>
#include <cstring>

#include "common.h"

using namespace porta_test;

TEST_CASE("event: a never-recorded event is complete", "[event]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    porta_event_t event = nullptr;
    PT_REQUIRE_OK(porta_event_create(device, &event));
    REQUIRE(event != nullptr);
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(event));
    PT_CHECK_OK(porta_event_synchronize(event));
    // But it has no time to measure from.
    Stream stream(device);
    Event recorded(device);
    PT_REQUIRE_OK(porta_event_record(recorded.get(), stream.get()));
    PT_REQUIRE_OK(porta_event_synchronize(recorded.get()));
    float ms = -1234.0f;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_event_elapsed_ms(event, recorded.get(), &ms));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_event_elapsed_ms(recorded.get(), event, &ms));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_event_elapsed_ms(event, event, &ms));
    CHECK(ms == -1234.0f);
    PT_REQUIRE_OK(porta_event_destroy(event));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_event_create(device, nullptr));
  }
}

TEST_CASE("event: record on an idle stream completes", "[event]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    Event a(device), b(device);
    PT_REQUIRE_OK(porta_event_record(a.get(), stream.get()));
    PT_REQUIRE_OK(porta_event_record(b.get(), stream.get()));
    PT_REQUIRE_OK(porta_event_synchronize(b.get()));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(a.get()));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(b.get()));
    float ms = -1.0f;
    PT_REQUIRE_OK(porta_event_elapsed_ms(a.get(), b.get(), &ms));
    CHECK(ms >= 0.0f);
    // Nothing ran between them: well under the time of any real work (generous enough for a
    // heavily loaded host, where the stream's worker may wait several scheduler slices).
    CHECK(ms < 100.0f);
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_event_elapsed_ms(a.get(), b.get(), nullptr));
  }
}

TEST_CASE("event: record, query and synchronize around real work", "[event]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Buffer out(device, 256);
    Stream stream(device);
    Event start(device), end(device);
    PT_REQUIRE_OK(porta_event_record(start.get(), stream.get()));
    PT_REQUIRE_OK(launch_spin(device, spin, out.as<float>(), stream.get()));
    PT_REQUIRE_OK(porta_event_record(end.get(), stream.get()));
    PT_CHECK_STATUS(PORTA_NOT_READY, porta_event_query(end.get()));
    float ms = -1234.0f;
    // Not completed yet: NOT_READY, which is no error and leaves ms alone.
    PT_CHECK_STATUS(PORTA_NOT_READY, porta_event_elapsed_ms(start.get(), end.get(), &ms));
    CHECK(ms == -1234.0f);
    PT_REQUIRE_OK(porta_event_synchronize(end.get()));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(end.get()));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(stream.get()));
    PT_REQUIRE_OK(porta_event_elapsed_ms(start.get(), end.get(), &ms));
    CHECK(ms > 0.0f);
  }
}

TEST_CASE("event: outlives the stream it was recorded into", "[event]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Buffer out(device, 256);
    PT_REQUIRE_OK(porta_memset(out.get(), 0xFF, 256));  // NaN until the spin writes it
    Event start(device), end(device);
    porta_stream_t stream = nullptr;
    PT_REQUIRE_OK(porta_stream_create(device, &stream));
    PT_REQUIRE_OK(porta_event_record(start.get(), stream));
    PT_REQUIRE_OK(launch_spin(device, spin, out.as<float>(), stream));
    PT_REQUIRE_OK(porta_event_record(end.get(), stream));
    // Destroyed with its work queued: the work still completes, and so do the events.
    PT_REQUIRE_OK(porta_stream_destroy(stream));
    PT_REQUIRE_OK(porta_event_synchronize(end.get()));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(end.get()));
    float ms = -1.0f;
    PT_REQUIRE_OK(porta_event_elapsed_ms(start.get(), end.get(), &ms));
    CHECK(ms > 0.0f);
    float result = 0.0f;
    std::memcpy(&result, download(out.get(), sizeof(float)).data(), sizeof(float));
    CHECK(std::isfinite(result));
  }
}

TEST_CASE("event: elapsed time measures real work", "[event]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    porta_kernel_t noop = module.kernel("noop");
    Buffer out(device, 256);
    Stream stream(device);
    Event e0(device), e1(device), e2(device), e3(device);
    const porta_launch_config_t one = launch_config({1, 1, 1}, {1, 1, 1});

    const double host_start = now_ms();
    PT_REQUIRE_OK(porta_event_record(e0.get(), stream.get()));
    PT_REQUIRE_OK(launch_spin(device, spin, out.as<float>(), stream.get()));
    PT_REQUIRE_OK(porta_event_record(e1.get(), stream.get()));
    PT_REQUIRE_OK(porta_kernel_launch(noop, &one, nullptr, stream.get()));
    PT_REQUIRE_OK(porta_event_record(e2.get(), stream.get()));
    PT_REQUIRE_OK(porta_event_record(e3.get(), stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    const double host_ms = now_ms() - host_start;

    float spin_ms = 0, empty_ms = 0, nothing_ms = 0, backwards_ms = 0;
    PT_REQUIRE_OK(porta_event_elapsed_ms(e0.get(), e1.get(), &spin_ms));
    PT_REQUIRE_OK(porta_event_elapsed_ms(e1.get(), e2.get(), &empty_ms));
    PT_REQUIRE_OK(porta_event_elapsed_ms(e2.get(), e3.get(), &nothing_ms));
    PT_REQUIRE_OK(porta_event_elapsed_ms(e1.get(), e0.get(), &backwards_ms));
    INFO("spin " << spin_ms << " ms, empty kernel " << empty_ms << " ms, nothing " << nothing_ms
                 << " ms, host saw " << host_ms << " ms");
    // The spin is most of what the host waited for (half allows for queueing and wake-up
    // latencies on a loaded host; its length in absolute terms varies with the load, so it is
    // compared with the host's own measure), and it can never exceed that wait (plus 10% and 2 ms
    // for device and host clocks that tick independently).
    CHECK(spin_ms >= host_ms / 2);
    CHECK(spin_ms <= host_ms * 1.1 + 2.0);
    CHECK(spin_ms > empty_ms);
    CHECK(spin_ms > nothing_ms);
    CHECK(empty_ms >= 0.0f);
    CHECK(nothing_ms >= 0.0f);
    // The end came first: negative, the same magnitude (within timer rounding).
    CHECK(backwards_ms < 0.0f);
    CHECK(backwards_ms == Approx(-spin_ms).margin(0.01));
  }
}

TEST_CASE("event: recording again replaces the capture", "[event]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Buffer out(device, 256);
    Stream stream(device);
    Event start(device), end(device);
    PT_REQUIRE_OK(porta_event_record(start.get(), stream.get()));
    PT_REQUIRE_OK(porta_event_record(end.get(), stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    float before = 0;
    PT_REQUIRE_OK(porta_event_elapsed_ms(start.get(), end.get(), &before));

    // Re-record end after real work: it is pending again, then later than before by about the
    // work's duration (at least half of what the host waited for it, as above).
    const double host_start = now_ms();
    PT_REQUIRE_OK(launch_spin(device, spin, out.as<float>(), stream.get(), 0.5));
    PT_REQUIRE_OK(porta_event_record(end.get(), stream.get()));
    PT_CHECK_STATUS(PORTA_NOT_READY, porta_event_query(end.get()));
    PT_REQUIRE_OK(porta_event_synchronize(end.get()));
    const double host_ms = now_ms() - host_start;
    float after = 0;
    PT_REQUIRE_OK(porta_event_elapsed_ms(start.get(), end.get(), &after));
    INFO("before " << before << " ms, after " << after << " ms, host waited " << host_ms << " ms");
    CHECK(after - before >= host_ms / 2);
  }
}

TEST_CASE("event: record on the default stream (NULL)", "[event]") {
  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  Event a(device), b(device);
  PT_REQUIRE_OK(porta_event_record(a.get(), nullptr));
  PT_REQUIRE_OK(porta_event_record(b.get(), nullptr));
  PT_REQUIRE_OK(porta_event_synchronize(b.get()));
  float ms = -1;
  PT_REQUIRE_OK(porta_event_elapsed_ms(a.get(), b.get(), &ms));
  CHECK(ms >= 0.0f);
}

TEST_CASE("event: destroying an event does not cancel waits already queued on it",
          "[event]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Stream producer(device), consumer(device);
    constexpr size_t kSize = 4096;
    Buffer buffer(device, kSize), scratch(device, 256);
    PT_REQUIRE_OK(porta_memset(buffer.get(), 0x11, kSize));
    porta_event_t event = nullptr;
    PT_REQUIRE_OK(porta_event_create(device, &event));
    PT_REQUIRE_OK(launch_spin(device, spin, scratch.as<float>(), producer.get(), 0.5));
    PT_REQUIRE_OK(porta_memset_async(buffer.get(), 0x22, kSize, producer.get()));
    PT_REQUIRE_OK(porta_event_record(event, producer.get()));
    PT_REQUIRE_OK(porta_stream_wait_event(consumer.get(), event));
    std::vector<uint8_t> host(kSize, 0);
    PT_REQUIRE_OK(porta_memcpy_async(host.data(), buffer.get(), kSize, consumer.get()));
    PT_REQUIRE_OK(porta_event_destroy(event));
    PT_REQUIRE_OK(porta_stream_synchronize(consumer.get()));
    CHECK(host == std::vector<uint8_t>(kSize, 0x22));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_query(event));
  }
}
