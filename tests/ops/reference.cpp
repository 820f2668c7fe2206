#include "reference.h"

#include <cmath>
#include <limits>

namespace ops_ref {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
}  // namespace

// ---- GEMM
// ----------------------------------------------------------------------------------------

int64_t matrix_span(int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
  return (rows - 1) * ld + cols + (batch - 1) * stride;
}

void gemm(const porta_gemm_desc_t& d, const double* a, const double* b, double* c) {
  const bool ta = d.trans_a == PORTA_TRANSPOSE, tb = d.trans_b == PORTA_TRANSPOSE;
  std::vector<double> row(static_cast<size_t>(d.n));
  for (int64_t batch = 0; batch < d.batch_count; ++batch) {
    const double* A = a + batch * d.stride_a;
    const double* B = b + batch * d.stride_b;
    double* C = c + batch * d.stride_c;
    for (int64_t i = 0; i < d.m; ++i) {
      for (int64_t j = 0; j < d.n; ++j) row[j] = 0.0;
      for (int64_t p = 0; p < d.k; ++p) {
        // op(A)[i][p] and op(B)[p][j] as the header defines the stored layouts.
        const double aip = ta ? A[p * d.lda + i] : A[i * d.lda + p];
        if (tb) {
          for (int64_t j = 0; j < d.n; ++j) row[j] += aip * B[j * d.ldb + p];
        } else {
          const double* Bp = B + p * d.ldb;
          for (int64_t j = 0; j < d.n; ++j) row[j] += aip * Bp[j];
        }
      }
      double* Ci = C + i * d.ldc;
      for (int64_t j = 0; j < d.n; ++j) {
        const double scaled = double(d.alpha) * row[j];
        Ci[j] = d.beta == 0.0f ? scaled : scaled + double(d.beta) * Ci[j];  // beta 0: C unread
      }
    }
  }
}

// ---- convolution
// -----------------------------------------------------------------------------------

ConvShape conv_shape(const porta_conv2d_desc_t& d) {
  ConvShape s;
  s.out_height =
      (d.in_height + 2 * d.pad_h - d.dilation_h * (d.kernel_height - 1) - 1) / d.stride_h + 1;
  s.out_width =
      (d.in_width + 2 * d.pad_w - d.dilation_w * (d.kernel_width - 1) - 1) / d.stride_w + 1;
  s.x_count = d.batch * d.in_channels * d.in_height * d.in_width;
  s.w_count = d.out_channels * d.in_channels * d.kernel_height * d.kernel_width;
  s.y_count = d.batch * d.out_channels * s.out_height * s.out_width;
  return s;
}

