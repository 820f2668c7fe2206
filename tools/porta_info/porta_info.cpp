// porta-info: what Porta finds on this machine. Prints the loader report (every plugin tried and
// why it was or was not usable) and, when initialisation succeeds, the selected backend and every
// device with its properties and memory. --json prints the same as one JSON document.
//
// Exit status: 0 when initialisation succeeded; 1 when it failed (the report is still printed,
// then porta_last_error_message() on stderr) or a device could not be queried; 2 for bad usage.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli_checks.h"
#include "porta/porta.h"
#include "porta/porta.hpp"

namespace {

using json = nlohmann::ordered_json;

constexpr const char* kEnvironment[] = {"PORTA_BACKEND", "PORTA_DEVICE", "PORTA_OPS",
                                        "PORTA_PLUGIN_PATH", "PORTA_LOG",    "PORTA_CPU_DEVICES"};

struct device_info {
  porta_device_t index = 0;
  porta_device_properties_t properties{};
  std::optional<porta::memory_info> memory;
  std::optional<porta_memory_pool_stats_t> pool;
  std::string error;  // why properties or memory could not be read; "" when they could
};

// Everything porta-info reports, gathered once and printed as text or JSON.
struct report {
  const porta_init_options_t* options = nullptr;  // the command line's overrides, or NULL
  porta_status_t init_status = PORTA_SUCCESS;
  std::string init_message;
  std::vector<porta_plugin_report_t> plugins;
  std::string plugins_error;
  std::string selected_backend;
  porta_device_t default_device = 0;
  std::vector<device_info> devices;
  bool device_failed = false;
  std::string query_error;  // why the backend or the device list could not be read
};

double gib(uint64_t bytes) { return static_cast<double>(bytes) / (1ull << 30); }

report gather(const porta_init_options_t* options) {
  report r;
  r.options = options;
  r.init_status = porta_init(options);
  // Read at once: the message is only valid until this thread's next failing call.
  if (r.init_status != PORTA_SUCCESS) r.init_message = porta_last_error_message();
  try {
    r.plugins = porta::loader_report();
  } catch (const porta::error& e) {
    r.plugins_error = e.what();
  }
  if (r.init_status != PORTA_SUCCESS) return r;
  try {
    r.selected_backend = porta::selected_backend();
    r.default_device = porta::default_device();
    for (porta_device_t d : porta::devices()) {
      device_info& info = r.devices.emplace_back();
      info.index = d;
      try {
        info.properties = porta::device_properties(d);
        info.memory = porta::device_memory_info(d);
        porta_memory_pool_stats_t pool{};
        pool.struct_size = sizeof(pool);
        if (porta_memory_pool_stats(d, &pool) == PORTA_SUCCESS) info.pool = pool;
      } catch (const porta::error& e) {
        info.error = e.what();
        r.device_failed = true;
      }
    }
  } catch (const porta::error& e) {
    r.query_error = e.what();
    r.device_failed = true;
  }
  return r;
}

std::string abi_version(const porta_plugin_report_t& p) {
  return p.abi_major ? fmt::format("{}.{}", p.abi_major, p.abi_minor) : "-";
}

template <class T>
std::string dims(const T (&d)[3]) {
  return fmt::format("{} x {} x {}", d[0], d[1], d[2]);
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out.empty() ? "none" : out;
}

void print_text(const report& r) {
  fmt::print("Porta {}.{}.{}\n\nEnvironment\n", PORTA_VERSION_MAJOR, PORTA_VERSION_MINOR,
             PORTA_VERSION_PATCH);
  for (const char* name : kEnvironment) {
    const char* value = std::getenv(name);
    fmt::print("  {:<18} {}\n", name, value ? value : "(unset)");
  }
  if (r.options && r.options->backend) fmt::print("  {:<18} {}\n", "--backend", r.options->backend);
  if (r.options && r.options->plugin_path) {
    fmt::print("  {:<18} {}\n", "--plugin-path", r.options->plugin_path);
  }

  fmt::print("\nLoader report\n");
  if (!r.plugins_error.empty()) fmt::print("  unavailable: {}\n", r.plugins_error);
  if (r.plugins.empty() && r.plugins_error.empty()) fmt::print("  (no plugin tried)\n");
  if (!r.plugins.empty()) {
    fmt::print("  {:<8} {:<12} {:<14} {:<5} {:>7}\n", "KIND", "PLUGIN", "OUTCOME", "ABI",
               "DEVICES");
  }
  for (const auto& p : r.plugins) {
    const bool backend = p.kind == PORTA_PLUGIN_KIND_BACKEND;
    fmt::print("  {:<8} {:<12} {:<14} {:<5} {:>7}\n", backend ? "backend" : "ops", p.name,
               porta::to_string(p.outcome), abi_version(p),
               backend ? std::to_string(p.device_count) : "-");
    if (p.path[0]) fmt::print("      path:    {}\n", p.path);
    if (p.version[0]) fmt::print("      version: {}\n", p.version);
    if (p.ops[0]) fmt::print("      ops:     {}\n", p.ops);
    if (p.reason[0]) fmt::print("      reason:  {}\n", p.reason);
  }

  fmt::print("\nInitialisation: {}\n", porta_status_name(r.init_status));
  if (r.init_status != PORTA_SUCCESS) return;
  fmt::print("Selected backend: {}\n", r.selected_backend);
  fmt::print("Devices: {}\n", r.devices.size());
  for (const auto& d : r.devices) {
    const porta_device_properties_t& p = d.properties;
    fmt::print("\nDevice {}{}: {}\n", d.index, d.index == r.default_device ? " (default)" : "",
               p.name);
    if (!p.backend[0]) {
      fmt::print("  error: {}\n", d.error);
      continue;
    }
    const auto row = [](const char* key, const std::string& value) {
      fmt::print("  {:<24} {}\n", key, value);
    };
    row("backend", p.backend);
    row("architecture", p.architecture);
    row("total memory", fmt::format("{:.2f} GiB", gib(p.total_memory)));
    if (d.memory) {
      row("memory free / total",
          fmt::format("{:.2f} / {:.2f} GiB", gib(d.memory->free), gib(d.memory->total)));
    } else {
      row("memory free / total", "error: " + d.error);
    }
    row("compute units", std::to_string(p.compute_units));
    row("max work-group size", std::to_string(p.max_work_group_size));
    row("max work-group dims", dims(p.max_work_group_dims));
    row("max grid dims", dims(p.max_grid_dims));
    row("shared memory per group", fmt::format("{} bytes ({:.0f} KiB)", p.shared_memory_per_group,
                                               p.shared_memory_per_group / 1024.0));
    row("subgroup size", std::to_string(p.subgroup_size));
    row("clock", p.clock_mhz ? fmt::format("{} MHz", p.clock_mhz) : "unknown");
    row("capabilities", join(porta::capability_names(p.capabilities)));
  }
}

// "a,b,c" as ["a", "b", "c"]; "" as [].
std::vector<std::string> split_list(const char* text) {
  std::vector<std::string> items;
  std::string item;
  for (const char* c = text; *c; ++c) {
    if (*c != ',') {
      item += *c;
    } else if (!item.empty()) {
      items.push_back(std::move(item));
      item.clear();
    }
  }
  if (!item.empty()) items.push_back(std::move(item));
  return items;
}

json to_json(const report& r) {
  json env = json::object();
  for (const char* name : kEnvironment) {
    const char* value = std::getenv(name);
    env[name] = value ? json(value) : json(nullptr);
  }
  json options = json::object();  // the command line's overrides of the environment
  if (r.options && r.options->backend) options["backend"] = r.options->backend;
  if (r.options && r.options->plugin_path) options["plugin_path"] = r.options->plugin_path;
  json plugins = json::array();
  for (const auto& p : r.plugins) {
    plugins.push_back({{"name", p.name},
                       {"kind", p.kind == PORTA_PLUGIN_KIND_BACKEND ? "backend" : "ops"},
                       {"outcome", porta::to_string(p.outcome)},
                       {"status", porta_status_name(p.status)},
                       {"path", p.path},
                       {"reason", p.reason},
                       {"abi_major", p.abi_major},
                       {"abi_minor", p.abi_minor},
                       {"device_count", p.device_count},
                       {"version", p.version},
                       {"ops", split_list(p.ops)}});
  }
  json devices = json::array();
  for (const auto& d : r.devices) {
    const porta_device_properties_t& p = d.properties;
    json j = {{"index", d.index}, {"default", d.index == r.default_device}};
    if (p.backend[0]) {
      j.update({{"name", p.name},
                {"backend", p.backend},
                {"architecture", p.architecture},
                {"total_memory_bytes", p.total_memory},
                {"total_memory_gib", gib(p.total_memory)},
                {"compute_units", p.compute_units},
                {"max_work_group_size", p.max_work_group_size},
                {"max_work_group_dims", p.max_work_group_dims},
                {"max_grid_dims", p.max_grid_dims},
                {"shared_memory_per_group_bytes", p.shared_memory_per_group},
                {"subgroup_size", p.subgroup_size},
                {"clock_mhz", p.clock_mhz},
                {"capabilities", porta::capability_names(p.capabilities)}});
    }
    if (d.memory) {
      j["memory"] = {{"free_bytes", d.memory->free}, {"total_bytes", d.memory->total}};
    }
    if (d.pool) {
      j["memory_pool"] = {{"bytes_in_use", d.pool->bytes_in_use},
                          {"bytes_cached", d.pool->bytes_cached},
                          {"peak_bytes_in_use", d.pool->peak_bytes_in_use},
                          {"allocation_count", d.pool->allocation_count},
                          {"reuse_count", d.pool->reuse_count},
                          {"release_threshold", d.pool->release_threshold}};
    }
    if (!d.error.empty()) j["error"] = d.error;
    devices.push_back(std::move(j));
  }
  const bool ok = r.init_status == PORTA_SUCCESS;
  json out = {{"porta_version", fmt::format("{}.{}.{}", PORTA_VERSION_MAJOR, PORTA_VERSION_MINOR,
                                            PORTA_VERSION_PATCH)},
              {"environment", env},
              {"options", options},
              {"init", {{"status", porta_status_name(r.init_status)}, {"message", r.init_message}}},
              {"plugins", plugins},
              {"selected_backend", ok ? json(r.selected_backend) : json(nullptr)},
              {"default_device", ok ? json(r.default_device) : json(nullptr)},
              {"devices", devices}};
  if (!r.plugins_error.empty()) out["plugins_error"] = r.plugins_error;
  if (!r.query_error.empty()) out["error"] = r.query_error;
  return out;
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"porta-info: the Porta loader report, the selected backend and its devices."};
  bool as_json = false;
  std::string backend, plugin_path;
  app.add_flag("--json", as_json, "Print one JSON document instead of text");
  app.add_option("--backend", backend,
                 "Backends to try, as PORTA_BACKEND (auto, cpu, cuda, hip, level_zero, opencl or a "
                 "comma list); overrides the environment");
  app.add_option("--plugin-path", plugin_path,
                 "Directories searched first for plugins, as PORTA_PLUGIN_PATH");
  app.set_version_flag("--version", fmt::format("porta-info {}.{}.{}", PORTA_VERSION_MAJOR,
                                                PORTA_VERSION_MINOR, PORTA_VERSION_PATCH));
  app.footer(
      "Exit status: 0 when a backend was initialised, 1 when none could be, 2 for bad usage.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help and --version exit 0
  }

  porta_init_options_t options{};
  options.struct_size = sizeof options;
  options.backend = backend.empty() ? nullptr : backend.c_str();
  options.plugin_path = plugin_path.empty() ? nullptr : plugin_path.c_str();
  const bool overridden = options.backend || options.plugin_path;
  const report r = gather(overridden ? &options : nullptr);

  if (as_json) {
    fmt::print("{}\n", to_json(r).dump(2));
  } else {
    print_text(r);
  }
  if (!porta_tools::stdout_written("porta-info")) return 1;
  if (r.init_status != PORTA_SUCCESS) {
    fmt::print(stderr, "porta-info: {}: {}\n", porta_status_name(r.init_status), r.init_message);
    return 1;
  }
  if (r.device_failed) {
    fmt::print(stderr, "porta-info: a device could not be queried{}{}\n",
               r.query_error.empty() ? "" : ": ", r.query_error);
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // fmt::print's, where stdout or stderr cannot be written
    std::fprintf(stderr, "porta-info: %s\n", e.what());
    return 1;
  }
}
