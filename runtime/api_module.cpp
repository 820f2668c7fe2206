// Modules and kernels: loading code objects, looking kernels up, launching them.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "runtime.h"
#include "versioned_struct.h"

using namespace porta;

namespace {

// The record is made before the backend loads the code, so that the code is unloaded
// (~Module) if the handle cannot be made: the backend keeps no list of its modules.
std::shared_ptr<Module> new_module(Device& device) {
  auto module = std::make_shared<Module>();
  module->device = &device;
  return module;
}

porta_status_t adopt(Runtime& runtime, std::shared_ptr<Module> module, porta_module_t* out_module) {
  *out_module = reinterpret_cast<porta_module_t>(runtime.modules.insert(std::move(module)));
  return PORTA_SUCCESS;
}

porta_status_t check_config(const char* function, const porta_launch_config_t* config,
                            const porta_device_properties_t& limits) {
  porta_status_t status =
      check_struct_size(function, "config", config, PORTA_LAUNCH_CONFIG_MIN_SIZE);
  if (status != PORTA_SUCCESS) return status;
  uint64_t items = 1;
  for (int d = 0; d < 3; ++d) {
    const char axis = "xyz"[d];
    if (config->grid[d] == 0 || config->grid[d] > uint64_t(limits.max_grid_dims[d])) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: grid.{} is {}; accepted: 1 to {}", function,
                  axis, config->grid[d], limits.max_grid_dims[d]);
    }
    if (config->group[d] == 0 || config->group[d] > uint32_t(limits.max_work_group_dims[d])) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: group.{} is {}; accepted: 1 to {}", function,
                  axis, config->group[d], limits.max_work_group_dims[d]);
    }
    items *= config->group[d];
  }
  if (items > uint64_t(limits.max_work_group_size)) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: a group of {}x{}x{} = {} work-items exceeds the device's {}", function,
                config->group[0], config->group[1], config->group[2], items,
                limits.max_work_group_size);
  }
  if (config->shared_memory_bytes > uint32_t(limits.shared_memory_per_group)) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: {} bytes of shared memory exceed the device's {} per group", function,
                config->shared_memory_bytes, limits.shared_memory_per_group);
  }
  return PORTA_SUCCESS;
}

// The file to load for path: path itself, or the best build of the kernel library it names.
porta_status_t code_object_for(const char* function, const Device& device, const char* path,
                               std::string& out_file) {
  std::error_code ignored;
  if (std::filesystem::is_regular_file(path, ignored)) {
    out_file = path;
    return PORTA_SUCCESS;
  }
  const Backend& backend = *device.backend;
  const char* suffixes = "";
  if (backend.interface.code_object_suffixes &&
      call(backend, function, backend.interface.code_object_suffixes, device.index, &suffixes) !=
          PORTA_SUCCESS) {
    return PORTA_ERROR_BACKEND;
  }
  std::string tried = fmt::format("'{}'", path);
  std::string_view rest = suffixes ? suffixes : "";
  while (!rest.empty()) {
    const size_t end = std::min(rest.find(':'), rest.size());
    std::string candidate = std::string(path) + std::string(rest.substr(0, end));
    if (std::filesystem::is_regular_file(candidate, ignored)) {
      out_file = std::move(candidate);
      return PORTA_SUCCESS;
    }
    tried += fmt::format(", '{}'", candidate);
    rest.remove_prefix(std::min(end + 1, rest.size()));
  }
  return fail(PORTA_ERROR_NOT_FOUND, "{}: no code object for device {} ({}): tried {}", function,
              device.id, device.properties.architecture, tried);
}

}  // namespace

extern "C" PORTA_API porta_status_t porta_module_load(porta_device_t device, const char* path,
                                                      porta_module_t* out_module) {
  return with_runtime("porta_module_load", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_module_load";
    Device* found = runtime.device(device, "porta_module_load: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!path || !out_module) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: path and out_module must not be NULL",
                  function);
    }
    const Backend& backend = *found->backend;
    std::string file;
    porta_status_t status = code_object_for(function, *found, path, file);
    if (status != PORTA_SUCCESS) return status;
    path = file.c_str();
    std::shared_ptr<Module> module = new_module(*found);
    if (backend.interface.module_load_file) {
      status = call(backend, function, backend.interface.module_load_file, found->index, path,
                    &module->native);
    } else {
      std::ifstream input(path, std::ios::binary);
      std::vector<char> image{std::istreambuf_iterator<char>(input), {}};
      if (!input && !input.eof()) return fail(PORTA_ERROR_NOT_FOUND, "{}: cannot read '{}'", function, path);
      status = call(backend, function, backend.interface.module_load_data, found->index,
                    static_cast<const void*>(image.data()), image.size(), &module->native);
    }
    if (status != PORTA_SUCCESS) return status;
    return adopt(runtime, std::move(module), out_module);
  });
}

