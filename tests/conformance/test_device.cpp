// Devices: count, default, properties, memory info, synchronize, native handles, and the
// selected backend.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "common.h"

using namespace porta_test;

TEST_CASE("device: the selected backend is the one requested", "[device]") {
  const char* name = nullptr;
  PT_REQUIRE_OK(porta_backend_selected(&name));
  REQUIRE(name != nullptr);
  CHECK(std::string(name).size() > 0);
  const char* requested = std::getenv("PORTA_BACKEND");
  if (requested && std::string(requested).find(',') == std::string::npos &&
      std::string(requested) != "auto") {
    CHECK(std::string(name) == requested);
  }
  const std::string known[] = {"cpu", "cuda", "hip", "level_zero", "opencl"};
  CHECK(std::find(std::begin(known), std::end(known), std::string(name)) != std::end(known));

  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_backend_selected(nullptr));
}

TEST_CASE("device: count and default device", "[device]") {
  int32_t count = -1;
  PT_REQUIRE_OK(porta_device_count(&count));
  CHECK(count >= 1);
  porta_device_t device = -1;
  PT_REQUIRE_OK(porta_device_default(&device));
  CHECK(device >= 0);
  CHECK(device < count);
  // The default device belongs to the selected backend.
  CHECK(std::string(properties(device).backend) == backend_name());

  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_count(nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_default(nullptr));
}

TEST_CASE("device: properties are sane", "[device]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    const porta_device_properties_t p = properties(device);
    INFO("name '" << p.name << "', architecture '" << p.architecture << "'");
    CHECK(p.struct_size == sizeof(p));
    // Strings are NUL-terminated within their arrays and not empty.
    CHECK(std::memchr(p.name, '\0', sizeof(p.name)) != nullptr);
    CHECK(std::memchr(p.backend, '\0', sizeof(p.backend)) != nullptr);
    CHECK(std::memchr(p.architecture, '\0', sizeof(p.architecture)) != nullptr);
    CHECK(p.name[0] != '\0');
    CHECK(p.architecture[0] != '\0');
    CHECK(std::string(p.backend) == backend_name());

    CHECK(p.total_memory > 0);
    CHECK(p.compute_units > 0);
    CHECK(p.max_work_group_size > 0);
    for (int d = 0; d < 3; ++d) {
      INFO("dimension " << d);
      CHECK(p.max_work_group_dims[d] > 0);
      CHECK(p.max_work_group_dims[d] <= p.max_work_group_size);
      CHECK(p.max_grid_dims[d] > 0);
    }
    CHECK(p.shared_memory_per_group > 0);
    CHECK(p.subgroup_size > 0);
    CHECK(p.clock_mhz >= 0);
    const bool host_is_device = (p.capabilities & PORTA_CAPABILITY_HOST_IS_DEVICE) != 0;
    CHECK(host_is_device == is_cpu_backend());
    // The CPU backend keeps freed ranges reserved, which lets it name uses after free.
    if (is_cpu_backend()) CHECK((p.capabilities & PORTA_CAPABILITY_RESERVED_ADDRESSES) != 0);
    // The CPU's groups may take half the core's L2, within 256 KiB and 1 MiB.
    if (is_cpu_backend()) {
      const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
      INFO("L2: " << l2 << " bytes");
      const long least = 256 << 10, most = 1 << 20;
      CHECK(p.shared_memory_per_group == std::clamp(l2 > 0 ? l2 / 2 : least, least, most));
    }
    // Every bit set is a documented capability.
    CHECK((p.capabilities & ~0xFFu) == 0);
  }
}

namespace {

// The CPU's feature flags, as Linux lists them (empty where it does not).
std::string cpu_flags() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("flags", 0) == 0) return " " + line.substr(line.find(':') + 1) + " ";
  }
  return "";
}

}  // namespace

TEST_CASE("device: the CPU's bf16 and matrix units are those its kernels use", "[device]") {
  if (!is_cpu_backend()) return;
  const std::string flags = cpu_flags();
  if (flags.empty()) {
    WARN("no /proc/cpuinfo flags: the CPU's bf16 capabilities not checked");
    return;
  }
  const auto has = [&](const char* flag) {
    return flags.find(" " + std::string(flag) + " ") != std::string::npos;
  };
  for (porta_device_t device : devices()) {
    const porta_device_properties_t p = properties(device);
    INFO("device " << device << ", " << p.architecture);
    // Only the x86-64-v4 kernels have the bf16 instructions and tiles.
    const bool v4 = std::string(p.architecture) == "x86-64-v4";
    const bool amx = v4 && has("amx_bf16") && has("amx_tile");
    CHECK(((p.capabilities & PORTA_CAPABILITY_MATRIX_CORES) != 0) == amx);
    CHECK(((p.capabilities & PORTA_CAPABILITY_BF16) != 0) == (amx || (v4 && has("avx512_bf16"))));
  }
}

