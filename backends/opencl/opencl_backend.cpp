// The OpenCL backend plugin: any OpenCL 2.1+ device with shared virtual memory (GPUs, and PoCL on
// the CPU, which runs kernels with GPU semantics: a work-item per item, real barriers).
//
// Memory is SVM (clSVMAlloc), so kernels take the same raw pointers as on CUDA, inside structs
// too. A stream is an in-order command queue with profiling; it keeps the event of the last
// command it queued, which answers queries. An event is a marker. Kernels are SPIR-V (devices
// with IL support) or SPIR 1.2 bitcode (devices with cl_khr_spir only, such as PoCL 3); argument
// sizes come from the SPIR-V module (spirv_reader.h), since OpenCL wants a size per argument.
#include <porta/porta_plugin.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "opencl_driver.h"
#include "plugin_kit.h"
#include "plugin_state.h"
#include "spirv_reader.h"

namespace porta::opencl {

using plugin::guarded;
using plugin::log;
using plugin::throw_error;

namespace {

#define PORTA_CL_STR2(x) #x
#define PORTA_CL_STR(x) PORTA_CL_STR2(x)
constexpr const char* kVersion = "porta-opencl " PORTA_CL_STR(PORTA_VERSION_MAJOR) "." PORTA_CL_STR(
    PORTA_VERSION_MINOR) "." PORTA_CL_STR(PORTA_VERSION_PATCH);

// GPU-like limits, reported even where the device allows more (PoCL takes 4096 work-items and
// 1 MiB of local memory per group), so that a launch too large for a GPU fails here too.
constexpr int32_t kMaxGroupItems = 1024;
constexpr int32_t kMaxGroupDims[3] = {1024, 1024, 64};
constexpr int64_t kMaxGridDims[3] = {2147483647, 65535, 65535};
constexpr int32_t kMaxSharedBytes = 64 * 1024;

struct Device {
  cl_device_id id = nullptr;
  cl_context context = nullptr;  // one per platform, shared by its devices
  porta_device_properties_t properties{};
  bool takes_spirv = false;  // clCreateProgramWithIL; otherwise SPIR 1.2 (cl_khr_spir)
  bool fine_grain = false;   // fine-grained buffer SVM: host memory the device reads directly
  bool pocl = false;         // PoCL, whose kernel cache needs KernelCacheGuard
  std::string suffixes;
  size_t svm_alignment = 0;
  size_t max_allocation = 0;  // CL_DEVICE_MAX_MEM_ALLOC_SIZE  // the largest clSVMAlloc takes (the
                              // spec allows PoCL's 128)
  std::mutex mutex;           // guards the allocation lists
  // SVM allocations by the 256-byte aligned address Porta hands out: what clSVMAlloc returned
  // (to free it) and the size. Device memory and fine-grained host memory apart.
  struct Allocation {
    void* base;
    size_t size;
  };
  std::map<void*, Allocation> allocations;
  std::map<void*, Allocation> host_allocations;
  uint64_t allocated = 0;
  std::mutex streams_mutex;  // held while device_synchronize walks the streams
  std::vector<struct Stream*> streams;
};

// A queued host function: the stream's worker runs it once the marker before it completed,
// then releases the work after it (gate).
struct HostTask {
  porta_host_fn_t fn;
  void* user_data;
  cl_event gate;
};

struct Stream {
  int32_t device;
  cl_command_queue queue = nullptr;
  std::mutex mutex;         // orders enqueues with the update of last
  cl_event last = nullptr;  // the last command queued, nullptr when none
  // Host functions run on this thread, started at the first one, so that they never block the
  // driver's callback thread and run in the stream's order.
  std::mutex task_mutex;
  std::condition_variable task_ready;
  std::deque<HostTask> tasks;
  bool stopping = false;
  std::thread worker;
  plugin::HostFunctionErrors host_errors;
};

struct Event {
  int32_t device;
  std::mutex mutex;
  cl_event marker = nullptr;  // nullptr until recorded
};

struct Kernel {
  int32_t device;
  std::string name;
  uint64_t image_hash;  // its module's (Module::image_hash)
  cl_kernel kernel = nullptr;
  spirv::KernelSignature signature;
  std::vector<uint32_t> param_sizes;  // signature.user_param_sizes(), for kernel_params
  std::mutex mutex;  // clSetKernelArg and the enqueue that uses the arguments go together
};

struct Module {
  int32_t device;
  cl_program program = nullptr;
  // The image's bytes, hashed: PoCL's kernel cache tells programs apart by their build, so
  // kernels of one name in two images are two kernels to it, and one image loaded twice one.
  uint64_t image_hash = 0;
  std::map<std::string, spirv::KernelSignature> signatures;  // empty: from clGetKernelArgInfo
  std::mutex mutex;
  std::unordered_map<std::string, std::unique_ptr<Kernel>> kernels;
};

template <typename T>
T device_info(const Driver& d, cl_device_id id, cl_device_info what, const char* name) {
  T value{};
  Driver::check(d.clGetDeviceInfo(id, what, sizeof(value), &value, nullptr),
                std::string("device info ") + name);
  return value;
}

std::string device_string(const Driver& d, cl_device_id id, cl_device_info what) {
  size_t size = 0;
  if (d.clGetDeviceInfo(id, what, 0, nullptr, &size) != CL_SUCCESS || size == 0) return {};
  std::string text(size, '\0');
  if (d.clGetDeviceInfo(id, what, size, text.data(), nullptr) != CL_SUCCESS) return {};
  text.resize(strnlen(text.c_str(), size));
  return text;
}

// PoCL keeps one compiled copy of a kernel per group size and, for grids narrower than 65535
// work-items, per grid width: a launch wider than every copy in its cache compiles another. It
// counts the launches using each copy, but a finished launch gives its count back to the first
// copy of that kernel and group size in the cache, not necessarily the one it took. With launches
// of two widths in flight at once (several streams) a count reaches zero early and PoCL aborts
// the process ("pocl_release_dlhandle_cache: Assertion `found->ref_count > 0'", PoCL 3.1). So on
// PoCL no two copies are ever in use at once: a launch wider than every earlier one of its kernel
// and group size waits in the device's queues (not on the host) for each of them still in flight,
// and later launches of them wait for it. The waits only point at commands queued before, so they
// cannot form a cycle; a kernel widens a few times at most, so nearly every launch waits on
// nothing or one finished event. A kernel is its name in one image (Module::image_hash).
class KernelCacheGuard {
 public:
  // Queues a launch of kernel with these sizes from stream: enqueue(count, waits) queues it after
  // the events waits[0, count) and returns its event, retained for the guard.
  template <typename Enqueue>
  void launch(const Driver& d, const void* stream, const Kernel& kernel, const size_t local[3],
              const size_t global[3], Enqueue&& enqueue) {
    std::lock_guard lock(mutex_);
    Record& r = records_[Key{kernel.image_hash, kernel.name, {local[0], local[1], local[2]}}];
    // PoCL's measure of a grid's width, its third term as PoCL writes it.
    const size_t width = std::max({global[0], global[1], local[2] * local[2]});
    const bool widens = width > r.widest;
    std::vector<cl_event> waits;
    auto wait_for = [&](cl_event& event) {
      if (pending(d, event)) waits.push_back(event);
    };
    if (widens) {
      for (auto& [other, event] : r.last) wait_for(event);
    }
    wait_for(r.widening);
    const cl_event event = enqueue(static_cast<cl_uint>(waits.size()), waits.data());
    if (widens) {
      r.widest = width;
      d.clRetainEvent(event);
      if (r.widening) d.clReleaseEvent(r.widening);
      r.widening = event;
    }
    cl_event& last = r.last[stream];
    if (last) d.clReleaseEvent(last);
    last = event;
    // Streams come and go: forget those whose last launch finished once there are many.
    if (r.last.size() > 64) {
      for (auto it = r.last.begin(); it != r.last.end();) {
        it = pending(d, it->second) ? std::next(it) : r.last.erase(it);
      }
    }
  }

