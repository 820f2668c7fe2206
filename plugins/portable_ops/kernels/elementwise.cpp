// Elementwise kernels: one work-item per element.
#include "common.h"

using porta_ops::linear_index;

PORTA_KERNEL(relu_forward, int64_t count, const float* x, float* y) {
  porta::inner([&](uint32_t item) {
    const int64_t i = linear_index(item);
    if (i < count) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
  });
}

PORTA_KERNEL(relu_backward, int64_t count, const float* x, const float* dy, float* dx) {
  porta::inner([&](uint32_t item) {
    const int64_t i = linear_index(item);
    if (i < count) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
  });
}
