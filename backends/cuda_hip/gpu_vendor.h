// The vendor header: the one place that differs between the CUDA and the HIP build of this
// backend. Everything else in backends/cuda_hip/ speaks the names below; the HIP build compiles
// the same files with PORTA_GPU_HIP defined.
//
// The plugin is compiled by the host C++ compiler against the vendor's header only and links no
// vendor library: the driver is dlopen'ed at initialize and every function below is resolved by
// name into a table. Each pointer's type is decltype of the header's own declaration, so a wrong
// signature is a compile error, not a crash on a GPU machine.
//
// CUDA uses the driver API (cuda.h). Its header renames several functions to versioned symbols
// (cuMemAlloc -> cuMemAlloc_v2, cuEventElapsedTime -> cuEventElapsedTime_v2, ...); the table
// names those exact symbols, since the old unversioned exports keep their old ABI. HIP uses its
// runtime and module API (hip_runtime_api.h), whose symbols are unversioned.
#pragma once

#if defined(PORTA_GPU_HIP)
#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__ 1
#endif
#include <hip/hip_runtime_api.h>
#else
#include <cuda.h>
#endif

namespace porta::gpu {

#if defined(PORTA_GPU_HIP)

inline constexpr const char* kBackendName = "hip";
inline constexpr const char* kVendorName = "HIP";
// The runtime's sonames, newest ROCm first. Driver::open tries them in $ROCM_PATH/lib (the
// installation the user named), then on the loader's search path, then in /opt/rocm/lib.
inline constexpr const char* kDriverLibraries[] = {"libamdhip64.so.7", "libamdhip64.so.6",
                                                   "libamdhip64.so.5"};
inline constexpr const char* kDriverDirectoryVariable = "ROCM_PATH";
inline constexpr const char* kDriverDefaultDirectory = "/opt/rocm";
// hipDeviceProp_t as ROCm 5 laid it out, which hipGetDevicePropertiesR0000 keeps filling (ROCm
// 6 and later); the plain hipGetDeviceProperties is announced to change to a larger layout.
#if HIP_VERSION_MAJOR >= 6
using legacy_device_prop_t = hipDeviceProp_tR0000;
#else
using legacy_device_prop_t = hipDeviceProp_t;
#endif
using get_device_properties_t = hipError_t (*)(legacy_device_prop_t*, int);

using result_t = hipError_t;
using device_t = hipDevice_t;
using stream_t = hipStream_t;
using event_t = hipEvent_t;
using module_t = hipModule_t;
using function_t = hipFunction_t;
using deviceptr_t = hipDeviceptr_t;
using attribute_t = hipDeviceAttribute_t;
inline constexpr result_t kSuccess = hipSuccess;
inline constexpr result_t kNotReady = hipErrorNotReady;
inline constexpr unsigned kStreamNonBlocking = hipStreamNonBlocking;
inline constexpr unsigned kEventDefault = hipEventDefault;
inline constexpr unsigned kHostAllocPortable = hipHostMallocPortable;

namespace attr {
inline constexpr attribute_t kMaxThreadsPerBlock = hipDeviceAttributeMaxThreadsPerBlock;
inline constexpr attribute_t kMaxBlockDimX = hipDeviceAttributeMaxBlockDimX;
inline constexpr attribute_t kMaxBlockDimY = hipDeviceAttributeMaxBlockDimY;
inline constexpr attribute_t kMaxBlockDimZ = hipDeviceAttributeMaxBlockDimZ;
inline constexpr attribute_t kMaxGridDimX = hipDeviceAttributeMaxGridDimX;
inline constexpr attribute_t kMaxGridDimY = hipDeviceAttributeMaxGridDimY;
inline constexpr attribute_t kMaxGridDimZ = hipDeviceAttributeMaxGridDimZ;
// AMD has no opt-in above a default: the per-block maximum is all a group may use.
inline constexpr attribute_t kMaxSharedPerBlock = hipDeviceAttributeMaxSharedMemoryPerBlock;
inline constexpr attribute_t kWarpSize = hipDeviceAttributeWarpSize;
inline constexpr attribute_t kClockRateKHz = hipDeviceAttributeClockRate;
inline constexpr attribute_t kMultiprocessors = hipDeviceAttributeMultiprocessorCount;
inline constexpr attribute_t kUnifiedAddressing = hipDeviceAttributeUnifiedAddressing;
inline constexpr attribute_t kComputeMajor = hipDeviceAttributeComputeCapabilityMajor;
inline constexpr attribute_t kComputeMinor = hipDeviceAttributeComputeCapabilityMinor;
}  // namespace attr

// X(field, symbol): every driver function the backend calls. The table's field has the type of
// the header's declaration of symbol.
#define PORTA_GPU_FUNCTIONS(X)                   \
  X(init, hipInit)                               \
  X(driver_get_version, hipDriverGetVersion)     \
  X(get_error_name, hipGetErrorName)             \
  X(get_error_string, hipGetErrorString)         \
  X(device_get_count, hipGetDeviceCount)         \
  X(device_get, hipDeviceGet)                    \
  X(device_get_name, hipDeviceGetName)           \
  X(device_total_mem, hipDeviceTotalMem)         \
  X(device_get_attribute, hipDeviceGetAttribute) \
  X(set_device, hipSetDevice)                    \
  X(get_device, hipGetDevice)                    \
  X(device_synchronize, hipDeviceSynchronize)    \
  X(mem_get_info, hipMemGetInfo)                 \
  X(mem_free, hipFree)                           \
  X(host_free, hipHostFree)                      \
  X(stream_create, hipStreamCreateWithFlags)     \
  X(stream_destroy, hipStreamDestroy)            \
  X(stream_synchronize, hipStreamSynchronize)    \
  X(stream_query, hipStreamQuery)                \
  X(stream_wait_event, hipStreamWaitEvent)       \
  X(memcpy_async, hipMemcpyAsync)                \
  X(memset_d8_async, hipMemsetD8Async)           \
  X(event_create, hipEventCreateWithFlags)       \
  X(event_destroy, hipEventDestroy)              \
  X(event_record, hipEventRecord)                \
  X(event_query, hipEventQuery)                  \
  X(event_synchronize, hipEventSynchronize)      \
  X(event_elapsed_time, hipEventElapsedTime)     \
  X(module_load_data, hipModuleLoadData)         \
  X(module_unload, hipModuleUnload)              \
  X(module_get_function, hipModuleGetFunction)   \
  X(func_get_attribute, hipFuncGetAttribute)     \
  X(launch_kernel, hipModuleLaunchKernel)

// T(field, symbol, type): functions the C++ header overloads (with templates taking T**), so
// that decltype cannot name them; type picks the C declaration, and a static_cast in the driver
// checks that it matches one.
#define PORTA_GPU_TYPED_FUNCTIONS(T)                      \
  T(mem_alloc, hipMalloc, hipError_t (*)(void**, size_t)) \
  T(host_alloc, hipHostMalloc, hipError_t (*)(void**, size_t, unsigned int))

// Functions a driver may lack; the feature that needs one is then reported as unsupported.
#define PORTA_GPU_OPTIONAL_FUNCTIONS(X)                      \
  X(launch_host_func, hipLaunchHostFunc)                     \
  X(runtime_get_version, hipRuntimeGetVersion)               \
  X(mem_free_async, hipFreeAsync)                            \
  X(device_get_default_mem_pool, hipDeviceGetDefaultMemPool) \
  X(mem_pool_trim_to, hipMemPoolTrimTo)                      \
  X(mem_pool_set_attribute, hipMemPoolSetAttribute)          \
  X(mem_pool_get_attribute, hipMemPoolGetAttribute)          \
  X(device_can_access_peer, hipDeviceCanAccessPeer)          \
  X(enable_peer_access, hipDeviceEnablePeerAccess)           \
  X(memcpy_peer_async, hipMemcpyPeerAsync)                   \
  X(pointer_get_attribute, hipPointerGetAttribute)          \
  X(module_get_global, hipModuleGetGlobal)                   \
  X(memcpy_dtoh, hipMemcpyDtoH)
// The same, for functions the C++ header overloads (see PORTA_GPU_TYPED_FUNCTIONS).
#define PORTA_GPU_OPTIONAL_TYPED_FUNCTIONS(T) \
  T(mem_alloc_async, hipMallocAsync, hipError_t (*)(void**, size_t, hipStream_t))
// Looked up by name with the legacy layout's type (see legacy_device_prop_t): the R0000 symbol
// first, the plain one only from a runtime older than ROCm 6 (Backend::open_device).
#define PORTA_GPU_NAMED_OPTIONAL_FUNCTIONS(N)                                            \
  N(get_device_properties_r0000, "hipGetDevicePropertiesR0000", get_device_properties_t) \
  N(get_device_properties_plain, "hipGetDeviceProperties", get_device_properties_t)

using mem_pool_t = hipMemPool_t;
namespace pool_attr {
inline constexpr hipMemPoolAttr kReleaseThreshold = hipMemPoolAttrReleaseThreshold;
inline constexpr hipMemPoolAttr kReservedCurrent = hipMemPoolAttrReservedMemCurrent;
inline constexpr hipMemPoolAttr kUsedCurrent = hipMemPoolAttrUsedMemCurrent;
inline constexpr hipMemPoolAttr kUsedHigh = hipMemPoolAttrUsedMemHigh;
}  // namespace pool_attr

#else  // CUDA

inline constexpr const char* kBackendName = "cuda";
inline constexpr const char* kVendorName = "CUDA";
inline constexpr const char* kDriverLibraries[] = {"libcuda.so.1"};
inline constexpr const char* kDriverDirectoryVariable = "";  // the loader's path only
inline constexpr const char* kDriverDefaultDirectory = "";

using result_t = CUresult;
using device_t = CUdevice;
using stream_t = CUstream;
using event_t = CUevent;
using module_t = CUmodule;
using function_t = CUfunction;
using deviceptr_t = CUdeviceptr;
using attribute_t = CUdevice_attribute;
inline constexpr result_t kSuccess = CUDA_SUCCESS;
inline constexpr result_t kNotReady = CUDA_ERROR_NOT_READY;
inline constexpr unsigned kStreamNonBlocking = CU_STREAM_NON_BLOCKING;
inline constexpr unsigned kEventDefault = CU_EVENT_DEFAULT;
inline constexpr unsigned kHostAllocPortable = CU_MEMHOSTALLOC_PORTABLE;

namespace attr {
inline constexpr attribute_t kMaxThreadsPerBlock = CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK;
inline constexpr attribute_t kMaxBlockDimX = CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X;
inline constexpr attribute_t kMaxBlockDimY = CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y;
inline constexpr attribute_t kMaxBlockDimZ = CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z;
inline constexpr attribute_t kMaxGridDimX = CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X;
inline constexpr attribute_t kMaxGridDimY = CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y;
inline constexpr attribute_t kMaxGridDimZ = CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z;
// What a block may use once its kernel opts in (above the default 48 KiB): kernel_get opts in.
inline constexpr attribute_t kMaxSharedPerBlock =
    CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN;
inline constexpr attribute_t kWarpSize = CU_DEVICE_ATTRIBUTE_WARP_SIZE;
inline constexpr attribute_t kClockRateKHz = CU_DEVICE_ATTRIBUTE_CLOCK_RATE;
inline constexpr attribute_t kMultiprocessors = CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
inline constexpr attribute_t kUnifiedAddressing = CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING;
inline constexpr attribute_t kComputeMajor = CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR;
inline constexpr attribute_t kComputeMinor = CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR;
inline constexpr attribute_t kAsyncEngines = CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT;
inline constexpr attribute_t kComputeMode = CU_DEVICE_ATTRIBUTE_COMPUTE_MODE;
}  // namespace attr

#define PORTA_GPU_FUNCTIONS(X)                         \
  X(init, cuInit)                                      \
  X(driver_get_version, cuDriverGetVersion)            \
  X(get_error_name, cuGetErrorName)                    \
  X(get_error_string, cuGetErrorString)                \
  X(device_get_count, cuDeviceGetCount)                \
  X(device_get, cuDeviceGet)                           \
  X(device_get_name, cuDeviceGetName)                  \
  X(device_total_mem, cuDeviceTotalMem_v2)             \
  X(device_get_attribute, cuDeviceGetAttribute)        \
  X(primary_ctx_retain, cuDevicePrimaryCtxRetain)      \
  X(primary_ctx_release, cuDevicePrimaryCtxRelease_v2) \
  X(ctx_get_current, cuCtxGetCurrent)                  \
  X(ctx_set_current, cuCtxSetCurrent)                  \
  X(ctx_synchronize, cuCtxSynchronize)                 \
  X(mem_get_info, cuMemGetInfo_v2)                     \
  X(mem_alloc, cuMemAlloc_v2)                          \
  X(mem_free, cuMemFree_v2)                            \
  X(host_alloc, cuMemHostAlloc)                        \
  X(host_free, cuMemFreeHost)                          \
  X(stream_create, cuStreamCreate)                     \
  X(stream_destroy, cuStreamDestroy_v2)                \
  X(stream_synchronize, cuStreamSynchronize)           \
  X(stream_query, cuStreamQuery)                       \
  X(stream_wait_event, cuStreamWaitEvent)              \
  X(memcpy_async, cuMemcpyAsync)                       \
  X(memset_d8_async, cuMemsetD8Async)                  \
  X(event_create, cuEventCreate)                       \
  X(event_destroy, cuEventDestroy_v2)                  \
  X(event_record, cuEventRecord)                       \
  X(event_query, cuEventQuery)                         \
  X(event_synchronize, cuEventSynchronize)             \
  X(module_load_data, cuModuleLoadData)                \
  X(module_unload, cuModuleUnload)                     \
  X(module_get_function, cuModuleGetFunction)          \
  X(func_get_attribute, cuFuncGetAttribute)            \
  X(func_set_attribute, cuFuncSetAttribute)            \
  X(launch_kernel, cuLaunchKernel)

// cuEventElapsedTime_v2 appeared in CUDA 12.8 (same signature; it reports an event pair of
// another context better); older drivers only export the first version, looked up as a fallback.
#define PORTA_GPU_TYPED_FUNCTIONS(T)

#define PORTA_GPU_OPTIONAL_FUNCTIONS(X)                     \
  X(event_elapsed_time_v2, cuEventElapsedTime_v2)           \
  X(event_elapsed_time_v1, cuEventElapsedTime)              \
  X(launch_host_func, cuLaunchHostFunc)                     \
  X(mem_alloc_async, cuMemAllocAsync)                       \
  X(mem_free_async, cuMemFreeAsync)                         \
  X(device_get_default_mem_pool, cuDeviceGetDefaultMemPool) \
  X(mem_pool_trim_to, cuMemPoolTrimTo)                      \
  X(mem_pool_set_attribute, cuMemPoolSetAttribute)          \
  X(mem_pool_get_attribute, cuMemPoolGetAttribute)          \
  X(device_can_access_peer, cuDeviceCanAccessPeer)          \
  X(ctx_enable_peer_access, cuCtxEnablePeerAccess)          \
  X(memcpy_peer_async, cuMemcpyPeerAsync)                   \
  X(pointer_get_attribute, cuPointerGetAttribute)          \
  X(module_get_global, cuModuleGetGlobal_v2)                \
  X(memcpy_dtoh, cuMemcpyDtoH_v2)
#define PORTA_GPU_OPTIONAL_TYPED_FUNCTIONS(T)

using mem_pool_t = CUmemoryPool;
namespace pool_attr {
inline constexpr CUmemPool_attribute kReleaseThreshold = CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
inline constexpr CUmemPool_attribute kReservedCurrent = CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT;
inline constexpr CUmemPool_attribute kUsedCurrent = CU_MEMPOOL_ATTR_USED_MEM_CURRENT;
inline constexpr CUmemPool_attribute kUsedHigh = CU_MEMPOOL_ATTR_USED_MEM_HIGH;
}  // namespace pool_attr

#define PORTA_GPU_NAMED_OPTIONAL_FUNCTIONS(N)

#endif

}  // namespace porta::gpu
