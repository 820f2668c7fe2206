// A stand-in for the HIP runtime (built as libamdhip64.so.N for tests only), so that the real HIP
// plugin's driver logic runs without a GPU: which library it opens, which properties symbol it
// trusts, and that a module's image stays alive while the module is loaded. "Device memory" is
// host memory and kernels do nothing. PORTA_FAKE_HIP configures it at each hipInit:
//   runtime=N      what hipRuntimeGetVersion answers (default 60342000, ROCm 6.3)
//   init_error=C   hipInit fails with code C
//   fail=F:C       the call F fails with code C (e.g. hipModuleLaunchKernel:719)
//   arch=gfxN      the architecture hipGetDevicePropertiesR0000 reports (default gfx90a)
//   devices=N      how many devices (default 1)
//   peer=0|1       what hipDeviceCanAccessPeer answers between different devices (default 1)
//   peer_enabled=1 peer access is already enabled between every pair (an application did it):
//                  hipDeviceEnablePeerAccess answers hipErrorPeerAccessAlreadyEnabled
// porta_fake_hip_peer(NAME) tells the tests how often NAME happened: "enable I J"
// (hipDeviceEnablePeerAccess from device I to J), "copy I J" (hipMemcpyPeerAsync from I's memory
// to J's), "wait I J" (a stream of device I waited on an event recorded on device J).
// porta_fake_hip_stall(stream, 1) makes work queued on the stream from then on never complete (as
// a collective whose peers never come) until porta_fake_hip_stall(stream, 0) (the stand-in RCCL's
// abort): events recorded after it stay not ready and synchronising the stream waits.
// Built with PORTA_FAKE_HIP_R0000, it also exports hipGetDevicePropertiesR0000 (ROCm 6 and
// later). It fills gcnArchName with arch; the plain hipGetDeviceProperties fills it with
// "gfx000", so a test can tell which of the two the plugin called.
#include <hip/hip_runtime_api.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fake_globals.h"

struct ihipStream_t {
  int device;
  std::shared_ptr<std::atomic<bool>> stalled = std::make_shared<std::atomic<bool>>(false);
};
struct ihipEvent_t {
  int device;                                 // of the stream it was last recorded on; -1 before
  std::shared_ptr<std::atomic<bool>> behind;  // the stall it was recorded behind, if any
};
struct ihipModuleSymbol_t {
  int unused;
};
// What hipModuleLoadData was given, and a copy of its first bytes taken then: the real runtime
// may read the image later, so the plugin must keep it alive until hipModuleUnload.
struct ihipModule_t {
  const unsigned char* image;
  unsigned char head[64];
};

namespace {

int runtime_version = 60342000;
std::string architecture = "gfx90a";
hipError_t init_error = hipSuccess;
std::string fail_call;
hipError_t fail_code = hipSuccess;
thread_local int current_device = 0;
ihipModuleSymbol_t function;
int device_count = 1;
bool peer = true;
bool peer_enabled = false;
std::mutex mutex;
// Device memory by address, with its size and device, for hipPointerGetAttribute; under mutex.
std::map<uintptr_t, std::pair<size_t, int>> allocations;
std::map<std::string, int> peer_events;           // porta_fake_hip_peer; under mutex
std::vector<void*> retired;                       // freed device memory, kept; under mutex
std::map<std::pair<int, int>, bool> peer_access;  // enabled from first to second; under mutex

// The device of the allocation holding [ptr, ptr + size), or -1.
int device_of(const void* ptr, size_t size) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  auto it = allocations.upper_bound(address);
  if (it == allocations.begin()) return -1;
  --it;
  return address + size <= it->first + it->second.first ? it->second.second : -1;
}

bool stalled(const std::shared_ptr<std::atomic<bool>>& stall) { return stall && stall->load(); }

