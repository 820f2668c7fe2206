#include "common.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>

namespace porta_test {

std::string backend_name() {
  const char* name = nullptr;
  PT_REQUIRE_OK(porta_backend_selected(&name));
  REQUIRE(name != nullptr);
  return name;
}

bool is_cpu_backend() { return backend_name() == "cpu"; }

std::vector<porta_device_t> devices_with_reserved_addresses(const char* check) {
  std::vector<porta_device_t> result;
  for (porta_device_t device : devices()) {
    if (properties(device).capabilities & PORTA_CAPABILITY_RESERVED_ADDRESSES) {
      result.push_back(device);
    } else {
      WARN("device " << device << ": " << check
                     << " not checked: its freed memory may become the "
                        "host's (no PORTA_CAPABILITY_RESERVED_ADDRESSES)");
    }
  }
  return result;
}

int32_t device_count() {
  int32_t count = 0;
  PT_REQUIRE_OK(porta_device_count(&count));
  return count;
}

std::vector<porta_device_t> devices() {
  std::vector<porta_device_t> result;
  const std::string backend = backend_name();
  const int32_t count = device_count();
  for (porta_device_t device = 0; device < count; ++device) {
    // With "auto" or a list, several backends' devices may be enumerated; the suite covers the
    // selected one.
    if (properties(device).backend == backend) result.push_back(device);
  }
  REQUIRE_FALSE(result.empty());
  return result;
}

porta_device_properties_t properties(porta_device_t device) {
  porta_device_properties_t props;
  std::memset(&props, 0, sizeof(props));
  props.struct_size = sizeof(props);
  PT_REQUIRE_OK(porta_device_properties(device, &props));
  return props;
}

// ---- owners -------------------------------------------------------------------------------------

Buffer::Buffer(porta_device_t device, size_t size, Kind kind) : size_(size), kind_(kind) {
  if (kind == kDevice) {
    PT_REQUIRE_OK(porta_memory_alloc(device, size, &ptr_));
  } else {
    PT_REQUIRE_OK(porta_host_alloc(device, size, &ptr_));
  }
  if (size > 0) REQUIRE(ptr_ != nullptr);
}

Buffer::~Buffer() {
  if (!ptr_) return;
  const porta_status_t status = kind_ == kDevice ? porta_memory_free(ptr_) : porta_host_free(ptr_);
  CHECK(Status{status} == Status{PORTA_SUCCESS});
}

Stream::Stream(porta_device_t device) {
  PT_REQUIRE_OK(porta_stream_create(device, &stream_));
  REQUIRE(stream_ != nullptr);
}

Stream::~Stream() {
  if (stream_) CHECK(Status{porta_stream_destroy(stream_)} == Status{PORTA_SUCCESS});
}

Event::Event(porta_device_t device) {
  PT_REQUIRE_OK(porta_event_create(device, &event_));
  REQUIRE(event_ != nullptr);
}

Event::~Event() {
  if (event_) CHECK(Status{porta_event_destroy(event_)} == Status{PORTA_SUCCESS});
}

Module::Module(porta_device_t device) {
  const std::string path = kernels_path();
  REQUIRE_FALSE(path.empty());
  PT_REQUIRE_OK(porta_module_load(device, path.c_str(), &module_));
  REQUIRE(module_ != nullptr);
}

Module::~Module() {
  if (module_) CHECK(Status{porta_module_unload(module_)} == Status{PORTA_SUCCESS});
}

porta_kernel_t Module::kernel(const char* name) const {
  porta_kernel_t kernel = nullptr;
  INFO("kernel " << name);
  PT_REQUIRE_OK(porta_kernel_get(module_, name, &kernel));
  REQUIRE(kernel != nullptr);
  return kernel;
}

// ---- the test kernels ---------------------------------------------------------------------------

std::string kernels_path() {
  if (const char* path = std::getenv("PORTA_TEST_KERNELS"); path && *path) return path;
  const char* selected = nullptr;
  if (porta_backend_selected(&selected) != PORTA_SUCCESS) return {};
  const std::string backend = selected;
#ifdef PORTA_TEST_KERNELS_CPU
  if (backend == "cpu") return PORTA_TEST_KERNELS_CPU;
#endif
#ifdef PORTA_TEST_KERNELS_GPU_BASE
  // The GPU builds of tests/kernels/test_kernels_gpu.cpp: one fatbin for every CUDA device, one
  // code object per AMD architecture (that of the default device, which the suite tests).
  std::string file;
  if (backend == "cuda") file = std::string(PORTA_TEST_KERNELS_GPU_BASE) + ".cuda.fatbin";
  porta_device_t device = 0;
  porta_device_properties_t props{};
  props.struct_size = sizeof(props);
  if (backend == "hip" && porta_device_default(&device) == PORTA_SUCCESS &&
      porta_device_properties(device, &props) == PORTA_SUCCESS) {
    file = std::string(PORTA_TEST_KERNELS_GPU_BASE) + ".hip-" + props.architecture + ".hsaco";
  }
  // OpenCL and Level Zero: the SPIR-V build, or the SPIR 1.2 one for an OpenCL device that takes
  // no SPIR-V (its architecture is "spir").
  if (backend == "opencl" || backend == "level_zero") {
    const bool spir = porta_device_default(&device) == PORTA_SUCCESS &&
                      porta_device_properties(device, &props) == PORTA_SUCCESS &&
                      std::string(props.architecture) == "spir";
    file = std::string(PORTA_TEST_KERNELS_GPU_BASE) + (spir ? ".spir.bc" : ".spv");
  }
  std::error_code ignored;
  if (!file.empty() && std::filesystem::is_regular_file(file, ignored)) return file;
#endif
  return {};
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  REQUIRE(file.good());
  return std::vector<char>(std::istreambuf_iterator<char>(file), {});
}

porta_launch_config_t launch_config(std::array<uint32_t, 3> grid, std::array<uint32_t, 3> group,
                                    uint32_t shared_memory_bytes) {
  porta_launch_config_t config;
  std::memset(&config, 0, sizeof(config));
  config.struct_size = sizeof(config);
  for (int i = 0; i < 3; ++i) {
    config.grid[i] = grid[i];
    config.group[i] = group[i];
  }
  config.shared_memory_bytes = shared_memory_bytes;
  return config;
}

porta_status_t launch_saxpy(porta_kernel_t saxpy, int n, float a, const float* x, float* y,
                            uint32_t group_size, porta_stream_t stream) {
  const uint32_t groups = (static_cast<uint32_t>(n) + group_size - 1) / group_size;
  porta_launch_config_t config = launch_config({groups, 1, 1}, {group_size, 1, 1});
  void* args[] = {&n, &a, &x, &y};
  const size_t sizes[] = {sizeof n, sizeof a, sizeof x, sizeof y};
  config.arg_count = 4;
  config.arg_sizes = sizes;
  return porta_kernel_launch(saxpy, &config, args, stream);
}

porta_status_t launch_spin(porta_device_t device, porta_kernel_t spin, float* out,
                           porta_stream_t stream, double scale) {
  int64_t iterations = static_cast<int64_t>(static_cast<double>(spin_iterations(device)) * scale);
  porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1});
  void* args[] = {&iterations, &out};
  return porta_kernel_launch(spin, &config, args, stream);
}

