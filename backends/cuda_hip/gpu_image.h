// Code objects handed to module_load_data, checked before the driver sees them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace porta::gpu {

// A copy of the image that the driver can read safely: 8-byte aligned and, for PTX text,
// NUL-terminated. The driver is given a pointer without a size, so an image whose headers claim
// more bytes than were passed (a truncated file) would be read past its end; it is refused here
// with INVALID_ARGUMENT, as is anything that is not a code object of this vendor. An ELF for
// another machine (a CPU shared object, the other vendor's code object) is INCOMPATIBLE_VERSION.
std::vector<uint64_t> checked_image(const void* image, size_t size);

}  // namespace porta::gpu
