// The report of allocations still alive: on request and at porta_shutdown.
#include "multi_device.h"

using namespace porta_test;

TEST_CASE("leaks: the report lists each live allocation with its size and device, then totals",
          "[leaks]") {
  CpuDevices runtime("2");
  void* device_memory = nullptr;
  void* pinned = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(1, 1000, &device_memory));
  PT_REQUIRE_OK(porta_host_alloc(0, 4096, &pinned));
  Stream stream(1);
  void* pooled = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc_async(1, 3000, stream.get(), &pooled));
  uint64_t count = 0, bytes = 0;
  StderrCapture capture;
  PT_REQUIRE_OK(porta_memory_report_live(&count, &bytes));
  const std::string log = capture.finish();
  CHECK(count == 3);
  CHECK(bytes == 1000 + 4096 + 3000);
  CHECK(log.find("live allocation: 1000 bytes of device memory on device 1") != std::string::npos);
  CHECK(log.find("live allocation: 3000 bytes of device memory on device 1") != std::string::npos);
  CHECK(log.find("live allocation: 4096 bytes of pinned host memory on device 0") !=
        std::string::npos);
  CHECK(log.find("device 0: 1 live allocation(s), 4096 bytes") != std::string::npos);
  CHECK(log.find("device 1: 2 live allocation(s), 4000 bytes") != std::string::npos);

  PT_REQUIRE_OK(porta_memory_free(device_memory));
  PT_REQUIRE_OK(porta_host_free(pinned));
  PT_REQUIRE_OK(porta_memory_free_async(pooled, stream.get()));
  StderrCapture quiet;
  PT_REQUIRE_OK(porta_memory_report_live(&count, nullptr));
  CHECK(count == 0);
  CHECK(quiet.finish().find("live allocation") == std::string::npos);
}

TEST_CASE("leaks: porta_shutdown reports the allocations it frees", "[leaks]") {
  {
    porta_init_options_t options{};
    options.struct_size = sizeof(options);
    options.backend = "cpu";
    options.cpu_devices = "2";
    options.log_level = "warn";
    PT_REQUIRE_OK(porta_init(&options));
    void* leaked = nullptr;
    PT_REQUIRE_OK(porta_memory_alloc(1, 12345, &leaked));
    StderrCapture capture;
    porta_shutdown();
    const std::string log = capture.finish();
    CHECK(log.find("porta_shutdown: live allocation: 12345 bytes of device memory on device 1") !=
          std::string::npos);
    CHECK(log.find("porta_shutdown: device 1: 1 live allocation(s), 12345 bytes") !=
          std::string::npos);
  }
  // With nothing left alive, shutdown says nothing.
  CpuDevices runtime("2");
  void* freed = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(0, 64, &freed));
  PT_REQUIRE_OK(porta_memory_free(freed));
  StderrCapture capture;
  porta_shutdown();
  CHECK(capture.finish().find("live allocation") == std::string::npos);
}
