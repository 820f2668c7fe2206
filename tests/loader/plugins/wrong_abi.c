/* A well-formed plugin built against another ABI major (PORTA_PLUGIN_ABI_MAJOR + 1). */
#include "stub_backend.h"

STUB_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                              porta_plugin_t* out_plugin) {
  (void)host;
  stub_describe(out_plugin, "level_zero");
  out_plugin->abi_major = PORTA_PLUGIN_ABI_MAJOR + 1;
  out_plugin->abi_minor = 3;
  return PORTA_SUCCESS;
}
