// The CUDA and HIP backend plugin, one source for both (gpu_vendor.h maps the names). Streams,
// events, modules and kernels are the driver's own objects, wrapped only to remember their
// device; the driver does the queueing, so there is no worker thread here.
#include <porta/porta_kernel.h>
#include <porta/porta_plugin.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "gpu_driver.h"
#include "gpu_image.h"
#include "gpu_vendor.h"
#include "plugin_kit.h"
#include "plugin_state.h"

namespace porta::gpu {

using plugin::guarded;
using plugin::log;
using plugin::set_error_message;
using plugin::throw_error;

namespace {

#define PORTA_GPU_STR2(x) #x
#define PORTA_GPU_STR(x) PORTA_GPU_STR2(x)
#define PORTA_GPU_VERSION            \
  PORTA_GPU_STR(PORTA_VERSION_MAJOR) \
  "." PORTA_GPU_STR(PORTA_VERSION_MINOR) "." PORTA_GPU_STR(PORTA_VERSION_PATCH)
#if defined(PORTA_GPU_HIP)
constexpr const char* kVersion = "porta-hip " PORTA_GPU_VERSION;
constexpr const char* kInitName = "hipInit";
#else
constexpr const char* kInitName = "cuInit";
constexpr const char* kVersion = "porta-cuda " PORTA_GPU_VERSION;
#endif

struct Device {
  device_t handle{};
  porta_device_properties_t properties{};
  std::string suffixes;  // code_object_suffixes
#if !defined(PORTA_GPU_HIP)
  // The primary context, retained at the device's first use (Backend::context_of), not at
  // initialisation: retaining costs memory on the GPU, and a GPU in exclusive-process or
  // prohibited mode refuses, which must not make the other GPUs unusable.
  std::atomic<CUcontext> context{nullptr};
  std::string unusable;  // why the device cannot be used, once it refused (under contexts_mutex_)
#endif
};

// The driver's stream is created at the stream's first use (native), not at stream_create:
// libporta creates every device's default stream at initialisation, and creating a driver stream
// would retain the device's context there (see Device::context).
struct Stream {
  explicit Stream(int32_t device) : device(device) {}
  const int32_t device;
  std::atomic<stream_t> stream{nullptr};
  std::mutex mutex;  // the creation