// Waits while the stall lasts; a test that never ends it fails here after a minute, not hangs.
hipError_t wait_out(const std::shared_ptr<std::atomic<bool>>& stall) {
  for (int i = 0; i < 60000 && stalled(stall); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return stalled(stall) ? hipErrorLaunchTimeOut : hipSuccess;
}

std::string pair_name(const char* what, int a, int b) {
  return std::string(what) + " " + std::to_string(a) + " " + std::to_string(b);
}
int launches = 0;  // kernel launches that reached the runtime: porta_fake_hip_launches()

void read_config() {
  runtime_version = 60342000;
  architecture = "gfx90a";
  init_error = hipSuccess;
  fail_call.clear();
  fail_code = hipSuccess;
  device_count = 1;
  peer = true;
  peer_enabled = false;
  {
    std::lock_guard lock(mutex);
    peer_events.clear();
    peer_access.clear();
  }
  const char* text = std::getenv("PORTA_FAKE_HIP");
  std::string rest = text ? text : "";
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string item = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "runtime") runtime_version = std::atoi(value.c_str());
    if (key == "arch") architecture = value;
    if (key == "devices") device_count = std::atoi(value.c_str());
    if (key == "peer") peer = value != "0";
    if (key == "peer_enabled") peer_enabled = value != "0";
    if (key == "init_error") init_error = static_cast<hipError_t>(std::atoi(value.c_str()));
    if (key == "fail") {
      const size_t colon = value.find(':');
      fail_call = value.substr(0, colon);
      fail_code = static_cast<hipError_t>(std::atoi(value.substr(colon + 1).c_str()));
    }
  }
}

hipError_t entry(const char* call) { return fail_call == call ? fail_code : hipSuccess; }

#define ENTER(call) \
  if (hipError_t early = entry(call); early != hipSuccess) return early

hipError_t properties(hipDeviceProp_t* prop, const std::string& gfx) {
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "Fake AMD GPU");
  std::snprintf(prop->gcnArchName, sizeof(prop->gcnArchName), "%s:sramecc+:xnack-", gfx.c_str());
  return hipSuccess;
}

}  // namespace

