/* An op plugin built against plugin ABI 1.2, whose op slots were positional: libporta must refuse
 * it, naming the plugin, its ABI and the one libporta speaks, without calling any slot. */
#include "stub_backend.h"

/* Whatever ABI 1 laid out there; never read. */
static const void* const interface_1_2[32];

STUB_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                              porta_plugin_t* out_plugin) {
  (void)host;
  stub_describe(out_plugin, "portable");
  out_plugin->kind = PORTA_PLUGIN_KIND_OPS;
  out_plugin->abi_major = 1;
  out_plugin->abi_minor = 2;
  out_plugin->backend = NULL;
  out_plugin->ops = (const porta_ops_interface_t*)interface_1_2;
  return PORTA_SUCCESS;
}
