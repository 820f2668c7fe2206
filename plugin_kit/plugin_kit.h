// The plugin side of the ABI, shared by every plugin: failures and their statuses, the host API
// kept from the entry point (last-error message, log), and the entry point's filling of
// porta_plugin_t. A plugin reaches libporta only through that host API (and, for an op plugin,
// the public C API), never through this library, which is linked into each plugin privately.
#pragma once

#include <porta/porta_plugin.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace porta::plugin {

// The plugin side's one error path, named as libporta's: fail() sets the last error message and
// returns the status; throw_error() throws a Failure, which the one slot guard (guarded) turns
// into that status and message, so no helper has to pass a status up by hand.

// A failure carrying its status.
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

[[noreturn]] inline void throw_error(porta_status_t status, std::string message) {
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
// Every error message of an op plugin starts with the op's name (the slot guarded was given).
porta_status_t enter_ops(const porta_host_api_t* host, porta_plugin_t* out_plugin,
                         const Description& description) noexcept;
// As above, with the version string made by version_text() once, after the checks pass, and kept
// (OUT_OF_MEMORY when it cannot be): for plugins that name the libraries they loaded.
porta_status_t enter_ops(const porta_host_api_t* host, porta_plugin_t* out_plugin,
                         const Description& description, std::string (*version_text)()) noexcept;

// Sets the calling thread's last error message in libporta (nothing before enter).
void set_error_message(const std::string& message) noexcept;
// Sets the last error message and returns status, for slots that answer without throwing.
[[nodiscard]] inline porta_status_t fail(porta_status_t status, const std::string& message) noexcept {
  set_error_message(message);
  return status;
}
// A setting libporta checked (porta_host_api_t.setting: "cpu_mode", "PORTA_CPU_DEVICES",
// "PORTA_COMM_TIMEOUT", "PORTA_VENDOR_LIBRARY"), or NULL when it is unset or libporta predates
// settings.
const char* setting(const char* name) noexcept;
// Where item first stands in a comma-separated list (a setting such as PORTA_VENDOR_LIBRARY;
// spaces around the names ignored), counting from 0; nullopt when it is not there.
inline std::optional<size_t> position_in_list(std::string_view list, std::string_view item) {
  for (size_t position = 0; !list.empty(); ++position) {
    const size_t comma = std::min(list.find(','), list.size());
    std::string_view name = list.substr(0, comma);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (name == item) return position;
    list.remove_prefix(std::min(comma + 1, list.size()));
  }
  return std::nullopt;
}
// Writes "<name>: message" to Porta's log. Never throws, so workers and pool threads may log
// anywhere.
void log(porta_log_level_t level, const std::string& message) noexcept;

// The status and message the exception being handled stands for: a Failure's or a porta::error's
// own (from an op plugin's runtime calls through porta.hpp), OUT_OF_MEMORY for std::bad_alloc
// ("<where>: out of host memory"), INTERNAL ("<where>: internal error: <what()>") for anything
// else. An op plugin's messages all start with "<where>: ", a backend's own exceptions with
// "<name>: " where Description.name_in_errors asks. When memory runs out while the message is
// built, the bare status comes back. Call only inside a catch block.
struct Error {
  porta_status_t status;
  std::string message;
};
Error error_of_current_exception(const char* where) noexcept;

// The one slot guard of every plugin (backends, op plugins, collective engines): runs body, which
// returns a porta_status_t or nothing (then SUCCESS), so that no exception leaves the slot.
template <typename Body>
porta_status_t guarded(const char* slot, Body&& body) noexcept {
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<Body&>>) {
      body();
      return PORTA_SUCCESS;
    } else {
      return body();
    }
  } catch (...) {
    Error error = error_of_current_exception(slot);
    set_error_message(error.message);
    return error.status;
  }
}

// For a backend whose own worker thread calls a stream's host functions (OpenCL, Level Zero): fn
// must not throw, but one that does does not end the process; its error is kept for the
// stream's next synchronize, as the CPU backend keeps a failed task's.
class HostFunctionErrors {
 public:
  void run(porta_host_fn_t fn, void* user_data) noexcept;
  // Throws the error kept since the last call, if any.
  void throw_kept();

 private:
  std::mutex mutex_;
  std::optional<Error> kept_;
};

}  // namespace porta::plugin
