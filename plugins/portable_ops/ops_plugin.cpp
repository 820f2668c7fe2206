// The portable op plugin: its entry point, its interface, and the kernel library of each device.
#include <dlfcn.h>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "portable_ops.h"

namespace porta::portable_ops {
namespace {

const porta_host_api_t* host = nullptr;

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

DeviceKernels& kernels_of(porta_stream_t stream) {
  const porta_device_t device = porta::stream::wrap(stream, false).device();
  std::lock_guard lock(mutex);
  std::unique_ptr<DeviceKernels>& slot = devices[device];
  if (!slot) {
    auto loaded = std::make_unique<DeviceKernels>();
    loaded->module = porta::module(device, kernel_library_base());
    loaded->properties = porta::device_properties(device);
    slot = std::move(loaded);
  }
  return *slot;
}

porta_status_t initialize(porta_backend_context_t* out_context) {
  *out_context = nullptr;
  return PORTA_SUCCESS;
}

// libporta calls this while it tears down, when Porta calls would deadlock; it unloads every
// module itself, so the handles are only let go.
void shutdown(porta_backend_context_t) {
  std::lock_guard lock(mutex);
  for (auto& [device, kernels] : devices) kernels->module.release();
  devices.clear();
}

// The kernels are compiled for the CPU today; GPU builds come with their backends.
porta_status_t supports_backend(porta_backend_context_t, const char* backend) {
  if (std::string_view(backend) == "cpu") return PORTA_SUCCESS;
  return fail(PORTA_ERROR_UNAVAILABLE,
              std::string("portable ops are not built for the ") + backend + " backend");
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
};

}  // namespace

porta::kernel kernel_for(porta_stream_t stream, const char* name) {
  DeviceKernels& device = kernels_of(stream);
  std::lock_guard lock(mutex);
  auto it = device.kernels.find(name);
  if (it == device.kernels.end()) {
    it = device.kernels.emplace(name, device.module.kernel(name)).first;
  }
  return it->second;
}

const porta_device_properties_t& properties_of(porta_stream_t stream) {
  return kernels_of(stream).properties;
}

porta_status_t fail(porta_status_t status, const std::string& message) {
  if (host) host->set_error_message(message.c_str());
  return status;
}

}  // namespace porta::portable_ops

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  if (!host || !out_plugin || out_plugin->struct_size < sizeof(porta_plugin_t)) {
    return PORTA_ERROR_INCOMPATIBLE_VERSION;
  }
  porta::portable_ops::host = host;
  out_plugin->abi_major = PORTA_PLUGIN_ABI_MAJOR;
  out_plugin->abi_minor = PORTA_PLUGIN_ABI_MINOR;
  out_plugin->kind = PORTA_PLUGIN_KIND_OPS;
  out_plugin->name = "portable";
  out_plugin->version = "0.1.0";
  out_plugin->backend = nullptr;
  out_plugin->ops = &porta::portable_ops::kInterface;
  return PORTA_SUCCESS;
}