  void release(const Driver& d) noexcept {
    for (auto& [key, r] : records_) {
      for (auto& [stream, event] : r.last) {
        if (event) d.clReleaseEvent(event);
      }
      if (r.widening) d.clReleaseEvent(r.widening);
    }
    records_.clear();
  }

 private:
  struct Key {
    uint64_t image_hash;
    std::string kernel;
    std::array<size_t, 3> local;
    bool operator<(const Key& o) const {
      return std::tie(image_hash, kernel, local) < std::tie(o.image_hash, o.kernel, o.local);
    }
  };
  struct Record {
    size_t widest = 0;
    cl_event widening = nullptr;           // the last launch that widened, until it finishes
    std::map<const void*, cl_event> last;  // each stream's last launch, until it finishes
  };

  // Whether a retained event is still pending; a finished (or failed) one is released and
  // cleared.
  static bool pending(const Driver& d, cl_event& event) {
    if (!event) return false;
    cl_int status = CL_COMPLETE;
    d.clGetEventInfo(event, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(status), &status, nullptr);
    if (status == CL_COMPLETE || status < 0) {
      d.clReleaseEvent(event);
      event = nullptr;
      return false;
    }
    return true;
  }

  std::mutex mutex_;
  std::map<Key, Record> records_;
};

class Backend {
 public:
  explicit Backend(std::unique_ptr<Driver> driver) : driver_(std::move(driver)) {
    const Driver& d = *driver_;
    cl_uint platform_count = 0;
    const cl_int r = d.clGetPlatformIDs(0, nullptr, &platform_count);
    if (r != CL_SUCCESS || platform_count == 0) {
      throw_error(PORTA_ERROR_UNAVAILABLE,
                  "opencl: no OpenCL platform (ICD) is installed" +
                      (r == CL_SUCCESS ? std::string() : ": " + Driver::describe(r)));
    }
    std::vector<cl_platform_id> platforms(platform_count);
    Driver::check(d.clGetPlatformIDs(platform_count, platforms.data(), nullptr), "platforms");
    std::string refused;
    try {
      for (cl_platform_id platform : platforms) open_platform(platform, refused);
    } catch (...) {
      release();
      throw;
    }
    if (devices_.empty()) {
      throw_error(PORTA_ERROR_UNAVAILABLE, "opencl: no usable OpenCL device" +
                                               (refused.empty() ? std::string(" found") : refused));
    }
  }

  ~Backend() { release(); }

  const Driver& driver() const { return *driver_; }
  int32_t device_count() const { return static_cast<int32_t>(devices_.size()); }

  Device& device(int32_t index) {
    if (index < 0 || index >= device_count()) {
      throw_error(PORTA_ERROR_NOT_FOUND, "opencl: no device " + std::to_string(index));
    }
    return *devices_[index];
  }
  const porta_device_properties_t& properties(int32_t index) { return device(index).properties; }
  KernelCacheGuard& kernel_cache_guard() { return kernel_cache_guard_; }

 private:
  void open_platform(cl_platform_id platform, std::string& refused) {
    const Driver& d = *driver_;
    cl_uint count = 0;
    if (d.clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, nullptr, &count) != CL_SUCCESS) return;
    std::vector<cl_device_id> ids(count);
    Driver::check(d.clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, count, ids.data(), nullptr),
                  "devices");
    std::vector<cl_device_id> usable;
    for (cl_device_id id : ids) {
      const std::string name = device_string(d, id, CL_DEVICE_NAME);
      const std::string why = why_unusable(id);
      if (!why.empty()) {
        refused += "; " + name + ": " + why;
        log(PORTA_LOG_INFO, name + " left out: " + why);
        continue;
      }
      usable.push_back(id);
    }
    if (usable.empty()) return;
    cl_int r = CL_SUCCESS;
    const cl_context_properties properties[] = {
        CL_CONTEXT_PLATFORM, reinterpret_cast<cl_context_properties>(platform), 0};
    cl_context context = d.clCreateContext(properties, static_cast<cl_uint>(usable.size()),
                                           usable.data(), nullptr, nullptr, &r);
    Driver::check(r, "context");
    contexts_.push_back(context);
    for (cl_device_id id : usable) open_device(id, context);
  }

