// The runtime's state: loaded backends, devices, live objects and allocations. One instance per
// process, guarded so that API calls run concurrently and init/shutdown run alone.
#pragma once

#include <porta/porta.h>
#include <porta/porta_plugin.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "error.h"
#include "handles.h"
#include "loader.h"

namespace porta {

struct Device {
  Backend* backend = nullptr;
  OpsPlugin* ops = nullptr;   // the implementation of porta_ops.h PORTA_OPS chose, if usable
  std::string ops_missing;    // why ops is NULL
  porta_status_t ops_missing_status = PORTA_ERROR_UNAVAILABLE;  // what the ops answer then
  // With PORTA_OPS=vendor, the portable plugin when it serves this device: it runs the ops the
  // vendor plugin leaves out (NULL slots). NULL otherwise.
  OpsPlugin* fallback_ops = nullptr;
  std::string fallback_missing;  // why fallback_ops is NULL under PORTA_OPS=vendor
  int32_t index = 0;        // the backend's own index
  porta_device_t id = 0;    // the global index users see
  porta_device_properties_t properties{};
  porta_stream_t default_stream = nullptr;
};

// The runtime's objects. A handle table holds one reference and every call that looked the
// handle up holds another, so destroying a handle never pulls an object from under a call that
// is still using it: the backend's object is released by the destructor, when the last reference
// goes (see "Objects destroyed while in use" in docs/reliability.md). Failures at that point are
// logged, since no caller is left to report them to.
struct Stream {
  Device* device = nullptr;
  void* native = nullptr;
  bool is_default = false;
  ~Stream();
};

struct Event {
  Device* device = nullptr;
  void* native = nullptr;
  std::atomic<bool> recorded{false};
  ~Event();
};

// Unloading waits for the device first: launches queued with the module's kernels run its code.
struct Module {
  Device* device = nullptr;
  void* native = nullptr;
  std::mutex mutex;  // guards kernels and unloaded
  std::unordered_map<std::string, uintptr_t> kernels;
  bool unloaded = false;  // its handle is retired: no new kernels
  ~Module();
};

// A kernel keeps its module loaded: a launch that looked the kernel up before the module was
// unloaded still queues code that is mapped.
struct Kernel {
  std::shared_ptr<Module> module;
  Device* device = nullptr;
  void* native = nullptr;
  int32_t max_group_size = 0;  // porta_kernel_max_group_size, asked once at porta_kernel_get
};

struct Allocation {
  uintptr_t base = 0;
  size_t size = 0;
  porta_memory_kind_t kind = PORTA_MEMORY_UNKNOWN;
  Device* device = nullptr;
};

class Runtime {
 public:
  // Configuration read from the options and the environment.
  struct Settings {
    std::vector<std::string> backends;  // in preference order
    int32_t device = 0;
    const char* device_source = "PORTA_DEVICE";  // where device came from, for messages
    std::vector<std::string> plugin_directories;
    porta_log_level_t log_level = PORTA_LOG_WARN;
    std::string ops = "portable";
    std::string cpu_mode = "fast";
  };

  porta_status_t initialize(const porta_init_options_t* options);
  void shutdown();

  bool initialized() const { return initialized_; }
  porta_status_t status() const { return status_; }
  const std::string& init_message() const { return init_message_; }
  const std::vector<PluginReport>& reports() const { return reports_; }
  const char* selected_backend() const { return selected_; }
  // The loaded backends, in preference order.
  const std::vector<std::unique_ptr<Backend>>& backends() const { return backends_; }

  int32_t device_count() const { return static_cast<int32_t>(devices_.size()); }
  porta_device_t default_device() const { return default_device_; }
  // The device, or nullptr after setting a NOT_FOUND message naming the argument.
  Device* device(porta_device_t id, const char* argument);

  HandleTable<Stream, HandleTag::kStream> streams;
  HandleTable<Event, HandleTag::kEvent> events;
  HandleTable<Module, HandleTag::kModule> modules;
  HandleTable<Kernel, HandleTag::kKernel> kernels;

  // A NULL stream is the default device's default stream.
  std::shared_ptr<Stream> stream(porta_stream_t handle);

