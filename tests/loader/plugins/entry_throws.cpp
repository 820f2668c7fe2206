// A plugin whose entry point throws a C++ exception, which must not cross into the host.
#include <porta/porta_plugin.h>

#include <stdexcept>

extern "C" __attribute__((visibility("default"))) porta_status_t porta_plugin_entry(
    const porta_host_api_t* host, porta_plugin_t* out_plugin) {
  (void)host;
  (void)out_plugin;
  throw std::runtime_error("entry threw on purpose in the test plugin");
}
