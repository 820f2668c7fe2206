// The Level Zero backend plugin, for Intel GPUs. Memory is USM (zeMemAllocDevice / Host), so
// kernels take raw pointers as on CUDA. A stream is an immediate command list; each command
// waits for the stream's previous one and signals an event of the stream's own ring, so the
// list runs in order and the last event answers queries. A Porta event writes a global
// timestamp. Kernels are the kernel libraries' SPIR-V (<lib>.spv); argument sizes come from the
// module itself (spirv_reader.h), since zeKernelSetArgumentValue wants a size per argument.
#include <porta/porta_plugin.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "level_zero_driver.h"
#include "plugin_kit.h"
#include "plugin_state.h"
#include "spirv_reader.h"

namespace porta::level_zero {

using plugin::guarded;
using plugin::log;
using plugin::throw_error;

namespace {

#define PORTA_ZE_STR2(x) #x
#define PORTA_ZE_STR(x) PORTA_ZE_STR2(x)
constexpr const char* kVersion =
    "porta-level_zero " PORTA_ZE_STR(PORTA_VERSION_MAJOR) "." PORTA_ZE_STR(
        PORTA_VERSION_MINOR) "." PORTA_ZE_STR(PORTA_VERSION_PATCH);

// GPU-like limits, as the other backends report them.
constexpr uint32_t kMaxGroupItems = 1024;
constexpr uint32_t kMaxGroupDims[3] = {1024, 1024, 64};
constexpr uint32_t kEventsPerStream = 64;

struct Device {
  ze_driver_handle_t driver = nullptr;
  ze_device_handle_t handle = nullptr;
  ze_context_handle_t context = nullptr;  // one per driver, shared by its devices
  porta_device_properties_t properties{};
  double ns_per_tick = 1.0;
  uint64_t timestamp_mask = ~uint64_t{0};
  std::mutex mutex;
  uint64_t allocated = 0;
  std::map<void*, size_t> allocations;
  std::mutex streams_mutex;
  std::vector<struct Stream*> streams;
};

// Host-visible events handed out in turn; one is reused only after it signalled.
class EventRing {
 public:
  EventRing(const Driver& d, ze_context_handle_t context, ze_device_handle_t device) : d_(d) {
    ze_event_pool_desc_t desc{ZE_STRUCTURE_TYPE_EVENT_POOL_DESC, nullptr,
                              ZE_EVENT_POOL_FLAG_HOST_VISIBLE, kEventsPerStream};
    Driver::check(d.zeEventPoolCreate(context, &desc, 1, &device, &pool_), "event pool");
    events_.resize(kEventsPerStream, nullptr);
    used_.resize(kEventsPerStream, false);
    for (uint32_t i = 0; i < kEventsPerStream; ++i) {
      ze_event_desc_t event{ZE_STRUCTURE_TYPE_EVENT_DESC, nullptr, i, ZE_EVENT_SCOPE_FLAG_HOST,
                            ZE_EVENT_SCOPE_FLAG_HOST};
      const ze_result_t r = d.zeEventCreate(pool_, &event, &events_[i]);
      if (r != ZE_RESULT_SUCCESS) {
        release();
        Driver::check(r, "event");
      }
    }
  }
  ~EventRing() { release(); }

  ze_event_handle_t take() {
    const uint32_t i = next_;
    next_ = (next_ + 1) % kEventsPerStream;
    if (used_[i]) {
      Driver::check(d_.zeEventHostSynchronize(events_[i], UINT64_MAX), "event reuse");
      Driver::check(d_.zeEventHostReset(events_[i]), "event reset");
    }
    used_[i] = true;
    return events_[i];
  }

 private:
  void release() noexcept {
    for (ze_event_handle_t e : events_) {
      if (e) d_.zeEventDestroy(e);
    }
    events_.clear();
    if (pool_) d_.zeEventPoolDestroy(pool_);
    pool_ = nullptr;
  }