  // Empty when the device can serve Porta: SVM, and SPIR-V or SPIR kernels.
  std::string why_unusable(cl_device_id id) const {
    const Driver& d = *driver_;
    cl_device_svm_capabilities svm = 0;
    if (d.clGetDeviceInfo(id, CL_DEVICE_SVM_CAPABILITIES, sizeof(svm), &svm, nullptr) !=
            CL_SUCCESS ||
        !(svm & CL_DEVICE_SVM_COARSE_GRAIN_BUFFER)) {
      return "no shared virtual memory (OpenCL 2.0 SVM), which Porta's device pointers need";
    }
    const std::string il = device_string(d, id, CL_DEVICE_IL_VERSION);
    const std::string extensions = device_string(d, id, CL_DEVICE_EXTENSIONS);
    if (il.find("SPIR-V") == std::string::npos &&
        extensions.find("cl_khr_spir") == std::string::npos) {
      return "takes neither SPIR-V nor SPIR kernels";
    }
    return {};
  }

  void open_device(cl_device_id id, cl_context context) {
    const Driver& d = *driver_;
    auto dev = std::make_unique<Device>();
    dev->id = id;
    dev->context = context;
    dev->takes_spirv =
        device_string(d, id, CL_DEVICE_IL_VERSION).find("SPIR-V") != std::string::npos;
    const auto svm = device_info<cl_device_svm_capabilities>(d, id, CL_DEVICE_SVM_CAPABILITIES,
                                                             "SVM capabilities");
    dev->fine_grain = (svm & CL_DEVICE_SVM_FINE_GRAIN_BUFFER) != 0;
    dev->pocl = device_string(d, id, CL_DEVICE_VERSION).find("PoCL") != std::string::npos;
    const auto align_bits = device_info<cl_uint>(d, id, CL_DEVICE_MEM_BASE_ADDR_ALIGN, "alignment");
    dev->svm_alignment = std::max<size_t>(16, align_bits / 8);
    dev->max_allocation =
        device_info<cl_ulong>(d, id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, "largest allocation");
    dev->suffixes = dev->takes_spirv ? ".spv" : ".spir.bc";

    porta_device_properties_t& p = dev->properties;
    std::memset(&p, 0, sizeof(p));
    p.struct_size = sizeof(p);
    std::snprintf(p.name, sizeof(p.name), "%s", device_string(d, id, CL_DEVICE_NAME).c_str());
    std::snprintf(p.backend, sizeof(p.backend), "opencl");
    std::snprintf(p.architecture, sizeof(p.architecture), "%s",
                  dev->takes_spirv ? "spirv" : "spir");
    p.total_memory = device_info<cl_ulong>(d, id, CL_DEVICE_GLOBAL_MEM_SIZE, "memory size");
    p.compute_units = static_cast<int32_t>(
        device_info<cl_uint>(d, id, CL_DEVICE_MAX_COMPUTE_UNITS, "compute units"));
    const auto group = device_info<size_t>(d, id, CL_DEVICE_MAX_WORK_GROUP_SIZE, "group size");
    p.max_work_group_size = static_cast<int32_t>(std::min<size_t>(group, kMaxGroupItems));
    size_t dims[3] = {1, 1, 1};
    Driver::check(d.clGetDeviceInfo(id, CL_DEVICE_MAX_WORK_ITEM_SIZES, sizeof(dims), dims, nullptr),
                  "device info work-item sizes");
    for (int i = 0; i < 3; ++i) {
      p.max_work_group_dims[i] = static_cast<int32_t>(std::min<size_t>(dims[i], kMaxGroupDims[i]));
      p.max_grid_dims[i] = kMaxGridDims[i];
    }
    const auto local = device_info<cl_ulong>(d, id, CL_DEVICE_LOCAL_MEM_SIZE, "local memory");
    p.shared_memory_per_group = static_cast<int32_t>(std::min<cl_ulong>(local, kMaxSharedBytes));
    p.subgroup_size = static_cast<int32_t>(
        device_info<cl_uint>(d, id, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT, "vector width"));
    p.clock_mhz =
        static_cast<int32_t>(device_info<cl_uint>(d, id, CL_DEVICE_MAX_CLOCK_FREQUENCY, "clock"));
    const std::string extensions = device_string(d, id, CL_DEVICE_EXTENSIONS);
    p.capabilities = PORTA_CAPABILITY_UNIFIED_ADDRESSING;
    if (device_info<cl_device_fp_config>(d, id, CL_DEVICE_DOUBLE_FP_CONFIG, "fp64") != 0) {
      p.capabilities |= PORTA_CAPABILITY_FP64;
    }
    if (extensions.find("cl_khr_fp16") != std::string::npos) {
      p.capabilities |= PORTA_CAPABILITY_FP16;
    }
    const auto type = device_info<cl_device_type>(d, id, CL_DEVICE_TYPE, "type");
    if (type & CL_DEVICE_TYPE_GPU) p.capabilities |= PORTA_CAPABILITY_ASYNC_COPY;
    log(PORTA_LOG_INFO, std::string("device ") + std::to_string(devices_.size()) + ": " + p.name +
                            (dev->takes_spirv ? ", SPIR-V" : ", SPIR 1.2") +
                            (dev->fine_grain ? ", fine-grained SVM" : ", coarse-grained SVM"));
    devices_.push_back(std::move(dev));
  }

  void release() noexcept {
    kernel_cache_guard_.release(*driver_);
    for (cl_context context : contexts_) driver_->clReleaseContext(context);
    contexts_.clear();
  }

  std::unique_ptr<Driver> driver_;
  std::vector<cl_context> contexts_;
  std::vector<std::unique_ptr<Device>> devices_;
  KernelCacheGuard kernel_cache_guard_;
};

using BackendState = plugin::PluginState<Backend>;
Backend& backend_of(porta_backend_context_t context) { return BackendState::of(context); }
Stream& stream_of(void* stream) { return *static_cast<Stream*>(stream); }
Event& event_of(void* event) { return *static_cast<Event*>(event); }

// Queues one command on the stream through enqueue(cl_event* out) and keeps its event as the
// stream's last.
template <typename Enqueue>
void enqueue_on(const Driver& d, Stream& s, Enqueue&& enqueue) {
  std::lock_guard lock(s.mutex);
  cl_event event = nullptr;
  enqueue(&event);
  if (s.last) d.clReleaseEvent(s.last);
  s.last = event;
}

