// The SIMT runtime: a work-group's items as fibers on one OS thread (ucontext), each running the
// whole kernel body, meeting at a barrier at the end of every inner() pass. Fibers rather than
// threads: a group has up to 1024 items, and a switch between fibers costs a few hundred
// nanoseconds where a thread barrier costs a futex round trip per item. Under ThreadSanitizer the
// switches are annotated (__tsan_switch_to_fiber, without synchronisation) and only a barrier
// orders the items, so TSan sees a kernel's in-phase races as races between threads.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <utility>

#include "checker.h"
#include "simt_runtime.h"

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define PORTA_SIMT_TSAN 1
#else
#define PORTA_SIMT_TSAN 0
#endif

namespace porta::simt {

thread_local Group* thread_group = nullptr;
thread_local const char* group_failure = nullptr;

namespace {

// Each fiber's stack, with a guard page below it. Kernels keep large arrays in shared memory;
// an item's own frames are small, but the racecheck build is unoptimised.
constexpr size_t kStackBytes = size_t{256} << 10;
constexpr size_t kGuardBytes = 4096;

// Ordering for ThreadSanitizer: an item's accesses before a barrier happen before every item's
// accesses after it, and nothing orders two items between barriers. Each fiber releases its stop
// token when it stops; the scheduler acquires them all only once the whole group has stopped, and
// releases a fiber's resume token before each switch to it. In the middle of a phase the scheduler
// reads only the fibers' states, atomically, so no order leaks from one item to the next.
void tsan_release([[maybe_unused]] void* token) {
#if PORTA_SIMT_TSAN
  __tsan_release(token);
#endif
}
void tsan_acquire([[maybe_unused]] void* token) {
#if PORTA_SIMT_TSAN
  __tsan_acquire(token);
#endif
}
void tsan_switch([[maybe_unused]] void* fiber) {
#if PORTA_SIMT_TSAN
  __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync);
#endif
}

int load_state(const Fiber& fiber) { return __atomic_load_n(&fiber.state, __ATOMIC_RELAXED); }
void store_state(Fiber& fiber, int state) {
  __atomic_store_n(&fiber.state, state, __ATOMIC_RELAXED);
}

Fiber* current_fiber(const Group& group) {
  return __atomic_load_n(&group.current, __ATOMIC_RELAXED);
}
void set_current_fiber(Group& group, Fiber* fiber) {
  __atomic_store_n(&group.current, fiber, __ATOMIC_RELAXED);
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "porta simt: %s\n", what);
  std::abort();
}

// Gives back the fibers and their stacks.
void release(Group& group) {
  if (group.arena) munmap(reinterpret_cast<void*>(group.arena), group.arena_bytes);
#if PORTA_SIMT_TSAN
  for (Fiber& fiber : group.fibers) __tsan_destroy_fiber(fiber.tsan_fiber);
#endif
  group.fibers.clear();
  group.arena = 0;
  group.arena_bytes = 0;
}

// The fibers' stacks: one mapping per thread, grown when a group has more items than before.
// Returns false, with group_failure set and nothing held, where memory or mappings run out.
bool reserve(Group& group, uint32_t items) {
  if (group.fibers.size() >= items) return true;
  release(group);
  const size_t per_fiber = kStackBytes + kGuardBytes;
  const size_t bytes = per_fiber * items;
  void* arena = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (arena == MAP_FAILED) {
    group_failure = "cannot map the work-items' stacks";
    return false;
  }
  group.arena = reinterpret_cast<uintptr_t>(arena);
  group.arena_bytes = bytes;
  try {
    group.fibers = std::vector<Fiber>(items);
  } catch (const std::bad_alloc&) {
    release(group);
    group_failure = "cannot allocate the work-items' fibers";
    return false;
  }
  for (uint32_t i = 0; i < items; ++i) {
    Fiber& fiber = group.fibers[i];
    const uintptr_t base = group.arena + i * per_fiber;
    // Each guard splits the mapping: at the system's limit of mappings this fails, and a stack
    // without its guard would overflow into the next one unseen.
    if (mprotect(reinterpret_cast<void*>(base), kGuardBytes, PROT_NONE) != 0) {
      release(group);
      group_failure = "cannot protect the work-items' stack guards (too many memory mappings)";
      return false;
    }
    fiber.stack_low = base + kGuardBytes;
    fiber.stack_top = base + per_fiber;
    fiber.item = i;
    fiber.group = &group;
    if (getcontext(&fiber.context) != 0) die("getcontext failed");
#if PORTA_SIMT_TSAN
    fiber.tsan_fiber = __tsan_create_fiber(0);
#endif
  }
  return true;
}

// The thread's group state; freed with the thread.
struct ThreadGroup {
  Group group;
  ~ThreadGroup() { release(group); }
};

// Where every fiber starts (makecontext passes its Fiber* as two ints): the kernel body for its
// item, then back to the scheduler for good. An exception out of the body (std::bad_alloc from a
// kernel's vector, std::out_of_range from an at()) must not unwind past this frame: below it lies
// no caller, only the end of the fiber's stack. It is kept for the scheduler, which stops the group
// and rethrows it on the thread's stack. The handler is left before the switch, so the C++
// runtime's per-thread record of the exceptions being handled is the same for every fiber.
void fiber_main(unsigned low, unsigned high) {
  Fiber& fiber = *reinterpret_cast<Fiber*>((uintptr_t{high} << 32) | low);
  tsan_acquire(&fiber.resume_token);
  Group& group = *fiber.group;
  try {
    group.body(group.args);
  } catch (...) {
    // Refers to the thrown object (no allocation); the first exception is the one rethrown.
    if (!group.exception) group.exception = std::current_exception();
  }
  store_state(fiber, kDone);
  tsan_release(&fiber.stop_token);
  tsan_switch(group.tsan_scheduler);
  setcontext(&group.scheduler);
  die("a finished work-item was resumed");
}

