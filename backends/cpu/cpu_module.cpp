#include "cpu_module.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <utility>
#include <vector>

#include "dlopen_failure.h"
#include "elf_check.h"
#include "plugin_kit.h"

namespace porta::cpu {

using plugin::Failure;
using plugin::log;
using plugin::throw_error;

namespace {

std::string errno_text(int error) { return std::strerror(error); }

std::string dl_error_text() {
  const char* text = dlerror();
  return text ? text : "unknown dlopen error";
}

// A failed dlopen's status: out of memory as such, anything else a bad module.
porta_status_t dlopen_status(int errno_after, const std::string& reason) {
  return dlopen_ran_out_of_memory(errno_after, reason.c_str()) ? PORTA_ERROR_OUT_OF_MEMORY
                                                               : PORTA_ERROR_INVALID_ARGUMENT;
}

// dlopen would accept a file of another machine only to fail with a vaguer message, and a
// non-ELF file with none that names the real problem; the image is checked first.
void check_elf_header(const void* data, size_t size, const std::string& origin) {
  if (auto problem = elf::check_shared_object(data, size)) {
    throw_error(problem->status, origin + ": " + problem->message);
  }
}

void* open_shared_object(const std::string& path, const std::string& origin) {
  errno = 0;
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const int error = errno;
    const std::string reason = dl_error_text();
    throw_error(dlopen_status(error, reason), origin + ": dlopen failed: " + reason);
  }
  return handle;
}

// The open files that loaded module images are dlopened through, one per file.
//
// A module's object is dlopened as "/proc/self/fd/N", N the fd its image was read and checked
// through, never by the caller's path: glibc returns an already loaded object whose name string
// matches without opening the file, so a path would give the object of a file since replaced (or,
// for a relative path, one in another directory), and a file swapped after the check would be
// mapped unchecked. The fd names the very inode that was checked.
//
// glibc also matches the file it opens against loaded objects by device and inode, so two loads of
// one file share one object, named by the first load's fd. That fd must stay open as long as the
// object is loaded, even after the module that opened it is unloaded while another still holds the
// object: closed, its number could be reused for another file, whose "/proc/self/fd/N" would then
// match the resident object by name. So the fds live here, counted by the modules using them, and a
// load of a file already here dlopens by the registered fd (closing its own). Once the last module
// has gone (after its dlclose), the fd is closed if the object is gone; one that stays resident
// (dlclose does not unload objects marked NODELETE, e.g. C++ code with unique symbols) keeps its fd
// and entry for the next load of that file. An open fd keeps its inode from being reused, so a key
// names one file for as long as it is here. In-memory images (memfds, each its own inode) go the
// same way.
struct ImageFile {
  int fd;
  size_t users;  // modules holding it; 0 while its object stays resident with none
};

struct ImageFiles {
  std::mutex mutex;
  std::map<ImageKey, ImageFile> files;
};

// Never destroyed: a module may be unloaded from another object's destructor at exit.
ImageFiles& image_files() {
  static auto* registry = new ImageFiles;
  return *registry;
}

// Registers fd, an open image file, for one more module, taking it: returns its key and the fd to
// dlopen through, fd itself or the one already registered for the same file (fd is then closed).
std::pair<ImageKey, int> acquire_image_file(int fd, const std::string& origin) {
  struct stat file;
  if (fstat(fd, &file) != 0) {
    const int error = errno;
    close(fd);
    throw_error(PORTA_ERROR_BACKEND, origin + ": fstat failed: " + errno_text(error));
  }
  const ImageKey key{file.st_dev, file.st_ino};
  ImageFiles& registry = image_files();
  std::lock_guard lock(registry.mutex);
  try {
    auto [entry, added] = registry.files.try_emplace(key, ImageFile{fd, 0});
    if (!added) close(fd);
    ++entry->second.users;
    return {key, entry->second.fd};
  } catch (...) {
    close(fd);
    throw;
  }
}

// One module fewer uses the file at key; called after its dlclose.
void release_image_file(const ImageKey& key, const std::string& origin) noexcept {
  ImageFiles& registry = image_files();
  std::lock_guard lock(registry.mutex);
  auto entry = registry.files.find(key);
  if (entry == registry.files.end() || --entry->second.users > 0) return;
  char path[64];  // no allocation: this runs in a destructor
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", entry->second.fd);
  if (void* still_loaded = dlopen(path, RTLD_NOW | RTLD_NOLOAD)) {
    dlclose(still_loaded);
    try {
      log(PORTA_LOG_DEBUG, origin + " stays loaded after unload; keeping its fd open");
    } catch (...) {
    }
    return;
  }
  close(entry->second.fd);
  registry.files.erase(entry);
}

// Keeps the alignment a parameter needs: a type's alignment divides its size, so the power of two
// at or above the size (capped at the block's 64) is enough.
size_t param_alignment(uint32_t size) {
  return std::min<size_t>(64, std::bit_ceil(std::max<uint32_t>(size, 1)));
}

struct FreeDeleter {
  void operator()(void* ptr) const { std::free(ptr); }
};

// Everything one launch needs after kernel_launch has returned.
struct Launch {
  const CpuKernel* kernel;
  porta_cpu_group_fn run_group;
  const porta_cpu_checker_t* checker;
  porta_simt_take_failure_fn take_failure;
  HazardLog* hazard_log;
  std::vector<uint32_t> param_sizes;
  std::mutex hazards_mutex;
  std::vector<Hazard> hazards;  // what the checker found in this launch
  uint32_t grid[3];
  uint32_t group[3];
  uint32_t shared_memory_bytes;
  uint64_t group_count;
  std::unique_ptr<std::byte, FreeDeleter> block;  // the copied argument values
  std::vector<void*> args;                        // pointers into block
};

// What the checker found in the group just run on this thread.
void take_hazards(Launch& launch, const porta_cpu_work_group_t& group) {
  porta_cpu_hazard_t found[16];
  const uint32_t count = launch.checker->take(found, 16);
  if (count == 0) return;
  std::vector<Hazard> described;
  for (uint32_t i = 0; i < count; ++i) {
    described.push_back(launch.hazard_log->describe(
        launch.kernel->name(), *launch.kernel->code_module(), found[i], group.group_id,
        group.group_size, launch.args, launch.param_sizes));
  }
  std::lock_guard lock(launch.hazards_mutex);
  for (Hazard& hazard : described) {
    if (launch.hazards.size() < 64) launch.hazards.push_back(std::move(hazard));
  }
}

void run_launch(Launch& launch, ThreadPool& pool, ScratchBuffer& worker_scratch) {
  const uint32_t gx = launch.grid[0];
  const uint32_t gy = launch.grid[1];
  pool.parallel_for(
      launch.group_count,
      [&launch, gx, gy](uint64_t begin, uint64_t end, ScratchBuffer& scratch) {
        porta_cpu_work_group_t group;
        std::memcpy(group.grid, launch.grid, sizeof(group.grid));
        std::memcpy(group.group_size, launch.group, sizeof(group.group_size));
        group.shared_memory_bytes = launch.shared_memory_bytes;
        group.shared_memory = nullptr;
        if (launch.shared_memory_bytes > 0) {
          try {
            group.shared_memory = scratch.reserve(launch.shared_memory_bytes);
          } catch (const std::bad_alloc&) {
            throw_error(PORTA_ERROR_OUT_OF_MEMORY, "kernel '" + launch.kernel->name() +
                                                       "': cannot allocate " +
                                                       std::to_string(launch.shared_memory_bytes) +
                                                       " bytes of shared memory for a work-group");
          }
        }
        // Flattened x fastest, then y, then z; one division per chunk, not per group.
        uint32_t x = static_cast<uint32_t>(begin % gx);
        uint32_t y = static_cast<uint32_t>(begin / gx % gy);
        uint32_t z = static_cast<uint32_t>(begin / (uint64_t{gx} * gy));
        for (uint64_t i = begin; i < end; ++i) {
          group.group_id[0] = x;
          group.group_id[1] = y;
          group.group_id[2] = z;
          launch.run_group(&group, launch.args.data());
          if (launch.take_failure) {
            if (const char* failure = launch.take_failure()) {
              throw_error(PORTA_ERROR_OUT_OF_MEMORY,
                          "kernel '" + launch.kernel->name() + "': " + failure);
            }
          }
          if (launch.checker) take_hazards(launch, group);
          if (++x == gx) {
            x = 0;
            if (++y == gy) {
              y = 0;
              ++z;
            }
          }
        }
      },
      worker_scratch);
  if (!launch.hazards.empty()) {
    throw_error(PORTA_ERROR_KERNEL_HAZARD,
                launch.hazard_log->record(launch.kernel->name(), launch.hazards));
  }
}

// The size of the exported object at `address` (from dlsym), or nullopt where the symbol is no
// object. A descriptor must hold what it declares; an old module's group limit
// (PORTA_CPU_KERNEL_OLD_MAX_GROUP_PREFIX) is told from the descriptor of a kernel named
// max_group_size_<name> by being smaller. AddressSanitizer pads globals, so a sanitized old
// module's limits read as descriptors and are left out.
std::optional<size_t> object_size(const void* address) {
  Dl_info info;
  void* symbol_entry = nullptr;
  if (!dladdr1(address, &info, &symbol_entry, RTLD_DL_SYMENT) || !symbol_entry) return std::nullopt;
  const auto* entry = static_cast<const ElfW(Sym)*>(symbol_entry);
  if (ELF64_ST_TYPE(entry->st_info) != STT_OBJECT) return std::nullopt;
  return entry->st_size;
}

}  // namespace

