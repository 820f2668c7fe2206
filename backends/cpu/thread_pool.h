// The thread pool that runs work-groups, shared by every stream of the backend.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace porta::cpu {

// A 64-byte-aligned block that only grows. Every thread that runs work-groups owns one and lends
// it to each group as its shared memory, so no group allocates.
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ~ScratchBuffer();
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  // At least bytes (> 0) of storage: the same block, contents kept, while it is large enough
  // (a thread's groups of one launch share it in turn, and the GEMM engine's next group reuses
  // what the one before packed there); a new one, contents lost, when it must grow. Throws
  // std::bad_alloc.
  void* reserve(size_t bytes);

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

class ThreadPool {
 public:
  // fn(begin, end, scratch) runs the indices [begin, end) with the calling thread's scratch.
  using RangeFn = std::function<void(uint64_t begin, uint64_t end, ScratchBuffer& scratch)>;

  // One thread per CPU of cpus (not empty): starts cpus.size() - 1 workers, worker i bound to
  // cpus[i + 1], and binds a caller of parallel_for to cpus[0] while it works on a job the
  // workers share. Left to the OS, a worker woken while every core looked busy often landed on
  // the caller's core, and the whole job ran at half speed.
  explicit ThreadPool(std::vector<int> cpus);
  // Joins the workers. No parallel_for may be running.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  unsigned thread_count() const { return static_cast<unsigned>(workers_.size()); }

  // Runs fn over [0, count) in chunks, on the pool and on the calling thread (with its
  // caller_scratch), and returns when every index has run. Several threads may call it at once:
  // their jobs share the pool, and each caller always works on its own job, so one job never
  // waits for another. The first exception fn throws is rethrown here once all chunks are done.
  void parallel_for(uint64_t count, const RangeFn& fn, ScratchBuffer& caller_scratch);

  // Wakes the sleeping workers to poll for a job about to come: a launch calls it as it is
  // queued, so that the workers' wake-up, slow on an idle core, overlaps the launch's way to its
  // stream's worker instead of following it.
  void expect_work();

 private:
  struct Job;

  void worker_main(unsigned index);
  void retire(const std::shared_ptr<Job>& job);

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<Job>> jobs_;  // jobs that may still have unclaimed chunks
  std::atomic<size_t> job_count_{0};         // jobs_.size(), polled by spinning workers
  uint64_t announcements_ = 0;               // expect_work calls
  bool stopping_ = false;
  std::vector<int> cpus_;
  std::vector<std::thread> workers_;
};

}  // namespace porta::cpu