  const Driver& d_;
  ze_event_pool_handle_t pool_ = nullptr;
  std::vector<ze_event_handle_t> events_;
  std::vector<bool> used_;
  uint32_t next_ = 0;
};

struct HostTask {
  porta_host_fn_t fn;
  void* user_data;
  ze_event_handle_t after;  // signalled when the work before the function completed
  ze_event_handle_t gate;   // signalled by the worker once fn returned
};

struct Stream {
  int32_t device;
  ze_command_list_handle_t list = nullptr;
  std::unique_ptr<EventRing> ring;
  std::mutex mutex;                  // one command at a time on the list
  ze_event_handle_t last = nullptr;  // the last command's event, nullptr when none
  std::mutex task_mutex;             // host functions, run on the stream's worker
  std::condition_variable task_ready;
  std::deque<HostTask> tasks;
  bool stopping = false;
  std::thread worker;
  plugin::HostFunctionErrors host_errors;
};

struct Event {
  int32_t device;
  ze_event_pool_handle_t pool = nullptr;
  ze_event_handle_t event = nullptr;
  uint64_t* timestamp = nullptr;  // host USM the device writes its timer into
  bool recorded = false;
  std::mutex mutex;
};

struct Kernel {
  std::string name;
  ze_kernel_handle_t kernel = nullptr;
  spirv::KernelSignature signature;
  std::vector<uint32_t> param_sizes;  // signature.user_param_sizes(), for kernel_params
  std::mutex mutex;  // group size, arguments and the launch go together
};

struct Module {
  int32_t device;
  ze_module_handle_t module = nullptr;
  std::map<std::string, spirv::KernelSignature> signatures;
  std::mutex mutex;
  std::unordered_map<std::string, std::unique_ptr<Kernel>> kernels;
};

class Backend {
 public:
  explicit Backend(std::unique_ptr<Driver> driver) : driver_(std::move(driver)) {
    const Driver& d = *driver_;
    // Without an Intel GPU and its driver, Debian's loader answers ZE_RESULT_ERROR_UNINITIALIZED.
    if (const ze_result_t r = d.zeInit(ZE_INIT_FLAG_GPU_ONLY); r != ZE_RESULT_SUCCESS) {
      throw_error(PORTA_ERROR_UNAVAILABLE,
                  "level_zero: libze_loader.so.1 loaded, but zeInit failed: " +
                      Driver::describe(r) + " (no Level Zero GPU driver, or no Intel GPU)");
    }
    uint32_t count = 0;
    Driver::check(d.zeDriverGet(&count, nullptr), "zeDriverGet");
    if (count == 0) throw_error(PORTA_ERROR_UNAVAILABLE, "level_zero: no Level Zero driver");
    std::vector<ze_driver_handle_t> drivers(count);
    Driver::check(d.zeDriverGet(&count, drivers.data()), "zeDriverGet");
    try {
      for (ze_driver_handle_t driver : drivers) open_driver(driver);
    } catch (...) {
      release();
      throw;
    }
    if (devices_.empty())
      throw_error(PORTA_ERROR_UNAVAILABLE, "level_zero: the drivers see no GPU");
  }
  ~Backend() { release(); }

  const Driver& driver() const { return *driver_; }
  int32_t device_count() const { return static_cast<int32_t>(devices_.size()); }
  Device& device(int32_t index) {
    if (index < 0 || index >= device_count()) {
      throw_error(PORTA_ERROR_NOT_FOUND, "level_zero: no device " + std::to_string(index));
    }
    return *devices_[index];
  }
  const porta_device_properties_t& properties(int32_t index) { return device(index).properties; }

 private:
  void open_driver(ze_driver_handle_t driver) {
    const Driver& d = *driver_;
    uint32_t count = 0;
    Driver::check(d.zeDeviceGet(driver, &count, nullptr), "zeDeviceGet");
    if (count == 0) return;
    std::vector<ze_device_handle_t> handles(count);
    Driver::check(d.zeDeviceGet(driver, &count, handles.data()), "zeDeviceGet");
    ze_context_desc_t desc{ZE_STRUCTURE_TYPE_CONTEXT_DESC, nullptr, 0};
    ze_context_handle_t context = nullptr;
    Driver::check(d.zeContextCreate(driver, &desc, &context), "zeContextCreate");
    contexts_.push_back(context);
    for (ze_device_handle_t handle : handles) open_device(driver, handle, context);
  }

