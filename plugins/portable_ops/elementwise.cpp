// Host side of the elementwise ops.
#include "portable_ops.h"

namespace porta::portable_ops {

porta_status_t relu_forward(void*, porta_stream_t stream, int64_t count, const float* x,
                            float* y) {
  return guarded("porta_relu_forward",
                 [&] { launch_elementwise(stream, "relu_forward", count, x, y); });
}

porta_status_t relu_backward(void*, porta_stream_t stream, int64_t count, const float* x,
                             const float* dy, float* dx) {
  return guarded("porta_relu_backward",
                 [&] { launch_elementwise(stream, "relu_backward", count, x, dy, dx); });
}

porta_status_t bias_add(void*, porta_stream_t, int64_t batch, int64_t channels, int64_t spatial, const float* x, const float* bias, float* y) {
  return fail(PORTA_ERROR_UNSUPPORTED, "bias_add: not implemented yet");
}

porta_status_t bias_backward(void*, porta_stream_t, int64_t batch, int64_t channels, int64_t spatial, const float* dy, float* dbias) {
  return fail(PORTA_ERROR_UNSUPPORTED, "bias_backward: not implemented yet");
}

porta_status_t sgd_update(void*, porta_stream_t, int64_t count, float* weights, const float* grads, float* velocity, float learning_rate, float momentum, float weight_decay) {
  return fail(PORTA_ERROR_UNSUPPORTED, "sgd_update: not implemented yet");
}

porta_status_t adam_update(void*, porta_stream_t, int64_t count, float* weights, const float* grads, float* m, float* v, const porta_adam_params_t* params) {
  return fail(PORTA_ERROR_UNSUPPORTED, "adam_update: not implemented yet");
}

}  // namespace porta::portable_ops
