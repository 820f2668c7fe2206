// porta_cpu_racecheck_report: the CPU backend's kernel checker findings (PORTA_CPU_MODE=racecheck).
#include <algorithm>
#include <cstring>
#include <string>

#include "runtime.h"

using namespace porta;

extern "C" PORTA_API porta_status_t porta_cpu_racecheck_report(char* out_text, size_t capacity,
                                                               size_t* out_length,
                                                               size_t* out_count) {
  return with_runtime("porta_cpu_racecheck_report", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_cpu_racecheck_report";
    if (!out_length || !out_count || (!out_text && capacity > 0)) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: out_length and out_count must not be NULL, nor out_text when capacity is "
                  "{} (> 0)",
                  function, capacity);
    }
    std::string text;
    size_t count = 0;
    for (const auto& backend : runtime.backends()) {
      if (backend->name != "cpu" || !backend->interface.checker_report) continue;
      size_t length = 0;
      porta_status_t status = call(*backend, function, backend->interface.checker_report,
                                   static_cast<char*>(nullptr), size_t{0}, &length, &count);
      if (status != PORTA_SUCCESS) return status;
      text.resize(length + 1);
      status = call(*backend, function, backend->interface.checker_report, text.data(), text.size(),
                    &length, &count);
      if (status != PORTA_SUCCESS) return status;
      text.resize(std::min(length, text.size() - 1));
    }
    if (capacity > 0) {
      const size_t n = std::min(text.size(), capacity - 1);
      std::memcpy(out_text, text.data(), n);
      out_text[n] = '\0';
    }
    *out_length = text.size();
    *out_count = count;
    return PORTA_SUCCESS;
  });
}
