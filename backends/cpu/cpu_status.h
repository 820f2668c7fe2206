// Errors and logging. The plugin reaches libporta only through the host API it is handed, so
// every message goes through the pointers kept here.
#pragma once

#include <porta/porta_plugin.h>

#include <exception>
#include <new>
#include <string>
#include <utility>

namespace porta::cpu {

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

// Kept from porta_plugin_entry until shutdown; NULL before.
void set_host(const porta_host_api_t* host);
// Sets the calling thread's last error message in libporta.
void set_error_message(const std::string& message) noexcept;
// Never throws, so stream workers and pool threads may log anywhere.
void log(porta_log_level_t level, const std::string& message) noexcept;

// The status and message an exception stands for: the mapping every slot and task uses.
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

}  // namespace porta::cpu
