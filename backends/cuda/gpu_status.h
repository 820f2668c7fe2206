// Errors and logging. The plugin reaches libporta only through the host API it is handed.
#pragma once

#include <porta/porta_plugin.h>

#include <exception>
#include <string>
#include <utility>

namespace porta::gpu {

// A failure carrying its status. Helpers throw it; the slot boundary (guarded) turns it into a
// return value and a message, so no helper passes a status up by hand.
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

// Kept from porta_plugin_entry until shutdown; NULL before.
void set_host(const porta_host_api_t* host);
void set_error_message(const std::string& message) noexcept;
// Prefixed with the backend's name; never throws.
void log(porta_log_level_t level, const std::string& message) noexcept;

// The status an exception stands for, with its message set as the thread's last error.
porta_status_t status_of_current_exception(const char* slot) noexcept;

// Runs body (returning porta_status_t) so that no exception leaves a slot.
template <typename Body>
porta_status_t guarded(const char* slot, Body&& body) noexcept {
  try {
    return body();
  } catch (...) {
    return status_of_current_exception(slot);
  }
}

}  // namespace porta::gpu
