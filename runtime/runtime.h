// The runtime's state: loaded backends, devices, live objects and allocations. One instance per
// process, guarded so that API calls run concurrently and init/shutdown run alone.
#pragma once

#include <porta/porta.h>
#include <porta/porta_comm.h>
#include <porta/porta_plugin.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "error.h"
#include "handles.h"
#include "loader.h"
#include "memory_pool.h"

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
  std::unique_ptr<MemoryPool> pool;  // stream-ordered allocations
};

// A number no other stream of the process has had, so records about a stream outlive it safely.
uint64_t next_stream_serial();

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
  const uint64_t serial = next_stream_serial();
  StreamOrder order;  // what the pool needs to know to reuse memory on this stream
  // The op plugins' per-stream storage (porta_op_context_t.stream_storage): one slot for each
  // plugin that may serve the device, its ops and its fallback_ops. Filled by the plugins,
  // atomically; released by ~Stream, or by release_op_storage at shutdown.
  void* op_storage[2] = {nullptr, nullptr};
  void** op_storage_of(const OpsPlugin* plugin) {
    return &op_storage[plugin == device->ops ? 0 : 1];
  }
  // Hands each filled slot to its plugin's release_stream_storage (see porta_plugin.h).
  void release_op_storage(bool shutting_down) noexcept;
};

struct Event {
  Device* device = nullptr;
  void* native = nullptr;
  std::atomic<bool> recorded{false};
  ~Event();
  // The stream of the last record and how many frees it had queued then (StreamOrder::frees):
  // a stream waiting on the event is ordered after those frees.
  std::mutex capture_mutex;
  uint64_t stream_serial = 0;
  uint64_t stream_frees = 0;
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
  std::string name;
  // The parameters the module records (porta_kernel_get_params), asked once at porta_kernel_get;
  // launches are checked against them. Names and types are empty where not recorded.
  bool params_recorded = false;
  std::vector<uint32_t> param_sizes;
  std::vector<std::string> param_names, param_types;
  std::vector<const char*> param_name_pointers, param_type_pointers;  // into the above, or NULL
};

struct Comm {
  Device* device = nullptr;
  CommPlugin* engine = nullptr;
  void* native = nullptr;
  int32_t rank = 0;
  int32_t size = 0;
  // The launcher's arrival record, kept for an engine that cannot name missing ranks itself.
  CommPlugin* launcher = nullptr;
  void* arrivals = nullptr;

  Comm() = default;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  // The engine's communicator, then the arrival record it uses until then: once no call uses
  // them (a collective under way on another thread keeps its reference).
  ~Comm();
};

struct Allocation {
  uintptr_t base = 0;
  size_t size = 0;
  porta_memory_kind_t kind = PORTA_MEMORY_UNKNOWN;
  Device* device = nullptr;
  bool plugin_owned = false;  // made while a plugin's slot ran (see PluginCall)
};

// The most recently freed allocations, found by address: as many as the CPU backend keeps
// reserved (kQuarantinedRanges), since a range still reserved but forgotten here would be taken
// for host memory, which the host cannot read there. The records do not overlap: one that
// addresses handed out again (a newer record, a live allocation) overlap is dropped. The oldest
// goes first once they are more than that.
class FreedRecords {
 public:
  static constexpr size_t kCapacity = 1024;
  struct Freed {
    Allocation allocation;
    const char* freed_by;  // the call that freed it
    // Still mapped: its free waits for the devices before the backend lets it go, and until
    // then the host reading it proves nothing (see Runtime::touched).
    bool releasing = false;
  };

  void add(const Allocation& allocation, const char* freed_by, bool releasing = false);
  // The record of allocation, if any, is no longer releasing.
  void mark_released(const Allocation& allocation);
  // Drops the records that [begin, end) overlaps.
  void drop(uintptr_t begin, uintptr_t end);
  // A record that [begin, end) overlaps or starts right at the end of (touches() in
  // runtime.cpp), or null.
  const Freed* touched_by(uintptr_t begin, uintptr_t end) const;
  size_t size() const { return by_base_.size(); }

 private:
  struct Record {
    Freed freed;
    uint64_t serial;  // the order of add()
  };
  std::map<uintptr_t, Record> by_base_;
  // (base, serial) of each add(), oldest first; entries of dropped records stay until they reach
  // the front, or until a compaction once there are twice the capacity.
  std::deque<std::pair<uintptr_t, uint64_t>> order_;
  uint64_t serial_ = 0;
};

