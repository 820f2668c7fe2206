// The SIMT runtime's state, shared by the scheduler (simt.cpp) and the checker (racecheck.cpp).
// Both are linked into every SIMT build of a kernel library, hidden there: each module has its own.
#pragma once

#include <porta/porta_kernel.h>
#include <ucontext.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <utility>
#include <vector>

namespace porta::simt {

enum FiberState : int { kRunning = 0, kAtBarrier = 1, kDone = 2 };

// One work-item: a fiber on its own stack in the thread's arena.
struct Group;
struct Fiber {
  Group* group = nullptr;
  ucontext_t context;
  uintptr_t stack_low = 0;  // the usable stack: [stack_low, stack_top)
  uintptr_t stack_top = 0;
  uint32_t item = 0;
  int state = kRunning;        // read by the scheduler, written by the fiber (atomically)
  uintptr_t barrier_site = 0;  // where it waits: the code address after porta_simt_inner's call
  uintptr_t phase_frame = 0;   // inside an inner() pass: porta_simt_inner's frame; else 0
  std::vector<std::pair<uintptr_t, size_t>> own;  // porta::exclusive objects on its stack
  void* tsan_fiber = nullptr;
  char resume_token = 0;  // ThreadSanitizer: the scheduler's release before resuming the fiber
  char stop_token = 0;    // and the fiber's before it stops
};

// The work-group a thread is running, and the fibers it runs it with. One per OS thread: groups
// on different pool threads never share anything here.
struct Group {
  const porta_cpu_work_group_t* group = nullptr;
  uint32_t items = 0;
  uint32_t phase = 0;                    // barriers passed
  void (*body)(void* const*) = nullptr;  // the kernel body each fiber runs, with args
  void* const* args = nullptr;
  Fiber* current = nullptr;   // accessed atomically: the scheduler writes it mid-phase
  std::vector<Fiber> fibers;  // at least `items`; their stacks stay mapped for the next group
  uintptr_t arena = 0;        // every fiber stack lies in [arena, arena + arena_bytes)
  size_t arena_bytes = 0;
  ucontext_t scheduler;
  void* tsan_scheduler = nullptr;
  // What the first item to let an exception out of the body threw: caught on its fiber, which may
  // not be unwound past, and rethrown by the scheduler on the thread's own stack once the group
  // has stopped.
  std::exception_ptr exception;
};

// The group the calling thread runs; its `current` is the running fiber, NULL in the scheduler.
extern thread_local Group* thread_group;

// Why the last group run on this thread could not be run (or checked) whole, or NULL: the
// backend takes it after each group (porta_simt_take_failure) and fails the launch with it.
extern thread_local const char* group_failure;

#if PORTA_SIMT_CHECK
// The checker's side (racecheck.cpp): called by the scheduler between phases, when every fiber
// of the group is at a barrier or done.
namespace check {
void begin_group(Group& group);
// Returns false when the fibers are not all at one barrier (reported as divergent).
bool end_phase(Group& group);
void end_group(Group& group);
// Forgets what was recorded of a group that stopped on an exception, hazards found included.
void abandon_group(Group& group);
void own(Fiber& fiber, uintptr_t address, size_t size, bool keep);
}  // namespace check
#endif

}  // namespace porta::simt
