#include "cpu_stream.h"

#include <pthread.h>

#include <utility>

#include "cpu_device.h"
#include "plugin_kit.h"

namespace porta::cpu {

using plugin::Error;
using plugin::error_of_current_exception;
using plugin::log;

namespace {

// Whether the calling thread's stack has room to run a task: a kernel's groups take tens of KiB
// of it (a 256^3 GEMM failed in a thread of 64 KiB). A thread with less (one its creator made
// small, or a C library's small default) leaves the tasks to the worker, as before.
bool stack_has_room() {
  constexpr size_t kTaskStackBytes = size_t{256} << 10;
  thread_local const char* const lowest = []() -> const char* {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return nullptr;
    void* base = nullptr;
    size_t size = 0;
    const bool known = pthread_attr_getstack(&attr, &base, &size) == 0;
    pthread_attr_destroy(&attr);
    return known ? static_cast<const char*>(base) : nullptr;
  }();
  const auto* here = static_cast<const char*>(__builtin_frame_address(0));
  return lowest && here > lowest && static_cast<size_t>(here - lowest) >= kTaskStackBytes;
}

}  // namespace

void Marker::complete() {
  std::lock_guard lock(mutex_);
  time_ = Clock::now();
  complete_ = true;
  completed_.notify_all();
}

bool Marker::is_complete() const {
  std::lock_guard lock(mutex_);
  return complete_;
}

void Marker::wait() const {
  std::unique_lock lock(mutex_);
  completed_.wait(lock, [&] { return complete_; });
}

Clock::time_point Marker::time() const {
  std::lock_guard lock(mutex_);
  return time_;
}

std::shared_ptr<Marker> CpuEvent::latest() const {
  std::lock_guard lock(mutex_);
  return latest_;
}

void CpuEvent::set_latest(std::shared_ptr<Marker> marker) {
  std::lock_guard lock(mutex_);
  latest_ = std::move(marker);
}

CpuStream::CpuStream() : worker_(&CpuStream::worker_main, this) {}

CpuStream::~CpuStream() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_one();
  worker_.join();
}

void CpuStream::enqueue(Task task, std::shared_ptr<Marker> marker, Runs runs) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(Entry{std::move(task), std::move(marker), runs});
    ++submitted_;
  }
  work_.notify_one();
}

void CpuStream::worker_main() {
  name_current_thread("porta-stream");
  std::unique_lock lock(mutex_);
  for (;;) {
    work_.wait(lock, [&] { return !running_ && (stopping_ || !queue_.empty()); });
    // Stopping drains the queue first: queued markers must complete or their waiters hang.
    if (queue_.empty()) return;
    run_front(lock);
  }
}

void CpuStream::run_front(std::unique_lock<std::mutex>& lock) {
  Entry entry = std::move(queue_.front());
  queue_.pop_front();
  running_ = true;
  lock.unlock();
  // Later tasks still run after a failure, as on a GPU stream: a failed launch must not leave
  // the events recorded after it forever incomplete.
  Error error{PORTA_SUCCESS, {}};
  try {
    if (entry.task) entry.task(scratch_);
  } catch (...) {
    error = error_of_current_exception("stream task");
  }
  entry.task = nullptr;  // release what the task holds (argument blocks, markers) before reporting
  if (error.status != PORTA_SUCCESS) {
    try {
      log(PORTA_LOG_DEBUG, "a queued operation failed: " + error.message);
    } catch (...) {
      // Out of memory for the log line; the error itself is still kept below.
    }
  }
  lock.lock();
  if (error.status != PORTA_SUCCESS && error_ == PORTA_SUCCESS) {
    error_ = error.status;
    error_message_ = std::move(error.message);
  }
  ++completed_;
  running_ = false;
  // Completed only once counted: whoever an event wakes must find the stream past it.
  if (entry.marker) entry.marker->complete();
  idle_.notify_all();
  // The worker may be waiting for running_ to clear: a task left that only it may run, or more
  // queued meanwhile.
  if (!queue_.empty() || stopping_) work_.notify_one();
}

porta_status_t CpuStream::take_error(std::string* message) {
  porta_status_t status = std::exchange(error_, PORTA_SUCCESS);
  if (message) *message = std::move(error_message_);
  error_message_.clear();
  return status;
}

template <class Done>
void CpuStream::run_or_wait(std::unique_lock<std::mutex>& lock, Done done) {
  const bool may_run = stack_has_room();
  while (!done()) {
    if (may_run && !running_ && !queue_.empty() && queue_.front().runs == Runs::anywhere) {
      run_front(lock);
    } else {
      idle_.wait(lock);
    }
  }
}

porta_status_t CpuStream::synchronize(std::string* message) {
  std::unique_lock lock(mutex_);
  const uint64_t target = submitted_;
  // The front entry is the earliest not yet taken, so everything run here was queued before the
  // call.
  run_or_wait(lock, [&] { return completed_ >= target; });
  return take_error(message);
}

void CpuStream::wait_idle() {
  std::unique_lock lock(mutex_);
  const uint64_t target = submitted_;
  run_or_wait(lock, [&] { return completed_ >= target; });
}

porta_status_t CpuStream::query(std::string* message) {
  std::lock_guard lock(mutex_);
  if (completed_ < submitted_) return PORTA_NOT_READY;
  return take_error(message);
}

void CpuStream::run_until(const Marker& marker) {
  std::unique_lock lock(mutex_);
  // Markers complete under the stream's lock (run_front), so this sees each completion.
  run_or_wait(lock, [&] { return marker.is_complete(); });
}

void CpuStream::record(CpuEvent& event, std::weak_ptr<CpuStream> self) {
  auto marker = std::make_shared<Marker>(std::move(self));
  enqueue(nullptr, marker);
  event.set_latest(std::move(marker));
}

void CpuStream::wait(const CpuEvent& event) {
  std::shared_ptr<Marker> marker = event.latest();
  // Nothing to wait for: never recorded, or already complete (completion is final).
  if (!marker || marker->is_complete()) return;
  enqueue([marker = std::move(marker)](ScratchBuffer&) { marker->wait(); });
}

}  // namespace porta::cpu
