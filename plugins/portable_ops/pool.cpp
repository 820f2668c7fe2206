// Host side: pool (being written).
#include "portable_ops.h"

namespace porta::portable_ops {

porta_status_t max_pool2d_forward(void*, porta_stream_t, const porta_pool2d_desc_t*, const float* x, float* y) {
  return fail(PORTA_ERROR_UNSUPPORTED, "max_pool2d_forward: not implemented yet");
}

porta_status_t max_pool2d_backward(void*, porta_stream_t, const porta_pool2d_desc_t*, const float* x, const float* dy, float* dx) {
  return fail(PORTA_ERROR_UNSUPPORTED, "max_pool2d_backward: not implemented yet");
}

}  // namespace porta::portable_ops
