/* A plugin whose entry point refuses, with a message through the host API; built as
 * entry_undefined, it answers 7 instead, which is no porta_status_t value. */
#include "stub_backend.h"

STUB_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                              porta_plugin_t* out_plugin) {
  (void)out_plugin;
#ifdef PORTA_TEST_BROKEN_ENTRY_UNDEFINED
  (void)host;
  return (porta_status_t)7;
#else
  host->set_error_message("entry refused by the test plugin");
  return PORTA_ERROR_BACKEND;
#endif
}
