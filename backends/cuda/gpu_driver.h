// The vendor driver, opened at run time: a table of its functions, and the mapping of its error
// codes to Porta statuses.
#pragma once

#include <porta/porta.h>

#include <memory>
#include <string>
#include <type_traits>

#include "gpu_vendor.h"

namespace porta::gpu {

class Driver {
 public:
  // Opens the driver library and resolves every function. Throws Failure: UNAVAILABLE with the
  // dlerror text when no library opens, INCOMPATIBLE_VERSION naming the first missing symbol.
  static std::unique_ptr<Driver> open();
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

  const std::string& library_name() const { return library_name_; }

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

 private:
  Driver() = default;
  std::string library_name_;
};

}  // namespace porta::gpu