// Marks the calling thread while an object lives (marks nest); active() says whether one does.
// Tag tells the kinds of mark apart.
template <class Tag>
class ThreadMark {
 public:
  ThreadMark() { ++depth(); }
  ~ThreadMark() { --depth(); }
  ThreadMark(const ThreadMark&) = delete;
  ThreadMark& operator=(const ThreadMark&) = delete;
  static bool active() { return depth() > 0; }

 private:
  static int& depth() {
    thread_local int marks = 0;
    return marks;
  }
};

// The calling thread runs a plugin's slot (an op, a collective engine's create): the memory the
// plugin allocates meanwhile is its own (scratch), freed at shutdown like any, but not reported
// as the application's leak.
using PluginCall = ThreadMark<struct PluginCallTag>;

// The calling thread loads or unloads plugins (porta_init, porta_shutdown, a collective engine's
// first use): a Porta call that a plugin's entry, initialize or shutdown makes is refused there
// (detail::refuse_reentry) instead of waiting on a lock its own thread holds.
using PluginSetup = ThreadMark<struct PluginSetupTag>;

// The calling thread runs a host function (porta_stream_launch_host_func), which its stream
// waits for: a Porta call there that waits for streams or devices is refused
// (detail::refuse_wait_in_host_function) instead of waiting for ever.
using HostFunctionCall = ThreadMark<struct HostFunctionTag>;

// Work that runs in the calling thread's own loop rather than queued on a stream: copies between
// devices staged through the host, collectives that an engine runs on the caller's thread (MPI's).
// Waiting for the devices' queued work does not cover it, so a free waits here for what began
// before it. Such work holds a Scope while it runs.
class CallerWork {
 public:
  class Scope {
   public:
    explicit Scope(CallerWork& work) : work_(work), ticket_(work.begin()) {}
    ~Scope() { work_.end(ticket_); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    CallerWork& work_;
    const uint64_t ticket_;
  };
  void wait_for_earlier();

 private:
  uint64_t begin();
  void end(uint64_t ticket);
  std::mutex mutex_;
  std::condition_variable ended_;
  uint64_t next_ = 0;
  std::set<uint64_t> running_;
};

// Whether the host can read the first and the last byte of [ptr, ptr + size), size > 0: what a
// copy taking the range for host memory checks, so that a wild pointer (into a guard page, a
// range a backend keeps unmapped, an unmapped hole) is refused instead of faulting. Only the ends:
// checking every page would cost as much as a large copy. Where the kernel will not tell (a
// seccomp filter refuses process_vm_readv), true.
bool host_can_read_ends(const void* ptr, size_t size);

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
    std::map<std::string, std::string> plugin_settings;  // what plugins read (PORTA_CPU_DEVICES)
  };

  porta_status_t initialize(const porta_init_options_t* options);
  // Waits for every device's queued work, leaving the streams' errors (porta_shutdown, before it
  // holds the runtime alone).
  void wait_for_devices();
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
  HandleTable<Comm, HandleTag::kComm> comms;
  CallerWork caller_work;

  // The collective engine serving the device, opening the engines on first use; nullptr after
  // setting an UNAVAILABLE message with the reason.
  CommPlugin* comm_engine(const char* function, const Device& device);
  // The launcher's engine (MPI), or nullptr after setting an UNAVAILABLE message.
  CommPlugin* launcher(const char* function);

  // A NULL stream is the default device's default stream.
  std::shared_ptr<Stream> stream(porta_stream_t handle);

  // Allocation records.
  void remember(const Allocation& allocation);
  // The room of one record, made before the memory it will describe, so that remembering that
  // memory cannot fail for lack of host memory once it is allocated.
  using Record = std::map<uintptr_t, Allocation>::node_type;
  static Record make_record();
  void remember(Record record, const Allocation& allocation);
  // The allocation containing ptr, if any.
  bool find_allocation(const void* ptr, Allocation& out) const;
  // Removes the allocation starting exactly at ptr with the given kind; it joins the freed ones,
  // freed by the call `freed_by` (the name later messages give).
  bool forget(const void* ptr, porta_memory_kind_t kind, const char* freed_by, Allocation& out);
  // The backend has let go of what forget() returned (its record stops being releasing).
  void released(const Allocation& allocation);
  // forget, for memory that goes to a device's pool: recorded as freed once the pool lets it go
  // (MemoryPool::Released), since a cached block stays mapped and the pool answers for it. The
  // record is handed out (empty where ptr is not the start of live device memory), for
  // remember() to put back where the pool cannot take the memory.
  Record forget_into_pool(const void* ptr);
  // Whether ptr lies in a block freed to a device's pool (freed memory, not host memory).
  // Whether [ptr, ptr + size) overlaps a block cached in a device's pool.
  bool in_freed_pool_block(const void* ptr, size_t size, Device** out_device, uintptr_t* out_base);
  // Logs every live allocation (see porta_memory_report_live); the totals go to the outputs.
  void report_live_allocations(const char* occasion, uint64_t* out_count, uint64_t* out_bytes);

  // What [ptr, ptr + size) that lies in no live allocation touches: a live allocation (overlaps
  // it, or starts right at its end), a recently freed one the host has not mapped again, or
  // nothing (plain host memory).
  struct Touched {
    enum Kind { kNothing, kLive, kFreed } kind = kNothing;
    Allocation allocation;
    const char* freed_by = "";  // the call that freed it
    bool releasing = false;     // freed, not yet let go by the backend
  };
  Touched touched(const void* ptr, size_t size);

 private:
  porta_status_t read_settings(const porta_init_options_t* options, Settings& settings);
  porta_status_t load_backends(const Settings& settings);
  porta_status_t open_devices(Backend& backend);
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
  void remember_freed(const Allocation& allocation, const char* freed_by, bool releasing = false);
  // What [begin, end) touches among the records, as they stand.
  Touched touched_record(uintptr_t begin, uintptr_t end) const;

  void load_comm_plugins();  // comm_mutex_ held

  std::vector<std::string> plugin_directories_;  // kept for the engines, opened on first use
  std::mutex comm_mutex_;
  bool comm_loaded_ = false;
  std::vector<std::unique_ptr<CommPlugin>> comm_plugins_;
  std::map<std::string, std::string> comm_missing_;  // engine name: why it did not load

  mutable std::shared_mutex allocations_mutex_;
  std::map<uintptr_t, Allocation> allocations_;
  // Kept across porta_shutdown, so that a pointer from before it is recognised too.
  FreedRecords freed_;
};

