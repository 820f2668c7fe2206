/*
 * porta_ops.h: the operator set, enough to train a CNN, on every backend.
 *
 * Each op queues its work on a stream and returns; buffers are device memory (porta_memory_alloc)
 * of the stream's device, row-major, densely packed unless a leading dimension says otherwise.
 * Conventions of porta.h apply (status codes, last error, thread-safety, NULL = default stream).
 * In addition, every op checks its arguments before queueing anything, and on error says which
 * one is wrong:
 *   INVALID_ARGUMENT  a NULL descriptor or buffer, a descriptor whose struct_size is too small, a
 *                     non-positive size, an inconsistent shape or leading dimension, a buffer that
 *                     is not device memory of the stream's device or is smaller than the shape
 *                     needs (the message names the buffer and both sizes);
 *   INVALID_HANDLE    the stream;
 *   UNSUPPORTED       a dtype or option the selected implementation does not provide;
 *   UNAVAILABLE       no implementation of the op is loaded for the stream's backend.
 *
 * Implementations are op plugins, chosen with PORTA_OPS: "portable" (default: kernels written
 * once in porta_kernel.h's dialect and compiled for every backend) or "vendor" (the vendor
 * libraries: oneDNN/OpenBLAS, cuBLAS/cuDNN, rocBLAS/MIOpen). An op that the vendor plugin does
 * not implement runs on the portable plugin, so a whole model runs with PORTA_OPS=vendor; the
 * loader report's ops field (porta_plugin_report_t) lists what each plugin implements.
 *
 * Outputs may not overlap inputs unless an op says so. All math accumulates in fp32.
 */
#ifndef PORTA_PORTA_OPS_H_
#define PORTA_PORTA_OPS_H_

#include "porta.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum porta_dtype {
  PORTA_DTYPE_F32 = 0,
  PORTA_DTYPE_F16 = 1,
  PORTA_DTYPE_BF16 = 2
} porta_dtype_t;

typedef enum porta_transpose {
  PORTA_NO_TRANSPOSE = 0,
  PORTA_TRANSPOSE = 1
} porta_transpose_t;

/* ---------------------------------------------------------------------------------------------
 * GEMM: C = alpha * op(A) * op(B) + beta * C, for each of batch_count matrices.
 * op(A) is m x k, op(B) is k x n, C is m x n. A is stored m x k (lda >= k) when not transposed,
 * k x m (lda >= m) when transposed; likewise B (ldb >= n, or >= k); C has ldc >= n.
 * Batch i uses A + i*stride_a, B + i*stride_b, C + i*stride_c (elements); with batch_count > 1,
 * stride_c is at least (m - 1) * ldc + n, so that no two C matrices share a row (A and B may be
 * shared, stride 0). When beta is 0, C is not read (NaN or garbage in C does not propagate).
 * ------------------------------------------------------------------------------------------- */
typedef struct porta_gemm_desc_s {
  size_t struct_size;
  porta_transpose_t trans_a;
  porta_transpose_t trans_b;
  int64_t m, n, k;
  int64_t lda, ldb, ldc;
  float alpha, beta;
  int64_t batch_count; /* >= 1 */
  int64_t stride_a, stride_b, stride_c;
  porta_dtype_t dtype; /* of A and B; C is always fp32 */
} porta_gemm_desc_t;
#define PORTA_GEMM_DESC_MIN_SIZE PORTA_FIELD_END(porta_gemm_desc_t, dtype)

PORTA_API porta_status_t porta_gemm(porta_stream_t stream, const porta_gemm_desc_t* desc,
                                    const void* a, const void* b, float* c);

/* ---------------------------------------------------------------------------------------------
 * Conversion between dtypes: dst[i] = src[i] converted from src_dtype to dst_dtype, for count
 * elements (f32, f16 or bf16 each way). Narrowing rounds to nearest, ties to even; a value beyond
 * the target's largest finite one becomes infinity of its sign; infinities stay infinities; a NaN
 * stays a NaN of the same sign (made quiet when narrowed); f16 subnormals are produced and read,
 * never flushed to zero. Widening is exact. The same dtype both ways is a copy, bit for bit. dst
 * may equal src when both dtypes have the same size; otherwise they must not overlap. This is how
 * mixed-precision training keeps fp32 master weights and hands 16-bit copies to GEMM and conv2d.
 * Returns: SUCCESS; INVALID_ARGUMENT (count < 1, an unknown dtype, a buffer as described at the
 * top); INVALID_HANDLE; UNSUPPORTED (an op plugin built before the op existed); UNAVAILABLE.
 * ------------------------------------------------------------------------------------------- */
