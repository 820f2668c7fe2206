// The portable op plugin: its entry point, its interface, and the kernel library of each device.
#include <dirent.h>
#include <dlfcn.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/common.h"
#include "portable_ops.h"

namespace porta::portable_ops {
namespace {

// A kernel and the most work-items a group of it may have (porta_kernel_max_group_size).
struct KnownKernel {
  porta::kernel kernel;
  int32_t max_group_size = 0;
};

// A device's kernel library, the kernels looked up in it so far and those it lacks.
struct DeviceKernels {
  porta::module module;
  std::map<std::string, KnownKernel, std::less<>> kernels;
  std::set<std::string, std::less<>> missing;
};

std::mutex mutex;
std::map<porta_device_t, std::unique_ptr<DeviceKernels>> devices;

// lib/portable_ops_kernels, found beside this plugin whatever the install prefix.
std::string kernel_library_base() {
  Dl_info info{};
  dladdr(reinterpret_cast<void*>(&kernel_library_base), &info);
  std::filesystem::path self = info.dli_fname ? info.dli_fname : "";
  return (self.parent_path() / "portable_ops_kernels").string();
}

// The Porta calls here run without mutex held: libporta's shutdown holds its own lock while it
// calls this plugin's shutdown, which takes mutex, so holding mutex across a Porta call would
// order the two locks both ways.
DeviceKernels& kernels_of(porta_device_t device) {
  {
    std::lock_guard lock(mutex);
    if (auto it = devices.find(device); it != devices.end()) return *it->second;
  }
  auto loaded = std::make_unique<DeviceKernels>();
  loaded->module = porta::module(device, kernel_library_base());
  std::lock_guard lock(mutex);
  std::unique_ptr<DeviceKernels>& slot = devices[device];
  if (!slot) slot = std::move(loaded);  // else another thread won; ours unloads on return
  return *slot;
}

}  // namespace

porta_status_t Ops::initialize(void** out_state) {
  *out_state = nullptr;
  return PORTA_SUCCESS;
}

// libporta calls this while it tears down, when Porta calls would deadlock; it unloads every
// module itself, so the handles are only let go.
void Ops::shutdown(void*) {
  std::lock_guard lock(mutex);
  for (auto& [device, kernels] : devices) kernels->module.release();
  devices.clear();
}

namespace {

// The start of the suffix of a backend's code objects: its name (.cpu-x86-64-v4.so,
// .cuda.fatbin, ...), or SPIR-V's for the backends that load SPIR-V (.spv, and .spir.bc for
// OpenCL drivers without SPIR-V).
std::string_view code_object_tag(std::string_view backend) {
  if (backend == "opencl") return "sp";
  if (backend == "level_zero") return "spv";
  return backend;
}

// Whether the kernel library has a code object for the backend: a file beside the plugin named
// portable_ops_kernels.<tag>... (porta_add_kernel_library names them so). Which of them fits the
// device porta_module_load decides.
// Read with opendir rather than std::filesystem, whose directory iterator ends the process when
// it runs out of memory; here that is std::bad_alloc, which the slot's guard reports.
bool has_code_object(std::string_view backend) {
  const std::filesystem::path base = kernel_library_base();
  const std::string prefix = base.filename().string() + "." + std::string(code_object_tag(backend));
  errno = 0;
  DIR* directory = opendir(base.parent_path().c_str());
  if (!directory) {
    if (errno == ENOMEM) throw std::bad_alloc();
    return false;
  }
  bool found = false;
  while (const dirent* entry = readdir(directory)) {
    if (std::string_view(entry->d_name).substr(0, prefix.size()) == prefix) {
      found = true;
      break;
    }
  }
  closedir(directory);
  return found;
}

// The kernels are written once; a backend is served when the build produced code for it.
}  // namespace

porta_status_t Ops::supports_backend(void*, const char* backend) {
  return plugin::guarded("supports_backend", [&]() -> porta_status_t {
    const std::string_view name(backend);
    if (name != "cpu" && name != "cuda" && name != "hip" && name != "opencl" &&
        name != "level_zero") {
      return plugin::fail(
          PORTA_ERROR_UNAVAILABLE,
          std::string("portable ops are not written for the ") + backend + " backend");
    }
    if (!has_code_object(name)) {
      return plugin::fail(PORTA_ERROR_UNAVAILABLE,
                          std::string("portable ops are not built for the ") + backend +
                              " backend: no " + kernel_library_base() + "." +
                              std::string(code_object_tag(name)) + "* code object");
    }
    return PORTA_SUCCESS;
  });
}

// Whether a code object of the kernel library fits the device: for HIP the device's own
// architecture's file; for CUDA SASS of its major version at or below its minor, or the PTX of
// the highest architecture, which the driver compiles for later GPUs. The answer names what was
// built, so that a GPU without code (gfx942 where gfx90a and gfx1030 were built) is told at
// initialisation, not at its first op.
porta_status_t Ops::supports_device(void*, const porta_device_properties_t* device) {
  const std::string_view backend(device->backend);
  const std::string architecture = device->architecture;
  std::string built;
  if (backend == "hip") {
    const std::filesystem::path base = kernel_library_base();
    const std::string prefix = base.filename().string() + ".hip-";
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(base.parent_path(), error)) {
      const std::string name = entry.path().filename().string();
      if (name.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string arch = name.substr(prefix.size(), name.rfind(".hsaco") - prefix.size());
      if (arch == architecture) return PORTA_SUCCESS;
      built += (built.empty() ? "" : ", ") + arch;
    }
  } else if (backend == "cuda" && architecture.rfind("sm_", 0) == 0) {
    const int cc = std::atoi(architecture.c_str() + 3);
    int highest = 0;
    std::string_view rest = PORTA_OPS_CUDA_ARCHITECTURES;
    while (!rest.empty()) {
      const size_t end = std::min(rest.find(','), rest.size());
      const int arch = std::atoi(std::string(rest.substr(0, end)).c_str());
      rest.remove_prefix(std::min(end + 1, rest.size()));
      if (arch / 10 == cc / 10 && arch <= cc) return PORTA_SUCCESS;
      highest = std::max(highest, arch);
      built += (built.empty() ? "sm_" : ", sm_") + std::to_string(arch);
    }
    if (highest > 0 && cc >= highest) return PORTA_SUCCESS;
    built += " (and PTX for compute_" + std::to_string(highest) + " and later)";
  } else {
    return PORTA_SUCCESS;
  }
  return plugin::fail(PORTA_ERROR_UNSUPPORTED, "portable ops have no code object for " +
                                                   architecture + "; they were built for " +
                                                   (built.empty() ? "none" : built));
}

namespace {

const porta_ops_interface_t kInterface = plugin::ops_interface<Ops>();

KnownKernel known_kernel(const Op& op, const char* name) {
  DeviceKernels& device = kernels_of(op.device);
  {
    std::lock_guard lock(mutex);
    if (auto it = device.kernels.find(name); it != device.kernels.end()) return it->second;
  }
  KnownKernel found;
  found.kernel = device.module.kernel(name);  // libporta returns the same handle twice
  porta::check(porta_kernel_max_group_size(found.kernel.get(), &found.max_group_size));
  std::lock_guard lock(mutex);
  return device.kernels.emplace(name, found).first->second;
}

}  // namespace

porta::kernel kernel_for(const Op& op, const char* name) { return known_kernel(op, name).kernel; }

int setting_choice(const char* variable, std::initializer_list<const char*> accepted) {
  const char* value = secure_getenv(variable);
  if (!value || !*value) return 0;
  const int count = static_cast<int>(accepted.size());
  int index = 0;
  std::string names;  // "a (default), b or c"
  for (const char* name : accepted) {
    if (std::strcmp(value, name) == 0) return index;
    const char* separator = index == 0 ? "" : index + 1 < count ? ", " : " or ";
    names += separator + std::string(name) + (index == 0 ? " (default)" : "");
    ++index;
  }
  plugin::throw_error(PORTA_ERROR_INVALID_ARGUMENT, std::string(variable) + "='" + value +
                                                        "' is not accepted; accepted: " + names);
}

bool has_kernel(const Op& op, const char* name) {
  DeviceKernels& device = kernels_of(op.device);
  {
    std::lock_guard lock(mutex);
    if (device.missing.count(name)) return false;
  }
  try {
    known_kernel(op, name);
    return true;
  } catch (const porta::error& e) {
    if (e.status() != PORTA_ERROR_NOT_FOUND) throw;
  }
  std::lock_guard lock(mutex);
  device.missing.emplace(name);
  return false;
}

bool runs_on_host(const Op& op) {
  // PORTA_CPU_MODE=simt|racecheck runs the GPU builds' source on the host, launched as on a GPU.
  const porta_device_properties_t& properties = *op.properties;
  const std::string_view architecture = properties.architecture;
  return std::string_view(properties.backend) == "cpu" && architecture != "simt" &&
         architecture != "racecheck";
}

uint32_t max_group_items(const Op& op, const char* name) {
  // At most the size of the kernels' per-item arrays in shared memory.
  const int64_t limit =
      std::min<int64_t>(porta_ops::kMaxItems, known_kernel(op, name).max_group_size);
  uint32_t items = 1;
  while (items * 2 <= limit) items *= 2;
  return items;
}

RowLaunch row_launch(const Op& op, const char* name, int64_t rows, int64_t length, int64_t per_item,
                     int64_t max_items) {
  const int64_t group_limit = max_group_items(op, name);
  int64_t items = 1, rows_per_group;
  if (runs_on_host(op)) {
    const int64_t threads = std::max<int64_t>(1, op.properties->compute_units);
    if (rows <= kHostOneGroupElements / std::max<int64_t>(length, 1)) {
      // A small op is one group, as launch_elementwise's: sixteen groups of bias add 64x128 (8K
      // floats) took 11.6-12.1 us, one 5.4-10.1.
      rows_per_group = std::min<int64_t>(rows, group_limit);
    } else {
      rows_per_group = std::clamp<int64_t>(8192 / length, 1, group_limit);
      rows_per_group = std::min(rows_per_group, std::max<int64_t>(1, rows / (8 * threads)));
    }
  } else {
    max_items = std::min(max_items, group_limit);
    while (items < max_items && items * per_item < length) items *= 2;
    rows_per_group = std::min({std::max<int64_t>(1, 256 / items), group_limit / items, rows});
  }
  const int64_t groups = (rows + rows_per_group - 1) / rows_per_group;
  return {wrapped_grid(groups),
          dim3(static_cast<uint32_t>(items), static_cast<uint32_t>(rows_per_group))};
}

// A stream's scratch buffer: its storage (porta_op_context_t.stream_storage).
struct StreamScratch {
  void* data = nullptr;
  size_t size = 0;
  std::mutex in_use;  // held by the Scratch of the op queuing work with data
};

Scratch scratch_for(const Op& op, size_t bytes) {
  StreamScratch& scratch =
      plugin::stream_storage<StreamScratch>(op, [] { return std::make_unique<StreamScratch>(); });
  std::unique_lock in_use(scratch.in_use);
  if (scratch.size < bytes) {
    // Grow by powers of two from 64 KiB, so that a series of larger calls reallocates rarely.
    if (bytes > SIZE_MAX / 2) throw std::bad_alloc();
    size_t size = size_t{64} << 10;
    while (size < bytes) size *= 2;
    void* data = nullptr;
    porta::check(porta_memory_alloc(op.device, size, &data));
    void* old = std::exchange(scratch.data, data);
    scratch.size = size;
    // Waits for the device, so work queued earlier with the old buffer finishes first. An
    // earlier asynchronous failure it reports becomes this op's error, as with any call that
    // synchronises.
    if (old) porta::check(porta_memory_free(old));
  }
  return Scratch(std::move(in_use), scratch.data);
}

// The stream is gone and its work finished: its buffer is freed, unless Porta is shutting down,
// which frees all memory itself.
void Ops::release_stream_storage(void*, void* storage, int32_t shutting_down) {
  std::unique_ptr<StreamScratch> scratch(static_cast<StreamScratch*>(storage));
  if (!shutting_down && scratch->data) {
    if (porta_memory_free(scratch->data) != PORTA_SUCCESS) {
      plugin::log(PORTA_LOG_WARN, std::string("freeing a destroyed stream's scratch: ") +
                                      porta_last_error_message());
    }
  }
}

}  // namespace porta::portable_ops

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  return porta::plugin::enter_ops(host, out_plugin,
                                  {.kind = PORTA_PLUGIN_KIND_OPS,
                                   .name = "portable",
                                   .version = "0.1.0",
                                   .backend = nullptr,
                                   .ops = &porta::portable_ops::kInterface,
                                   .name_in_errors = false});
}