CpuKernel::CpuKernel(std::string name, const porta_cpu_kernel_t& descriptor,
                     const porta_cpu_checker_t* checker, porta_simt_take_failure_fn take_failure)
    : name_(std::move(name)),
      run_group_(descriptor.run_group),
      checker_(checker),
      take_failure_(take_failure),
      param_sizes_(descriptor.param_sizes, descriptor.param_sizes + descriptor.param_count) {
  param_offsets_.reserve(param_sizes_.size());
  for (uint32_t size : param_sizes_) {
    size_t align = param_alignment(size);
    block_size_ = (block_size_ + align - 1) / align * align;
    param_offsets_.push_back(block_size_);
    block_size_ += size;
  }
}

Task CpuKernel::make_launch(const porta_launch_config_t& config, void** args, ThreadPool& pool,
                            HazardLog& hazards) const {
  if (!param_sizes_.empty() && !args) {
    throw_error(PORTA_ERROR_INVALID_ARGUMENT, "args: NULL, but kernel '" + name_ + "' takes " +
                                                  std::to_string(param_sizes_.size()) +
                                                  " parameters");
  }
  auto launch = std::make_shared<Launch>();
  launch->kernel = this;
  launch->run_group = run_group_;
  launch->checker = checker_;
  launch->take_failure = take_failure_;
  launch->hazard_log = &hazards;
  launch->param_sizes = param_sizes_;
  uint64_t groups = 1;
  for (int d = 0; d < 3; ++d) {
    launch->grid[d] = config.grid[d];
    launch->group[d] = config.group[d];
    if (config.grid[d] == 0 || config.group[d] == 0) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT, "config: grid and group sizes must be at least 1");
    }
    // The pool's chunk counter may step past the end by a few chunks; keep far from wrapping.
    // (Checked before the product, which three dimensions of 2^30 and more would wrap.)
    if (config.grid[d] > (uint64_t{1} << 62) / groups) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT, "config: the grid has more than 2^62 work-groups");
    }
    groups *= config.grid[d];
  }
  launch->group_count = groups;
  launch->shared_memory_bytes = config.shared_memory_bytes;

  launch->args.resize(param_sizes_.size());
  if (block_size_ > 0) {
    void* block = nullptr;
    if (posix_memalign(&block, 64, block_size_) != 0) throw std::bad_alloc();
    launch->block.reset(static_cast<std::byte*>(block));
  }
  for (size_t i = 0; i < param_sizes_.size(); ++i) {
    if (!args[i] && param_sizes_[i] > 0) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                  "args[" + std::to_string(i) + "]: NULL (kernel '" + name_ + "')");
    }
    void* slot = launch->block.get() + param_offsets_[i];
    if (param_sizes_[i] > 0) std::memcpy(slot, args[i], param_sizes_[i]);
    launch->args[i] = slot;
  }
  return [launch = std::move(launch), &pool](ScratchBuffer& scratch) {
    try {
      run_launch(*launch, pool, scratch);
    } catch (const Failure&) {
      throw;
    } catch (const std::bad_alloc&) {
      // The kernel's own allocation or the launch's: named by the kernel as well. Where even the
      // message cannot be had, the new bad_alloc leaves the stream's guard a bare OUT_OF_MEMORY.
      throw_error(PORTA_ERROR_OUT_OF_MEMORY,
                  "kernel '" + launch->kernel->name() + "': out of host memory");
    } catch (const std::exception& e) {
      // A C++ kernel let an exception out of run_group (a SIMT build's runtime rethrows an
      // item's here): name the kernel, not the stream.
      throw_error(PORTA_ERROR_BACKEND,
                  "kernel '" + launch->kernel->name() + "' threw: " + e.what());
    }
  };
}

