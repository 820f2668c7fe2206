// The slot boundary of op plugins, which reach libporta through the public C++ wrappers
// (porta.hpp): a porta::error from a runtime call is passed on with its status. Every message
// starts with the op's name.
#pragma once

#include <new>
#include <porta/porta.hpp>
#include <string>

#include "plugin_kit.h"

namespace porta::plugin {

// The status and message "<op>: ..." an exception stands for: a Failure's or a porta::error's
// own status, out of memory for bad_alloc, BACKEND for anything else.
inline Error error_of_op_exception(const char* op) noexcept {
  // Building the message may itself run out of memory; then the bare status is returned.
  porta_status_t status = PORTA_ERROR_BACKEND;
  try {
    try {
      throw;
    } catch (const Failure& e) {
      status = e.status();
      return {status, std::string(op) + ": " + e.what()};
    } catch (const porta::error& e) {
      status = e.status();
      return {status, std::string(op) + ": " + e.message()};
    } catch (const std::bad_alloc&) {
      status = PORTA_ERROR_OUT_OF_MEMORY;
      return {status, std::string(op) + ": out of host memory"};
    } catch (const std::exception& e) {
      return {status, std::string(op) + ": " + e.what()};
    } catch (...) {
      return {status, std::string(op) + ": an unknown exception"};
    }
  } catch (...) {
    return {status, {}};
  }
}

// Runs an op slot's body (returning nothing) so that no exception leaves the slot.
template <class Body>
porta_status_t guarded_op(const char* op, Body&& body) noexcept {
  try {
    body();
    return PORTA_SUCCESS;
  } catch (...) {
    Error error = error_of_op_exception(op);
    set_error_message(error.message);
    return error.status;
  }
}

}  // namespace porta::plugin
