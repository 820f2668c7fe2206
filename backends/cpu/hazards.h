// What the racecheck builds of kernel libraries find (PORTA_CPU_MODE=racecheck), in words: each
// hazard once per kernel, kind and pair of code sites in the log and in the backend's report, and
// every launch that found one fails with PORTA_ERROR_KERNEL_HAZARD.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "checker.h"

namespace porta::cpu {

// A thread-local variable of a kernel library: one of its PORTA_SHARED arrays in a SIMT build.
struct SharedVariable {
  uint64_t offset, size;
  std::string name;
};

// One hazard of a launch, described.
struct Hazard {
  uint32_t kind;
  uintptr_t sites[2];
  std::string text;
};

class HazardLog {
 public:
  // The allocation [base, base + size) holding address, if the backend made it.
  using FindAllocation = std::function<bool(uintptr_t address, uintptr_t& base, size_t& size)>;
  explicit HazardLog(FindAllocation find_allocation)
      : find_allocation_(std::move(find_allocation)) {}

  // Words what the checker found in one group: group_id and group_size as in the launch, args
  // the launch's parameter values (param_sizes bytes each), to name the buffer a global address
  // lies in.
  Hazard describe(const std::string& kernel, const porta_cpu_hazard_t& hazard,
                  const uint32_t group_id[3], const uint32_t group_size[3],
                  const std::vector<void*>& args, const std::vector<uint32_t>& param_sizes) const;

  // Logs and keeps the hazards not seen before for this kernel; returns the launch's failure
  // message (every hazard of the launch counts, seen before or not).
  std::string record(const std::string& kernel, const std::vector<Hazard>& hazards);

  // The report: one line per hazard kept, and how many.
  std::string report(size_t& count) const;

 private:
  std::string where(uintptr_t address, const std::vector<void*>& args,
                    const std::vector<uint32_t>& param_sizes) const;
  // "PORTA_SHARED <variable> + <bytes>" for an offset in the TLS block of the library holding
  // site, read from its symbol table once; the bare offset when it has none.
  std::string shared_variable(uintptr_t site, uint64_t offset) const;

  FindAllocation find_allocation_;
  mutable std::mutex mutex_;
  std::set<std::tuple<std::string, uint32_t, uintptr_t, uintptr_t>> seen_;
  std::vector<std::string> lines_;
  mutable std::map<std::string, std::vector<SharedVariable>> shared_variables_;  // per library
};

}  // namespace porta::cpu