extern "C" PORTA_API porta_status_t porta_module_load_data(porta_device_t device,
                                                           const void* image, size_t size,
                                                           porta_module_t* out_module) {
  return with_runtime("porta_module_load_data", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_module_load_data";
    Device* found = runtime.device(device, "porta_module_load_data: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!image || size == 0 || !out_module) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: image must be non-NULL with size > 0, and out_module non-NULL", function);
    }
    const Backend& backend = *found->backend;
    std::shared_ptr<Module> module = new_module(*found);
    porta_status_t status = call(backend, function, backend.interface.module_load_data,
                                 found->index, image, size, &module->native);
    if (status != PORTA_SUCCESS) return status;
    return adopt(runtime, std::move(module), out_module);
  });
}

extern "C" PORTA_API porta_status_t porta_module_unload(porta_module_t handle) {
  return with_runtime("porta_module_unload", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Module> module;
    if (porta_status_t status = retire(runtime, "porta_module_unload", handle, module);
        status != PORTA_SUCCESS) {
      return status;
    }
    {
      std::lock_guard lock(module->mutex);
      module->unloaded = true;
      for (const auto& [name, kernel] : module->kernels) runtime.kernels.remove(kernel);
    }
    // Queued launches may still run the module's code; their errors are reported here. The code
    // itself is unloaded when the last reference goes (~Module), which may be a launch that
    // looked its kernel up before this call and is still queueing.
    Device& device = *module->device;
    const Backend& backend = *device.backend;
    return call(backend, "porta_module_unload", backend.interface.device_synchronize, device.index);
  });
}

extern "C" PORTA_API porta_status_t porta_kernel_get(porta_module_t handle, const char* name,
                                                     porta_kernel_t* out_kernel) {
  return with_runtime("porta_kernel_get", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Module> module;
    if (porta_status_t status = resolve(runtime, "porta_kernel_get", handle, module);
        status != PORTA_SUCCESS) {
      return status;
    }
    if (!name || !out_kernel) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_kernel_get: name and out_kernel must not be NULL");
    }
    std::lock_guard lock(module->mutex);
    if (module->unloaded) {
      return fail(PORTA_ERROR_INVALID_HANDLE, "porta_kernel_get: module {} was unloaded meanwhile",
                  static_cast<void*>(handle));
    }
    if (auto it = module->kernels.find(name); it != module->kernels.end()) {
      *out_kernel = reinterpret_cast<porta_kernel_t>(it->second);
      return PORTA_SUCCESS;
    }
    const Backend& backend = *module->device->backend;
    auto kernel = std::make_shared<Kernel>();
    kernel->module = module;
    kernel->device = module->device;
    porta_status_t status = call(backend, "porta_kernel_get", backend.interface.kernel_get,
                                 module->native, name, &kernel->native);
    if (status != PORTA_SUCCESS) return status;
    kernel->max_group_size = kernel->device->properties.max_work_group_size;
    if (backend.interface.kernel_max_group_size) {
      int32_t max = 0;
      status = call(backend, "porta_kernel_get", backend.interface.kernel_max_group_size,
                    kernel->native, &max);
      if (status != PORTA_SUCCESS) return status;
      if (max > 0) kernel->max_group_size = std::min(kernel->max_group_size, max);
    }
    uintptr_t kernel_handle = runtime.kernels.insert(std::move(kernel));
    module->kernels.emplace(name, kernel_handle);
    *out_kernel = reinterpret_cast<porta_kernel_t>(kernel_handle);
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_kernel_launch(porta_kernel_t kernel_handle,
                                                        const porta_launch_config_t* config,
                                                        void** args, porta_stream_t stream_handle) {
  return with_runtime("porta_kernel_launch", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_kernel_launch";
    std::shared_ptr<Kernel> kernel;
    std::shared_ptr<Stream> stream;
    porta_status_t status = resolve(runtime, function, kernel_handle, kernel);
    if (status == PORTA_SUCCESS) status = resolve(runtime, function, stream_handle, stream);
    if (status != PORTA_SUCCESS) return status;
    if (stream->device != kernel->device) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: the kernel was loaded on device {} but the stream belongs to device {}",
                  function, kernel->device->id, stream->device->id);
    }
    status = check_config(function, config, kernel->device->properties);
    if (status != PORTA_SUCCESS) return status;
    const uint64_t items = uint64_t(config->group[0]) * config->group[1] * config->group[2];
    if (items > uint64_t(kernel->max_group_size)) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: a group of {}x{}x{} = {} work-items exceeds this kernel's {} "
                  "(porta_kernel_max_group_size)",
                  function, config->group[0], config->group[1], config->group[2], items,
                  kernel->max_group_size);
    }
    const Backend& backend = *kernel->device->backend;
    const porta_launch_config_t whole = whole_copy(*config);  // a first release's may be shorter
    return call(backend, function, backend.interface.kernel_launch, kernel->native, &whole, args,
                stream->native);
  });
}

extern "C" PORTA_API porta_status_t porta_kernel_max_group_size(porta_kernel_t kernel_handle,
                                                                int32_t* out_max) {
  return with_runtime("porta_kernel_max_group_size", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Kernel> kernel;
    if (porta_status_t status =
            resolve(runtime, "porta_kernel_max_group_size", kernel_handle, kernel);
        status != PORTA_SUCCESS) {
      return status;
    }
    if (!out_max) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_kernel_max_group_size: out_max is NULL");
    }
    *out_max = kernel->max_group_size;
    return PORTA_SUCCESS;
  });
}
