#include "runtime.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <string_view>

#include "log.h"
#include "versioned_struct.h"

namespace porta {
namespace {

constexpr int32_t kMaxCpuDevices = 256;

constexpr std::string_view kVendorLibraries[] = {"onednn", "openblas", "cublas", "cudnn"};

constexpr const char* kAcceptedBackends =
    "auto, cpu, cuda, hip, level_zero, opencl, or a comma-separated list of them in preference "
    "order (e.g. \"cuda,hip,cpu\")";

// A setting comes from porta_init_options_t when given there, else from the environment.
struct Source {
  const char* text;
  const char* name;  // for messages
};

// Porta's variables name files to load (PORTA_PLUGIN_PATH, and through PORTA_BACKEND and
// PORTA_OPS the plugins found there), so a set-user-ID or set-group-ID program does not take them
// from whoever started it: secure_getenv answers NULL there.
Source pick(const char* option, const char* option_name, const char* variable) {
  if (option) return {option, option_name};
  return {secure_getenv(variable), variable};
}

std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = std::min(text.find(separator, start), text.size());
    std::string_view part = text.substr(start, end - start);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
    parts.emplace_back(part);
    start = end + 1;
  }
  return parts;
}

const char* static_backend_name(const std::string& name) {
  for (const char* known : kBackendNames) {
    if (name == known) return known;
  }
  return "";
}

// Op plugins of the user's own are named by PORTA_OPS; the name becomes part of a file name.
constexpr size_t kMaxPluginName = 64;
bool is_plugin_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxPluginName || !(name[0] >= 'a' && name[0] <= 'z')) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool is_incompatibility(porta_plugin_outcome_t outcome) {
  return outcome == PORTA_PLUGIN_INCOMPATIBLE || outcome == PORTA_PLUGIN_NO_ENTRY;
}

}  // namespace

porta_status_t Runtime::read_settings(const porta_init_options_t* options, Settings& settings) {
  // Fields later than the first release's are read when present.
  if (options) {
    const porta_status_t status =
        check_struct_size("porta_init", "options", options, PORTA_INIT_OPTIONS_MIN_SIZE);
    if (status != PORTA_SUCCESS) return status;
  }
  auto option = [&](const char* porta_init_options_t::*field, size_t offset) -> const char* {
    const bool present = options && offset + sizeof(const char*) <= options->struct_size;
    return present ? options->*field : nullptr;
  };
#define PORTA_OPTION(field) \
  option(&porta_init_options_t::field, offsetof(porta_init_options_t, field))

  Source log_level = pick(PORTA_OPTION(log_level), "options.log_level", "PORTA_LOG");
  if (log_level.text && *log_level.text) {
    auto level = parse_log_level(log_level.text);
    if (!level) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}='{}' is not a log level; accepted: {}",
                  log_level.name, log_level.text, kLogLevels);
    }
    settings.log_level = *level;
  }
  set_log_level(settings.log_level);

  Source backend = pick(PORTA_OPTION(backend), "options.backend", "PORTA_BACKEND");
  std::string_view backend_text = backend.text && *backend.text ? backend.text : "auto";
  for (const std::string& name : split(backend_text, ',')) {
    bool known = name == "auto" || *static_backend_name(name);
    if (!known || (name == "auto" && backend_text != "auto")) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}='{}': '{}' is not accepted; accepted: {}",
                  backend.name, backend_text, name, kAcceptedBackends);
    }
    if (std::find(settings.backends.begin(), settings.backends.end(), name) ==
        settings.backends.end()) {
      settings.backends.push_back(name);
    }
  }
  if (settings.backends == std::vector<std::string>{"auto"}) {
    settings.backends.assign(std::begin(kBackendNames),
                             std::begin(kBackendNames) + kAutoBackendCount);
  }

  Source device = pick(PORTA_OPTION(device), "options.device", "PORTA_DEVICE");
  if (device.text && *device.text) {
    std::string_view text = device.text;
    settings.device_source = device.name;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), settings.device);
    if (error != std::errc() || end != text.data() + text.size() || settings.device < 0) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}='{}' is not a device index; accepted: a whole number from 0 to the device "
                  "count - 1 (porta-info lists the devices)",
                  device.name, text);
    }
  }

  Source cpu_devices = pick(PORTA_OPTION(cpu_devices), "options.cpu_devices", "PORTA_CPU_DEVICES");
  if (cpu_devices.text && *cpu_devices.text) {
    std::string_view text = cpu_devices.text;
    int32_t count = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), count);
    if (error != std::errc() || end != text.data() + text.size() || count < 1 ||
        count > kMaxCpuDevices) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}='{}' is not a device count; accepted: a whole number from 1 to {}",
                  cpu_devices.name, text, kMaxCpuDevices);
    }
    settings.plugin_settings["PORTA_CPU_DEVICES"] = std::to_string(count);
  }

  if (const char* timeout = secure_getenv("PORTA_COMM_TIMEOUT"); timeout && *timeout) {
    std::string_view text = timeout;
    int32_t seconds = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (error != std::errc() || end != text.data() + text.size() || seconds < 1) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "PORTA_COMM_TIMEOUT='{}' is not accepted; accepted: a whole number of seconds, "
                  "1 or more",
                  text);
    }
    settings.plugin_settings["PORTA_COMM_TIMEOUT"] = std::to_string(seconds);
  }

  // The libraries vendor op plugins may use, preferred first; each plugin leaves the ops of the
  // libraries not named to the portable plugin (porta-bench measures one library at a time).
  if (const char* libraries = secure_getenv("PORTA_VENDOR_LIBRARY"); libraries && *libraries) {
    for (const std::string& name : split(libraries, ',')) {
      if (std::find(std::begin(kVendorLibraries), std::end(kVendorLibraries), name) ==
          std::end(kVendorLibraries)) {
        return fail(PORTA_ERROR_INVALID_ARGUMENT,
                    "PORTA_VENDOR_LIBRARY='{}': '{}' is not accepted; accepted: a comma-separated "
                    "list of onednn, openblas (vendor_cpu), cublas, cudnn (vendor_cuda), "
                    "preferred first",
                    libraries, name);
      }
    }
    settings.plugin_settings["PORTA_VENDOR_LIBRARY"] = libraries;
  }

  Source ops = pick(PORTA_OPTION(ops), "options.ops", "PORTA_OPS");
  if (ops.text && *ops.text) {
    if (!is_plugin_name(ops.text)) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}='{}' is not accepted; accepted: portable (kernels written once, compiled "
                  "per backend), vendor (the vendor libraries), or the name of an op plugin on "
                  "the plugin path (libporta_ops_<name>.so; lowercase letters, digits and '_', "
                  "at most {} characters)",
                  ops.name, ops.text, kMaxPluginName);
    }
    settings.ops = ops.text;
  }

  Source cpu_mode = pick(PORTA_OPTION(cpu_mode), "options.cpu_mode", "PORTA_CPU_MODE");
  if (cpu_mode.text && *cpu_mode.text) {
    const std::string_view mode = cpu_mode.text;
    if (mode != "fast" && mode != "simt" && mode != "racecheck") {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}='{}' is not accepted; accepted: fast (work-items as a loop), simt (a fiber "
                  "per work-item, real barriers) or racecheck (simt, every access checked)",
                  cpu_mode.name, cpu_mode.text);
    }
    settings.plugin_settings["cpu_mode"] = cpu_mode.text;
  }

  Source path = pick(PORTA_OPTION(plugin_path), "options.plugin_path", "PORTA_PLUGIN_PATH");
  if (path.text && *path.text) {
    for (const std::string& directory : split(path.text, ':')) {
      if (directory.empty()) continue;
      // A relative directory would load plugins from wherever the program happens to run.
      if (directory.front() != '/') {
        return fail(PORTA_ERROR_INVALID_ARGUMENT,
                    "{}='{}': '{}' is not an absolute path; accepted: a colon-separated list of "
                    "absolute directories holding libporta_<backend>.so",
                    path.name, path.text, directory);
      }
      std::error_code ignored;
      if (!std::filesystem::is_directory(directory, ignored)) {
        return fail(PORTA_ERROR_INVALID_ARGUMENT,
                    "{}='{}': '{}' is not a directory; accepted: a colon-separated list of "
                    "directories holding libporta_<backend>.so",
                    path.name, path.text, directory);
      }
      settings.plugin_directories.push_back(directory);
    }
  }
