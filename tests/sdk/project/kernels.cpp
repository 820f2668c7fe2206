// The project's kernels, in Porta's portable dialect.
#include <porta/porta_kernel.h>

PORTA_KERNEL(scale_add, uint32_t n, float a, const float* x, float* y) {
  const uint32_t first = porta::group_id(0) * porta::group_size(0);
  porta::inner([&](uint32_t item) {
    const uint32_t i = first + item;
    if (i < n) y[i] = a * x[i] + y[i];
  });
}

PORTA_KERNEL(relu, int64_t count, const float* x, float* y) {
  const int64_t first = int64_t(porta::group_id(0)) * porta::group_size(0);
  porta::inner([&](uint32_t item) {
    const int64_t i = first + item;
    if (i < count) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
  });
}