// SUCCESS, NOT_READY, or the failed command's error.
porta_status_t event_status(const Driver& d, cl_event event, const char* what) {
  cl_int status = CL_COMPLETE;
  Driver::check(
      d.clGetEventInfo(event, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(status), &status, nullptr),
      std::string(what) + " status");
  if (status < 0) Driver::check(status, std::string(what) + ": a queued command failed");
  return status == CL_COMPLETE ? PORTA_SUCCESS : PORTA_NOT_READY;
}

// The stream's last event, retained (nullptr when none), to wait on without holding its lock.
cl_event last_event(const Driver& d, Stream& s) {
  std::lock_guard lock(s.mutex);
  if (s.last) d.clRetainEvent(s.last);
  return s.last;
}

void stop_worker(Stream& s) {
  {
    std::lock_guard lock(s.task_mutex);
    s.stopping = true;
  }
  s.task_ready.notify_all();
  if (s.worker.joinable()) s.worker.join();
}

// ---- the slots ----------------------------------------------------------------------------------

porta_status_t initialize(porta_backend_context_t* out_context, int32_t* out_device_count) {
  return BackendState::initialize(out_context, out_device_count,
                                  [] { return std::make_unique<Backend>(Driver::open()); });
}

porta_status_t device_memory_info(porta_backend_context_t context, int32_t device,
                                  uint64_t* out_free, uint64_t* out_total) {
  return guarded("device_memory_info", [&] {
    // OpenCL reports no free memory: the total less what Porta allocated.
    Device& dev = backend_of(context).device(device);
    std::lock_guard lock(dev.mutex);
    *out_total = dev.properties.total_memory;
    *out_free = dev.properties.total_memory - std::min(dev.allocated, dev.properties.total_memory);
    return PORTA_SUCCESS;
  });
}

porta_status_t device_native_handle(porta_backend_context_t context, int32_t device,
                                    void** out_native) {
  return guarded("device_native_handle", [&] {
    *out_native = static_cast<void*>(backend_of(context).device(device).id);  // cl_device_id
    return PORTA_SUCCESS;
  });
}

// Porta promises 256-byte aligned memory; clSVMAlloc may take less (PoCL: 128), so the block is
// over-allocated when needed and its start rounded up.
void* svm_alloc(const Driver& d, Device& dev, cl_svm_mem_flags flags, size_t size,
                std::map<void*, Device::Allocation>& list) {
  constexpr size_t kAlign = 256;
  const size_t align = std::min(kAlign, dev.svm_alignment);
  const size_t extra = align < kAlign ? kAlign - align : 0;
  if (size > dev.max_allocation - extra) return nullptr;
  void* base = d.clSVMAlloc(dev.context, flags, size + extra, static_cast<cl_uint>(align));
  if (!base) return nullptr;
  auto* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(base) + kAlign - 1) &
                                          ~uintptr_t{kAlign - 1});
  std::lock_guard lock(dev.mutex);
  list[aligned] = {base, size};
  return aligned;
}

// Frees what svm_alloc returned; the size it had.
size_t svm_free(const Driver& d, Device& dev, void* ptr,
                std::map<void*, Device::Allocation>& list) {
  Device::Allocation allocation{nullptr, 0};
  {
    std::lock_guard lock(dev.mutex);
    auto it = list.find(ptr);
    if (it == list.end()) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT, "opencl: not an allocation of this device");
    }
    allocation = it->second;
    list.erase(it);
  }
  d.clSVMFree(dev.context, allocation.base);
  return allocation.size;
}

