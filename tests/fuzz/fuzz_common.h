// What every Porta fuzz target checks of a call's result.
#pragma once

#include <porta/porta.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace porta_fuzz {

// A status Porta documents, and a message with every failure: anything else stops the fuzzer.
inline porta_status_t checked(porta_status_t status, const char* call) {
  if (std::strcmp(porta_status_name(status), "PORTA_ERROR_UNKNOWN") == 0) {
    std::fprintf(stderr, "%s returned the undocumented status %d\n", call, int(status));
    std::abort();
  }
  if (status < 0 && porta_last_error_message()[0] == '\0') {
    std::fprintf(stderr, "%s returned %s without a message\n", call, porta_status_name(status));
    std::abort();
  }
  return status;
}

#define PORTA_FUZZ_CALL(expr) ::porta_fuzz::checked((expr), #expr)

}  // namespace porta_fuzz
