// Host side: conv (being written).
#include "portable_ops.h"

namespace porta::portable_ops {

porta_status_t conv2d_forward(void*, porta_stream_t, const porta_conv2d_desc_t*, const void* x, const void* w, float* y) {
  return fail(PORTA_ERROR_UNSUPPORTED, "conv2d_forward: not implemented yet");
}

porta_status_t conv2d_backward_data(void*, porta_stream_t, const porta_conv2d_desc_t*, const void* dy, const void* w, float* dx) {
  return fail(PORTA_ERROR_UNSUPPORTED, "conv2d_backward_data: not implemented yet");
}

porta_status_t conv2d_backward_weights(void*, porta_stream_t, const porta_conv2d_desc_t*, const void* x, const void* dy, float* dw) {
  return fail(PORTA_ERROR_UNSUPPORTED, "conv2d_backward_weights: not implemented yet");
}

}  // namespace porta::portable_ops
