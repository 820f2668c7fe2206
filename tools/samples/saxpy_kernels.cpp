// The sample's kernel in the portable dialect: one source for every backend.
#include <porta/porta_kernel.h>

PORTA_KERNEL(saxpy, uint32_t n, float a, const float* x, float* y) {
  const uint32_t first = porta::group_id(0) * porta::group_size(0);
  porta::inner([&](uint32_t item) {
    const uint32_t i = first + item;
    if (i < n) y[i] = a * x[i] + y[i];
  });
}