PORTA_API porta_status_t porta_convert(porta_stream_t stream, int64_t count,
                                       porta_dtype_t src_dtype, const void* src,
                                       porta_dtype_t dst_dtype, void* dst);

/* ---------------------------------------------------------------------------------------------
 * 2-D convolution (cross-correlation, as in every framework), NCHW.
 * x: batch x in_channels x in_height x in_width; w: out_channels x in_channels x kernel_height x
 * kernel_width; y: batch x out_channels x out_height x out_width, where
 * out = (in + 2*pad - dilation*(kernel-1) - 1) / stride + 1 (must be >= 1).
 * No bias: see porta_bias_add.
 * fp32 and bf16 3x3 layers of stride 1 may run Winograd's F(4x4, 3x3) (PORTA_OPS_CONV_WINOGRAD),
 * whose transforms mix a tile's 6x6 inputs: a NaN or infinity among them makes the tile's whole
 * 4x4 outputs (for backward weights, every filter it reaches) NaN, not only the outputs that read
 * it, and values within about 1000x of FLT_MAX may overflow where a direct sum would not.
 * ------------------------------------------------------------------------------------------- */
typedef struct porta_conv2d_desc_s {
  size_t struct_size;
  int64_t batch, in_channels, in_height, in_width;
  int64_t out_channels, kernel_height, kernel_width;
  int64_t pad_h, pad_w;           /* >= 0 */
  int64_t stride_h, stride_w;     /* >= 1 */
  int64_t dilation_h, dilation_w; /* >= 1 */
  porta_dtype_t dtype;            /* of x/dy and w; outputs are fp32 */
} porta_conv2d_desc_t;
#define PORTA_CONV2D_DESC_MIN_SIZE PORTA_FIELD_END(porta_conv2d_desc_t, dtype)

/* The output height and width for desc. Returns: SUCCESS; INVALID_ARGUMENT for a bad desc. */
PORTA_API porta_status_t porta_conv2d_output_size(const porta_conv2d_desc_t* desc,
                                                  int64_t* out_height, int64_t* out_width);

/* y = conv(x, w). */
PORTA_API porta_status_t porta_conv2d_forward(porta_stream_t stream,
                                              const porta_conv2d_desc_t* desc, const void* x,
                                              const void* w, float* y);
/* dx = gradient of the loss with respect to x, given dy (the shape of y) and w. */
PORTA_API porta_status_t porta_conv2d_backward_data(porta_stream_t stream,
                                                    const porta_conv2d_desc_t* desc,
                                                    const void* dy, const void* w, float* dx);
/* dw = gradient with respect to w, given x and dy. */
PORTA_API porta_status_t porta_conv2d_backward_weights(porta_stream_t stream,
                                                       const porta_conv2d_desc_t* desc,
                                                       const void* x, const void* dy, float* dw);

/* ---------------------------------------------------------------------------------------------
 * Softmax over each row of a rows x cols matrix, and its gradient.
 * ------------------------------------------------------------------------------------------- */
typedef enum porta_softmax_mode {
  PORTA_SOFTMAX = 0,    /* y = exp(x - max) / sum(exp(x - max)) */
  PORTA_LOG_SOFTMAX = 1 /* y = x - max - log(sum(exp(x - max))) */
} porta_softmax_mode_t;

/* y may equal x (in place). A row holding a NaN or +infinity is NaN throughout on the portable
 * ops (a vendor library may give 0 for its finite elements). */
PORTA_API porta_status_t porta_softmax_forward(porta_stream_t stream, porta_softmax_mode_t mode,
                                               int64_t rows, int64_t cols, const float* x,
                                               float* y);
/* dx from the forward output y and dy. dx may equal dy. */
PORTA_API porta_status_t porta_softmax_backward(porta_stream_t stream, porta_softmax_mode_t mode,
                                                int64_t rows, int64_t cols, const float* y,
                                                const float* dy, float* dx);

