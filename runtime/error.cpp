#include "error.h"

#include <cstring>
#include <exception>

namespace porta {
namespace {
thread_local std::string last_error;
thread_local std::string plugin_message;
// Used instead of last_error when there was no memory for it.
thread_local char fallback_error[512];
thread_local bool fallback_in_use = false;
}  // namespace

void set_last_error(std::string message) noexcept {
  last_error = std::move(message);
  fallback_in_use = false;
}

void set_last_error_truncated(const char* begin, size_t length) noexcept {
  length = std::min(length, sizeof(fallback_error) - 1);
  std::memmove(fallback_error, begin, length);
  fallback_error[length] = '\0';
  fallback_in_use = true;
}

void set_plugin_message(const char* message) noexcept {
  try {
    plugin_message = message ? message : "";
  } catch (...) {
    plugin_message.clear();
  }
}

std::string take_plugin_message() noexcept { return std::exchange(plugin_message, std::string()); }

CaughtException current_exception(const char* where) noexcept {
  CaughtException caught{PORTA_ERROR_INTERNAL, {}};
  auto write = [&](const char* what, const char* detail) noexcept {
    const size_t capacity = sizeof(caught.message) - 1;
    size_t length = 0;
    for (const char* part : {where, what, detail}) {
      const size_t n = std::min(std::strlen(part), capacity - length);
      std::memcpy(caught.message + length, part, n);
      length += n;
    }
    caught.message[length] = '\0';
  };
  try {
    throw;
  } catch (const std::bad_alloc&) {
    caught.status = PORTA_ERROR_OUT_OF_MEMORY;
    write(": out of host memory", "");
  } catch (const std::exception& e) {
    write(": internal error: ", e.what());
  } catch (...) {
    write(": internal error: ", "an exception of unknown type");
  }
  return caught;
}

porta_status_t undefined_status(const char* function, std::string_view plugin,
                                porta_status_t status) {
  take_plugin_message();
  return fail(PORTA_ERROR_INTERNAL, "{}: {} returned {}, which is no porta_status_t value",
              function, plugin, status);
}

}  // namespace porta

extern "C" PORTA_API const char* porta_last_error_message(void) {
  return porta::fallback_in_use ? porta::fallback_error : porta::last_error.c_str();
}
extern "C" PORTA_API const char* porta_status_name(porta_status_t status) {
  switch (status) {
    case PORTA_SUCCESS: return "PORTA_SUCCESS";
    case PORTA_NOT_READY: return "PORTA_NOT_READY";
    case PORTA_ERROR_INVALID_ARGUMENT: return "PORTA_ERROR_INVALID_ARGUMENT";
    case PORTA_ERROR_INVALID_HANDLE: return "PORTA_ERROR_INVALID_HANDLE";
    case PORTA_ERROR_NOT_FOUND: return "PORTA_ERROR_NOT_FOUND";
    case PORTA_ERROR_OUT_OF_MEMORY: return "PORTA_ERROR_OUT_OF_MEMORY";
    case PORTA_ERROR_UNSUPPORTED: return "PORTA_ERROR_UNSUPPORTED";
    case PORTA_ERROR_UNAVAILABLE: return "PORTA_ERROR_UNAVAILABLE";
    case PORTA_ERROR_INCOMPATIBLE_VERSION: return "PORTA_ERROR_INCOMPATIBLE_VERSION";
    case PORTA_ERROR_DEVICE_LOST: return "PORTA_ERROR_DEVICE_LOST";
    case PORTA_ERROR_BACKEND: return "PORTA_ERROR_BACKEND";
    case PORTA_ERROR_KERNEL_HAZARD: return "PORTA_ERROR_KERNEL_HAZARD";
    case PORTA_ERROR_INTERNAL:
      return "PORTA_ERROR_INTERNAL";
    default: return "PORTA_ERROR_UNKNOWN";
  }
}
