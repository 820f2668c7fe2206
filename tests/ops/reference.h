// Float64 reference implementations of every op of porta_ops.h, written from the header's text
// and nothing else: plain loops, no blocking, no cleverness, so that they can be read against the
// specification line by line. Inputs are doubles (the tests pass the fp32 values they uploaded,
// widened exactly), outputs are doubles, descriptors are the API's own structs.
//
// The bilinear ops (GEMM, the convolutions, bias backward, max-pool backward) have a second use:
// called on the absolute values of their inputs (and |alpha|, |beta|) they give, per output
// element, the sum of the magnitudes of the terms that the element sums, which is what fp32
// rounding error is proportional to (see the tolerances in the test files).
#pragma once

#include <porta/porta_ops.h>

#include <cstdint>
#include <vector>

namespace ops_ref {

// ---- GEMM
// ----------------------------------------------------------------------------------------

// C = alpha * op(A) * op(B) + beta * C for each batch, with the API's layout (row-major, leading
// dimensions, element strides between batches). When beta is 0, C is not read. Only the elements
// of the C matrices are written; gaps between rows and batches are left as they were.
void gemm(const porta_gemm_desc_t& d, const double* a, const double* b, double* c);

// The number of elements a row-major matrix of rows x cols with leading dimension ld, repeated
// batch times stride elements apart, spans (what the buffer must hold).
int64_t matrix_span(int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride);

// ---- convolution
// -----------------------------------------------------------------------------------

struct ConvShape {
  int64_t out_height, out_width;
  int64_t x_count, w_count, y_count;
};
// out = (in + 2*pad - dilation*(kernel-1) - 1) / stride + 1.
ConvShape conv_shape(const porta_conv2d_desc_t& d);

void conv2d_forward(const porta_conv2d_desc_t& d, const double* x, const double* w, double* y);
// Written as the scatter (transpose) of the forward, not by calling it.
void conv2d_backward_data(const porta_conv2d_desc_t& d, const double* dy, const double* w,
                          double* dx);
void conv2d_backward_weights(const porta_conv2d_desc_t& d, const double* x, const double* dy,
                             double* dw);

// ---- softmax and cross-entropy
// ---------------------------------------------------------------------

void softmax_forward(porta_softmax_mode_t mode, int64_t rows, int64_t cols, const double* x,
                     double* y);
// softmax: dx = y * (dy - sum(y * dy)); log-softmax: dx = dy - exp(y) * sum(dy).
void softmax_backward(porta_softmax_mode_t mode, int64_t rows, int64_t cols, const double* y,
                      const double* dy, double* dx);
// Returns mean_r (logsumexp(logits[r]) - logits[r][labels[r]]); fills dlogits (when not NULL)
// with (softmax - onehot) / rows. A label outside [0, cols) makes the loss and its row NaN.
double cross_entropy(int64_t rows, int64_t cols, const double* logits, const int32_t* labels,
                     double* dlogits);

// ---- bias, ReLU --------------------------------------------------------------------------------

void bias_add(int64_t batch, int64_t channels, int64_t spatial, const double* x, const double* bias,
              double* y);
void bias_backward(int64_t batch, int64_t channels, int64_t spatial, const double* dy,
                   double* dbias);
void relu_forward(int64_t count, const double* x, double* y);
void relu_backward(int64_t count, const double* x, const double* dy, double* dx);

// ---- max pooling -------------------------------------------------------------------------------

struct PoolShape {
  int64_t out_height, out_width;
  int64_t x_count, y_count;
};
// out = (in + 2*pad - window) / stride + 1.
PoolShape pool_shape(const porta_pool2d_desc_t& d);

void max_pool2d_forward(const porta_pool2d_desc_t& d, const double* x, double* y);
// Each dy goes to the first maximum of its window (scanning rows, then columns: the lowest index
// of x), summed where windows overlap. Padding never wins.
void max_pool2d_backward(const porta_pool2d_desc_t& d, const double* x, const double* dy,
                         double* dx);
// The flat index into x of the first maximum of output element `out` (for the tie tests).
int64_t max_pool2d_argmax(const porta_pool2d_desc_t& d, const double* x, int64_t out);

// ---- optimisers ---------------------------------------------------------------------------------

// g' = grad + weight_decay * w; velocity = momentum * velocity + g'; w -= learning_rate * velocity.
void sgd_update(int64_t count, double* weights, const double* grads, double* velocity,
                double learning_rate, double momentum, double weight_decay);

// g' = grad + weight_decay * w; m = b1*m + (1-b1)*g'; v = b2*v + (1-b2)*g'^2;
// w -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + epsilon). The float parameters are
// widened exactly, so 1 - beta is the fp32 beta's complement.
void adam_update(int64_t count, double* weights, const double* grads, double* m, double* v,
                 const porta_adam_params_t& p);

}  // namespace ops_ref
