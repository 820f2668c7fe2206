#include "runtime.h"

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "log.h"

namespace porta {
namespace {

constexpr int32_t kMaxCpuDevices = 256;

constexpr const char* kAcceptedBackends =
    "auto, cpu, cuda, hip, level_zero, or a comma-separated list of them in preference order "
    "(e.g. \"cuda,hip,cpu\")";

// A setting comes from porta_init_options_t when given there, else from the environment.
struct Source {
  const char* text;
  const char* name;  // for messages
};

Source pick(const char* option, const char* option_name, const char* variable) {
  if (option) return {option, option_name};
  return {std::getenv(variable), variable};
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

bool is_incompatibility(porta_plugin_outcome_t outcome) {
  return outcome == PORTA_PLUGIN_INCOMPATIBLE || outcome == PORTA_PLUGIN_NO_ENTRY;
}

}  // namespace

porta_status_t Runtime::read_settings(const porta_init_options_t* options, Settings& settings) {
  // The first release's struct ended at log_level; later fields are read when present.
  constexpr size_t kFirstSize = offsetof(porta_init_options_t, log_level) + sizeof(const char*);
  if (options && options->struct_size < kFirstSize) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "porta_init: options->struct_size is {}, expected at least {}",
                options->struct_size, kFirstSize);
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
    settings.backends.assign(std::begin(kBackendNames), std::end(kBackendNames));
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

  if (const char* timeout = std::getenv("PORTA_COMM_TIMEOUT"); timeout && *timeout) {
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

  Source ops = pick(PORTA_OPTION(ops), "options.ops", "PORTA_OPS");
  if (ops.text && *ops.text) {
    if (std::string_view(ops.text) != "portable" && std::string_view(ops.text) != "vendor") {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}='{}' is not accepted; accepted: portable (kernels written once, compiled "
                  "per backend) or vendor (the vendor libraries)",
                  ops.name, ops.text);
    }
    settings.ops = ops.text;
  }

  Source path = pick(PORTA_OPTION(plugin_path), "options.plugin_path", "PORTA_PLUGIN_PATH");
  if (path.text && *path.text) {
    for (const std::string& directory : split(path.text, ':')) {
      if (directory.empty()) continue;
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
    } else {
      all_incompatible = all_incompatible && is_incompatibility(report.outcome);
      failures += fmt::format("\n  {}: {}: {}", name, report.path, report.reason);
    }
    reports_.push_back(std::move(report));
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

porta_status_t Runtime::enumerate_devices(const Settings& settings) {
  for (auto& backend : backends_) {
    for (int32_t index = 0; index < backend->device_count; ++index) {
      auto device = std::make_unique<Device>();
      device->backend = backend.get();
      device->index = index;
      device->id = static_cast<porta_device_t>(devices_.size());
      device->properties.struct_size = sizeof(porta_device_properties_t);
      device->pool = std::make_unique<MemoryPool>(*device);
      porta_status_t status = call(*backend, "porta_init", backend->interface.device_properties,
                                   index, &device->properties);
      if (status != PORTA_SUCCESS) return status;
      std::snprintf(device->properties.backend, sizeof(device->properties.backend), "%s",
                    backend->name.c_str());
      devices_.push_back(std::move(device));
    }
  }
  if (settings.device >= device_count()) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}={} is out of range; accepted: 0 to {} ({} device(s))", settings.device_source,
                settings.device, device_count() - 1, device_count());
  }
  default_device_ = settings.device;
  selected_ = static_backend_name(devices_[default_device_]->backend->name);

  for (auto& device : devices_) {
    auto stream = std::make_shared<Stream>();
    stream->device = device.get();
    stream->is_default = true;
    const Backend& backend = *device->backend;
    porta_status_t status = call(backend, "porta_init", backend.interface.stream_create,
                                 device->index, &stream->native);
    if (status != PORTA_SUCCESS) return status;
    device->default_stream = reinterpret_cast<porta_stream_t>(streams.insert(std::move(stream)));
  }
  return PORTA_SUCCESS;
}

porta_status_t Runtime::initialize(const porta_init_options_t* options) {
  initialized_ = true;
  Settings settings;
  status_ = read_settings(options, settings);
  plugin_directories_ = settings.plugin_directories;
  if (status_ == PORTA_SUCCESS) {
    set_plugin_settings(settings.plugin_settings);
    status_ = load_backends(settings);
  }
  if (status_ == PORTA_SUCCESS) status_ = enumerate_devices(settings);
  if (status_ == PORTA_SUCCESS) load_ops_plugins(settings);
  if (status_ != PORTA_SUCCESS) {
    init_message_ = porta_last_error_message();
    log().info("{}", init_message_);
    release_everything();
  }
  return status_;
}

