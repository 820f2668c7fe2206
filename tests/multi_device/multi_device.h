// Shared by the multi-device, pool and leak tests: a runtime initialised with several CPU
// devices for the length of a test, and a capture of what Porta writes to the log.
#pragma once

#include <porta/porta.h>

#include <string>

#include "../conformance/common.h"

namespace porta_test {

// porta_init with the CPU backend split into devices devices (and the given log level) for the
// lifetime of the object; porta_shutdown after.
class CpuDevices {
 public:
  explicit CpuDevices(const char* devices = "2", const char* log_level = "warn");
  ~CpuDevices();
  CpuDevices(const CpuDevices&) = delete;
  CpuDevices& operator=(const CpuDevices&) = delete;
};

// What the process writes to stderr (where Porta's log goes) while the object lives.
class StderrCapture {
 public:
  StderrCapture();
  ~StderrCapture();
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  // Stops capturing (once) and returns the text.
  std::string finish();

 private:
  int saved_ = -1;
  std::string path_;
  std::string text_;
};

}  // namespace porta_test
