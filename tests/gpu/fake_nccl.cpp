// A stand-in for NCCL (built as libnccl.so.2 for tests only), beside the stand-in CUDA driver, so
// that the NCCL engine's logic runs without a GPU (and, with PORTA_FAKE_RCCL, for RCCL as
// librccl.so.1 beside the stand-in HIP runtime, whose names take the place of CUDA's below): a
// communicator of any size whose collectives act as if every other rank contributed nothing (the
// result is this rank's data), and, with PORTA_FAKE_NCCL=missing=1, collectives that never
// complete, as when a rank never joins: the fake driver's stream stalls (porta_fake_cuda_stall)
// until ncclCommAbort ends it, as the real abort ends the waiting kernels.
// PORTA_FAKE_NCCL=async_error=C stalls the same way, and ncclCommGetAsyncError then answers C, as
// NCCL does when a peer's connection fails.
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct CUstream_st;

namespace {

#if defined(PORTA_FAKE_RCCL)
constexpr const char* kDriver = "libamdhip64.so.7";
constexpr const char* kStall = "porta_fake_hip_stall";
#else
constexpr const char* kDriver = "libcuda.so.1";
constexpr const char* kStall = "porta_fake_cuda_stall";
#endif

using result_t = int;
constexpr result_t kSuccess = 0, kInvalidArgument = 4;
constexpr int kFloat16 = 6, kFloat32 = 7, kBfloat16 = 9;

struct UniqueId {
  char internal[128];
};

struct Comm {
  int rank, size;
  std::vector<CUstream_st*> stalled;  // streams stalled by a collective no rank completes
  result_t async_error;               // what ncclCommGetAsyncError answers
};

std::string config() {
  const char* text = std::getenv("PORTA_FAKE_NCCL");
  return text ? text : "";
}

// The code after "async_error=", or 0.
result_t async_error() {
  const std::string text = config();
  const size_t at = text.find("async_error=");
  return at == std::string::npos ? 0 : std::atoi(text.c_str() + at + 12);
}

// The fake driver's switch for a stream that never completes (nullptr when not loaded).
void stall(CUstream_st* stream, int stalled) {
  void* driver = dlopen(kDriver, RTLD_NOW | RTLD_NOLOAD);
  if (!driver) return;
  using stall_t = void (*)(CUstream_st*, int);
  if (auto fn = reinterpret_cast<stall_t>(dlsym(driver, kStall))) {
    fn(stream, stalled);
  }
  dlclose(driver);
}

size_t element_size(int type) {
  return type == kFloat32 ? 4 : type == kFloat16 || type == kBfloat16 ? 2 : 1;
}

// recv = send on this rank; or, with a rank missing, a stream that never gets there.
result_t collective(Comm* comm, const void* send, void* recv, size_t bytes, void* stream) {
  if (!comm) return kInvalidArgument;
  if (config().find("missing=1") != std::string::npos || async_error() != 0) {
    comm->async_error = async_error();
    comm->stalled.push_back(static_cast<CUstream_st*>(stream));
    stall(static_cast<CUstream_st*>(stream), 1);
    return kSuccess;
  }
  if (send != recv) std::memmove(recv, send, bytes);
  return kSuccess;
}

}  // namespace

extern "C" {

result_t ncclGetVersion(int* version) {
  *version = 22105;
  return kSuccess;
}

result_t ncclGetUniqueId(UniqueId* id) {
  std::memset(id->internal, 0, sizeof(id->internal));
  std::strcpy(id->internal, "fake nccl");
  return kSuccess;
}

result_t ncclCommInitRank(Comm** comm, int size, UniqueId, int rank) {
  if (size < 1 || rank < 0 || rank >= size) return kInvalidArgument;
  *comm = new Comm{rank, size, {}, 0};
  return kSuccess;
}

result_t ncclCommDestroy(Comm* comm) {
  delete comm;
  return kSuccess;
}

result_t ncclCommAbort(Comm* comm) {
  for (CUstream_st* stream : comm->stalled) stall(stream, 0);
  delete comm;
  return kSuccess;
}

// A missing rank alone is never an error: only a collective that does not finish.
result_t ncclCommGetAsyncError(Comm* comm, result_t* error) {
  if (!comm) return kInvalidArgument;
  *error = comm->async_error;
  return kSuccess;
}

const char* ncclGetErrorString(result_t result) {
  return result == kInvalidArgument ? "invalid argument (fake)"
         : result == 6              ? "remote process exited or there was a network error (fake)"
                                    : "fake NCCL error";
}

result_t ncclAllReduce(const void* send, void* recv, size_t count, int type, int, Comm* comm,
                       void* stream) {
  return collective(comm, send, recv, count * element_size(type), stream);
}

result_t ncclBroadcast(const void* send, void* recv, size_t count, int type, int, Comm* comm,
                       void* stream) {
  return collective(comm, send, recv, count * element_size(type), stream);
}

result_t ncclAllGather(const void* send, void* recv, size_t count, int type, Comm* comm,
                       void* stream) {
  if (!comm) return kInvalidArgument;
  const size_t bytes = count * element_size(type);
  return collective(comm, send, static_cast<char*>(recv) + comm->rank * bytes, bytes, stream);
}

result_t ncclReduceScatter(const void* send, void* recv, size_t count, int type, int, Comm* comm,
                           void* stream) {
  if (!comm) return kInvalidArgument;
  const size_t bytes = count * element_size(type);
  return collective(comm, static_cast<const char*>(send) + comm->rank * bytes, recv, bytes, stream);
}

}  // extern "C"
