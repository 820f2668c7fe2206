// Telling a dlopen that ran out of memory from one that was refused, for libporta's plugin loader
// and the backends' module loaders alike.
#pragma once

#include <cerrno>
#include <cstring>

namespace porta {

// Whether the dlopen that just failed ran out of memory; errno_after is errno right after it,
// with errno set to 0 before the call. glibc's loader leaves ENOMEM in errno on every failed
// allocation, whatever its message says ("cannot create shared object descriptor", ...), and
// its message is the fixed "out of memory" when even that could not be allocated.
inline bool dlopen_ran_out_of_memory(int errno_after, const char* message) {
  return errno_after == ENOMEM || (message && std::strcmp(message, "out of memory") == 0);
}

}  // namespace porta
