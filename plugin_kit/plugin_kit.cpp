#include "plugin_kit.h"

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <porta/porta.hpp>  // porta::error, which op plugins' runtime calls throw

namespace porta::plugin {
namespace {

// Atomic because slots, stream workers and pool threads read them while the entry may set them.
std::atomic<const porta_host_api_t*> g_host{nullptr};
std::atomic<const char*> g_name{""};
std::atomic<bool> g_name_in_errors{false};
// Every message of an op plugin starts with the op's name (the slot's).
std::atomic<bool> g_slot_in_errors{false};

// Whether a struct of the caller's struct_size holds the field ending at field_end.
constexpr bool fits(size_t struct_size, size_t field_end) { return struct_size >= field_end; }

// The prefix of error_of_current_exception's own messages: "<name>: " or nothing.
std::string error_prefix() {
  if (!g_name_in_errors.load(std::memory_order_acquire)) return {};
  return std::string(g_name.load(std::memory_order_acquire)) + ": ";
}

}  // namespace

porta_status_t enter(const porta_host_api_t* host, porta_plugin_t* out_plugin,
                     const Description& description) noexcept {
  if (!host || !out_plugin) return PORTA_ERROR_INVALID_ARGUMENT;
  constexpr size_t kHostNeeds = offsetof(porta_host_api_t, log) + sizeof(host->log);
  try {
    if (!fits(host->struct_size, kHostNeeds)) {
      constexpr size_t kMessageEnd =
          offsetof(porta_host_api_t, set_error_message) + sizeof(host->set_error_message);
      if (fits(host->struct_size, kMessageEnd) && host->set_error_message) {
        host->set_error_message(
            (std::string(description.name) + ": the host API is older than this plugin needs")
                .c_str());
      }
      return PORTA_ERROR_INCOMPATIBLE_VERSION;
    }
    const size_t size = out_plugin->struct_size;
    if (!fits(size, offsetof(porta_plugin_t, abi_major) + sizeof(out_plugin->abi_major))) {
      if (host->set_error_message) {
        host->set_error_message(
            (std::string(description.name) + ": porta_plugin_t is too small").c_str());
      }
      return PORTA_ERROR_INVALID_ARGUMENT;
    }
  } catch (...) {
    return PORTA_ERROR_OUT_OF_MEMORY;
  }
  g_name.store(description.name, std::memory_order_release);
  g_name_in_errors.store(description.name_in_errors, std::memory_order_release);
  g_slot_in_errors.store(description.kind == PORTA_PLUGIN_KIND_OPS, std::memory_order_release);
  g_host.store(host, std::memory_order_release);

  const size_t size = out_plugin->struct_size;
#define PORTA_PLUGIN_SET(field, value)                                           \
  if (fits(size, offsetof(porta_plugin_t, field) + sizeof(out_plugin->field))) { \
    out_plugin->field = (value);                                                 \
  }
  PORTA_PLUGIN_SET(abi_major, PORTA_PLUGIN_ABI_MAJOR);
  PORTA_PLUGIN_SET(abi_minor, PORTA_PLUGIN_ABI_MINOR);
  PORTA_PLUGIN_SET(kind, description.kind);
  PORTA_PLUGIN_SET(name, description.name);
  PORTA_PLUGIN_SET(version, description.version);
  PORTA_PLUGIN_SET(backend, description.backend);
  PORTA_PLUGIN_SET(ops, description.ops);
  PORTA_PLUGIN_SET(comm, description.comm);
#undef PORTA_PLUGIN_SET
  return PORTA_SUCCESS;
}

porta_status_t enter_ops(const porta_host_api_t* host, porta_plugin_t* out_plugin,
                         const Description& description) noexcept {
  if (!host || !out_plugin || out_plugin->struct_size < sizeof(porta_plugin_t)) {
    return PORTA_ERROR_INCOMPATIBLE_VERSION;
  }
  return enter(host, out_plugin, description);
}

porta_status_t enter_ops(const porta_host_api_t* host, porta_plugin_t* out_plugin,
                         const Description& description, std::string (*version_text)()) noexcept {
  const porta_status_t status = enter_ops(host, out_plugin, description);
  if (status != PORTA_SUCCESS) return status;
  try {
    static const std::string version = version_text();
    out_plugin->version = version.c_str();
  } catch (...) {
    return PORTA_ERROR_OUT_OF_MEMORY;
  }
  return PORTA_SUCCESS;
}

void set_error_message(const std::string& message) noexcept {
  const porta_host_api_t* host = g_host.load(std::memory_order_acquire);
  if (host && host->set_error_message) host->set_error_message(message.c_str());
}

const char* setting(const char* name) noexcept {
  const porta_host_api_t* host = g_host.load(std::memory_order_acquire);
  constexpr size_t kEnd = offsetof(porta_host_api_t, setting) + sizeof(host->setting);
  if (!host || !fits(host->struct_size, kEnd) || !host->setting) return nullptr;
  return host->setting(name);
}

void log(porta_log_level_t level, const std::string& message) noexcept {
  const porta_host_api_t* host = g_host.load(std::memory_order_acquire);
  if (!host || !host->log) return;
  try {
    host->log(level,
              (std::string(g_name.load(std::memory_order_acquire)) + ": " + message).c_str());
  } catch (...) {
    // A log line is not worth failing the operation it describes.
  }
}

Error error_of_current_exception(const char* where) noexcept {
  porta_status_t status = PORTA_ERROR_INTERNAL;
  // Building the message may itself run out of memory; then the bare status is returned.
  try {
    const std::string slot =
        g_slot_in_errors.load(std::memory_order_acquire) ? std::string(where) + ": " : "";
    try {
      throw;
    } catch (const Failure& failure) {
      status = failure.status();
      return {status, slot + failure.what()};
    } catch (const porta::error& e) {
      status = e.status();
      return {status, slot + e.message()};
    } catch (const std::bad_alloc&) {
      status = PORTA_ERROR_OUT_OF_MEMORY;
      return {status, error_prefix() + where + ": out of host memory"};
    } catch (const std::exception& e) {
      return {status, error_prefix() + where + ": internal error: " + e.what()};
    } catch (...) {
      return {status, error_prefix() + where + ": internal error: an exception of unknown type"};
    }
  } catch (...) {
    return {status, {}};
  }
}

void HostFunctionErrors::run(porta_host_fn_t fn, void* user_data) noexcept {
  try {
    fn(user_data);
  } catch (...) {
    Error error = error_of_current_exception("host function");
    std::lock_guard lock(mutex_);
    if (!kept_) kept_ = std::move(error);
  }
}

void HostFunctionErrors::throw_kept() {
  std::optional<Error> error;
  {
    std::lock_guard lock(mutex_);
    error = std::exchange(kept_, std::nullopt);
  }
  if (error) throw_error(error->status, std::move(error->message));
}

}  // namespace porta::plugin
