// The convolutions as GEMM problems on the engine (gemm_engine.h), for the kernels of conv.cpp
// (fp32) and conv_half.cpp (f16, bf16). See conv.cpp for the mapping.
#pragma once

#include "gemm_engine.h"

namespace porta_ops::conv {

// The output positions (n, p, q) as seen from x: p * stride - pad, plane n of x.
PORTA_DEVICE_FUNCTION WindowAxis output_positions(const ConvArgs& g) {
  return WindowAxis{g.out_h,    g.out_w, g.channels * g.height * g.width, g.stride_h, -g.pad_h,
                    g.stride_w, -g.pad_w};
}

// The filter taps (c, r, s) as seen from x: r * dilation, channel c of x.
PORTA_DEVICE_FUNCTION WindowAxis filter_taps(const ConvArgs& g) {
  return WindowAxis{g.kernel_h, g.kernel_w, g.height * g.width, g.dilation_h, 0, g.dilation_w, 0};
}

// im2col(x)[(c,r,s), (n,p,q)]; transposed puts (c,r,s) on the wide side.
template <class T>
PORTA_DEVICE_FUNCTION WindowOperand<T> im2col(const ConvArgs& g, const T* x, bool transposed) {
  const WindowAxis taps = filter_taps(g), positions = output_positions(g);
  return WindowOperand<T>{x,
                          transposed ? taps : positions,
                          transposed ? positions : taps,
                          g.height,
                          g.width,
                          g.width,
                          1,
                          1};
}

// The three passes as GEMM problems: the operands, the output and the sizes.
template <class A, class B>
struct Problem {
  A a;
  B b;
  OutputView c;
  porta_ops::GemmShape shape;
};
template <class T>
using ConvProblem = Problem<StridedOperand<T>, WindowOperand<T>>;

// y[K, (N,P,Q)] = w[K, (C,R,S)] x im2col(x).
template <class T>
PORTA_DEVICE_FUNCTION ConvProblem<T> forward(const ConvArgs& g, const T* x, const T* w, float* y) {
  const int64_t pq = g.out_h * g.out_w, crs = g.channels * g.kernel_h * g.kernel_w;
  return ConvProblem<T>{StridedOperand<T>{w, crs, Split::stride(1), 0}, im2col(g, x, false),
                        OutputView{y, pq, Split{pq, g.out_channels * pq, 1}, 0, 1.0f, 0.0f},
                        porta_ops::GemmShape{g.out_channels, g.batch * pq, crs, 1}};
}

// dx[C, (N,H,W)] = w^T[C, (K,R,S)] x gather(dy).
template <class T>
PORTA_DEVICE_FUNCTION ConvProblem<T> backward_data(const ConvArgs& g, const T* dy, const T* w, float* dx) {
  const int64_t rs = g.kernel_h * g.kernel_w, hw = g.height * g.width;
  const int64_t pq = g.out_h * g.out_w;
  // Input positions (n, h, w) reach dy at h + pad; filter taps (k, r, s) step back r * dilation.
  const WindowAxis positions{g.height, g.width, g.out_channels * pq, 1, g.pad_h, 1, g.pad_w};
  const WindowAxis taps{g.kernel_h, g.kernel_w, pq, -g.dilation_h, 0, -g.dilation_w, 0};
  return ConvProblem<T>{
      StridedOperand<T>{w, rs, Split{rs, g.channels * rs, 1}, 0},  // w[k, c, rs]
      WindowOperand<T>{dy, positions, taps, g.out_h, g.out_w, g.out_w, g.stride_h, g.stride_w},
      OutputView{dx, hw, Split{hw, g.channels * hw, 1}, 0, 1.0f, 0.0f},
      porta_ops::GemmShape{g.channels, g.batch * hw, g.out_channels * rs, 1}};
}

// dw[K, (C,R,S)] = dy[K, (N,P,Q)] x im2col(x)^T.
template <class T>
PORTA_DEVICE_FUNCTION ConvProblem<T> backward_weights(const ConvArgs& g, const T* x, const T* dy,
                                             float* dw) {
  const int64_t pq = g.out_h * g.out_w, crs = g.channels * g.kernel_h * g.kernel_w;
  return ConvProblem<T>{
      StridedOperand<T>{dy, pq, Split{pq, g.out_channels * pq, 1}, 0},  // dy[n, k, pq]
      im2col(g, x, true), OutputView{dw, crs, Split::stride(1), 0, 1.0f, 0.0f},
      porta_ops::GemmShape{g.out_channels, crs, g.batch * pq, 1}};
}

#if PORTA_TARGET_CPU
// Backward data of a strided layer in two steps, g.images images from g.first_image at a time
// (conv.cpp: launch_data_by_columns). First the chunk's columns,
//   dcol[(C,R,S), (n,P,Q)] = w^T[(C,R,S), K] x dy[K, (n,P,Q)],
// into g.columns: no product of gather(dy)'s zeros, which are all but one in stride_h x stride_w
// of its entries. dy is the im2col of a 1x1 filter over it, its positions running on across
// the chunk's images (one GEMM, not one per image). Then col2im_row.
template <class T>
PORTA_DEVICE_FUNCTION ConvProblem<T> backward_data_columns(const ConvArgs& g, const T* dy,
                                                           const T* w) {
  const int64_t pq = g.out_h * g.out_w, crs = g.channels * g.kernel_h * g.kernel_w;
  const WindowAxis positions{g.out_h, g.out_w, g.out_channels * pq, 1, 0, 1, 0};
  const WindowAxis channels{1, 1, pq, 1, 0, 1, 0};
  return ConvProblem<T>{StridedOperand<T>{w, 1, Split::stride(crs), 0},  // w^T: w[k, (c,r,s)]
                        WindowOperand<T>{dy + g.first_image * g.out_channels * pq, positions,
                                         channels, g.out_h, g.out_w, g.out_w, 1, 1},
                        OutputView{g.columns, g.images * pq, Split::stride(1), 0, 1.0f, 0.0f},
                        porta_ops::GemmShape{crs, g.images * pq, g.out_channels, 1}};
}

// Row `row` of dx among the chunk's (image first_image + n, channel c, input row h: row = (n * C
// + c) * H + h) from backward_data_columns' columns: dx[h, w] is the sum, tap (r, s) after tap,
// of dcol[(c, r, s), (n, p, q)] where h + pad_h - r * dilation_h = p * stride_h and w + pad_w -
// s * dilation_w = q * stride_w, 0 where no tap reaches it. Each element's sum is its own, in a
// fixed order: no atomics. (Summing a row in its stride_w phases, each tap's outputs then
// consecutive, and interleaving them into dx measured slower: docs/decisions.md.)
PORTA_DEVICE_FUNCTION void col2im_row(const ConvArgs& g, int64_t row, float* dx) {
  const int64_t pq = g.out_h * g.out_w, taps = g.kernel_h * g.kernel_w;
  const int64_t h = row % g.height, plane = row / g.height;  // plane: n * C + c
  const int64_t n = plane / g.channels, c = plane % g.channels;
  float* const out = dx + (g.first_image * g.channels + plane) * g.height * g.width + h * g.width;
  for (int64_t w = 0; w < g.width; ++w) out[w] = 0.0f;
  const int64_t columns = g.images * pq;  // a tap's columns: the chunk's positions
  const float* const image = g.columns + c * taps * columns + n * pq;
  for (int64_t r = 0; r < g.kernel_h; ++r) {
    const int64_t at = h + g.pad_h - r * g.dilation_h;
    if (at < 0 || at % g.stride_h != 0 || at / g.stride_h >= g.out_h) continue;
    for (int64_t s = 0; s < g.kernel_w; ++s) {
      const float* const from = image + (r * g.kernel_w + s) * columns + at / g.stride_h * g.out_w;
      // Output q adds to w = q * stride_w + shift: the q that land in [0, width).
      const int64_t shift = s * g.dilation_w - g.pad_w;
      const int64_t q0 = shift >= 0 ? 0 : (g.stride_w - 1 - shift) / g.stride_w;
      const int64_t reach = g.width - 1 - shift;
      const int64_t q1 = reach < 0 ? 0 : min64(g.out_w, reach / g.stride_w + 1);
      for (int64_t q = q0; q < q1; ++q) out[q * g.stride_w + shift] += from[q];
    }
  }
}

// dw^T[(C,R,S), K] = im2col(x)[(C,R,S), (N,P,Q)] x dy^T[(N,P,Q), K]: backward weights with the
// window as A, whose rows the CPU engine reads from x's rows staged per depth block
// (gemm_engine_cpu.h: packed_gemm of a window) instead of packing im2col^T (ConvArgs::transposed).
template <class T>
PORTA_DEVICE_FUNCTION Problem<WindowOperand<T>, StridedOperand<T>> backward_weights_transposed(
    const ConvArgs& g, const T* x, const T* dy, float* dw) {
  const int64_t pq = g.out_h * g.out_w, crs = g.channels * g.kernel_h * g.kernel_w;
  return Problem<WindowOperand<T>, StridedOperand<T>>{
      im2col(g, x, true), StridedOperand<T>{dy, pq, Split{pq, g.out_channels * pq, 1}, 0},
      OutputView{dw, 1, Split::stride(crs), 0, 1.0f, 0.0f},
      porta_ops::GemmShape{crs, g.out_channels, g.batch * pq, 1}};
}

// dw^T[C, K] = x[C, (N,P,Q)] x dy^T[(N,P,Q), K] for pointwise layers (ConvArgs::pointwise), where
// x is im2col(x), stored as dy is: x's rows read in place as A within an image, and dy^T packed
// as B, a packed element per C products rather than one of x^T per K (gemm_params.h:
// StagedWindow::in_place).
template <class T>
PORTA_DEVICE_FUNCTION Problem<StridedOperand<T>, StridedOperand<T>> backward_weights_pointwise(
    const ConvArgs& g, const T* x, const T* dy, float* dw) {
  const int64_t pq = g.out_h * g.out_w;
  return Problem<StridedOperand<T>, StridedOperand<T>>{
      StridedOperand<T>{x, pq, Split{pq, g.channels * pq, 1}, 0},
      StridedOperand<T>{dy, pq, Split{pq, g.out_channels * pq, 1}, 0},
      OutputView{dw, 1, Split::stride(g.channels), 0, 1.0f, 0.0f},
      porta_ops::GemmShape{g.channels, g.out_channels, g.batch * pq, 1}};
}
#endif

template <class A, class B>
PORTA_DEVICE_FUNCTION void run(const Problem<A, B>& p, const ConvArgs& g) {
  porta_ops::run_gemm(p.a, p.b, p.c, p.shape, g.tiles);
}

}  // namespace porta_ops::conv
