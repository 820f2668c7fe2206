// porta-op-tests: the operator set (porta_ops.h) on the backend that PORTA_BACKEND selects, with
// the implementation that PORTA_OPS selects (portable by default).
//
// CTest runs the suite once per backend. A backend that cannot be used here, or one for which no
// op implementation is loaded, is reported as skipped (exit code 77, CTest's SKIP_RETURN_CODE)
// with the reason, never silently passed; but the CPU backend and the portable op plugin, where
// both were built, must work, and their absence is a failure (so must the CPU vendor op plugin
// under PORTA_OPS=vendor, where it was built). Listing tests (test discovery at
// build time) never touches the runtime.
//
// Besides Catch's options it takes `--env NAME=VALUE` (any number), set before Porta starts: CTest
// variants use it where a second environment variable cannot pass through catch_discover_tests
// (its PROPERTIES split an ENVIRONMENT list), e.g. PORTA_OPS_GEMM_PATH=tiled.
#define CATCH_CONFIG_RUNNER
#include <porta/porta.h>
#include <porta/porta_ops.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

constexpr int kSkipped = 77;
#ifdef PORTA_TEST_CPU_OPS_BUILT
constexpr bool kCpuOpsBuilt = true;  // the CPU backend and the portable op plugin
#else
constexpr bool kCpuOpsBuilt = false;
#endif
#ifdef PORTA_TEST_CPU_VENDOR_OPS_BUILT
constexpr bool kCpuVendorOpsBuilt = true;  // and the CPU vendor op plugin
#else
constexpr bool kCpuVendorOpsBuilt = false;
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

std::string from_env(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value && *value ? value : fallback;
}

// Whether an op implementation serves the default device: a ReLU over one element answers
// UNAVAILABLE when none is loaded, and the message says why.
porta_status_t probe_ops(std::string& reason) {
  porta_device_t device = 0;
  porta_device_default(&device);
  void* buffer = nullptr;
  porta_status_t status = porta_memory_alloc(device, 256, &buffer);
  if (status == PORTA_SUCCESS) {
    porta_stream_t stream = nullptr;
    status = porta_stream_default(device, &stream);
    if (status == PORTA_SUCCESS) {
      float* x = static_cast<float*>(buffer);
      status = porta_relu_forward(stream, 1, x, x + 1);
      if (status == PORTA_SUCCESS) status = porta_stream_synchronize(stream);
    }
    if (status != PORTA_SUCCESS) reason = porta_last_error_message();
    porta_memory_free(buffer);
  } else {
    reason = porta_last_error_message();
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--env" && i + 1 < argc && std::string(argv[i + 1]).find('=') != std::string::npos) {
      const std::string assignment = argv[++i];
      const size_t equals = assignment.find('=');
      setenv(assignment.substr(0, equals).c_str(), assignment.substr(equals + 1).c_str(), 1);
    } else {
      args.push_back(argv[i]);
    }
  }
  Catch::Session session;
  if (int error = session.applyCommandLine(static_cast<int>(args.size()), args.data());
      error != 0) {
    return error;
  }
  if (only_listing(session.configData())) return session.run();

  const std::string requested = from_env("PORTA_BACKEND", "auto");
  const std::string ops = from_env("PORTA_OPS", "portable");
  const bool must_work = (requested == "cpu" && kCpuOpsBuilt &&
                          (ops == "portable" || (ops == "vendor" && kCpuVendorOpsBuilt))) ||
                         (requested == "opencl" && kOpenclRequired && ops == "portable");
  use_build_pocl_cache();
  porta_status_t status = porta_init(nullptr);
  if (status != PORTA_SUCCESS) {
    const bool absent =
        (status == PORTA_ERROR_UNAVAILABLE || status == PORTA_ERROR_NOT_FOUND) && !must_work;
    std::printf("%s: backend %s unavailable: %s\n", absent ? "SKIPPED" : "FAILED",
                requested.c_str(), porta_last_error_message());
    return absent ? kSkipped : 1;
  }

  std::string reason;
  status = probe_ops(reason);
  if (status != PORTA_SUCCESS) {
    const char* selected = "?";
    porta_backend_selected(&selected);
    const bool absent = status == PORTA_ERROR_UNAVAILABLE && !must_work;
    std::printf("%s: no %s op implementation usable on backend %s: %s: %s\n",
                absent ? "SKIPPED" : "FAILED", ops.c_str(), selected, porta_status_name(status),
                reason.c_str());
    porta_shutdown();
    return absent ? kSkipped : 1;
  }

  // A suite pinned to one ISA level's kernel library (tests/CMakeLists.txt) runs the very library
  // the plain CPU suite loads where that level is the host's own: reported, not run twice.
  if (const std::string level = from_env("PORTA_TEST_ISA_LEVEL", ""); !level.empty()) {
    porta_device_t device = 0;
    porta_device_properties_t properties{};
    properties.struct_size = sizeof properties;
    if (porta_device_default(&device) == PORTA_SUCCESS &&
        porta_device_properties(device, &properties) == PORTA_SUCCESS &&
        level == properties.architecture) {
      std::printf("SKIPPED: %s is this host's own level, whose kernel library the cpu.ops suite "
                  "runs already\n",
                  level.c_str());
      porta_shutdown();
      return kSkipped;
    }
  }

  const int failures = session.run();
  porta_shutdown();
  return failures;
}
