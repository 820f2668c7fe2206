/* A backend built against plugin ABI 1.0: its interface ends before stream_launch_host_func (ABI
 * 1.1). It has one device and streams that do nothing, enough for libporta to initialise it, so
 * that the tests can check an older minor is accepted and the newer slot answers UNSUPPORTED. */
#include <stddef.h>
#include <string.h>

#include "stub_backend.h"

static int stream_token;

static porta_status_t properties_1_0(porta_backend_context_t c, int32_t d,
                                     porta_device_properties_t* p) {
  (void)c, (void)d;
  const size_t size = p->struct_size;
  memset(p, 0, size < sizeof(*p) ? size : sizeof(*p));
  p->struct_size = size;
  strcpy(p->name, "ABI 1.0 test device");
  p->compute_units = 1;
  p->max_work_group_size = 1;
  return PORTA_SUCCESS;
}
static porta_status_t synchronize_1_0(porta_backend_context_t c, int32_t d) {
  (void)c, (void)d;
  return PORTA_SUCCESS;
}
static porta_status_t stream_create_1_0(porta_backend_context_t c, int32_t d, void** out) {
  (void)c, (void)d;
  *out = &stream_token;
  return PORTA_SUCCESS;
}
static porta_status_t stream_object_1_0(porta_backend_context_t c, void* s) {
  (void)c, (void)s;
  return PORTA_SUCCESS;
}

static porta_backend_interface_t interface_1_0;

STUB_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                              porta_plugin_t* out_plugin) {
  (void)host;
  interface_1_0 = stub_interface;
  interface_1_0.struct_size = offsetof(porta_backend_interface_t, stream_launch_host_func);
  interface_1_0.device_properties = properties_1_0;
  interface_1_0.device_synchronize = synchronize_1_0;
  interface_1_0.stream_create = stream_create_1_0;
  interface_1_0.stream_destroy = stream_object_1_0;
  interface_1_0.stream_synchronize = stream_object_1_0;
  interface_1_0.stream_query = stream_object_1_0;
  stub_describe(out_plugin, "level_zero");
  out_plugin->abi_minor = 0;
  out_plugin->backend = &interface_1_0;
  return PORTA_SUCCESS;
}