  void open_device(ze_driver_handle_t driver, ze_device_handle_t handle,
                   ze_context_handle_t context) {
    const Driver& d = *driver_;
    auto dev = std::make_unique<Device>();
    dev->driver = driver;
    dev->handle = handle;
    dev->context = context;
    ze_device_properties_t props{};
    props.stype = ZE_STRUCTURE_TYPE_DEVICE_PROPERTIES;  // timerResolution in ns per tick
    Driver::check(d.zeDeviceGetProperties(handle, &props), "device properties");
    ze_device_compute_properties_t compute{};
    compute.stype = ZE_STRUCTURE_TYPE_DEVICE_COMPUTE_PROPERTIES;
    Driver::check(d.zeDeviceGetComputeProperties(handle, &compute), "compute properties");
    ze_device_module_properties_t module{};
    module.stype = ZE_STRUCTURE_TYPE_DEVICE_MODULE_PROPERTIES;
    Driver::check(d.zeDeviceGetModuleProperties(handle, &module), "module properties");
    uint32_t memory_count = 0;
    Driver::check(d.zeDeviceGetMemoryProperties(handle, &memory_count, nullptr), "memory");
    std::vector<ze_device_memory_properties_t> memories(memory_count);
    for (auto& m : memories) m.stype = ZE_STRUCTURE_TYPE_DEVICE_MEMORY_PROPERTIES;
    Driver::check(d.zeDeviceGetMemoryProperties(handle, &memory_count, memories.data()), "memory");

    porta_device_properties_t& p = dev->properties;
    std::memset(&p, 0, sizeof(p));
    p.struct_size = sizeof(p);
    std::snprintf(p.name, sizeof(p.name), "%s", props.name);
    std::snprintf(p.backend, sizeof(p.backend), "level_zero");
    // The PCI device id names the GPU (what ocloc -device takes as well).
    std::snprintf(p.architecture, sizeof(p.architecture), "0x%04x", props.deviceId);
    for (const auto& m : memories) p.total_memory += m.totalSize;
    p.compute_units = static_cast<int32_t>(props.numSlices * props.numSubslicesPerSlice *
                                           props.numEUsPerSubslice);
    p.max_work_group_size =
        static_cast<int32_t>(std::min(compute.maxTotalGroupSize, kMaxGroupItems));
    const uint32_t group[3] = {compute.maxGroupSizeX, compute.maxGroupSizeY, compute.maxGroupSizeZ};
    const uint32_t grid[3] = {compute.maxGroupCountX, compute.maxGroupCountY,
                              compute.maxGroupCountZ};
    for (int i = 0; i < 3; ++i) {
      p.max_work_group_dims[i] = static_cast<int32_t>(std::min(group[i], kMaxGroupDims[i]));
      p.max_grid_dims[i] = grid[i];
    }
    p.shared_memory_per_group = static_cast<int32_t>(compute.maxSharedLocalMemory);
    p.subgroup_size =
        compute.numSubGroupSizes > 0
            ? static_cast<int32_t>(compute.subGroupSizes[compute.numSubGroupSizes - 1])
            : static_cast<int32_t>(props.physicalEUSimdWidth);
    p.clock_mhz = static_cast<int32_t>(props.coreClockRate);
    p.capabilities = PORTA_CAPABILITY_UNIFIED_ADDRESSING | PORTA_CAPABILITY_ASYNC_COPY;
    if (module.fp64flags != 0) p.capabilities |= PORTA_CAPABILITY_FP64;
    if (module.fp16flags != 0) p.capabilities |= PORTA_CAPABILITY_FP16;
    dev->ns_per_tick = static_cast<double>(props.timerResolution);
    if (props.timestampValidBits > 0 && props.timestampValidBits < 64) {
      dev->timestamp_mask = (uint64_t{1} << props.timestampValidBits) - 1;
    }
    log(PORTA_LOG_INFO, "device " + std::to_string(devices_.size()) + ": " + p.name);
    devices_.push_back(std::move(dev));
  }

  void release() noexcept {
    for (ze_context_handle_t context : contexts_) driver_->zeContextDestroy(context);
    contexts_.clear();
  }