CpuModule::CpuModule(void* handle, std::string origin, ImageKey image, const std::string& name,
                     const std::string& image_path)
    : handle_(handle),
      checker_(nullptr),
      take_failure_(nullptr),
      origin_(std::move(origin)),
      image_(image) {
  // A racecheck build (porta_add_kernel_library's .cpu-racecheck.so) exports its checker, and
  // it and a SIMT build (.cpu-simt.so) what stopped a group.
  auto* checker = static_cast<const porta_cpu_checker_t*>(dlsym(handle, PORTA_CPU_CHECKER_SYMBOL));
  if (checker && checker->struct_size >= sizeof(porta_cpu_checker_t) && checker->take) {
    // Its hazards' code sites are told apart from other objects' by where its object lies, as
    // dladdr sees it; the name dladdr gives is the fd it was loaded through (see ImageFile).
    Dl_info info;
    if (!dladdr(checker, &info) || !info.dli_fbase) {
      throw_error(PORTA_ERROR_BACKEND, origin_ + ": dladdr finds no object for its checker");
    }
    code_ =
        std::make_unique<CodeModule>(name, image_path, reinterpret_cast<uintptr_t>(info.dli_fbase));
    checker_ = checker;
  }
  take_failure_ =
      reinterpret_cast<porta_simt_take_failure_fn>(dlsym(handle, PORTA_SIMT_FAILURE_SYMBOL));
}