#undef PORTA_OPTION
  for (std::string& directory : default_plugin_directories()) {
    settings.plugin_directories.push_back(std::move(directory));
  }
  return PORTA_SUCCESS;
}

porta_status_t Runtime::load_backends(const Settings& settings) {
  std::string failures;
  bool all_incompatible = true;
  for (const std::string& name : settings.backends) {
    auto backend = std::make_unique<Backend>();
    PluginReport report;
    if (load_backend(name, settings.plugin_directories, *backend, report)) {
      backends_.push_back(std::move(backend));
    } else if (report.status == PORTA_ERROR_OUT_OF_MEMORY) {
      // As for op plugins below: a passing shortage fails porta_init, which the next call retries.
      return fail(PORTA_ERROR_OUT_OF_MEMORY, "porta_init: the {} backend ({}): {}", name,
                  report.path, report.reason);
    } else {
      all_incompatible = all_incompatible && is_incompatibility(report.outcome);
      failures += fmt::format("\n  {}: {}: {}", name, report.path, report.reason);
    }
    reports_.push_back(std::move(report));
  }
  // A backend that cannot describe its devices or make their default streams is one row of the
  // report, as one that fails to initialise is: the others still serve.
  for (auto it = backends_.begin(); it != backends_.end();) {
    porta_status_t status = PORTA_SUCCESS;
    try {
      status = open_devices(**it);
    } catch (...) {
      const CaughtException caught = current_exception("porta_init");
      status = fail(caught.status, "{}", caught.message);
    }
    if (status == PORTA_SUCCESS) {
      ++it;
      continue;
    }
    if (status == PORTA_ERROR_OUT_OF_MEMORY) return status;
    auto row = std::find_if(reports_.begin(), reports_.end(), [&](const PluginReport& r) {
      return r.kind == PORTA_PLUGIN_KIND_BACKEND && r.name == (*it)->name;
    });
    row->outcome = PORTA_PLUGIN_INIT_FAILED;
    row->status = status;
    row->reason = porta_last_error_message();
    row->device_count = 0;
    all_incompatible = false;
    failures += fmt::format("\n  {}: {}: {}", row->name, row->path, row->reason);
    unload_backend(**it);
    it = backends_.erase(it);
  }
  for (const char* name : kBackendNames) {
    if (std::find(settings.backends.begin(), settings.backends.end(), name) ==
        settings.backends.end()) {
      PluginReport report;
      report.name = name;
      report.reason = "not named by PORTA_BACKEND";
      reports_.push_back(std::move(report));
    }
  }
  if (backends_.empty()) {
    return fail(all_incompatible ? PORTA_ERROR_INCOMPATIBLE_VERSION : PORTA_ERROR_UNAVAILABLE,
                "no usable backend among those requested ({}):{}",
                fmt::join(settings.backends, ","), failures);
  }
  return PORTA_SUCCESS;
}

