#include "loader.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <vector>

#include "error.h"
#include "log.h"
#include "plugin_kit/dlopen_failure.h"
#include "plugin_kit/elf_check.h"

namespace porta {
namespace {

void host_set_error_message(const char* message) { set_plugin_message(message); }

void host_log(porta_log_level_t level, const char* message) {
  if (level >= PORTA_LOG_OFF || !message) return;
  log().log(static_cast<spdlog::level::level_enum>(level), "{}", message);
}

// Written by porta_init before any plugin initialises, read by plugins during their initialize
// (both under the lifecycle lock), so it needs no lock of its own.
std::map<std::string, std::string>& plugin_settings() {
  static auto* settings = new std::map<std::string, std::string>();
  return *settings;
}

const char* host_setting(const char* name) {
  if (!name) return nullptr;
  // A plain walk: looking a const char* up in the map would build a std::string, which may throw
  // (out of memory) across this C callback.
  for (const auto& [key, value] : plugin_settings()) {
    if (key == name) return value.c_str();
  }
  return nullptr;
}

const porta_host_api_t kHostApi{sizeof(porta_host_api_t), host_set_error_message, host_log,
                                host_setting};

// The slots every plugin of a kind must fill; the others are optional.
struct RequiredSlot {
  const char* name;
  size_t offset;
};
#define PORTA_SLOT(type, slot) \
  RequiredSlot { #slot, offsetof(type, slot) }
#define PORTA_BACKEND_SLOT(slot) PORTA_SLOT(porta_backend_interface_t, slot)
constexpr RequiredSlot kBackendSlots[] = {
    PORTA_BACKEND_SLOT(initialize),         PORTA_BACKEND_SLOT(shutdown),
    PORTA_BACKEND_SLOT(device_properties),  PORTA_BACKEND_SLOT(device_memory_info),
    PORTA_BACKEND_SLOT(device_synchronize), PORTA_BACKEND_SLOT(memory_alloc),
    PORTA_BACKEND_SLOT(memory_free),        PORTA_BACKEND_SLOT(host_alloc),
    PORTA_BACKEND_SLOT(host_free),          PORTA_BACKEND_SLOT(stream_create),
    PORTA_BACKEND_SLOT(stream_destroy),     PORTA_BACKEND_SLOT(stream_synchronize),
    PORTA_BACKEND_SLOT(stream_query),       PORTA_BACKEND_SLOT(stream_wait_event),
    PORTA_BACKEND_SLOT(memcpy_async),       PORTA_BACKEND_SLOT(memset_async),
    PORTA_BACKEND_SLOT(event_create),       PORTA_BACKEND_SLOT(event_destroy),
    PORTA_BACKEND_SLOT(event_record),       PORTA_BACKEND_SLOT(event_query),
    PORTA_BACKEND_SLOT(event_synchronize),  PORTA_BACKEND_SLOT(event_elapsed_ms),
    PORTA_BACKEND_SLOT(module_load_data),   PORTA_BACKEND_SLOT(module_unload),
    PORTA_BACKEND_SLOT(kernel_get),         PORTA_BACKEND_SLOT(kernel_launch),
};
#define PORTA_COMM_SLOT(slot) PORTA_SLOT(porta_comm_interface_t, slot)
constexpr RequiredSlot kCommSlots[] = {
    PORTA_COMM_SLOT(initialize),       PORTA_COMM_SLOT(shutdown),
    PORTA_COMM_SLOT(supports_backend), PORTA_COMM_SLOT(get_unique_id),
    PORTA_COMM_SLOT(comm_create),      PORTA_COMM_SLOT(comm_destroy),
    PORTA_COMM_SLOT(all_reduce),       PORTA_COMM_SLOT(broadcast),
    PORTA_COMM_SLOT(all_gather),       PORTA_COMM_SLOT(reduce_scatter),
    PORTA_COMM_SLOT(barrier)};

constexpr RequiredSlot kOpPluginRequiredSlots[] = {
    PORTA_SLOT(porta_ops_interface_t, initialize),
    PORTA_SLOT(porta_ops_interface_t, shutdown),
    PORTA_SLOT(porta_ops_interface_t, supports_backend),
};

// The op slots, one per row of porta_op_table.h, named as porta_ops.h names the op without
// "porta_": the report lists those a plugin fills. All optional.
#define PORTA_OP_TABLE_SLOT_(name, fields) PORTA_SLOT(porta_ops_interface_t, name),
constexpr RequiredSlot kOpTableSlots[] = {PORTA_OP_TABLE(PORTA_OP_TABLE_SLOT_)};
#undef PORTA_OP_TABLE_SLOT_
#undef PORTA_BACKEND_SLOT
#undef PORTA_SLOT

bool refuse(PluginReport& report, porta_plugin_outcome_t outcome, porta_status_t status,
            std::string reason) {
  report.outcome = outcome;
  report.status = status;
  report.reason = std::move(reason);
  log().info("plugin {} ({}): {}", report.name, report.path, report.reason);
  return false;
}

// Whether path names something: a file, or an entry that is there but broken (a dangling or
// looping link, a directory that may not be searched), which open_plugin then reports rather than
// passing on to a plugin further down the path. Asked with stat and lstat rather than
// std::filesystem, whose non-throwing calls report running out of memory as a mere error code.
bool file_exists(const std::string& path) {
  struct stat status;
  if (stat(path.c_str(), &status) == 0) return true;
  if (errno == ENOMEM) throw std::bad_alloc();
  if (errno != ENOENT && errno != ENOTDIR) return true;
  return lstat(path.c_str(), &status) == 0;  // a link to nothing
}

// Finds the plugin's file: the first directory that has it wins.
bool find_file(const std::string& file, const std::vector<std::string>& directories,
               PluginReport& report) {
  std::string searched;
  for (const std::string& directory : directories) {
    std::string candidate = directory + (directory.ends_with('/') ? "" : "/") + file;
    if (file_exists(candidate)) {
      report.path = std::move(candidate);
      return true;
    }
    searched += (searched.empty() ? "" : ":") + directory;
  }
  report.path = searched;
  return refuse(
      report, PORTA_PLUGIN_NOT_FOUND, PORTA_ERROR_NOT_FOUND,
      fmt::format("{} not found in {}", file, searched.empty() ? "(no directory)" : searched));
}

// The status a report gives a plugin call that did not succeed: its own where it is an error
// porta.h defines, else INTERNAL (a plugin's bug), so that a failed row never reads as success.
porta_status_t failure_status(porta_status_t status) {
  return status < 0 && is_defined_status(status) ? status : PORTA_ERROR_INTERNAL;
}

// A status as a report's reason names it, values porta.h does not define included.
std::string status_text(porta_status_t status) {
  return is_defined_status(status)
             ? std::string(porta_status_name(status))
             : fmt::format("{}, which is no porta_status_t value", static_cast<int>(status));
}

// Whether address is a function's, not data's: a plugin that exports its entry point's name as
// an array would otherwise be jumped into.
bool is_function(void* address) {
  Dl_info info{};
  void* entry = nullptr;
  if (dladdr1(address, &info, &entry, RTLD_DL_SYMENT) == 0 || !entry) return false;
  const auto* symbol = static_cast<const Elf64_Sym*>(entry);
  const unsigned type = ELF64_ST_TYPE(symbol->st_info);
  return type == STT_FUNC || type == STT_GNU_IFUNC;
}

// A plugin's name or version, read no further than max bytes: one left unterminated is cut
// there rather than read on into whatever memory follows it.
std::string plugin_string(const char* text, size_t max = 256) {
  return text ? std::string(text, strnlen(text, max)) : std::string();
}

// Opens the file and calls its entry point; checks the ABI version, the kind and the name.
// Plugins are foreign code: whatever they throw is caught here.
void* open_plugin(porta_plugin_kind_t kind, PluginReport& report, porta_plugin_t& plugin) {
  // dlopen trusts the file: a truncated one raises SIGBUS in the application. Its image is read
  // and checked first.
  // Read with no allocation but the image's own, so that running out of memory is told apart
  // (OUT_OF_MEMORY, which the next porta_init retries) from a bad file.
  const auto out_of_memory = [&] {
    refuse(report, PORTA_PLUGIN_LOAD_FAILED, PORTA_ERROR_OUT_OF_MEMORY,
           "out of memory reading the file");
    return nullptr;
  };
  std::vector<char> image;
  {
    // Not blocking: opening a FIFO would otherwise wait for a writer, holding the lifecycle lock.
    const int fd = ::open(report.path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    const int open_error = errno;
    struct stat info {};
    if (fd < 0 || ::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
      if (fd >= 0) ::close(fd);
      refuse(report, PORTA_PLUGIN_LOAD_FAILED, PORTA_ERROR_UNAVAILABLE,
             fd < 0 ? fmt::format("cannot open the file: {}", std::strerror(open_error))
                    : "not a regular file");
      return nullptr;
    }
    // Read whole, a file this large would take its size in memory before any check could
    // refuse it; no plugin comes near.
    constexpr off_t kLargestPlugin = off_t{1} << 30;
    if (info.st_size > kLargestPlugin) {
      ::close(fd);
      refuse(report, PORTA_PLUGIN_LOAD_FAILED, PORTA_ERROR_UNAVAILABLE,
             fmt::format("the file is {} bytes, more than the {} a plugin may take", info.st_size,
                         kLargestPlugin));
      return nullptr;
    }
    try {
      image.resize(static_cast<size_t>(info.st_size));
    } catch (const std::bad_alloc&) {
      ::close(fd);
      return out_of_memory();
    }
    size_t done = 0;
    while (done < image.size()) {
      const ssize_t got = ::read(fd, image.data() + done, image.size() - done);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      done += static_cast<size_t>(got);
    }
    ::close(fd);
    image.resize(done);  // a file that shrank meanwhile is checked as it was read
  }
  std::optional<elf::Problem> problem;
  try {
    problem = elf::check_shared_object(image.data(), image.size());
  } catch (const std::bad_alloc&) {
    return out_of_memory();
  }
  if (problem) {
    refuse(report, PORTA_PLUGIN_LOAD_FAILED,
           problem->status == PORTA_ERROR_INCOMPATIBLE_VERSION ? problem->status
                                                               : PORTA_ERROR_UNAVAILABLE,
           problem->message);
    return nullptr;
  }
  dlerror();
  errno = 0;
  void* library = dlopen(report.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const int error = errno;
    const char* why = dlerror();
    refuse(report, PORTA_PLUGIN_LOAD_FAILED,
           dlopen_ran_out_of_memory(error, why) ? PORTA_ERROR_OUT_OF_MEMORY
                                                : PORTA_ERROR_UNAVAILABLE,
           why ? why : "dlopen failed");
    return nullptr;
  }
  auto close = [&](porta_plugin_outcome_t outcome, porta_status_t status, std::string reason) {
    dlclose(library);
    refuse(report, outcome, status, std::move(reason));
    return nullptr;
  };
  void* entry_symbol = dlsym(library, PORTA_PLUGIN_ENTRY_SYMBOL);
  if (!entry_symbol) {
    return close(PORTA_PLUGIN_NO_ENTRY, PORTA_ERROR_INCOMPATIBLE_VERSION,
                 fmt::format("no symbol {}: not a Porta plugin", PORTA_PLUGIN_ENTRY_SYMBOL));
  }
  if (!is_function(entry_symbol)) {
    return close(
        PORTA_PLUGIN_NO_ENTRY, PORTA_ERROR_INCOMPATIBLE_VERSION,
        fmt::format("{} is not a function: not a Porta plugin", PORTA_PLUGIN_ENTRY_SYMBOL));
  }
  auto entry = reinterpret_cast<porta_plugin_entry_fn>(entry_symbol);
  plugin = porta_plugin_t{};
  plugin.struct_size = sizeof(plugin);
  porta_status_t status;
  try {
    take_plugin_message();
    status = entry(&kHostApi, &plugin);
  } catch (...) {
    const CaughtException caught = current_exception(PORTA_PLUGIN_ENTRY_SYMBOL);
    return close(PORTA_PLUGIN_INIT_FAILED, caught.status, caught.message);
  }
  if (status != PORTA_SUCCESS) {
    std::string detail = take_plugin_message();
    return close(PORTA_PLUGIN_INIT_FAILED, failure_status(status),
                 fmt::format("{} returned {}{}{}", PORTA_PLUGIN_ENTRY_SYMBOL, status_text(status),
                             detail.empty() ? "" : ": ", detail));
  }
  report.abi_major = plugin.abi_major;
  report.abi_minor = plugin.abi_minor;
  report.version = plugin_string(plugin.version);
  const std::string name = plugin_string(plugin.name);
  if (plugin.abi_major != PORTA_PLUGIN_ABI_MAJOR) {
    return close(PORTA_PLUGIN_INCOMPATIBLE, PORTA_ERROR_INCOMPATIBLE_VERSION,
                 fmt::format("plugin {} was built for plugin ABI {}.{}; this libporta speaks "
                             "{}.{}{}",
                             plugin.name ? name : report.name, plugin.abi_major, plugin.abi_minor,
                             PORTA_PLUGIN_ABI_MAJOR, PORTA_PLUGIN_ABI_MINOR,
                             kind == PORTA_PLUGIN_KIND_OPS && plugin.abi_major < 2
                                 ? " (op plugins take porta_op_context_t and argument structs "
                                   "since ABI 2: rebuild it against this porta_plugin.h)"
                                 : ""));
  }
  const bool described = kind == PORTA_PLUGIN_KIND_BACKEND ? plugin.backend != nullptr
                         : kind == PORTA_PLUGIN_KIND_OPS   ? plugin.ops != nullptr
                                                           : plugin.comm != nullptr;
  if (plugin.kind != kind || !described || !plugin.name) {
    return close(PORTA_PLUGIN_INCOMPATIBLE, PORTA_ERROR_INCOMPATIBLE_VERSION,
                 fmt::format("not {} plugin (kind, name or interface missing)",
                             kind == PORTA_PLUGIN_KIND_BACKEND ? "a backend"
                             : kind == PORTA_PLUGIN_KIND_OPS   ? "an op"
                                                               : "a collective engine"));
  }
  if (report.name != name) {
    return close(PORTA_PLUGIN_INCOMPATIBLE, PORTA_ERROR_INCOMPATIBLE_VERSION,
                 fmt::format("the file is named for '{}' but implements '{}'", report.name, name));
  }
  return library;
}

// Copies a plugin's interface into ours, leaving the slots a smaller (older) plugin lacks NULL,
// and checks the required ones are there.
template <typename Interface, size_t N>
bool adopt_interface(const Interface* theirs, Interface& ours, const RequiredSlot (&required)[N],
                     PluginReport& report) {
  const size_t size = std::min(theirs->struct_size, sizeof(Interface));
  ours = Interface{};
  std::memcpy(&ours, theirs, size);
  ours.struct_size = size;
  for (const RequiredSlot& slot : required) {
    void* fn = nullptr;
    if (slot.offset + sizeof(fn) <= size) {
      std::memcpy(&fn, reinterpret_cast<const char*>(&ours) + slot.offset, sizeof(fn));
    }
    if (!fn) {
      return refuse(report, PORTA_PLUGIN_INCOMPATIBLE, PORTA_ERROR_INCOMPATIBLE_VERSION,
                    fmt::format("the interface lacks the required slot {}", slot.name));
    }
  }
  return true;
}

// Runs a plugin's initialize, which may fail because there is no driver or device.
template <typename Slot, typename... Outputs>
bool initialize(Slot slot, PluginReport& report, Outputs*... outputs) {
  porta_status_t status;
  try {
    take_plugin_message();
    status = slot(outputs...);
  } catch (...) {
    const CaughtException caught = current_exception("initialize");
    return refuse(report, PORTA_PLUGIN_INIT_FAILED, caught.status, caught.message);
  }
  std::string detail = take_plugin_message();
  if (status == PORTA_ERROR_UNAVAILABLE) {
    return refuse(report, PORTA_PLUGIN_UNAVAILABLE, status,
                  detail.empty() ? "no driver or no device" : detail);
  }
  if (status != PORTA_SUCCESS) {
    return refuse(report, PORTA_PLUGIN_INIT_FAILED, failure_status(status),
                  fmt::format("initialize returned {}{}{}", status_text(status),
                              detail.empty() ? "" : ": ", detail));
  }
  return true;
}

bool loaded(PluginReport& report) {
  report.outcome = PORTA_PLUGIN_LOADED;
  report.status = PORTA_SUCCESS;
  log().info("plugin {} ({}): loaded", report.name, report.path);
  return true;
}

}  // namespace

void set_plugin_settings(std::map<std::string, std::string> settings) {
  plugin_settings() = std::move(settings);
}

bool load_backend(const std::string& name, const std::vector<std::string>& directories,
                  Backend& backend, PluginReport& report) {
  report = PluginReport{};
  report.name = name;
  report.kind = PORTA_PLUGIN_KIND_BACKEND;
  backend = Backend{};
  porta_plugin_t plugin;
  if (!find_file("libporta_" + name + ".so", directories, report)) return false;
  void* library = open_plugin(PORTA_PLUGIN_KIND_BACKEND, report, plugin);
  if (!library) return false;
  backend.name = name;
  backend.library = library;
  if (!adopt_interface(plugin.backend, backend.interface, kBackendSlots, report) ||
      !initialize(backend.interface.initialize, report, &backend.context, &backend.device_count)) {
    dlclose(library);
    backend = Backend{};
    return false;
  }
  if (backend.device_count <= 0) {
    unload_backend(backend);
    return refuse(report, PORTA_PLUGIN_UNAVAILABLE, PORTA_ERROR_UNAVAILABLE, "no device");
  }
  if (backend.device_count > kMaxDevicesPerBackend) {
    const int32_t count = backend.device_count;
    unload_backend(backend);
    return refuse(
        report, PORTA_PLUGIN_INIT_FAILED, PORTA_ERROR_BACKEND,
        fmt::format("reports {} devices; at most {} are taken", count, kMaxDevicesPerBackend));
  }
  report.device_count = backend.device_count;
  return loaded(report);
}

bool load_ops_plugin(const std::string& name, const std::vector<std::string>& directories,
                     OpsPlugin& ops, PluginReport& report) {
  report = PluginReport{};
  report.name = name;
  report.kind = PORTA_PLUGIN_KIND_OPS;
  ops = OpsPlugin{};
  porta_plugin_t plugin;
  if (!find_file("libporta_ops_" + name + ".so", directories, report)) return false;
  void* library = open_plugin(PORTA_PLUGIN_KIND_OPS, report, plugin);
  if (!library) return false;
  ops.name = name;
  ops.library = library;
  if (!adopt_interface(plugin.ops, ops.interface, kOpPluginRequiredSlots, report) ||
      !initialize(ops.interface.initialize, report, &ops.context)) {
    dlclose(library);
    ops = OpsPlugin{};
    return false;
  }
  report.ops = implemented_ops(ops.interface);
  return loaded(report);
}

bool load_comm_plugin(const std::string& name, const std::vector<std::string>& directories,
                      CommPlugin& comm, PluginReport& report) {
  report = PluginReport{};
  report.name = name;
  report.kind = PORTA_PLUGIN_KIND_COMM;
  comm = CommPlugin{};
  porta_plugin_t plugin;
  if (!find_file("libporta_comm_" + name + ".so", directories, report)) return false;
  void* library = open_plugin(PORTA_PLUGIN_KIND_COMM, report, plugin);
  if (!library) return false;
  comm.name = name;
  comm.library = library;
  if (!adopt_interface(plugin.comm, comm.interface, kCommSlots, report) ||
      !initialize(comm.interface.initialize, report, &comm.context)) {
    dlclose(library);
    comm = CommPlugin{};
    return false;
  }
  return loaded(report);
}

void unload_comm_plugin(CommPlugin& comm) {
  if (!comm.library) return;
  try {
    comm.interface.shutdown(comm.context);
  } catch (...) {
    log().error("collective engine {}: {}", comm.name, current_exception("shutdown").message);
  }
  dlclose(comm.library);
  comm = CommPlugin{};
}

std::string implemented_ops(const porta_ops_interface_t& interface) {
  std::string names;
  for (const RequiredSlot& slot : kOpTableSlots) {
    void* fn = nullptr;
    if (slot.offset + sizeof(fn) > interface.struct_size) continue;  // an older, shorter plugin
    std::memcpy(&fn, reinterpret_cast<const char*>(&interface) + slot.offset, sizeof(fn));
    if (!fn) continue;
    if (!names.empty()) names += ',';
    names += slot.name;
  }
  return names;
}

void unload_ops_plugin(OpsPlugin& ops) {
  if (!ops.library) return;
  try {
    ops.interface.shutdown(ops.context);
  } catch (...) {
    log().error("op plugin {}: {}", ops.name, current_exception("shutdown").message);
  }
  dlclose(ops.library);
  ops = OpsPlugin{};
}

void unload_backend(Backend& backend) {
  if (!backend.library) return;
  try {
    backend.interface.shutdown(backend.context);
  } catch (...) {
    log().error("plugin {}: {}", backend.name, current_exception("shutdown").message);
  }
  dlclose(backend.library);
  backend = Backend{};
}

std::vector<std::string> default_plugin_directories() {
  std::vector<std::string> directories;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&default_plugin_directories), &info) && info.dli_fname) {
    errno = 0;
    char* self = realpath(info.dli_fname, nullptr);
    if (!self && errno == ENOMEM) throw std::bad_alloc();
    if (self) {
      std::unique_ptr<char, decltype(&std::free)> owned(self, &std::free);
      directories.push_back(std::filesystem::path(self).parent_path().string());
    }
  }
  std::string installed = PORTA_INSTALL_PLUGIN_DIR;
  if (directories.empty() || directories.front() != installed) directories.push_back(installed);
  return directories;
}

}  // namespace porta