extern "C" {

void porta_fake_hip_stall(hipStream_t stream, int stall) { stream->stalled->store(stall != 0); }

int porta_fake_hip_peer(const char* name) {
  std::lock_guard lock(mutex);
  auto it = peer_events.find(name);
  return it == peer_events.end() ? 0 : it->second;
}

hipError_t hipInit(unsigned int) {
  read_config();
  return init_error;
}

hipError_t hipDriverGetVersion(int* version) {
  *version = runtime_version;
  return hipSuccess;
}

hipError_t hipRuntimeGetVersion(int* version) {
  *version = runtime_version;
  return hipSuccess;
}

const char* hipGetErrorName(hipError_t error) {
  switch (error) {
    case hipErrorLaunchFailure:
      return "hipErrorLaunchFailure";
    case hipErrorNoDevice:
      return "hipErrorNoDevice";
    case hipErrorInvalidImage:
      return "hipErrorInvalidImage";
    default:
      return "hipErrorUnknown";
  }
}

const char* hipGetErrorString(hipError_t) { return "fake runtime error"; }

hipError_t hipGetDeviceCount(int* count) {
  *count = device_count;
  return hipSuccess;
}

hipError_t hipDeviceGet(hipDevice_t* device, int ordinal) {
  *device = ordinal;
  return hipSuccess;
}

hipError_t hipDeviceGetName(char* name, int len, hipDevice_t) {
  std::snprintf(name, len, "Fake AMD GPU");
  return hipSuccess;
}

hipError_t hipDeviceTotalMem(size_t* bytes, hipDevice_t) {
  *bytes = size_t(1) << 30;
  return hipSuccess;
}

hipError_t hipDeviceGetAttribute(int* value, hipDeviceAttribute_t attribute, int) {
  switch (attribute) {
    case hipDeviceAttributeMaxThreadsPerBlock:
    case hipDeviceAttributeMaxBlockDimX:
    case hipDeviceAttributeMaxBlockDimY:
    case hipDeviceAttributeMaxBlockDimZ:
      *value = 1024;
      break;
    case hipDeviceAttributeMaxGridDimX:
    case hipDeviceAttributeMaxGridDimY:
    case hipDeviceAttributeMaxGridDimZ:
      *value = 2147483647;
      break;
    case hipDeviceAttributeMaxSharedMemoryPerBlock:
      *value = 65536;
      break;
    case hipDeviceAttributeWarpSize:
      *value = 64;
      break;
    case hipDeviceAttributeMultiprocessorCount:
      *value = 104;
      break;
    case hipDeviceAttributeUnifiedAddressing:
      *value = 1;
      break;
    default:
      *value = 0;
  }
  return hipSuccess;
}

hipError_t hipGetDeviceProperties(hipDeviceProp_t* prop, int) { return properties(prop, "gfx000"); }

#if defined(PORTA_FAKE_HIP_R0000)
hipError_t hipGetDevicePropertiesR0000(hipDeviceProp_t* prop, int) {
  return properties(prop, architecture);
}
#endif

hipError_t hipSetDevice(int device) {
  current_device = device;
  return hipSuccess;
}

hipError_t hipGetDevice(int* device) {
  *device = current_device;
  return hipSuccess;
}

hipError_t hipDeviceSynchronize() { return entry("hipDeviceSynchronize"); }

hipError_t hipMemGetInfo(size_t* free, size_t* total) {
  *free = *total = size_t(1) << 30;
  return hipSuccess;
}

hipError_t hipMalloc(void** ptr, size_t size) {
  ENTER("hipMalloc");
  *ptr = std::aligned_alloc(256, (size + 255) / 256 * 256);
  if (!*ptr) return hipErrorOutOfMemory;
  std::lock_guard lock(mutex);
  allocations[reinterpret_cast<uintptr_t>(*ptr)] = {size, current_device};
  return hipSuccess;
}

hipError_t hipFree(void* ptr) {
  // Never given back to malloc: the real runtime's addresses are never host memory, and libporta
  // takes a host buffer at a freed device address for a use after free.
  std::lock_guard lock(mutex);
  allocations.erase(reinterpret_cast<uintptr_t>(ptr));
  if (ptr) retired.push_back(ptr);
  return hipSuccess;
}

hipError_t hipPointerGetAttribute(void* data, hipPointer_attribute attribute, hipDeviceptr_t ptr) {
  ENTER("hipPointerGetAttribute");
  if (attribute != HIP_POINTER_ATTRIBUTE_DEVICE_ORDINAL) return hipErrorNotSupported;
  std::lock_guard lock(mutex);
  const int device = device_of(ptr, 1);
  if (device < 0) return hipErrorInvalidValue;
  *static_cast<int*>(data) = device;
  return hipSuccess;
}

hipError_t hipDeviceCanAccessPeer(int* can, int device, int peer_device) {
  ENTER("hipDeviceCanAccessPeer");
  if (device < 0 || device >= device_count || peer_device < 0 || peer_device >= device_count)
    return hipErrorInvalidDevice;
  *can = device != peer_device && peer;
  return hipSuccess;
}

hipError_t hipDeviceEnablePeerAccess(int peer_device, unsigned int flags) {
  ENTER("hipDeviceEnablePeerAccess");
  if (flags != 0) return hipErrorInvalidValue;
  if (peer_device < 0 || peer_device >= device_count) return hipErrorInvalidDevice;
  std::lock_guard lock(mutex);
  if (!peer || peer_device == current_device) return hipErrorInvalidDevice;
  bool& enabled = peer_access[{current_device, peer_device}];
  if (enabled || peer_enabled) return hipErrorPeerAccessAlreadyEnabled;
  enabled = true;
  ++peer_events[pair_name("enable", current_device, peer_device)];
  return hipSuccess;
}

// Checks what the real runtime cannot be seen to check: each pointer lies in memory of the
// device named with it, and the stream belongs to the current device.
hipError_t hipMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device,
                              size_t size, hipStream_t stream) {
  ENTER("hipMemcpyPeerAsync");
  if (!stream || stream->device != current_device) return hipErrorInvalidHandle;
  std::lock_guard lock(mutex);
  if (device_of(dst, size) != dst_device || device_of(src, size) != src_device)
    return hipErrorInvalidValue;
  std::memcpy(dst, src, size);
  ++peer_events[pair_name("copy", src_device, dst_device)];
  return hipSuccess;
}

hipError_t hipHostMalloc(void** ptr, size_t size, unsigned int) {
  *ptr = std::malloc(size);
  return *ptr ? hipSuccess : hipErrorOutOfMemory;
}

hipError_t hipHostFree(void* ptr) {
  std::free(ptr);
  return hipSuccess;
}

hipError_t hipStreamCreateWithFlags(hipStream_t* stream, unsigned int) {
  *stream = new ihipStream_t{current_device};
  return hipSuccess;
}

hipError_t hipStreamDestroy(hipStream_t stream) {
  delete stream;
  return hipSuccess;
}