CpuModule::~CpuModule() {
  kernels_.clear();
  dlclose(handle_);
  release_image_file(image_, origin_);
}

std::unique_ptr<CpuModule> CpuModule::load_image(int fd, const std::string& origin,
                                                 const std::string& name) {
  const auto [key, image_fd] = acquire_image_file(fd, origin);
  void* handle = nullptr;
  try {
    const std::string path = "/proc/self/fd/" + std::to_string(image_fd);
    handle = open_shared_object(path, origin);
    return std::unique_ptr<CpuModule>(new CpuModule(handle, origin, key, name, path));
  } catch (...) {
    if (handle) dlclose(handle);
    release_image_file(key, origin);
    throw;
  }
}

std::unique_ptr<CpuModule> CpuModule::load_file(const char* path) {
  const std::string origin = path;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not hang us
  if (fd < 0) {
    int error = errno;
    if (error == ENOENT || error == ENOTDIR) {
      throw_error(PORTA_ERROR_NOT_FOUND, origin + ": no such file");
    }
    throw_error(PORTA_ERROR_INVALID_ARGUMENT, origin + ": cannot open: " + errno_text(error));
  }
  // The whole file is checked, not only its header (see check_elf_header), and then loaded
  // through the same fd (see ImageFile), so what is mapped is what was checked.
  std::vector<char> image;
  try {
    char chunk[1 << 16];
    for (;;) {
      ssize_t got = read(fd, chunk, sizeof(chunk));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        const int error = errno;
        throw_error(PORTA_ERROR_INVALID_ARGUMENT, origin + ": cannot read: " + errno_text(error));
      }
      if (got == 0) break;
      image.insert(image.end(), chunk, chunk + got);
    }
    check_elf_header(image.data(), image.size(), origin);
  } catch (...) {
    close(fd);
    throw;
  }
  std::string name;
  try {
    name = origin.substr(origin.rfind('/') + 1);  // npos + 1 is 0: the whole of a bare name
  } catch (...) {
    close(fd);
    throw;
  }
  std::unique_ptr<CpuModule> module = load_image(fd, origin, name);
  log(PORTA_LOG_DEBUG, "loaded module " + origin);
  return module;
}

std::unique_ptr<CpuModule> CpuModule::load_data(const void* image, size_t size) {
  check_elf_header(image, size, "module image");
  // dlopen needs a file; a memfd leaves nothing behind on disk and works where /tmp is noexec.
  int fd = memfd_create("porta-cpu-module", MFD_CLOEXEC);
  if (fd < 0) {
    int error = errno;
    throw_error(error == ENOMEM || error == EMFILE || error == ENFILE ? PORTA_ERROR_OUT_OF_MEMORY
                                                                      : PORTA_ERROR_BACKEND,
                "module image: memfd_create failed: " + errno_text(error));
  }
  const char* bytes = static_cast<const char*>(image);
  for (size_t written = 0; written < size;) {
    ssize_t n = write(fd, bytes + written, size - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int error = n < 0 ? errno : EIO;
      close(fd);
      throw_error(
          error == ENOSPC || error == ENOMEM ? PORTA_ERROR_OUT_OF_MEMORY : PORTA_ERROR_BACKEND,
          "module image: writing " + std::to_string(size) +
              " bytes to a memfd failed: " + errno_text(error));
    }
    written += static_cast<size_t>(n);
  }
  // A memfd is its own inode, so the module is loaded through this fd (see ImageFile).
  std::string origin;
  try {
    origin = "module image (/proc/self/fd/" + std::to_string(fd) + ")";
  } catch (...) {
    close(fd);
    throw;
  }
  // Hazard sites in it are "module-image+0x<offset>": there is no file to name.
  std::unique_ptr<CpuModule> module = load_image(fd, origin, "module-image");
  log(PORTA_LOG_DEBUG, "loaded a " + std::to_string(size) + "-byte " + origin);
  return module;
}

