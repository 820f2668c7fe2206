// The portable GEMM and convolution kernels declare the group they are launched with
// (PORTA_KERNEL_MAX_GROUP): every backend reports it through porta_kernel_max_group_size and
// refuses a larger launch, so a GPU compiler may budget registers for no more.
#include <dlfcn.h>

#include <string>

#include "ops_test.h"

using namespace ops_test;

namespace {

// The portable kernel library beside libporta (porta_add_kernel_library's base name).
std::string kernel_library() {
  Dl_info info{};
  REQUIRE(dladdr(reinterpret_cast<void*>(&porta_init), &info) != 0);
  const std::string path = info.dli_fname;
  return path.substr(0, path.rfind('/') + 1) + "portable_ops_kernels";
}

}  // namespace

TEST_CASE("kernel limits: the engine kernels declare their 16 x 16 group", "[limits]") {
  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  porta_device_properties_t props;
  std::memset(&props, 0, sizeof props);
  props.struct_size = sizeof props;
  PT_REQUIRE_OK(porta_device_properties(device, &props));
  porta_module_t module = nullptr;
  PT_REQUIRE_OK(porta_module_load(device, kernel_library().c_str(), &module));
  // SPIR-V has no form for a maximum group size (only required sizes and hints), so the SPIR-V
  // builds do not carry the declaration: OpenCL and Level Zero report the driver's per-kernel
  // limit instead.
  const std::string backend = props.backend;
  if (backend == "opencl" || backend == "level_zero") {
    WARN(backend << ": declared group limits are not carried by SPIR-V; the driver's are checked");
    for (const char* name : {"gemm_f32", "conv2d_forward_f32"}) {
      porta_kernel_t kernel = nullptr;
      PT_REQUIRE_OK(porta_kernel_get(module, name, &kernel));
      int32_t max = 0;
      PT_REQUIRE_OK(porta_kernel_max_group_size(kernel, &max));
      CHECK(max >= 256);
      CHECK(max <= props.max_work_group_size);
    }
    PT_CHECK_OK(porta_module_unload(module));
    return;
  }
  for (const char* name :
       {"gemm_f32", "gemm_bf16", "conv2d_forward_f32", "conv2d_backward_weights_f16"}) {
    INFO(name);
    porta_kernel_t kernel = nullptr;
    PT_REQUIRE_OK(porta_kernel_get(module, name, &kernel));
    int32_t max = 0;
    PT_REQUIRE_OK(porta_kernel_max_group_size(kernel, &max));
    CHECK(max == std::min(256, props.max_work_group_size));
    porta_launch_config_t config;
    std::memset(&config, 0, sizeof config);
    config.struct_size = sizeof config;
    config.grid[0] = config.grid[1] = config.grid[2] = 1;
    config.group[0] = 32;
    config.group[1] = 16;  // 512 work-items: within most devices' limit, above the kernel's
    config.group[2] = 1;
    if (props.max_work_group_size >= 512 && props.max_work_group_dims[1] >= 16) {
      CHECK(porta_kernel_launch(kernel, &config, nullptr, nullptr) == PORTA_ERROR_INVALID_ARGUMENT);
      CHECK(names(porta_last_error_message(), "porta_kernel_max_group_size"));
    }
  }
  // A kernel without a declared limit takes the device's (or what its registers allow).
  porta_kernel_t relu = nullptr;
  PT_REQUIRE_OK(porta_kernel_get(module, "relu_forward", &relu));
  int32_t max = 0;
  PT_REQUIRE_OK(porta_kernel_max_group_size(relu, &max));
  CHECK(max > 256);
  CHECK(max <= props.max_work_group_size);
  CHECK(porta_kernel_max_group_size(relu, nullptr) == PORTA_ERROR_INVALID_ARGUMENT);
  PT_REQUIRE_OK(porta_module_unload(module));
}
