// The x86 intrinsics, for the CPU kernel builds that spell out vector code.
#pragma once

// GCC 12 warns of the undefined source its unmasked AVX-512 intrinsics pass on (its bug 105593).
// The warning points into the header, so silencing it around the include is enough.
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop
