/* A shared object that looks like a plugin but lacks the entry symbol porta_plugin_entry. */
#include "stub_backend.h"

/* Close to the right name, and exported, but not the one the loader asks for. */
STUB_EXPORT porta_status_t porta_plugin_entry_v2(const porta_host_api_t* host,
                                                 porta_plugin_t* out_plugin) {
  (void)host;
  stub_describe(out_plugin, "level_zero");
  return PORTA_SUCCESS;
}
