// The host as the backend's one device: what it reports about itself, and its memory.
#pragma once

#include <porta/porta.h>
#include <sched.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace porta::cpu {

// Threads this process may run on (its affinity mask), at least 1.
unsigned usable_threads();

// The CPUs this process may run on, split into devices shares: contiguous runs of about equal
// size, or, with more devices than CPUs, one CPU each, shared round-robin. Never empty.
std::vector<std::vector<int>> split_cpus(unsigned devices);

// Binds the calling thread to cpus (a no-op when that is every CPU the process may use).
void bind_current_thread(const std::vector<int>& cpus);

// Binds the calling thread to one CPU (allocates nothing: pool threads call it as they start).
void bind_current_thread_to(int cpu);

// Binds the calling thread to one CPU unless it is bound to it already; release_held_cpu(cpus)
// binds a thread so held to cpus again. A stream worker keeps the core it launches grids on
// from one launch to the next, and gets its device's CPUs back before a host function runs or
// it sleeps: each change of affinity is a system call of a few microseconds, a look at it a
// fraction of one. No state is kept (thread-local storage in a plugin is allocated on first use,
// and glibc aborts when that fails). Placement hints like bind_current_thread: nothing fails if
// a thread cannot be bound.
void hold_cpu(int cpu);
void release_held_cpu(const std::vector<int>& cpus);

// Every field filled in, struct_size = sizeof. Reads /proc/cpuinfo and sysinfo, so it is probed
// once at initialize and copied out afterwards.
porta_device_properties_t probe_properties(unsigned threads);

// The kernel-library builds this host can run, best first (porta_add_kernel_library builds
// x86-64, x86-64-v3 and x86-64-v4 on x86-64; other hosts one "native" build).
const char* code_object_suffixes(const char* architecture);

uint64_t total_memory();
// MemAvailable from /proc/meminfo (what can be allocated without swapping), else sysinfo's free.
uint64_t available_memory();

// Page-aligned host memory of the backend's own mappings, as both device and pinned allocations
// are on the CPU. Throws Failure(PORTA_ERROR_OUT_OF_MEMORY) when size exceeds limit (the host's
// memory: refused without trying, since overcommit could grant it and fail later) or the mapping
// fails. Each allocation is followed by an inaccessible guard page, and a freed one stays
// reserved, inaccessible, among the last kQuarantinedRanges freed in the process (this plugin is
// never unmapped, so that outlives porta_shutdown): the host's own allocations never land in a
// range that libporta remembers as recently freed, and a stray access to one faults instead of
// corrupting whatever took its place.
void* allocate(size_t size, uint64_t limit, const char* what);
void deallocate(void* ptr, size_t size) noexcept;
inline constexpr size_t kQuarantinedRanges = 1024;

}  // namespace porta::cpu