void Runtime::shutdown() {
  release_everything();
  reports_.clear();
  status_ = PORTA_SUCCESS;
  init_message_.clear();
  initialized_ = false;
}

// Op plugins are optional: one that fails is reported, and the ops answer UNAVAILABLE with its
// reason, but the runtime works without it.
void Runtime::load_ops_plugins(const Settings& settings) {
  std::vector<std::string> names{"portable"};
  for (const auto& backend : backends_) names.push_back("vendor_" + backend->name);
  for (const std::string& name : names) {
    auto plugin = std::make_unique<OpsPlugin>();
    PluginReport report;
    if (load_ops_plugin(name, settings.plugin_directories, *plugin, report)) {
      ops_plugins_.push_back(std::move(plugin));
    }
    reports_.push_back(std::move(report));
  }
  // The loaded plugin named wanted if it serves the backend; else NULL and why not.
  auto serving = [&](const std::string& wanted, const std::string& backend,
                     std::string& why_not) -> OpsPlugin* {
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
    take_plugin_message();
    if (plugin.interface.supports_backend(plugin.context, backend.c_str()) != PORTA_SUCCESS) {
      std::string why = take_plugin_message();
      why_not = fmt::format("the {} op plugin does not serve the {} backend{}{}", wanted, backend,
                            why.empty() ? "" : ": ", why);
      return nullptr;
    }
    return &plugin;
  };
  for (auto& device : devices_) {
    const std::string& backend = device->backend->name;
    const bool vendor = settings.ops == "vendor";
    device->ops = serving(vendor ? "vendor_" + backend : "portable", backend, device->ops_missing);
    // A vendor plugin that is missing is not replaced (the ops say why); one that is there but
    // leaves ops out gets them from the portable plugin.
    if (vendor && device->ops) {
      device->fallback_ops = serving("portable", backend, device->fallback_missing);
    }
  }
}

// Destroys what users left alive, in dependency order: first let all work finish, then kernels
// before their modules, streams and events, memory, and the backends last.
void Runtime::release_everything() {
  for (auto& device : devices_) {
    device->backend->interface.device_synchronize(device->backend->context, device->index);
  }
  // Communicators and their engines first: they may hold streams and memory of their own.
  for (auto& comm : comms.remove_all()) {
    comm->engine->interface.comm_destroy(comm->engine->context, comm->native);
  }
  for (auto& plugin : comm_plugins_) unload_comm_plugin(*plugin);
  comm_plugins_.clear();
  comm_missing_.clear();
  comm_loaded_ = false;
  // Op plugins first: they hold modules and memory of their own, which go below with the rest.
  for (auto& plugin : ops_plugins_) unload_ops_plugin(*plugin);
  ops_plugins_.clear();
  kernels.remove_all();
  for (auto& module : modules.remove_all()) {
    const Backend& backend = *module->device->backend;
    backend.interface.module_unload(backend.context, module->native);
  }
  for (auto& event : events.remove_all()) {
    const Backend& backend = *event->device->backend;
    backend.interface.event_destroy(backend.context, event->native);
  }
  for (auto& stream : streams.remove_all()) {
    const Backend& backend = *stream->device->backend;
    backend.interface.stream_synchronize(backend.context, stream->native);
    backend.interface.stream_destroy(backend.context, stream->native);
  }
  report_live_allocations("porta_shutdown", nullptr, nullptr);
  for (auto& device : devices_) device->pool->release_all();
  {
    std::unique_lock lock(allocations_mutex_);
    for (auto& [base, allocation] : allocations_) {
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

bool Runtime::forget(const void* ptr, porta_memory_kind_t kind, Allocation& out) {
  std::unique_lock lock(allocations_mutex_);
  auto it = allocations_.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == allocations_.end() || it->second.kind != kind) return false;
  out = it->second;
  allocations_.erase(it);
  return true;
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

bool Runtime::in_freed_pool_block(const void* ptr, Device** out_device, uintptr_t* out_base) {
  for (auto& device : devices_) {
    if (device->pool->holds_freed(ptr, out_base)) {
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

namespace {
thread_local int t_plugin_calls = 0;
}  // namespace

PluginCall::PluginCall() { ++t_plugin_calls; }
PluginCall::~PluginCall() { --t_plugin_calls; }
bool PluginCall::active() { return t_plugin_calls > 0; }

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

porta_status_t ensure_initialized() {
  {
    std::shared_lock lock(lifecycle_mutex());
    if (instance().initialized()) return instance().status();
  }
  std::unique_lock lock(lifecycle_mutex());
  if (!instance().initialized()) instance().initialize(nullptr);
  return instance().status();
}

}  // namespace detail
}  // namespace porta
