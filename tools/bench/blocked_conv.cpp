// The onednn-blocked and onednn-winograd rows, from the module that holds them
// (onednn_blocked.cpp), opened on first use from porta-bench's own lib/ folder.
#include <dlfcn.h>

#include <filesystem>
#include <string>

#include "case.h"

namespace bench {

namespace {

struct Module {
  BlockedConvEntry make = nullptr;
  std::string missing;  // why make is NULL
};

const Module& module() {
  static const Module loaded = [] {
    Module m;
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    const std::string path =
        (exe.parent_path() / ".." / "lib" / "porta_bench_onednn.so").lexically_normal();
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* why = dlerror();
      m.missing = "porta-bench's oneDNN module does not load (" + std::string(why ? why : path) +
                  "); it is built where oneDNN and OpenMP are found";
      return m;
    }
    m.make = reinterpret_cast<BlockedConvEntry>(dlsym(handle, "porta_bench_make_blocked_conv"));
    if (!m.make) m.missing = path + " lacks porta_bench_make_blocked_conv";
    return m;
  }();
  return loaded;
}

}  // namespace

std::string blocked_conv_missing() { return module().missing; }

void make_blocked_conv(Case& c, const Shape& shape, porta_dtype_t dtype, BlockedAlgorithm algorithm,
                       int threads) {
  if (!is_conv(shape.op))
    throw porta::error(PORTA_ERROR_UNSUPPORTED, "oneDNN's blocked rows measure convolutions only");
  if (!module().make) throw porta::error(PORTA_ERROR_UNSUPPORTED, module().missing);
  const std::string what =
      std::string(dtype_name(dtype)) + " " + op_name(shape.op) +
      (algorithm == BlockedAlgorithm::winograd ? " by Winograd's algorithm" : "") +
      " with fp32 output on this CPU";
  module().make(c, shape.op, shape.conv_desc(dtype), algorithm, what, threads);
}

}  // namespace bench
