// The portable op plugin: its entry point, its interface, and the kernel library of each device.
#include <dirent.h>
#include <dlfcn.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "portable_ops.h"

namespace porta::portable_ops {
namespace {

// A device's kernel library and the kernels looked up in it so far.
struct DeviceKernels {
  porta::module module;
  std::map<std::string, porta::kernel, std::less<>> kernels;
  porta_device_properties_t properties{};
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
DeviceKernels& kernels_of(porta_stream_t stream) {
  const porta_device_t device = porta::stream::wrap(stream, false).device();
  {
    std::lock_guard lock(mutex);
    if (auto it = devices.find(device); it != devices.end()) return *it->second;
  }
  auto loaded = std::make_unique<DeviceKernels>();
  loaded->module = porta::module(device, kernel_library_base());
  loaded->properties = porta::device_properties(device);
  std::lock_guard lock(mutex);
  std::unique_ptr<DeviceKernels>& slot = devices[device];
  if (!slot) slot = std::move(loaded);  // else another thread won; ours unloads on return
  return *slot;
}

// Scratch buffers (portable_ops.h), one per stream handle. A handle's generation makes a
// destroyed stream's handle dead for good, and porta_stream_destroy lets the stream's work finish
// first, so the buffer of a dead stream is idle: the next stream of its device that needs one
// adopts it instead of allocating. scratch_mutex guards the map only and is never held across a
// Porta call; an op holds its stream's slot lock (in_use) while it queues work, and shutdown
// (called by libporta under its own lock) takes only scratch_mutex, so no lock order cycles.
std::mutex scratch_mutex;
std::map<porta_stream_t, std::shared_ptr<ScratchSlot>> scratch_slots;

bool stream_is_live(porta_stream_t stream) {
  porta_device_t device;
  return porta_stream_device(stream, &device) == PORTA_SUCCESS;
}

porta_status_t initialize(porta_backend_context_t* out_context) {
  *out_context = nullptr;
  return PORTA_SUCCESS;
}

// libporta calls this while it tears down, when Porta calls would deadlock; it unloads every
// module itself, so the handles are only let go.
void shutdown(porta_backend_context_t) {
  {
    std::lock_guard lock(mutex);
    for (auto& [device, kernels] : devices) kernels->module.release();
    devices.clear();
  }
  // Scratch memory is freed by the runtime with every other allocation.
  std::lock_guard lock(scratch_mutex);
  scratch_slots.clear();
}

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
porta_status_t supports_backend(porta_backend_context_t, const char* backend) {
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
porta_status_t supports_device(porta_backend_context_t, const porta_device_properties_t* device) {
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

const porta_ops_interface_t kInterface = {
    .struct_size = sizeof(porta_ops_interface_t),
    .initialize = initialize,
    .shutdown = shutdown,
    .supports_backend = supports_backend,
    .gemm = gemm,
    .conv2d_forward = conv2d_forward,
    .conv2d_backward_data = conv2d_backward_data,
    .conv2d_backward_weights = conv2d_backward_weights,
    .softmax_forward = softmax_forward,
    .softmax_backward = softmax_backward,
    .cross_entropy = cross_entropy,
    .bias_add = bias_add,
    .bias_backward = bias_backward,
    .relu_forward = relu_forward,
    .relu_backward = relu_backward,
    .max_pool2d_forward = max_pool2d_forward,
    .max_pool2d_backward = max_pool2d_backward,
    .sgd_update = sgd_update,
    .adam_update = adam_update,
    .convert = convert,
    .supports_device = supports_device,
};

}  // namespace

porta::kernel kernel_for(porta_stream_t stream, const char* name) {
  DeviceKernels& device = kernels_of(stream);
  {
    std::lock_guard lock(mutex);
    if (auto it = device.kernels.find(name); it != device.kernels.end()) return it->second;
  }
  porta::kernel found = device.module.kernel(name);  // libporta returns the same handle twice
  std::lock_guard lock(mutex);
  return device.kernels.emplace(name, found).first->second;
}

const porta_device_properties_t& properties_of(porta_stream_t stream) {
  return kernels_of(stream).properties;
}

bool runs_on_host(porta_stream_t stream) {
  // PORTA_CPU_MODE=simt|racecheck runs the GPU builds' source on the host, launched as on a GPU.
  const porta_device_properties_t& properties = properties_of(stream);
  const std::string_view architecture = properties.architecture;
  return std::string_view(properties.backend) == "cpu" && architecture != "simt" &&
         architecture != "racecheck";
}

uint32_t max_group_items(porta_stream_t stream, const char* name) {
  constexpr int64_t kMaxItems = 1024;  // porta_ops::kMaxItems, the shared arrays' size
  int32_t kernel_limit = 0;
  porta::check(porta_kernel_max_group_size(kernel_for(stream, name).get(), &kernel_limit));
  const int64_t limit = std::min<int64_t>(kMaxItems, kernel_limit);
  uint32_t items = 1;
  while (items * 2 <= limit) items *= 2;
  return items;
}

RowLaunch row_launch(porta_stream_t stream, const char* name, int64_t rows, int64_t length,
                     int64_t per_item, int64_t max_items) {
  const int64_t group_limit = max_group_items(stream, name);
  int64_t items = 1, rows_per_group;
  if (runs_on_host(stream)) {
    const int64_t threads = std::max<int64_t>(1, properties_of(stream).compute_units);
    rows_per_group = std::clamp<int64_t>(8192 / length, 1, group_limit);
    rows_per_group = std::min(rows_per_group, std::max<int64_t>(1, rows / (8 * threads)));
  } else {
    max_items = std::min(max_items, group_limit);
    while (items < max_items && items * per_item < length) items *= 2;
    rows_per_group = std::min({std::max<int64_t>(1, 256 / items), group_limit / items, rows});
  }
  const int64_t groups = (rows + rows_per_group - 1) / rows_per_group;
  return {wrapped_grid(groups),
          dim3(static_cast<uint32_t>(items), static_cast<uint32_t>(rows_per_group))};
}

struct ScratchSlot {
  porta_device_t device = 0;
  void* data = nullptr;
  size_t size = 0;
  std::mutex in_use;  // held by the Scratch of the op queuing work with data
};

namespace {

// The stream's slot, made on its first use; it adopts the largest buffer that a destroyed stream
// of the device left, unless a call on that dead handle still holds it.
std::shared_ptr<ScratchSlot> scratch_slot(porta_stream_t stream, porta_device_t device) {
  std::vector<porta_stream_t> others;
  {
    std::lock_guard lock(scratch_mutex);
    if (auto it = scratch_slots.find(stream); it != scratch_slots.end()) return it->second;
    for (const auto& [handle, slot] : scratch_slots) {
      if (slot->device == device) others.push_back(handle);
    }
  }
  std::vector<porta_stream_t> dead;  // checked outside the lock: a Porta call each
  for (porta_stream_t handle : others) {
    if (!stream_is_live(handle)) dead.push_back(handle);
  }
  auto made = std::make_shared<ScratchSlot>();
  made->device = device;
  std::lock_guard lock(scratch_mutex);
  auto [it, inserted] = scratch_slots.try_emplace(stream, made);
  if (!inserted) return it->second;  // another call on this stream made it meanwhile
  auto heir = scratch_slots.end();
  for (porta_stream_t handle : dead) {
    auto found = scratch_slots.find(handle);
    if (found == scratch_slots.end()) continue;  // adopted meanwhile
    if (heir == scratch_slots.end() || found->second->size > heir->second->size) heir = found;
  }
  if (heir != scratch_slots.end()) {
    ScratchSlot& old = *heir->second;
    if (old.in_use.try_lock()) {
      made->data = std::exchange(old.data, nullptr);
      made->size = std::exchange(old.size, 0);
      old.in_use.unlock();
      scratch_slots.erase(heir);
    }
  }
  return made;
}

}  // namespace

Scratch scratch_for(porta_stream_t stream, size_t bytes) {
  const porta_device_t device = porta::stream::wrap(stream, false).device();
  std::shared_ptr<ScratchSlot> slot = scratch_slot(stream, device);
  std::unique_lock in_use(slot->in_use);
  if (slot->size < bytes) {
    // Grow by powers of two from 64 KiB, so that a series of larger calls reallocates rarely.
    if (bytes > SIZE_MAX / 2) throw std::bad_alloc();
    size_t size = size_t{64} << 10;
    while (size < bytes) size *= 2;
    void* data = nullptr;
    porta::check(porta_memory_alloc(device, size, &data));
    void* old = std::exchange(slot->data, data);
    slot->size = size;
    // Waits for the device, so work queued earlier with the old buffer finishes first. An
    // earlier asynchronous failure it reports becomes this op's error, as with any call that
    // synchronises.
    if (old) porta::check(porta_memory_free(old));
  }
  void* data = slot->data;
  return Scratch(std::move(slot), std::move(in_use), data);
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
