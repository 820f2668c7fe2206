/*
 * A backend that initialises, then misbehaves in the one way its build names:
 *   PORTA_TEST_BROKEN_DEVICE_PROPERTIES  device_properties fails
 *   PORTA_TEST_BROKEN_DEFAULT_STREAM     stream_create fails (the device's default stream)
 *   PORTA_TEST_BROKEN_DEVICE_COUNT       initialize reports INT32_MAX devices
 *   PORTA_TEST_BROKEN_ODD_ANSWERS        serves, but fills every byte of the properties' strings
 *                                        and answers memory_alloc with 7, which is no status
 */
#include <limits.h>
#include <string.h>

#define STUB_INITIALIZE initialize_misbehaving
#include "stub_backend.h"

static const porta_host_api_t* saved_host;
static int a_stream;  // the one stream's handle

static porta_status_t initialize_misbehaving(porta_backend_context_t* out_context,
                                             int32_t* out_device_count) {
  *out_context = NULL;
#ifdef PORTA_TEST_BROKEN_DEVICE_COUNT
  *out_device_count = INT32_MAX;
#else
  *out_device_count = 1;
#endif
  return PORTA_SUCCESS;
}

static porta_status_t properties(porta_backend_context_t c, int32_t d,
                                 porta_device_properties_t* p) {
  (void)c, (void)d;
#ifdef PORTA_TEST_BROKEN_DEVICE_PROPERTIES
  (void)p;
  saved_host->set_error_message("properties refused in the test plugin");
  return PORTA_ERROR_BACKEND;
#else
  memset(p->name, 'n', sizeof(p->name));
  memset(p->architecture, 'a', sizeof(p->architecture));
  p->compute_units = 1;
  p->max_work_group_size = 1;
  p->max_work_group_dims[0] = p->max_work_group_dims[1] = p->max_work_group_dims[2] = 1;
  p->max_grid_dims[0] = p->max_grid_dims[1] = p->max_grid_dims[2] = 1;
  return PORTA_SUCCESS;
#endif
}

static porta_status_t stream_create(porta_backend_context_t c, int32_t d, void** out) {
  (void)c, (void)d;
#ifdef PORTA_TEST_BROKEN_DEFAULT_STREAM
  (void)out;
  saved_host->set_error_message("stream refused in the test plugin");
  return PORTA_ERROR_BACKEND;
#else
  *out = &a_stream;
  return PORTA_SUCCESS;
#endif
}

static porta_status_t succeed_object(porta_backend_context_t c, void* o) {
  (void)c, (void)o;
  return PORTA_SUCCESS;
}
static porta_status_t succeed_device(porta_backend_context_t c, int32_t d) {
  (void)c, (void)d;
  return PORTA_SUCCESS;
}
static porta_status_t alloc_answers_7(porta_backend_context_t c, int32_t d, size_t s, void** out) {
  (void)c, (void)d, (void)s, (void)out;
  return 7;
}

STUB_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                              porta_plugin_t* out_plugin) {
  static porta_backend_interface_t interface;
  saved_host = host;
  interface = stub_interface;
  interface.device_properties = properties;
  interface.stream_create = stream_create;
  interface.stream_destroy = succeed_object;
  interface.stream_synchronize = succeed_object;
  interface.device_synchronize = succeed_device;
  interface.memory_alloc = alloc_answers_7;
  stub_describe(out_plugin, "level_zero");
  out_plugin->backend = &interface;
  return PORTA_SUCCESS;
}
