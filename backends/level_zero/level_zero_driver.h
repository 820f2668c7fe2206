// The Level Zero loader, opened at run time: a table of the functions the backend calls and the
// names of its result codes.
#pragma once

#include <level_zero/ze_api.h>

#include <memory>
#include <string>

namespace porta::level_zero {

#define PORTA_ZE_FUNCTIONS(X)                \
  X(zeInit)                                  \
  X(zeDriverGet)                             \
  X(zeDeviceGet)                             \
  X(zeDeviceGetProperties)                   \
  X(zeDeviceGetComputeProperties)            \
  X(zeDeviceGetModuleProperties)             \
  X(zeDeviceGetMemoryProperties)             \
  X(zeContextCreate)                         \
  X(zeContextDestroy)                        \
  X(zeCommandListCreateImmediate)            \
  X(zeCommandListDestroy)                    \
  X(zeCommandListAppendMemoryCopy)           \
  X(zeCommandListAppendMemoryFill)           \
  X(zeCommandListAppendBarrier)              \
  X(zeCommandListAppendWaitOnEvents)         \
  X(zeCommandListAppendWriteGlobalTimestamp) \
  X(zeCommandListAppendLaunchKernel)         \
  X(zeMemAllocDevice)                        \
  X(zeMemAllocHost)                          \
  X(zeMemFree)                               \
  X(zeEventPoolCreate)                       \
  X(zeEventPoolDestroy)                      \
  X(zeEventCreate)                           \
  X(zeEventDestroy)                          \
  X(zeEventHostSynchronize)                  \
  X(zeEventHostSignal)                       \
  X(zeEventHostReset)                        \
  X(zeEventQueryStatus)                      \
  X(zeModuleCreate)                          \
  X(zeModuleDestroy)                         \
  X(zeModuleBuildLogGetString)               \
  X(zeModuleBuildLogDestroy)                 \
  X(zeKernelCreate)                          \
  X(zeKernelDestroy)                         \
  X(zeKernelSetGroupSize)                    \
  X(zeKernelSetArgumentValue)                \
  X(zeKernelSetIndirectAccess)

class Driver {
 public:
  // Opens libze_loader.so.1 and resolves every function. Throws Failure: UNAVAILABLE with the
  // dlerror text when there is no loader, INCOMPATIBLE_VERSION naming a missing function.
  static std::unique_ptr<Driver> open();
  ~Driver() = default;  // the loader stays loaded, as the GPU drivers do

  // "ZE_RESULT_ERROR_UNINITIALIZED (0x78000001)".
  static std::string describe(ze_result_t result);
  // Throws the Failure for a failed call: "level_zero: <what>: <describe(result)>".
  static void check(ze_result_t result, const std::string& what);

#define PORTA_ZE_FIELD(name) decltype(&::name) name = nullptr;
  PORTA_ZE_FUNCTIONS(PORTA_ZE_FIELD)
#undef PORTA_ZE_FIELD

 private:
  Driver() = default;
};

}  // namespace porta::level_zero
