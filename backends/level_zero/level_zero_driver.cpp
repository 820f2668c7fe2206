#include "level_zero_driver.h"

#include <dlfcn.h>
#include <porta/porta.h>

#include <cstdio>

#include "plugin_kit.h"

namespace porta::level_zero {

std::unique_ptr<Driver> Driver::open() {
  constexpr const char* kLibrary = "libze_loader.so.1";
  void* library = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* why = dlerror();
    plugin::throw_error(PORTA_ERROR_UNAVAILABLE,
                        std::string("level_zero: no Level Zero loader: ") + (why ? why : kLibrary));
  }
  std::unique_ptr<Driver> driver(new Driver());
#define PORTA_ZE_RESOLVE(name)                                                   \
  driver->name = reinterpret_cast<decltype(&::name)>(dlsym(library, #name));     \
  if (!driver->name) {                                                           \
    plugin::throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION,                        \
                        std::string("level_zero: ") + kLibrary +                 \
                            " has no " #name                                     \
                            " (a loader of the "                                 \
                            "Level Zero 1.4 specification or later is needed)"); \
  }
  PORTA_ZE_FUNCTIONS(PORTA_ZE_RESOLVE)
#undef PORTA_ZE_RESOLVE
  return driver;
}

std::string Driver::describe(ze_result_t result) {
  const char* name = "an unknown Level Zero result";
  switch (result) {
#define PORTA_ZE_RESULT(code) \
  case code:                  \
    name = #code;             \
    break;
    PORTA_ZE_RESULT(ZE_RESULT_SUCCESS)
    PORTA_ZE_RESULT(ZE_RESULT_NOT_READY)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_DEVICE_LOST)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_OUT_OF_HOST_MEMORY)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_OUT_OF_DEVICE_MEMORY)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_MODULE_BUILD_FAILURE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_MODULE_LINK_FAILURE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INSUFFICIENT_PERMISSIONS)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_NOT_AVAILABLE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_DEPENDENCY_UNAVAILABLE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_UNINITIALIZED)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_UNSUPPORTED_VERSION)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_UNSUPPORTED_FEATURE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_ARGUMENT)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_NULL_HANDLE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_HANDLE_OBJECT_IN_USE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_NULL_POINTER)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_SIZE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_UNSUPPORTED_SIZE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_UNSUPPORTED_ALIGNMENT)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_ENUMERATION)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_NATIVE_BINARY)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_KERNEL_NAME)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_KERNEL_ARGUMENT_INDEX)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_KERNEL_ARGUMENT_SIZE)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_GROUP_SIZE_DIMENSION)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_INVALID_GLOBAL_WIDTH_DIMENSION)
    PORTA_ZE_RESULT(ZE_RESULT_ERROR_UNKNOWN)
#undef PORTA_ZE_RESULT
    default:
      break;
  }
  char code[16];
  std::snprintf(code, sizeof(code), "0x%x", static_cast<unsigned>(result));
  return std::string(name) + " (" + code + ")";
}

void Driver::check(ze_result_t result, const std::string& what) {
  if (result == ZE_RESULT_SUCCESS) return;
  porta_status_t status = PORTA_ERROR_BACKEND;
  if (result == ZE_RESULT_ERROR_OUT_OF_HOST_MEMORY ||
      result == ZE_RESULT_ERROR_OUT_OF_DEVICE_MEMORY) {
    status = PORTA_ERROR_OUT_OF_MEMORY;
  } else if (result == ZE_RESULT_ERROR_DEVICE_LOST) {
    status = PORTA_ERROR_DEVICE_LOST;
  }
  plugin::throw_error(status, "level_zero: " + what + ": " + describe(result));
}

}  // namespace porta::level_zero
