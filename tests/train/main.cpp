// porta-train-tests: the IDX reader, the checkpoint format, the model and its training loop (in
// this process, on the backend PORTA_BACKEND selects), and the porta-train program itself (run as
// a child process).
//
// A backend, or an op implementation, that cannot be used here makes the run exit 77 (CTest's
// skip code) with the reason, never pass silently; where the CPU backend and the portable ops
// were built, their absence is a failure. A test that needs something else missing here (the
// vendor op plugin) calls train_test::skip(reason) and the run exits 77 likewise.
#define CATCH_CONFIG_RUNNER
#include <porta/porta.h>
#include <porta/porta_ops.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace train_test {
extern std::string g_skip_reason;
}

namespace {

constexpr int kSkipped = 77;
#ifdef PORTA_TEST_CPU_OPS_BUILT
constexpr bool kCpuOpsBuilt = true;
#else
constexpr bool kCpuOpsBuilt = false;
#endif

bool only_listing(const Catch::ConfigData& c) {
  return c.listTests || c.listTestNamesOnly || c.listTags || c.listReporters || c.showHelp;
}

// Whether an op implementation serves the default device: a one-element ReLU.
porta_status_t probe_ops() {
  porta_device_t device = 0;
  porta_status_t status = porta_device_default(&device);
  void* buffer = nullptr;
  if (status == PORTA_SUCCESS) status = porta_memory_alloc(device, 256, &buffer);
  if (status != PORTA_SUCCESS) return status;
  porta_stream_t stream = nullptr;
  status = porta_stream_default(device, &stream);
  float* x = static_cast<float*>(buffer);
  if (status == PORTA_SUCCESS) status = porta_relu_forward(stream, 1, x, x + 1);
  if (status == PORTA_SUCCESS) status = porta_stream_synchronize(stream);
  const std::string reason = status == PORTA_SUCCESS ? "" : porta_last_error_message();
  porta_memory_free(buffer);
  if (status != PORTA_SUCCESS) std::printf("op probe: %s\n", reason.c_str());
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Catch::Session session;
  if (int error = session.applyCommandLine(argc, argv); error != 0) return error;
  if (only_listing(session.configData())) return session.run();

  const char* env = std::getenv("PORTA_BACKEND");
  const std::string requested = env && *env ? env : "auto";
  const char* ops_env = std::getenv("PORTA_OPS");
  const std::string ops = ops_env && *ops_env ? ops_env : "portable";
  const bool must_work = requested == "cpu" && ops == "portable" && kCpuOpsBuilt;
  porta_status_t status = porta_init(nullptr);
  if (status == PORTA_SUCCESS) status = probe_ops();
  if (status != PORTA_SUCCESS) {
    const bool absent = status == PORTA_ERROR_UNAVAILABLE || status == PORTA_ERROR_NOT_FOUND;
    std::printf("%s: backend %s with %s ops unusable: %s: %s\n",
                absent && !must_work ? "SKIPPED" : "FAILED", requested.c_str(), ops.c_str(),
                porta_status_name(status), porta_last_error_message());
    porta_shutdown();
    return absent && !must_work ? kSkipped : 1;
  }

  const int failures = session.run();
  porta_shutdown();
  if (failures == 0 && !train_test::g_skip_reason.empty()) {
    std::printf("SKIPPED: %s\n", train_test::g_skip_reason.c_str());
    return kSkipped;
  }
  return failures;
}