// Whether device reaches peer's memory directly (and may wait on its events): the same device,
// or the same backend when its plugin says so. Otherwise copies between them are staged.
bool direct_peer_access(const Device& device, const Device& peer);

// Calls a plugin slot. On failure the plugin's own message, prefixed with the backend and the
// calling function, becomes the last error.
template <typename Slot, typename... Args>
porta_status_t call(const Backend& backend, const char* function, Slot slot, Args... args) {
  take_plugin_message();
  porta_status_t status = slot(backend.context, args...);
  if (!is_defined_status(status)) {
    return undefined_status(function, fmt::format("the {} backend", backend.name), status);
  }
  if (status < 0) {
    std::string detail = take_plugin_message();
    fail(status, "{}: {} backend: {}", function, backend.name,
         detail.empty() ? porta_status_name(status) : detail);
  }
  return status;
}

// Waits for the work queued on every stream of device before the call, as porta_memory_free and
// porta_module_unload do before they take what it may use: through the backend's device_wait,
// which leaves a failed operation's error to its stream, else device_synchronize (the GPU
// drivers' errors are the context's, reported again by its next call). A wait that fails is
// logged: the queued work has ended either way.
void wait_for_device(const Device& device, const char* function);
// The slot wait_for_device calls.
inline auto device_wait_slot(const porta_backend_interface_t& slots) {
  return slots.device_wait ? slots.device_wait : slots.device_synchronize;
}

// A handle's live object, for every entry point alike: out is the object, or nullptr and
// INVALID_HANDLE with "<function>: <argument> <handle> is not a live <kind>". A NULL stream is the
// default device's default stream. retire() also retires the handle (the destroy calls).
porta_status_t resolve(Runtime& runtime, const char* function, porta_stream_t handle,
                       std::shared_ptr<Stream>& out, const char* argument = "stream");
porta_status_t resolve(Runtime& runtime, const char* function, porta_event_t handle,
                       std::shared_ptr<Event>& out, const char* argument = "event");
porta_status_t resolve(Runtime& runtime, const char* function, porta_module_t handle,
                       std::shared_ptr<Module>& out);
porta_status_t resolve(Runtime& runtime, const char* function, porta_kernel_t handle,
                       std::shared_ptr<Kernel>& out);
porta_status_t resolve(Runtime& runtime, const char* function, porta_comm_t handle,
                       std::shared_ptr<Comm>& out);
// Whether [a, a + a_bytes) and [b, b + b_bytes) share a byte: the one overlap test of the
// buffer arguments that must lie apart (a copy's ends, an op's output and inputs, a collective's
// send and recv).
inline bool ranges_overlap(const void* a, uint64_t a_bytes, const void* b, uint64_t b_bytes) {
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + b_bytes && y < x + a_bytes;
}

