#include "cpu_device.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "plugin_kit.h"

namespace porta::cpu {

using plugin::throw_error;

namespace {

std::string trim(const std::string& text) {
  const char* space = " \t\r\n";
  size_t begin = text.find_first_not_of(space);
  if (begin == std::string::npos) return {};
  size_t end = text.find_last_not_of(space);
  return text.substr(begin, end - begin + 1);
}

// The value of the first "key : value" line of a /proc file with that key, or "".
std::string proc_value(const char* path, const char* key) {
  std::ifstream file(path);
  std::string line;
  while (std::getline(file, line)) {
    size_t colon = line.find(':');
    if (colon != std::string::npos && trim(line.substr(0, colon)) == key) {
      return trim(line.substr(colon + 1));
    }
  }
  return {};
}

std::string cpu_model_name() {
  std::string name = proc_value("/proc/cpuinfo", "model name");
  if (!name.empty()) return name;
  // aarch64 kernels print no model name; the machine type still tells the user something.
  struct utsname uts;
  if (uname(&uts) == 0) return std::string(uts.machine) + " CPU";
  return "CPU";
}

int32_t cpu_clock_mhz() {
  std::string mhz = proc_value("/proc/cpuinfo", "cpu MHz");
  if (mhz.empty()) return 0;
  char* end = nullptr;
  double value = std::strtod(mhz.c_str(), &end);
  return end != mhz.c_str() && value > 0 && value < 1e6 ? static_cast<int32_t>(value + 0.5) : 0;
}

struct IsaLevel {
  const char* architecture;
  int32_t fp32_lanes;
};

IsaLevel isa_level() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const int32_t lanes = __builtin_cpu_supports("avx512f") ? 16
                        : __builtin_cpu_supports("avx2")  ? 8
                                                          : 4;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  // GCC 12 knows the psABI levels themselves, every feature of each included.
  if (__builtin_cpu_supports("x86-64-v4")) return {"x86-64-v4", lanes};
  if (__builtin_cpu_supports("x86-64-v3")) return {"x86-64-v3", lanes};
  if (__builtin_cpu_supports("x86-64-v2")) return {"x86-64-v2", lanes};
#else
  // Older compilers (and clang before the level names) know only single features: test the
  // defining ones of each level.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2")) {
    return {"x86-64-v4", lanes};
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2")) {
    return {"x86-64-v3", lanes};
  }
  if (__builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("ssse3") &&
      __builtin_cpu_supports("popcnt")) {
    return {"x86-64-v2", lanes};
  }
#endif
  return {"x86-64", lanes};
#elif defined(__aarch64__)
  return {"aarch64", 4};  // NEON: 128-bit vectors
#else
  return {"unknown", 1};
#endif
}

// A group's shared memory is the thread's scratch, where the kernels keep the blocks they reuse
// (the packed GEMM's block of B, a conv's staged rows) so that they stay in the core's L2: half
// of it, from 256 KiB to 1 MiB. Deeper blocks add into the output fewer times (docs/decisions.md,
// "Shared memory from the core's L2").
int32_t shared_memory_bytes() {
  constexpr long kLeast = 256 << 10, kMost = 1 << 20;
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);  // 0 or -1 where the C library cannot tell
  return static_cast<int32_t>(std::clamp(l2 > 0 ? l2 / 2 : kLeast, kLeast, kMost));
}

}  // namespace

unsigned usable_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int count = CPU_COUNT(&set);
    if (count > 0) return static_cast<unsigned>(count);
  }
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<unsigned>(online) : 1;
}

std::vector<std::vector<int>> split_cpus(unsigned devices) {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  if (cpus.empty()) cpus.push_back(0);  // no mask to read: one share of "the" CPU
  devices = std::max(devices, 1u);
  std::vector<std::vector<int>> shares(devices);
  const size_t count = cpus.size();
  for (size_t device = 0; device < devices; ++device) {
    if (devices > count) {
      shares[device].push_back(cpus[device % count]);
      continue;
    }
    for (size_t i = device * count / devices; i < (device + 1) * count / devices; ++i) {
      shares[device].push_back(cpus[i]);
    }
  }
  return shares;
}

