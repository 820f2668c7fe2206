// Modules and kernels. A CPU module is a shared object exporting porta_cpu_kernel_<name>
// descriptors (porta_kernel.h); a kernel wraps one descriptor and turns launches into stream
// tasks that spread the grid's work-groups over the thread pool.
#pragma once

#include <porta/porta.h>
#include <porta/porta_kernel.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "checker.h"
#include "cpu_stream.h"
#include "hazards.h"
#include "thread_pool.h"

namespace porta::cpu {

// A module's image file by device and inode: the key of the open file its object was loaded
// through (see cpu_module.cpp).
using ImageKey = std::pair<dev_t, ino_t>;

class CpuKernel {
 public:
  // descriptor has been validated (see CpuModule::kernel) and lives as long as its module, as
  // do checker (NULL unless the module is a racecheck build) and take_failure (NULL unless it is
  // a SIMT or racecheck build).
  CpuKernel(std::string name, const porta_cpu_kernel_t& descriptor,
            const porta_cpu_checker_t* checker, porta_simt_take_failure_fn take_failure);

  const std::string& name() const { return name_; }
  // The limit the kernel declared (PORTA_KERNEL_MAX_GROUP), or 0 for none.
  uint32_t max_group_size() const { return max_group_size_; }
  void set_max_group_size(uint32_t max) { max_group_size_ = max; }
  const std::vector<uint32_t>& param_sizes() const { return param_sizes_; }
  // The parameter list as written in PORTA_KERNEL, or NULL for a module that does not record it.
  const char* signature() const { return signature_; }
  void set_signature(const char* signature) { signature_ = signature; }
  // A racecheck build's module, which its hazards name; NULL for other builds.
  const CodeModule* code_module() const { return code_module_; }
  void set_code_module(const CodeModule* module) { code_module_ = module; }

  // Copies the argument values now, so the caller's may go away, and returns the task that runs
  // every work-group on pool. The task uses this kernel: libporta unloads a module only after the
  // device is idle. Throws Failure(INVALID_ARGUMENT) for NULL args when there are parameters.
  // The task fails with KERNEL_HAZARD, after recording them in hazards, when the module's
  // checker found any, and with OUT_OF_MEMORY where a SIMT build could not run or check a group.
  Task make_launch(const porta_launch_config_t& config, void** args, ThreadPool& pool,
                   HazardLog& hazards) const;

 private:
  std::string name_;
  porta_cpu_group_fn run_group_;
  const porta_cpu_checker_t* checker_;
  porta_simt_take_failure_fn take_failure_;
  std::vector<uint32_t> param_sizes_;
  std::vector<size_t> param_offsets_;  // into the argument block, each suitably aligned
  size_t block_size_ = 0;
  uint32_t max_group_size_ = 0;
  const char* signature_ = nullptr;          // in the module's image
  const CodeModule* code_module_ = nullptr;  // its module's, which outlives it
};

class CpuModule {
 public:
  // Maps the file that is at path now: the image that was checked is the one dlopen maps, never
  // an object loaded earlier under the same name. Failures throw Failure: NOT_FOUND for a missing
  // file; INVALID_ARGUMENT for what is not an ELF shared object or fails dlopen (with dlerror());
  // INCOMPATIBLE_VERSION for another machine.
  static std::unique_ptr<CpuModule> load_file(const char* path);
  // The image is only read during the call.
  static std::unique_ptr<CpuModule> load_data(const void* image, size_t size);

  ~CpuModule();
  CpuModule(const CpuModule&) = delete;
  CpuModule& operator=(const CpuModule&) = delete;

  // The kernel named name, looked up once and then cached: libporta has no call that releases a
  // kernel, so the module owns them all. Throws Failure: NOT_FOUND naming the symbol;
  // INCOMPATIBLE_VERSION for a descriptor of another ABI or too many parameters.
  CpuKernel* kernel(const char* name);

  // Whether it is a racecheck build: its accesses are checked.
  bool checked() const { return checker_ != nullptr; }
  const std::string& origin() const { return origin_; }

 private:
  // Takes fd, an open file holding a checked image, and loads that file; origin names it in
  // messages, name in hazard reports (its base name, what addr2line -e takes).
  static std::unique_ptr<CpuModule> load_image(int fd, const std::string& origin,
                                               const std::string& name);
  CpuModule(void* handle, std::string origin, ImageKey image, const std::string& name,
            const std::string& image_path);

  void* handle_;
  const porta_cpu_checker_t* checker_;       // a racecheck build's, or NULL
  porta_simt_take_failure_fn take_failure_;  // a SIMT or racecheck build's, or NULL
  std::string origin_;  // the path, or "/proc/self/fd/N" of an in-memory image, for messages
  ImageKey image_;      // its open file, released after dlclose
  std::unique_ptr<CodeModule> code_;  // a racecheck build's, for its hazard reports; else NULL
  std::mutex mutex_;
  std::map<std::string, std::unique_ptr<CpuKernel>, std::less<>> kernels_;
};

}  // namespace porta::cpu