// The one overrun check of every buffer argument (copies, ops, collectives): count elements of
// element_size bytes from ptr must lie inside allocation, the one holding ptr; else
// INVALID_ARGUMENT naming the argument, what it needs and what its allocation has from ptr on.
porta_status_t check_room(const char* function, const char* argument, const void* ptr,
                          uint64_t count, uint64_t element_size, const Allocation& allocation);

porta_status_t retire(Runtime& runtime, const char* function, porta_event_t handle,
                      std::shared_ptr<Event>& out);
porta_status_t retire(Runtime& runtime, const char* function, porta_module_t handle,
                      std::shared_ptr<Module>& out);
porta_status_t retire(Runtime& runtime, const char* function, porta_comm_t handle,
                      std::shared_ptr<Comm>& out);

// Runs an API call: initialises from the environment on first use, holds the runtime shared
// against shutdown, and keeps exceptions inside.
template <typename Body>
porta_status_t with_runtime(const char* function, Body&& body) noexcept;

// The same, without failing when initialisation failed (for the loader report).
template <typename Body>
porta_status_t with_runtime_even_if_failed(const char* function, Body&& body) noexcept;

// The same for a call that releases what another made (a free, a destroy, an unload), which
// never initialises: with no runtime up, what it names was released by porta_shutdown or never
// made, so it is refused as stale (stale: INVALID_HANDLE or INVALID_ARGUMENT) and nothing is
// loaded or started; no_op (a NULL pointer to free) is SUCCESS. A C++ wrapper's destructor that
// outlives porta_shutdown makes such calls, at exit too.
template <typename Body>
porta_status_t with_runtime_to_release(const char* function, porta_status_t stale, bool no_op,
                                       Body&& body) noexcept;

namespace detail {
Runtime& instance();
std::shared_mutex& lifecycle_mutex();
// Initialises the runtime with options (NULL: from the environment) unless it is: the status of
// the initialisation this call ran (*ran set), else that of the one before.
porta_status_t ensure_initialized(const porta_init_options_t* options = nullptr,
                                  bool* ran = nullptr);
// How many porta_shutdown calls are past their first wait for the devices. While any is, calls
// fail at once instead of queueing for the lock shutdown is about to hold alone: a host function
// still queued then cannot wait for it while shutdown waits for the host function, and a busy
// caller cannot keep shutdown waiting.
std::atomic<int>& shutdowns_under_way();
// UNAVAILABLE, named for function, while a shutdown is under way; else SUCCESS.
porta_status_t refuse_during_shutdown(const char* function);

// The runtime held alone (porta_init, the first call's initialisation, the end of
// porta_shutdown), which loads or unloads plugins.
struct HeldAlone {
  std::unique_lock<std::shared_mutex> lock{lifecycle_mutex()};
  PluginSetup setup;
};
// UNAVAILABLE, named for function, on a thread that loads or unloads plugins; else SUCCESS.
porta_status_t refuse_reentry(const char* function);
// UNAVAILABLE, named for function, in a host function (HostFunctionCall); else SUCCESS. For the
// calls that wait for streams or devices.
porta_status_t refuse_wait_in_host_function(const char* function);
}  // namespace detail

template <typename Body>
porta_status_t with_runtime_even_if_failed(const char* function, Body&& body) noexcept {
  return guarded(function, [&]() -> porta_status_t {
    if (porta_status_t refused = detail::refuse_reentry(function)) return refused;
    if (porta_status_t refused = detail::refuse_during_shutdown(function)) return refused;
    detail::ensure_initialized();
    std::shared_lock lock(detail::lifecycle_mutex());
    return body(detail::instance());
  });
}

template <typename Body>
porta_status_t with_runtime_to_release(const char* function, porta_status_t stale, bool no_op,
                                       Body&& body) noexcept {
  bool up = false;
  const porta_status_t status = guarded(function, [&]() -> porta_status_t {
    if (porta_status_t refused = detail::refuse_reentry(function)) return refused;
    if (porta_status_t refused = detail::refuse_during_shutdown(function)) return refused;
    std::shared_lock lock(detail::lifecycle_mutex());
    up = detail::instance().initialized();
    if (up || no_op) return PORTA_SUCCESS;
    return fail(stale,
                "{}: Porta is not initialised, so this names nothing it holds (what "
                "porta_shutdown released is stale)",
                function);
  });
  if (!up) return status;
  return with_runtime(function, std::forward<Body>(body));
}

template <typename Body>
porta_status_t with_runtime(const char* function, Body&& body) noexcept {
  return with_runtime_even_if_failed(function, [&](Runtime& runtime) -> porta_status_t {
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
