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

// Names the calling thread (at most 15 characters) as debuggers, top -H and /proc show it: the
// backend's threads are "porta-pool" and "porta-stream".
void name_current_thread(const char* name);

// Binds the calling thread to one CPU for the object's lifetime, then gives it back the CPUs it
// had; a thread already on that CPU is left alone. A placement hint like bind_current_thread:
// nothing fails if it cannot be bound.
class ScopedCpuBinding {
 public:
  explicit ScopedCpuBinding(int cpu);
  ~ScopedCpuBinding();
  ScopedCpuBinding(const ScopedCpuBinding&) = delete;
  ScopedCpuBinding& operator=(const ScopedCpuBinding&) = delete;

 private:
  cpu_set_t saved_;
  bool bound_ = false;
};

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
// are on the CPU; from 2 MiB up, aligned to 2 MiB and asking for transparent huge pages. Throws
// Failure(PORTA_ERROR_OUT_OF_MEMORY) when size exceeds limit (the host's memory: refused without
// trying, since overcommit could grant it and fail later) or the mapping fails. Each allocation
// is followed by an inaccessible guard page, and a freed one stays reserved, inaccessible, among
// the last kQuarantinedRanges freed in the process (this plugin is never unmapped, so that
// outlives porta_shutdown): the host's own allocations never land in a range that libporta
// remembers as recently freed, and a stray access to one faults instead of corrupting whatever
// took its place.
void* allocate(size_t size, uint64_t limit, const char* what);
void deallocate(void* ptr, size_t size) noexcept;
inline constexpr size_t kQuarantinedRanges = 1024;

}  // namespace porta::cpu
