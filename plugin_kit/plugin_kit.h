// The plugin side of the ABI, shared by every plugin: failures and their statuses, the host API
// kept from the entry point (last-error message, log), and the entry point's filling of
// porta_plugin_t. A plugin reaches libporta only through that host API (and, for an op plugin,
// the public C API), never through this library, which is linked into each plugin privately.
#pragma once

#include <porta/porta_plugin.h>

#include <exception>
#include <string>
#include <utility>

namespace porta::plugin {

// A failure carrying its status. Helpers throw it; the slot boundary (guarded) turns it into a
// return value and a message, so no helper has to pass a status up by hand.
class Failure : public std::exception {
 public:
  Failure(porta_status_t status, std::string message)
      : status_(status), message_(std::move(message)) {}
  porta_status_t status() const noexcept { return status_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  porta_status_t status_;
  std::string message_;
};

[[noreturn]] inline void fail(porta_status_t status, std::string message) {
  throw Failure(status, std::move(message));
}

// What porta_plugin_entry hands libporta, and how the plugin words its own messages.
struct Description {
  porta_plugin_kind_t kind;
  const char* name;  // "cpu", "cuda", "portable", ...; log lines start with "<name>: "
  const char* version;
  const porta_backend_interface_t* backend;  // kind == PORTA_PLUGIN_KIND_BACKEND
  const porta_ops_interface_t* ops;          // kind == PORTA_PLUGIN_KIND_OPS
  // Whether the messages error_of_current_exception makes start with "<name>: " too.
  bool name_in_errors;
  const porta_comm_interface_t* comm = nullptr;  // kind == PORTA_PLUGIN_KIND_COMM
};

// The body of porta_plugin_entry. Checks that the host API has every function the plugin calls
// (INCOMPATIBLE_VERSION otherwise) and that out_plugin reaches abi_major (INVALID_ARGUMENT
// otherwise), keeps host and the description's name, then writes each field of out_plugin that
// its struct_size covers: a libporta built against a shorter porta_plugin_t reads no further.
porta_status_t enter(const porta_host_api_t* host, porta_plugin_t* out_plugin,
                     const Description& description) noexcept;
// The same for an op plugin, which is nothing without its interface, porta_plugin_t's last
// field: a NULL argument or a porta_plugin_t that stops short of it is INCOMPATIBLE_VERSION.
porta_status_t enter_ops(const porta_host_api_t* host, porta_plugin_t* out_plugin,
                         const Description& description) noexcept;
// As above, with the version string made by version_text() once, after the checks pass, and kept
// (OUT_OF_MEMORY when it cannot be): for plugins that name the libraries they loaded.
porta_status_t enter_ops(const porta_host_api_t* host, porta_plugin_t* out_plugin,
                         const Description& description, std::string (*version_text)()) noexcept;

// Sets the calling thread's last error message in libporta (nothing before enter).
void set_error_message(const std::string& message) noexcept;
// Sets the last error message and returns status, for slots that answer without throwing.
inline porta_status_t report(porta_status_t status, const std::string& message) noexcept {
  set_error_message(message);
  return status;
}
// A setting libporta checked (porta_host_api_t.setting: "cpu_mode", "PORTA_CPU_DEVICES",
// "PORTA_COMM_TIMEOUT", "PORTA_VENDOR_LIBRARY"), or NULL when it is unset or libporta predates
// settings.
const char* setting(const char* name) noexcept;
// Writes "<name>: message" to Porta's log. Never throws, so workers and pool threads may log
// anywhere.
void log(porta_log_level_t level, const std::string& message) noexcept;

// The status and message an exception stands for: a Failure's own, out of memory for bad_alloc,
// BACKEND ("<where>: internal error ...") for anything else.
struct Error {
  porta_status_t status;
  std::string message;
};
Error error_of_current_exception(const char* where) noexcept;

// Runs body (returning porta_status_t) so that no exception leaves a slot.
template <typename Body>
porta_status_t guarded(const char* slot, Body&& body) noexcept {
  try {
    return body();
  } catch (...) {
    Error error = error_of_current_exception(slot);
    set_error_message(error.message);
    return error.status;
  }
}

}  // namespace porta::plugin