  // The driver's stream; the device's context is current (Backend::Scope).
  stream_t native(const Driver& d) {
    if (stream_t created = stream.load(std::memory_order_acquire)) return created;
    std::lock_guard lock(mutex);
    if (stream_t created = stream.load(std::memory_order_relaxed)) return created;
    stream_t created = nullptr;
    // Non-blocking: no implicit synchronisation with the legacy default stream, which Porta's
    // streams (its default stream included) never rely on.
    d.check(d.stream_create(&created, kStreamNonBlocking), "stream create");
    stream.store(created, std::memory_order_release);
    return created;
  }
  // Whether there is a driver stream yet: one never used has no work to wait for.
  bool used() const { return stream.load(std::memory_order_acquire) != nullptr; }
};

struct Event {
  int32_t device;
  event_t event;
};

struct Kernel {
  int32_t device;
  function_t function;
  // The parameters the image records beside the kernel (read_params), for kernel_params.
  bool params_recorded = false;
  std::vector<uint32_t> param_sizes;
  std::string signature;
};

struct Module {
  int32_t device;
  module_t module;
  // The image the driver was given. HIP does not promise to copy it in hipModuleLoadData, so it
  // lives as long as the module.
  std::vector<uint64_t> image;
  std::mutex mutex;  // kernel_get may run on several threads at once
  std::unordered_map<std::string, std::unique_ptr<Kernel>> kernels;
};

std::string to_string_mb(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// Which data types and units a device has, from its architecture.
uint32_t capabilities_of(const std::string& architecture, bool unified, bool async_copy) {
  // Freed device memory leaves the process's address space rather than joining the host's heap
  // (the driver may hand it to a later mmap, which libporta then sees as host memory).
  uint32_t caps = PORTA_CAPABILITY_FP64 | PORTA_CAPABILITY_RESERVED_ADDRESSES;
  if (unified) caps |= PORTA_CAPABILITY_UNIFIED_ADDRESSING;
  if (async_copy) caps |= PORTA_CAPABILITY_ASYNC_COPY;
#if defined(PORTA_GPU_HIP)
  auto starts = [&](const char* prefix) { return architecture.rfind(prefix, 0) == 0; };
  caps |= PORTA_CAPABILITY_FP16;
  // bf16 arithmetic and matrix units: CDNA2 and later, RDNA3 and later (WMMA); MI100 (gfx908)
  // has matrix cores but no bf16 dot instructions.
  const bool cdna2_or_later = starts("gfx90a") || starts("gfx94") || starts("gfx95");
  const bool rdna3_or_later = starts("gfx11") || starts("gfx12");
  if (cdna2_or_later || rdna3_or_later) caps |= PORTA_CAPABILITY_BF16;
  if (cdna2_or_later || rdna3_or_later || starts("gfx908")) {
    caps |= PORTA_CAPABILITY_MATRIX_CORES;
  }
#else
  const int cc = std::stoi(architecture.substr(3));  // "sm_90" -> 90
  if (cc >= 53) caps |= PORTA_CAPABILITY_FP16;
  if (cc >= 80) caps |= PORTA_CAPABILITY_BF16;
  if (cc >= 70) caps |= PORTA_CAPABILITY_MATRIX_CORES;
#endif
  return caps;
}

class Backend {
 public:
  explicit Backend(std::unique_ptr<Driver> driver) : driver_(std::move(driver)) {
    const Driver& d = *driver_;
    // Any failure to start the driver means the backend cannot be used on this machine.
    if (result_t r = d.init(0); r != kSuccess) {
      throw_error(PORTA_ERROR_UNAVAILABLE, std::string(kBackendName) + ": " + d.identity() +
                                               " loaded, but " + kInitName +
                                               " failed: " + d.describe(r));
    }
    int count = 0;
    if (result_t r = d.device_get_count(&count); r != kSuccess) {
      throw_error(PORTA_ERROR_UNAVAILABLE,
                  std::string(kBackendName) + ": cannot count devices: " + d.describe(r));
    }
    if (count <= 0) {
      throw_error(PORTA_ERROR_UNAVAILABLE,
                  std::string(kBackendName) + ": the driver sees no device");
    }
    log(PORTA_LOG_INFO, d.identity() + ", " + std::to_string(count) + " device(s)");
    devices_ = std::vector<Device>(count);
    for (int i = 0; i < count; ++i) open_device(i);
  }

  ~Backend() { release_contexts(); }

  const Driver& driver() const { return *driver_; }
  int32_t device_count() const { return static_cast<int32_t>(devices_.size()); }

  Device& device(int32_t index) {
    // libporta checks indices; this keeps a wrong one from reaching the driver.
    if (index < 0 || index >= device_count()) {
      throw_error(PORTA_ERROR_NOT_FOUND,
                  std::string(kBackendName) + ": no device " + std::to_string(index));
    }
    return devices_[index];
  }
  const porta_device_properties_t& properties(int32_t index) { return device(index).properties; }

#if !defined(PORTA_GPU_HIP)
  // The device's primary context, retained at its first use. A device that refuses (exclusive
  // process mode held by another process, prohibited mode) is unusable from then on, with the
  // reason; the other devices are not affected.
  CUcontext context_of(int32_t index) {
    Device& dev = device(index);
    if (CUcontext context = dev.context.load(std::memory_order_acquire)) return context;
    std::lock_guard lock(contexts_mutex_);
    if (CUcontext context = dev.context.load(std::memory_order_relaxed)) return context;
    if (dev.unusable.empty()) {
      CUcontext context = nullptr;
      const result_t r = driver_->primary_ctx_retain(&context, dev.handle);
      if (r == kSuccess) {
        dev.context.store(context, std::memory_order_release);
        return context;
      }
      dev.unusable = "cuDevicePrimaryCtxRetain: " + driver_->describe(r);
    }
    throw_error(PORTA_ERROR_UNAVAILABLE, std::string(kBackendName) + ": device " +
                                             std::to_string(index) + " (" + dev.properties.name +
                                             ") cannot be used: " + dev.unusable);
  }
#endif

  // What CurrentContext makes current for device index: its primary context (CUDA, retained at
  // first use) or the device itself (HIP).
  context_t context_for(int32_t index) {
#if defined(PORTA_GPU_HIP)
    device(index);
    return index;
#else
    return context_of(index);
#endif
  }

  // For its lifetime, the device is current on the calling thread, so that work lands on the
  // right GPU whatever the thread did before (gpu_driver.h: CurrentContext).
  class Scope {
   public:
    Scope(Backend& backend, int32_t index)
        : current_(*backend.driver_, backend.context_for(index)) {}

   private:
    CurrentContext current_;
  };

 private:
  void open_device(int index) {
    const Driver& d = *driver_;
    Device& dev = devices_[index];
    const std::string where = "device " + std::to_string(index);
    d.check(d.device_get(&dev.handle, index), where + ": " + "device_get");
    auto attribute = [&](attribute_t which, const char* name) {
      int value = 0;
      d.check(d.device_get_attribute(&value, which, dev.handle), where + ": attribute " + name);
      return value;
    };
    porta_device_properties_t& p = dev.properties;
    std::memset(&p, 0, sizeof(p));
    p.struct_size = sizeof(p);
    d.check(d.device_get_name(p.name, sizeof(p.name) - 1, dev.handle), where + ": name");
    std::snprintf(p.backend, sizeof(p.backend), "%s", kBackendName);
    size_t total = 0;
    d.check(d.device_total_mem(&total, dev.handle), where + ": total memory");
    p.total_memory = total;
    p.compute_units = attribute(attr::kMultiprocessors, "multiprocessors");
    p.max_work_group_size = attribute(attr::kMaxThreadsPerBlock, "max threads per block");
    p.max_work_group_dims[0] = attribute(attr::kMaxBlockDimX, "max block x");
    p.max_work_group_dims[1] = attribute(attr::kMaxBlockDimY, "max block y");
    p.max_work_group_dims[2] = attribute(attr::kMaxBlockDimZ, "max block z");
    p.max_grid_dims[0] = static_cast<uint32_t>(attribute(attr::kMaxGridDimX, "max grid x"));
    p.max_grid_dims[1] = static_cast<uint32_t>(attribute(attr::kMaxGridDimY, "max grid y"));
    p.max_grid_dims[2] = static_cast<uint32_t>(attribute(attr::kMaxGridDimZ, "max grid z"));
#if defined(PORTA_GPU_HIP)
    // HIP advertises 2^31 - 1 groups per dimension, but AMD's dispatch packet counts work-items
    // in 32 bits: groups x group size must stay below 2^32. Porta's limit is in groups whatever
    // the group size, so it is the count that fits with the largest group.
    for (int i = 0; i < 3; ++i) {
      const int64_t largest_group = std::max<int64_t>(p.max_work_group_dims[i], 1);
      p.max_grid_dims[i] = std::min<int64_t>(p.max_grid_dims[i], UINT32_MAX / largest_group);
    }
#endif
    p.shared_memory_per_group = attribute(attr::kMaxSharedPerBlock, "shared memory per block");
    p.subgroup_size = attribute(attr::kWarpSize, "warp size");
    // Some drivers no longer report a clock; 0 means unknown.
    int clock_khz = 0;
    if (d.device_get_attribute(&clock_khz, attr::kClockRateKHz, dev.handle) != kSuccess) {
      clock_khz = 0;
    }
    p.clock_mhz = clock_khz / 1000;
    const bool unified = attribute(attr::kUnifiedAddressing, "unified addressing") != 0;

    std::string architecture;
#if defined(PORTA_GPU_HIP)
    // The legacy layout, with as much again behind it: a runtime whose symbol wrote a larger
    // struct than this header's would still not write past it.
    struct {
      legacy_device_prop_t props;
      unsigned char slack[sizeof(legacy_device_prop_t)];
    } storage;
    std::memset(&storage, 0, sizeof(storage));
    legacy_device_prop_t& props = storage.props;
    d.check(device_properties_function()(&props, index), where + ": hipGetDeviceProperties");
    props.gcnArchName[sizeof(props.gcnArchName) - 1] = '\0';
    // "gfx90a:sramecc+:xnack-": the target features do not change which code object loads,
    // since kernel libraries are built for any setting of them.
    architecture = props.gcnArchName;
    architecture = architecture.substr(0, architecture.find(':'));
    if (architecture.empty()) architecture = "gfx" + std::to_string(props.gcnArch);
    const bool async_copy = true;  // every AMD GPU has DMA engines beside its compute units
    dev.suffixes = ".hip-" + architecture + ".hsaco";
#else
    const int major = attribute(attr::kComputeMajor, "compute capability major");
    const int minor = attribute(attr::kComputeMinor, "compute capability minor");
    architecture = "sm_" + std::to_string(major * 10 + minor);
    // Said now, though the device is only refused at its first use (context_of).
    if (attribute(attr::kComputeMode, "compute mode") == CU_COMPUTEMODE_PROHIBITED) {
      log(PORTA_LOG_WARN, where + ": in prohibited compute mode: it cannot be used");
    }
    const bool async_copy = attribute(attr::kAsyncEngines, "async engine count") > 0;
    // One fatbin holds SASS for several architectures and PTX the driver compiles for newer ones.
    dev.suffixes = ".cuda.fatbin";
#endif
    std::snprintf(p.architecture, sizeof(p.architecture), "%s", architecture.c_str());
    p.capabilities = capabilities_of(architecture, unified, async_copy);
    log(PORTA_LOG_INFO, where + ": " + p.name + ", " + architecture + ", " +
                            to_string_mb(p.total_memory) + ", " + std::to_string(p.compute_units) +
                            " compute units");
  }

#if defined(PORTA_GPU_HIP)
  // hipGetDevicePropertiesR0000 (ROCm 6 and later) fills the legacy layout; the plain name is
  // trusted to do so only by a runtime older than ROCm 6, since its layout is to change.
  get_device_properties_t device_properties_function() const {
    const Driver& d = *driver_;
    if (d.get_device_properties_r0000) return d.get_device_properties_r0000;
    int runtime = 0;
    const bool known = d.runtime_get_version && d.runtime_get_version(&runtime) == kSuccess;
    if (known && runtime < 60000000 && d.get_device_properties_plain) {
      return d.get_device_properties_plain;
    }
    throw_error(
        PORTA_ERROR_INCOMPATIBLE_VERSION,
        std::string(kBackendName) + ": " + d.identity() +
            " exports no hipGetDevicePropertiesR0000, and its hipGetDeviceProperties is not "
            "known to fill ROCm 5's layout");
  }
#endif

  void release_contexts() noexcept {
#if !defined(PORTA_GPU_HIP)
    for (Device& dev : devices_) {
      if (CUcontext context = dev.context.exchange(nullptr)) {
        (void)context;
        driver_->primary_ctx_release(dev.handle);
      }
    }
#endif
  }

  std::unique_ptr<Driver> driver_;
  std::vector<Device> devices_;
#if !defined(PORTA_GPU_HIP)
  std::mutex contexts_mutex_;  // first retains
#endif

 public:
  // Lets the current device (`device`) reach peer's memory directly. Asked of the driver once
  // per pair: it keeps the access for the contexts' lifetime, and an application may have
  // enabled it already.
  void enable_peer_access(int32_t device, int32_t peer) {
    std::lock_guard lock(peers_mutex_);
    if (peers_enabled_.count({device, peer})) return;
    const Driver& d = *driver_;
#if defined(PORTA_GPU_HIP)
    result_t r = d.enable_peer_access(peer, 0);
    if (r == hipErrorPeerAccessAlreadyEnabled) r = kSuccess;
    const char* call = "hipDeviceEnablePeerAccess";
#else
    result_t r = d.ctx_enable_peer_access(context_of(peer), 0);
    if (r == CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED) r = kSuccess;
    const char* call = "cuCtxEnablePeerAccess";
#endif
    d.check(r, std::string(call) + " from device " + std::to_string(device) + " to device " +
                   std::to_string(peer));
    peers_enabled_.insert({device, peer});
  }

 private:
  std::mutex peers_mutex_;
  std::set<std::pair<int32_t, int32_t>> peers_enabled_;  // (device, peer) pairs enabled
};

using BackendState = plugin::PluginState<Backend>;
Backend& backend_of(porta_backend_context_t context) { return BackendState::of(context); }
Stream& stream_of(void* stream) { return *static_cast<Stream*>(stream); }
Event& event_of(void* event) { return *static_cast<Event*>(event); }

#if defined(PORTA_GPU_HIP)
void* device_pointer(void* ptr) { return ptr; }
#else
CUdeviceptr device_pointer(const void* ptr) { return reinterpret_cast<CUdeviceptr>(ptr); }
#endif

// The shape of most slots: under guarded, make the device current on the calling thread, then
// run body with the driver. body returns the slot's status.
template <typename Body>
porta_status_t on_device(const char* slot, porta_backend_context_t context, int32_t device,
                         Body&& body) noexcept {
  return guarded(slot, [&] {
    Backend& b = backend_of(context);
    Backend::Scope scope(b, device);
    return body(b.driver());
  });
}

// ---- the slots ----------------------------------------------------------------------------------

porta_status_t initialize(porta_backend_context_t* out_context, int32_t* out_device_count) {
  return BackendState::initialize(out_context, out_device_count,
                                  [] { return std::make_unique<Backend>(Driver::open()); });
}

porta_status_t device_memory_info(porta_backend_context_t context, int32_t device,
                                  uint64_t* out_free, uint64_t* out_total) {
  return on_device("device_memory_info", context, device, [&](const Driver& d) {
    size_t free = 0, total = 0;
    d.check(d.mem_get_info(&free, &total), "memory info");
    *out_free = free;
    *out_total = total;
    return PORTA_SUCCESS;
  });
}

porta_status_t device_synchronize(porta_backend_context_t context, int32_t device) {
  return guarded("device_synchronize", [&] {
    Backend& b = backend_of(context);
#if defined(PORTA_GPU_HIP)
    Backend::Scope scope(b, device);
    b.driver().check(b.driver().device_synchronize(), "hipDeviceSynchronize");
#else
    // A device whose context was never retained has no work; it is not retained for this.
    if (!b.device(device).context.load()) return PORTA_SUCCESS;
    Backend::Scope scope(b, device);
    b.driver().check(b.driver().ctx_synchronize(), "cuCtxSynchronize");
#endif
    return PORTA_SUCCESS;
  });
}

porta_status_t device_native_handle(porta_backend_context_t context, int32_t device,
                                    void** out_native) {
  return guarded("device_native_handle", [&] {
    Backend& b = backend_of(context);
    [[maybe_unused]] const Device& dev = b.device(device);
#if defined(PORTA_GPU_HIP)
    // hipDevice_t is the device's ordinal, what hipSetDevice takes before a vendor library call
    // (porta.h: it may be 0).
    *out_native = reinterpret_cast<void*>(static_cast<intptr_t>(dev.handle));
#else
    // The retained primary context (porta.h): never NULL, cuCtxGetDevice gives the CUdevice, and
    // it is the context the CUDA runtime, cuBLAS and cuDNN use for that device.
    *out_native = static_cast<void*>(b.context_of(device));
#endif
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_alloc(porta_backend_context_t context, int32_t device, size_t size,
                            void** out_ptr) {
  return on_device("memory_alloc", context, device, [&](const Driver& d) {
#if defined(PORTA_GPU_HIP)
    void* ptr = nullptr;
    d.check(d.mem_alloc(&ptr, size), "hipMalloc of " + std::to_string(size) + " bytes");
    *out_ptr = ptr;
#else
    CUdeviceptr ptr = 0;
    d.check(d.mem_alloc(&ptr, size), "cuMemAlloc of " + std::to_string(size) + " bytes");
    *out_ptr = reinterpret_cast<void*>(ptr);
#endif
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_free(porta_backend_context_t context, int32_t device, void* ptr) {
  return on_device("memory_free", context, device, [&](const Driver& d) {
    d.check(d.mem_free(device_pointer(ptr)), "free device memory");
    return PORTA_SUCCESS;
  });
}

porta_status_t host_alloc(porta_backend_context_t context, int32_t device, size_t size,
                          void** out_ptr) {
  return on_device("host_alloc", context, device, [&](const Driver& d) {
    // Portable: pinned for every device, so a copy to another GPU overlaps too.
    void* ptr = nullptr;
    d.check(d.host_alloc(&ptr, size, kHostAllocPortable),
            "pinned host allocation of " + std::to_string(size) + " bytes");
    *out_ptr = ptr;
    return PORTA_SUCCESS;
  });
}

porta_status_t host_free(porta_backend_context_t context, int32_t device, void* ptr) {
  return on_device("host_free", context, device, [&](const Driver& d) {
    d.check(d.host_free(ptr), "free pinned host memory");
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_create(porta_backend_context_t context, int32_t device, void** out_stream) {
  return guarded("stream_create", [&] {
    backend_of(context).device(device);
    *out_stream = new Stream(device);
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_destroy(porta_backend_context_t context, void* stream) {
  Stream& s = stream_of(stream);
  if (!s.used()) {
    delete &s;
    return PORTA_SUCCESS;
  }
  return on_device("stream_destroy", context, s.device, [&](const Driver& d) {
    d.check(d.stream_destroy(s.native(d)), "stream destroy");
    delete &s;
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_synchronize(porta_backend_context_t context, void* stream) {
  Stream& s = stream_of(stream);
  if (!s.used()) return PORTA_SUCCESS;
  return on_device("stream_synchronize", context, s.device, [&](const Driver& d) {
    d.check(d.stream_synchronize(s.native(d)), "stream synchronize");
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_query(porta_backend_context_t context, void* stream) {
  Stream& s = stream_of(stream);
  if (!s.used()) return PORTA_SUCCESS;
  return on_device("stream_query", context, s.device, [&](const Driver& d) {
    const result_t r = d.stream_query(s.native(d));
    if (r == kNotReady) return PORTA_NOT_READY;
    d.check(r, "stream query");
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_wait_event(porta_backend_context_t context, void* stream, void* event) {
  Stream& s = stream_of(stream);
  return on_device("stream_wait_event", context, s.device, [&](const Driver& d) {
    d.check(d.stream_wait_event(s.native(d), event_of(event).event, 0), "stream wait event");
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_native_handle(porta_backend_context_t context, void* stream,
                                    void** out_native) {
  Stream& s = stream_of(stream);
  return on_device("stream_native_handle", context, s.device, [&](const Driver& d) {
    *out_native = static_cast<void*>(s.native(d));
    return PORTA_SUCCESS;
  });
}

// ---- between devices: peer access and copies ----------------------------------------------------

// Whether the driver has what direct copies between devices need; without it libporta stages
// them through host memory.
bool has_peer_functions(const Driver& d) {
  return d.device_can_access_peer && d.memcpy_peer_async && d.pointer_get_attribute &&
#if defined(PORTA_GPU_HIP)
         d.enable_peer_access;
#else
         d.ctx_enable_peer_access;
#endif
}

porta_status_t device_can_access_peer(porta_backend_context_t context, int32_t device, int32_t peer,
                                      int32_t* out_direct) {
  return guarded("device_can_access_peer", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    int can = 0;
    if (has_peer_functions(d)) {
#if defined(PORTA_GPU_HIP)
      b.device(device), b.device(peer);
      d.check(d.device_can_access_peer(&can, device, peer), "hipDeviceCanAccessPeer");
#else
      d.check(d.device_can_access_peer(&can, b.device(device).handle, b.device(peer).handle),
              "cuDeviceCanAccessPeer");
#endif
    }
    *out_direct = can ? 1 : 0;
    return PORTA_SUCCESS;
  });
}

// The device whose memory ptr is: the driver knows every allocation's device.
int32_t device_of_pointer(const Driver& d, const void* ptr) {
  int ordinal = -1;
#if defined(PORTA_GPU_HIP)
  d.check(d.pointer_get_attribute(&ordinal, HIP_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                  const_cast<void*>(ptr)),
          "hipPointerGetAttribute");
#else
  d.check(
      d.pointer_get_attribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, device_pointer(ptr)),
      "cuPointerGetAttribute");
#endif
  return ordinal;
}

// A copy between the memory of two devices on a stream of either (libporta sends it here only
// when device_can_access_peer said direct both ways): the peer copy, after the stream's device
// was given access to the other's memory.
void copy_between_devices(Backend& b, const Driver& d, Stream& s, void* dst, int32_t to,
                          const void* src, int32_t from, size_t size) {
  for (int32_t other : {to, from}) {
    if (other != s.device) b.enable_peer_access(s.device, other);
  }
#if defined(PORTA_GPU_HIP)
  d.check(d.memcpy_peer_async(dst, to, src, from, size, s.native(d)),
          "hipMemcpyPeerAsync of " + std::to_string(size) + " bytes");
#else
  d.check(d.memcpy_peer_async(device_pointer(dst), b.context_of(to), device_pointer(src),
                              b.context_of(from), size, s.native(d)),
          "cuMemcpyPeerAsync of " + std::to_string(size) + " bytes");
#endif
}

porta_status_t memcpy_async(porta_backend_context_t context, void* stream, void* dst,
                            const void* src, size_t size, porta_copy_kind_t kind) {
  Stream& s = stream_of(stream);
  return on_device("memcpy_async", context, s.device, [&](const Driver& d) {
    if (kind == PORTA_COPY_DEVICE_TO_DEVICE && has_peer_functions(d)) {
      const int32_t to = device_of_pointer(d, dst), from = device_of_pointer(d, src);
      if (to != from) {
        copy_between_devices(backend_of(context), d, s, dst, to, src, from, size);
        return PORTA_SUCCESS;
      }
    }
#if defined(PORTA_GPU_HIP)
    hipMemcpyKind direction = hipMemcpyDefault;
    switch (kind) {
      case PORTA_COPY_HOST_TO_HOST:
        direction = hipMemcpyHostToHost;
        break;
      case PORTA_COPY_HOST_TO_DEVICE:
        direction = hipMemcpyHostToDevice;
        break;
      case PORTA_COPY_DEVICE_TO_HOST:
        direction = hipMemcpyDeviceToHost;
        break;
      case PORTA_COPY_DEVICE_TO_DEVICE:
        direction = hipMemcpyDeviceToDevice;
        break;
    }
    d.check(d.memcpy_async(dst, src, size, direction, s.native(d)),
            "hipMemcpyAsync of " + std::to_string(size) + " bytes");
#else
    // With unified addressing the driver tells host from device memory by address, and pinned
    // memory from pageable: one call covers every direction, and copies from pinned memory are
    // DMA transfers that overlap kernels on other streams.
    (void)kind;
    d.check(d.memcpy_async(device_pointer(dst), device_pointer(src), size, s.native(d)),
            "cuMemcpyAsync of " + std::to_string(size) + " bytes");
#endif
    return PORTA_SUCCESS;
  });
}

porta_status_t memset_async(porta_backend_context_t context, void* stream, void* dst, uint8_t value,
                            size_t size) {
  Stream& s = stream_of(stream);
  return on_device("memset_async", context, s.device, [&](const Driver& d) {
    d.check(d.memset_d8_async(device_pointer(dst), value, size, s.native(d)),
            "memset of " + std::to_string(size) + " bytes");
    return PORTA_SUCCESS;
  });
}

porta_status_t event_create(porta_backend_context_t context, int32_t device, void** out_event) {
  return on_device("event_create", context, device, [&](const Driver& d) {
    auto event = std::make_unique<Event>(Event{device, nullptr});
    // The default flags keep timing on (porta_event_elapsed_ms works on every event).
    d.check(d.event_create(&event->event, kEventDefault), "event create");
    *out_event = event.release();
    return PORTA_SUCCESS;
  });
}

porta_status_t event_destroy(porta_backend_context_t context, void* event) {
  Event& e = event_of(event);
  return on_device("event_destroy", context, e.device, [&](const Driver& d) {
    // Waits already queued on it still complete: the driver defers the release.
    d.check(d.event_destroy(e.event), "event destroy");
    delete &e;
    return PORTA_SUCCESS;
  });
}

porta_status_t event_record(porta_backend_context_t context, void* event, void* stream) {
  Event& e = event_of(event);
  return on_device("event_record", context, e.device, [&](const Driver& d) {
    d.check(d.event_record(e.event, stream_of(stream).native(d)), "event record");
    return PORTA_SUCCESS;
  });
}

porta_status_t event_query(porta_backend_context_t context, void* event) {
  Event& e = event_of(event);
  return on_device("event_query", context, e.device, [&](const Driver& d) {
    const result_t r = d.event_query(e.event);
    if (r == kNotReady) return PORTA_NOT_READY;
    d.check(r, "event query");
    return PORTA_SUCCESS;
  });
}

porta_status_t event_synchronize(porta_backend_context_t context, void* event) {
  Event& e = event_of(event);
  return on_device("event_synchronize", context, e.device, [&](const Driver& d) {
    d.check(d.event_synchronize(e.event), "event synchronize");
    return PORTA_SUCCESS;
  });
}

porta_status_t event_elapsed_ms(porta_backend_context_t context, void* start, void* end,
                                float* out_ms) {
  Event& first = event_of(start);
  return on_device("event_elapsed_ms", context, first.device, [&](const Driver& d) {
    float ms = 0.0f;
#if defined(PORTA_GPU_HIP)
    const result_t r = d.event_elapsed_time(&ms, first.event, event_of(end).event);
#else
    auto elapsed = d.event_elapsed_time_v2 ? d.event_elapsed_time_v2 : d.event_elapsed_time_v1;
    if (!elapsed) {
      throw_error(PORTA_ERROR_UNSUPPORTED,
                  std::string(kBackendName) + ": the driver exports no cuEventElapsedTime");
    }
    const result_t r = elapsed(&ms, first.event, event_of(end).event);
#endif
    if (r == kNotReady) return PORTA_NOT_READY;
    d.check(r, "event elapsed time");
    *out_ms = ms;
    return PORTA_SUCCESS;
  });
}

// "13.0" from the driver API's encoding (13000).
[[maybe_unused]] std::string cuda_version_text(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

// Loads image on the device. toolkit is the CUDA version the image was built with (0: unknown):
// a driver older than its major version cannot load it (CUDA 13's code needs a CUDA 13 driver,
// R580 or later), which is said before the driver is asked, naming both versions.
porta_status_t load_module(Backend& b, int32_t device, const void* image, size_t size, int toolkit,
                           const std::string& what, void** out_module) {
  const Driver& d = b.driver();
  auto module = std::make_unique<Module>();
  module->device = device;
  module->image = checked_image(image, size);
  std::string versions;
  int driver_version = 0;
#if defined(PORTA_GPU_HIP)
  (void)toolkit;  // AMD code objects carry no toolkit requirement of this kind
#else
  if (toolkit > 0 && d.driver_get_version(&driver_version) == kSuccess) {
    versions = what + " was built with CUDA " + cuda_version_text(toolkit) +
               "; the driver supports CUDA " + cuda_version_text(driver_version) + " (" +
               std::to_string(driver_version) + ")";
    if (driver_version / 1000 < toolkit / 1000) {
      throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION, std::string(kBackendName) + ": " + versions +
                                                        ": update the driver to one for CUDA " +
                                                        cuda_version_text(toolkit / 1000 * 1000) +
                                                        " or later");
    }
  }
#endif
  Backend::Scope scope(b, device);
  const result_t r = d.module_load_data(&module->module, module->image.data());
  if (r != kSuccess && !versions.empty() && driver_version < toolkit) {
    // Same major version, older minor: SASS loads, PTX newer than the driver does not.
    throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION,
                std::string(kBackendName) + ": module load: " + d.describe(r) + ": " + versions);
  }
  d.check(r, "module load (" + what + ", " + std::to_string(size) + " bytes) on device " +
                 std::to_string(device) + " (" + b.device(device).properties.architecture + ")");
  *out_module = module.release();
  return PORTA_SUCCESS;
}

porta_status_t module_load_data(porta_backend_context_t context, int32_t device, const void* image,
                                size_t size, void** out_module) {
  return guarded("module_load_data", [&] {
    return load_module(backend_of(context), device, image, size, 0, "an image from memory",
                       out_module);
  });
}

// The toolkit version porta_add_kernel_library recorded beside a code object
// ("<file>.toolkit", the driver API's encoding: 13000 for CUDA 13.0), or 0.
int recorded_toolkit(const std::string& path) {
  std::ifstream file(path + ".toolkit");
  int version = 0;
  if (!(file >> version) || version < 1000) return 0;
  return version;
}

porta_status_t module_load_file(porta_backend_context_t context, int32_t device, const char* path,
                                void** out_module) {
  return guarded("module_load_file", [&] {
    std::ifstream file(path, std::ios::binary);
    std::vector<char> image{std::istreambuf_iterator<char>(file), {}};
    if (!file && !file.eof()) {
      throw_error(PORTA_ERROR_NOT_FOUND,
                  std::string(kBackendName) + ": cannot read '" + path + "'");
    }
    return load_module(backend_of(context), device, image.data(), image.size(),
                       recorded_toolkit(path), std::string("'") + path + "'", out_module);
  });
}

porta_status_t module_unload(porta_backend_context_t context, void* module) {
  auto* m = static_cast<Module*>(module);
  return on_device("module_unload", context, m->device, [&](const Driver& d) {
    d.check(d.module_unload(m->module), "module unload");
    delete m;
    return PORTA_SUCCESS;
  });
}

// Copies the device global symbol out of the module; false when the module has none.
bool read_global(const Driver& d, module_t module, const std::string& symbol,
                 std::vector<char>& out) {
  deviceptr_t address{};
  size_t bytes = 0;
  const result_t r = d.module_get_global(&address, &bytes, module, symbol.c_str());
  if (r != kSuccess && Driver::status_of(r) == PORTA_ERROR_NOT_FOUND) return false;
  d.check(r, "global " + symbol);
  out.resize(bytes);
  if (bytes > 0) d.check(d.memcpy_dtoh(out.data(), address, bytes), "copy of global " + symbol);
  return true;
}

// The parameter record PORTA_KERNEL puts beside each kernel in the image (porta_kernel.h): the
// count and sizes, and the parameter list as written. An image built otherwise has none, and its
// launches go unchecked.
void read_params(const Driver& d, module_t module, const std::string& name, Kernel& kernel) {
  if (!d.module_get_global || !d.memcpy_dtoh) return;
  std::vector<char> record;
  if (!read_global(d, module, PORTA_KERNEL_PARAM_SIZES_PREFIX + name, record)) return;
  std::vector<uint32_t> words(record.size() / sizeof(uint32_t));
  std::memcpy(words.data(), record.data(), words.size() * sizeof(uint32_t));
  if (words.empty() || words[0] > words.size() - 1) {
    throw_error(PORTA_ERROR_INVALID_ARGUMENT, std::string(kBackendName) + ": kernel '" + name +
                                           "': malformed parameter record (" +
                                           std::to_string(record.size()) + " bytes)");
  }
  kernel.param_sizes.assign(words.begin() + 1, words.begin() + 1 + words[0]);
  std::vector<char> signature;
  if (read_global(d, module, PORTA_KERNEL_SIGNATURE_PREFIX + name, signature)) {
    kernel.signature.assign(signature.data(), strnlen(signature.data(), signature.size()));
  }
  kernel.params_recorded = true;
}

porta_status_t kernel_get(porta_backend_context_t context, void* module, const char* name,
                          void** out_kernel) {
  return guarded("kernel_get", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    auto* m = static_cast<Module*>(module);
    std::lock_guard lock(m->mutex);
    if (auto it = m->kernels.find(name); it != m->kernels.end()) {
      *out_kernel = it->second.get();
      return PORTA_SUCCESS;
    }
    Backend::Scope scope(b, m->device);
    function_t function = nullptr;
    d.check(d.module_get_function(&function, m->module, name),
            std::string("kernel '") + name + "'");
#if !defined(PORTA_GPU_HIP)
    // A CUDA kernel may use more than 48 KiB of dynamic shared memory only after opting in; the
    // device's limit (properties) assumes it did, so every kernel opts in to all it can have.
    int static_bytes = 0;
    if (d.func_get_attribute(&static_bytes, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, function) ==
        kSuccess) {
      const int available = b.device(m->device).properties.shared_memory_per_group - static_bytes;
      if (available > 0) {
        const result_t r = d.func_set_attribute(
            function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, available);
        if (r != kSuccess) {
          log(PORTA_LOG_DEBUG, std::string("kernel '") + name +
                                   "': cannot opt in to more shared memory: " + d.describe(r));
        }
      }
    }
#endif
    auto kernel = std::make_unique<Kernel>();
    kernel->device = m->device;
    kernel->function = function;
    read_params(d, m->module, name, *kernel);
    *out_kernel = kernel.get();
    m->kernels.emplace(name, std::move(kernel));
    return PORTA_SUCCESS;
  });
}

porta_status_t kernel_launch(porta_backend_context_t context, void* kernel,
                             const porta_launch_config_t* config, void** args, void* stream) {
  const auto* k = static_cast<const Kernel*>(kernel);
  return on_device("kernel_launch", context, k->device, [&](const Driver& d) {
    const porta_launch_config_t& c = *config;
    // The driver copies the arguments args points to before it returns, as Porta promises.
    d.check(d.launch_kernel(k->function, c.grid[0], c.grid[1], c.grid[2], c.group[0], c.group[1],
                            c.group[2], c.shared_memory_bytes, stream_of(stream).native(d), args,
                            nullptr),
            "kernel launch");
    return PORTA_SUCCESS;
  });
}

porta_status_t stream_launch_host_func(porta_backend_context_t context, void* stream,
                                       porta_host_fn_t fn, void* user_data) {
  return guarded("stream_launch_host_func", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    Stream& s = stream_of(stream);
    if (!d.launch_host_func) {
      throw_error(PORTA_ERROR_UNSUPPORTED, std::string(kBackendName) + ": " + d.library_name() +
                                               " has no host-function launch (it predates it)");
    }
    Backend::Scope scope(b, s.device);
    // The driver runs fn on a thread of its own, in stream order; porta_host_fn_t and the
    // driver's host-function type are both void (*)(void*).
    d.check(d.launch_host_func(s.native(d), fn, user_data), "host function launch");
    return PORTA_SUCCESS;
  });
}

porta_status_t kernel_params(porta_backend_context_t, void* kernel, uint32_t* out_count,
                             const uint32_t** out_sizes, const char** out_signature) {
  return guarded("kernel_params", [&] {
    const auto* k = static_cast<const Kernel*>(kernel);
    if (!k->params_recorded) {
      throw_error(PORTA_ERROR_NOT_FOUND,
           std::string(kBackendName) + ": the image records no parameters for this kernel");
    }
    *out_count = static_cast<uint32_t>(k->param_sizes.size());
    *out_sizes = k->param_sizes.data();
    *out_signature = k->signature.empty() ? nullptr : k->signature.c_str();
    return PORTA_SUCCESS;
  });
}

// What the driver says the kernel takes: its registers, shared memory and declared limit
// (__launch_bounds__, amdgpu_flat_work_group_size) against the device's.
porta_status_t kernel_max_group_size(porta_backend_context_t context, void* kernel,
                                     int32_t* out_max) {
  const auto* k = static_cast<const Kernel*>(kernel);
  return on_device("kernel_max_group_size", context, k->device, [&](const Driver& d) {
    int max = 0;
#if defined(PORTA_GPU_HIP)
    d.check(d.func_get_attribute(&max, HIP_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, k->function),
            "kernel max threads per block");
#else
    d.check(d.func_get_attribute(&max, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, k->function),
            "kernel max threads per block");
#endif
    *out_max = max;
    return PORTA_SUCCESS;
  });
}

// ---- stream-ordered allocation from the driver's pools ------------------------------------------

// Whether the driver has memory pools at all; without them libporta's own pool serves.
void require_pools(const Driver& d) {
  if (!d.mem_alloc_async || !d.mem_free_async || !d.device_get_default_mem_pool ||
      !d.mem_pool_trim_to || !d.mem_pool_set_attribute || !d.mem_pool_get_attribute) {
    throw_error(PORTA_ERROR_UNSUPPORTED,
                std::string(kBackendName) + ": " + d.library_name() + " has no memory pools");
  }
}

mem_pool_t default_pool(Backend& b, int32_t device) {
  const Driver& d = b.driver();
  require_pools(d);
  mem_pool_t pool{};
  d.check(d.device_get_default_mem_pool(&pool, b.device(device).handle), "default memory pool");
  return pool;
}

porta_status_t memory_alloc_async(porta_backend_context_t context, void* stream, size_t size,
                                  void** out_ptr) {
  return guarded("memory_alloc_async", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    require_pools(d);
    Stream& s = stream_of(stream);
    Backend::Scope scope(b, s.device);
#if defined(PORTA_GPU_HIP)
    void* ptr = nullptr;
    d.check(d.mem_alloc_async(&ptr, size, s.native(d)),
            "hipMallocAsync of " + std::to_string(size) + " bytes");
    *out_ptr = ptr;
#else
    CUdeviceptr ptr = 0;
    d.check(d.mem_alloc_async(&ptr, size, s.native(d)),
            "cuMemAllocAsync of " + std::to_string(size) + " bytes");
    *out_ptr = reinterpret_cast<void*>(ptr);
#endif
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_free_async(porta_backend_context_t context, void* stream, void* ptr) {
  return guarded("memory_free_async", [&] {
    Backend& b = backend_of(context);
    const Driver& d = b.driver();
    require_pools(d);
    Stream& s = stream_of(stream);
    Backend::Scope scope(b, s.device);
    d.check(d.mem_free_async(device_pointer(ptr), s.native(d)), "stream-ordered free");
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_pool_stats(porta_backend_context_t context, int32_t device,
                                 porta_memory_pool_stats_t* out_stats) {
  return on_device("memory_pool_stats", context, device, [&](const Driver& d) {
    mem_pool_t pool = default_pool(backend_of(context), device);
    uint64_t reserved = 0, used = 0, high = 0, threshold = 0;
    d.check(d.mem_pool_get_attribute(pool, pool_attr::kReservedCurrent, &reserved), "pool size");
    d.check(d.mem_pool_get_attribute(pool, pool_attr::kUsedCurrent, &used), "pool use");
    d.check(d.mem_pool_get_attribute(pool, pool_attr::kUsedHigh, &high), "pool peak");
    d.check(d.mem_pool_get_attribute(pool, pool_attr::kReleaseThreshold, &threshold),
            "pool release threshold");
    out_stats->bytes_in_use = used;
    out_stats->bytes_cached = reserved > used ? reserved - used : 0;
    out_stats->peak_bytes_in_use = high;
    out_stats->release_threshold = threshold;
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_pool_set_release_threshold(porta_backend_context_t context, int32_t device,
                                                 uint64_t bytes) {
  return on_device("memory_pool_set_release_threshold", context, device, [&](const Driver& d) {
    mem_pool_t pool = default_pool(backend_of(context), device);
    d.check(d.mem_pool_set_attribute(pool, pool_attr::kReleaseThreshold, &bytes),
            "pool release threshold");
    return PORTA_SUCCESS;
  });
}

porta_status_t memory_pool_trim(porta_backend_context_t context, int32_t device,
                                uint64_t keep_bytes) {
  return on_device("memory_pool_trim", context, device, [&](const Driver& d) {
    mem_pool_t pool = default_pool(backend_of(context), device);
    d.check(d.mem_pool_trim_to(pool, keep_bytes), "pool trim");
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
    .checker_report = nullptr,  // the race checker is the CPU backend's
    .kernel_max_group_size = kernel_max_group_size,
    .device_can_access_peer = device_can_access_peer,
    .memory_alloc_async = memory_alloc_async,
    .memory_free_async = memory_free_async,
    .memory_pool_stats = memory_pool_stats,
    .memory_pool_set_release_threshold = memory_pool_set_release_threshold,
    .memory_pool_trim = memory_pool_trim,
    .kernel_params = kernel_params,
    .device_wait = nullptr,  // the driver's errors are the context's
};

}  // namespace
}  // namespace porta::gpu

// The entry touches no driver: that happens in initialize, so the plugin loads anywhere.
extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  return porta::plugin::enter(host, out_plugin,
                              {.kind = PORTA_PLUGIN_KIND_BACKEND,
                               .name = porta::gpu::kBackendName,
                               .version = porta::gpu::kVersion,
                               .backend = &porta::gpu::kInterface,
                               .ops = nullptr,
                               .name_in_errors = true});
}