int64_t spin_iterations(porta_device_t device) {
  static std::mutex mutex;
  static std::map<porta_device_t, int64_t> calibrated;
  std::lock_guard lock(mutex);
  if (auto it = calibrated.find(device); it != calibrated.end()) return it->second;

  Module module(device);
  porta_kernel_t spin = module.kernel("spin");
  Buffer out(device, 256);
  Stream stream(device);
  porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1});
  float* out_ptr = out.as<float>();
  // Grow until one run takes long enough (20 ms) to time reliably, then scale to the target.
  int64_t iterations = int64_t{1} << 14;
  double elapsed = 0;
  for (;;) {
    void* args[] = {&iterations, &out_ptr};
    const double start = now_ms();
    PT_REQUIRE_OK(porta_kernel_launch(spin, &config, args, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    elapsed = now_ms() - start;
    if (elapsed >= 20.0 || iterations >= (int64_t{1} << 40)) break;
    iterations *= elapsed < 2.0 ? 8 : 2;
  }
  // The least disturbed of three runs: on a loaded host the spin then lasts longer than the
  // target, never much shorter. (The tests compare it with the host's own measures anyway.)
  for (int run = 0; run < 2; ++run) {
    void* args[] = {&iterations, &out_ptr};
    const double start = now_ms();
    PT_REQUIRE_OK(porta_kernel_launch(spin, &config, args, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    elapsed = std::min(elapsed, now_ms() - start);
  }
  const int64_t result =
      std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iterations) * kSpinTargetMs /
                                                std::max(elapsed, 1e-3)));
  calibrated[device] = result;
  return result;
}

// ---- host-side helpers --------------------------------------------------------------------------

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/porta-test-XXXXXX";
  std::vector<char> buffer(templ.begin(), templ.end());
  buffer.push_back('\0');
  REQUIRE(mkdtemp(buffer.data()) != nullptr);
  path_ = buffer.data();
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string TempDir::write(const std::string& name, const void* data, size_t size) const {
  const std::string file = path_ + "/" + name;
  std::ofstream out(file, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  REQUIRE(out.good());
  return file;
}

std::vector<uint8_t> pattern(size_t size, uint32_t seed) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = pattern_byte(i, seed);
  return bytes;
}

std::vector<uint8_t> download(const void* device_ptr, size_t size) {
  std::vector<uint8_t> bytes(size, 0);
  if (size > 0) PT_REQUIRE_OK(porta_memcpy(bytes.data(), device_ptr, size));
  return bytes;
}

}  // namespace porta_test