/* Softmax cross-entropy with integer labels, averaged over rows:
 * loss[0] = mean_r (logsumexp(logits[r]) - logits[r][labels[r]]), and, when dlogits is not NULL,
 * dlogits = (softmax(logits) - onehot(labels)) / rows. A label outside [0, cols) makes loss NaN
 * and its row of dlogits NaN. */
PORTA_API porta_status_t porta_cross_entropy(porta_stream_t stream, int64_t rows, int64_t cols,
                                             const float* logits, const int32_t* labels,
                                             float* loss, float* dlogits);

/* ---------------------------------------------------------------------------------------------
 * What training a CNN needs beside them. Tensors are batch x channels x spatial (spatial = H*W,
 * or 1 for a fully connected layer's batch x features).
 * ------------------------------------------------------------------------------------------- */

/* y = x + bias[c] for every element of channel c. y may equal x. */
PORTA_API porta_status_t porta_bias_add(porta_stream_t stream, int64_t batch, int64_t channels,
                                        int64_t spatial, const float* x, const float* bias,
                                        float* y);
/* dbias[c] = sum over batch and spatial of dy. */
PORTA_API porta_status_t porta_bias_backward(porta_stream_t stream, int64_t batch,
                                             int64_t channels, int64_t spatial, const float* dy,
                                             float* dbias);

/* y = max(x, 0). y may equal x. A NaN x gives y = 0 and dx = 0 on the portable ops (fmax's
 * rule); a vendor library may differ. */
PORTA_API porta_status_t porta_relu_forward(porta_stream_t stream, int64_t count, const float* x,
                                            float* y);
/* dx = x > 0 ? dy : 0, a select (an infinite or NaN dy where x <= 0 gives 0 on the portable
 * ops; oneDNN multiplies dy by 0, giving NaN). dx may equal dy. */
PORTA_API porta_status_t porta_relu_backward(porta_stream_t stream, int64_t count, const float* x,
                                             const float* dy, float* dx);

/* Max pooling over windows of x (NCHW). out = (in + 2*pad - window) / stride + 1 (>= 1); padding
 * never wins the max. */
typedef struct porta_pool2d_desc_s {
  size_t struct_size;
  int64_t batch, channels, in_height, in_width;
  int64_t window_h, window_w; /* >= 1 */
  int64_t stride_h, stride_w; /* >= 1 */
  int64_t pad_h, pad_w;       /* >= 0 and < window */
} porta_pool2d_desc_t;
#define PORTA_POOL2D_DESC_MIN_SIZE PORTA_FIELD_END(porta_pool2d_desc_t, pad_w)

PORTA_API porta_status_t porta_pool2d_output_size(const porta_pool2d_desc_t* desc,
                                                  int64_t* out_height, int64_t* out_width);
PORTA_API porta_status_t porta_max_pool2d_forward(porta_stream_t stream,
                                                  const porta_pool2d_desc_t* desc, const float* x,
                                                  float* y);
/* dx: each dy goes to the first maximum of its window in x (ties: the lowest index), summed where
 * windows overlap. Recomputes the maxima from x, so no indices need keeping. */
PORTA_API porta_status_t porta_max_pool2d_backward(porta_stream_t stream,
                                                   const porta_pool2d_desc_t* desc,
                                                   const float* x, const float* dy, float* dx);

/* SGD with momentum (PyTorch's form), elementwise over count parameters:
 * g' = grad + weight_decay * w;  velocity = momentum * velocity + g';  w -= learning_rate * velocity */
PORTA_API porta_status_t porta_sgd_update(porta_stream_t stream, int64_t count, float* weights,
                                          const float* grads, float* velocity,
                                          float learning_rate, float momentum,
                                          float weight_decay);

typedef struct porta_adam_params_s {
  size_t struct_size;
  float learning_rate;
  float beta1, beta2; /* in [0, 1) */
  float epsilon;      /* > 0 */
  float weight_decay; /* L2, added to the gradient as in torch.optim.Adam */
  int64_t step;       /* 1 for the first update: used for bias correction */
} porta_adam_params_t;
#define PORTA_ADAM_PARAMS_MIN_SIZE PORTA_FIELD_END(porta_adam_params_t, step)

/* Adam: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 * w -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + epsilon). */
PORTA_API porta_status_t porta_adam_update(porta_stream_t stream, int64_t count, float* weights,
                                           const float* grads, float* m, float* v,
                                           const porta_adam_params_t* params);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PORTA_PORTA_OPS_H_ */
