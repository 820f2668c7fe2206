// porta-conformance: the runtime API on the backend that PORTA_BACKEND selects.
//
// CTest runs the suite once per backend (PORTA_BACKEND=cpu, cuda, hip, level_zero). A backend
// that cannot be used here is reported as skipped (exit code 77, CTest's SKIP_RETURN_CODE) with
// the loader's reason, never silently passed. Listing tests (test discovery at build time) never
// touches the runtime.
#define CATCH_CONFIG_RUNNER
#include <porta/porta.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common.h"

namespace {

constexpr int kSkipped = 77;
#ifdef PORTA_TEST_CPU_BACKEND_BUILT
constexpr bool kCpuBackendBuilt = true;
#else
constexpr bool kCpuBackendBuilt = false;
#endif

// An OpenCL platform was found where this was configured, and the SPIR-V kernels built: the
// OpenCL backend must work (see tests/CMakeLists.txt).
#ifdef PORTA_TEST_OPENCL_REQUIRED
constexpr bool kOpenclRequired = true;
#else
constexpr bool kOpenclRequired = false;
#endif

// PoCL's kernel cache in the build directory, unless the environment names one.
void use_build_pocl_cache() {
#ifdef PORTA_TEST_POCL_CACHE_DIR
  setenv("POCL_CACHE_DIR", PORTA_TEST_POCL_CACHE_DIR, 0);
#endif
}

bool only_listing(const Catch::ConfigData& config) {
  return config.listTests || config.listTestNamesOnly || config.listTags || config.listReporters ||
         config.showHelp;
}

std::string requested_backend() {
  const char* name = std::getenv("PORTA_BACKEND");
  return name && *name ? name : "auto";
}

// Whether any test that this run selects launches kernels.
bool selects_kernel_tests(Catch::Session& session) {
  const Catch::Config& config = session.config();
  for (const Catch::TestCase& test :
       Catch::filterTests(Catch::getAllTestCasesSorted(config), config.testSpec(), config)) {
    for (const std::string& tag : test.lcaseTags) {
      if (tag == "kernels") return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Catch::Session session;
  if (int error = session.applyCommandLine(argc, argv); error != 0) return error;
  if (only_listing(session.configData())) return session.run();

  const std::string requested = requested_backend();
  use_build_pocl_cache();
  const porta_status_t status = porta_init(nullptr);
  if (status != PORTA_SUCCESS) {
    // A machine without the driver or device is a skip. A CPU is always there, so the CPU backend
    // failing where it was built, or a bad setting, is a failure.
    const bool absent = (status == PORTA_ERROR_UNAVAILABLE || status == PORTA_ERROR_NOT_FOUND) &&
                        (requested != "cpu" || !kCpuBackendBuilt) &&
                        (requested != "opencl" || !kOpenclRequired);
    std::printf("%s: backend %s unavailable: %s\n", absent ? "SKIPPED" : "FAILED",
                requested.c_str(), porta_last_error_message());
    return absent ? kSkipped : 1;
  }

  const char* selected = nullptr;
  porta_backend_selected(&selected);
  if (porta_test::kernels_path().empty() && selects_kernel_tests(session)) {
    std::printf(
        "SKIPPED: no test kernel code object for backend %s (build one from tests/kernels and "
        "name it in PORTA_TEST_KERNELS, or run with the test spec ~[kernels])\n",
        selected);
    porta_shutdown();
    return kSkipped;
  }

  const int failures = session.run();
  porta_shutdown();
  return failures;
}
