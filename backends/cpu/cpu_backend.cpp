// The CPU backend plugin: the entry point, the interface table, and the context that owns every
// object the plugin hands out. The device is the host itself; streams are worker threads, kernels
// are work-group functions from shared objects run on one shared thread pool.
#include <porta/porta_plugin.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "cpu_device.h"
#include "cpu_module.h"
#include "cpu_stream.h"
#include "hazards.h"
#include "plugin_kit.h"
#include "plugin_state.h"
#include "thread_pool.h"

// The backend name the plugin answers to. The tests build the same code a second time under
// another name, to have devices of two backends on any machine.
#ifndef PORTA_CPU_PLUGIN_NAME
#define PORTA_CPU_PLUGIN_NAME "cpu"
#endif

namespace porta::cpu {

using plugin::guarded;
using plugin::log;
using plugin::set_error_message;
using plugin::throw_error;

namespace {

#define PORTA_CPU_STR2(x) #x
#define PORTA_CPU_STR(x) PORTA_CPU_STR2(x)
#define PORTA_CPU_VERSION            \
  PORTA_CPU_STR(PORTA_VERSION_MAJOR) \
  "." PORTA_CPU_STR(PORTA_VERSION_MINOR) "." PORTA_CPU_STR(PORTA_VERSION_PATCH)
constexpr const char* kVersion = "porta-cpu " PORTA_CPU_VERSION;

// The live streams, owned here so device_synchronize can reach every stream of a device.
template <typename T>
class Registry {
 public:
  T* add(std::shared_ptr<T> object) {
    std::lock_guard lock(mutex_);
    T* raw = object.get();
    objects_.emplace(raw, std::move(object));
    return raw;
  }
  std::shared_ptr<T> remove(void* raw) {
    std::lock_guard lock(mutex_);
    auto it = objects_.find(static_cast<T*>(raw));
    if (it == objects_.end()) return nullptr;
    std::shared_ptr<T> object = std::move(it->second);
    objects_.erase(it);
    return object;
  }
  std::vector<std::shared_ptr<T>> snapshot() const {
    std::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<T>> objects;
    objects.reserve(objects_.size());
    for (const auto& [raw, object] : objects_) objects.push_back(object);
    return objects;
  }
  // Releases every object, outside the lock. Never allocates: it runs in ~Backend, also when
  // memory has run out.
  void remove_all() noexcept {
    std::unordered_map<T*, std::shared_ptr<T>> objects;
    {
      std::lock_guard lock(mutex_);
      objects.swap(objects_);
    }
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<T*, std::shared_ptr<T>> objects_;
};

// How kernels run (PORTA_CPU_MODE, checked by libporta): "fast" (the .cpu-<isa>.so builds),
// "simt" or "racecheck" (those builds of every kernel library). The device's architecture names
// the SIMT modes, so that porta_module_load picks their builds and op plugins plan as for a GPU.
porta_device_properties_t properties_for_mode(unsigned threads) {
  porta_device_properties_t properties = probe_properties(threads);
  const char* mode = plugin::setting("cpu_mode");
  if (mode && (std::strcmp(mode, "simt") == 0 || std::strcmp(mode, "racecheck") == 0)) {
    std::snprintf(properties.architecture, sizeof(properties.architecture), "%s", mode);
    properties.subgroup_size = 1;  // a work-item is a fiber: no lanes shared between items
  }
  return properties;
}

// One device: a share of the host's CPUs with its own thread pool. Its streams' workers and its
// pool threads are bound to those CPUs, so devices compute side by side without contending.
class Device {
 public:
  explicit Device(std::vector<int> cpus)
      : cpus_(std::move(cpus)),
        properties_(properties_for_mode(static_cast<unsigned>(cpus_.size()))),
        // The stream worker that launches a grid runs work-groups itself (parallel_for), so
        // threads - 1 pool threads plus that worker fill the share without oversubscribing it
        // when one stream computes. Streams launching at the same time each add their worker,
        // which the OS time-slices; their jobs still progress independently.
        pool_(cpus_) {}

  const std::vector<int>& cpus() const { return cpus_; }
  const porta_device_properties_t& properties() const { return properties_; }
  ThreadPool& pool() { return pool_; }