porta_status_t memory_alloc(porta_backend_context_t context, int32_t device, size_t size,
                            void** out_ptr) {
  return guarded("memory_alloc", [&] {
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    void* ptr = svm_alloc(b.driver(), dev, CL_MEM_READ_WRITE, size, dev.allocations);
    if (!ptr) {
      throw_error(PORTA_ERROR_OUT_OF_MEMORY,
                  "opencl: clSVMAlloc of " + std::to_string(size) + " bytes failed");
    }
    std::lock_guard lock(dev.mutex);
    dev.allocated += size;
    *out_ptr = ptr;
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_free(porta_backend_context_t context, int32_t device, void* ptr) {
  return guarded("memory_free", [&] {
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    // libporta waited for the device's work (porta_memory_free), as clSVMFree requires.
    const size_t size = svm_free(b.driver(), dev, ptr, dev.allocations);
    std::lock_guard lock(dev.mutex);
    dev.allocated -= size;
    return PORTA_SUCCESS;
  });
}

porta_status_t host_alloc(porta_backend_context_t context, int32_t device, size_t size,
                          void** out_ptr) {
  return guarded("host_alloc", [&] {
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    // Fine-grained SVM is host memory the device reads in place; without it, plain page-aligned
    // memory, which the driver copies from.
    void* ptr = dev.fine_grain
                    ? svm_alloc(b.driver(), dev, CL_MEM_READ_WRITE | CL_MEM_SVM_FINE_GRAIN_BUFFER,
                                size, dev.host_allocations)
                : size > SIZE_MAX - 4095 ? nullptr
                                         : std::aligned_alloc(4096, (size + 4095) / 4096 * 4096);
    if (!ptr) {
      throw_error(PORTA_ERROR_OUT_OF_MEMORY,
                  "opencl: host allocation of " + std::to_string(size) + " bytes failed");
    }
    *out_ptr = ptr;
    return PORTA_SUCCESS;
  });
}

porta_status_t host_free(porta_backend_context_t context, int32_t device, void* ptr) {
  return guarded("host_free", [&] {
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    if (dev.fine_grain) {
      svm_free(b.driver(), dev, ptr, dev.host_allocations);
    } else {
      std::free(ptr);
    }
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_create(porta_backend_context_t context, int32_t device, void** out_stream) {
  return guarded("stream_create", [&] {
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    auto stream = std::make_unique<Stream>();
    stream->device = device;
    // In order (the default) with profiling, which event timing needs.
    const cl_queue_properties properties[] = {CL_QUEUE_PROPERTIES, CL_QUEUE_PROFILING_ENABLE, 0};
    cl_int r = CL_SUCCESS;
    stream->queue =
        b.driver().clCreateCommandQueueWithProperties(dev.context, dev.id, properties, &r);
    Driver::check(r, "command queue");
    std::lock_guard lock(dev.streams_mutex);
    dev.streams.push_back(stream.get());
    *out_stream = stream.release();
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_destroy(porta_backend_context_t context, void* stream) {
  return guarded("stream_destroy", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    Stream& s = stream_of(stream);
    {
      Device& dev = b.device(s.device);
      std::lock_guard lock(dev.streams_mutex);
      dev.streams.erase(std::find(dev.streams.begin(), dev.streams.end(), &s));
    }
    d.clFinish(s.queue);
    stop_worker(s);
    if (s.last) d.clReleaseEvent(s.last);
    d.clReleaseCommandQueue(s.queue);
    delete &s;
    return PORTA_SUCCESS;
  });
}

// Waits for the stream's work queued before the call: SUCCESS or the failed command's error
// (thrown). The queue is in order, so its last command's event stands for all of it; clFinish
// would also wait for what other threads queue meanwhile, forever while they keep queueing.
porta_status_t synchronize(const Driver& d, Stream& s) {
  cl_event last = last_event(d, s);
  Driver::check(d.clFlush(s.queue), "clFlush");
  if (!last) return PORTA_SUCCESS;
  const cl_int r = d.clWaitForEvents(1, &last);
  porta_status_t status = PORTA_SUCCESS;
  try {
    status = event_status(d, last, "stream");
    if (r != CL_SUCCESS) Driver::check(r, "stream synchronize");
  } catch (...) {
    d.clReleaseEvent(last);
    throw;
  }
  d.clReleaseEvent(last);
  s.host_errors.throw_kept();
  return status;
}

porta_status_t stream_synchronize(porta_backend_context_t context, void* stream) {
  return guarded("stream_synchronize",
                 [&] { return synchronize(backend_of(context).driver(), stream_of(stream)); });
}

porta_status_t stream_query(porta_backend_context_t context, void* stream) {
  return guarded("stream_query", [&] {
    const Driver& d = backend_of(context).driver();
    Stream& s = stream_of(stream);
    d.clFlush(s.queue);  // queued work must reach the device for the answer to change
    std::lock_guard lock(s.mutex);
    return s.last ? event_status(d, s.last, "stream") : PORTA_SUCCESS;
  });
}

porta_status_t stream_wait_event(porta_backend_context_t context, void* stream, void* event) {
  return guarded("stream_wait_event", [&] {
    const Driver& d = backend_of(context).driver();
    Event& e = event_of(event);
    cl_event marker = nullptr;
    {
      std::lock_guard lock(e.mutex);
      if (!e.marker) return PORTA_SUCCESS;  // never recorded: nothing to wait for
      marker = e.marker;
      d.clRetainEvent(marker);
    }
    // One context per platform: a queue waits on any event of its platform's devices.
    Stream& s = stream_of(stream);
    try {
      enqueue_on(d, s, [&](cl_event* out) {
        Driver::check(d.clEnqueueBarrierWithWaitList(s.queue, 1, &marker, out), "wait on event");
      });
    } catch (...) {
      d.clReleaseEvent(marker);
      throw;
    }
    d.clReleaseEvent(marker);
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_native_handle(porta_backend_context_t, void* stream, void** out_native) {
  return guarded("stream_native_handle", [&] {
    *out_native = static_cast<void*>(stream_of(stream).queue);  // cl_command_queue
    return PORTA_SUCCESS;
  });
}

porta_status_t memcpy_async(porta_backend_context_t context, void* stream, void* dst,
                            const void* src, size_t size, porta_copy_kind_t) {
  return guarded("memcpy_async", [&] {
    const Driver& d = backend_of(context).driver();
    Stream& s = stream_of(stream);
    // SVM and host pointers alike: the driver tells them apart.
    enqueue_on(d, s, [&](cl_event* out) {
      Driver::check(d.clEnqueueSVMMemcpy(s.queue, CL_FALSE, dst, src, size, 0, nullptr, out),
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
    enqueue_on(d, s, [&](cl_event* out) {
      Driver::check(d.clEnqueueSVMMemFill(s.queue, dst, &value, 1, size, 0, nullptr, out),
                    "fill of " + std::to_string(size) + " bytes");
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t event_create(porta_backend_context_t context, int32_t device, void** out_event) {
  return guarded("event_create", [&] {
    backend_of(context).device(device);
    auto event = std::make_unique<Event>();
    event->device = device;
    *out_event = event.release();
    return PORTA_SUCCESS;
  });
}

porta_status_t event_destroy(porta_backend_context_t context, void* event) {
  return guarded("event_destroy", [&] {
    Event& e = event_of(event);
    // Waits already queued on the marker hold their own reference.
    if (e.marker) backend_of(context).driver().clReleaseEvent(e.marker);
    delete &e;
    return PORTA_SUCCESS;
  });
}

porta_status_t event_record(porta_backend_context_t context, void* event, void* stream) {
  return guarded("event_record", [&] {
    const Driver& d = backend_of(context).driver();
    Stream& s = stream_of(stream);
    cl_event marker = nullptr;
    enqueue_on(d, s, [&](cl_event* out) {
      Driver::check(d.clEnqueueMarkerWithWaitList(s.queue, 0, nullptr, out), "event record");
      d.clRetainEvent(*out);  // one reference for the stream, one for the event
      marker = *out;
    });
    d.clFlush(s.queue);
    Event& e = event_of(event);
    std::lock_guard lock(e.mutex);
    if (e.marker) d.clReleaseEvent(e.marker);
    e.marker = marker;
    return PORTA_SUCCESS;
  });
}

// The event's marker, retained, or nullptr when it was never recorded.
cl_event marker_of(const Driver& d, Event& e) {
  std::lock_guard lock(e.mutex);
  if (e.marker) d.clRetainEvent(e.marker);
  return e.marker;
}

porta_status_t event_query(porta_backend_context_t context, void* event) {
  return guarded("event_query", [&] {
    const Driver& d = backend_of(context).driver();
    std::lock_guard lock(event_of(event).mutex);
    cl_event marker = event_of(event).marker;
    return marker ? event_status(d, marker, "event") : PORTA_SUCCESS;
  });
}

porta_status_t event_synchronize(porta_backend_context_t context, void* event) {
  return guarded("event_synchronize", [&] {
    const Driver& d = backend_of(context).driver();
    cl_event marker = marker_of(d, event_of(event));
    if (!marker) return PORTA_SUCCESS;
    const cl_int r = d.clWaitForEvents(1, &marker);
    d.clReleaseEvent(marker);
    Driver::check(r, "event synchronize");
    return PORTA_SUCCESS;
  });
}

porta_status_t event_elapsed_ms(porta_backend_context_t context, void* start, void* end,
                                float* out_ms) {
  return guarded("event_elapsed_ms", [&] {
    const Driver& d = backend_of(context).driver();
    cl_ulong times[2] = {0, 0};
    Event* events[2] = {&event_of(start), &event_of(end)};
    for (int i = 0; i < 2; ++i) {
      std::lock_guard lock(events[i]->mutex);
      Driver::check(d.clGetEventProfilingInfo(events[i]->marker, CL_PROFILING_COMMAND_END,
                                              sizeof(cl_ulong), &times[i], nullptr),
                    "event timestamp");
    }
    *out_ms =
        static_cast<float>((static_cast<double>(times[1]) - static_cast<double>(times[0])) / 1e6);
    return PORTA_SUCCESS;
  });
}

// ---- modules ----------------------------------------------------------------------------------

bool is_bitcode(const void* image, size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(image);
  return size >= 4 && bytes[0] == 'B' && bytes[1] == 'C' && bytes[2] == 0xC0 && bytes[3] == 0xDE;
}

std::string build_log(const Driver& d, cl_program program, cl_device_id device) {
  size_t size = 0;
  d.clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size);
  std::string text(size, '\0');
  if (size)
    d.clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, size, text.data(), nullptr);
  text.resize(strnlen(text.c_str(), size));
  return text.size() > 2000 ? text.substr(0, 2000) + "..." : text;
}

// Builds a program from SPIR-V or SPIR 1.2 bitcode for the device. signatures may be empty (SPIR
// bitcode loaded from memory): the kernels' arguments are then taken from clGetKernelArgInfo.
std::unique_ptr<Module> build_module(Backend& b, int32_t device, const void* image, size_t size,
                                     std::map<std::string, spirv::KernelSignature> signatures) {
  const Driver& d = b.driver();
  Device& dev = b.device(device);
  auto module = std::make_unique<Module>();
  module->device = device;
  module->signatures = std::move(signatures);
  module->image_hash =
      std::hash<std::string_view>{}(std::string_view(static_cast<const char*>(image), size));
  cl_int r = CL_SUCCESS;
  const char* options = "";
  if (spirv::is_spirv(image, size)) {
    module->program = d.clCreateProgramWithIL(dev.context, image, size, &r);
  } else if (is_bitcode(image, size)) {
    const auto* bytes = static_cast<const unsigned char*>(image);
    module->program =
        d.clCreateProgramWithBinary(dev.context, 1, &dev.id, &size, &bytes, nullptr, &r);
    // Argument info: the kernels' parameters when no SPIR-V tells them (signature_from_arg_info).
    options = "-x spir -spir-std=1.2 -cl-kernel-arg-info";
  } else {
    throw_error(
        PORTA_ERROR_INVALID_ARGUMENT,
        "opencl: the image is neither SPIR-V nor SPIR bitcode (the kernel library's .spv or "
        ".spir.bc)");
  }
  if (r != CL_SUCCESS) {
    throw_error(r == CL_OUT_OF_HOST_MEMORY || r == CL_OUT_OF_RESOURCES
                    ? PORTA_ERROR_OUT_OF_MEMORY
                    : PORTA_ERROR_INVALID_ARGUMENT,
                "opencl: the driver refuses the " + std::to_string(size) +
                    "-byte image as a program: " + Driver::describe(r));
  }
  r = d.clBuildProgram(module->program, 1, &dev.id, options, nullptr, nullptr);
  if (r != CL_SUCCESS) {
    const std::string text = build_log(d, module->program, dev.id);
    d.clReleaseProgram(module->program);
    // A damaged image is the caller's; one that is whole but does not build for this device is
    // code of another kind or version.
    throw_error(
        r == CL_INVALID_BINARY ? PORTA_ERROR_INVALID_ARGUMENT : PORTA_ERROR_INCOMPATIBLE_VERSION,
        "opencl: building the program for " + std::string(dev.properties.name) +
            " failed: " + Driver::describe(r) + (text.empty() ? "" : ": " + text));
  }
  return module;
}

// A SPIR-V image for a device that takes none is refused before its kernels are read.
void refuse_unless_taken(Backend& b, int32_t device, const void* image, size_t size) {
  const Device& dev = b.device(device);
  if (spirv::is_spirv(image, size) && !dev.takes_spirv) {
    throw_error(PORTA_ERROR_UNSUPPORTED,
                std::string("opencl: ") + dev.properties.name +
                    " takes no SPIR-V (no OpenCL IL support); load the kernel library by its base "
                    "name with porta_module_load, which picks its SPIR 1.2 build (.spir.bc)");
  }
}

std::vector<char> read_whole_file(const std::string& path) {
  std::ifstream input(path, std::ios::binary);
  if (!input) throw_error(PORTA_ERROR_NOT_FOUND, "opencl: cannot read '" + path + "'");
  return std::vector<char>(std::istreambuf_iterator<char>(input), {});
}

porta_status_t module_load_data(porta_backend_context_t context, int32_t device, const void* image,
                                size_t size, void** out_module) {
  return guarded("module_load_data", [&] {
    Backend& b = backend_of(context);
    refuse_unless_taken(b, device, image, size);
    std::map<std::string, spirv::KernelSignature> signatures;
    if (spirv::is_spirv(image, size)) signatures = spirv::read_kernels(image, size);
    *out_module = build_module(b, device, image, size, std::move(signatures)).release();
    return PORTA_SUCCESS;
  });
}

porta_status_t module_load_file(porta_backend_context_t context, int32_t device, const char* path,
                                void** out_module) {
  return guarded("module_load_file", [&] {
    Backend& b = backend_of(context);
    const std::vector<char> image = read_whole_file(path);
    refuse_unless_taken(b, device, image.data(), image.size());
    std::map<std::string, spirv::KernelSignature> signatures;
    const std::string name = path;
    const std::string spir_suffix = ".spir.bc";
    if (spirv::is_spirv(image.data(), image.size())) {
      signatures = spirv::read_kernels(image.data(), image.size());
    } else if (name.size() > spir_suffix.size() &&
               name.compare(name.size() - spir_suffix.size(), spir_suffix.size(), spir_suffix) ==
                   0) {
      // A kernel library's SPIR build: its SPIR-V beside it has the exact signatures (structs
      // passed by value included, which clGetKernelArgInfo cannot size).
      const std::string spv = name.substr(0, name.size() - spir_suffix.size()) + ".spv";
      std::ifstream probe(spv, std::ios::binary);
      if (probe) {
        const std::vector<char> module = read_whole_file(spv);
        signatures = spirv::read_kernels(module.data(), module.size());
      }
    }
    *out_module =
        build_module(b, device, image.data(), image.size(), std::move(signatures)).release();
    return PORTA_SUCCESS;
  });
}

porta_status_t module_unload(porta_backend_context_t context, void* module) {
  return guarded("module_unload", [&] {
    const Driver& d = backend_of(context).driver();
    auto* m = static_cast<Module*>(module);
    for (auto& [name, kernel] : m->kernels) d.clReleaseKernel(kernel->kernel);
    d.clReleaseProgram(m->program);
    delete m;
    return PORTA_SUCCESS;
  });
}

// The size of a by-value argument from its OpenCL C type name ("uint", "float4", "long*"):
// what clGetKernelArgInfo tells of a kernel loaded from SPIR bitcode alone.
uint32_t size_of_type_name(const std::string& type, const std::string& kernel, cl_uint index) {
  if (!type.empty() && type.back() == '*') return sizeof(void*);
  static const std::map<std::string, uint32_t> scalars = {
      {"char", 1}, {"uchar", 1}, {"bool", 1}, {"short", 2}, {"ushort", 2}, {"half", 2},  {"int", 4},
      {"uint", 4}, {"float", 4}, {"long", 8}, {"ulong", 8}, {"double", 8}, {"size_t", 8}};
  size_t digits = type.size();
  while (digits > 0 && std::isdigit(static_cast<unsigned char>(type[digits - 1]))) --digits;
  auto scalar = scalars.find(type.substr(0, digits));
  if (scalar != scalars.end()) {
    const uint32_t lanes = digits == type.size() ? 1 : std::stoul(type.substr(digits));
    return scalar->second * (lanes == 3 ? 4 : lanes);
  }
  throw_error(PORTA_ERROR_UNSUPPORTED,
              "opencl: kernel '" + kernel + "' argument " + std::to_string(index) + " is a '" +
                  type +
                  "', whose size only the SPIR-V module tells: load the kernel library with "
                  "porta_module_load (its .spv beside the .spir.bc)");
}

spirv::KernelSignature signature_from_arg_info(const Driver& d, cl_kernel kernel,
                                               const std::string& name) {
  spirv::KernelSignature signature;
  for (cl_uint i = 0;; ++i) {
    cl_kernel_arg_address_qualifier space = 0;
    const cl_int r = d.clGetKernelArgInfo(kernel, i, CL_KERNEL_ARG_ADDRESS_QUALIFIER, sizeof(space),
                                          &space, nullptr);
    if (r == CL_INVALID_ARG_INDEX) break;
    Driver::check(r, "argument info of kernel '" + name + "'");
    if (space == CL_KERNEL_ARG_ADDRESS_LOCAL) {
      signature.params.push_back({spirv::ParamKind::local_pointer, sizeof(void*)});
    } else if (space == CL_KERNEL_ARG_ADDRESS_GLOBAL || space == CL_KERNEL_ARG_ADDRESS_CONSTANT) {
      signature.params.push_back({spirv::ParamKind::global_pointer, sizeof(void*)});
    } else {
      char type[256] = {};
      Driver::check(
          d.clGetKernelArgInfo(kernel, i, CL_KERNEL_ARG_TYPE_NAME, sizeof(type) - 1, type, nullptr),
          "argument type of kernel '" + name + "'");
      signature.params.push_back({spirv::ParamKind::value, size_of_type_name(type, name, i)});
    }
  }
  return signature;
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
    auto kernel = std::make_unique<Kernel>();
    kernel->device = m->device;
    kernel->name = name;
    kernel->image_hash = m->image_hash;
    if (!m->signatures.empty() && !m->signatures.count(name)) {
      throw_error(PORTA_ERROR_NOT_FOUND,
                  std::string("opencl: the module has no kernel '") + name + "'");
    }
    cl_int r = CL_SUCCESS;
    kernel->kernel = d.clCreateKernel(m->program, name, &r);
    if (r == CL_INVALID_KERNEL_NAME) {
      throw_error(PORTA_ERROR_NOT_FOUND,
                  std::string("opencl: the module has no kernel '") + name + "'");
    }
    Driver::check(r, std::string("kernel '") + name + "'");
    try {
      kernel->signature = m->signatures.empty() ? signature_from_arg_info(d, kernel->kernel, name)
                                                : m->signatures.at(name);
      kernel->param_sizes = kernel->signature.user_param_sizes();
    } catch (...) {
      d.clReleaseKernel(kernel->kernel);
      throw;
    }
    *out_kernel = kernel.get();
    m->kernels.emplace(name, std::move(kernel));
    return PORTA_SUCCESS;
  });
}

// The sizes from the SPIR-V module (or the driver's argument info); SPIR-V carries no names.
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
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    auto* k = static_cast<Kernel*>(kernel);
    Stream& s = stream_of(stream);
    Device& dev = b.device(k->device);
    const porta_launch_config_t& c = *config;
    const auto& params = k->signature.params;
    if (!params.empty() && k->signature.user_param_count() > 0 && !args) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                  "opencl: kernel '" + k->name + "' takes " +
                      std::to_string(k->signature.user_param_count()) + " arguments; args is NULL");
    }
    std::lock_guard lock(k->mutex);
    // The arguments are copied by clSetKernelArg, before this returns, as Porta promises.
    size_t user = 0;
    for (cl_uint i = 0; i < params.size(); ++i) {
      const spirv::Param& p = params[i];
      cl_int r = CL_SUCCESS;
      if (p.kind == spirv::ParamKind::local_pointer) {
        r = d.clSetKernelArg(k->kernel, i, std::max<size_t>(1, c.shared_memory_bytes), nullptr);
      } else if (p.kind == spirv::ParamKind::global_pointer) {
        r = d.clSetKernelArgSVMPointer(k->kernel, i, *static_cast<void* const*>(args[user++]));
      } else {
        r = d.clSetKernelArg(k->kernel, i, p.size, args[user++]);
      }
      Driver::check(r, "kernel '" + k->name + "' argument " + std::to_string(i));
    }
    // Pointers inside structs reach memory the arguments do not name: with coarse-grained SVM
    // the kernel must be told of every allocation it may touch.
    if (!dev.fine_grain) {
      std::vector<void*> pointers;
      {
        std::lock_guard memory(dev.mutex);
        pointers.reserve(dev.allocations.size());
        for (const auto& [ptr, allocation] : dev.allocations) pointers.push_back(allocation.base);
      }
      if (!pointers.empty()) {
        d.clSetKernelExecInfo(k->kernel, CL_KERNEL_EXEC_INFO_SVM_PTRS,
                              pointers.size() * sizeof(void*), pointers.data());
      }
    }
    const size_t local[3] = {c.group[0], c.group[1], c.group[2]};
    const size_t global[3] = {size_t{c.grid[0]} * c.group[0], size_t{c.grid[1]} * c.group[1],
                              size_t{c.grid[2]} * c.group[2]};
    // Queues the launch after waits; on PoCL returns its event, retained for the guard (before
    // another launch on the stream may release the stream's reference).
    auto queue = [&](cl_uint wait_count, const cl_event* waits) {
      cl_event event = nullptr;
      enqueue_on(d, s, [&](cl_event* out) {
        Driver::check(d.clEnqueueNDRangeKernel(s.queue, k->kernel, 3, nullptr, global, local,
                                               wait_count, wait_count ? waits : nullptr, out),
                      "launch of kernel '" + k->name + "'");
        if (dev.pocl) {
          d.clRetainEvent(*out);
          event = *out;
        }
      });
      return event;
    };
    if (dev.pocl) {
      b.kernel_cache_guard().launch(d, &s, *k, local, global, queue);
    } else {
      queue(0, nullptr);
    }
    d.clFlush(s.queue);
    return PORTA_SUCCESS;
  });
}

// ---- host functions -----------------------------------------------------------------------------

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
    s->host_errors.run(task.fn, task.user_data);
    d->clSetUserEventStatus(task.gate, CL_COMPLETE);
    d->clReleaseEvent(task.gate);
  }
}

struct CallbackData {
  Stream* stream;
  HostTask task;
};

void CL_CALLBACK on_marker_complete(cl_event marker, cl_int, void* data) {
  std::unique_ptr<CallbackData> call(static_cast<CallbackData*>(data));
  {
    std::lock_guard lock(call->stream->task_mutex);
    call->stream->tasks.push_back(call->task);
  }
  call->stream->task_ready.notify_one();
  (void)marker;
}

porta_status_t stream_launch_host_func(porta_backend_context_t context, void* stream,
                                       porta_host_fn_t fn, void* user_data) {
  return guarded("stream_launch_host_func", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    Stream& s = stream_of(stream);
    Device& dev = b.device(s.device);
    {
      std::lock_guard lock(s.task_mutex);
      if (!s.worker.joinable()) s.worker = std::thread(run_tasks, &d, &s);
    }
    // marker (after the work before) -> fn on the worker -> gate completes -> the work after.
    cl_int r = CL_SUCCESS;
    cl_event gate = d.clCreateUserEvent(dev.context, &r);
    Driver::check(r, "host function gate");
    cl_event marker = nullptr;
    r = d.clEnqueueMarkerWithWaitList(s.queue, 0, nullptr, &marker);
    if (r != CL_SUCCESS) {
      d.clReleaseEvent(gate);
      Driver::check(r, "host function marker");
    }
    enqueue_on(d, s, [&](cl_event* out) {
      Driver::check(d.clEnqueueBarrierWithWaitList(s.queue, 1, &gate, out), "host function wait");
    });
    auto call = std::make_unique<CallbackData>(CallbackData{&s, HostTask{fn, user_data, gate}});
    r = d.clSetEventCallback(marker, CL_COMPLETE, on_marker_complete, call.get());
    d.clReleaseEvent(marker);
    if (r != CL_SUCCESS) {
      d.clSetUserEventStatus(gate, CL_COMPLETE);
      d.clReleaseEvent(gate);
      Driver::check(r, "host function callback");
    }
    call.release();
    d.clFlush(s.queue);
    return PORTA_SUCCESS;
  });
}

porta_status_t device_synchronize(porta_backend_context_t context, int32_t device) {
  return guarded("device_synchronize", [&] {
    // All work is queued on streams: wait for each, and report the first failure.
    Backend& b = backend_of(context);
    Device& dev = b.device(device);
    std::lock_guard lock(dev.streams_mutex);
    for (Stream* s : dev.streams) synchronize(b.driver(), *s);
    return PORTA_SUCCESS;
  });
}

porta_status_t code_object_suffixes(porta_backend_context_t context, int32_t device,
                                    const char** out_suffixes) {
  return guarded("code_object_suffixes", [&] {
    *out_suffixes = backend_of(context).device(device).suffixes.c_str();
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
    .module_load_file = module_load_file,
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
}  // namespace porta::opencl

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  return porta::plugin::enter(host, out_plugin,
                              {.kind = PORTA_PLUGIN_KIND_BACKEND,
                               .name = "opencl",
                               .version = porta::opencl::kVersion,
                               .backend = &porta::opencl::kInterface,
                               .ops = nullptr,
                               .name_in_errors = true});
}