void bind_current_thread(const std::vector<int>& cpus) {
  if (cpus.size() >= usable_threads()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  // Binding is a placement hint: a thread that cannot be bound still computes correctly.
  sched_setaffinity(0, sizeof(set), &set);
}

namespace {
cpu_set_t only(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return set;
}
}  // namespace

void bind_current_thread_to(int cpu) {
  const cpu_set_t set = only(cpu);
  sched_setaffinity(0, sizeof(set), &set);  // a placement hint, as above
}

void name_current_thread(const char* name) {
  pthread_setname_np(pthread_self(), name);  // a label only: nothing depends on it succeeding
}

ScopedCpuBinding::ScopedCpuBinding(int cpu) {
  // A thread already running there is left as it is: the scheduler keeps a running thread on its
  // core, and binding it and giving its CPUs back took more than a small launch's whole work.
  if (sched_getcpu() == cpu) return;
  if (sched_getaffinity(0, sizeof(saved_), &saved_) != 0) return;
  const cpu_set_t set = only(cpu);
  bound_ = sched_setaffinity(0, sizeof(set), &set) == 0;
}

ScopedCpuBinding::~ScopedCpuBinding() {
  if (bound_) sched_setaffinity(0, sizeof(saved_), &saved_);
}

const char* code_object_suffixes(const char* architecture) {
  const std::string_view level = architecture;
  if (level == "simt") return ".cpu-simt.so";  // PORTA_CPU_MODE: the SIMT builds
  if (level == "racecheck") return ".cpu-racecheck.so";
  if (level == "x86-64-v4") return ".cpu-x86-64-v4.so:.cpu-x86-64-v3.so:.cpu-x86-64.so";
  if (level == "x86-64-v3") return ".cpu-x86-64-v3.so:.cpu-x86-64.so";
  if (level.rfind("x86-64", 0) == 0) return ".cpu-x86-64.so";
  return ".cpu-native.so";
}

uint64_t total_memory() {
  struct sysinfo info;
  if (sysinfo(&info) != 0) return 0;
  return uint64_t{info.totalram} * info.mem_unit;
}

uint64_t available_memory() {
  std::string available = proc_value("/proc/meminfo", "MemAvailable");  // "123456 kB"
  if (!available.empty()) {
    char* end = nullptr;
    unsigned long long kib = std::strtoull(available.c_str(), &end, 10);
    if (end != available.c_str()) return uint64_t{kib} * 1024;
  }
  struct sysinfo info;
  if (sysinfo(&info) != 0) return 0;
  return (uint64_t{info.freeram} + info.bufferram) * info.mem_unit;
}

// The 16-bit arithmetic the portable kernels take on this CPU (x86-64-v4 builds): bf16 dot
// products (AVX512_BF16) and matrix units: AMX-TILE with AMX-BF16 (CPUID leaf 7 EDX bits 24 and
// 22) whose tile state the kernel has enabled (XCR0 bits 17 and 18, as Linux 5.16 and later
// do). The kernels still ask Linux for that state before using the tiles.
uint32_t bf16_capabilities() {
  uint32_t caps = 0;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16")) caps |= PORTA_CAPABILITY_BF16;
  unsigned eax, ebx, ecx, edx;
  const bool amx = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx >> 22 & 1) &&
                   (edx >> 24 & 1) && __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 27 & 1);
  if (amx) {
    uint32_t xcr0_low, xcr0_high;  // xgetbv(0), read only where OSXSAVE says the OS set it up
    __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
    constexpr uint32_t kTileState = 3u << 17;  // XTILECFG and XTILEDATA
    if ((xcr0_low & kTileState) == kTileState) {
      caps |= PORTA_CAPABILITY_BF16 | PORTA_CAPABILITY_MATRIX_CORES;
    }
  }
#endif
  return caps;
}

porta_device_properties_t probe_properties(unsigned threads) {
  porta_device_properties_t p;
  std::memset(&p, 0, sizeof(p));
  p.struct_size = sizeof(p);
  std::snprintf(p.name, sizeof(p.name), "%s (%u thread%s)", cpu_model_name().c_str(), threads,
                threads == 1 ? "" : "s");
  std::snprintf(p.backend, sizeof(p.backend), "cpu");
  IsaLevel isa = isa_level();
  std::snprintf(p.architecture, sizeof(p.architecture), "%s", isa.architecture);
  p.total_memory = total_memory();
  p.compute_units = static_cast<int32_t>(threads);
  p.max_work_group_size = 1024;
  p.max_work_group_dims[0] = 1024;
  p.max_work_group_dims[1] = 1024;
  p.max_work_group_dims[2] = 64;
  // The launch config holds uint32 grid sizes; 2^31-1 also keeps kernels that index with int
  // safe, and is CUDA's x limit.
  for (int64_t& dim : p.max_grid_dims) dim = INT32_MAX;
  p.shared_memory_per_group = shared_memory_bytes();
  p.subgroup_size = isa.fp32_lanes;
  p.clock_mhz = cpu_clock_mhz();
  p.capabilities = PORTA_CAPABILITY_FP64 | PORTA_CAPABILITY_UNIFIED_ADDRESSING |
                   PORTA_CAPABILITY_ASYNC_COPY | PORTA_CAPABILITY_HOST_IS_DEVICE |
                   PORTA_CAPABILITY_RESERVED_ADDRESSES;
  if (std::string_view(isa.architecture) == "x86-64-v4") p.capabilities |= bf16_capabilities();
  return p;
}

