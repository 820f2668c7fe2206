// An op plugin of the project: porta_relu_forward on the CPU backend, run by the project's own
// kernel library (example_kernels, found beside this plugin). Every other slot is NULL, so with
// PORTA_OPS=example those ops run on Porta's portable plugin.
#include <dlfcn.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include <porta/porta.hpp>

#include "op_plugin.h"
#include "plugin_kit.h"

namespace {

constexpr uint32_t kGroup = 256;

std::mutex mutex;
std::map<porta_device_t, porta::module> modules;

std::string kernel_library() {
  Dl_info info{};
  dladdr(reinterpret_cast<void*>(&kernel_library), &info);
  return (std::filesystem::path(info.dli_fname ? info.dli_fname : "").parent_path() /
          "example_kernels")
      .string();
}

porta::kernel relu_kernel(porta_device_t device) {
  std::lock_guard lock(mutex);
  auto found = modules.find(device);
  if (found == modules.end()) {
    found = modules.emplace(device, porta::module(device, kernel_library())).first;
  }
  return found->second.kernel("relu");
}

// The slots, for plugin::ops_interface: the ops it has no function for stay NULL.
struct Ops {
  static porta_status_t initialize(void** out_state) {
    *out_state = nullptr;
    return PORTA_SUCCESS;
  }

  // libporta unloads every module itself while it tears down: the handles are only let go.
  static void shutdown(void*) {
    std::lock_guard lock(mutex);
    for (auto& [device, module] : modules) module.release();
    modules.clear();
  }

  static porta_status_t supports_backend(void*, const char* backend) {
    if (std::string_view(backend) == "cpu") return PORTA_SUCCESS;
    return porta::plugin::fail(
        PORTA_ERROR_UNAVAILABLE,
        std::string("example ops serve the cpu backend only, not ") + backend);
  }

  static porta_status_t relu_forward(const porta_op_context_t* op,
                                     const porta_relu_forward_args_t* args) {
    return porta::plugin::guarded("porta_relu_forward", [&] {
      const int64_t count = args->count;
      if (count > int64_t(UINT32_MAX) * kGroup) {
        porta::plugin::throw_error(PORTA_ERROR_UNSUPPORTED,
                                   "count " + std::to_string(count) + " is more than one launch covers");
      }
      const porta::stream s = porta::stream::wrap(op->stream, false);
      const uint32_t groups = uint32_t((count + kGroup - 1) / kGroup);
      relu_kernel(op->device).launch(s, groups, kGroup, count, args->x, args->y);
    });
  }
};

const porta_ops_interface_t kInterface = porta::plugin::ops_interface<Ops>();

}  // namespace

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  return porta::plugin::enter_ops(host, out_plugin,
                                  {.kind = PORTA_PLUGIN_KIND_OPS,
                                   .name = "example",
                                   .version = "example 1.0",
                                   .backend = nullptr,
                                   .ops = &kInterface,
                                   .name_in_errors = false});
}
