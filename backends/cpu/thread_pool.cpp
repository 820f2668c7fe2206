#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <new>

#include "cpu_device.h"
#include "spin_wait.h"

namespace porta::cpu {

ScratchBuffer::~ScratchBuffer() { std::free(data_); }

void* ScratchBuffer::reserve(size_t bytes) {
  if (bytes <= capacity_) return data_;
  // Round up to whole pages so a series of slightly larger launches does not reallocate each time.
  constexpr size_t kPage = 4096;
  if (bytes > SIZE_MAX - kPage) throw std::bad_alloc();
  size_t capacity = (bytes + kPage - 1) / kPage * kPage;
  void* data = nullptr;
  if (posix_memalign(&data, 64, capacity) != 0) throw std::bad_alloc();
  std::free(data_);
  data_ = data;
  capacity_ = capacity;
  return data_;
}

// One parallel_for. Threads claim chunks from an atomic counter; the caller waits on `finished`
// until every claimed chunk has been run. Pool threads hold a shared_ptr, so the job outlives the
// last notify even after the caller has returned.
struct ThreadPool::Job {
  const RangeFn* fn;  // the caller's, alive until done == count
  uint64_t count;
  uint64_t chunk;
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> done{0};
  std::mutex mutex;
  std::condition_variable finished;
  std::exception_ptr error;  // guarded by mutex

  // Runs chunks until none is left to claim.
  void work(ScratchBuffer& scratch) {
    for (;;) {
      uint64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= count) return;
      uint64_t end = std::min(count, begin + chunk);
      try {
        (*fn)(begin, end, scratch);
      } catch (...) {
        std::lock_guard lock(mutex);
        if (!error) error = std::current_exception();
      }
      if (done.fetch_add(end - begin, std::memory_order_acq_rel) + (end - begin) == count) {
        std::lock_guard lock(mutex);
        finished.notify_all();
      }
    }
  }
};

ThreadPool::ThreadPool(std::vector<int> cpus) : cpus_(std::move(cpus)) {
  try {
    const unsigned threads = cpus_.empty() ? 0 : static_cast<unsigned>(cpus_.size()) - 1;
    workers_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) workers_.emplace_back(&ThreadPool::worker_main, this, i);
  } catch (...) {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
    throw;
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::worker_main(unsigned index) {
  bind_current_thread_to(cpus_[index + 1]);
  name_current_thread("porta-pool");
  ScratchBuffer scratch;
  uint64_t announced = 0;
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      spin_then_wait(
          lock, wake_, Spin::kShareCore,
          [&] { return job_count_.load(std::memory_order_relaxed) != 0; },
          [&] { return stopping_ || !jobs_.empty() || announcements_ != announced; });
      announced = announcements_;
      if (jobs_.empty()) {
        if (stopping_) return;
        continue;  // woken by expect_work: poll for the job it announced
      }
      // Spread the workers over the jobs running at once instead of piling onto the first.
      job = jobs_[index % jobs_.size()];
    }
    job->work(scratch);
    retire(job);
  }
}

void ThreadPool::expect_work() {
  if (workers_.empty()) return;
  {
    std::lock_guard lock(mutex_);
    ++announcements_;
  }
  wake_.notify_all();
}

void ThreadPool::retire(const std::shared_ptr<Job>& job) {
  std::lock_guard lock(mutex_);
  auto it = std::find(jobs_.begin(), jobs_.end(), job);
  if (it != jobs_.end()) jobs_.erase(it);
  job_count_.store(jobs_.size(), std::memory_order_relaxed);
}

void ThreadPool::parallel_for(uint64_t count, const RangeFn& fn, ScratchBuffer& caller_scratch) {
  if (count == 0) return;
  // The caller counts as one worker. About eight chunks per worker balances groups of uneven
  // cost while keeping the shared counter out of the hot path.
  const uint64_t workers = uint64_t{thread_count()} + 1;
  const uint64_t chunk = std::max<uint64_t>(1, count / (workers * 8));
  if (workers == 1 || count <= chunk) {
    fn(0, count, caller_scratch);
    return;
  }
  const ScopedCpuBinding placement(cpus_[0]);
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->count = count;
  job->chunk = chunk;
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(job);
    job_count_.store(jobs_.size(), std::memory_order_relaxed);
  }
  wake_.notify_all();
  job->work(caller_scratch);
  retire(job);
  std::unique_lock lock(job->mutex);
  const auto finished = [&] { return job->done.load(std::memory_order_acquire) == count; };
  spin_then_wait(lock, job->finished, Spin::kHoldCore, finished, finished);
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace porta::cpu
