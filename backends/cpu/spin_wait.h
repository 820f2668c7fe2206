// Waiting for another thread without paying a sleeping core's wake-up.
//
// A thread that sleeps on a condition variable runs again only once the kernel has woken it, and
// on a virtual machine whose idle vCPUs halt at once that takes tens of microseconds. So the
// pool's threads, each bound to a core, first poll for a short while before they sleep, as
// OpenMP runtimes do: a pool thread for the next job, a launching thread for the pool's last
// chunks. Threads that are not bound (the host's, a stream's worker between launches) sleep at
// once: a thread they wake may be queued on their own core, and spinning there holds it off,
// while yielding there hands the core to any busy process for a whole time slice (both measured:
// hand-overs of 100 us and of milliseconds).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace porta::cpu {

// Long enough to span the gap between one launch and the next that a host queues right after,
// short enough that an idle backend gives its cores back almost at once.
inline constexpr std::chrono::microseconds kSpinBeforeSleep{50};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How a spinning thread treats its core. A pool thread waiting for a job shares it: a thread of
// ours may be queued behind it there (a stream's worker on its way to post that job), so each
// round yields. Should a busy process take the core for its time slice instead, the launch's own
// thread claims the chunks meanwhile, as it does whenever the pool is late. A thread waiting for
// work already running elsewhere holds its core, pausing instead.
enum class Spin { kHoldCore, kShareCore };

// Polls ready() (which must not need the lock) for up to kSpinBeforeSleep; true once it held.
// Holding the core, it gives up early once it was descheduled between two polls: the core is
// contended.
template <class Ready>
bool spin_until(Ready ready, Spin spin) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kPreempted = std::chrono::microseconds(10);
  const auto start = Clock::now();
  for (auto last = start;;) {
    if (ready()) return true;
    if (spin == Spin::kShareCore) {
      std::this_thread::yield();
    } else {
      cpu_relax();
    }
    const auto now = Clock::now();
    if (now - start >= kSpinBeforeSleep) return ready();
    if (spin == Spin::kHoldCore && now - last >= kPreempted) return ready();
    last = now;
  }
}

// cv.wait(lock, condition), polling ready() first with the lock released. ready() is a
// lock-free hint that condition may hold; condition, checked under the lock, decides.
template <class Ready, class Condition>
void spin_then_wait(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Spin spin,
                    Ready ready, Condition condition) {
  if (condition()) return;
  lock.unlock();
  spin_until(ready, spin);
  lock.lock();
  cv.wait(lock, condition);
}

}  // namespace porta::cpu
