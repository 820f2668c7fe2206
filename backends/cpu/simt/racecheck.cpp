// The race checker of the racecheck builds. The kernel sources of such a build are compiled with
// GCC's or Clang's ThreadSanitizer instrumentation (-fsanitize=thread), which calls
// __tsan_read4(address) and the like before every load and store that survives optimisation; this
// file defines those entry points itself, hidden inside the kernel library, so no sanitizer
// runtime is involved. Each access is checked against a shadow of the group's current phase
// (between two barriers): per byte, the item that wrote it and up to two items that read it. A
// write after another item's read or write, or a read after another item's write, is a hazard.
//
// Accesses to a work-item's own stack are not shadowed (no other item sees it), with one
// exception: the values a kernel body keeps outside inner(). A write during an inner() pass to
// the item's stack above that pass's frame is a write to such a value; at the barrier the values
// written are compared across items, and one that differs between items is remembered. If an item
// then reads it before writing it again, the kernel relied on the CPU's one-copy-per-group
// semantics: a hazard (porta::exclusive objects are the items' own by design and are exempt).
#include <dlfcn.h>
#include <link.h>

#include <cstring>
#include <new>
#include <unordered_map>
#include <vector>

#include "checker.h"
#include "simt_runtime.h"

namespace porta::simt {
namespace {

constexpr int16_t kNobody = -1;

// One byte of the phase's shadow.
struct Cell {
  uintptr_t address = 0;
  uint32_t generation = 0;  // the cell is empty unless this is the table's generation
  int16_t writer = kNobody, reader = kNobody, reader2 = kNobody;
  uintptr_t write_site = 0, read_site = 0, read2_site = 0;
};

// Open addressing; clear() empties it in O(1) by moving to the next generation.
class Shadow {
 public:
  Cell& find(uintptr_t address) {
    if ((used_ + 1) * 2 > cells_.size()) grow();
    size_t i = hash(address) & (cells_.size() - 1);
    for (;; i = (i + 1) & (cells_.size() - 1)) {
      Cell& cell = cells_[i];
      if (cell.generation != generation_) {
        cell = Cell{};
        cell.address = address;
        cell.generation = generation_;
        ++used_;
        return cell;
      }
      if (cell.address == address) return cell;
    }
  }
  // Gives the table back where it grew past max_bytes (a group that touched much memory).
  void shrink(size_t max_bytes) {
    if (cells_.size() * sizeof(Cell) > max_bytes) *this = Shadow{};
  }
  void clear() {
    used_ = 0;
    if (++generation_ == 0) {  // wrapped: forget every stale cell for real
      for (Cell& cell : cells_) cell.generation = 0;
      generation_ = 1;
    }
  }

