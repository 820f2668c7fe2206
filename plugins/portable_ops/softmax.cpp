// Host side: softmax (being written).
#include "portable_ops.h"

namespace porta::portable_ops {

porta_status_t softmax_forward(void*, porta_stream_t, porta_softmax_mode_t, int64_t rows, int64_t cols, const float* x, float* y) {
  return fail(PORTA_ERROR_UNSUPPORTED, "softmax_forward: not implemented yet");
}

porta_status_t softmax_backward(void*, porta_stream_t, porta_softmax_mode_t, int64_t rows, int64_t cols, const float* y, const float* dy, float* dx) {
  return fail(PORTA_ERROR_UNSUPPORTED, "softmax_backward: not implemented yet");
}

porta_status_t cross_entropy(void*, porta_stream_t, int64_t rows, int64_t cols, const float* logits, const int32_t* labels, float* loss, float* dlogits) {
  return fail(PORTA_ERROR_UNSUPPORTED, "cross_entropy: not implemented yet");
}

}  // namespace porta::portable_ops
