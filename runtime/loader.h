// Finding, opening and checking plugins. Every attempt becomes a row of the loader report.
#pragma once

#include <porta/porta_plugin.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace porta {

// The backends Porta knows, in the order "auto" prefers them; "auto" takes the first
// kAutoBackendCount. OpenCL is used only when named: on the CPU (PoCL) it is slower than the CPU
// backend, and a GPU it drives is better served by its vendor's backend (docs/decisions.md).
inline constexpr const char* kBackendNames[] = {"cuda", "hip", "level_zero", "cpu", "opencl"};
inline constexpr size_t kAutoBackendCount = 4;

// A backend plugin that loaded, initialised and has at least one device.
struct Backend {
  std::string name;
  void* library = nullptr;
  porta_backend_interface_t interface{};  // copied; slots beyond the plugin's size are NULL
  porta_backend_context_t context = nullptr;
  int32_t device_count = 0;
};

// An op plugin that loaded and initialised.
struct OpsPlugin {
  std::string name;
  void* library = nullptr;
  porta_ops_interface_t interface{};  // copied; slots beyond the plugin's size are NULL
  void* context = nullptr;            // the plugin's state, from its initialize
};

// A collective engine (porta_comm.h) that loaded and initialised.
struct CommPlugin {
  std::string name;
  void* library = nullptr;
  porta_comm_interface_t interface {};  // copied; slots beyond the plugin's size are NULL
  porta_backend_context_t context = nullptr;
};

struct PluginReport {
  std::string name;
  porta_plugin_kind_t kind = PORTA_PLUGIN_KIND_BACKEND;
  std::string path;
  porta_plugin_outcome_t outcome = PORTA_PLUGIN_NOT_REQUESTED;
  porta_status_t status = PORTA_SUCCESS;
  std::string reason;
  uint32_t abi_major = 0;
  uint32_t abi_minor = 0;
  int32_t device_count = 0;
  std::string version;  // the plugin's version string, copied while it is loaded
  std::string ops;      // op plugins: the ops whose slots it fills, comma-separated
};

// The names (porta_ops.h without "porta_") of the ops whose slots interface fills, joined by ','.
std::string implemented_ops(const porta_ops_interface_t& interface);

// The most devices one backend may report: a larger count is a broken plugin, whose devices
// would each be opened in turn.
inline constexpr int32_t kMaxDevicesPerBackend = 1024;

// Searches directories in order for libporta_<name>.so and brings the first one found up.
// On success fills backend; either way fills report.
bool load_backend(const std::string& name, const std::vector<std::string>& directories,
                  Backend& backend, PluginReport& report);
void unload_backend(Backend& backend);

// The same for the op plugin libporta_ops_<name>.so.
bool load_ops_plugin(const std::string& name, const std::vector<std::string>& directories,
                     OpsPlugin& plugin, PluginReport& report);
void unload_ops_plugin(OpsPlugin& plugin);

// The settings plugins read through porta_host_api_t.setting (name to checked value).
void set_plugin_settings(std::map<std::string, std::string> settings);

// The same for the collective engine libporta_comm_<name>.so.
bool load_comm_plugin(const std::string& name, const std::vector<std::string>& directories,
                      CommPlugin& comm, PluginReport& report);
void unload_comm_plugin(CommPlugin& comm);

// Where plugins are looked for after PORTA_PLUGIN_PATH: the directory holding libporta, then the
// install directory baked in at build time.
std::vector<std::string> default_plugin_directories();

}  // namespace porta