namespace {

// Calls f(x_index, w_index, y_index) for every term of the convolution sum, i.e. every
// (n, k, p, q, c, r, s) whose input position lies inside the (unpadded) input.
template <class F>
void for_each_term(const porta_conv2d_desc_t& d, F&& f) {
  const ConvShape s = conv_shape(d);
  const int64_t C = d.in_channels, H = d.in_height, W = d.in_width;
  const int64_t R = d.kernel_height, S = d.kernel_width, P = s.out_height, Q = s.out_width;
  for (int64_t n = 0; n < d.batch; ++n) {
    for (int64_t k = 0; k < d.out_channels; ++k) {
      for (int64_t p = 0; p < P; ++p) {
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t y_index = ((n * d.out_channels + k) * P + p) * Q + q;
          for (int64_t c = 0; c < C; ++c) {
            for (int64_t r = 0; r < R; ++r) {
              const int64_t h = p * d.stride_h - d.pad_h + r * d.dilation_h;
              if (h < 0 || h >= H) continue;
              for (int64_t t = 0; t < S; ++t) {
                const int64_t w = q * d.stride_w - d.pad_w + t * d.dilation_w;
                if (w < 0 || w >= W) continue;
                f(((n * C + c) * H + h) * W + w, ((k * C + c) * R + r) * S + t, y_index);
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace

void conv2d_forward(const porta_conv2d_desc_t& d, const double* x, const double* w, double* y) {
  const ConvShape s = conv_shape(d);
  for (int64_t i = 0; i < s.y_count; ++i) y[i] = 0.0;
  for_each_term(d, [&](int64_t xi, int64_t wi, int64_t yi) { y[yi] += x[xi] * w[wi]; });
}

void conv2d_backward_data(const porta_conv2d_desc_t& d, const double* dy, const double* w,
                          double* dx) {
  const ConvShape s = conv_shape(d);
  for (int64_t i = 0; i < s.x_count; ++i) dx[i] = 0.0;
  for_each_term(d, [&](int64_t xi, int64_t wi, int64_t yi) { dx[xi] += dy[yi] * w[wi]; });
}

void conv2d_backward_weights(const porta_conv2d_desc_t& d, const double* x, const double* dy,
                             double* dw) {
  const ConvShape s = conv_shape(d);
  for (int64_t i = 0; i < s.w_count; ++i) dw[i] = 0.0;
  for_each_term(d, [&](int64_t xi, int64_t wi, int64_t yi) { dw[wi] += x[xi] * dy[yi]; });
}

// ---- softmax and cross-entropy
// ---------------------------------------------------------------------

namespace {

// max and log(sum(exp(x - max))) of one row.
void row_normaliser(const double* x, int64_t cols, double& max, double& log_sum) {
  max = x[0];
  for (int64_t j = 1; j < cols; ++j) max = std::fmax(max, x[j]);
  double sum = 0.0;
  for (int64_t j = 0; j < cols; ++j) sum += std::exp(x[j] - max);
  log_sum = std::log(sum);
}

}  // namespace

void softmax_forward(porta_softmax_mode_t mode, int64_t rows, int64_t cols, const double* x,
                     double* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x + r * cols;
    double* yr = y + r * cols;
    double max, log_sum;
    row_normaliser(xr, cols, max, log_sum);
    for (int64_t j = 0; j < cols; ++j) {
      yr[j] = mode == PORTA_SOFTMAX ? std::exp(xr[j] - max - log_sum) : xr[j] - max - log_sum;
    }
  }
}

void softmax_backward(porta_softmax_mode_t mode, int64_t rows, int64_t cols, const double* y,
                      const double* dy, double* dx) {
  for (int64_t r = 0; r < rows; ++r) {
    const double* yr = y + r * cols;
    const double* dyr = dy + r * cols;
    double* dxr = dx + r * cols;
    double sum = 0.0;
    for (int64_t j = 0; j < cols; ++j) sum += mode == PORTA_SOFTMAX ? yr[j] * dyr[j] : dyr[j];
    for (int64_t j = 0; j < cols; ++j) {
      dxr[j] = mode == PORTA_SOFTMAX ? yr[j] * (dyr[j] - sum) : dyr[j] - std::exp(yr[j]) * sum;
    }
  }
}

double cross_entropy(int64_t rows, int64_t cols, const double* logits, const int32_t* labels,
                     double* dlogits) {
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = logits + r * cols;
    const int32_t label = labels[r];
    const bool valid = label >= 0 && label < cols;
    double max, log_sum;
    row_normaliser(xr, cols, max, log_sum);
    total += valid ? max + log_sum - xr[label] : kNaN;
    if (dlogits) {
      for (int64_t j = 0; j < cols; ++j) {
        dlogits[r * cols + j] =
            valid ? (std::exp(xr[j] - max - log_sum) - (j == label ? 1.0 : 0.0)) / double(rows)
                  : kNaN;
      }
    }
  }
  return total / double(rows);
}

// ---- bias, ReLU --------------------------------------------------------------------------------

void bias_add(int64_t batch, int64_t channels, int64_t spatial, const double* x, const double* bias,
              double* y) {
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t s = 0; s < spatial; ++s) {
        const int64_t i = (n * channels + c) * spatial + s;
        y[i] = x[i] + bias[c];
      }
    }
  }
}

void bias_backward(int64_t batch, int64_t channels, int64_t spatial, const double* dy,
                   double* dbias) {
  for (int64_t c = 0; c < channels; ++c) {
    double sum = 0.0;
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t s = 0; s < spatial; ++s) sum += dy[(n * channels + c) * spatial + s];
    }
    dbias[c] = sum;
  }
}

void relu_forward(int64_t count, const double* x, double* y) {
  for (int64_t i = 0; i < count; ++i) y[i] = x[i] > 0.0 ? x[i] : 0.0;
}

void relu_backward(int64_t count, const double* x, const double* dy, double* dx) {
  for (int64_t i = 0; i < count; ++i) dx[i] = x[i] > 0.0 ? dy[i] : 0.0;
}

// ---- max pooling -------------------------------------------------------------------------------

PoolShape pool_shape(const porta_pool2d_desc_t& d) {
  PoolShape s;
  s.out_height = (d.in_height + 2 * d.pad_h - d.window_h) / d.stride_h + 1;
  s.out_width = (d.in_width + 2 * d.pad_w - d.window_w) / d.stride_w + 1;
  s.x_count = d.batch * d.channels * d.in_height * d.in_width;
  s.y_count = d.batch * d.channels * s.out_height * s.out_width;
  return s;
}

int64_t max_pool2d_argmax(const porta_pool2d_desc_t& d, const double* x, int64_t out) {
  const PoolShape s = pool_shape(d);
  const int64_t q = out % s.out_width;
  const int64_t p = out / s.out_width % s.out_height;
  const int64_t plane = out / (s.out_width * s.out_height);  // n * channels + c
  const double* xp = x + plane * d.in_height * d.in_width;
  int64_t best = -1;
  for (int64_t r = 0; r < d.window_h; ++r) {
    const int64_t h = p * d.stride_h - d.pad_h + r;
    if (h < 0 || h >= d.in_height) continue;
    for (int64_t t = 0; t < d.window_w; ++t) {
      const int64_t w = q * d.stride_w - d.pad_w + t;
      if (w < 0 || w >= d.in_width) continue;
      const int64_t i = h * d.in_width + w;
      // Strictly greater, so the first maximum stays; a NaN beats a number (it propagates).
      if (best < 0 || xp[i] > xp[best] || (std::isnan(xp[i]) && !std::isnan(xp[best]))) best = i;
    }
  }
  // pad < window and the window fits the padded input, so every window holds an input element.
  return plane * d.in_height * d.in_width + best;
}

void max_pool2d_forward(const porta_pool2d_desc_t& d, const double* x, double* y) {
  const PoolShape s = pool_shape(d);
  for (int64_t o = 0; o < s.y_count; ++o) y[o] = x[max_pool2d_argmax(d, x, o)];
}

void max_pool2d_backward(const porta_pool2d_desc_t& d, const double* x, const double* dy,
                         double* dx) {
  const PoolShape s = pool_shape(d);
  for (int64_t i = 0; i < s.x_count; ++i) dx[i] = 0.0;
  for (int64_t o = 0; o < s.y_count; ++o) dx[max_pool2d_argmax(d, x, o)] += dy[o];
}

// ---- optimisers ---------------------------------------------------------------------------------

void sgd_update(int64_t count, double* weights, const double* grads, double* velocity,
                double learning_rate, double momentum, double weight_decay) {
  for (int64_t i = 0; i < count; ++i) {
    const double g = grads[i] + weight_decay * weights[i];
    velocity[i] = momentum * velocity[i] + g;
    weights[i] -= learning_rate * velocity[i];
  }
}

void adam_update(int64_t count, double* weights, const double* grads, double* m, double* v,
                 const porta_adam_params_t& p) {
  const double b1 = p.beta1, b2 = p.beta2;
  const double correction1 = 1.0 - std::pow(b1, double(p.step));
  const double correction2 = 1.0 - std::pow(b2, double(p.step));
  for (int64_t i = 0; i < count; ++i) {
    const double g = grads[i] + double(p.weight_decay) * weights[i];
    m[i] = b1 * m[i] + (1.0 - b1) * g;
    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
    weights[i] -= double(p.learning_rate) * (m[i] / correction1) /
                  (std::sqrt(v[i] / correction2) + double(p.epsilon));
  }
}

}  // namespace ops_ref