namespace {

size_t page_size() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

// The bytes an allocation of size maps: whole pages, plus the guard page. 0 if that overflows.
size_t mapped_size(size_t size) {
  const size_t page = page_size();
  const size_t pages = size / page + (size % page != 0) + 1;
  return pages > SIZE_MAX / page ? 0 : pages * page;
}

// Freed ranges kept reserved without memory behind them, oldest first.
class Quarantine {
 public:
  void add(void* ptr, size_t bytes) noexcept {
    // Replacing the pages drops their contents and memory but keeps the addresses ours.
    if (mmap(ptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
             0) == MAP_FAILED) {
      munmap(ptr, bytes);
      return;
    }
    std::lock_guard lock(mutex_);
    if (ranges_.size() == kQuarantinedRanges) {
      munmap(ranges_.front().first, ranges_.front().second);
      ranges_.pop_front();
    }
    try {
      ranges_.emplace_back(ptr, bytes);
    } catch (...) {
      munmap(ptr, bytes);  // no memory for the record: give the range back instead
    }
  }

 private:
  std::mutex mutex_;
  std::deque<std::pair<void*, size_t>> ranges_;
};

Quarantine& quarantine() {
  static Quarantine* instance = new Quarantine();  // process-wide, never destroyed
  return *instance;
}

// Maps bytes of fresh memory; from kHugePage up, at a kHugePage boundary and marked for the
// kernel's transparent huge pages, which it gives only to ranges asking for them by default
// ("madvise"). One TLB entry then covers 2 MiB instead of 4 KiB: a GEMM reading B's strips in
// place steps a row of B, often more than a page, at each depth. MAP_FAILED (errno set) on
// failure. A kernel without huge pages refuses the advice, which changes nothing else.
void* map_aligned(size_t bytes) {
  constexpr size_t kHugePage = size_t{2} << 20;
  const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
  if (bytes < kHugePage || bytes > SIZE_MAX - kHugePage) {
    return mmap(nullptr, bytes, prot, flags, -1, 0);
  }
  // Over-map by one huge page, then give back what lies either side of the aligned range.
  char* const mapped = static_cast<char*>(mmap(nullptr, bytes + kHugePage, prot, flags, -1, 0));
  if (mapped == MAP_FAILED) return MAP_FAILED;
  const size_t head = (kHugePage - reinterpret_cast<uintptr_t>(mapped) % kHugePage) % kHugePage;
  char* const ptr = mapped + head;
  if (head > 0) munmap(mapped, head);
  munmap(ptr + bytes, kHugePage - head);  // head < kHugePage: the tail is never empty
  madvise(ptr, bytes, MADV_HUGEPAGE);
  return ptr;
}

}  // namespace

void* allocate(size_t size, uint64_t limit, const char* what) {
  const size_t bytes = mapped_size(size);
  if ((limit != 0 && size > limit) || bytes == 0) {
    throw_error(PORTA_ERROR_OUT_OF_MEMORY, std::string(what) + ": " + std::to_string(size) +
                                               " bytes requested, more than the host's " +
                                               std::to_string(limit) + " bytes of memory");
  }
  void* ptr = map_aligned(bytes);
  if (ptr == MAP_FAILED) {
    const int error = errno;
    throw_error(PORTA_ERROR_OUT_OF_MEMORY, std::string(what) + ": allocating " +
                                               std::to_string(size) + " bytes failed (" +
                                               std::strerror(error) + ")");
  }
  const size_t guard = bytes - page_size();
  if (mprotect(static_cast<char*>(ptr) + guard, page_size(), PROT_NONE) != 0) {
    const int error = errno;
    munmap(ptr, bytes);
    throw_error(PORTA_ERROR_OUT_OF_MEMORY, std::string(what) + ": protecting the guard page of " +
                                               std::to_string(size) + " bytes failed (" +
                                               std::strerror(error) + ")");
  }
  return ptr;
}

void deallocate(void* ptr, size_t size) noexcept { quarantine().add(ptr, mapped_size(size)); }

}  // namespace porta::cpu
