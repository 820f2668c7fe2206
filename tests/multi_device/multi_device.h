// Shared by the multi-device, pool and leak tests: a runtime initialised with several CPU
// devices for the length of a test, and a capture of what Porta writes to the log.
#pragma once

#include <porta/porta.h>

#include <atomic>
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

// Holds a stream at a host function until released (at the latest when it goes out of scope,
// so that a failed check cannot leave the stream's destructor waiting for it).
class Hold {
 public:
  explicit Hold(porta_stream_t stream);
  ~Hold() { release(); }
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;
  void release() { released_ = true; }

 private:
  static void wait(void* released);
  std::atomic<bool> released_{false};
};

}  // namespace porta_test