 private:
  static size_t hash(uintptr_t a) { return (a * 0x9E3779B97F4A7C15ull) >> 20; }
  void grow() {
    std::vector<Cell> old(std::max<size_t>(cells_.size() * 2, 1 << 16));
    old.swap(cells_);
    used_ = 0;
    for (const Cell& cell : old) {
      if (cell.generation == generation_) find(cell.address) = cell;
    }
  }
  std::vector<Cell> cells_;
  uint32_t generation_ = 1;
  size_t used_ = 0;
};

// A value outside inner() written during the current phase, by offset below the stack top.
struct OuterWrite {
  uint32_t size;
  uintptr_t site;
};

// A value outside inner() that differed between items at the last barrier that saw it written.
struct Differing {
  uint32_t size;
  uintptr_t write_site;
  uint32_t items[2];
  std::vector<bool> rewritten;  // per item: written again since
};

struct Checker {
  Shadow shadow;
  std::unordered_map<uint32_t, OuterWrite> outer;
  std::unordered_map<uint32_t, Differing> differing;
  std::vector<porta_cpu_hazard_t> found;  // since the backend's last take
  uintptr_t tls_low = 0, tls_high = 0;    // this module's thread-local block: PORTA_SHARED
  bool tls_known = false;
  // Memory ran out for the checker's records in this group: it stops checking, and the group
  // fails (group_failure) rather than the exception ending the process on a fiber's stack.
  bool exhausted = false;
};

thread_local Checker checker;
thread_local char tls_anchor;  // makes this thread's block of the module's TLS exist

constexpr size_t kMaxFound = 64;

void report(const porta_cpu_hazard_t& hazard) {
  for (const porta_cpu_hazard_t& seen : checker.found) {
    if (seen.kind == hazard.kind && seen.sites[0] == hazard.sites[0] &&
        seen.sites[1] == hazard.sites[1]) {
      return;
    }
  }
  if (checker.found.size() < kMaxFound) checker.found.push_back(hazard);
}

// Where an address shared by the items lies.
void locate(const Group& group, uintptr_t address, porta_cpu_hazard_t& hazard) {
  const auto dynamic = reinterpret_cast<uintptr_t>(group.group->shared_memory);
  if (dynamic && address - dynamic < group.group->shared_memory_bytes) {
    hazard.space = PORTA_CPU_SPACE_DYNAMIC_SHARED;
    hazard.address = address - dynamic;
  } else if (address - checker.tls_low < checker.tls_high - checker.tls_low) {
    hazard.space = PORTA_CPU_SPACE_SHARED;
    hazard.address = address - checker.tls_low;
  } else {
    hazard.space = PORTA_CPU_SPACE_GLOBAL;
    hazard.address = address;
  }
}

void conflict(porta_cpu_hazard_kind_t kind, const Group& group, int16_t first, uintptr_t first_site,
              uint32_t second, uintptr_t second_site, uintptr_t address, uint32_t size) {
  porta_cpu_hazard_t hazard{};
  hazard.kind = kind;
  hazard.phase = group.phase;
  hazard.items[0] = static_cast<uint32_t>(first);
  hazard.items[1] = second;
  hazard.size = size;
  hazard.sites[0] = first_site;
  hazard.sites[1] = second_site;
  locate(group, address, hazard);
  report(hazard);
}

// Memory every item may reach: global or shared.
void shadow_access(const Group& group, const Fiber& fiber, uintptr_t address, uint32_t size,
                   bool write, uintptr_t site) {
  const auto item = static_cast<int16_t>(fiber.item);
  for (uintptr_t a = address; a < address + size; ++a) {
    Cell& cell = checker.shadow.find(a);
    if (write) {
      if (cell.writer != kNobody && cell.writer != item) {
        conflict(PORTA_CPU_HAZARD_WRITE_WRITE, group, cell.writer, cell.write_site, fiber.item,
                 site, a, size);
      } else if (cell.reader != kNobody && cell.reader != item) {
        conflict(PORTA_CPU_HAZARD_READ_WRITE, group, cell.reader, cell.read_site, fiber.item, site,
                 a, size);
      } else if (cell.reader2 != kNobody && cell.reader2 != item) {
        conflict(PORTA_CPU_HAZARD_READ_WRITE, group, cell.reader2, cell.read2_site, fiber.item,
                 site, a, size);
      }
      cell.writer = item;
      cell.write_site = site;
    } else {
      if (cell.writer != kNobody && cell.writer != item) {
        conflict(PORTA_CPU_HAZARD_READ_WRITE, group, cell.writer, cell.write_site, fiber.item, site,
                 a, size);
      }
      if (cell.reader == kNobody) {
        cell.reader = item;
        cell.read_site = site;
      } else if (cell.reader != item && cell.reader2 == kNobody) {
        cell.reader2 = item;
        cell.read2_site = site;
      }
    }
  }
}

bool owned(const Fiber& fiber, uintptr_t address) {
  for (const auto& [start, size] : fiber.own) {
    if (address - start < size) return true;
  }
  return false;
}

// The item's own stack: only the values kept outside inner() are watched.
void stack_access(const Group& group, const Fiber& fiber, uintptr_t address, uint32_t size,
                  bool write, uintptr_t site) {
  if (address < fiber.stack_low || address >= fiber.stack_top) return;
  const auto offset = static_cast<uint32_t>(fiber.stack_top - address);
  if (write) {
    if (fiber.phase_frame && address >= fiber.phase_frame && !owned(fiber, address)) {
      OuterWrite& w = checker.outer.try_emplace(offset, OuterWrite{size, site}).first->second;
      w.size = std::max(w.size, size);
    }
    if (!checker.differing.empty()) {
      if (auto it = checker.differing.find(offset); it != checker.differing.end()) {
        it->second.rewritten[fiber.item] = true;
      }
    }
    return;
  }
  if (checker.differing.empty()) return;
  auto it = checker.differing.find(offset);
  if (it == checker.differing.end() || it->second.rewritten[fiber.item]) return;
  porta_cpu_hazard_t hazard{};
  hazard.kind = PORTA_CPU_HAZARD_ITEM_VALUE;
  hazard.space = PORTA_CPU_SPACE_PRIVATE;
  hazard.phase = group.phase;
  hazard.items[0] = it->second.items[0];
  hazard.items[1] = it->second.items[1];
  hazard.size = size;
  hazard.address = offset;
  hazard.sites[0] = it->second.write_site;
  hazard.sites[1] = site;
  report(hazard);
}

inline void on_access(const void* pointer, size_t size, bool write, void* site) {
  const Group* group = thread_group;
  if (!group || !group->current) return;  // not in a work-item: the runtime's own code
  if (checker.exhausted) return;
  const Fiber& fiber = *group->current;
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  const auto code = reinterpret_cast<uintptr_t>(site);
  try {
    if (address - group->arena < group->arena_bytes) {
      stack_access(*group, fiber, address, static_cast<uint32_t>(size), write, code);
    } else {
      shadow_access(*group, fiber, address, static_cast<uint32_t>(size), write, code);
    }
  } catch (const std::bad_alloc&) {
    checker.exhausted = true;
  }
}

// The shadow's largest size kept from one group to the next.
constexpr size_t kKeptShadowBytes = size_t{64} << 20;

// The calling thread's block of this module's thread-local storage, where PORTA_SHARED lives.
int find_tls(dl_phdr_info* info, size_t, void* base) {
  if (info->dlpi_addr != reinterpret_cast<uintptr_t>(base) || !info->dlpi_tls_data) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    if (info->dlpi_phdr[i].p_type == PT_TLS) {
      checker.tls_low = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
      checker.tls_high = checker.tls_low + info->dlpi_phdr[i].p_memsz;
      return 1;
    }
  }
  return 0;
}

}  // namespace

namespace check {

void begin_group(Group&) {
  if (!checker.tls_known) {
    checker.tls_known = true;
    tls_anchor = 1;
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&begin_group), &info) && info.dli_fbase) {
      dl_iterate_phdr(find_tls, info.dli_fbase);
    }
  }
  checker.shadow.clear();
  checker.outer.clear();
  checker.differing.clear();
  checker.exhausted = false;
}

namespace {
bool compare_phase(Group& group) {
  // Every item must wait at the same barrier: one that left the kernel, or waits elsewhere,
  // would leave the others hanging on a GPU.
  const Fiber* first = nullptr;
  const Fiber* odd = nullptr;
  for (uint32_t i = 0; i < group.items && !odd; ++i) {
    const Fiber& fiber = group.fibers[i];
    const bool waiting = fiber.state == kAtBarrier;
    if (!first) {
      first = &fiber;
    } else if ((first->state == kAtBarrier) != waiting ||
               (waiting && fiber.barrier_site != first->barrier_site)) {
      odd = &fiber;
    }
  }
  bool together = true;
  if (odd) {
    together = false;
    porta_cpu_hazard_t hazard{};
    hazard.kind = PORTA_CPU_HAZARD_DIVERGENT_BARRIER;
    hazard.space = PORTA_CPU_SPACE_PRIVATE;
    hazard.phase = group.phase;
    hazard.items[0] = first->item;
    hazard.items[1] = odd->item;
    hazard.sites[0] = first->state == kAtBarrier ? first->barrier_site : 0;
    hazard.sites[1] = odd->state == kAtBarrier ? odd->barrier_site : 0;
    report(hazard);
  }
  // Values outside inner() written in this phase: the same in every item, or remembered.
  if (together && first->state == kAtBarrier) {
    for (const auto& [offset, write] : checker.outer) {
      const auto value = [&](const Fiber& fiber) {
        return reinterpret_cast<const unsigned char*>(fiber.stack_top - offset);
      };
      const Fiber* other = nullptr;
      for (uint32_t i = 1; i < group.items && !other; ++i) {
        if (std::memcmp(value(*first), value(group.fibers[i]), write.size) != 0) {
          other = &group.fibers[i];
        }
      }
      if (!other) {
        checker.differing.erase(offset);
        continue;
      }
      Differing& d = checker.differing[offset];
      d.size = write.size;
      d.write_site = write.site;
      d.items[0] = first->item;
      d.items[1] = other->item;
      d.rewritten.assign(group.items, false);
    }
  }
  checker.outer.clear();
  checker.shadow.clear();
  return together;
}
}  // namespace

