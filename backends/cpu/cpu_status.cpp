#include "cpu_status.h"

#include <atomic>

namespace porta::cpu {
namespace {

// Atomic because slots, stream workers and pool threads read it while the entry may set it.
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
    host->log(level, ("cpu: " + message).c_str());
  } catch (...) {
    // A log line is not worth failing the operation it describes.
  }
}

Error error_of_current_exception(const char* where) noexcept {
  // Building the message may itself run out of memory; the fallbacks are static strings.
  try {
    throw;
  } catch (const Failure& failure) {
    try {
      return {failure.status(), failure.what()};
    } catch (...) {
      return {failure.status(), {}};
    }
  } catch (const std::bad_alloc&) {
    try {
      return {PORTA_ERROR_OUT_OF_MEMORY, std::string(where) + ": out of host memory"};
    } catch (...) {
      return {PORTA_ERROR_OUT_OF_MEMORY, {}};
    }
  } catch (const std::exception& e) {
    try {
      return {PORTA_ERROR_BACKEND, std::string(where) + ": internal error: " + e.what()};
    } catch (...) {
      return {PORTA_ERROR_BACKEND, {}};
    }
  } catch (...) {
    try {
      return {PORTA_ERROR_BACKEND, std::string(where) + ": internal error (unknown exception)"};
    } catch (...) {
      return {PORTA_ERROR_BACKEND, {}};
    }
  }
}

}  // namespace porta::cpu
