// A stand-in for the CUDA driver (built as libcuda.so.1 for tests only), so that the real CUDA
// plugin's driver logic runs without a GPU: version gating, lazy primary contexts, restoring the
// caller's context, and the mapping of sticky errors. "Device memory" is host memory and kernels
// do nothing. PORTA_FAKE_CUDA configures it at each cuInit, as comma-separated key=value pairs:
//   version=N      what cuDriverGetVersion answers (default 13000)
//   devices=N      how many devices (default 2)
//   refuse=I       cuDevicePrimaryCtxRetain fails for device I (CUDA_ERROR_DEVICE_UNAVAILABLE)
//   prohibited=I   device I reports the prohibited compute mode, and refuses as above
//   fail=F:C       the call F (e.g. cuLaunchKernel, cuModuleLoadData) fails with code C; a
//                  sticky code (cuda.h: "any further CUDA work will return the same error") is
//                  then returned by every later call, as the real driver does
//   cc=N           the compute capability of every device (default 90)
//   max_threads=N  what cuFuncGetAttribute answers for CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
//   peer=0|1       what cuDeviceCanAccessPeer answers between different devices (default 1)
//   peer_enabled=1 peer access is already enabled between every pair (an application did it):
//                  cuCtxEnablePeerAccess answers CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED
// porta_fake_cuda_retained(I) tells the tests how often device I's primary context is retained;
// porta_fake_cuda_peer(NAME) how often NAME happened: "enable I J" (cuCtxEnablePeerAccess from
// device I to J), "copy I J" (cuMemcpyPeerAsync from I's memory to J's), "wait I J" (a stream of
// device I waited on an event recorded on device J). porta_fake_cuda_stall(stream, 1) makes work
// queued on the stream from then on never complete (as a collective whose peers never come):
// events recorded after it stay not ready and synchronising the stream waits, until
// porta_fake_cuda_stall(stream, 0) (the stand-in NCCL's abort).
// porta_fake_cuda_launches() tells how many kernel launches reached the driver. cuModuleGetGlobal
// finds globals in the loaded image itself (fake_globals.h).
#include <cuda.h>

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

struct CUctx_st {
  int device;
};
struct CUstream_st {
  int device;
  std::shared_ptr<std::atomic<bool>> stalled = std::make_shared<std::atomic<bool>>(false);
};
struct CUevent_st {
  int device;                                 // of the stream it was last recorded on; -1 before
  std::shared_ptr<std::atomic<bool>> behind;  // the stall it was recorded behind, if any
};
struct CUmod_st {
  const void* image;  // the plugin keeps it alive while the module is loaded
};
struct CUfunc_st {
  int unused;
};

namespace {

struct Config {
  int version = 13000;
  int devices = 2;
  int refuse = -1;
  int prohibited = -1;
  std::string fail_call;
  CUresult fail_code = CUDA_SUCCESS;
  int max_threads = 1024;
  int cc = 90;
  bool peer = true;
  bool peer_enabled = false;
};

std::mutex mutex;
Config config;
CUresult sticky = CUDA_SUCCESS;
CUctx_st contexts[8];
std::atomic<int> retained[8];
thread_local CUcontext current = nullptr;
CUfunc_st function;
// Device memory by address, with its size and device, for cuPointerGetAttribute; under mutex.
std::map<uintptr_t, std::pair<size_t, int>> allocations;
std::map<std::string, int> peer_events;  // porta_fake_cuda_peer; under mutex
std::vector<void*> retired;              // freed device memory, kept; under mutex
bool peer_access[8][8];                  // enabled from [device] to [peer]; under mutex

// The device of the allocation holding [ptr, ptr + size), or -1.
int device_of(CUdeviceptr ptr, size_t size) {
  auto it = allocations.upper_bound(ptr);
  if (it == allocations.begin()) return -1;
  --it;
  return ptr + size <= it->first + it->second.first ? it->second.second : -1;
}

std::string pair_name(const char* what, int a, int b) {
  return std::string(what) + " " + std::to_string(a) + " " + std::to_string(b);
}
std::atomic<int> launches{0};

bool is_sticky(CUresult code) {
  switch (code) {
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_ECC_UNCORRECTABLE:
    case CUDA_ERROR_CONTAINED:
    case CUDA_ERROR_NVLINK_UNCORRECTABLE:
    case CUDA_ERROR_TENSOR_MEMORY_LEAK:
    case CUDA_ERROR_EXTERNAL_DEVICE:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
      return true;
    default:
      return false;
  }
}

void read_config() {
  Config c;
  const char* text = std::getenv("PORTA_FAKE_CUDA");
  std::string rest = text ? text : "";
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string item = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "version") c.version = std::atoi(value.c_str());
    if (key == "devices") c.devices = std::atoi(value.c_str());
    if (key == "refuse") c.refuse = std::atoi(value.c_str());
    if (key == "prohibited") c.prohibited = std::atoi(value.c_str());
    if (key == "max_threads") c.max_threads = std::atoi(value.c_str());
    if (key == "cc") c.cc = std::atoi(value.c_str());
    if (key == "peer") c.peer = value != "0";
    if (key == "peer_enabled") c.peer_enabled = value != "0";
    if (key == "fail") {
      const size_t colon = value.find(':');
      c.fail_call = value.substr(0, colon);
      c.fail_code = static_cast<CUresult>(std::atoi(value.substr(colon + 1).c_str()));
    }
  }
  std::lock_guard lock(mutex);
  config = c;
  sticky = CUDA_SUCCESS;
  for (int i = 0; i < 8; ++i) contexts[i].device = i;
  peer_events.clear();
  for (auto& row : peer_access)
    for (bool& enabled : row) enabled = c.peer_enabled;
}

