// A backend of the project, built with porta_add_backend against an installed Porta: the start
// of a new backend. It finds no device and says why, so libporta reports it unavailable with
// this reason; the other slots, never called for a backend without devices, answer UNSUPPORTED.
#include "plugin_kit.h"

namespace {

porta_status_t initialize(porta_backend_context_t* out_context, int32_t* out_device_count) {
  *out_context = nullptr;
  *out_device_count = 0;
  return porta::plugin::fail(PORTA_ERROR_UNAVAILABLE, "the example backend has no device");
}

void shutdown(porta_backend_context_t) {}

template <class... Args>
porta_status_t unsupported(porta_backend_context_t, Args...) {
  return porta::plugin::fail(PORTA_ERROR_UNSUPPORTED, "the example backend runs nothing");
}

porta_backend_interface_t make_interface() {
  porta_backend_interface_t interface {};
  interface.struct_size = sizeof(interface);
  interface.initialize = initialize;
  interface.shutdown = shutdown;
  interface.device_properties = unsupported;
  interface.device_memory_info = unsupported;
  interface.device_synchronize = unsupported;
  interface.memory_alloc = unsupported;
  interface.memory_free = unsupported;
  interface.host_alloc = unsupported;
  interface.host_free = unsupported;
  interface.stream_create = unsupported;
  interface.stream_destroy = unsupported;
  interface.stream_synchronize = unsupported;
  interface.stream_query = unsupported;
  interface.stream_wait_event = unsupported;
  interface.memcpy_async = unsupported;
  interface.memset_async = unsupported;
  interface.event_create = unsupported;
  interface.event_destroy = unsupported;
  interface.event_record = unsupported;
  interface.event_query = unsupported;
  interface.event_synchronize = unsupported;
  interface.event_elapsed_ms = unsupported;
  interface.module_load_data = unsupported;
  interface.module_unload = unsupported;
  interface.kernel_get = unsupported;
  interface.kernel_launch = unsupported;
  return interface;
}

const porta_backend_interface_t kInterface = make_interface();

}  // namespace

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  return porta::plugin::enter(host, out_plugin,
                              {.kind = PORTA_PLUGIN_KIND_BACKEND,
                               .name = "level_zero",
                               .version = "example 1.0",
                               .backend = &kInterface,
                               .ops = nullptr,
                               .name_in_errors = true});
}
