// porta_init, porta_shutdown and the loader report.
#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "runtime.h"
#include "versioned_struct.h"

using namespace porta;

extern "C" PORTA_API porta_status_t porta_init(const porta_init_options_t* options) {
  return guarded("porta_init", [&]() -> porta_status_t {
    if (porta_status_t refused = detail::refuse_reentry("porta_init")) return refused;
    bool ran = false;
    const porta_status_t status = detail::ensure_initialized(options, &ran);
    if (ran || status == PORTA_SUCCESS) return status;
    std::shared_lock lock(detail::lifecycle_mutex());
    return fail(status, "porta_init: an earlier initialisation failed: {}",
                detail::instance().init_message());
  });
}

extern "C" PORTA_API porta_status_t porta_shutdown(void) {
  return guarded("porta_shutdown", [&]() -> porta_status_t {
    if (porta_status_t refused = detail::refuse_reentry("porta_shutdown")) return refused;
    if (porta_status_t refused = detail::refuse_wait_in_host_function("porta_shutdown")) {
      return refused;
    }
    // The queued work ends first with the runtime held shared, as under any call: a host function
    // it runs may call Porta (calls that do not wait are allowed on the CPU backend), and would
    // wait forever for the exclusive hold below.
    const auto wait_for_devices = [] {
      std::shared_lock shared(detail::lifecycle_mutex());
      detail::instance().wait_for_devices();
    };
    wait_for_devices();
    // Then new calls are refused, and what the calls begun before queued meanwhile ends too: a
    // host function among it that calls Porta now fails at once rather than waiting for the
    // exclusive hold, under which the devices are waited for again.
    struct UnderWay {
      UnderWay() { ++detail::shutdowns_under_way(); }
      ~UnderWay() { --detail::shutdowns_under_way(); }
    } under_way;
    wait_for_devices();
    detail::HeldAlone alone;
    detail::instance().shutdown();
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_backend_selected(const char** out_name) {
  return with_runtime("porta_backend_selected", [&](Runtime& runtime) -> porta_status_t {
    if (!out_name) return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_backend_selected: out_name is NULL");
    *out_name = runtime.selected_backend();
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_loader_report_count(size_t* out_count) {
  return with_runtime_even_if_failed("porta_loader_report_count", [&](Runtime& runtime) -> porta_status_t {
    if (!out_count) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_loader_report_count: out_count is NULL");
    }
    *out_count = runtime.reports().size();
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_loader_report_get(size_t index,
                                                            porta_plugin_report_t* out_report) {
  return with_runtime_even_if_failed("porta_loader_report_get", [&](Runtime& runtime) -> porta_status_t {
    // Later fields than the first release's are written when the caller has room.
    porta_status_t status = check_struct_size("porta_loader_report_get", "out_report", out_report,
                                              PORTA_PLUGIN_REPORT_MIN_SIZE);
    if (status != PORTA_SUCCESS) return status;
    if (index >= runtime.reports().size()) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "porta_loader_report_get: index {} is past the report's {} rows", index,
                  runtime.reports().size());
    }
    const PluginReport& row = runtime.reports()[index];
    porta_plugin_report_t report{};
    std::snprintf(report.name, sizeof(report.name), "%s", row.name.c_str());
    std::snprintf(report.path, sizeof(report.path), "%s", row.path.c_str());
    std::snprintf(report.reason, sizeof(report.reason), "%s", row.reason.c_str());
    report.outcome = row.outcome;
    report.status = row.status;
    report.abi_major = row.abi_major;
    report.abi_minor = row.abi_minor;
    report.device_count = row.device_count;
    report.kind = row.kind;
    std::snprintf(report.version, sizeof(report.version), "%s", row.version.c_str());
    std::snprintf(report.ops, sizeof(report.ops), "%s", row.ops.c_str());
    copy_out(out_report, report);
    return PORTA_SUCCESS;
  });
}
