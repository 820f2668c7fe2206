// What the racecheck builds of kernel libraries find (PORTA_CPU_MODE=racecheck), in words: each
// hazard once per kernel, kind and pair of code sites in the log and in the backend's report, and
// every launch that found one fails with PORTA_ERROR_KERNEL_HAZARD.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "checker.h"

namespace porta::cpu {

// A thread-local variable of a kernel library: one of its PORTA_SHARED arrays in a SIMT build.
struct SharedVariable {
  uint64_t offset, size;
  std::string name;
};

// The kernel library a checked launch runs, as its hazards name it. Its object is dlopened as
// "/proc/self/fd/N" (see cpu_module.cpp), the name dladdr and the link map give, which tells a
// reader nothing and may name another file once the module is gone: sites in it are named after
// the file porta_module_load opened, what addr2line -e takes.
class CodeModule {
 public:
  // name: the file's base name ("lib.cpu-racecheck.so"), or what stands for an in-memory image;
  // image: a path its file can be read through while it is loaded; base: where dladdr says its
  // object lies (dli_fbase).
  CodeModule(std::string name, std::string image, uintptr_t base)
      : name_(std::move(name)), image_(std::move(image)), base_(base) {}

  const std::string& name() const { return name_; }
  // Whether code lies in this module's object: dladdr's dli_fbase for it.
  bool holds(uintptr_t object_base) const { return object_base == base_; }
  // Its PORTA_SHARED variables, read from its symbol table once (see read_shared_variables).
  const std::vector<SharedVariable>& shared_variables() const;

 private:
  std::string name_;
  std::string image_;
  uintptr_t base_;
  mutable std::mutex mutex_;
  mutable bool read_ = false;
  mutable std::vector<SharedVariable> shared_variables_;
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

  // Words what the checker found in one group of a launch of kernel in module: group_id and
  // group_size as in the launch, args the launch's parameter values (param_sizes bytes each), to
  // name the buffer a global address lies in.
  Hazard describe(const std::string& kernel, const CodeModule& module,
                  const porta_cpu_hazard_t& hazard, const uint32_t group_id[3],
                  const uint32_t group_size[3], const std::vector<void*>& args,
                  const std::vector<uint32_t>& param_sizes) const;

  // Logs and keeps the hazards not seen before for this kernel; returns the launch's failure
  // message (every hazard of the launch counts, seen before or not).
  std::string record(const std::string& kernel, const std::vector<Hazard>& hazards);

  // The report: one line per hazard kept, and how many.
  std::string report(size_t& count) const;

 private:
  std::string where(uintptr_t address, const std::vector<void*>& args,
                    const std::vector<uint32_t>& param_sizes) const;
  FindAllocation find_allocation_;
  mutable std::mutex mutex_;
  std::set<std::tuple<std::string, uint32_t, uintptr_t, uintptr_t>> seen_;
  std::vector<std::string> lines_;
};

}  // namespace porta::cpu
