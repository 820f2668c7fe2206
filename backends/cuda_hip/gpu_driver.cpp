#include "gpu_driver.h"

#include <dlfcn.h>

#include <cstdlib>

#include "plugin_kit.h"

namespace porta::gpu {

using plugin::throw_error;

std::vector<std::string> Driver::candidates() {
  std::vector<std::string> directories;
  // A directory the user named for the driver's installation comes first: it says which one.
  if (*kDriverDirectoryVariable) {
    if (const char* root = secure_getenv(kDriverDirectoryVariable); root && *root) {
      directories.push_back(std::string(root) + "/lib/");
    }
  }
  directories.push_back("");  // the loader's search path
  if (*kDriverDefaultDirectory)
    directories.push_back(std::string(kDriverDefaultDirectory) + "/lib/");
  std::vector<std::string> names;
  for (const std::string& directory : directories) {
    for (const char* name : kDriverLibraries) names.push_back(directory + name);
  }
  return names;
}

std::unique_ptr<Driver> Driver::open() {
  std::unique_ptr<Driver> driver(new Driver());
  void* library = nullptr;
  std::string tried;
  for (const std::string& name : candidates()) {
    // RTLD_LOCAL: the driver's symbols stay out of the global namespace, where a vendor library
    // the application loads later might bind to them instead of its own.
    library = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library) {
      driver->library_name_ = name;
      break;
    }
    const char* why = dlerror();
    if (!tried.empty()) tried += "; ";
    tried += why ? why : name + ": dlopen failed";
  }
  if (!library) {
    throw_error(PORTA_ERROR_UNAVAILABLE,
                std::string(kBackendName) + ": no " + kVendorName + " driver: " + tried);
  }
  // dlerror is cleared before each lookup: a NULL from dlsym is then told apart by it.
#define PORTA_GPU_RESOLVE(field, symbol)                                                \
  dlerror();                                                                            \
  driver->field = reinterpret_cast<decltype(driver->field)>(dlsym(library, #symbol));   \
  if (!driver->field) {                                                                 \
    throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION,                                       \
                std::string(kBackendName) + ": " + driver->library_name_ +              \
                    " lacks " #symbol " (the driver is older than this plugin needs)"); \
  }
  PORTA_GPU_FUNCTIONS(PORTA_GPU_RESOLVE)
#define PORTA_GPU_RESOLVE_TYPED(field, symbol, type) PORTA_GPU_RESOLVE(field, symbol)
  PORTA_GPU_TYPED_FUNCTIONS(PORTA_GPU_RESOLVE_TYPED)
#undef PORTA_GPU_RESOLVE_TYPED
#undef PORTA_GPU_RESOLVE
#define PORTA_GPU_RESOLVE_OPTIONAL(field, symbol) \
  driver->field = reinterpret_cast<decltype(driver->field)>(dlsym(library, #symbol));
  PORTA_GPU_OPTIONAL_FUNCTIONS(PORTA_GPU_RESOLVE_OPTIONAL)
#define PORTA_GPU_RESOLVE_OPTIONAL_TYPED(field, symbol, type) \
  PORTA_GPU_RESOLVE_OPTIONAL(field, symbol)
  PORTA_GPU_OPTIONAL_TYPED_FUNCTIONS(PORTA_GPU_RESOLVE_OPTIONAL_TYPED)
#undef PORTA_GPU_RESOLVE_OPTIONAL_TYPED
#undef PORTA_GPU_RESOLVE_OPTIONAL
#define PORTA_GPU_RESOLVE_NAMED(field, name, type) \
  driver->field = reinterpret_cast<type>(dlsym(library, name));
  PORTA_GPU_NAMED_OPTIONAL_FUNCTIONS(PORTA_GPU_RESOLVE_NAMED)
#undef PORTA_GPU_RESOLVE_NAMED
  return driver;
}

std::string Driver::identity() const {
  int version = 0;
  std::string out = library_name_ + ", " + kVendorName + " driver ";
  out += driver_get_version(&version) == kSuccess ? std::to_string(version) : "version unknown";
#if defined(PORTA_GPU_HIP)
  int runtime = 0;
  if (runtime_get_version && runtime_get_version(&runtime) == kSuccess) {
    out += ", HIP runtime " + std::to_string(runtime);
  }
#endif
  return out;
}

namespace {

#if !defined(PORTA_GPU_HIP)
// The names of the codes status_of distinguishes, for drivers that cannot name them: the
// toolkit's stub libcuda answers every call, cuGetErrorName included, with
// CUDA_ERROR_STUB_LIBRARY.
const char* fallback_name(CUresult result) {
  switch (result) {
#define PORTA_CUDA_NAME(code) \
  case code:                  \
    return #code;
    PORTA_CUDA_NAME(CUDA_ERROR_INVALID_VALUE)
    PORTA_CUDA_NAME(CUDA_ERROR_OUT_OF_MEMORY)
    PORTA_CUDA_NAME(CUDA_ERROR_NOT_INITIALIZED)
    PORTA_CUDA_NAME(CUDA_ERROR_DEINITIALIZED)
    PORTA_CUDA_NAME(CUDA_ERROR_STUB_LIBRARY)
    PORTA_CUDA_NAME(CUDA_ERROR_DEVICE_UNAVAILABLE)
    PORTA_CUDA_NAME(CUDA_ERROR_NO_DEVICE)
    PORTA_CUDA_NAME(CUDA_ERROR_INVALID_IMAGE)
    PORTA_CUDA_NAME(CUDA_ERROR_NO_BINARY_FOR_GPU)
    PORTA_CUDA_NAME(CUDA_ERROR_INVALID_PTX)
    PORTA_CUDA_NAME(CUDA_ERROR_UNSUPPORTED_PTX_VERSION)
    PORTA_CUDA_NAME(CUDA_ERROR_JIT_COMPILER_NOT_FOUND)
    PORTA_CUDA_NAME(CUDA_ERROR_OPERATING_SYSTEM)
    PORTA_CUDA_NAME(CUDA_ERROR_NOT_FOUND)
    PORTA_CUDA_NAME(CUDA_ERROR_NOT_READY)
    PORTA_CUDA_NAME(CUDA_ERROR_ILLEGAL_ADDRESS)
    PORTA_CUDA_NAME(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)
    PORTA_CUDA_NAME(CUDA_ERROR_LAUNCH_TIMEOUT)
    PORTA_CUDA_NAME(CUDA_ERROR_HARDWARE_STACK_ERROR)
    PORTA_CUDA_NAME(CUDA_ERROR_ILLEGAL_INSTRUCTION)
    PORTA_CUDA_NAME(CUDA_ERROR_MISALIGNED_ADDRESS)
    PORTA_CUDA_NAME(CUDA_ERROR_INVALID_ADDRESS_SPACE)
    PORTA_CUDA_NAME(CUDA_ERROR_INVALID_PC)
    PORTA_CUDA_NAME(CUDA_ERROR_LAUNCH_FAILED)
    PORTA_CUDA_NAME(CUDA_ERROR_ECC_UNCORRECTABLE)
    PORTA_CUDA_NAME(CUDA_ERROR_NVLINK_UNCORRECTABLE)
    PORTA_CUDA_NAME(CUDA_ERROR_CONTAINED)
    PORTA_CUDA_NAME(CUDA_ERROR_TENSOR_MEMORY_LEAK)
    PORTA_CUDA_NAME(CUDA_ERROR_EXTERNAL_DEVICE)
    PORTA_CUDA_NAME(CUDA_ERROR_ASSERT)
    PORTA_CUDA_NAME(CUDA_ERROR_CONTEXT_IS_DESTROYED)
    PORTA_CUDA_NAME(CUDA_ERROR_NOT_SUPPORTED)
    PORTA_CUDA_NAME(CUDA_ERROR_SYSTEM_NOT_READY)
    PORTA_CUDA_NAME(CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)
    PORTA_CUDA_NAME(CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE)
#undef PORTA_CUDA_NAME
    default:
      return nullptr;
  }
}
#endif

}  // namespace

std::string Driver::describe(result_t result) const {
  const char* name = nullptr;
  const char* text = nullptr;
#if defined(PORTA_GPU_HIP)
  name = get_error_name(result);
  text = get_error_string(result);
#else
  // Both fail with CUDA_ERROR_INVALID_VALUE for a code this driver does not know.
  if (get_error_name(result, &name) != CUDA_SUCCESS) name = nullptr;
  if (get_error_string(result, &text) != CUDA_SUCCESS) text = nullptr;
  if (!name) name = fallback_name(result);
#endif
  std::string out = name ? name : "unknown error";
  out += " (" + std::to_string(static_cast<int>(result)) + ")";
  if (text && *text && (!name || std::string(text) != name)) out += std::string(": ") + text;
  return out;
}

void Driver::check(result_t result, const std::string& what) const {
  if (result == kSuccess) return;
  throw_error(status_of(result), std::string(kBackendName) + ": " + what + ": " + describe(result));
}

porta_status_t Driver::status_of(result_t result) {
  switch (result) {
#if defined(PORTA_GPU_HIP)
    case hipSuccess:
      return PORTA_SUCCESS;
    case hipErrorNotReady:
      return PORTA_NOT_READY;
    case hipErrorOutOfMemory:
      return PORTA_ERROR_OUT_OF_MEMORY;
    case hipErrorNoDevice:
    case hipErrorInsufficientDriver:
    case hipErrorNotInitialized:
    case hipErrorDeinitialized:
    case hipErrorOperatingSystem:
      return PORTA_ERROR_UNAVAILABLE;
    case hipErrorNoBinaryForGpu:
      return PORTA_ERROR_INCOMPATIBLE_VERSION;
    case hipErrorInvalidImage:
    case hipErrorInvalidKernelFile:
    case hipErrorInvalidValue:
    case hipErrorInvalidConfiguration:
    case hipErrorLaunchOutOfResources:
    case hipErrorInvalidDevicePointer:
      return PORTA_ERROR_INVALID_ARGUMENT;
    case hipErrorNotFound:
    case hipErrorSharedObjectSymbolNotFound:
      return PORTA_ERROR_NOT_FOUND;
    case hipErrorNotSupported:
      return PORTA_ERROR_UNSUPPORTED;
    // The context is unusable after these, as after CUDA's sticky errors.
    case hipErrorIllegalAddress:
    case hipErrorLaunchFailure:
    case hipErrorLaunchTimeOut:
    case hipErrorECCNotCorrectable:
    case hipErrorAssert:
    case hipErrorContextIsDestroyed:
      return PORTA_ERROR_DEVICE_LOST;
#else
    case CUDA_SUCCESS:
      return PORTA_SUCCESS;
    case CUDA_ERROR_NOT_READY:
      return PORTA_NOT_READY;
    case CUDA_ERROR_OUT_OF_MEMORY:
      return PORTA_ERROR_OUT_OF_MEMORY;
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_SYSTEM_NOT_READY:
    case CUDA_ERROR_NOT_INITIALIZED:
    case CUDA_ERROR_DEINITIALIZED:
    case CUDA_ERROR_STUB_LIBRARY:
    case CUDA_ERROR_DEVICE_UNAVAILABLE:
    case CUDA_ERROR_SYSTEM_DRIVER_MISMATCH:
    case CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE:
    case CUDA_ERROR_OPERATING_SYSTEM:
      return PORTA_ERROR_UNAVAILABLE;
    case CUDA_ERROR_NO_BINARY_FOR_GPU:
    case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
      return PORTA_ERROR_INCOMPATIBLE_VERSION;
    case CUDA_ERROR_INVALID_IMAGE:
    case CUDA_ERROR_INVALID_PTX:
    case CUDA_ERROR_INVALID_VALUE:
    case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES:
      return PORTA_ERROR_INVALID_ARGUMENT;
    case CUDA_ERROR_NOT_FOUND:
      return PORTA_ERROR_NOT_FOUND;
    case CUDA_ERROR_NOT_SUPPORTED:
    case CUDA_ERROR_JIT_COMPILER_NOT_FOUND:
      return PORTA_ERROR_UNSUPPORTED;
    // Sticky errors: the context cannot be used again in this process, and every later call on
    // it returns the same error (cuda.h: "the process must be terminated and relaunched").
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_LAUNCH_TIMEOUT:
    case CUDA_ERROR_ECC_UNCORRECTABLE:
    case CUDA_ERROR_NVLINK_UNCORRECTABLE:
    case CUDA_ERROR_CONTAINED:
    case CUDA_ERROR_TENSOR_MEMORY_LEAK:
    case CUDA_ERROR_EXTERNAL_DEVICE:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_CONTEXT_IS_DESTROYED:
      return PORTA_ERROR_DEVICE_LOST;
#endif
    default:
      return PORTA_ERROR_BACKEND;
  }
}

CurrentContext::CurrentContext(const Driver& driver, context_t context) : driver_(driver) {
#if defined(PORTA_GPU_HIP)
  if (driver_.get_device(&previous_) != kSuccess) previous_ = -1;
  if (previous_ != context) {
    driver_.check(driver_.set_device(context), "hipSetDevice(" + std::to_string(context) + ")");
    restore_ = previous_ >= 0;
  }
#else
  if (driver_.ctx_get_current(&previous_) != kSuccess) previous_ = nullptr;
  if (previous_ != context) {
    driver_.check(driver_.ctx_set_current(context), "cuCtxSetCurrent");
    restore_ = true;
  }
#endif
}

CurrentContext::~CurrentContext() {
  if (!restore_) return;
    // Nothing to report from a destructor: a failure here leaves the driver's own state.
#if defined(PORTA_GPU_HIP)
  (void)driver_.set_device(previous_);
#else
  (void)driver_.ctx_set_current(previous_);
#endif
}

}  // namespace porta::gpu