 private:
  std::vector<int> cpus_;
  porta_device_properties_t properties_;
  ThreadPool pool_;
};

// A stream and the device whose pool runs its kernels.
struct BoundStream : std::enable_shared_from_this<BoundStream> {
  explicit BoundStream(Device& owner) : device(&owner) {}
  Device* device;
  CpuStream queue;
};

class Backend {
 public:
  explicit Backend(unsigned device_count) {
    for (std::vector<int>& cpus : split_cpus(device_count)) {
      devices_.push_back(std::make_unique<Device>(std::move(cpus)));
    }
  }

  // libporta tracks every stream, event, module and allocation and releases them all before
  // shutdown, so the backend keeps only what its own job needs: its streams (device_synchronize
  // waits for them) and each allocation's size (unmapping it with its guard page into a reserved
  // freed range, and the race checker's reports). Events and modules are owned by their handles.
  // Streams are joined here all the same, before the pools they run on go.
  ~Backend() { streams_.remove_all(); }

  int32_t device_count() const { return static_cast<int32_t>(devices_.size()); }
  // libporta checks device indices; this only keeps a wrong one from reaching the host.
  Device& device(int32_t index) {
    if (index < 0 || index >= device_count()) {
      throw_error(PORTA_ERROR_NOT_FOUND, "device " + std::to_string(index) +
                                             ": the cpu backend has " +
                                             std::to_string(device_count()) + " device(s)");
    }
    return *devices_[index];
  }
  const porta_device_properties_t& properties(int32_t index) { return device(index).properties(); }

  // Host memory is one pool for every device: all of it is theirs to allocate.
  void* allocate(size_t size, const char* what) {
    void* ptr = cpu::allocate(size, devices_.front()->properties().total_memory, what);
    try {
      std::lock_guard lock(allocations_mutex_);
      allocations_.emplace(reinterpret_cast<uintptr_t>(ptr), size);
    } catch (...) {
      deallocate(ptr, size);
      throw;
    }
    return ptr;
  }
  void release(void* ptr) {
    size_t size = 0;
    {
      std::lock_guard lock(allocations_mutex_);
      auto it = allocations_.find(reinterpret_cast<uintptr_t>(ptr));
      if (it == allocations_.end())
        throw_error(PORTA_ERROR_INVALID_ARGUMENT, "not an allocation of the cpu backend");
      size = it->second;
      allocations_.erase(it);
    }
    deallocate(ptr, size);
  }

  // The allocation holding address, for the race checker's reports.
  bool find_allocation(uintptr_t address, uintptr_t& base, size_t& size) {
    std::lock_guard lock(allocations_mutex_);
    auto it = allocations_.upper_bound(address);
    if (it == allocations_.begin()) return false;
    --it;
    if (address - it->first >= std::max<size_t>(it->second, 1)) return false;
    base = it->first;
    size = it->second;
    return true;
  }
  HazardLog& hazards() { return hazards_; }

  Registry<BoundStream>& streams() { return streams_; }

