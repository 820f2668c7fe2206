// A stand-in for NCCL (built as libnccl.so.2 for tests only), beside the stand-in CUDA driver, so
// that the NCCL engine's logic runs without a GPU (and, with PORTA_FAKE_RCCL, for RCCL as
// librccl.so.1 beside the stand-in HIP runtime, whose names take the place of CUDA's below): a
// communicator of any size whose collectives act as if every other rank contributed nothing (the
// result is this rank's data), and, with PORTA_FAKE_NCCL=missing=1, collectives that never
// complete, as when a rank never joins: the fake driver's stream stalls (porta_fake_cuda_stall)
// until ncclCommAbort ends it, as the real abort ends the waiting kernels.
// PORTA_FAKE_NCCL=async_error=C stalls the same way, and ncclCommGetAsyncError then answers C, as
// NCCL does when a peer's connection fails.
// PORTA_FAKE_NCCL=meet: the ranks, one per process (under mpirun), meet in shared memory named by
// the unique id: a collective counts this rank's arrival there, and its stream stalls until every
// rank has arrived at it, so that a rank that skips a collective leaves the others waiting.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
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

std::string config() {
  const char* text = std::getenv("PORTA_FAKE_NCCL");
  return text ? text : "";
}

void stall(CUstream_st* stream, int stalled);

// Where the ranks of one communicator meet (PORTA_FAKE_NCCL=meet): per rank, in shared memory, the
// number of collectives it has called; a thread releases each stalled stream once every rank has
// arrived at the collectives it waits for.
class Meeting {
 public:
  Meeting(const std::string& name, int rank, int size) : name_(name), rank_(rank), size_(size) {
    const int fd = shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, bytes()) != 0) std::abort();  // a test setup error
    void* shared = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (shared == MAP_FAILED) std::abort();
    arrived_ = static_cast<std::atomic<uint64_t>*>(shared);
    watcher_ = std::thread([this] { watch(); });
  }
  ~Meeting() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    watcher_.join();
    for (const Waiting& w : waiting_) stall(w.stream, 0);
    munmap(arrived_, bytes());
    shm_unlink(name_.c_str());
  }
  // This rank arrives at its next collective, queued on stream.
  void arrive(CUstream_st* stream) {
    std::lock_guard lock(mutex_);
    const uint64_t sequence = ++sequence_;
    arrived_[rank_].store(sequence);
    if (all_arrived(sequence)) return;
    stall(stream, 1);
    waiting_.push_back({sequence, stream});
  }

 private:
  struct Waiting {
    uint64_t sequence;
    CUstream_st* stream;
  };
  size_t bytes() const { return sizeof(uint64_t) * size_; }
  bool all_arrived(uint64_t sequence) const {
    for (int rank = 0; rank < size_; ++rank) {
      if (arrived_[rank].load() < sequence) return false;
    }
    return true;
  }
  void watch() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      lock.lock();
      std::vector<Waiting> still;
      for (const Waiting& w : waiting_) {
        if (!all_arrived(w.sequence)) still.push_back(w);
      }
      for (const Waiting& w : waiting_) {  // a stream runs on once nothing on it waits
        bool waits = false;
        for (const Waiting& s : still) waits = waits || s.stream == w.stream;
        if (!waits) stall(w.stream, 0);
      }
      waiting_ = std::move(still);
    }
  }

  std::string name_;
  int rank_, size_;
  std::atomic<uint64_t>* arrived_ = nullptr;
  std::mutex mutex_;
  uint64_t sequence_ = 0;
  std::vector<Waiting> waiting_;
  bool stopping_ = false;
  std::thread watcher_;
};

struct Comm {
  int rank = 0, size = 0;
  std::vector<CUstream_st*> stalled;  // streams stalled by a collective no rank completes
  result_t async_error = 0;           // what ncclCommGetAsyncError answers
  std::unique_ptr<Meeting> meeting;   // PORTA_FAKE_NCCL=meet
};

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
  if (comm->meeting) comm->meeting->arrive(static_cast<CUstream_st*>(stream));
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

// The name of the ranks' meeting place: unique per id made.
result_t ncclGetUniqueId(UniqueId* id) {
  static std::atomic<int> made{0};
  std::memset(id->internal, 0, sizeof(id->internal));
  std::snprintf(id->internal, sizeof(id->internal), "/porta-fake-nccl-%d-%d", int(getpid()),
                made++);
  return kSuccess;
}

result_t ncclCommInitRank(Comm** comm, int size, UniqueId id, int rank) {
  if (size < 1 || rank < 0 || rank >= size) return kInvalidArgument;
  *comm = new Comm{};
  (*comm)->rank = rank;
  (*comm)->size = size;
  if (config().find("meet") != std::string::npos) {
    (*comm)->meeting = std::make_unique<Meeting>(id.internal, rank, size);
  }
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
