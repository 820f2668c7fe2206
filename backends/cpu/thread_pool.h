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

#include "spin_wait.h"

namespace porta::cpu {

// A 64-byte-aligned block that only grows. Every thread that runs work-groups owns one and lends
// it to each group as its shared memory, so no group allocates.
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ~ScratchBuffer();
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  // At least bytes (> 0) of storage; the contents are not kept. Throws std::bad_alloc.
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
  // cpus[i + 1], and binds a caller of parallel_for that the workers join to cpus[0]
  // (hold_cpu: until it calls release_held_cpu). Left to the OS, a worker woken while every core
  // looked busy often landed on the caller's core, and the whole job ran at half speed. Workers
  // with nothing to do, and a caller waiting for its job's last chunks, spin on spin (which must
  // outlive the pool) before they sleep.
  ThreadPool(std::vector<int> cpus, SpinWait& spin);
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

  // Wakes the sleeping workers to spin for a job that is on its way: called where a launch is
  // queued, their wake overlaps the stream worker's instead of following it. A no-op when the
  // workers may not spin.
  void expect_job();

 private:
  struct Job;

  void worker_main(unsigned index);
  void retire(const std::shared_ptr<Job>& job);

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<Job>> jobs_;  // jobs that may still have unclaimed chunks
  std::atomic<size_t> job_count_{0};        // jobs_.size(), for the spin to read without mutex_
  std::atomic<bool> stopping_{false};       // written with mutex_ held
  uint64_t expected_ = 0;                   // expect_job calls, guarded by mutex_
  std::atomic<unsigned> sleeping_{0};       // workers waiting on wake_
  SpinWait& spin_;
  SpinHistory job_history_;  // of the callers waiting for their jobs' last chunks
  std::vector<int> cpus_;
  std::vector<std::thread> workers_;
};

}  // namespace porta::cpu
