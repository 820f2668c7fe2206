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
