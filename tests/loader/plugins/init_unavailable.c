/* A well-formed plugin whose initialize finds no driver: PORTA_ERROR_UNAVAILABLE with a reason. */
#define STUB_INITIALIZE initialize_unavailable
#include "stub_backend.h"

static const porta_host_api_t* saved_host;

static porta_status_t initialize_unavailable(porta_backend_context_t* out_context,
                                             int32_t* out_device_count) {
  (void)out_context;
  (void)out_device_count;
  saved_host->set_error_message("no test device here (libnothing.so.1 not found)");
  return PORTA_ERROR_UNAVAILABLE;
}

STUB_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                              porta_plugin_t* out_plugin) {
  saved_host = host;
  stub_describe(out_plugin, "level_zero");
  return PORTA_SUCCESS;
}