bool end_phase(Group& group) {
  try {
    return compare_phase(group);
  } catch (const std::bad_alloc&) {
    checker.exhausted = true;
    checker.outer.clear();
    checker.shadow.clear();
    return true;
  }
}

void end_group(Group&) {
  checker.outer.clear();
  checker.differing.clear();
  checker.shadow.shrink(kKeptShadowBytes);
  if (checker.exhausted) {
    checker.shadow = Shadow{};
    group_failure = "the race checker ran out of memory for its record of the group's accesses";
  }
}

void abandon_group(Group&) {
  checker.outer.clear();
  checker.differing.clear();
  checker.found.clear();
  checker.shadow.clear();
  checker.shadow.shrink(kKeptShadowBytes);
  checker.exhausted = false;
}

void own(Fiber& fiber, uintptr_t address, size_t size, bool keep) {
  if (keep) {
    try {
      fiber.own.emplace_back(address, size);
    } catch (const std::bad_alloc&) {
      checker.exhausted = true;
    }
    return;
  }
  for (size_t i = fiber.own.size(); i-- > 0;) {
    if (fiber.own[i].first == address) {
      fiber.own.erase(fiber.own.begin() + static_cast<ptrdiff_t>(i));
      return;
    }
  }
}

}  // namespace check
}  // namespace porta::simt

using porta::simt::on_access;

// The instrumentation's entry points (the subset GCC and Clang emit for plain code).
#define PORTA_TSAN_HIDDEN extern "C" __attribute__((visibility("hidden")))
#define PORTA_TSAN_ACCESS(n)                                  \
  PORTA_TSAN_HIDDEN void __tsan_read##n(void* a) {            \
    on_access(a, n, false, __builtin_return_address(0));      \
  }                                                           \
  PORTA_TSAN_HIDDEN void __tsan_write##n(void* a) {           \
    on_access(a, n, true, __builtin_return_address(0));       \
  }                                                           \
  PORTA_TSAN_HIDDEN void __tsan_unaligned_read##n(void* a) {  \
    on_access(a, n, false, __builtin_return_address(0));      \
  }                                                           \
  PORTA_TSAN_HIDDEN void __tsan_unaligned_write##n(void* a) { \
    on_access(a, n, true, __builtin_return_address(0));       \
  }
PORTA_TSAN_ACCESS(1)
PORTA_TSAN_ACCESS(2)
PORTA_TSAN_ACCESS(4)
PORTA_TSAN_ACCESS(8)
PORTA_TSAN_ACCESS(16)
PORTA_TSAN_HIDDEN void __tsan_read_range(void* a, unsigned long size) {
  on_access(a, size, false, __builtin_return_address(0));
}
PORTA_TSAN_HIDDEN void __tsan_write_range(void* a, unsigned long size) {
  on_access(a, size, true, __builtin_return_address(0));
}
PORTA_TSAN_HIDDEN void __tsan_init() {}
PORTA_TSAN_HIDDEN void __tsan_func_entry(void*) {}
PORTA_TSAN_HIDDEN void __tsan_func_exit() {}
PORTA_TSAN_HIDDEN void __tsan_vptr_read(void**) {}
PORTA_TSAN_HIDDEN void __tsan_vptr_update(void**, void*) {}

namespace {
uint32_t take(porta_cpu_hazard_t* out, uint32_t capacity) {
  auto& found = porta::simt::checker.found;
  const uint32_t n = static_cast<uint32_t>(std::min<size_t>(capacity, found.size()));
  std::copy(found.begin(), found.begin() + n, out);
  found.clear();
  return n;
}
}  // namespace

extern "C" __attribute__((visibility("default")))
const porta_cpu_checker_t porta_cpu_checker = {sizeof(porta_cpu_checker_t), take};
