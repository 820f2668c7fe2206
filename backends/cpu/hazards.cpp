#include "hazards.h"

#include <dlfcn.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "plugin_support.h"

namespace porta::cpu {
namespace {

std::string hex(uint64_t value) {
  char text[32];
  std::snprintf(text, sizeof(text), "0x%" PRIx64, value);
  return text;
}

// A work-item or group as (x,y,z).
std::string coords(uint32_t x, uint32_t y, uint32_t z) {
  return "(" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + ")";
}
std::string item_coords(uint32_t item, const uint32_t size[3]) {
  return coords(item % size[0], item / size[0] % size[1], item / (size[0] * size[1]));
}

// A code address as "<library>+0x<offset>" (what addr2line -e <library> takes). The sites are
// return addresses of the checker's calls; one byte back lies in the access's own instruction.
std::string site(uintptr_t address) {
  if (address == 0) return "the kernel's end";
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(address), &info) && info.dli_fname && info.dli_fbase) {
    std::string file = info.dli_fname;
    const size_t slash = file.rfind('/');
    if (slash != std::string::npos) file.erase(0, slash + 1);
    return file + "+" + hex(address - 1 - reinterpret_cast<uintptr_t>(info.dli_fbase));
  }
  return hex(address - 1);
}

}  // namespace

std::string HazardLog::where(uintptr_t address, const std::vector<void*>& args,
                             const std::vector<uint32_t>& param_sizes) const {
  uintptr_t base = 0;
  size_t size = 0;
  if (!find_allocation_ || !find_allocation_(address, base, size)) {
    return "global memory at " + hex(address) + " (not a Porta allocation)";
  }
  std::string text = "global memory";
  // The parameter pointing into the same allocation, nearest below the address: the buffer the
  // kernel reached it through.
  int parameter = -1;
  uintptr_t nearest = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    if (param_sizes[i] != sizeof(void*)) continue;
    uintptr_t value;
    std::memcpy(&value, args[i], sizeof(value));
    if (value >= base && value - base < size && value <= address && value >= nearest) {
      parameter = static_cast<int>(i);
      nearest = value;
    }
  }
  if (parameter >= 0) {
    text += ", parameter " + std::to_string(parameter) + " + " + std::to_string(address - nearest);
  }
  return text + " (allocation " + hex(base) + " of " + std::to_string(size) + " bytes, offset " +
         std::to_string(address - base) + ")";
}

Hazard HazardLog::describe(const std::string& kernel, const porta_cpu_hazard_t& hazard,
                           const uint32_t group_id[3], const uint32_t group_size[3],
                           const std::vector<void*>& args,
                           const std::vector<uint32_t>& param_sizes) const {
  const std::string group = coords(group_id[0], group_id[1], group_id[2]);
  const std::string a = item_coords(hazard.items[0], group_size);
  const std::string b = item_coords(hazard.items[1], group_size);
  const std::string phase = std::to_string(hazard.phase);
  std::string space;
  switch (hazard.space) {
    case PORTA_CPU_SPACE_GLOBAL:
      space = where(hazard.address, args, param_sizes);
      break;
    case PORTA_CPU_SPACE_SHARED:
      space = "PORTA_SHARED memory, offset " + std::to_string(hazard.address);
      break;
    case PORTA_CPU_SPACE_DYNAMIC_SHARED:
      space = "dynamic shared memory, offset " + std::to_string(hazard.address);
      break;
    default:
      space = "a value outside inner(), " + std::to_string(hazard.address) +
              " bytes below the stack top";
      break;
  }
  std::string text = "kernel '" + kernel + "': ";
  switch (hazard.kind) {
    case PORTA_CPU_HAZARD_WRITE_WRITE:
    case PORTA_CPU_HAZARD_READ_WRITE: {
      const bool ww = hazard.kind == PORTA_CPU_HAZARD_WRITE_WRITE;
      text += std::string(ww ? "write/write" : "read/write") + " race in group " + group +
              " between work-items " + a + " and " + b + " in phase " + phase + " (after " + phase +
              " barriers): " + std::to_string(hazard.size) + " bytes of " + space + "; sites " +
              site(hazard.sites[0]) + " and " + site(hazard.sites[1]);
      break;
    }
    case PORTA_CPU_HAZARD_DIVERGENT_BARRIER:
      text += "divergent barrier in group " + group + " in phase " + phase + ": work-item " + a +
              " reached " + (hazard.sites[0] ? "the barrier at " : "") + site(hazard.sites[0]) +
              ", work-item " + b + " " + (hazard.sites[1] ? "the barrier at " : "") +
              site(hazard.sites[1]);
      break;
    default:
      text += "a value kept outside inner() differs between work-items " + a + " and " + b +
              " of group " + group + " and is read in phase " + phase +
              " (on a GPU each item has its own: use porta::exclusive or PORTA_SHARED): " + space +
              "; written at " + site(hazard.sites[0]) + ", read at " + site(hazard.sites[1]);
      break;
  }
  return Hazard{hazard.kind, {hazard.sites[0], hazard.sites[1]}, std::move(text)};
}

std::string HazardLog::record(const std::string& kernel, const std::vector<Hazard>& hazards) {
  {
    std::lock_guard lock(mutex_);
    for (const Hazard& hazard : hazards) {
      if (!seen_.emplace(kernel, hazard.kind, hazard.sites[0], hazard.sites[1]).second) continue;
      lines_.push_back(hazard.text);
      plugin::log(PORTA_LOG_ERROR, "racecheck: " + hazard.text);
    }
  }
  std::string message = "racecheck: " + std::to_string(hazards.size()) + " hazard" +
                        (hazards.size() == 1 ? "" : "s") +
                        " in this launch; the first: " + hazards.front().text;
  return message;
}

std::string HazardLog::report(size_t& count) const {
  std::lock_guard lock(mutex_);
  std::string text;
  for (const std::string& line : lines_) text += line + "\n";
  count = lines_.size();
  return text;
}

}  // namespace porta::cpu
