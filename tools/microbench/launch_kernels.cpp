// The launch benchmarks' kernel: it does nothing, so what is timed is the launch itself.
#include <porta/porta_kernel.h>

PORTA_KERNEL(empty, uint32_t unused) {
  porta::inner([&](uint32_t) { (void)unused; });
}