// Runs every fiber that is not done until it stops at a barrier or finishes: the last item
// first, so that a read of what a lower item writes in the same phase sees the old value, where
// the fast mode's loop (and the order a GPU happens to use) would hide the missing barrier. Stops
// at once when an item has thrown: the group is not run further.
void run_phase(Group& group) {
  for (uint32_t i = group.items; i-- > 0;) {
    Fiber& fiber = group.fibers[i];
    if (load_state(fiber) == kDone) continue;
    store_state(fiber, kRunning);
    set_current_fiber(group, &fiber);
    tsan_release(&fiber.resume_token);
    tsan_switch(fiber.tsan_fiber);
    if (swapcontext(&group.scheduler, &fiber.context) != 0) die("swapcontext failed");
    tsan_acquire(&fiber.stop_token);  // what the item wrote before it stopped, group.exception too
    if (group.exception) break;
  }
  set_current_fiber(group, nullptr);
}

}  // namespace
}  // namespace porta::simt

using namespace porta::simt;

extern "C" {

const porta_cpu_work_group_t* porta_simt_group(void) { return thread_group->group; }

uint32_t porta_simt_item(void) { return current_fiber(*thread_group)->item; }

void porta_simt_run_group(const porta_cpu_work_group_t* work_group, void* const* args,
                          void (*body)(void* const*)) {
  static thread_local ThreadGroup state;
  Group& group = state.group;
  thread_group = &group;
  group.group = work_group;
  group.items = work_group->group_size[0] * work_group->group_size[1] * work_group->group_size[2];
  group.phase = 0;
  if (!reserve(group, group.items)) {
    group.group = nullptr;
    return;
  }
#if PORTA_SIMT_TSAN
  // The thread's own context, once: fibers read it after their last release.
  if (!group.tsan_scheduler) group.tsan_scheduler = __tsan_get_current_fiber();
#endif
  group.body = body;
  group.args = args;
  for (uint32_t i = 0; i < group.items; ++i) {
    Fiber& fiber = group.fibers[i];
    fiber.context.uc_stack.ss_sp = reinterpret_cast<void*>(fiber.stack_low);
    fiber.context.uc_stack.ss_size = fiber.stack_top - fiber.stack_low;
    fiber.context.uc_link = nullptr;
    const auto address = reinterpret_cast<uintptr_t>(&fiber);
    makecontext(&fiber.context, reinterpret_cast<void (*)()>(fiber_main), 2,
                static_cast<unsigned>(address), static_cast<unsigned>(address >> 32));
    store_state(fiber, kRunning);
    fiber.phase_frame = 0;
    fiber.own.clear();
  }
#if PORTA_SIMT_CHECK
  check::begin_group(group);
#endif
  for (;;) {
    run_phase(group);
    for (uint32_t i = 0; i < group.items; ++i) tsan_acquire(&group.fibers[i].stop_token);
    if (group.exception) break;
    bool waiting = false;
    for (uint32_t i = 0; i < group.items; ++i) waiting |= load_state(group.fibers[i]) != kDone;
#if PORTA_SIMT_CHECK
    // Items at different barriers (or some done) are released together all the same, so that
    // the kernel finishes and every hazard of the launch is seen.
    check::end_phase(group);
#endif
    if (!waiting) break;
    ++group.phase;
  }
  if (group.exception) {
    // An item threw. The others are left where they are, mid-body or at a barrier, never
    // resumed: a GPU has no exceptions to give them, and the kernel builds have no cleanups
    // (-fno-exceptions) that unwinding them would run. Their stacks are given back (the next group
    // maps fresh ones, and ThreadSanitizer's fibers start afresh), and the exception goes on from
    // here, on the thread's own stack, to the backend, which fails the launch with it.
    std::exception_ptr exception = std::exchange(group.exception, nullptr);
#if PORTA_SIMT_CHECK
    check::abandon_group(group);
#endif
    release(group);
    group.group = nullptr;
    std::rethrow_exception(std::move(exception));
  }
#if PORTA_SIMT_CHECK
  check::end_group(group);
#endif
  group.group = nullptr;
}

__attribute__((visibility("default"))) const char* porta_simt_take_failure(void) {
  return std::exchange(group_failure, nullptr);
}

void porta_simt_inner(void (*call)(void*), void* closure) {
  Group& group = *thread_group;
  Fiber& fiber = *current_fiber(group);
  fiber.phase_frame = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  call(closure);
  fiber.phase_frame = 0;
  fiber.barrier_site = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
  store_state(fiber, kAtBarrier);
  tsan_release(&fiber.stop_token);
  tsan_switch(group.tsan_scheduler);
  if (swapcontext(&fiber.context, &group.scheduler) != 0) die("swapcontext failed");
  tsan_acquire(&fiber.resume_token);
}

void porta_simt_private(uintptr_t address, size_t size, int keep) {
#if PORTA_SIMT_CHECK
  check::own(*current_fiber(*thread_group), address, size, keep != 0);
#else
  (void)address, (void)size, (void)keep;
#endif
}

float porta_simt_atomic_add(float* address, float value) {
  float expected, desired;
  __atomic_load(address, &expected, __ATOMIC_RELAXED);
  do {
    desired = expected + value;
  } while (!__atomic_compare_exchange(address, &expected, &desired, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED));
  return expected;
}

}  // extern "C"