  std::unique_ptr<Driver> driver_;
  std::vector<ze_context_handle_t> contexts_;
  std::vector<std::unique_ptr<Device>> devices_;
};

using BackendState = plugin::PluginState<Backend>;
Backend& backend_of(porta_backend_context_t context) { return BackendState::of(context); }
Stream& stream_of(void* stream) { return *static_cast<Stream*>(stream); }
Event& event_of(void* event) { return *static_cast<Event*>(event); }

// Appends one command that waits for the stream's last one (and for `also`, when given) and
// signals a fresh event, which becomes the last. append(signal, wait_count, waits).
template <typename Append>
void append_on(Stream& s, Append&& append, ze_event_handle_t also = nullptr) {
  std::lock_guard lock(s.mutex);
  ze_event_handle_t waits[2];
  uint32_t count = 0;
  if (s.last) waits[count++] = s.last;
  if (also) waits[count++] = also;
  ze_event_handle_t signal = s.ring->take();
  append(signal, count, count ? waits : nullptr);
  s.last = signal;
}

porta_status_t synchronize(const Driver& d, Stream& s) {
  ze_event_handle_t last = nullptr;
  {
    std::lock_guard lock(s.mutex);
    last = s.last;
  }
  if (last) Driver::check(d.zeEventHostSynchronize(last, UINT64_MAX), "stream synchronize");
  s.host_errors.throw_kept();
  return PORTA_SUCCESS;
}

void stop_worker(Stream& s) {
  {
    std::lock_guard lock(s.task_mutex);
    s.stopping = true;
  }
  s.task_ready.notify_all();
  if (s.worker.joinable()) s.worker.join();
}

void run_tasks(const Driver* d, Stream* s) {
  for (;;) {
    HostTask task;
    {
      std::unique_lock lock(s->task_mutex);
      s->task_ready.wait(lock, [&] { return s->stopping || !s->tasks.empty(); });
      if (s->tasks.empty()) return;
      task = s->tasks.front();
      s->tasks.pop_front();
    }
    d->zeEventHostSynchronize(task.after, UINT64_MAX);
    s->host_errors.run(task.fn, task.user_data);
    d->zeEventHostSignal(task.gate);
  }
}

// ---- the slots ----------------------------------------------------------------------------------

porta_status_t initialize(porta_backend_context_t* out_context, int32_t* out_device_count) {
  return BackendState::initialize(out_context, out_device_count,
                                  [] { return std::make_unique<Backend>(Driver::open()); });
}

porta_status_t device_memory_info(porta_backend_context_t context, int32_t device,
                                  uint64_t* out_free, uint64_t* out_total) {
  return guarded("device_memory_info", [&] {
    // Level Zero 1.4 reports no free memory: the total less what Porta allocated.
    Device& dev = backend_of(context).device(device);
    std::lock_guard lock(dev.mutex);
    *out_total = dev.properties.total_memory;
    *out_free = dev.properties.total_memory - std::min(dev.allocated, dev.properties.total_memory);
    return PORTA_SUCCESS;
  });
}

porta_status_t device_synchronize(porta_backend_context_t context, int32_t device) {
  return guarded("device_synchronize", [&] {
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    std::lock_guard lock(dev.streams_mutex);
    for (Stream* s : dev.streams) synchronize(b.driver(), *s);
    return PORTA_SUCCESS;
  });
}

porta_status_t device_native_handle(porta_backend_context_t context, int32_t device,
                                    void** out_native) {
  return guarded("device_native_handle", [&] {
    *out_native = static_cast<void*>(backend_of(context).device(device).handle);
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_alloc(porta_backend_context_t context, int32_t device, size_t size,
                            void** out_ptr) {
  return guarded("memory_alloc", [&] {
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    ze_device_mem_alloc_desc_t desc{ZE_STRUCTURE_TYPE_DEVICE_MEM_ALLOC_DESC, nullptr, 0, 0};
    void* ptr = nullptr;
    Driver::check(b.driver().zeMemAllocDevice(dev.context, &desc, size, 256, dev.handle, &ptr),
                  "device allocation of " + std::to_string(size) + " bytes");
    std::lock_guard lock(dev.mutex);
    dev.allocations[ptr] = size;
    dev.allocated += size;
    *out_ptr = ptr;
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_free(porta_backend_context_t context, int32_t device, void* ptr) {
  return guarded("memory_free", [&] {
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    {
      std::lock_guard lock(dev.mutex);
      auto it = dev.allocations.find(ptr);
      if (it != dev.allocations.end()) {
        dev.allocated -= it->second;
        dev.allocations.erase(it);
      }
    }
    Driver::check(b.driver().zeMemFree(dev.context, ptr), "free device memory");
    return PORTA_SUCCESS;
  });
}

porta_status_t host_alloc(porta_backend_context_t context, int32_t device, size_t size,
                          void** out_ptr) {
  return guarded("host_alloc", [&] {
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    ze_host_mem_alloc_desc_t desc{ZE_STRUCTURE_TYPE_HOST_MEM_ALLOC_DESC, nullptr, 0};
    void* ptr = nullptr;
    Driver::check(b.driver().zeMemAllocHost(dev.context, &desc, size, 256, &ptr),
                  "host allocation of " + std::to_string(size) + " bytes");
    *out_ptr = ptr;
    return PORTA_SUCCESS;
  });
}

porta_status_t host_free(porta_backend_context_t context, int32_t device, void* ptr) {
  return guarded("host_free", [&] {
    Backend& b = backend_of(context);
    Driver::check(b.driver().zeMemFree(b.device(device).context, ptr), "free host memory");
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_create(porta_backend_context_t context, int32_t device, void** out_stream) {
  return guarded("stream_create", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    Device& dev = b.device(device);
    auto stream = std::make_unique<Stream>();
    stream->device = device;
    stream->ring = std::make_unique<EventRing>(d, dev.context, dev.handle);
    ze_command_queue_desc_t desc{
        ZE_STRUCTURE_TYPE_COMMAND_QUEUE_DESC, nullptr, 0, 0, 0, ZE_COMMAND_QUEUE_MODE_ASYNCHRONOUS,
        ZE_COMMAND_QUEUE_PRIORITY_NORMAL};
    Driver::check(d.zeCommandListCreateImmediate(dev.context, dev.handle, &desc, &stream->list),
                  "immediate command list");
    std::lock_guard lock(dev.streams_mutex);
    dev.streams.push_back(stream.get());
    *out_stream = stream.release();
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_destroy(porta_backend_context_t context, void* stream) {
  return guarded("stream_destroy", [&] {
    Backend& b = backend_of(context);
    Stream& s = stream_of(stream);
    {
      Device& dev = b.device(s.device);
      std::lock_guard lock(dev.streams_mutex);
      dev.streams.erase(std::find(dev.streams.begin(), dev.streams.end(), &s));
    }
    synchronize(b.driver(), s);
    stop_worker(s);
    b.driver().zeCommandListDestroy(s.list);
    delete &s;
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_synchronize(porta_backend_context_t context, void* stream) {
  return guarded("stream_synchronize",
                 [&] { return synchronize(backend_of(context).driver(), stream_of(stream)); });
}

porta_status_t stream_query(porta_backend_context_t context, void* stream) {
  return guarded("stream_query", [&] {
    const Driver& d = backend_of(context).driver();
    Stream& s = stream_of(stream);
    std::lock_guard lock(s.mutex);
    if (!s.last) return PORTA_SUCCESS;
    const ze_result_t r = d.zeEventQueryStatus(s.last);
    if (r == ZE_RESULT_NOT_READY) return PORTA_NOT_READY;
    Driver::check(r, "stream query");
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_wait_event(porta_backend_context_t context, void* stream, void* event) {
  return guarded("stream_wait_event", [&] {
    const Driver& d = backend_of(context).driver();
    Event& e = event_of(event);
    {
      std::lock_guard lock(e.mutex);
      if (!e.recorded) return PORTA_SUCCESS;
    }
    Stream& s = stream_of(stream);
    append_on(
        s,
        [&](ze_event_handle_t signal, uint32_t count, ze_event_handle_t* waits) {
          Driver::check(d.zeCommandListAppendBarrier(s.list, signal, count, waits),
                        "wait on event");
        },
        e.event);
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_native_handle(porta_backend_context_t, void* stream, void** out_native) {
  return guarded("stream_native_handle", [&] {
    *out_native = static_cast<void*>(stream_of(stream).list);  // ze_command_list_handle_t
    return PORTA_SUCCESS;
  });
}

porta_status_t memcpy_async(porta_backend_context_t context, void* stream, void* dst,
                            const void* src, size_t size, porta_copy_kind_t) {
  return guarded("memcpy_async", [&] {
    const Driver& d = backend_of(context).driver();
    Stream& s = stream_of(stream);
    append_on(s, [&](ze_event_handle_t signal, uint32_t count, ze_event_handle_t* waits) {
      Driver::check(d.zeCommandListAppendMemoryCopy(s.list, dst, src, size, signal, count, waits),
                    "copy of " + std::to_string(size) + " bytes");
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t memset_async(porta_backend_context_t context, void* stream, void* dst, uint8_t value,
                            size_t size) {
  return guarded("memset_async", [&] {
    const Driver& d = backend_of(context).driver();
    Stream& s = stream_of(stream);
    append_on(s, [&](ze_event_handle_t signal, uint32_t count, ze_event_handle_t* waits) {
      Driver::check(
          d.zeCommandListAppendMemoryFill(s.list, dst, &value, 1, size, signal, count, waits),
          "fill of " + std::to_string(size) + " bytes");
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t event_create(porta_backend_context_t context, int32_t device, void** out_event) {
  return guarded("event_create", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    Device& dev = b.device(device);
    auto event = std::make_unique<Event>();
    event->device = device;
    ze_event_pool_desc_t pool{ZE_STRUCTURE_TYPE_EVENT_POOL_DESC, nullptr,
                              ZE_EVENT_POOL_FLAG_HOST_VISIBLE, 1};
    Driver::check(d.zeEventPoolCreate(dev.context, &pool, 1, &dev.handle, &event->pool),
                  "event pool");
    ze_event_desc_t desc{ZE_STRUCTURE_TYPE_EVENT_DESC, nullptr, 0, ZE_EVENT_SCOPE_FLAG_HOST,
                         ZE_EVENT_SCOPE_FLAG_HOST};
    ze_result_t r = d.zeEventCreate(event->pool, &desc, &event->event);
    if (r == ZE_RESULT_SUCCESS) {
      ze_host_mem_alloc_desc_t host{ZE_STRUCTURE_TYPE_HOST_MEM_ALLOC_DESC, nullptr, 0};
      void* slot = nullptr;
      r = d.zeMemAllocHost(dev.context, &host, sizeof(uint64_t), 64, &slot);
      event->timestamp = static_cast<uint64_t*>(slot);
    }
    if (r != ZE_RESULT_SUCCESS) {
      if (event->event) d.zeEventDestroy(event->event);
      d.zeEventPoolDestroy(event->pool);
      Driver::check(r, "event");
    }
    *out_event = event.release();
    return PORTA_SUCCESS;
  });
}

porta_status_t event_destroy(porta_backend_context_t context, void* event) {
  return guarded("event_destroy", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    Event& e = event_of(event);
    if (e.recorded) d.zeEventHostSynchronize(e.event, UINT64_MAX);
    d.zeMemFree(b.device(e.device).context, e.timestamp);
    d.zeEventDestroy(e.event);
    d.zeEventPoolDestroy(e.pool);
    delete &e;
    return PORTA_SUCCESS;
  });
}

porta_status_t event_record(porta_backend_context_t context, void* event, void* stream) {
  return guarded("event_record", [&] {
    const Driver& d = backend_of(context).driver();
    Event& e = event_of(event);
    Stream& s = stream_of(stream);
    std::lock_guard event_lock(e.mutex);
    if (e.recorded) {
      Driver::check(d.zeEventHostSynchronize(e.event, UINT64_MAX), "event re-record");
      Driver::check(d.zeEventHostReset(e.event), "event reset");
    }
    std::lock_guard lock(s.mutex);
    // The device's timer, written once the work before completed; the event signals then.
    const uint32_t count = s.last ? 1 : 0;
    Driver::check(d.zeCommandListAppendWriteGlobalTimestamp(s.list, e.timestamp, e.event, count,
                                                            count ? &s.last : nullptr),
                  "event record");
    // The stream goes on from an event of its own ring, so that a later re-record (which resets
    // e.event) never touches what this stream's next commands wait on.
    ze_event_handle_t next = s.ring->take();
    Driver::check(d.zeCommandListAppendBarrier(s.list, next, 1, &e.event), "event record");
    s.last = next;
    e.recorded = true;
    return PORTA_SUCCESS;
  });
}

porta_status_t event_query(porta_backend_context_t context, void* event) {
  return guarded("event_query", [&] {
    Event& e = event_of(event);
    std::lock_guard lock(e.mutex);
    if (!e.recorded) return PORTA_SUCCESS;
    const ze_result_t r = backend_of(context).driver().zeEventQueryStatus(e.event);
    if (r == ZE_RESULT_NOT_READY) return PORTA_NOT_READY;
    Driver::check(r, "event query");
    return PORTA_SUCCESS;
  });
}

porta_status_t event_synchronize(porta_backend_context_t context, void* event) {
  return guarded("event_synchronize", [&] {
    Event& e = event_of(event);
    {
      std::lock_guard lock(e.mutex);
      if (!e.recorded) return PORTA_SUCCESS;
    }
    Driver::check(backend_of(context).driver().zeEventHostSynchronize(e.event, UINT64_MAX),
                  "event synchronize");
    return PORTA_SUCCESS;
  });
}

porta_status_t event_elapsed_ms(porta_backend_context_t context, void* start, void* end,
                                float* out_ms) {
  return guarded("event_elapsed_ms", [&] {
    Event& first = event_of(start);
    Event& second = event_of(end);
    const Device& dev = backend_of(context).device(first.device);
    const uint64_t ticks = (*second.timestamp - *first.timestamp) & dev.timestamp_mask;
    *out_ms = static_cast<float>(static_cast<double>(ticks) * dev.ns_per_tick / 1e6);
    return PORTA_SUCCESS;
  });
}

porta_status_t module_load_data(porta_backend_context_t context, int32_t device, const void* image,
                                size_t size, void** out_module) {
  return guarded("module_load_data", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    Device& dev = b.device(device);
    if (!spirv::is_spirv(image, size)) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                  "level_zero: the image is not SPIR-V (a kernel library's .spv)");
    }
    auto module = std::make_unique<Module>();
    module->device = device;
    module->signatures = spirv::read_kernels(image, size);
    ze_module_desc_t desc{ZE_STRUCTURE_TYPE_MODULE_DESC,
                          nullptr,
                          ZE_MODULE_FORMAT_IL_SPIRV,
                          size,
                          static_cast<const uint8_t*>(image),
                          "",
                          nullptr};
    ze_module_build_log_handle_t build_log = nullptr;
    const ze_result_t r =
        d.zeModuleCreate(dev.context, dev.handle, &desc, &module->module, &build_log);
    std::string text;
    if (build_log) {
      size_t length = 0;
      if (d.zeModuleBuildLogGetString(build_log, &length, nullptr) == ZE_RESULT_SUCCESS && length) {
        text.resize(length);
        d.zeModuleBuildLogGetString(build_log, &length, text.data());
        text.resize(strnlen(text.c_str(), length));
      }
      d.zeModuleBuildLogDestroy(build_log);
    }
    if (r != ZE_RESULT_SUCCESS) {
      throw_error(r == ZE_RESULT_ERROR_MODULE_BUILD_FAILURE ? PORTA_ERROR_INCOMPATIBLE_VERSION
                                                            : PORTA_ERROR_INVALID_ARGUMENT,
                  "level_zero: module from " + std::to_string(size) + " bytes: " +
                      Driver::describe(r) + (text.empty() ? "" : ": " + text.substr(0, 2000)));
    }
    *out_module = module.release();
    return PORTA_SUCCESS;
  });
}

porta_status_t module_unload(porta_backend_context_t context, void* module) {
  return guarded("module_unload", [&] {
    const Driver& d = backend_of(context).driver();
    auto* m = static_cast<Module*>(module);
    for (auto& [name, kernel] : m->kernels) d.zeKernelDestroy(kernel->kernel);
    d.zeModuleDestroy(m->module);
    delete m;
    return PORTA_SUCCESS;
  });
}

porta_status_t kernel_get(porta_backend_context_t context, void* module, const char* name,
                          void** out_kernel) {
  return guarded("kernel_get", [&] {
    const Driver& d = backend_of(context).driver();
    auto* m = static_cast<Module*>(module);
    std::lock_guard lock(m->mutex);
    if (auto it = m->kernels.find(name); it != m->kernels.end()) {
      *out_kernel = it->second.get();
      return PORTA_SUCCESS;
    }
    auto signature = m->signatures.find(name);
    if (signature == m->signatures.end()) {
      throw_error(PORTA_ERROR_NOT_FOUND,
                  std::string("level_zero: the module has no kernel '") + name + "'");
    }
    auto kernel = std::make_unique<Kernel>();
    kernel->name = name;
    kernel->signature = signature->second;
    kernel->param_sizes = kernel->signature.user_param_sizes();
    ze_kernel_desc_t desc{ZE_STRUCTURE_TYPE_KERNEL_DESC, nullptr, 0, name};
    Driver::check(d.zeKernelCreate(m->module, &desc, &kernel->kernel),
                  std::string("kernel '") + name + "'");
    // Pointers inside structs reach allocations the arguments do not name.
    d.zeKernelSetIndirectAccess(kernel->kernel, ZE_KERNEL_INDIRECT_ACCESS_FLAG_DEVICE |
                                                    ZE_KERNEL_INDIRECT_ACCESS_FLAG_HOST |
                                                    ZE_KERNEL_INDIRECT_ACCESS_FLAG_SHARED);
    *out_kernel = kernel.get();
    m->kernels.emplace(name, std::move(kernel));
    return PORTA_SUCCESS;
  });
}

// The sizes from the SPIR-V module, which carries no names.
porta_status_t kernel_params(porta_backend_context_t, void* kernel, uint32_t* out_count,
                             const uint32_t** out_sizes, const char** out_signature) {
  return guarded("kernel_params", [&] {
    const auto* k = static_cast<const Kernel*>(kernel);
    *out_count = static_cast<uint32_t>(k->param_sizes.size());
    *out_sizes = k->param_sizes.data();
    *out_signature = nullptr;
    return PORTA_SUCCESS;
  });
}

porta_status_t kernel_launch(porta_backend_context_t context, void* kernel,
                             const porta_launch_config_t* config, void** args, void* stream) {
  return guarded("kernel_launch", [&] {
    const Driver& d = backend_of(context).driver();
    auto* k = static_cast<Kernel*>(kernel);
    Stream& s = stream_of(stream);
    const porta_launch_config_t& c = *config;
    if (k->signature.user_param_count() > 0 && !args) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                  "level_zero: kernel '" + k->name + "' takes " +
                      std::to_string(k->signature.user_param_count()) + " arguments; args is NULL");
    }
    std::lock_guard lock(k->mutex);
    Driver::check(d.zeKernelSetGroupSize(k->kernel, c.group[0], c.group[1], c.group[2]),
                  "group size of kernel '" + k->name + "'");
    size_t user = 0;
    const auto& params = k->signature.params;
    for (uint32_t i = 0; i < params.size(); ++i) {
      const spirv::Param& p = params[i];
      ze_result_t r = ZE_RESULT_SUCCESS;
      if (p.kind == spirv::ParamKind::local_pointer) {
        r = d.zeKernelSetArgumentValue(k->kernel, i, std::max<uint32_t>(1, c.shared_memory_bytes),
                                       nullptr);
      } else {
        r = d.zeKernelSetArgumentValue(k->kernel, i, p.size, args[user++]);
      }
      Driver::check(r, "kernel '" + k->name + "' argument " + std::to_string(i));
    }
    const ze_group_count_t groups{c.grid[0], c.grid[1], c.grid[2]};
    append_on(s, [&](ze_event_handle_t signal, uint32_t count, ze_event_handle_t* waits) {
      Driver::check(
          d.zeCommandListAppendLaunchKernel(s.list, k->kernel, &groups, signal, count, waits),
          "launch of kernel '" + k->name + "'");
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_launch_host_func(porta_backend_context_t context, void* stream,
                                       porta_host_fn_t fn, void* user_data) {
  return guarded("stream_launch_host_func", [&] {
    const Driver& d = backend_of(context).driver();
    Stream& s = stream_of(stream);
    {
      std::lock_guard lock(s.task_mutex);
      if (!s.worker.joinable()) s.worker = std::thread(run_tasks, &d, &s);
    }
    // after (the work before) -> fn on the worker -> gate -> the work after.
    ze_event_handle_t after = nullptr, gate = nullptr;
    {
      std::lock_guard lock(s.mutex);
      after = s.ring->take();
      gate = s.ring->take();
      const uint32_t count = s.last ? 1 : 0;
      Driver::check(d.zeCommandListAppendBarrier(s.list, after, count, count ? &s.last : nullptr),
                    "host function marker");
      s.last = gate;
    }
    {
      std::lock_guard lock(s.task_mutex);
      s.tasks.push_back(HostTask{fn, user_data, after, gate});
    }
    s.task_ready.notify_one();
    return PORTA_SUCCESS;
  });
}

porta_status_t code_object_suffixes(porta_backend_context_t context, int32_t device,
                                    const char** out_suffixes) {
  return guarded("code_object_suffixes", [&] {
    backend_of(context).device(device);
    *out_suffixes = ".spv";
    return PORTA_SUCCESS;
  });
}

const porta_backend_interface_t kInterface = {
    .struct_size = sizeof(porta_backend_interface_t),
    .initialize = initialize,
    .shutdown = BackendState::shutdown,
    .device_properties = BackendState::device_properties,
    .device_memory_info = device_memory_info,
    .device_synchronize = device_synchronize,
    .device_native_handle = device_native_handle,
    .memory_alloc = memory_alloc,
    .memory_free = memory_free,
    .host_alloc = host_alloc,
    .host_free = host_free,
    .stream_create = stream_create,
    .stream_destroy = stream_destroy,
    .stream_synchronize = stream_synchronize,
    .stream_query = stream_query,
    .stream_wait_event = stream_wait_event,
    .stream_native_handle = stream_native_handle,
    .memcpy_async = memcpy_async,
    .memset_async = memset_async,
    .event_create = event_create,
    .event_destroy = event_destroy,
    .event_record = event_record,
    .event_query = event_query,
    .event_synchronize = event_synchronize,
    .event_elapsed_ms = event_elapsed_ms,
    .module_load_data = module_load_data,
    .module_load_file = nullptr,  // libporta reads the .spv and hands the image over
    .module_unload = module_unload,
    .kernel_get = kernel_get,
    .kernel_launch = kernel_launch,
    .code_object_suffixes = code_object_suffixes,
    .stream_launch_host_func = stream_launch_host_func,
    .checker_report = nullptr,
    .kernel_max_group_size = nullptr,
    .device_can_access_peer = nullptr,
    .memory_alloc_async = nullptr,  // stream-ordered allocation: libporta's pool
    .memory_free_async = nullptr,
    .memory_pool_stats = nullptr,
    .memory_pool_set_release_threshold = nullptr,
    .memory_pool_trim = nullptr,
    .kernel_params = kernel_params,
    .device_wait = nullptr,  // a failed command's status stays on its event
};

}  // namespace
}  // namespace porta::level_zero

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  return porta::plugin::enter(host, out_plugin,
                              {.kind = PORTA_PLUGIN_KIND_BACKEND,
                               .name = "level_zero",
                               .version = porta::level_zero::kVersion,
                               .backend = &porta::level_zero::kInterface,
                               .ops = nullptr,
                               .name_in_errors = true});
}
