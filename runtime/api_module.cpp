// Modules and kernels: loading code objects, looking kernels up, launching them.
#include <algorithm>
#include <cctype>
#include <cstddef>
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

// Configs written before arg_count and arg_sizes existed end before them; their arguments go
// unchecked.
constexpr size_t kConfigSizeWithArgs =
    offsetof(porta_launch_config_t, arg_sizes) + sizeof(porta_launch_config_t::arg_sizes);

bool is_identifier_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

// Splits a parameter list as written ("uint32_t n, const pair<int, int>* p") into each
// parameter's type and name; a name is empty where the parameter has none.
void split_signature(std::string_view signature, std::vector<std::string>& types,
                     std::vector<std::string>& names) {
  std::vector<std::string_view> pieces;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= signature.size(); ++i) {
    const char c = i < signature.size() ? signature[i] : ',';
    if (c == '(' || c == '<' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == '>' || c == ']' || c == '}') --depth;
    if (c == ',' && depth == 0) {
      pieces.push_back(trim(signature.substr(start, i - start)));
      start = i + 1;
    }
  }
  if (pieces.size() == 1 && (pieces[0].empty() || pieces[0] == "void")) pieces.clear();
  static constexpr std::string_view kTypeWords[] = {"int",    "char",   "short", "long",
                                                    "float",  "double", "bool",  "unsigned",
                                                    "signed", "__half", "void",  "const"};
  for (std::string_view piece : pieces) {
    std::string_view declarator = piece.substr(0, piece.find('['));  // "float x[4]"
    declarator = trim(declarator);
    size_t name_start = declarator.size();
    while (name_start > 0 && is_identifier_char(declarator[name_start - 1])) --name_start;
    std::string_view name = declarator.substr(name_start);
    const bool named =
        name_start > 0 && !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
        std::find(std::begin(kTypeWords), std::end(kTypeWords), name) == std::end(kTypeWords);
    if (!named) name = {};
    types.emplace_back(named ? trim(declarator.substr(0, name_start)) : piece);
    names.emplace_back(name);
  }
}

// Asks the backend once what the module records about the kernel's parameters.
porta_status_t record_params(const Backend& backend, Kernel& kernel) {
  if (!backend.interface.kernel_params) return PORTA_SUCCESS;
  uint32_t count = 0;
  const uint32_t* sizes = nullptr;
  const char* signature = nullptr;
  take_plugin_message();
  const porta_status_t status =
      backend.interface.kernel_params(backend.context, kernel.native, &count, &sizes, &signature);
  const std::string detail = take_plugin_message();
  // An image without the record is no error: its launches go unchecked.
  if (status == PORTA_ERROR_NOT_FOUND) return PORTA_SUCCESS;
  if (status != PORTA_SUCCESS) {
    return fail(status, "porta_kernel_get: {} backend: {}", backend.name,
                detail.empty() ? porta_status_name(status) : detail);
  }
  if (count > 0 && !sizes) {
    return fail(PORTA_ERROR_BACKEND,
                "porta_kernel_get: backend {}: kernel '{}' has {} parameters "
                "but no sizes",
                backend.name, kernel.name, count);
  }
  kernel.params_recorded = true;
  kernel.param_sizes.assign(sizes, sizes + count);
  if (signature) {
    split_signature(signature, kernel.param_types, kernel.param_names);
    if (kernel.param_names.size() != count) {  // a list the split misread: sizes only
      kernel.param_types.clear();
      kernel.param_names.clear();
    }
  }
  kernel.param_types.resize(count);
  kernel.param_names.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    const std::string& type = kernel.param_types[i];
    const std::string& name = kernel.param_names[i];
    kernel.param_type_pointers.push_back(type.empty() ? nullptr : type.c_str());
    kernel.param_name_pointers.push_back(name.empty() ? nullptr : name.c_str());
  }
  return PORTA_SUCCESS;
}

// "parameter 2 'x' (const float*)", as much as the module records.
std::string describe_param(const Kernel& kernel, size_t i) {
  std::string text = fmt::format("parameter {}", i);
  if (!kernel.param_names[i].empty()) text += fmt::format(" '{}'", kernel.param_names[i]);
  if (!kernel.param_types[i].empty()) text += fmt::format(" ({})", kernel.param_types[i]);
  return text;
}

