// Kernels: the three convolution passes with f16 and bf16 inputs, summed in fp32 into fp32
// outputs (see conv.cpp; the _f32_reduce kernels there serve these too). A file of their own so
// that the CPU builds compile them beside the fp32 ones, on another core.
#include "conv.h"

using porta_ops::ConvArgs;
using porta_ops::conv::backward_data;
using porta_ops::conv::backward_weights;
using porta_ops::conv::forward;
using porta_ops::conv::run;

PORTA_KERNEL_MAX_GROUP(conv2d_forward_f16, porta_ops::kEngineItems, ConvArgs g,
                       const porta_ops::f16* x, const porta_ops::f16* w, float* y) {
  run(forward(g, x, w, y), g);
}

PORTA_KERNEL_MAX_GROUP(conv2d_forward_bf16, porta_ops::kEngineItems, ConvArgs g,
                       const porta_ops::bf16* x, const porta_ops::bf16* w, float* y) {
  run(forward(g, x, w, y), g);
}

PORTA_KERNEL_MAX_GROUP(conv2d_backward_data_f16, porta_ops::kEngineItems, ConvArgs g,
                       const porta_ops::f16* dy, const porta_ops::f16* w, float* dx) {
  run(backward_data(g, dy, w, dx), g);
}

PORTA_KERNEL_MAX_GROUP(conv2d_backward_data_bf16, porta_ops::kEngineItems, ConvArgs g,
                       const porta_ops::bf16* dy, const porta_ops::bf16* w, float* dx) {
  run(backward_data(g, dy, w, dx), g);
}

#if PORTA_TARGET_CPU
// Backward data of a strided layer on the CPU: the columns' GEMM (conv_kernels.cpp has the rest).
PORTA_KERNEL_MAX_GROUP(conv2d_backward_data_f16_columns, porta_ops::kEngineItems, ConvArgs g,
                       const porta_ops::f16* dy, const porta_ops::f16* w, float* dx) {
  (void)dx;
  run(porta_ops::conv::backward_data_columns(g, dy, w), g);
}

PORTA_KERNEL_MAX_GROUP(conv2d_backward_data_bf16_columns, porta_ops::kEngineItems, ConvArgs g,
                       const porta_ops::bf16* dy, const porta_ops::bf16* w, float* dx) {
  (void)dx;
  run(porta_ops::conv::backward_data_columns(g, dy, w), g);
}
#endif

PORTA_KERNEL_MAX_GROUP(conv2d_backward_weights_f16, porta_ops::kEngineItems, ConvArgs g,
                       const porta_ops::f16* x, const porta_ops::f16* dy, float* dw) {
  run(backward_weights(g, x, dy, dw), g);
}

PORTA_KERNEL_MAX_GROUP(conv2d_backward_weights_bf16, porta_ops::kEngineItems, ConvArgs g,
                       const porta_ops::bf16* x, const porta_ops::bf16* dy, float* dw) {
  run(backward_weights(g, x, dy, dw), g);
}