hipError_t hipStreamSynchronize(hipStream_t stream) {
  ENTER("hipStreamSynchronize");
  return wait_out(stream->stalled);
}
hipError_t hipStreamQuery(hipStream_t stream) {
  ENTER("hipStreamQuery");
  return stalled(stream->stalled) ? hipErrorNotReady : hipSuccess;
}
hipError_t hipStreamWaitEvent(hipStream_t stream, hipEvent_t event, unsigned int) {
  if (!stream || !event) return hipErrorInvalidHandle;
  std::lock_guard lock(mutex);
  if (event->device >= 0 && event->device != stream->device)
    ++peer_events[pair_name("wait", stream->device, event->device)];
  return hipSuccess;
}

hipError_t hipMemcpyAsync(void* dst, const void* src, size_t size, hipMemcpyKind, hipStream_t) {
  std::memcpy(dst, src, size);
  return hipSuccess;
}

hipError_t hipMemsetD8Async(hipDeviceptr_t dst, unsigned char value, size_t size, hipStream_t) {
  std::memset(dst, value, size);
  return hipSuccess;
}

hipError_t hipEventCreateWithFlags(hipEvent_t* event, unsigned) {
  *event = new ihipEvent_t{-1, nullptr};
  return hipSuccess;
}

hipError_t hipEventDestroy(hipEvent_t event) {
  delete event;
  return hipSuccess;
}

hipError_t hipEventRecord(hipEvent_t event, hipStream_t stream) {
  if (!event || !stream) return hipErrorInvalidHandle;
  std::lock_guard lock(mutex);
  event->device = stream->device;
  event->behind = stalled(stream->stalled) ? stream->stalled : nullptr;
  return hipSuccess;
}
hipError_t hipEventQuery(hipEvent_t event) {
  std::lock_guard lock(mutex);
  return stalled(event->behind) ? hipErrorNotReady : hipSuccess;
}
hipError_t hipEventSynchronize(hipEvent_t event) {
  std::shared_ptr<std::atomic<bool>> behind;
  {
    std::lock_guard lock(mutex);
    behind = event->behind;
  }
  return wait_out(behind);
}

hipError_t hipEventElapsedTime(float* ms, hipEvent_t, hipEvent_t) {
  *ms = 1.0f;
  return hipSuccess;
}

hipError_t hipModuleLoadData(hipModule_t* module, const void* image) {
  ENTER("hipModuleLoadData");
  auto* m = new ihipModule_t{static_cast<const unsigned char*>(image), {}};
  std::memcpy(m->head, image, sizeof(m->head));
  *module = m;
  return hipSuccess;
}

hipError_t hipModuleUnload(hipModule_t module) {
  delete module;
  return hipSuccess;
}

// Reads the image again, as a runtime that loads lazily does: freed memory no longer holds it.
hipError_t hipModuleGetFunction(hipFunction_t* out, hipModule_t module, const char*) {
  ENTER("hipModuleGetFunction");
  if (std::memcmp(module->image, module->head, sizeof(module->head)) != 0) {
    return hipErrorInvalidImage;
  }
  *out = &function;
  return hipSuccess;
}

// Finds the global in the loaded image, as the runtime does (fake_globals.h).
hipError_t hipModuleGetGlobal(hipDeviceptr_t* address, size_t* bytes, hipModule_t module,
                              const char* name) {
  ENTER("hipModuleGetGlobal");
  const unsigned char* data = nullptr;
  size_t size = 0;
  if (!porta_fake::find_global(module->image, name, &data, &size)) return hipErrorNotFound;
  *address = const_cast<unsigned char*>(data);
  *bytes = size;
  return hipSuccess;
}

hipError_t hipMemcpyDtoH(void* dst, hipDeviceptr_t src, size_t size) {
  ENTER("hipMemcpyDtoH");
  std::memcpy(dst, src, size);
  return hipSuccess;
}

hipError_t hipFuncGetAttribute(int* value, hipFunction_attribute attribute, hipFunction_t) {
  *value = attribute == HIP_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK ? 256 : 0;
  return hipSuccess;
}

hipError_t hipModuleLaunchKernel(hipFunction_t, unsigned int, unsigned int, unsigned int,
                                 unsigned int, unsigned int, unsigned int, unsigned int,
                                 hipStream_t, void**, void**) {
  ENTER("hipModuleLaunchKernel");
  ++launches;
  return hipSuccess;
}

int porta_fake_hip_launches() { return launches; }

hipError_t hipLaunchHostFunc(hipStream_t, hipHostFn_t fn, void* user_data) {
  fn(user_data);
  return hipSuccess;
}

}  // extern "C"
