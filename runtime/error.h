// The thread-local last error, and the guard that keeps exceptions from crossing the C ABI.
#pragma once

#include <fmt/format.h>
#include <porta/porta.h>

#include <new>
#include <stdexcept>
#include <string>
#include <utility>

namespace porta {

// Sets this thread's last error message and returns status, so a failure reads as one line:
//   return fail(PORTA_ERROR_INVALID_ARGUMENT, "size: {} bytes overrun ...", size);
void set_last_error(std::string message);

template <typename... Args>
porta_status_t fail(porta_status_t status, fmt::format_string<Args...> format, Args&&... args) {
  set_last_error(fmt::format(format, std::forward<Args>(args)...));
  return status;
}

// The message a plugin left through the host API during its last slot call on this thread.
void set_plugin_message(const char* message);
std::string take_plugin_message();

// Runs body, turning any exception into a status with a message: nothing throws across the ABI.
template <typename Body>
porta_status_t guarded(const char* function, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(PORTA_ERROR_OUT_OF_MEMORY, "{}: out of host memory", function);
  } catch (const std::exception& e) {
    return fail(PORTA_ERROR_BACKEND, "{}: internal error: {}", function, e.what());
  } catch (...) {
    return fail(PORTA_ERROR_BACKEND, "{}: internal error", function);
  }
}

}  // namespace porta
