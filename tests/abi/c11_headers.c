/*
 * c11_headers.c: the public headers compile as strict C11 (-std=c11 -Wall -Wextra -Werror
 * -pedantic) and their types are usable from C. Built, never run.
 */
#include <porta/porta.h>
#include <porta/porta_kernel.h>
#include <porta/porta_ops.h>
#include <porta/porta_plugin.h>
#include <stddef.h>

/* Layout facts that plugins and hosts built by other compilers rely on. */
_Static_assert(sizeof(porta_status_t) == 4, "porta_status_t is an int32");
_Static_assert(offsetof(porta_device_properties_t, struct_size) == 0, "struct_size comes first");
_Static_assert(offsetof(porta_plugin_report_t, struct_size) == 0, "struct_size comes first");
_Static_assert(offsetof(porta_launch_config_t, struct_size) == 0, "struct_size comes first");
_Static_assert(offsetof(porta_init_options_t, struct_size) == 0, "struct_size comes first");
_Static_assert(offsetof(porta_pointer_info_t, struct_size) == 0, "struct_size comes first");
_Static_assert(offsetof(porta_plugin_t, struct_size) == 0, "struct_size comes first");
_Static_assert(offsetof(porta_backend_interface_t, struct_size) == 0, "struct_size comes first");
_Static_assert(offsetof(porta_host_api_t, struct_size) == 0, "struct_size comes first");
_Static_assert(offsetof(porta_cpu_kernel_t, struct_size) == 0, "struct_size comes first");
_Static_assert(PORTA_SUCCESS == 0, "success is zero");

/* A function of each kind a user or plugin writes, so the prototypes are exercised. */
porta_status_t c11_use_api(const char* path);
porta_status_t c11_use_api(const char* path) {
  porta_init_options_t options = {.struct_size = sizeof(porta_init_options_t), .backend = "cpu"};
  porta_status_t status = porta_init(&options);
  if (status != PORTA_SUCCESS) return status;
  porta_device_properties_t properties = {0};
  properties.struct_size = sizeof(properties);
  porta_device_properties(0, &properties);
  porta_stream_t stream = NULL;
  porta_event_t event = NULL;
  porta_module_t module = NULL;
  porta_kernel_t kernel = NULL;
  porta_stream_create(0, &stream);
  porta_event_create(0, &event);
  porta_module_load(0, path, &module);
  porta_kernel_get(module, "saxpy", &kernel);
  porta_launch_config_t config = {
      .struct_size = sizeof(porta_launch_config_t), .grid = {1, 1, 1}, .group = {64, 1, 1}};
  porta_kernel_launch(kernel, &config, NULL, stream);
  porta_kernel_params_t params = {.struct_size = sizeof(porta_kernel_params_t)};
  porta_kernel_get_params(kernel, &params);
  const size_t sizes[1] = {0};
  config.arg_count = 0;
  config.arg_sizes = sizes;
  porta_kernel_launch(kernel, &config, NULL, stream);
  porta_event_record(event, stream);
  porta_pointer_info_t info = {.struct_size = sizeof(porta_pointer_info_t)};
  porta_pointer_info(path, &info);
  porta_plugin_report_t row = {.struct_size = sizeof(porta_plugin_report_t)};
  porta_loader_report_get(0, &row);
  (void)porta_status_name(status);
  (void)porta_last_error_message();
  return porta_shutdown();
}

static void c11_group(const porta_cpu_work_group_t* group, void* const* args) {
  (void)group;
  (void)args;
}
static const uint32_t c11_param_sizes[] = {sizeof(int)};
const porta_cpu_kernel_t porta_cpu_kernel_c11 = {
    sizeof(porta_cpu_kernel_t), PORTA_CPU_KERNEL_ABI_VERSION, 1, c11_param_sizes, c11_group};

porta_status_t porta_plugin_entry(const porta_host_api_t* host, porta_plugin_t* out_plugin);
porta_status_t porta_plugin_entry(const porta_host_api_t* host, porta_plugin_t* out_plugin) {
  porta_plugin_entry_fn self = porta_plugin_entry;
  (void)self;
  host->log(PORTA_LOG_INFO, "c11");
  out_plugin->abi_major = PORTA_PLUGIN_ABI_MAJOR;
  out_plugin->abi_minor = PORTA_PLUGIN_ABI_MINOR;
  out_plugin->kind = PORTA_PLUGIN_KIND_BACKEND;
  out_plugin->name = "cpu";
  out_plugin->backend = NULL;
  return PORTA_SUCCESS;
}
