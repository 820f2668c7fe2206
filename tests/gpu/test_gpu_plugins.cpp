// porta-gpu-plugin-tests: the CUDA and HIP plugins as they behave everywhere, GPU or not.
//
// Where the driver or a device is missing (this project's CI), a backend named alone must fail
// with PORTA_ERROR_UNAVAILABLE and the reason (the dlerror text or the driver's error name), the
// loader report must say so, and "auto" must still reach the CPU. Where a GPU is present, the same
// tests check that the backend loads and describes its devices. The code-object checks run the
// plugin's own image validation (gpu_image.cpp, compiled in) on the code objects the build made.
#define CATCH_CONFIG_MAIN
#include <porta/porta.h>
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gpu_image.h"
#include "gpu_vendor.h"
#include "plugin_kit.h"

namespace {

struct Fresh {
  Fresh() {
    for (const char* name : {"PORTA_BACKEND", "PORTA_DEVICE", "PORTA_PLUGIN_PATH"}) unsetenv(name);
    porta_shutdown();
  }
  ~Fresh() { porta_shutdown(); }
};

porta_init_options_t options(const char* backend) {
  porta_init_options_t o;
  std::memset(&o, 0, sizeof(o));
  o.struct_size = sizeof(o);
  o.backend = backend;
  o.log_level = "off";
  return o;
}

bool report_row(const std::string& name, porta_plugin_report_t& out) {
  size_t count = 0;
  REQUIRE(porta_loader_report_count(&count) == PORTA_SUCCESS);
  for (size_t i = 0; i < count; ++i) {
    std::memset(&out, 0, sizeof(out));
    out.struct_size = sizeof(out);
    REQUIRE(porta_loader_report_get(i, &out) == PORTA_SUCCESS);
    if (name == out.name) return true;
  }
  return false;
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  REQUIRE(file.good());
  return std::vector<char>(std::istreambuf_iterator<char>(file), {});
}

const std::string kBackend = porta::gpu::kBackendName;

}  // namespace

TEST_CASE("gpu plugin: named alone, it loads or says why not") {
  Fresh fresh;
  porta_init_options_t o = options(kBackend.c_str());
  const porta_status_t status = porta_init(&o);
  const std::string message = porta_last_error_message();
  porta_plugin_report_t row;
  REQUIRE(report_row(kBackend, row));
  INFO("status " << porta_status_name(status) << ", message: " << message);
  INFO("report: outcome " << row.outcome << ", path " << row.path << ", reason " << row.reason);
  CHECK(std::string(row.path).find("libporta_" + kBackend + ".so") != std::string::npos);
  if (status == PORTA_SUCCESS) {
    // A machine with the driver and a GPU.
    CHECK(row.outcome == PORTA_PLUGIN_LOADED);
    CHECK(row.device_count > 0);
    porta_device_properties_t p{};
    p.struct_size = sizeof(p);
    REQUIRE(porta_device_properties(0, &p) == PORTA_SUCCESS);
    CHECK(std::string(p.backend) == kBackend);
    CHECK(std::string(p.architecture).rfind(kBackend == "cuda" ? "sm_" : "gfx", 0) == 0);
    return;
  }
  // The plugin itself loaded (ABI read), and its driver or device is missing.
  CHECK(status == PORTA_ERROR_UNAVAILABLE);
  CHECK(row.outcome == PORTA_PLUGIN_UNAVAILABLE);
  CHECK(row.status == PORTA_ERROR_UNAVAILABLE);
  CHECK(row.abi_major == PORTA_PLUGIN_ABI_MAJOR);
  const std::string reason = row.reason;
  CHECK(reason.rfind(kBackend + ": ", 0) == 0);
  // Either dlopen's own text naming the library, or the driver's error name and code.
  const bool dlopen_failed = reason.find(porta::gpu::kDriverLibraries[0]) != std::string::npos;
  const bool driver_error =
      reason.find(kBackend == "cuda" ? "CUDA_ERROR_" : "hipError") != std::string::npos &&
      reason.find('(') != std::string::npos;
  CHECK((dlopen_failed || driver_error));
  // A run against a known driver names the error it must give: the toolkit's stub libcuda
  // resolves every symbol of the table (so none is misspelled or missing from a real export
  // list) and then fails cuInit with CUDA_ERROR_STUB_LIBRARY.
  if (const char* expected = std::getenv("PORTA_TEST_EXPECT_DRIVER_ERROR"); expected && *expected) {
    CHECK(reason.find(expected) != std::string::npos);
    CHECK(reason.find(" lacks ") == std::string::npos);
  }
  // porta_init's message names the backend, the file and that reason.
  CHECK(message.find(kBackend) != std::string::npos);
  CHECK(message.find(reason) != std::string::npos);
  // It is kept: every call returns the same status until shutdown.
  int32_t count = -1;
  CHECK(porta_device_count(&count) == PORTA_ERROR_UNAVAILABLE);
  CHECK(count == -1);
}

