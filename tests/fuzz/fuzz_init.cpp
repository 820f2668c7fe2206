// porta_init's options and environment: every setting as an option, an environment variable or
// absent, with arbitrary text and struct sizes. Each input initialises and shuts down once; a
// failure must be a documented status with a message, a success must leave a usable runtime.
#include <fuzzer/FuzzedDataProvider.h>
#include <porta/porta.h>

#include <cstddef>
#include <cstdlib>
#include <string>

#include "fuzz_common.h"

namespace {

struct Setting {
  const char* variable;
  const char* porta_init_options_t::*field;
};

constexpr Setting kSettings[] = {
    {"PORTA_BACKEND", &porta_init_options_t::backend},
    {"PORTA_DEVICE", &porta_init_options_t::device},
    {"PORTA_PLUGIN_PATH", &porta_init_options_t::plugin_path},
    {"PORTA_LOG", &porta_init_options_t::log_level},
    {"PORTA_OPS", &porta_init_options_t::ops},
};

// Values that reach past the first check, mixed with arbitrary text.
constexpr const char* kKnownValues[] = {
    "cpu",
    "auto",
    "cuda,cpu",
    "cpu,cpu",
    "level_zero,hip,cpu",
    "0",
    "1",
    "-1",
    "portable",
    "vendor",
    "off",
    "error",
    "warn",
    "/",
    "/tmp",
    "/nonexistent",
    ":",
    "",
    " cpu ",
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Messages of the runs with a log level of their own are not worth the fuzzer's time.
  setenv("PORTA_LOG", "off", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  porta_init_options_t options{};
  options.struct_size = sizeof(options);
  std::string values[std::size(kSettings)];
  for (size_t i = 0; i < std::size(kSettings); ++i) {
    const Setting& setting = kSettings[i];
    unsetenv(setting.variable);
    const int where = input.ConsumeIntegralInRange(0, 2);  // absent, option, environment
    if (where == 0) continue;
    values[i] = input.ConsumeBool() ? std::string(input.PickValueInArray(kKnownValues))
                                    : input.ConsumeRandomLengthString(48);
    if (where == 1) {
      options.*setting.field = values[i].c_str();
    } else {
      setenv(setting.variable, values[i].c_str(), 1);
    }
  }
  const bool pass_options = input.ConsumeBool();
  if (input.ConsumeBool()) options.struct_size = input.ConsumeIntegralInRange<size_t>(0, 64);

  const porta_status_t status = PORTA_FUZZ_CALL(porta_init(pass_options ? &options : nullptr));
  if (status == PORTA_SUCCESS) {
    int32_t count = 0;
    if (PORTA_FUZZ_CALL(porta_device_count(&count)) != PORTA_SUCCESS || count < 1) std::abort();
    void* ptr = nullptr;
    if (PORTA_FUZZ_CALL(porta_memory_alloc(0, 64, &ptr)) != PORTA_SUCCESS) std::abort();
    if (PORTA_FUZZ_CALL(porta_memory_free(ptr)) != PORTA_SUCCESS) std::abort();
  }
  size_t rows = 0;
  PORTA_FUZZ_CALL(porta_loader_report_count(&rows));
  if (PORTA_FUZZ_CALL(porta_shutdown()) != PORTA_SUCCESS) std::abort();
  for (const Setting& setting : kSettings) unsetenv(setting.variable);
  setenv("PORTA_LOG", "off", 1);
  return 0;
}