// What a call returns before doing anything: a sticky error, or the failure configured for it.
CUresult entry(const char* call) {
  std::lock_guard lock(mutex);
  if (sticky != CUDA_SUCCESS) return sticky;
  if (config.fail_call == call) {
    if (is_sticky(config.fail_code)) sticky = config.fail_code;
    return config.fail_code;
  }
  return CUDA_SUCCESS;
}

#define ENTER(call) \
  if (CUresult early = entry(call); early != CUDA_SUCCESS) return early

bool valid_device(CUdevice dev) { return dev >= 0 && dev < config.devices && dev < 8; }

bool stalled(const std::shared_ptr<std::atomic<bool>>& stall) { return stall && stall->load(); }

// Waits while the stall lasts; a test that never ends it fails here after a minute, not hangs.
CUresult wait_out(const std::shared_ptr<std::atomic<bool>>& stall) {
  for (int i = 0; i < 60000 && stalled(stall); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return stalled(stall) ? CUDA_ERROR_LAUNCH_TIMEOUT : CUDA_SUCCESS;
}

}  // namespace

extern "C" {

int porta_fake_cuda_retained(int device) { return retained[device].load(); }
int porta_fake_cuda_launches() { return launches.load(); }

void porta_fake_cuda_stall(CUstream stream, int stall) { stream->stalled->store(stall != 0); }

int porta_fake_cuda_peer(const char* name) {
  std::lock_guard lock(mutex);
  auto it = peer_events.find(name);
  return it == peer_events.end() ? 0 : it->second;
}

CUresult cuInit(unsigned int) {
  read_config();
  return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* version) {
  *version = config.version;
  return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char** out) {
  static const std::map<int, const char*> names = {
      {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED"},
      {CUDA_ERROR_CONTAINED, "CUDA_ERROR_CONTAINED"},
      {CUDA_ERROR_DEVICE_UNAVAILABLE, "CUDA_ERROR_DEVICE_UNAVAILABLE"},
      {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN"}};
  auto it = names.find(error);
  if (it == names.end()) return CUDA_ERROR_INVALID_VALUE;
  *out = it->second;
  return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult, const char** out) {
  *out = "fake driver error";
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* count) {
  *count = config.devices;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  if (!valid_device(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
  std::snprintf(name, len, "Fake GPU %d", dev);
  return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem(size_t* bytes, CUdevice) {
  *bytes = size_t(1) << 30;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute attribute, CUdevice dev) {
  switch (attribute) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X:
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y:
      *value = 1024;
      break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z:
      *value = 64;
      break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X:
      *value = 2147483647;
      break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y:
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z:
      *value = 65535;
      break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN:
      *value = 232448;
      break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE:
      *value = 32;
      break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
      *value = 132;
      break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
      *value = config.cc / 10;
      break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR:
      *value = config.cc % 10;
      break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE:
      *value = dev == config.prohibited ? CU_COMPUTEMODE_PROHIBITED : CU_COMPUTEMODE_DEFAULT;
      break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT:
      *value = 1;
      break;
    default:
      *value = 0;
  }
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* context, CUdevice dev) {
  ENTER("cuDevicePrimaryCtxRetain");
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  if (dev == config.refuse) return CUDA_ERROR_DEVICE_UNAVAILABLE;
  if (dev == config.prohibited) return CUDA_ERROR_UNKNOWN;
  ++retained[dev];
  *context = &contexts[dev];
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease(CUdevice dev) {
  if (!valid_device(dev) || retained[dev] == 0) return CUDA_ERROR_INVALID_CONTEXT;
  --retained[dev];
  return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext* context) {
  *context = current;
  return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext context) {
  current = context;
  return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize() {
  ENTER("cuCtxSynchronize");
  return current ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}

CUresult cuMemGetInfo(size_t* free, size_t* total) {
  ENTER("cuMemGetInfo");
  *free = *total = size_t(1) << 30;
  return CUDA_SUCCESS;
}

// Allocations need a current context, as the real driver's do: a call made without one shows
// that the plugin did not make its device current.
CUresult cuMemAlloc(CUdeviceptr* ptr, size_t size) {
  ENTER("cuMemAlloc");
  if (!current) return CUDA_ERROR_INVALID_CONTEXT;
  void* p = std::aligned_alloc(256, (size + 255) / 256 * 256);
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  *ptr = reinterpret_cast<CUdeviceptr>(p);
  std::lock_guard lock(mutex);
  allocations[*ptr] = {size, current->device};
  return CUDA_SUCCESS;
}

CUresult cuMemFree(CUdeviceptr ptr) {
  ENTER("cuMemFree");
  // Never given back to malloc: the real driver's addresses are never host memory, and libporta
  // takes a host buffer at a freed device address for a use after free.
  std::lock_guard lock(mutex);
  allocations.erase(ptr);
  retired.push_back(reinterpret_cast<void*>(ptr));
  return CUDA_SUCCESS;
}

CUresult cuPointerGetAttribute(void* data, CUpointer_attribute attribute, CUdeviceptr ptr) {
  ENTER("cuPointerGetAttribute");
  if (attribute != CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL) return CUDA_ERROR_NOT_SUPPORTED;
  std::lock_guard lock(mutex);
  const int device = device_of(ptr, 1);
  if (device < 0) return CUDA_ERROR_INVALID_VALUE;
  *static_cast<int*>(data) = device;
  return CUDA_SUCCESS;
}

CUresult cuDeviceCanAccessPeer(int* can, CUdevice dev, CUdevice peer) {
  ENTER("cuDeviceCanAccessPeer");
  if (!valid_device(dev) || !valid_device(peer)) return CUDA_ERROR_INVALID_DEVICE;
  *can = dev != peer && config.peer;
  return CUDA_SUCCESS;
}

CUresult cuCtxEnablePeerAccess(CUcontext peer, unsigned int flags) {
  ENTER("cuCtxEnablePeerAccess");
  if (!current) return CUDA_ERROR_INVALID_CONTEXT;
  if (!peer || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(mutex);
  if (!config.peer || peer == current) return CUDA_ERROR_PEER_ACCESS_UNSUPPORTED;
  bool& enabled = peer_access[current->device][peer->device];
  if (enabled) return CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED;
  enabled = true;
  ++peer_events[pair_name("enable", current->device, peer->device)];
  return CUDA_SUCCESS;
}

// Checks what the real driver cannot be seen to check: each pointer lies in memory of the
// context named with it, and the stream belongs to the current context.
CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dst_context, CUdeviceptr src,
                           CUcontext src_context, size_t size, CUstream stream) {
  ENTER("cuMemcpyPeerAsync");
  if (!current || !stream || stream->device != current->device) return CUDA_ERROR_INVALID_CONTEXT;
  std::lock_guard lock(mutex);
  if (!dst_context || !src_context || device_of(dst, size) != dst_context->device ||
      device_of(src, size) != src_context->device) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::memcpy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), size);
  ++peer_events[pair_name("copy", src_context->device, dst_context->device)];
  return CUDA_SUCCESS;
}

CUresult cuMemHostAlloc(void** ptr, size_t size, unsigned int) {
  ENTER("cuMemHostAlloc");
  *ptr = std::malloc(size);
  return *ptr ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuMemFreeHost(void* ptr) {
  ENTER("cuMemFreeHost");
  std::free(ptr);
  return CUDA_SUCCESS;
}

CUresult cuStreamCreate(CUstream* stream, unsigned int) {
  ENTER("cuStreamCreate");
  if (!current) return CUDA_ERROR_INVALID_CONTEXT;
  *stream = new CUstream_st{current->device};
  return CUDA_SUCCESS;
}

CUresult cuStreamDestroy(CUstream stream) {
  delete stream;  // the real driver releases a stream even after a sticky error
  return entry("cuStreamDestroy");
}

CUresult cuStreamSynchronize(CUstream stream) {
  ENTER("cuStreamSynchronize");
  return wait_out(stream->stalled);
}
CUresult cuStreamQuery(CUstream stream) {
  ENTER("cuStreamQuery");
  return stalled(stream->stalled) ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}
// Waits work across contexts, as the real driver's do; the stream's context need not be current.
CUresult cuStreamWaitEvent(CUstream stream, CUevent event, unsigned int) {
  ENTER("cuStreamWaitEvent");
  if (!stream || !event) return CUDA_ERROR_INVALID_HANDLE;
  std::lock_guard lock(mutex);
  if (event->device >= 0 && event->device != stream->device)
    ++peer_events[pair_name("wait", stream->device, event->device)];
  return CUDA_SUCCESS;
}

CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t size, CUstream) {
  ENTER("cuMemcpyAsync");
  std::memcpy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), size);
  return CUDA_SUCCESS;
}

CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t size, CUstream) {
  ENTER("cuMemsetD8Async");
  std::memset(reinterpret_cast<void*>(dst), value, size);
  return CUDA_SUCCESS;
}

CUresult cuEventCreate(CUevent* event, unsigned int) {
  ENTER("cuEventCreate");
  *event = new CUevent_st{-1, nullptr};
  return CUDA_SUCCESS;
}

CUresult cuEventDestroy(CUevent event) {
  delete event;
  return entry("cuEventDestroy");
}

CUresult cuEventRecord(CUevent event, CUstream stream) {
  ENTER("cuEventRecord");
  if (!event || !stream) return CUDA_ERROR_INVALID_HANDLE;
  std::lock_guard lock(mutex);
  event->device = stream->device;
  event->behind = stalled(stream->stalled) ? stream->stalled : nullptr;
  return CUDA_SUCCESS;
}
CUresult cuEventQuery(CUevent event) {
  ENTER("cuEventQuery");
  std::lock_guard lock(mutex);
  return stalled(event->behind) ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}
CUresult cuEventSynchronize(CUevent event) {
  ENTER("cuEventSynchronize");
  std::shared_ptr<std::atomic<bool>> behind;
  {
    std::lock_guard lock(mutex);
    behind = event->behind;
  }
  return wait_out(behind);
}

CUresult cuEventElapsedTime(float* ms, CUevent, CUevent) {
  ENTER("cuEventElapsedTime");
  *ms = 1.0f;
  return CUDA_SUCCESS;
}

CUresult cuModuleLoadData(CUmodule* module, const void* image) {
  ENTER("cuModuleLoadData");
  if (!current) return CUDA_ERROR_INVALID_CONTEXT;
  *module = new CUmod_st{image};
  return CUDA_SUCCESS;
}

CUresult cuModuleUnload(CUmodule module) {
  delete module;
  return entry("cuModuleUnload");
}

CUresult cuModuleGetFunction(CUfunction* out, CUmodule, const char*) {
  ENTER("cuModuleGetFunction");
  *out = &function;
  return CUDA_SUCCESS;
}

CUresult cuModuleGetGlobal_v2(CUdeviceptr* address, size_t* bytes, CUmodule module,
                              const char* name) {
  ENTER("cuModuleGetGlobal");
  if (!current) return CUDA_ERROR_INVALID_CONTEXT;
  const unsigned char* data = nullptr;
  size_t size = 0;
  if (!porta_fake::find_global(module->image, name, &data, &size)) return CUDA_ERROR_NOT_FOUND;
  *address = reinterpret_cast<CUdeviceptr>(data);
  *bytes = size;
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t size) {
  ENTER("cuMemcpyDtoH");
  std::memcpy(dst, reinterpret_cast<const void*>(src), size);
  return CUDA_SUCCESS;
}

CUresult cuFuncGetAttribute(int* value, CUfunction_attribute attribute, CUfunction) {
  ENTER("cuFuncGetAttribute");
  *value = attribute == CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK ? config.max_threads : 0;
  return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(CUfunction, CUfunction_attribute, int) {
  return entry("cuFuncSetAttribute");
}

CUresult cuLaunchKernel(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                        unsigned int, unsigned int, unsigned int, CUstream, void**, void**) {
  ENTER("cuLaunchKernel");
  if (!current) return CUDA_ERROR_INVALID_CONTEXT;
  ++launches;
  return CUDA_SUCCESS;
}

// Runs fn at once, as if the stream were idle; after a sticky error it is never run.
CUresult cuLaunchHostFunc(CUstream, CUhostFn fn, void* user_data) {
  ENTER("cuLaunchHostFunc");
  fn(user_data);
  return CUDA_SUCCESS;
}

}  // extern "C"