// The arguments the caller states against the parameters the module records; nothing is queued
// on a mismatch.
porta_status_t check_args(const char* function, const Kernel& kernel,
                          const porta_launch_config_t& config) {
  if (config.struct_size < kConfigSizeWithArgs || !config.arg_sizes ||
      !kernel.params_recorded) {
    return PORTA_SUCCESS;
  }
  const size_t count = kernel.param_sizes.size();
  if (config.arg_count != count) {
    std::string list;
    for (size_t i = 0; i < count; ++i) {
      const std::string& type = kernel.param_types[i];
      const std::string& name = kernel.param_names[i];
      list += fmt::format("{}{}", i ? ", " : "",
                          type.empty()   ? fmt::format("{} bytes", kernel.param_sizes[i])
                          : name.empty() ? type
                                         : type + " " + name);
    }
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: kernel '{}' takes {} parameters ({}) but {} arguments were given; nothing was "
                "launched",
                function, kernel.name, count, list, config.arg_count);
  }
  for (size_t i = 0; i < count; ++i) {
    if (config.arg_sizes[i] != kernel.param_sizes[i]) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: kernel '{}' {} takes {} bytes but argument {} has {}; nothing was launched",
                  function, kernel.name, describe_param(kernel, i), kernel.param_sizes[i], i,
                  config.arg_sizes[i]);
    }
  }
  return PORTA_SUCCESS;
}

// Each argument the module records a parameter of (a size above 0) is there to be read, on every
// backend alike: a NULL in args was read through by OpenCL's plugin.
porta_status_t check_arg_pointers(const char* function, const Kernel& kernel, void** args) {
  if (!kernel.params_recorded) return PORTA_SUCCESS;
  const size_t count = kernel.param_sizes.size();
  for (size_t i = 0; i < count; ++i) {
    if (kernel.param_sizes[i] == 0) continue;
    if (!args) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: args is NULL, but kernel '{}' takes {} parameters; nothing was launched",
                  function, kernel.name, count);
    }
    if (!args[i]) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: args[{}] is NULL (kernel '{}' {}); nothing was launched", function, i,
                  kernel.name, describe_param(kernel, i));
    }
  }
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
  return with_runtime_to_release(
      "porta_module_unload", PORTA_ERROR_INVALID_HANDLE, false,
      [&](Runtime& runtime) -> porta_status_t {
        if (porta_status_t refused = detail::refuse_wait_in_host_function("porta_module_unload")) {
          return refused;
        }
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
        // Queued launches may still run the module's code: wait for them (their errors stay with
        // their streams). The code itself is unloaded when the last reference goes (~Module), which
        // may be a launch that looked its kernel up before this call and is still queueing.
        wait_for_device(*module->device, "porta_module_unload");
        return PORTA_SUCCESS;
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
    // Drivers differ on the empty name (CUDA calls it an invalid value); it names no kernel.
    if (*name == '\0') {
      return fail(PORTA_ERROR_NOT_FOUND, "porta_kernel_get: no kernel has the empty name");
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
    kernel->name = name;
    status = record_params(backend, *kernel);
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
    status = check_args(function, *kernel, *config);
    if (status != PORTA_SUCCESS) return status;
    status = check_arg_pointers(function, *kernel, args);
    if (status != PORTA_SUCCESS) return status;
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

extern "C" PORTA_API porta_status_t porta_kernel_get_params(porta_kernel_t kernel_handle,
                                                            porta_kernel_params_t* out_params) {
  return with_runtime("porta_kernel_get_params", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_kernel_get_params";
    auto kernel = runtime.kernels.find(reinterpret_cast<uintptr_t>(kernel_handle));
    if (!kernel) {
      return fail(PORTA_ERROR_INVALID_HANDLE, "{}: kernel {} is not a live kernel", function,
                  static_cast<void*>(kernel_handle));
    }
    if (!out_params || out_params->struct_size < sizeof(porta_kernel_params_t)) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: out_params is NULL or its struct_size is below {}", function,
                  sizeof(porta_kernel_params_t));
    }
    if (!kernel->params_recorded) {
      return fail(PORTA_ERROR_NOT_FOUND,
                  "{}: the module of kernel '{}' records no parameter list (an image built "
                  "without porta_kernel.h); its launches are unchecked",
                  function, kernel->name);
    }
    out_params->count = static_cast<uint32_t>(kernel->param_sizes.size());
    out_params->sizes = kernel->param_sizes.data();
    out_params->names = kernel->param_name_pointers.data();
    out_params->types = kernel->param_type_pointers.data();
    return PORTA_SUCCESS;
  });
}