TEST_CASE("gpu plugin: auto still reaches the CPU when no GPU is usable") {
  Fresh fresh;
  porta_init_options_t o = options("auto");
  REQUIRE(porta_init(&o) == PORTA_SUCCESS);
  porta_plugin_report_t row;
  REQUIRE(report_row(kBackend, row));
  const char* selected = nullptr;
  REQUIRE(porta_backend_selected(&selected) == PORTA_SUCCESS);
  if (row.outcome == PORTA_PLUGIN_LOADED) {
    // A GPU machine: the GPU comes first in auto's order.
    CHECK(std::string(selected) != "cpu");
  } else {
    CHECK(row.outcome == PORTA_PLUGIN_UNAVAILABLE);
    CHECK(std::string(row.reason).size() > 0);
    // cuda and hip come before the CPU in "auto"; with neither usable, the CPU is selected.
    porta_plugin_report_t other;
    const bool gpu_elsewhere = report_row(kBackend == "cuda" ? "hip" : "cuda", other) &&
                               other.outcome == PORTA_PLUGIN_LOADED;
    if (!gpu_elsewhere) CHECK(std::string(selected) == "cpu");
  }
}

TEST_CASE("gpu plugin: code objects are checked before the driver reads them") {
  // The build's, or where the tests run away from the build, the one PORTA_TEST_KERNELS names.
  const char* named = std::getenv("PORTA_TEST_KERNELS");
  const std::string file = named && *named ? named : PORTA_TEST_GPU_CODE_OBJECT;
  INFO("code object " << file);
  const std::vector<char> image = read_file(file);
  REQUIRE(image.size() > 64);
  // The build's own code object passes, and the copy is the image with a zero tail.
  const std::vector<uint64_t> copy = porta::gpu::checked_image(image.data(), image.size());
  REQUIRE(copy.size() * sizeof(uint64_t) > image.size());
  CHECK(std::memcmp(copy.data(), image.data(), image.size()) == 0);
  CHECK(reinterpret_cast<const char*>(copy.data())[image.size()] == '\0');

  auto refused = [](const void* data, size_t size) -> porta_status_t {
    try {
      porta::gpu::checked_image(data, size);
    } catch (const porta::plugin::Failure& failure) {
      INFO(failure.what());
      CHECK(std::string(failure.what()).find("module_load_data") != std::string::npos);
      return failure.status();
    }
    return PORTA_SUCCESS;
  };
  // Every truncation is refused: the driver, given no size, would read past the end.
  for (size_t size :
       {size_t{1}, size_t{4}, size_t{16}, size_t{63}, image.size() / 2, image.size() - 1}) {
    INFO("truncated to " << size << " bytes");
    CHECK(refused(image.data(), size) == PORTA_ERROR_INVALID_ARGUMENT);
  }
  // Not a code object at all.
  const std::string text = "hello, this is not a code object at all, nor PTX.";
  CHECK(refused(text.data(), text.size()) == PORTA_ERROR_INVALID_ARGUMENT);
  // Code for another machine: this program, an ELF for the host's processor.
  const std::vector<char> host = read_file("/proc/self/exe");
  CHECK(refused(host.data(), host.size()) == PORTA_ERROR_INCOMPATIBLE_VERSION);
}

#if !defined(PORTA_GPU_HIP)
TEST_CASE("gpu plugin: PTX text is accepted and NUL-terminated") {
  const std::string ptx = ".version 8.0\n.target sm_80\n.address_size 64\n";
  const std::vector<uint64_t> copy = porta::gpu::checked_image(ptx.data(), ptx.size());
  CHECK(std::string(reinterpret_cast<const char*>(copy.data())) == ptx);
}
#endif

#if defined(PORTA_GPU_HIP)
// ROCm 6.2 and later compress offload bundles by default ("CCOB"); the runtime decompresses
// them, so the plugin accepts them, checking the size the header declares.
TEST_CASE("gpu plugin: compressed offload bundles are accepted, their size checked") {
  auto bundle = [](uint16_t version, uint64_t declared, size_t size) {
    std::vector<unsigned char> bytes(size, 0x5a);
    std::memcpy(bytes.data(), "CCOB", 4);
    const uint16_t method = 1;  // zlib
    std::memcpy(bytes.data() + 4, &version, 2);
    std::memcpy(bytes.data() + 6, &method, 2);
    if (version == 2) {
      const uint32_t total = static_cast<uint32_t>(declared);
      std::memcpy(bytes.data() + 8, &total, 4);
    } else if (version == 3) {
      std::memcpy(bytes.data() + 8, &declared, 8);
    }
    return bytes;
  };
  auto status = [](const std::vector<unsigned char>& bytes) -> porta_status_t {
    try {
      porta::gpu::checked_image(bytes.data(), bytes.size());
    } catch (const porta::plugin::Failure& failure) {
      INFO(failure.what());
      return failure.status();
    }
    return PORTA_SUCCESS;
  };
  CHECK(status(bundle(1, 0, 100)) == PORTA_SUCCESS);
  CHECK(status(bundle(2, 100, 100)) == PORTA_SUCCESS);
  CHECK(status(bundle(3, 100, 100)) == PORTA_SUCCESS);
  CHECK(status(bundle(2, 101, 100)) == PORTA_ERROR_INVALID_ARGUMENT);  // truncated
  CHECK(status(bundle(3, 4096, 100)) == PORTA_ERROR_INVALID_ARGUMENT);
  CHECK(status(bundle(3, 100, 20)) == PORTA_ERROR_INVALID_ARGUMENT);  // header cut short
  CHECK(status(bundle(9, 100, 100)) == PORTA_ERROR_INCOMPATIBLE_VERSION);
}
#endif
