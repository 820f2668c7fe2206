#include "gpu_status.h"

#include <atomic>
#include <new>

#include "gpu_vendor.h"

namespace porta::gpu {
namespace {

std::atomic<const porta_host_api_t*> g_host{nullptr};

}  // namespace

void set_host(const porta_host_api_t* host) { g_host.store(host, std::memory_order_release); }

void set_error_message(const std::string& message) noexcept {
  const porta_host_api_t* host = g_host.load(std::memory_order_acquire);
  if (host && host->set_error_message) host->set_error_message(message.c_str());
}

void log(porta_log_level_t level, const std::string& message) noexcept {
  const porta_host_api_t* host = g_host.load(std::memory_order_acquire);
  if (!host || !host->log) return;
  try {
    host->log(level, (std::string(kBackendName) + ": " + message).c_str());
  } catch (...) {
    // A log line is not worth failing the operation it describes.
  }
}

porta_status_t status_of_current_exception(const char* slot) noexcept {
  // Building a message may itself run out of memory; then the bare status is returned.
  try {
    throw;
  } catch (const Failure& failure) {
    set_error_message(failure.what());
    return failure.status();
  } catch (const std::bad_alloc&) {
    try {
      set_error_message(std::string(kBackendName) + ": " + slot + ": out of host memory");
    } catch (...) {
    }
    return PORTA_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    try {
      set_error_message(std::string(kBackendName) + ": " + slot + ": internal error: " + e.what());
    } catch (...) {
    }
    return PORTA_ERROR_BACKEND;
  } catch (...) {
    try {
      set_error_message(std::string(kBackendName) + ": " + slot + ": internal error");
    } catch (...) {
    }
    return PORTA_ERROR_BACKEND;
  }
}

}  // namespace porta::gpu
