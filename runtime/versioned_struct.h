// The caller's side of Porta's versioned structs (struct_size first, fields only appended): one
// check for what comes in, one copy for what goes out, against each struct's first-release size
// (PORTA_<STRUCT>_MIN_SIZE), so that appending a field never turns older callers away.
#pragma once

#include <porta/porta.h>

#include <algorithm>
#include <cstring>

#include "error.h"

namespace porta {

// SUCCESS when value is not NULL and its struct_size reaches min_size (the first release's);
// else INVALID_ARGUMENT naming function, the argument and both sizes.
template <typename Struct>
porta_status_t check_struct_size(const char* function, const char* name, const Struct* value,
                                 size_t min_size) {
  if (!value) return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is NULL", function, name);
  if (value->struct_size < min_size) {
    return fail(
        PORTA_ERROR_INVALID_ARGUMENT,
        "{}: the struct_size of {} is {}; it must be at least {} (the first release's size)",
        function, name, value->struct_size, min_size);
  }
  return PORTA_SUCCESS;
}

// A caller's struct as this release's, whole: the bytes its struct_size covers, zeros after,
// struct_size ours. What is passed on to plugins, which read every field they know.
template <typename Struct>
Struct whole_copy(const Struct& theirs) {
  Struct whole{};
  std::memcpy(&whole, &theirs, std::min(theirs.struct_size, sizeof(Struct)));
  whole.struct_size = sizeof(Struct);
  return whole;
}

// Writes ours to the caller's struct: min(its struct_size, ours) bytes, its struct_size kept, so
// an older caller's smaller struct is not overrun and a newer one's extra fields are left alone.
template <typename Struct>
void copy_out(Struct* out, const Struct& ours) {
  Struct filled = ours;
  filled.struct_size = out->struct_size;
  std::memcpy(out, &filled, std::min(out->struct_size, sizeof(Struct)));
}

}  // namespace porta