TEST_CASE("device: properties honour struct_size", "[device]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    SECTION("a struct smaller than the first release's is refused and left untouched") {
      for (size_t size : {size_t{0}, sizeof(size_t), PORTA_DEVICE_PROPERTIES_MIN_SIZE - 1}) {
        INFO("struct_size " << size);
        porta_device_properties_t p;
        std::memset(&p, 0xCD, sizeof(p));
        p.struct_size = size;
        PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_properties(device, &p));
        CHECK(p.struct_size == size);
        CHECK(static_cast<unsigned char>(p.name[0]) == 0xCD);
        CHECK(p.compute_units == static_cast<int32_t>(0xCDCDCDCD));
      }
    }
    SECTION("a larger struct (a newer caller) is filled up to what this release knows") {
      constexpr size_t kExtra = 64;
      struct {
        porta_device_properties_t known;
        unsigned char future[kExtra];
      } bigger;
      std::memset(&bigger, 0xCD, sizeof(bigger));
      bigger.known.struct_size = sizeof(bigger);
      PT_REQUIRE_OK(porta_device_properties(device, &bigger.known));
      CHECK(bigger.known.name[0] != static_cast<char>(0xCD));
      CHECK(std::string(bigger.known.backend) == backend_name());
      for (size_t i = 0; i < kExtra; ++i) {
        INFO("byte " << i << " past the known struct");
        REQUIRE(bigger.future[i] == 0xCD);
      }
    }
  }
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_properties(0, nullptr));
}

TEST_CASE("device: memory info", "[device]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    uint64_t free_bytes = 0, total_bytes = 0;
    PT_REQUIRE_OK(porta_device_memory_info(device, &free_bytes, &total_bytes));
    CHECK(total_bytes > 0);
    CHECK(free_bytes <= total_bytes);
    CHECK(total_bytes == properties(device).total_memory);

    uint64_t untouched = 12345;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_device_memory_info(device, nullptr, &untouched));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_device_memory_info(device, &untouched, nullptr));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_device_memory_info(device, nullptr, nullptr));
    CHECK(untouched == 12345);
  }
}

TEST_CASE("device: an index out of range is NOT_FOUND everywhere", "[device]") {
  const int32_t count = device_count();
  std::vector<char> image;
  if (!kernels_path().empty()) image = read_file(kernels_path());
  for (porta_device_t bad : {count, count + 1, -1, INT32_MAX, INT32_MIN}) {
    INFO("device " << bad);
    porta_device_properties_t p;
    std::memset(&p, 0, sizeof(p));
    p.struct_size = sizeof(p);
    uint64_t a = 0, b = 0;
    void* ptr = reinterpret_cast<void*>(0x1);
    porta_stream_t stream = nullptr;
    porta_event_t event = nullptr;
    porta_module_t module = nullptr;
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_device_properties(bad, &p));
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_device_memory_info(bad, &a, &b));
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_device_synchronize(bad));
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_device_native_handle(bad, &ptr));
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_memory_alloc(bad, 256, &ptr));
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_host_alloc(bad, 256, &ptr));
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_stream_create(bad, &stream));
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_stream_default(bad, &stream));
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_event_create(bad, &event));
    if (!image.empty()) {
      PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND,
                     porta_module_load(bad, kernels_path().c_str(), &module));
      PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND,
                     porta_module_load_data(bad, image.data(), image.size(), &module));
    }
    // Nothing was written.
    CHECK(a == 0);
    CHECK(b == 0);
    CHECK(ptr == reinterpret_cast<void*>(0x1));
    CHECK(stream == nullptr);
    CHECK(event == nullptr);
    CHECK(module == nullptr);
  }
}

TEST_CASE("device: synchronize waits for every stream of the device", "[device]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    PT_CHECK_OK(porta_device_synchronize(device));  // idle
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Buffer out(device, 256);
    Stream a(device), b(device);
    PT_REQUIRE_OK(launch_spin(device, spin, out.as<float>(), a.get(), 0.5));
    PT_REQUIRE_OK(launch_spin(device, spin, out.as<float>() + 1, b.get(), 0.5));
    PT_REQUIRE_OK(porta_device_synchronize(device));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(a.get()));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(b.get()));
  }
}

TEST_CASE("device: native handle", "[device]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    void* native = reinterpret_cast<void*>(0x1);
    if (is_cpu_backend()) {
      PT_CHECK_FAILS(PORTA_ERROR_UNSUPPORTED, porta_device_native_handle(device, &native));
      CHECK(native == reinterpret_cast<void*>(0x1));
    } else {
      PT_REQUIRE_OK(porta_device_native_handle(device, &native));
      // hip's handle is a device ordinal cast to a pointer, which may be 0.
      if (backend_name() != "hip") CHECK(native != nullptr);
    }
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_native_handle(device, nullptr));
  }
}