  // Allocation records.
  void remember(const Allocation& allocation);
  // The allocation containing ptr, if any.
  bool find_allocation(const void* ptr, Allocation& out) const;
  // Removes the allocation starting exactly at ptr with the given kind; it joins the freed ones.
  bool forget(const void* ptr, porta_memory_kind_t kind, Allocation& out);

  // What [ptr, ptr + size) that lies in no live allocation touches: a live allocation (overlaps
  // it, or starts right at its end), a recently freed one, or nothing (plain host memory).
  struct Touched {
    enum Kind { kNothing, kLive, kFreed } kind = kNothing;
    Allocation allocation;
    const char* freed_by = "";  // the call that freed it
  };
  Touched touched(const void* ptr, size_t size) const;

 private:
  porta_status_t read_settings(const porta_init_options_t* options, Settings& settings);
  porta_status_t load_backends(const Settings& settings);
  porta_status_t enumerate_devices(const Settings& settings);
  porta_status_t load_ops_plugins(const Settings& settings);
  void release_everything();

  bool initialized_ = false;
  porta_status_t status_ = PORTA_SUCCESS;
  std::string init_message_;
  std::vector<PluginReport> reports_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::unique_ptr<OpsPlugin>> ops_plugins_;
  std::vector<std::unique_ptr<Device>> devices_;
  porta_device_t default_device_ = 0;
  const char* selected_ = "";

  // Records the freed allocation (allocations_mutex_ held): the oldest goes beyond the bound.
  void remember_freed(const Allocation& allocation, const char* freed_by);

  mutable std::shared_mutex allocations_mutex_;
  std::map<uintptr_t, Allocation> allocations_;
  // The most recently freed allocations, oldest first, kept across porta_shutdown so that a
  // pointer from before it is recognised too. Bounded, like the CPU backend's reserved ranges
  // (which is at least as long, so none of these can be host memory on the CPU).
  static constexpr size_t kFreedRecords = 256;
  struct Freed {
    Allocation allocation;
    const char* freed_by;
  };
  std::deque<Freed> freed_;
};

// Calls a plugin slot. On failure the plugin's own message, prefixed with the backend and the
// calling function, becomes the last error.
template <typename Slot, typename... Args>
porta_status_t call(const Backend& backend, const char* function, Slot slot, Args... args) {
  take_plugin_message();
  porta_status_t status = slot(backend.context, args...);
  if (status < 0) {
    std::string detail = take_plugin_message();
    fail(status, "{}: {} backend: {}", function, backend.name,
         detail.empty() ? porta_status_name(status) : detail);
  }
  return status;
}

// Runs an API call: initialises from the environment on first use, holds the runtime shared
// against shutdown, and keeps exceptions inside.
template <typename Body>
porta_status_t with_runtime(const char* function, Body&& body) noexcept;

// The same, without failing when initialisation failed (for the loader report).
template <typename Body>
porta_status_t with_runtime_even_if_failed(const char* function, Body&& body) noexcept;

namespace detail {
Runtime& instance();
std::shared_mutex& lifecycle_mutex();
porta_status_t ensure_initialized();
}  // namespace detail

template <typename Body>
porta_status_t with_runtime_even_if_failed(const char* function, Body&& body) noexcept {
  return guarded(function, [&]() -> porta_status_t {
    detail::ensure_initialized();
    std::shared_lock lock(detail::lifecycle_mutex());
    return body(detail::instance());
  });
}

template <typename Body>
porta_status_t with_runtime(const char* function, Body&& body) noexcept {
  return guarded(function, [&]() -> porta_status_t {
    detail::ensure_initialized();
    std::shared_lock lock(detail::lifecycle_mutex());
    Runtime& runtime = detail::instance();
    if (!runtime.initialized()) {
      if (runtime.status() == PORTA_ERROR_OUT_OF_MEMORY) {  // the next call tries again
        return fail(runtime.status(), "{}: Porta could not be initialised: {}", function,
                    runtime.init_message());
      }
      return fail(PORTA_ERROR_UNAVAILABLE, "{}: porta_shutdown ran during the call", function);
    }
    if (runtime.status() != PORTA_SUCCESS) {
      return fail(runtime.status(), "{}: Porta is not initialised: {}", function,
                  runtime.init_message());
    }
    return body(runtime);
  });
}

}  // namespace porta
