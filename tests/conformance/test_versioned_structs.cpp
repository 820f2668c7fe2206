// Porta's versioned structs (struct_size first, fields only ever appended) with callers of three
// generations: one built against the first release (struct_size PORTA_<STRUCT>_MIN_SIZE, nothing
// behind it), one built against a later release (a field appended), and one whose struct_size is
// below the first release's (INVALID_ARGUMENT, nothing written). The structs of porta_ops.h are
// checked by the op suite (tests/ops/test_versioned_args.cpp), porta_init_options_t and
// porta_plugin_report_t by the loader suite.
#include <porta/porta.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>

#include "common.h"

using namespace porta_test;

namespace {

constexpr unsigned char kGuard = 0xCD;

// A struct as a caller of a later release declares it: this release's fields, then more.
template <typename T>
struct Newer {
  T known;
  uint64_t appended;
};

// Checks a struct Porta fills (fill(T*) returns a status) with all three callers. The answer of a
// current caller is the reference; the first release's caller gets its first min_size bytes, and
// no byte behind them is written.
template <typename T, typename Fill>
void check_filled_struct(size_t min_size, Fill&& fill) {
  REQUIRE(min_size > sizeof(size_t));
  REQUIRE(min_size <= sizeof(T));
  T current;
  std::memset(&current, 0, sizeof(current));
  current.struct_size = sizeof(T);
  PT_REQUIRE_OK(fill(&current));
  CHECK(current.struct_size == sizeof(T));

  SECTION("a caller of the first release") {
    alignas(T) unsigned char old[sizeof(T) + 16];
    std::memset(old, kGuard, sizeof(old));
    std::memcpy(old, &min_size, sizeof(min_size));
    PT_REQUIRE_OK(fill(reinterpret_cast<T*>(old)));
    size_t size = 0;
    std::memcpy(&size, old, sizeof(size));
    CHECK(size == min_size);
    CHECK(std::memcmp(old + sizeof(size_t),
                      reinterpret_cast<const unsigned char*>(&current) + sizeof(size_t),
                      min_size - sizeof(size_t)) == 0);
    for (size_t i = min_size; i < sizeof(old); ++i) {
      INFO("byte " << i << " behind the first release's struct");
      CHECK(old[i] == kGuard);
    }
  }
  SECTION("a caller of a later release, with a field appended") {
    Newer<T> newer;
    std::memset(&newer, kGuard, sizeof(newer));
    newer.known.struct_size = sizeof(newer);
    PT_REQUIRE_OK(fill(&newer.known));
    CHECK(newer.known.struct_size == sizeof(newer));
    CHECK(std::memcmp(reinterpret_cast<const unsigned char*>(&newer.known) + sizeof(size_t),
                      reinterpret_cast<const unsigned char*>(&current) + sizeof(size_t),
                      sizeof(T) - sizeof(size_t)) == 0);
    uint64_t untouched;
    std::memset(&untouched, kGuard, sizeof(untouched));
    CHECK(newer.appended == untouched);
  }
  SECTION("a struct_size below the first release's") {
    alignas(T) unsigned char small[sizeof(T)];
    std::memset(small, kGuard, sizeof(small));
    const size_t size = min_size - 1;
    std::memcpy(small, &size, sizeof(size));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, fill(reinterpret_cast<T*>(small)));
    for (size_t i = sizeof(size_t); i < sizeof(small); ++i) CHECK(small[i] == kGuard);
  }
}

}  // namespace

TEST_CASE("versioned structs: porta_device_properties_t", "[versioned]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    check_filled_struct<porta_device_properties_t>(
        PORTA_DEVICE_PROPERTIES_MIN_SIZE,
        [&](porta_device_properties_t* out) { return porta_device_properties(device, out); });
  }
}

TEST_CASE("versioned structs: porta_pointer_info_t", "[versioned]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Buffer buffer(device, 4096);
    check_filled_struct<porta_pointer_info_t>(
        PORTA_POINTER_INFO_MIN_SIZE,
        [&](porta_pointer_info_t* out) { return porta_pointer_info(buffer.bytes() + 8, out); });
  }
}

TEST_CASE("versioned structs: porta_memory_pool_stats_t", "[versioned]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    check_filled_struct<porta_memory_pool_stats_t>(
        PORTA_MEMORY_POOL_STATS_MIN_SIZE,
        [&](porta_memory_pool_stats_t* out) { return porta_memory_pool_stats(device, out); });
  }
}

TEST_CASE("versioned structs: porta_launch_config_t", "[versioned]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    Stream stream(device);
    Buffer x(device, 64 * sizeof(float)), y(device, 64 * sizeof(float));
    int n = 64;
    float a = 2.0f;
    const float* px = x.as<float>();
    float* py = y.as<float>();
    void* args[] = {&n, &a, &px, &py};
    const porta_launch_config_t config = launch_config({1, 1, 1}, {64, 1, 1});
    auto launch = [&](const porta_launch_config_t* c) {
      return porta_kernel_launch(saxpy, c, args, stream.get());
    };

    // The first release's caller: its struct ends at shared_memory_bytes, and so does the
    // allocation, so that the sanitized build catches a read past it (here or in the backend).
    const size_t min_size = PORTA_LAUNCH_CONFIG_MIN_SIZE;
    std::unique_ptr<unsigned char[]> old(new unsigned char[min_size]);
    std::memcpy(old.get(), &config, min_size);
    std::memcpy(old.get(), &min_size, sizeof(min_size));
    PT_CHECK_OK(launch(reinterpret_cast<const porta_launch_config_t*>(old.get())));

    // A later release's caller: a field appended, which this release does not read.
    Newer<porta_launch_config_t> newer;
    std::memset(&newer, kGuard, sizeof(newer));
    newer.known = config;
    newer.known.struct_size = sizeof(newer);
    PT_CHECK_OK(launch(&newer.known));

    porta_launch_config_t small = config;
    small.struct_size = PORTA_LAUNCH_CONFIG_MIN_SIZE - 1;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, launch(&small));
    PT_CHECK_OK(porta_stream_synchronize(stream.get()));
  }
}
