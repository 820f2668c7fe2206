/* An op plugin of ABI 2 with one op, relu_forward, that keeps a call count per stream in the
 * stream's storage, and records what libporta hands back through release_stream_storage. The
 * loader test installs it as the portable plugin and reads the record through the exported
 * ops_storage_record (test plugins may export more than the entry point). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "stub_backend.h"

typedef struct ops_storage_record_s {
  int calls;              /* relu_forward calls */
  int storage_reused;     /* calls that found their stream's storage filled */
  int context_ok;         /* calls whose context was what libporta promises */
  int released_destroyed; /* release_stream_storage with shutting_down 0 */
  int released_shutdown;  /* ... with shutting_down 1 */
  int released_counts;    /* the sum of the call counts of the storages released */
} ops_storage_record_t;

static ops_storage_record_t record;

STUB_EXPORT const ops_storage_record_t* ops_storage_record(void) { return &record; }

static porta_status_t initialize(void** out_state) {
  *out_state = &record;
  return PORTA_SUCCESS;
}
static void shutdown(void* state) { (void)state; }
static porta_status_t supports_backend(void* state, const char* backend) {
  (void)state;
  return strcmp(backend, "cpu") == 0 ? PORTA_SUCCESS : PORTA_ERROR_UNAVAILABLE;
}
static void release_stream_storage(void* state, void* storage, int32_t shutting_down) {
  (void)state;
  if (shutting_down) {
    ++record.released_shutdown;
  } else {
    ++record.released_destroyed;
  }
  record.released_counts += *(int*)storage;
  free(storage);
}

static porta_status_t relu_forward(const porta_op_context_t* context,
                                   const porta_relu_forward_args_t* args) {
  ++record.calls;
  if (context->struct_size >= sizeof(porta_op_context_t) && context->state == &record &&
      context->stream != NULL && context->properties != NULL &&
      strcmp(context->properties->backend, "cpu") == 0 && context->stream_storage != NULL &&
      args->struct_size >= sizeof(porta_relu_forward_args_t) && args->count == 4) {
    ++record.context_ok;
  }
  _Atomic(void*)* slot = (_Atomic(void*)*)context->stream_storage;
  int* count = atomic_load(slot);
  if (count) {
    ++record.storage_reused;
  } else {
    count = calloc(1, sizeof(int));
    if (!count) return PORTA_ERROR_OUT_OF_MEMORY;
    void* expected = NULL;
    if (!atomic_compare_exchange_strong(slot, &expected, count)) {
      free(count);
      count = expected;
    }
  }
  ++*count;
  return PORTA_SUCCESS;
}

static const porta_ops_interface_t interface = {
    .struct_size = sizeof(porta_ops_interface_t),
    .initialize = initialize,
    .shutdown = shutdown,
    .supports_backend = supports_backend,
    .release_stream_storage = release_stream_storage,
    .relu_forward = relu_forward,
};

STUB_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                              porta_plugin_t* out_plugin) {
  (void)host;
  stub_describe(out_plugin, "portable");
  out_plugin->kind = PORTA_PLUGIN_KIND_OPS;
  out_plugin->backend = NULL;
  out_plugin->ops = &interface;
  return PORTA_SUCCESS;
}
