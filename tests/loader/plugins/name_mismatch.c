/* A well-formed plugin that says it implements "cuda", installed under another backend's name. */
#include "stub_backend.h"

STUB_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                              porta_plugin_t* out_plugin) {
  (void)host;
  stub_describe(out_plugin, "cuda");
  return PORTA_SUCCESS;
}