CpuKernel* CpuModule::kernel(const char* name) {
  std::lock_guard lock(mutex_);
  if (auto it = kernels_.find(name); it != kernels_.end()) return it->second.get();

  const std::string symbol = std::string(PORTA_CPU_KERNEL_SYMBOL_PREFIX) + name;
  dlerror();  // clear a stale error so the one below is dlsym's
  auto* descriptor = static_cast<const porta_cpu_kernel_t*>(dlsym(handle_, symbol.c_str()));
  if (!descriptor) {
    throw_error(PORTA_ERROR_NOT_FOUND,
                "kernel '" + std::string(name) + "': " + origin_ + " exports no symbol " + symbol);
  }
  const std::optional<size_t> size = object_size(descriptor);
  if (!size || *size < sizeof(descriptor->struct_size)) {
    throw_error(PORTA_ERROR_NOT_FOUND, "kernel '" + std::string(name) + "': " + origin_ +
                                           " exports " + symbol + ", but as " +
                                           (size ? std::to_string(*size) + " bytes" : "no object") +
                                           ", not a kernel descriptor");
  }
  if (*size < descriptor->struct_size) {
    throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                symbol + ": descriptor struct_size " + std::to_string(descriptor->struct_size) +
                    " but the symbol holds " + std::to_string(*size) + " bytes");
  }
  if (descriptor->struct_size < sizeof(porta_cpu_kernel_t)) {
    throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION,
                symbol + ": descriptor struct_size " + std::to_string(descriptor->struct_size) +
                    ", this backend needs at least " + std::to_string(sizeof(porta_cpu_kernel_t)));
  }
  if (descriptor->abi_version != PORTA_CPU_KERNEL_ABI_VERSION) {
    throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION,
                symbol + ": built for CPU kernel ABI " + std::to_string(descriptor->abi_version) +
                    ", this backend runs ABI " + std::to_string(PORTA_CPU_KERNEL_ABI_VERSION));
  }
  if (descriptor->param_count > PORTA_CPU_KERNEL_MAX_PARAMS) {
    throw_error(PORTA_ERROR_INCOMPATIBLE_VERSION,
                symbol + ": " + std::to_string(descriptor->param_count) + " parameters, at most " +
                    std::to_string(PORTA_CPU_KERNEL_MAX_PARAMS) + " are supported");
  }
  if (!descriptor->run_group || (descriptor->param_count > 0 && !descriptor->param_sizes)) {
    throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                symbol + ": malformed descriptor (NULL run_group or param_sizes)");
  }
  auto kernel = std::make_unique<CpuKernel>(name, *descriptor, checker_, take_failure_);
  const std::string limit = std::string(PORTA_CPU_KERNEL_MAX_GROUP_PREFIX) + name;
  const std::string old_limit = std::string(PORTA_CPU_KERNEL_OLD_MAX_GROUP_PREFIX) + name;
  if (auto* max = static_cast<const uint32_t*>(dlsym(handle_, limit.c_str()))) {
    kernel->set_max_group_size(*max);
  } else if (auto* old = static_cast<const uint32_t*>(dlsym(handle_, old_limit.c_str()))) {
    const std::optional<size_t> size = object_size(old);
    if (size && *size >= sizeof(uint32_t) && *size < sizeof(porta_cpu_kernel_t)) {
      kernel->set_max_group_size(*old);
    }
  }
  const std::string signature = std::string(PORTA_KERNEL_SIGNATURE_PREFIX) + name;
  kernel->set_signature(static_cast<const char*>(dlsym(handle_, signature.c_str())));
  kernel->set_code_module(code_.get());
  CpuKernel* result = kernel.get();
  kernels_.emplace(name, std::move(kernel));
  return result;
}

}  // namespace porta::cpu
