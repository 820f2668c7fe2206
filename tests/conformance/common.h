// Helpers shared by the conformance suites: status assertions, RAII owners of Porta objects,
// the test kernel module, and a calibrated slow kernel.
//
// Every bad call is made through PT_CHECK_FAILS, which runs it on a fresh thread: the last error
// message is thread-local and starts as "", so "the call left a non-empty message" is a real
// check and not a leftover from an earlier failure.
#pragma once

#include <porta/porta.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace porta_test {

// A status that prints as its name in Catch's failure output.
struct Status {
  porta_status_t value;
  bool operator==(const Status& other) const { return value == other.value; }
  bool operator!=(const Status& other) const { return value != other.value; }
};

struct CallResult {
  porta_status_t status;
  std::string message;  // porta_last_error_message() on the calling thread right after the call
};

// Runs call() on a new thread, whose last error message starts empty, and returns its status and
// the message it left.
template <typename Call>
CallResult call_on_fresh_thread(Call&& call) {
  CallResult result{PORTA_SUCCESS, {}};
  std::thread thread([&] {
    result.status = call();
    const char* message = porta_last_error_message();
    result.message = message ? message : "(NULL message)";
  });
  thread.join();
  return result;
}

}  // namespace porta_test

namespace Catch {
template <>
struct StringMaker<porta_test::Status> {
  static std::string convert(const porta_test::Status& status) {
    return porta_status_name(status.value);
  }
};
}  // namespace Catch

// Asserts that expr returns PORTA_SUCCESS; on failure shows the last error message.
#define PT_REQUIRE_OK(expr)                                                           \
  do {                                                                                \
    const porta_status_t pt_status_ = (expr);                                         \
    INFO(#expr << " -> " << porta_last_error_message());                              \
    REQUIRE(::porta_test::Status{pt_status_} == ::porta_test::Status{PORTA_SUCCESS}); \
  } while (0)

#define PT_CHECK_OK(expr)                                                           \
  do {                                                                              \
    const porta_status_t pt_status_ = (expr);                                       \
    INFO(#expr << " -> " << porta_last_error_message());                            \
    CHECK(::porta_test::Status{pt_status_} == ::porta_test::Status{PORTA_SUCCESS}); \
  } while (0)

// Asserts a status that is not an error (PORTA_SUCCESS or PORTA_NOT_READY), in the calling thread.
#define PT_CHECK_STATUS(expected, expr)                                        \
  do {                                                                         \
    const porta_status_t pt_status_ = (expr);                                  \
    INFO(#expr << " -> " << porta_last_error_message());                       \
    CHECK(::porta_test::Status{pt_status_} == ::porta_test::Status{expected}); \
  } while (0)

// Asserts that expr fails with exactly the expected error and leaves a non-empty last error
// message. expr runs on a fresh thread (see above); it may use the enclosing locals.
#define PT_CHECK_FAILS(expected, expr)                                                           \
  do {                                                                                           \
    const ::porta_test::CallResult pt_result_ =                                                  \
        ::porta_test::call_on_fresh_thread([&]() -> porta_status_t { return (expr); });          \
    INFO(#expr << " -> " << porta_status_name(pt_result_.status) << ": \"" << pt_result_.message \
               << "\"");                                                                         \
    CHECK(::porta_test::Status{pt_result_.status} == ::porta_test::Status{expected});            \
    CHECK_FALSE(pt_result_.message.empty());                                                     \
  } while (0)

namespace porta_test {

// ---- the runtime under test --------------------------------------------------------------------

// The selected backend's name ("cpu", "cuda", ...).
std::string backend_name();
bool is_cpu_backend();
// Every device of the selected backend; the suites run each check on each of them.
std::vector<porta_device_t> devices();
int32_t device_count();
porta_device_properties_t properties(porta_device_t device);
// The devices whose freed memory keeps its addresses from the host
// (PORTA_CAPABILITY_RESERVED_ADDRESSES), where a use after free can be named as such. The others
// are reported (WARN) as not covered by the caller's check.
std::vector<porta_device_t> devices_with_reserved_addresses(const char* check);

// ---- owners -------------------------------------------------------------------------------------

// Device (or pinned host) memory, freed on destruction.
class Buffer {
 public:
  enum Kind { kDevice, kPinned };
  Buffer(porta_device_t device, size_t size, Kind kind = kDevice);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  char* bytes() const { return static_cast<char*>(ptr_); }
  size_t size() const { return size_; }
  // Gives up ownership (the test frees it itself).
  void* release() { return std::exchange(ptr_, nullptr); }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
  Kind kind_;
};

class Stream {
 public:
  explicit Stream(porta_device_t device);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  porta_stream_t get() const { return stream_; }
  porta_stream_t release() { return std::exchange(stream_, nullptr); }

 private:
  porta_stream_t stream_ = nullptr;
};

class Event {
 public:
  explicit Event(porta_device_t device);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  porta_event_t get() const { return event_; }
  porta_event_t release() { return std::exchange(event_, nullptr); }

 private:
  porta_event_t event_ = nullptr;
};

// The test kernel module loaded on a device.
class Module {
 public:
  explicit Module(porta_device_t device);
  ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  porta_module_t get() const { return module_; }
  porta_module_t release() { return std::exchange(module_, nullptr); }
  porta_kernel_t kernel(const char* name) const;

 private:
  porta_module_t module_ = nullptr;
};

// ---- the test kernels ---------------------------------------------------------------------------

// The code object of tests/kernels for the selected backend: $PORTA_TEST_KERNELS, else the one
// built beside the suite (cpu: the shared object; cuda: the fatbin; hip: the code object of the
// default device's architecture). Empty when there is none for this backend.
std::string kernels_path();
// Tests that launch kernels carry this tag; main() skips them (exit 77) when kernels_path() is
// empty, with the reason.
#define PT_KERNELS_TAG "[kernels]"

std::vector<char> read_file(const std::string& path);

porta_launch_config_t launch_config(std::array<uint32_t, 3> grid, std::array<uint32_t, 3> group,
                                    uint32_t shared_memory_bytes = 0);

// Queues y = a * x + y over n floats with the given group size.
porta_status_t launch_saxpy(porta_kernel_t saxpy, int n, float a, const float* x, float* y,
                            uint32_t group_size, porta_stream_t stream);

// The number of iterations that makes one spin work-item take about kSpinTargetMs on the device,
// measured once per device and process (so sanitizer builds and slow machines get proportionally
// more time, and the suites stay quick). Long enough that a host call returning "at once" cannot
// be confused with one that waited; short enough to keep each test well under a second.
constexpr double kSpinTargetMs = 150.0;
int64_t spin_iterations(porta_device_t device);
// Queues one spin work-item of spin_iterations(device) on stream; out needs 4 bytes.
porta_status_t launch_spin(porta_device_t device, porta_kernel_t spin, float* out,
                           porta_stream_t stream, double scale = 1.0);

// ---- host-side helpers --------------------------------------------------------------------------

double now_ms();

// A directory under $TMPDIR removed (with its files) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const void* data, size_t size) const;

 private:
  std::string path_;
};

// A byte pattern that differs for every offset and seed, to catch copies of the wrong bytes.
inline uint8_t pattern_byte(size_t offset, uint32_t seed) {
  return static_cast<uint8_t>((offset * 131u + seed * 7u + (offset >> 8)) & 0xFF);
}
std::vector<uint8_t> pattern(size_t size, uint32_t seed);

// Copies size bytes from device memory to a new host vector (blocking).
std::vector<uint8_t> download(const void* device_ptr, size_t size);

}  // namespace porta_test