// Describes the backend's devices and makes their default streams; the devices join devices_
// only once all of them are open, so that a failure (or running out of memory) leaves nothing of
// the backend behind. Each stream is destroyed before its device (the vectors' order).
porta_status_t Runtime::open_devices(Backend& backend) {
  std::vector<std::unique_ptr<Device>> opened;
  std::vector<std::shared_ptr<Stream>> default_streams;
  for (int32_t index = 0; index < backend.device_count; ++index) {
    opened.push_back(std::make_unique<Device>());
    Device& device = *opened.back();
    device.backend = &backend;
    device.index = index;
    device.id = static_cast<porta_device_t>(devices_.size() + opened.size() - 1);
    device.properties.struct_size = sizeof(porta_device_properties_t);
    // Best effort: without memory for the record, the block is memory Porta does not know.
    device.pool = std::make_unique<MemoryPool>(device, [this, &device](void* ptr, size_t bytes) {
      std::unique_lock lock(allocations_mutex_);
      try {
        remember_freed(
            Allocation{reinterpret_cast<uintptr_t>(ptr), bytes, PORTA_MEMORY_DEVICE, &device},
            "porta_memory_free_async");
      } catch (const std::bad_alloc&) {
      }
    });
    porta_status_t status =
        call(backend, "porta_init", backend.interface.device_properties, index, &device.properties);
    if (status != PORTA_SUCCESS) return status;
    // What the plugin wrote is made safe to hand on: the size it was given, strings ended.
    porta_device_properties_t& p = device.properties;
    p.struct_size = sizeof(porta_device_properties_t);
    p.name[sizeof(p.name) - 1] = '\0';
    p.architecture[sizeof(p.architecture) - 1] = '\0';
    std::snprintf(p.backend, sizeof(p.backend), "%s", backend.name.c_str());
    auto stream = std::make_shared<Stream>();
    stream->device = &device;
    stream->is_default = true;
    status = call(backend, "porta_init", backend.interface.stream_create, index, &stream->native);
    if (status != PORTA_SUCCESS) {
      stream->native = nullptr;
      return status;
    }
    default_streams.push_back(std::move(stream));
  }
  // Every allocation first, then changes that cannot fail.
  devices_.reserve(devices_.size() + opened.size());
  std::vector<uintptr_t> handles;
  handles.reserve(opened.size());
  try {
    for (const auto& stream : default_streams) handles.push_back(streams.insert(stream));
  } catch (...) {
    for (uintptr_t handle : handles) streams.remove(handle);
    throw;
  }
  for (size_t i = 0; i < opened.size(); ++i) {
    opened[i]->default_stream = reinterpret_cast<porta_stream_t>(handles[i]);
    devices_.push_back(std::move(opened[i]));
  }
  return PORTA_SUCCESS;
}

porta_status_t Runtime::enumerate_devices(const Settings& settings) {
  if (settings.device >= device_count()) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}={} is out of range; accepted: 0 to {} ({} device(s))", settings.device_source,
                settings.device, device_count() - 1, device_count());
  }
  default_device_ = settings.device;
  selected_ = static_backend_name(devices_[default_device_]->backend->name);
  return PORTA_SUCCESS;
}

porta_status_t Runtime::initialize(const porta_init_options_t* options) {
  initialized_ = true;
  init_message_.clear();
  status_ = guarded("porta_init", [&]() -> porta_status_t {
    Settings settings;
    porta_status_t status = read_settings(options, settings);
    plugin_directories_ = settings.plugin_directories;
    if (status == PORTA_SUCCESS) {
      set_plugin_settings(settings.plugin_settings);
      status = load_backends(settings);
    }
    if (status == PORTA_SUCCESS) status = enumerate_devices(settings);
    if (status == PORTA_SUCCESS) status = load_ops_plugins(settings);
    return status;
  });
  if (status_ != PORTA_SUCCESS) {
    try {
      init_message_ = porta_last_error_message();
      log().info("{}", init_message_);
    } catch (...) {
      status_ = PORTA_ERROR_OUT_OF_MEMORY;  // the message is lost, the next call tries again
    }
    release_everything();
    // Running out of memory passes: the next porta_init, or the next call that initialises,
    // tries again instead of repeating this failure until porta_shutdown.
    if (status_ == PORTA_ERROR_OUT_OF_MEMORY) {
      reports_.clear();
      initialized_ = false;
    }
  }
  return status_;
}

void Runtime::wait_for_devices() {
  if (!initialized_) return;
  for (auto& device : devices_) wait_for_device(*device, "porta_shutdown");
}

void Runtime::shutdown() {
  release_everything();
  set_plugin_settings({});
  reports_.clear();
  status_ = PORTA_SUCCESS;
  init_message_.clear();
  initialized_ = false;
}

