// Streams and events. A stream is a FIFO of tasks run in order, one at a time, by the stream's
// own worker thread, so enqueueing never waits for the work; a thread that synchronizes runs the
// tasks still waiting at the front itself, as long as they may run anywhere (below). An event is
// the latest marker recorded into a stream.
#pragma once

#include <porta/porta.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "thread_pool.h"

namespace porta::cpu {

using Clock = std::chrono::steady_clock;

class CpuStream;

// A point in a stream, complete once the stream reaches it. Shared by the event that recorded it
// and by the waits that captured it, so re-recording or destroying the event leaves earlier waits
// intact.
class Marker {
 public:
  explicit Marker(std::weak_ptr<CpuStream> stream = {}) : stream_(std::move(stream)) {}
  void complete();
  bool is_complete() const;
  void wait() const;
  // When the stream reached the marker; meaningful once complete.
  Clock::time_point time() const;
  // The stream it was recorded into, while that lives: a host thread waiting for the marker can
  // run the stream's work itself (CpuStream::run_until).
  std::shared_ptr<CpuStream> stream() const { return stream_.lock(); }

 private:
  const std::weak_ptr<CpuStream> stream_;
  mutable std::mutex mutex_;
  mutable std::condition_variable completed_;
  bool complete_ = false;
  Clock::time_point time_;
};

class CpuEvent {
 public:
  // The marker of the latest record, or nullptr if never recorded.
  std::shared_ptr<Marker> latest() const;
  void set_latest(std::shared_ptr<Marker> marker);

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<Marker> latest_;
};

// A unit of stream work. It runs with the stream's scratch buffer and reports failure by throwing
// (Failure, std::bad_alloc, ...).
using Task = std::function<void(ScratchBuffer& scratch)>;

// Where a task may run. Kernels, copies, sets and waits run `anywhere`: on the worker, or on a
// thread that synchronizes the stream and finds them next in line while the worker is not
// running one, which spares the hand-over to the worker and back (two wake-ups: tens of
// microseconds each on a virtual machine whose idle vCPUs halt). Host functions (the vendor
// libraries' calls among them, whose thread pools belong to the thread that calls them) and the
// worker's own set-up run `on_worker` only, as a host function runs on a runtime thread on a GPU.
enum class Runs { anywhere, on_worker };

class CpuStream {
 public:
  // Starts the worker; throws std::system_error if it cannot.
  CpuStream();
  // Runs what is still queued, then joins the worker.
  ~CpuStream();
  CpuStream(const CpuStream&) = delete;
  CpuStream& operator=(const CpuStream&) = delete;

  // Queues task and returns at once. marker, if given, completes once the task has run and the
  // stream has counted it done.
  void enqueue(Task task, std::shared_ptr<Marker> marker = nullptr, Runs runs = Runs::anywhere);

  // Waits for every task queued before the call, running those it may itself (Runs; where the
  // calling thread's stack has room for them), then returns and clears the first error a task
  // reported since the last time one was returned (*message gets its text).
  porta_status_t synchronize(std::string* message);
  // Waits as synchronize does, leaving the error for synchronize or query to report.
  void wait_idle();
  // PORTA_NOT_READY while tasks queued before the call are pending; then as synchronize.
  porta_status_t query(std::string* message);

  // Captures the work queued so far into event. self: this stream, shared with its owner, so that
  // a wait for the event can run the stream's work as long as the stream lives.
  void record(CpuEvent& event, std::weak_ptr<CpuStream> self);
  // Runs or waits for the stream's tasks, as synchronize does, until marker is complete.
  void run_until(const Marker& marker);
  // Makes later tasks wait, on the worker, for the marker event holds now.
  void wait(const CpuEvent& event);

 private:
  struct Entry {
    Task task;  // may be empty: a bare marker
    std::shared_ptr<Marker> marker;
    Runs runs = Runs::anywhere;
  };

  void worker_main();
  // Takes the front entry and runs it on this thread, the lock released meanwhile; running_ is
  // set throughout, so the stream's tasks still run one at a time and in order.
  void run_front(std::unique_lock<std::mutex>& lock);
  // Until done() (checked under the lock): runs the front task where this thread may (Runs, and
  // room on its stack) and no other thread runs one, else waits for the next completion.
  template <class Done>
  void run_or_wait(std::unique_lock<std::mutex>& lock, Done done);
  porta_status_t take_error(std::string* message);  // mutex_ held

  std::mutex mutex_;
  std::condition_variable work_;  // a task was queued, running_ cleared, or stopping_
  std::condition_variable idle_;  // completed_ advanced
  std::deque<Entry> queue_;
  bool running_ = false;  // a thread (the worker or a synchronizing one) runs a task
  // Tickets: synchronize waits for completed_ to reach the submitted_ it saw, so a thread that
  // keeps enqueueing cannot starve it.
  uint64_t submitted_ = 0;
  uint64_t completed_ = 0;
  porta_status_t error_ = PORTA_SUCCESS;
  std::string error_message_;
  bool stopping_ = false;
  ScratchBuffer scratch_;  // lent to the task that runs; it joins the pool's loops with it
  std::thread worker_;     // last: starts once everything above is constructed
};

}  // namespace porta::cpu
