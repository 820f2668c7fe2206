#include "opencl_driver.h"

#include <CL/cl_ext.h>
#include <dlfcn.h>
#include <porta/porta.h>

#include "plugin_kit.h"

namespace porta::opencl {

std::unique_ptr<Driver> Driver::open() {
  constexpr const char* kLibrary = "libOpenCL.so.1";
  void* library = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* why = dlerror();
    plugin::throw_error(PORTA_ERROR_UNAVAILABLE,
                        std::string("opencl: no OpenCL ICD loader: ") + (why ? why : kLibrary));
  }
  std::unique_ptr<Driver> driver(new Driver());
#define PORTA_CL_RESOLVE(name)                                                                 \
  driver->name = reinterpret_cast<decltype(&::name)>(dlsym(library, #name));                   \
  if (!driver->name) {                                                                         \
    plugin::throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION, std::string("opencl: ") + kLibrary + \
                                                              " has no " #name                 \
                                                              " (OpenCL 2.1 or later "         \
                                                              "is needed)");                   \
  }
  PORTA_CL_FUNCTIONS(PORTA_CL_RESOLVE)
#undef PORTA_CL_RESOLVE
  return driver;
}

std::string Driver::describe(cl_int error) {
  const char* name = nullptr;
  switch (error) {
#define PORTA_CL_ERROR(code) \
  case code:                 \
    name = #code;            \
    break;
    PORTA_CL_ERROR(CL_SUCCESS)
    PORTA_CL_ERROR(CL_DEVICE_NOT_FOUND)
    PORTA_CL_ERROR(CL_DEVICE_NOT_AVAILABLE)
    PORTA_CL_ERROR(CL_COMPILER_NOT_AVAILABLE)
    PORTA_CL_ERROR(CL_MEM_OBJECT_ALLOCATION_FAILURE)
    PORTA_CL_ERROR(CL_OUT_OF_RESOURCES)
    PORTA_CL_ERROR(CL_OUT_OF_HOST_MEMORY)
    PORTA_CL_ERROR(CL_PROFILING_INFO_NOT_AVAILABLE)
    PORTA_CL_ERROR(CL_BUILD_PROGRAM_FAILURE)
    PORTA_CL_ERROR(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    PORTA_CL_ERROR(CL_INVALID_VALUE)
    PORTA_CL_ERROR(CL_INVALID_DEVICE)
    PORTA_CL_ERROR(CL_INVALID_CONTEXT)
    PORTA_CL_ERROR(CL_INVALID_COMMAND_QUEUE)
    PORTA_CL_ERROR(CL_INVALID_BINARY)
    PORTA_CL_ERROR(CL_INVALID_BUILD_OPTIONS)
    PORTA_CL_ERROR(CL_INVALID_PROGRAM)
    PORTA_CL_ERROR(CL_INVALID_PROGRAM_EXECUTABLE)
    PORTA_CL_ERROR(CL_INVALID_KERNEL_NAME)
    PORTA_CL_ERROR(CL_INVALID_KERNEL)
    PORTA_CL_ERROR(CL_INVALID_ARG_INDEX)
    PORTA_CL_ERROR(CL_INVALID_ARG_VALUE)
    PORTA_CL_ERROR(CL_INVALID_ARG_SIZE)
    PORTA_CL_ERROR(CL_INVALID_KERNEL_ARGS)
    PORTA_CL_ERROR(CL_INVALID_WORK_DIMENSION)
    PORTA_CL_ERROR(CL_INVALID_WORK_GROUP_SIZE)
    PORTA_CL_ERROR(CL_INVALID_WORK_ITEM_SIZE)
    PORTA_CL_ERROR(CL_INVALID_GLOBAL_OFFSET)
    PORTA_CL_ERROR(CL_INVALID_EVENT_WAIT_LIST)
    PORTA_CL_ERROR(CL_INVALID_EVENT)
    PORTA_CL_ERROR(CL_INVALID_OPERATION)
    PORTA_CL_ERROR(CL_INVALID_BUFFER_SIZE)
    PORTA_CL_ERROR(CL_INVALID_GLOBAL_WORK_SIZE)
    PORTA_CL_ERROR(CL_INVALID_PROPERTY)
    PORTA_CL_ERROR(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    PORTA_CL_ERROR(CL_PLATFORM_NOT_FOUND_KHR)
#undef PORTA_CL_ERROR
    default:
      name = "OpenCL error";
  }
  return std::string(name) + " (" + std::to_string(error) + ")";
}

void Driver::check(cl_int error, const std::string& what) {
  if (error == CL_SUCCESS) return;
  const bool memory = error == CL_OUT_OF_RESOURCES || error == CL_OUT_OF_HOST_MEMORY ||
                      error == CL_MEM_OBJECT_ALLOCATION_FAILURE;
  plugin::throw_error(memory ? PORTA_ERROR_OUT_OF_MEMORY : PORTA_ERROR_BACKEND,
                      "opencl: " + what + ": " + describe(error));
}

}  // namespace porta::opencl