// Op plugins are optional: one that fails is reported, and the ops answer UNAVAILABLE with its
// reason, but the runtime works without it.
// A plugin that failed for lack of memory fails porta_init instead (OUT_OF_MEMORY, which the next
// call retries): a passing shortage must not leave every op unavailable until re-initialisation.
porta_status_t Runtime::load_ops_plugins(const Settings& settings) {
  // The portable plugin, each backend's vendor plugin, and one PORTA_OPS names otherwise.
  std::vector<std::string> names{"portable"};
  for (const auto& backend : backends_) names.push_back("vendor_" + backend->name);
  const bool named = settings.ops != "vendor";  // "portable" or a plugin's own name
  if (named && std::find(names.begin(), names.end(), settings.ops) == names.end()) {
    names.push_back(settings.ops);
  }
  for (const std::string& name : names) {
    auto plugin = std::make_unique<OpsPlugin>();
    PluginReport report;
    if (load_ops_plugin(name, settings.plugin_directories, *plugin, report)) {
      ops_plugins_.push_back(std::move(plugin));
    } else if (report.status == PORTA_ERROR_OUT_OF_MEMORY) {
      return fail(PORTA_ERROR_OUT_OF_MEMORY, "porta_init: the {} op plugin ({}): {}", name,
                  report.path, report.reason);
    }
    reports_.push_back(std::move(report));
  }
  // The loaded plugin named wanted if it serves the device; else NULL and why not.
  auto serving = [&](const std::string& wanted, const Device& device, std::string& why_not,
                     porta_status_t* out_status = nullptr) -> OpsPlugin* {
    const std::string& backend = device.backend->name;
    auto found = std::find_if(ops_plugins_.begin(), ops_plugins_.end(),
                              [&](const auto& plugin) { return plugin->name == wanted; });
    if (found == ops_plugins_.end()) {
      auto row = std::find_if(reports_.begin(), reports_.end(), [&](const PluginReport& r) {
        return r.kind == PORTA_PLUGIN_KIND_OPS && r.name == wanted;
      });
      why_not = fmt::format("the {} op plugin is not loaded: {}", wanted,
                            row != reports_.end() ? row->reason : "not tried");
      return nullptr;
    }
    OpsPlugin& plugin = **found;
    // An answer that throws is a refusal, with the exception's text as the reason.
    const auto ask = [&](const char* slot, auto&& question) -> porta_status_t {
      take_plugin_message();
      try {
        return question();
      } catch (...) {
        const CaughtException caught = current_exception(slot);
        if (caught.status == PORTA_ERROR_OUT_OF_MEMORY) throw std::bad_alloc();
        set_plugin_message(caught.message);
        return caught.status;
      }
    };
    const porta_status_t status = ask("supports_backend", [&] {
      return plugin.interface.supports_backend(plugin.context, backend.c_str());
    });
    if (status == PORTA_ERROR_OUT_OF_MEMORY) throw std::bad_alloc();
    if (status != PORTA_SUCCESS) {
      std::string why = take_plugin_message();
      why_not = fmt::format("the {} op plugin does not serve the {} backend{}{}", wanted, backend,
                            why.empty() ? "" : ": ", why);
      return nullptr;
    }
    if (plugin.interface.supports_device) {
      const porta_status_t answer = ask("supports_device", [&] {
        return plugin.interface.supports_device(plugin.context, &device.properties);
      });
      if (answer != PORTA_SUCCESS) {
        std::string why = take_plugin_message();
        why_not =
            fmt::format("the {} op plugin does not serve device {} ({}){}{}", wanted, device.id,
                        device.properties.architecture, why.empty() ? "" : ": ", why);
        if (out_status) *out_status = answer;
        return nullptr;
      }
    }
    return &plugin;
  };
  for (auto& device : devices_) {
    const std::string& backend = device->backend->name;
    const std::string wanted = named ? settings.ops : "vendor_" + backend;
    device->ops =
        serving(wanted, *device, device->ops_missing, &device->ops_missing_status);
    // A plugin other than the portable one that is missing is not replaced (the ops say why); one
    // that is there but leaves ops out gets them from the portable plugin.
    if (wanted != "portable" && device->ops) {
      device->fallback_ops = serving("portable", *device, device->fallback_missing);
    }
  }
  return PORTA_SUCCESS;
}

// Destroys what users left alive, in dependency order: first let all work finish, then kernels
// before their modules, streams and events, memory, and the backends last.
void Runtime::release_everything() {
  for (auto& device : devices_) {
    device->backend->interface.device_synchronize(device->backend->context, device->index);
  }
  // Communicators and their engines first: they may hold streams and memory of their own.
  comms.remove_all();  // ~Comm destroys each
  for (auto& plugin : comm_plugins_) unload_comm_plugin(*plugin);
  comm_plugins_.clear();
  comm_missing_.clear();
  comm_loaded_ = false;
  // Op plugins first: they hold modules and memory of their own, which go below with the rest.
  // What they keep per stream goes before them; the streams themselves with the other objects.
  std::vector<std::shared_ptr<Stream>> remaining_streams = streams.remove_all();
  for (auto& stream : remaining_streams) stream->release_op_storage(true);
  for (auto& plugin : ops_plugins_) unload_ops_plugin(*plugin);
  ops_plugins_.clear();
  // No call is in flight (shutdown runs alone), so the tables hold the last references: each
  // object is released by its destructor right here, kernels before the modules they hold.
  kernels.remove_all();
  modules.remove_all();
  events.remove_all();
  remaining_streams.clear();
  report_live_allocations("porta_shutdown", nullptr, nullptr);
  for (auto& device : devices_) device->pool->release_all();
  {
    std::unique_lock lock(allocations_mutex_);
    for (auto& [base, allocation] : allocations_) {
      remember_freed(allocation, "porta_shutdown");
      const Backend& backend = *allocation.device->backend;
      void* ptr = reinterpret_cast<void*>(base);
      if (allocation.kind == PORTA_MEMORY_DEVICE) {
        backend.interface.memory_free(backend.context, allocation.device->index, ptr);
      } else {
        backend.interface.host_free(backend.context, allocation.device->index, ptr);
      }
    }
    allocations_.clear();
  }
  devices_.clear();
  for (auto& backend : backends_) unload_backend(*backend);
  backends_.clear();
  default_device_ = 0;
  selected_ = "";
}

