// The vendor driver, opened at run time: a table of its functions, the mapping of its error codes
// to Porta statuses, and the one current-context rule. Compiled into every plugin that calls the
// driver (the CUDA and HIP backends, the CUDA vendor op plugin), so each opens it the same way.
#pragma once

#include <porta/porta.h>

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "gpu_vendor.h"

namespace porta::gpu {

class Driver {
 public:
  // Opens the driver library and resolves every function. Throws Failure: UNAVAILABLE with the
  // dlerror text of every candidate when none opens, INCOMPATIBLE_VERSION naming the first
  // missing symbol.
  static std::unique_ptr<Driver> open();
  // The files tried, in order (gpu_vendor.h: kDriverLibraries, in $ROCM_PATH/lib first for HIP).
  static std::vector<std::string> candidates();
  // The library stays loaded: a GPU driver keeps threads and exit handlers that point into it,
  // and unloading it under them is a crash at exit. dlopen counts, so a later open is cheap.
  ~Driver() = default;
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  // "CUDA_ERROR_OUT_OF_MEMORY (2): out of memory", from the driver's own tables.
  std::string describe(result_t result) const;
  // Throws the Failure for a failed call: "<backend>: <what>: <describe(result)>".
  void check(result_t result, const std::string& what) const;
  // The status a driver error maps to.
  static porta_status_t status_of(result_t result);

  // The candidate that opened, as tried ("libcuda.so.1", "/opt/rocm/lib/libamdhip64.so.6").
  const std::string& library_name() const { return library_name_; }
  // "libamdhip64.so.6, HIP runtime 60342000": what was opened and which version it says it is.
  std::string identity() const;

#define PORTA_GPU_FIELD(field, symbol) decltype(&symbol) field = nullptr;
  PORTA_GPU_FUNCTIONS(PORTA_GPU_FIELD)
  PORTA_GPU_OPTIONAL_FUNCTIONS(PORTA_GPU_FIELD)
#undef PORTA_GPU_FIELD
#define PORTA_GPU_TYPED_FIELD(field, symbol, type)                                 \
  static_assert(sizeof(static_cast<type>(&symbol)) > 0, #symbol " has this type"); \
  std::type_identity_t<type> field = nullptr;
  PORTA_GPU_TYPED_FUNCTIONS(PORTA_GPU_TYPED_FIELD)
  PORTA_GPU_OPTIONAL_TYPED_FUNCTIONS(PORTA_GPU_TYPED_FIELD)
#undef PORTA_GPU_TYPED_FIELD
#define PORTA_GPU_NAMED_FIELD(field, name, type) type field = nullptr;
  PORTA_GPU_NAMED_OPTIONAL_FUNCTIONS(PORTA_GPU_NAMED_FIELD)
#undef PORTA_GPU_NAMED_FIELD

 private:
  Driver() = default;
  std::string library_name_;
};

// What CurrentContext makes current: CUDA's device context, HIP's device ordinal.
#if defined(PORTA_GPU_HIP)
using context_t = int;
#else
using context_t = CUcontext;
#endif

// The one current-context rule of every plugin that calls the driver. The backend retains each
// device's primary context at the device's first use and releases it at shutdown; nothing else
// retains or releases it (the vendor op plugin takes it from porta_device_native_handle). Around
// each driver or vendor-library call, a CurrentContext makes that context (HIP: that device)
// current on the calling thread for its lifetime, then the caller's own again, so that a host
// application that uses CUDA or HIP itself is not disturbed. The driver keeps the current context
// per thread and asking for it is a thread-local read: the switch happens only when it differs.
// Throws Failure when it cannot switch.
class CurrentContext {
 public:
  CurrentContext(const Driver& driver, context_t context);
  ~CurrentContext();
  CurrentContext(const CurrentContext&) = delete;
  CurrentContext& operator=(const CurrentContext&) = delete;

 private:
  const Driver& driver_;
#if defined(PORTA_GPU_HIP)
  context_t previous_ = -1;
#else
  context_t previous_ = nullptr;
#endif
  bool restore_ = false;
};

}  // namespace porta::gpu
