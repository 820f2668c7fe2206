#include "loader.h"

#include <dlfcn.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>

#include "error.h"
#include "log.h"

namespace porta {
namespace {

void host_set_error_message(const char* message) { set_plugin_message(message); }

void host_log(porta_log_level_t level, const char* message) {
  if (level >= PORTA_LOG_OFF || !message) return;
  log().log(static_cast<spdlog::level::level_enum>(level), "{}", message);
}

const porta_host_api_t kHostApi{sizeof(porta_host_api_t), host_set_error_message, host_log};

// The slots every backend must fill; the others are optional.
struct RequiredSlot {
  const char* name;
  size_t offset;
};
#define PORTA_SLOT(slot) RequiredSlot{#slot, offsetof(porta_backend_interface_t, slot)}
constexpr RequiredSlot kRequiredSlots[] = {
    PORTA_SLOT(initialize),         PORTA_SLOT(shutdown),          PORTA_SLOT(device_properties),
    PORTA_SLOT(device_memory_info), PORTA_SLOT(device_synchronize), PORTA_SLOT(memory_alloc),
    PORTA_SLOT(memory_free),        PORTA_SLOT(host_alloc),         PORTA_SLOT(host_free),
    PORTA_SLOT(stream_create),      PORTA_SLOT(stream_destroy),     PORTA_SLOT(stream_synchronize),
    PORTA_SLOT(stream_query),       PORTA_SLOT(stream_wait_event),  PORTA_SLOT(memcpy_async),
    PORTA_SLOT(memset_async),       PORTA_SLOT(event_create),       PORTA_SLOT(event_destroy),
    PORTA_SLOT(event_record),       PORTA_SLOT(event_query),        PORTA_SLOT(event_synchronize),
    PORTA_SLOT(event_elapsed_ms),   PORTA_SLOT(module_load_data),   PORTA_SLOT(module_unload),
    PORTA_SLOT(kernel_get),         PORTA_SLOT(kernel_launch),
};
#undef PORTA_SLOT

bool refuse(PluginReport& report, porta_plugin_outcome_t outcome, porta_status_t status,
            std::string reason) {
  report.outcome = outcome;
  report.status = status;
  report.reason = std::move(reason);
  log().info("plugin {} ({}): {}", report.backend, report.path, report.reason);
  return false;
}

// Calls the entry point and checks what it describes. Plugins are foreign code: whatever they
// throw is caught here.
bool describe(void* library, const std::string& name, Backend& backend, PluginReport& report) {
  auto entry =
      reinterpret_cast<porta_plugin_entry_fn>(dlsym(library, PORTA_PLUGIN_ENTRY_SYMBOL));
  if (!entry) {
    return refuse(report, PORTA_PLUGIN_NO_ENTRY, PORTA_ERROR_INCOMPATIBLE_VERSION,
                  fmt::format("no symbol {}: not a Porta plugin", PORTA_PLUGIN_ENTRY_SYMBOL));
  }
  porta_plugin_t plugin{};
  plugin.struct_size = sizeof(plugin);
  porta_status_t status;
  try {
    take_plugin_message();
    status = entry(&kHostApi, &plugin);
  } catch (const std::exception& e) {
    return refuse(report, PORTA_PLUGIN_INIT_FAILED, PORTA_ERROR_BACKEND,
                  fmt::format("{} threw: {}", PORTA_PLUGIN_ENTRY_SYMBOL, e.what()));
  } catch (...) {
    return refuse(report, PORTA_PLUGIN_INIT_FAILED, PORTA_ERROR_BACKEND,
                  fmt::format("{} threw an exception", PORTA_PLUGIN_ENTRY_SYMBOL));
  }
  if (status != PORTA_SUCCESS) {
    std::string detail = take_plugin_message();
    return refuse(report, PORTA_PLUGIN_INIT_FAILED, status,
                  fmt::format("{} returned {}{}{}", PORTA_PLUGIN_ENTRY_SYMBOL,
                              porta_status_name(status), detail.empty() ? "" : ": ", detail));
  }
  report.abi_major = plugin.abi_major;
  report.abi_minor = plugin.abi_minor;
  if (plugin.abi_major != PORTA_PLUGIN_ABI_MAJOR) {
    return refuse(report, PORTA_PLUGIN_INCOMPATIBLE, PORTA_ERROR_INCOMPATIBLE_VERSION,
                  fmt::format("plugin ABI {}.{}, this libporta speaks {}.{}", plugin.abi_major,
                              plugin.abi_minor, PORTA_PLUGIN_ABI_MAJOR, PORTA_PLUGIN_ABI_MINOR));
  }
  if (plugin.kind != PORTA_PLUGIN_KIND_BACKEND || !plugin.backend || !plugin.name) {
    return refuse(report, PORTA_PLUGIN_INCOMPATIBLE, PORTA_ERROR_INCOMPATIBLE_VERSION,
                  "not a backend plugin (kind, name or interface missing)");
  }
  if (name != plugin.name) {
    return refuse(report, PORTA_PLUGIN_INCOMPATIBLE, PORTA_ERROR_INCOMPATIBLE_VERSION,
                  fmt::format("the file is named for backend '{}' but implements '{}'", name,
                              plugin.name));
  }
  // Copy the interface, leaving the slots a smaller (older) plugin lacks NULL.
  size_t size = std::min(plugin.backend->struct_size, sizeof(porta_backend_interface_t));
  std::memcpy(&backend.interface, plugin.backend, size);
  backend.interface.struct_size = size;
  for (const RequiredSlot& slot : kRequiredSlots) {
    void* fn = nullptr;
    if (slot.offset + sizeof(fn) <= size) {
      std::memcpy(&fn, reinterpret_cast<const char*>(&backend.interface) + slot.offset,
                  sizeof(fn));
    }
    if (!fn) {
      return refuse(report, PORTA_PLUGIN_INCOMPATIBLE, PORTA_ERROR_INCOMPATIBLE_VERSION,
                    fmt::format("the backend interface lacks the required slot {}", slot.name));
    }
  }
  backend.plugin = plugin;
  return true;
}

bool initialize(Backend& backend, PluginReport& report) {
  porta_status_t status;
  try {
    take_plugin_message();
    status = backend.interface.initialize(&backend.context, &backend.device_count);
  } catch (...) {
    return refuse(report, PORTA_PLUGIN_INIT_FAILED, PORTA_ERROR_BACKEND, "initialize threw");
  }
  std::string detail = take_plugin_message();
  if (status == PORTA_ERROR_UNAVAILABLE) {
    return refuse(report, PORTA_PLUGIN_UNAVAILABLE, status,
                  detail.empty() ? "no driver or no device" : detail);
  }
  if (status != PORTA_SUCCESS) {
    return refuse(report, PORTA_PLUGIN_INIT_FAILED, status,
                  fmt::format("initialize returned {}{}{}", porta_status_name(status),
                              detail.empty() ? "" : ": ", detail));
  }
  if (backend.device_count <= 0) {
    backend.interface.shutdown(backend.context);
    return refuse(report, PORTA_PLUGIN_UNAVAILABLE, PORTA_ERROR_UNAVAILABLE, "no device");
  }
  return true;
}

}  // namespace

bool load_backend(const std::string& name, const std::vector<std::string>& directories,
                  Backend& backend, PluginReport& report) {
  namespace fs = std::filesystem;
  report = PluginReport{};
  report.backend = name;
  const std::string file = "libporta_" + name + ".so";
  std::string searched;
  for (const std::string& directory : directories) {
    fs::path candidate = fs::path(directory) / file;
    std::error_code ignored;
    if (fs::exists(candidate, ignored)) {
      report.path = candidate.string();
      break;
    }
    searched += (searched.empty() ? "" : ":") + directory;
  }
  if (report.path.empty()) {
    report.path = searched;
    return refuse(report, PORTA_PLUGIN_NOT_FOUND, PORTA_ERROR_NOT_FOUND,
                  fmt::format("{} not found in {}", file, searched.empty() ? "(no directory)" : searched));
  }

  dlerror();
  void* library = dlopen(report.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* why = dlerror();
    return refuse(report, PORTA_PLUGIN_LOAD_FAILED, PORTA_ERROR_UNAVAILABLE,
                  why ? why : "dlopen failed");
  }
  backend = Backend{};
  backend.name = name;
  backend.library = library;
  if (!describe(library, name, backend, report) || !initialize(backend, report)) {
    dlclose(library);
    backend = Backend{};
    return false;
  }
  report.outcome = PORTA_PLUGIN_LOADED;
  report.status = PORTA_SUCCESS;
  report.device_count = backend.device_count;
  log().info("plugin {} ({}): loaded, {} device(s)", name, report.path, backend.device_count);
  return true;
}

void unload_backend(Backend& backend) {
  if (!backend.library) return;
  try {
    backend.interface.shutdown(backend.context);
  } catch (...) {
    log().error("plugin {}: shutdown threw", backend.name);
  }
  dlclose(backend.library);
  backend = Backend{};
}

std::vector<std::string> default_plugin_directories() {
  std::vector<std::string> directories;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&default_plugin_directories), &info) && info.dli_fname) {
    std::error_code ignored;
    auto self = std::filesystem::canonical(info.dli_fname, ignored);
    if (!ignored) directories.push_back(self.parent_path().string());
  }
  std::string installed = PORTA_INSTALL_PLUGIN_DIR;
  if (directories.empty() || directories.front() != installed) directories.push_back(installed);
  return directories;
}

}  // namespace porta