namespace {

// Releases a backend object from a destructor: a failure is logged, and nothing may throw.
template <typename Slot, typename... Args>
void release_native(const Device* device, const char* what, Slot slot, Args... args) noexcept {
  const Backend& backend = *device->backend;
  take_plugin_message();
  porta_status_t status = slot(backend.context, args...);
  if (status >= 0) return;
  try {
    log().warn("{}: {} backend: {}", what, backend.name, take_plugin_message());
  } catch (...) {
    // No memory for the log line; the object is gone either way.
  }
}

}  // namespace

void Stream::release_op_storage(bool shutting_down) noexcept {
  const OpsPlugin* plugins[2] = {device->ops, device->fallback_ops};
  for (int i = 0; i < 2; ++i) {
    void* storage = std::exchange(op_storage[i], nullptr);
    if (!storage || !plugins[i] || !plugins[i]->interface.release_stream_storage) continue;
    try {
      plugins[i]->interface.release_stream_storage(plugins[i]->context, storage,
                                                   shutting_down ? 1 : 0);
    } catch (...) {
      log().error("op plugin {}: release_stream_storage threw", plugins[i]->name);
    }
  }
}

uint64_t CallerWork::begin() {
  std::lock_guard lock(mutex_);
  const uint64_t ticket = next_++;
  running_.insert(ticket);
  return ticket;
}

void CallerWork::end(uint64_t ticket) {
  {
    std::lock_guard lock(mutex_);
    running_.erase(ticket);
  }
  ended_.notify_all();
}

void CallerWork::wait_for_earlier() {
  std::unique_lock lock(mutex_);
  const uint64_t now = next_;
  ended_.wait(lock, [&] { return running_.empty() || *running_.begin() >= now; });
}

Stream::~Stream() {
  // A call on another thread that took the stream before porta_stream_destroy retired it may
  // have queued work after the destroy's synchronisation. It finishes first, while the backend
  // still has the stream (its device waits, behind porta_memory_free and porta_module_unload,
  // count it), and before the op plugins' storage for the stream goes, which it may use.
  if (native) {
    release_native(device, "destroying a stream", device->backend->interface.stream_synchronize,
                   native);
  }
  release_op_storage(false);
  if (!native) return;
  release_native(device, "destroying a stream", device->backend->interface.stream_destroy, native);
}

Event::~Event() {
  if (!native) return;
  release_native(device, "destroying an event", device->backend->interface.event_destroy, native);
}

Comm::~Comm() {
  if (native) {
    take_plugin_message();
    if (engine->interface.comm_destroy(engine->context, native) != PORTA_SUCCESS) {
      try {
        log().warn("destroying a communicator: {} engine: {}", engine->name, take_plugin_message());
      } catch (...) {
        // No memory for the log line; the communicator is gone either way.
      }
    }
  }
  if (arrivals) launcher->interface.launcher_arrivals_close(launcher->context, arrivals);
}

Module::~Module() {
  if (!native) return;
  const porta_backend_interface_t& slots = device->backend->interface;
  // Launches may still run its code; their errors stay with their streams.
  release_native(device, "unloading a module", device_wait_slot(slots), device->index);
  release_native(device, "unloading a module", slots.module_unload, native);
}

Device* Runtime::device(porta_device_t id, const char* argument) {
  if (id < 0 || id >= device_count()) {
    fail(PORTA_ERROR_NOT_FOUND, "{}: no device {}; there are {} (0 to {})", argument, id,
         device_count(), device_count() - 1);
    return nullptr;
  }
  return devices_[id].get();
}

std::shared_ptr<Stream> Runtime::stream(porta_stream_t handle) {
  if (!handle) handle = devices_[default_device_]->default_stream;
  return streams.find(reinterpret_cast<uintptr_t>(handle));
}

void Runtime::remember(const Allocation& allocation) {
  std::unique_lock lock(allocations_mutex_);
  allocations_[allocation.base] = allocation;
  // Addresses handed out again are live, no longer freed.
  freed_.drop(allocation.base, allocation.base + allocation.size);
}

bool Runtime::find_allocation(const void* ptr, Allocation& out) const {
  auto address = reinterpret_cast<uintptr_t>(ptr);
  std::shared_lock lock(allocations_mutex_);
  auto it = allocations_.upper_bound(address);
  if (it == allocations_.begin()) return false;
  --it;
  if (address - it->second.base >= it->second.size) return false;
  out = it->second;
  return true;
}

bool Runtime::forget(const void* ptr, porta_memory_kind_t kind, const char* freed_by,
                     Allocation& out) {
  std::unique_lock lock(allocations_mutex_);
  auto it = allocations_.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == allocations_.end() || it->second.kind != kind) return false;
  out = it->second;
  remember_freed(out, freed_by, true);
  allocations_.erase(it);
  return true;
}

void Runtime::released(const Allocation& allocation) {
  std::unique_lock lock(allocations_mutex_);
  freed_.mark_released(allocation);
}

Runtime::Record Runtime::forget_into_pool(const void* ptr) {
  std::unique_lock lock(allocations_mutex_);
  auto it = allocations_.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == allocations_.end() || it->second.kind != PORTA_MEMORY_DEVICE) return {};
  return allocations_.extract(it);
}

Runtime::Record Runtime::make_record() {
  std::map<uintptr_t, Allocation> one;
  one.emplace(0, Allocation{});
  return one.extract(one.begin());
}

