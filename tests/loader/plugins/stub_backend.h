/*
 * stub_backend.h: a complete backend interface whose slots all answer PORTA_ERROR_UNSUPPORTED,
 * for the broken test plugins. Each plugin defines STUB_INITIALIZE (its initialize) before
 * including this, so that the one defect it demonstrates is the only one it has: the loader
 * checks that every required slot is filled before it ever calls initialize.
 *
 * A plugin that needs its own initialize defines STUB_INITIALIZE to its name before including
 * this header, and defines the function after it; otherwise initialize succeeds with one device.
 */
#ifndef PORTA_TESTS_STUB_BACKEND_H_
#define PORTA_TESTS_STUB_BACKEND_H_

#include <porta/porta_plugin.h>

#define STUB_EXPORT __attribute__((visibility("default")))

/* One stub per distinct slot signature. */
static porta_status_t stub_device(porta_backend_context_t c, int32_t d, void* p) {
  (void)c, (void)d, (void)p;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_properties(porta_backend_context_t c, int32_t d,
                                      porta_device_properties_t* p) {
  (void)c, (void)d, (void)p;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_memory_info(porta_backend_context_t c, int32_t d, uint64_t* f,
                                       uint64_t* t) {
  (void)c, (void)d, (void)f, (void)t;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_synchronize(porta_backend_context_t c, int32_t d) {
  (void)c, (void)d;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_device_out(porta_backend_context_t c, int32_t d, void** out) {
  (void)c, (void)d, (void)out;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_alloc(porta_backend_context_t c, int32_t d, size_t s, void** out) {
  (void)c, (void)d, (void)s, (void)out;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_object(porta_backend_context_t c, void* o) {
  (void)c, (void)o;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_two_objects(porta_backend_context_t c, void* a, void* b) {
  (void)c, (void)a, (void)b;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_object_out(porta_backend_context_t c, void* o, void** out) {
  (void)c, (void)o, (void)out;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_memcpy(porta_backend_context_t c, void* s, void* dst, const void* src,
                                  size_t size, porta_copy_kind_t kind) {
  (void)c, (void)s, (void)dst, (void)src, (void)size, (void)kind;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_memset(porta_backend_context_t c, void* s, void* dst, uint8_t v,
                                  size_t size) {
  (void)c, (void)s, (void)dst, (void)v, (void)size;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_elapsed(porta_backend_context_t c, void* a, void* b, float* out) {
  (void)c, (void)a, (void)b, (void)out;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_load_data(porta_backend_context_t c, int32_t d, const void* image,
                                     size_t size, void** out) {
  (void)c, (void)d, (void)image, (void)size, (void)out;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_kernel_get(porta_backend_context_t c, void* m, const char* name,
                                      void** out) {
  (void)c, (void)m, (void)name, (void)out;
  return PORTA_ERROR_UNSUPPORTED;
}
static porta_status_t stub_launch(porta_backend_context_t c, void* k,
                                  const porta_launch_config_t* config, void** args, void* s) {
  (void)c, (void)k, (void)config, (void)args, (void)s;
  return PORTA_ERROR_UNSUPPORTED;
}
static void stub_shutdown(porta_backend_context_t c) { (void)c; }

#ifndef STUB_INITIALIZE
#define STUB_INITIALIZE stub_initialize_ok
static porta_status_t stub_initialize_ok(porta_backend_context_t* out_context,
                                         int32_t* out_device_count) {
  *out_context = NULL;
  *out_device_count = 1;
  return PORTA_SUCCESS;
}
#else
static porta_status_t STUB_INITIALIZE(porta_backend_context_t* out_context,
                                      int32_t* out_device_count);
#endif

static const porta_backend_interface_t stub_interface = {
    .struct_size = sizeof(porta_backend_interface_t),
    .initialize = STUB_INITIALIZE,
    .shutdown = stub_shutdown,
    .device_properties = stub_properties,
    .device_memory_info = stub_memory_info,
    .device_synchronize = stub_synchronize,
    .device_native_handle = stub_device_out,
    .memory_alloc = stub_alloc,
    .memory_free = stub_device,
    .host_alloc = stub_alloc,
    .host_free = stub_device,
    .stream_create = stub_device_out,
    .stream_destroy = stub_object,
    .stream_synchronize = stub_object,
    .stream_query = stub_object,
    .stream_wait_event = stub_two_objects,
    .stream_native_handle = stub_object_out,
    .memcpy_async = stub_memcpy,
    .memset_async = stub_memset,
    .event_create = stub_device_out,
    .event_destroy = stub_object,
    .event_record = stub_two_objects,
    .event_query = stub_object,
    .event_synchronize = stub_object,
    .event_elapsed_ms = stub_elapsed,
    .module_load_data = stub_load_data,
    .module_load_file = NULL, /* optional */
    .module_unload = stub_object,
    .kernel_get = stub_kernel_get,
    .kernel_launch = stub_launch,
    /* Later (optional) slots stay NULL. */
};

/* Fills a well-formed description; a plugin then spoils the one field it is about. */
__attribute__((unused)) static void stub_describe(porta_plugin_t* out_plugin, const char* name) {
  out_plugin->abi_major = PORTA_PLUGIN_ABI_MAJOR;
  out_plugin->abi_minor = PORTA_PLUGIN_ABI_MINOR;
  out_plugin->kind = PORTA_PLUGIN_KIND_BACKEND;
  out_plugin->name = name;
  out_plugin->version = "test stub";
  out_plugin->backend = &stub_interface;
}

#endif /* PORTA_TESTS_STUB_BACKEND_H_ */
