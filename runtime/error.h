// The runtime's one error path: fail() sets the thread-local last error and returns the status,
// guarded() keeps exceptions from crossing the C ABI.
#pragma once

#include <fmt/format.h>
#include <porta/porta.h>

#include <algorithm>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace porta {

// Sets this thread's last error message and returns status, so a failure reads as one line:
//   return fail(PORTA_ERROR_INVALID_ARGUMENT, "size: {} bytes overrun ...", size);
void set_last_error(std::string message) noexcept;

// The message when there is no memory to build it in: what fits of it in a fixed per-thread
// buffer (the message as formatted so far, never an allocation). guarded() sets its messages so.
void set_last_error_truncated(const char* begin, size_t length) noexcept;

// Never throws and never allocates when memory has run out: the message is then formatted into
// the fixed buffer, cut short if it does not fit. Safe in catch handlers and noexcept paths.
template <typename... Args>
porta_status_t fail(porta_status_t status, fmt::format_string<Args...> format,
                    Args&&... args) noexcept {
  try {
    set_last_error(fmt::format(format, std::forward<Args>(args)...));
  } catch (...) {
    char buffer[512];
    size_t length = 0;
    try {
      length = fmt::format_to_n(buffer, sizeof(buffer), format, std::forward<Args>(args)...).size;
    } catch (...) {
      const char* name = porta_status_name(status);
      length = std::min(std::char_traits<char>::length(name), sizeof(buffer));
      std::char_traits<char>::copy(buffer, name, length);
    }
    set_last_error_truncated(buffer, std::min(length, sizeof(buffer)));
  }
  return status;
}

// Whether status is one porta.h defines. A plugin slot that answers anything else has a bug:
// undefined_status reports it as INTERNAL, "<function>: <plugin> returned <status>, ...".
constexpr bool is_defined_status(porta_status_t status) {
  return status == PORTA_SUCCESS || status == PORTA_NOT_READY ||
         (status < 0 && status >= PORTA_ERROR_INTERNAL);
}
porta_status_t undefined_status(const char* function, std::string_view plugin,
                                porta_status_t status);

// The message a plugin left through the host API during its last slot call on this thread.
// Setting it never throws: a message that cannot be kept is dropped (the status still says it).
void set_plugin_message(const char* message) noexcept;
std::string take_plugin_message() noexcept;

// The status and message an exception stands for, formatted into a fixed buffer so that nothing
// is allocated: OUT_OF_MEMORY for std::bad_alloc ("<where>: out of host memory"), INTERNAL with
// what() for anything else. libporta throws nothing of its own (it returns statuses), so these are
// the only two kinds of exception that can reach it. Call only inside a catch block.
struct CaughtException {
  porta_status_t status;
  char message[512];
};
CaughtException current_exception(const char* where) noexcept;

// The one guard of the runtime: every entry point runs its body in it, so nothing throws across
// the C ABI. An exception becomes a status and this thread's last error (current_exception).
template <typename Body>
porta_status_t guarded(const char* where, Body&& body) noexcept {
  try {
    return body();
  } catch (...) {
    const CaughtException caught = current_exception(where);
    set_last_error_truncated(caught.message, std::char_traits<char>::length(caught.message));
    return caught.status;
  }
}

}  // namespace porta