void Runtime::remember(Record record, const Allocation& allocation) {
  record.key() = allocation.base;
  record.mapped() = allocation;
  std::unique_lock lock(allocations_mutex_);
  if (auto it = allocations_.find(allocation.base); it != allocations_.end()) {
    it->second = allocation;
  } else {
    allocations_.insert(std::move(record));
  }
  freed_.drop(allocation.base, allocation.base + allocation.size);
}

void Runtime::remember_freed(const Allocation& allocation, const char* freed_by, bool releasing) {
  // Only ranges the host does not get back at once are worth remembering: device memory of a
  // backend that keeps freed addresses from the host's heap (a GPU driver's mappings, which it
  // may hand to a later mmap, see touched(); the CPU backend's reserved ranges), and the CPU
  // backend's pinned memory, which is its device memory. A GPU driver's freed pinned memory,
  // and OpenCL's or Level Zero's shared memory, go back to the host.
  const uint32_t caps = allocation.device->properties.capabilities;
  if (!(caps & PORTA_CAPABILITY_RESERVED_ADDRESSES)) return;
  if (allocation.kind != PORTA_MEMORY_DEVICE && !(caps & PORTA_CAPABILITY_HOST_IS_DEVICE)) return;
  Allocation record = allocation;
  record.device = nullptr;  // devices do not outlive porta_shutdown
  freed_.add(record, freed_by, releasing);
}

namespace {

// [begin, end) against an allocation: overlapping it, or starting right at its end (an overrun
// by one element is the common mistake, and the CPU backend's guard page is there).
bool touches(uintptr_t begin, uintptr_t end, const Allocation& allocation) {
  return begin <= allocation.base + allocation.size && allocation.base < end;
}

}  // namespace

void FreedRecords::add(const Allocation& allocation, const char* freed_by, bool releasing) {
  drop(allocation.base, allocation.base + allocation.size);
  by_base_[allocation.base] = Record{Freed{allocation, freed_by, releasing}, ++serial_};
  order_.emplace_back(allocation.base, serial_);
  while (by_base_.size() > kCapacity) {
    const auto [base, serial] = order_.front();
    order_.pop_front();
    if (auto it = by_base_.find(base); it != by_base_.end() && it->second.serial == serial) {
      by_base_.erase(it);
    }
  }
  if (order_.size() > 2 * kCapacity) {  // mostly dropped records: keep the live ones, in order
    order_.clear();
    for (const auto& [base, record] : by_base_) order_.emplace_back(base, record.serial);
    std::sort(order_.begin(), order_.end(),
              [](const auto& a, const auto& b) { return a.second < b.second; });
  }
}

void FreedRecords::mark_released(const Allocation& allocation) {
  if (auto it = by_base_.find(allocation.base);
      it != by_base_.end() && it->second.freed.allocation.size == allocation.size) {
    it->second.freed.releasing = false;
  }
}

void FreedRecords::drop(uintptr_t begin, uintptr_t end) {
  auto it = by_base_.upper_bound(begin);
  if (it != by_base_.begin()) {
    const auto before = std::prev(it);
    const Allocation& a = before->second.freed.allocation;
    if (begin < a.base + a.size && a.base < end) by_base_.erase(before);
  }
  while (it != by_base_.end() && it->first < end) it = by_base_.erase(it);
}

const FreedRecords::Freed* FreedRecords::touched_by(uintptr_t begin, uintptr_t end) const {
  // The records do not overlap: the one before begin (it may reach it), or the first after it.
  auto it = by_base_.upper_bound(begin);
  if (it != by_base_.begin() && touches(begin, end, std::prev(it)->second.freed.allocation)) {
    return &std::prev(it)->second.freed;
  }
  if (it != by_base_.end() && touches(begin, end, it->second.freed.allocation)) {
    return &it->second.freed;
  }
  return nullptr;
}