 private:
  std::vector<std::unique_ptr<Device>> devices_;  // destroyed after the registries: streams use
                                                  // their pools
  std::mutex allocations_mutex_;
  std::map<uintptr_t, size_t> allocations_;  // base -> size
  HazardLog hazards_{[this](uintptr_t address, uintptr_t& base, size_t& size) {
    return find_allocation(address, base, size);
  }};
  Registry<BoundStream> streams_;
};

using BackendState = plugin::PluginState<Backend>;
Backend& backend_of(porta_backend_context_t context) { return BackendState::of(context); }
BoundStream& bound_of(void* stream) { return *static_cast<BoundStream*>(stream); }
CpuStream& stream_of(void* stream) { return bound_of(stream).queue; }
CpuEvent& event_of(void* event) { return *static_cast<CpuEvent*>(event); }

// An error a queued operation reported, surfacing on the thread that collects it.
porta_status_t surface(porta_status_t status, const std::string& message) {
  if (status != PORTA_SUCCESS && status != PORTA_NOT_READY) set_error_message(message);
  return status;
}

// ---- the slots ----------------------------------------------------------------------------------

porta_status_t initialize(porta_backend_context_t* out_context, int32_t* out_device_count) {
  return BackendState::initialize(out_context, out_device_count, [] {
    // libporta has checked the value; an older libporta passes the environment unchecked.
    const char* devices = plugin::setting("PORTA_CPU_DEVICES");
    const int requested = devices ? std::atoi(devices) : 1;
    if (requested < 1) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT, std::string("PORTA_CPU_DEVICES='") + devices +
                                                    "' is not a device count of 1 or more");
    }
    auto backend = std::make_unique<Backend>(static_cast<unsigned>(requested));
    for (int32_t index = 0; index < backend->device_count(); ++index) {
      Device& device = backend->device(index);
      const porta_device_properties_t& p = device.properties();
      log(PORTA_LOG_INFO, "device " + std::to_string(index) + ": " + p.name + ", " +
                              p.architecture + ", " + std::to_string(device.pool().thread_count()) +
                              " pool threads");
    }
    return backend;
  });
}

porta_status_t device_memory_info(porta_backend_context_t context, int32_t device,
                                  uint64_t* out_free, uint64_t* out_total) {
  return guarded("device_memory_info", [&] {
    uint64_t total = backend_of(context).device(device).properties().total_memory;
    *out_free = std::min(available_memory(), total);
    *out_total = total;
    return PORTA_SUCCESS;
  });
}

porta_status_t device_synchronize(porta_backend_context_t context, int32_t device) {
  return guarded("device_synchronize", [&] {
    const Device* owner = &backend_of(context).device(device);
    porta_status_t first = PORTA_SUCCESS;
    std::string first_message;
    for (const auto& stream : backend_of(context).streams().snapshot()) {
      if (stream->device != owner) continue;
      std::string message;
      porta_status_t status = stream->queue.synchronize(&message);
      if (status != PORTA_SUCCESS && first == PORTA_SUCCESS) {
        first = status;
        first_message = std::move(message);
      }
    }
    return surface(first, first_message);
  });
}

porta_status_t device_wait(porta_backend_context_t context, int32_t device) {
  return guarded("device_wait", [&] {
    const Device* owner = &backend_of(context).device(device);
    for (const auto& stream : backend_of(context).streams().snapshot()) {
      if (stream->device == owner) stream->queue.wait_idle();
    }
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_alloc(porta_backend_context_t context, int32_t device, size_t size,
                            void** out_ptr) {
  return guarded("memory_alloc", [&] {
    backend_of(context).device(device);
    *out_ptr = backend_of(context).allocate(size, "memory_alloc");
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_free(porta_backend_context_t context, int32_t, void* ptr) {
  return guarded("memory_free", [&] {
    backend_of(context).release(ptr);
    return PORTA_SUCCESS;
  });
}

porta_status_t host_alloc(porta_backend_context_t context, int32_t device, size_t size,
                          void** out_ptr) {
  return guarded("host_alloc", [&] {
    backend_of(context).device(device);
    // Host memory is already what the device reads: pinning would buy nothing.
    *out_ptr = backend_of(context).allocate(size, "host_alloc");
    return PORTA_SUCCESS;
  });
}

porta_status_t host_free(porta_backend_context_t context, int32_t, void* ptr) {
  return guarded("host_free", [&] {
    backend_of(context).release(ptr);
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_create(porta_backend_context_t context, int32_t device, void** out_stream) {
  return guarded("stream_create", [&] {
    Device& owner = backend_of(context).device(device);
    std::shared_ptr<BoundStream> stream;
    try {
      stream = std::make_shared<BoundStream>(owner);
    } catch (const std::system_error& e) {
      // No thread for the worker: the process is out of threads or memory for their stacks.
      throw_error(
          PORTA_ERROR_OUT_OF_MEMORY,
          std::string("stream_create: cannot start the stream's worker thread: ") + e.what());
    }
    // The worker binds itself to the device's CPUs before any other task; waiting for that
    // leaves the new stream idle, as a new stream must be.
    const std::vector<int>& cpus = owner.cpus();
    stream->queue.enqueue([&cpus](ScratchBuffer&) { bind_current_thread(cpus); }, nullptr,
                          Runs::on_worker);
    std::string ignored;
    stream->queue.synchronize(&ignored);
    *out_stream = backend_of(context).streams().add(std::move(stream));
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_destroy(porta_backend_context_t context, void* stream) {
  return guarded("stream_destroy", [&] {
    // Dropping the last reference joins the worker; device_synchronize may briefly hold another.
    backend_of(context).streams().remove(stream);
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_synchronize(porta_backend_context_t, void* stream) {
  return guarded("stream_synchronize", [&] {
    std::string message;
    porta_status_t status = stream_of(stream).synchronize(&message);
    return surface(status, message);
  });
}

porta_status_t stream_query(porta_backend_context_t, void* stream) {
  return guarded("stream_query", [&] {
    std::string message;
    porta_status_t status = stream_of(stream).query(&message);
    return surface(status, message);
  });
}

porta_status_t stream_wait_event(porta_backend_context_t, void* stream, void* event) {
  return guarded("stream_wait_event", [&] {
    stream_of(stream).wait(event_of(event));
    return PORTA_SUCCESS;
  });
}

// Copies of this size or more are split over the pool: one core cannot saturate the memory
// bandwidth of a multi-channel machine. Smaller ones are not worth waking the pool for.
constexpr size_t kParallelBytes = size_t{8} << 20;
constexpr size_t kParallelBlock = size_t{1} << 20;

bool overlaps(const void* a, const void* b, size_t size) {
  auto x = reinterpret_cast<uintptr_t>(a);
  auto y = reinterpret_cast<uintptr_t>(b);
  return x < y + size && y < x + size;
}

porta_status_t memcpy_async(porta_backend_context_t, void* stream, void* dst, const void* src,
                            size_t size, porta_copy_kind_t) {
  return guarded("memcpy_async", [&] {
    ThreadPool& pool = bound_of(stream).device->pool();
    stream_of(stream).enqueue([dst, src, size, &pool](ScratchBuffer& scratch) {
      if (size < kParallelBytes || overlaps(dst, src, size)) {
        std::memmove(dst, src, size);  // overlapping ranges (within one allocation) stay correct
        return;
      }
      auto* d = static_cast<char*>(dst);
      auto* s = static_cast<const char*>(src);
      pool.parallel_for((size + kParallelBlock - 1) / kParallelBlock,
                        [=](uint64_t begin, uint64_t end, ScratchBuffer&) {
                          size_t from = begin * kParallelBlock;
                          size_t to = std::min(size, end * kParallelBlock);
                          std::memcpy(d + from, s + from, to - from);
                        },
                        scratch);
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t memset_async(porta_backend_context_t, void* stream, void* dst, uint8_t value,
                            size_t size) {
  return guarded("memset_async", [&] {
    ThreadPool& pool = bound_of(stream).device->pool();
    stream_of(stream).enqueue([dst, value, size, &pool](ScratchBuffer& scratch) {
      if (size < kParallelBytes) {
        std::memset(dst, value, size);
        return;
      }
      auto* d = static_cast<char*>(dst);
      pool.parallel_for((size + kParallelBlock - 1) / kParallelBlock,
                        [=](uint64_t begin, uint64_t end, ScratchBuffer&) {
                          size_t from = begin * kParallelBlock;
                          size_t to = std::min(size, end * kParallelBlock);
                          std::memset(d + from, value, to - from);
                        },
                        scratch);
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t event_create(porta_backend_context_t context, int32_t device, void** out_event) {
  return guarded("event_create", [&] {
    backend_of(context).device(device);
    *out_event = new CpuEvent();
    return PORTA_SUCCESS;
  });
}

porta_status_t event_destroy(porta_backend_context_t, void* event) {
  return guarded("event_destroy", [&] {
    // Waits already queued hold the marker itself, not the event.
    delete &event_of(event);
    return PORTA_SUCCESS;
  });
}

porta_status_t event_record(porta_backend_context_t, void* event, void* stream) {
  return guarded("event_record", [&] {
    // The marker knows its stream through the registry's ownership, never keeping it alive.
    const std::shared_ptr<BoundStream> bound = bound_of(stream).shared_from_this();
    bound->queue.record(event_of(event), std::shared_ptr<CpuStream>(bound, &bound->queue));
    return PORTA_SUCCESS;
  });
}

porta_status_t event_query(porta_backend_context_t, void* event) {
  return guarded("event_query", [&] {
    std::shared_ptr<Marker> marker = event_of(event).latest();
    return !marker || marker->is_complete() ? PORTA_SUCCESS : PORTA_NOT_READY;
  });
}

porta_status_t event_synchronize(porta_backend_context_t, void* event) {
  return guarded("event_synchronize", [&] {
    std::shared_ptr<Marker> marker = event_of(event).latest();
    if (!marker) return PORTA_SUCCESS;
    // The host waits: it runs the stream's work up to the marker itself, as a synchronize does.
    if (std::shared_ptr<CpuStream> stream = marker->stream()) {
      stream->run_until(*marker);
    } else {
      marker->wait();  // its stream is gone, so drained: complete
    }
    return PORTA_SUCCESS;
  });
}

porta_status_t event_elapsed_ms(porta_backend_context_t, void* start, void* end, float* out_ms) {
  return guarded("event_elapsed_ms", [&] {
    std::shared_ptr<Marker> first = event_of(start).latest();
    std::shared_ptr<Marker> last = event_of(end).latest();
    if (!first || !last) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT, "event_elapsed_ms: event never recorded");
    }
    if (!first->is_complete() || !last->is_complete()) return PORTA_NOT_READY;
    std::chrono::duration<double, std::milli> elapsed = last->time() - first->time();
    *out_ms = static_cast<float>(elapsed.count());
    return PORTA_SUCCESS;
  });
}

// A module for the device's mode: in racecheck mode one without the checker (a fast or simt
// build, loaded by its full name) would run unchecked and report a clean run.
CpuModule* for_mode(const Device& device, std::unique_ptr<CpuModule> module) {
  if (std::strcmp(device.properties().architecture, "racecheck") == 0 && !module->checked()) {
    throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION,
                module->origin() +
                    ": not a racecheck build, which PORTA_CPU_MODE=racecheck needs to check its "
                    "kernels (a kernel library loaded by its base name picks its "
                    ".cpu-racecheck.so)");
  }
  return module.release();
}

porta_status_t module_load_data(porta_backend_context_t context, int32_t device, const void* image,
                                size_t size, void** out_module) {
  return guarded("module_load_data", [&] {
    *out_module = for_mode(backend_of(context).device(device), CpuModule::load_data(image, size));
    return PORTA_SUCCESS;
  });
}

porta_status_t module_load_file(porta_backend_context_t context, int32_t device, const char* path,
                                void** out_module) {
  return guarded("module_load_file", [&] {
    *out_module = for_mode(backend_of(context).device(device), CpuModule::load_file(path));
    return PORTA_SUCCESS;
  });
}

porta_status_t module_unload(porta_backend_context_t, void* module) {
  return guarded("module_unload", [&] {
    delete static_cast<CpuModule*>(module);
    return PORTA_SUCCESS;
  });
}

porta_status_t kernel_max_group_size(porta_backend_context_t, void* kernel, int32_t* out_max) {
  return guarded("kernel_max_group_size", [&] {
    // 0: no limit of its own; libporta then takes the device's.
    const uint32_t max = static_cast<CpuKernel*>(kernel)->max_group_size();
    *out_max = static_cast<int32_t>(std::min<uint32_t>(max, INT32_MAX));
    return PORTA_SUCCESS;
  });
}

// The sizes come from the kernel's descriptor, the parameter list from beside it.
porta_status_t kernel_params(porta_backend_context_t, void* kernel, uint32_t* out_count,
                             const uint32_t** out_sizes, const char** out_signature) {
  return guarded("kernel_params", [&] {
    const auto* k = static_cast<CpuKernel*>(kernel);
    *out_count = static_cast<uint32_t>(k->param_sizes().size());
    *out_sizes = k->param_sizes().data();
    *out_signature = k->signature();
    return PORTA_SUCCESS;
  });
}

porta_status_t kernel_get(porta_backend_context_t, void* module, const char* name,
                          void** out_kernel) {
  return guarded("kernel_get", [&] {
    *out_kernel = static_cast<CpuModule*>(module)->kernel(name);
    return PORTA_SUCCESS;
  });
}

porta_status_t kernel_launch(porta_backend_context_t context, void* kernel,
                             const porta_launch_config_t* config, void** args, void* stream) {
  return guarded("kernel_launch", [&] {
    ThreadPool& pool = bound_of(stream).device->pool();
    Task task = static_cast<const CpuKernel*>(kernel)->make_launch(*config, args, pool,
                                                                   backend_of(context).hazards());
    stream_of(stream).enqueue(std::move(task));
    const uint32_t* grid = config->grid;
    if (uint64_t{grid[0]} * grid[1] * grid[2] > 1) pool.expect_work();
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_launch_host_func(porta_backend_context_t, void* stream, porta_host_fn_t fn,
                                      void* user_data) {
  return guarded("stream_launch_host_func", [&] {
    // Runs on the stream's worker, in order with the stream's other tasks.
    stream_of(stream).enqueue([fn, user_data](ScratchBuffer&) { fn(user_data); }, nullptr,
                              Runs::on_worker);
    return PORTA_SUCCESS;
  });
}

porta_status_t code_object_suffixes(porta_backend_context_t context, int32_t device,
                                    const char** out_suffixes) {
  return guarded("code_object_suffixes", [&] {
    const porta_device_properties_t& p = backend_of(context).device(device).properties();
    *out_suffixes = cpu::code_object_suffixes(p.architecture);
    return PORTA_SUCCESS;
  });
}

porta_status_t device_can_access_peer(porta_backend_context_t context, int32_t device, int32_t peer,
                                      int32_t* out_direct) {
  return guarded("device_can_access_peer", [&] {
    backend_of(context).device(device);
    backend_of(context).device(peer);
    // Every device's memory is this process's host memory, and every stream may wait on any
    // marker: copies and waits between devices are direct.
    *out_direct = 1;
    return PORTA_SUCCESS;
  });
}

porta_status_t checker_report(porta_backend_context_t context, char* out_text, size_t capacity,
                              size_t* out_length, size_t* out_count) {
  return guarded("checker_report", [&] {
    size_t count = 0;
    const std::string text = backend_of(context).hazards().report(count);
    if (capacity > 0) {
      const size_t n = std::min(text.size(), capacity - 1);
      std::memcpy(out_text, text.data(), n);
      out_text[n] = '\0';
    }
    *out_length = text.size();
    *out_count = count;
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
    .device_native_handle = nullptr,  // the host has no native device handle: UNSUPPORTED
    .memory_alloc = memory_alloc,
    .memory_free = memory_free,
    .host_alloc = host_alloc,
    .host_free = host_free,
    .stream_create = stream_create,
    .stream_destroy = stream_destroy,
    .stream_synchronize = stream_synchronize,
    .stream_query = stream_query,
    .stream_wait_event = stream_wait_event,
    .stream_native_handle = nullptr,  // streams are Porta's own: UNSUPPORTED
    .memcpy_async = memcpy_async,
    .memset_async = memset_async,
    .event_create = event_create,
    .event_destroy = event_destroy,
    .event_record = event_record,
    .event_query = event_query,
    .event_synchronize = event_synchronize,
    .event_elapsed_ms = event_elapsed_ms,
    .module_load_data = module_load_data,
    .module_load_file = module_load_file,
    .module_unload = module_unload,
    .kernel_get = kernel_get,
    .kernel_launch = kernel_launch,
    .code_object_suffixes = code_object_suffixes,
    .stream_launch_host_func = stream_launch_host_func,
    .checker_report = checker_report,
    .kernel_max_group_size = kernel_max_group_size,
    .device_can_access_peer = device_can_access_peer,
    .memory_alloc_async = nullptr,  // stream-ordered allocation: libporta's pool
    .memory_free_async = nullptr,
    .memory_pool_stats = nullptr,
    .memory_pool_set_release_threshold = nullptr,
    .memory_pool_trim = nullptr,
    .kernel_params = kernel_params,
    .device_wait = device_wait,
};

}  // namespace
}  // namespace porta::cpu

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  return porta::plugin::enter(host, out_plugin,
                              {.kind = PORTA_PLUGIN_KIND_BACKEND,
                               .name = PORTA_CPU_PLUGIN_NAME,
                               .version = porta::cpu::kVersion,
                               .backend = &porta::cpu::kInterface,
                               .ops = nullptr,
                               .name_in_errors = false});
}
