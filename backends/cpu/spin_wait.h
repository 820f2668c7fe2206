// A bounded spin before a thread of the backend sleeps: each hand-over of a launch (host ->
// stream worker -> pool threads -> back) would otherwise wake a sleeping thread, which costs
// tens of microseconds once its core has gone idle.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace porta::cpu {

// What one waiter's spins achieved lately. A spin that ran out, or lost its core to another
// thread, was wasted: the waits after it sleep at once for a while, so a host whose launches are
// far apart, or cores that other work keeps busy, see no spinning.
class SpinHistory {
 public:
  static constexpr uint32_t kSkipAfterWaste = 64;  // waits that sleep at once after a waste

 private:
  friend class SpinWait;
  std::atomic<uint32_t> skip_{0};  // atomic: several threads may synchronize one stream
};

class SpinWait {
 public:
  // A waiter spins about this long at most: about what a wake costs on the machines measured
  // (5-10 us), so a spin that fails costs no more than the wake it tried to save. Longer spins
  // (20 and 50 us) made back-to-back launches slower on a 2-core host busy with other work.
  static constexpr std::chrono::microseconds kBudget{8};
  // A gap this long between two looks at the clock means the spinning thread lost its core.
  static constexpr std::chrono::microseconds kPreempted{5};

  // Up to max_spinners threads spin at once (0: none ever).
  explicit SpinWait(unsigned max_spinners) : max_spinners_(max_spinners), free_(max_spinners) {}
  SpinWait(const SpinWait&) = delete;
  SpinWait& operator=(const SpinWait&) = delete;

  bool enabled() const { return max_spinners_ > 0; }

  // Polls ready() for up to kBudget, pausing between polls, and returns true once it returned
  // true; false at once when max_spinners threads are spinning already or history says to
  // sleep. On false the caller sleeps as it would have without the spin: the spin only saves
  // wakes, it decides nothing.
  template <class Ready>
  bool until(SpinHistory& history, Ready&& ready) {
    if (ready()) return true;
    uint32_t skip = history.skip_.load(std::memory_order_relaxed);
    if (skip > 0) {
      history.skip_.compare_exchange_strong(skip, skip - 1, std::memory_order_relaxed);
      return false;
    }
    unsigned free = free_.load(std::memory_order_relaxed);
    do {
      if (free == 0) return false;
    } while (!free_.compare_exchange_weak(free, free - 1, std::memory_order_relaxed));
    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    Clock::time_point last = start;
    bool done = false, wasted = false;
    for (unsigned polls = 1; !(done = ready()); ++polls) {
      pause();
      // The clock costs more than a poll: it is read every few dozen.
      if (polls % 32 != 0) continue;
      const Clock::time_point now = Clock::now();
      if (now - start >= kBudget || now - last >= kPreempted) {
        wasted = true;
        break;
      }
      last = now;
    }
    free_.fetch_add(1, std::memory_order_relaxed);
    if (wasted) history.skip_.store(SpinHistory::kSkipAfterWaste, std::memory_order_relaxed);
    return done;
  }

 private:
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  const unsigned max_spinners_;
  std::atomic<unsigned> free_;  // spinning slots left
};

}  // namespace porta::cpu