namespace {

// Whether the process can read a byte of every page of [begin, end): memory the host has mapped.
// The kernel reads it (process_vm_readv on this process), so a page that is not mapped, or not
// readable, fails the read instead of faulting.
bool host_can_read(uintptr_t begin, uintptr_t end) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  constexpr size_t kBatch = 256;
  char bytes[kBatch];
  iovec local{bytes, 0};
  iovec remote[kBatch];
  for (uintptr_t at = begin; at < end;) {
    size_t count = 0;
    for (; count < kBatch && at < end; ++count, at = (at / page + 1) * page) {
      remote[count] = iovec{reinterpret_cast<void*>(at), 1};
    }
    local.iov_len = count;
    if (process_vm_readv(getpid(), &local, 1, remote, count, 0) != static_cast<ssize_t>(count)) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool host_can_read_ends(const void* ptr, size_t size) {
  const auto begin = reinterpret_cast<uintptr_t>(ptr);
  char bytes[2];
  const iovec local{bytes, 2};
  const iovec remote[2] = {{reinterpret_cast<void*>(begin), 1},
                           {reinterpret_cast<void*>(begin + size - 1), 1}};
  const ssize_t read = process_vm_readv(getpid(), &local, 1, remote, 2, 0);
  if (read == 2) return true;
  return read < 0 && errno != EFAULT;  // refused or not built in: cannot tell
}

Runtime::Touched Runtime::touched(const void* ptr, size_t size) {
  const auto begin = reinterpret_cast<uintptr_t>(ptr);
  const uintptr_t end = size > UINTPTR_MAX - begin ? UINTPTR_MAX : begin + size;
  for (;;) {
    Touched found = touched_record(begin, end);
    if (found.kind != Touched::kFreed || found.releasing) return found;
    // A GPU driver may hand freed addresses to the host's next mmap (CUDA does on Linux): where
    // the host can read the part of the range the record covers, it is host memory now, and the
    // record is dropped. The CPU backend keeps its freed ranges unreadable.
    const Allocation& freed = found.allocation;
    const uintptr_t from = std::max(begin, freed.base);
    const uintptr_t to = std::max(from + 1, std::min(end, freed.base + freed.size));
    if (!host_can_read(from, to)) return found;
    std::unique_lock lock(allocations_mutex_);
    if (const FreedRecords::Freed* record = freed_.touched_by(freed.base, freed.base + 1);
        record && record->allocation.base == freed.base && record->allocation.size == freed.size) {
      freed_.drop(freed.base, freed.base + freed.size);
    }
  }
}

Runtime::Touched Runtime::touched_record(uintptr_t begin, uintptr_t end) const {
  std::shared_lock lock(allocations_mutex_);
  // The allocation before begin (it may end at begin), then the first at or after it.
  auto it = allocations_.upper_bound(begin);
  if (it != allocations_.begin() && touches(begin, end, std::prev(it)->second)) {
    return Touched{Touched::kLive, std::prev(it)->second, ""};
  }
  if (it != allocations_.end() && touches(begin, end, it->second)) {
    return Touched{Touched::kLive, it->second, ""};
  }
  if (const FreedRecords::Freed* freed = freed_.touched_by(begin, end)) {
    return Touched{Touched::kFreed, freed->allocation, freed->freed_by, freed->releasing};
  }
  return Touched{};
}

// The engine of each backend: what its devices' collectives run on.
const char* engine_of(const std::string& backend) {
  if (backend == "cuda") return "nccl";
  if (backend == "hip") return "rccl";
  if (backend == "cpu") return "mpi";
  return nullptr;
}

void Runtime::load_comm_plugins() {
  if (comm_loaded_) return;
  comm_loaded_ = true;
  PluginSetup setup;
  for (const char* name : {"mpi", "nccl", "rccl"}) {
    auto plugin = std::make_unique<CommPlugin>();
    PluginReport report;
    if (load_comm_plugin(name, plugin_directories_, *plugin, report)) {
      comm_plugins_.push_back(std::move(plugin));
    } else {
      comm_missing_[name] = fmt::format("{}: {}", report.path, report.reason);
    }
  }
}

CommPlugin* Runtime::comm_engine(const char* function, const Device& device) {
  const char* name = engine_of(device.backend->name);
  if (!name) {
    fail(PORTA_ERROR_UNAVAILABLE, "{}: no collective engine serves the {} backend", function,
         device.backend->name);
    return nullptr;
  }
  std::lock_guard lock(comm_mutex_);
  load_comm_plugins();
  for (auto& plugin : comm_plugins_) {
    if (plugin->name != name) continue;
    take_plugin_message();
    if (plugin->interface.supports_backend(plugin->context, device.backend->name.c_str()) !=
        PORTA_SUCCESS) {
      std::string why = take_plugin_message();
      fail(PORTA_ERROR_UNAVAILABLE, "{}: the {} engine is unavailable for device {}: {}", function,
           name, device.id, why.empty() ? "it does not serve its backend" : why);
      return nullptr;
    }
    return plugin.get();
  }
  fail(PORTA_ERROR_UNAVAILABLE, "{}: the {} engine is unavailable: {}", function, name,
       comm_missing_[name]);
  return nullptr;
}

CommPlugin* Runtime::launcher(const char* function) {
  std::lock_guard lock(comm_mutex_);
  load_comm_plugins();
  for (auto& plugin : comm_plugins_) {
    if (plugin->name == "mpi" && plugin->interface.launcher_rank &&
        plugin->interface.launcher_broadcast) {
      return plugin.get();
    }
  }
  fail(PORTA_ERROR_UNAVAILABLE, "{}: the launcher (MPI) is unavailable: {}", function,
       comm_missing_.count("mpi") ? comm_missing_["mpi"] : "its plugin lacks the launcher slots");
  return nullptr;
}

bool Runtime::in_freed_pool_block(const void* ptr, size_t size, Device** out_device,
                                  uintptr_t* out_base) {
  const auto begin = reinterpret_cast<uintptr_t>(ptr);
  const uintptr_t end =
      size > UINTPTR_MAX - begin ? UINTPTR_MAX : begin + std::max<size_t>(size, 1);
  for (auto& device : devices_) {
    if (device->pool->holds_freed(begin, end, out_base)) {
      *out_device = device.get();
      return true;
    }
  }
  return false;
}

void Runtime::report_live_allocations(const char* occasion, uint64_t* out_count,
                                      uint64_t* out_bytes) {
  struct Totals {
    uint64_t count = 0;
    uint64_t bytes = 0;
  };
  std::map<porta_device_t, Totals> per_device;
  Totals all;
  constexpr uint64_t kListed = 32;  // enough to find the culprit, not enough to flood the log
  std::shared_lock lock(allocations_mutex_);
  for (const auto& [base, allocation] : allocations_) {
    if (allocation.plugin_owned) continue;
    if (all.count < kListed) {
      log().warn("{}: live allocation: {} bytes of {} memory on device {} at {}", occasion,
                 allocation.size, allocation.kind == PORTA_MEMORY_DEVICE ? "device" : "pinned host",
                 allocation.device->id, reinterpret_cast<void*>(base));
    }
    Totals& totals = per_device[allocation.device->id];
    ++totals.count;
    totals.bytes += allocation.size;
    ++all.count;
    all.bytes += allocation.size;
  }
  if (all.count > kListed) {
    log().warn("{}: ... and {} more live allocations", occasion, all.count - kListed);
  }
  for (const auto& [device, totals] : per_device) {
    log().warn("{}: device {}: {} live allocation(s), {} bytes", occasion, device, totals.count,
               totals.bytes);
  }
  if (out_count) *out_count = all.count;
  if (out_bytes) *out_bytes = all.bytes;
}

uint64_t next_stream_serial() {
  static std::atomic<uint64_t> serial{0};
  return ++serial;
}

namespace detail {

Runtime& instance() {
  static Runtime* runtime = new Runtime();  // never destroyed: plugins may outlive static dtors
  return *runtime;
}

std::shared_mutex& lifecycle_mutex() {
  static std::shared_mutex* mutex = new std::shared_mutex();
  return *mutex;
}

std::atomic<int>& shutdowns_under_way() {
  static std::atomic<int> count{0};
  return count;
}

porta_status_t refuse_during_shutdown(const char* function) {
  if (shutdowns_under_way().load() == 0) return PORTA_SUCCESS;
  return fail(PORTA_ERROR_UNAVAILABLE, "{}: porta_shutdown is under way", function);
}

porta_status_t refuse_reentry(const char* function) {
  if (!PluginSetup::active()) return PORTA_SUCCESS;
  return fail(PORTA_ERROR_UNAVAILABLE,
              "{}: called while this thread loads or unloads Porta's plugins (a plugin's entry, "
              "initialize or shutdown cannot call Porta)",
              function);
}

porta_status_t refuse_wait_in_host_function(const char* function) {
  if (!HostFunctionCall::active()) return PORTA_SUCCESS;
  return fail(PORTA_ERROR_UNAVAILABLE,
              "{}: called from a host function, which waits for streams or devices: the host "
              "function's own stream waits for it, so the wait might never end",
              function);
}

porta_status_t ensure_initialized(const porta_init_options_t* options, bool* ran) {
  {
    // Held shared first, as every call holds it: waiting for it alone while other threads keep
    // calling could take as long as they do.
    std::shared_lock lock(lifecycle_mutex());
    if (instance().initialized()) return instance().status();
  }
  HeldAlone alone;
  if (instance().initialized()) return instance().status();
  if (ran) *ran = true;
  return instance().initialize(options);
}

}  // namespace detail

namespace {
template <typename T, typename Handle>
porta_status_t resolved(std::shared_ptr<T> found, const char* function, const char* argument,
                        const char* kind, Handle handle, std::shared_ptr<T>& out) {
  out = std::move(found);
  if (out) return PORTA_SUCCESS;
  return fail(PORTA_ERROR_INVALID_HANDLE, "{}: {} {} is not a live {}", function, argument,
              static_cast<void*>(handle), kind);
}
uintptr_t key(const void* handle) { return reinterpret_cast<uintptr_t>(handle); }
}  // namespace

porta_status_t resolve(Runtime& runtime, const char* function, porta_stream_t handle,
                       std::shared_ptr<Stream>& out, const char* argument) {
  return resolved(runtime.stream(handle), function, argument, "stream", handle, out);
}
porta_status_t resolve(Runtime& runtime, const char* function, porta_event_t handle,
                       std::shared_ptr<Event>& out, const char* argument) {
  return resolved(runtime.events.find(key(handle)), function, argument, "event", handle, out);
}
porta_status_t resolve(Runtime& runtime, const char* function, porta_module_t handle,
                       std::shared_ptr<Module>& out) {
  return resolved(runtime.modules.find(key(handle)), function, "module", "module", handle, out);
}
porta_status_t resolve(Runtime& runtime, const char* function, porta_kernel_t handle,
                       std::shared_ptr<Kernel>& out) {
  return resolved(runtime.kernels.find(key(handle)), function, "kernel", "kernel", handle, out);
}
porta_status_t resolve(Runtime& runtime, const char* function, porta_comm_t handle,
                       std::shared_ptr<Comm>& out) {
  return resolved(runtime.comms.find(key(handle)), function, "comm", "communicator", handle, out);
}
porta_status_t check_room(const char* function, const char* argument, const void* ptr,
                          uint64_t count, uint64_t element_size, const Allocation& allocation) {
  const uint64_t left = allocation.size - (reinterpret_cast<uintptr_t>(ptr) - allocation.base);
  uint64_t bytes;
  if (!__builtin_mul_overflow(count, element_size, &bytes) && bytes <= left) return PORTA_SUCCESS;
  if (element_size == 1) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: {} needs {} bytes, but its allocation has {} bytes from {} (an overrun)",
                function, argument, count, left, ptr);
  }
  return fail(PORTA_ERROR_INVALID_ARGUMENT,
              "{}: {} needs {} elements of {} bytes, but its allocation has {} bytes from {}",
              function, argument, count, element_size, left, ptr);
}

porta_status_t retire(Runtime& runtime, const char* function, porta_event_t handle,
                      std::shared_ptr<Event>& out) {
  return resolved(runtime.events.remove(key(handle)), function, "event", "event", handle, out);
}
porta_status_t retire(Runtime& runtime, const char* function, porta_module_t handle,
                      std::shared_ptr<Module>& out) {
  return resolved(runtime.modules.remove(key(handle)), function, "module", "module", handle, out);
}
porta_status_t retire(Runtime& runtime, const char* function, porta_comm_t handle,
                      std::shared_ptr<Comm>& out) {
  return resolved(runtime.comms.remove(key(handle)), function, "comm", "communicator", handle, out);
}

}  // namespace porta
