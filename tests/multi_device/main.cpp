// porta-multi-device-tests: several devices of the CPU backend (PORTA_CPU_DEVICES), copies and
// event waits between them, the stream-ordered pool, and the report of live allocations. Each
// test initialises Porta itself with the settings it checks, so main does not.
#define CATCH_CONFIG_RUNNER
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "multi_device.h"

namespace porta_test {

CpuDevices::CpuDevices(const char* devices, const char* log_level) {
  porta_init_options_t options{};
  options.struct_size = sizeof(options);
  options.backend = "cpu";
  options.cpu_devices = devices;
  options.log_level = log_level;
  PT_REQUIRE_OK(porta_init(&options));
}

CpuDevices::~CpuDevices() { porta_shutdown(); }

Hold::Hold(porta_stream_t stream) {
  PT_REQUIRE_OK(porta_stream_launch_host_func(stream, &Hold::wait, &released_));
}

void Hold::wait(void* released) {
  while (!*static_cast<std::atomic<bool>*>(released)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

StderrCapture::StderrCapture() {
  const char* tmp = std::getenv("TMPDIR");
  path_ = std::string(tmp && *tmp ? tmp : "/tmp") + "/porta-stderr-XXXXXX";
  int fd = mkstemp(path_.data());
  REQUIRE(fd >= 0);
  std::fflush(stderr);
  saved_ = dup(2);
  dup2(fd, 2);
  close(fd);
}

std::string StderrCapture::finish() {
  if (saved_ < 0) return text_;
  std::fflush(stderr);
  dup2(saved_, 2);
  close(saved_);
  saved_ = -1;
  if (FILE* file = std::fopen(path_.c_str(), "r")) {
    char buffer[4096];
    size_t got;
    while ((got = std::fread(buffer, 1, sizeof(buffer), file)) > 0) text_.append(buffer, got);
    std::fclose(file);
  }
  std::remove(path_.c_str());
  std::fputs(text_.c_str(), stderr);  // still visible in the test's output
  return text_;
}

StderrCapture::~StderrCapture() { finish(); }

}  // namespace porta_test

int main(int argc, char** argv) {
  // These tests choose their own backend and device count; the environment must not.
  unsetenv("PORTA_CPU_DEVICES");
  unsetenv("PORTA_DEVICE");
  return Catch::Session().run(argc, argv);
}
