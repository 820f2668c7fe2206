/*
 * A backend that initialises, then misbehaves in the one way its build names:
 *   PORTA_TEST_BROKEN_DEVICE_PROPERTIES  device_properties fails
 *   PORTA_TEST_BROKEN_DEFAULT_STREAM     stream_create fails (the device's default stream)
 *   PORTA_TEST_BROKEN_DEVICE_COUNT       initialize reports INT32_MAX devices
 *   PORTA_TEST_BROKEN_INIT_NOT_READY     initialize answers PORTA_NOT_READY, no status for it
 *   PORTA_TEST_BROKEN_ODD_ANSWERS        serves, but leaves its version string unterminated,
 *                                        fills every byte of the properties' strings and answers
 *                                        memory_alloc with 7, which is no status
 *   PORTA_TEST_BROKEN_CALLS_PORTA        calls Porta back from initialize and shutdown; its
 *                                        initialize fails unless each call was refused as
 *                                        UNAVAILABLE, and its shutdown leaves what the call
 *                                        returned in the environment variable
 *                                        PORTA_TEST_CALLED_AT_SHUTDOWN
 */
#define _GNU_SOURCE  // RTLD_DEFAULT
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STUB_INITIALIZE initialize_misbehaving
#include "stub_backend.h"

static const porta_host_api_t* saved_host;

#ifdef PORTA_TEST_BROKEN_CALLS_PORTA
// porta_device_count, porta_init and porta_shutdown as the application linked them.
static porta_status_t call_porta(const char* name) {
  void* function = dlsym(RTLD_DEFAULT, name);
  if (!function) return PORTA_ERROR_NOT_FOUND;
  if (strcmp(name, "porta_device_count") == 0) {
    int32_t count = 0;
    return ((porta_status_t(*)(int32_t*))function)(&count);
  }
  if (strcmp(name, "porta_init") == 0) {
    return ((porta_status_t(*)(const porta_init_options_t*))function)(NULL);
  }
  return ((porta_status_t(*)(void))function)();
}

static void shutdown_calling_porta(porta_backend_context_t c) {
  (void)c;
  char status[16];
  snprintf(status, sizeof status, "%d", (int)call_porta("porta_device_count"));
  setenv("PORTA_TEST_CALLED_AT_SHUTDOWN", status, 1);
}
#endif

static porta_status_t initialize_misbehaving(porta_backend_context_t* out_context,
                                             int32_t* out_device_count) {
  *out_context = NULL;
#ifdef PORTA_TEST_BROKEN_CALLS_PORTA
  static const char* const kCalls[] = {"porta_device_count", "porta_init", "porta_shutdown"};
  for (size_t i = 0; i < sizeof kCalls / sizeof kCalls[0]; ++i) {
    const porta_status_t status = call_porta(kCalls[i]);
    if (status != PORTA_ERROR_UNAVAILABLE) {
      static char message[128];
      snprintf(message, sizeof message, "%s from initialize returned %d", kCalls[i], (int)status);
      saved_host->set_error_message(message);
      return PORTA_ERROR_BACKEND;
    }
  }
#endif
#ifdef PORTA_TEST_BROKEN_INIT_NOT_READY
  *out_device_count = 1;
  return PORTA_NOT_READY;
#endif
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
  static int a_stream;  // the one stream's handle
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
#ifdef PORTA_TEST_BROKEN_CALLS_PORTA
  interface.shutdown = shutdown_calling_porta;
#endif
  stub_describe(out_plugin, "level_zero");
  out_plugin->backend = &interface;
#ifdef PORTA_TEST_BROKEN_ODD_ANSWERS
  static char unterminated[300];  // read to its end, AddressSanitizer reports it
  memset(unterminated, 'v', sizeof unterminated);
  out_plugin->version = unterminated;
#endif
  return PORTA_SUCCESS;
}
