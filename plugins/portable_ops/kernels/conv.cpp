// Kernels: 2-D convolution, NCHW, inputs in fp32, f16 or bf16 summed in fp32 into fp32 outputs:
// forward, backward-data and backward-weights, each an implicit GEMM on the engine
// (gemm_engine.h). Nothing is unfolded in memory: the operands below compute where each element
// of the virtual im2col matrix (or dy gather) lives.
//   forward:          y[K, (N,P,Q)]  = w[K, (C,R,S)]            x im2col(x)[(C,R,S), (N,P,Q)]
//   backward data:    dx[C, (N,H,W)] = w^T[C, (K,R,S)]          x gather(dy)[(K,R,S), (N,H,W)]
//   backward weights: dw[K, (C,R,S)] = dy[K, (N,P,Q)]           x im2col(x)^T[(N,P,Q), (C,R,S)]
// gather(dy)[(k,r,s), (n,h,w)] = dy[n, k, p, q] where h + pad_h - r * dilation_h = p * stride_h
// (likewise w, q); 0 where no such p, q exists in range. No atomics: each output element is
// summed by one work-group in a fixed order.
#include "gemm_engine.h"

using porta_ops::ConvArgs;
using porta_ops::OutputView;
using porta_ops::Split;
using porta_ops::StridedOperand;
using porta_ops::WindowAxis;
using porta_ops::WindowOperand;

namespace {

// The output positions (n, p, q) as seen from x: p * stride - pad, plane n of x.
PORTA_DEVICE WindowAxis output_positions(const ConvArgs& g) {
  return WindowAxis{g.out_h,    g.out_w, g.channels * g.height * g.width, g.stride_h, -g.pad_h,
                    g.stride_w, -g.pad_w};
}

// The filter taps (c, r, s) as seen from x: r * dilation, channel c of x.
PORTA_DEVICE WindowAxis filter_taps(const ConvArgs& g) {
  return WindowAxis{g.kernel_h, g.kernel_w, g.height * g.width, g.dilation_h, 0, g.dilation_w, 0};
}

// im2col(x)[(c,r,s), (n,p,q)]; transposed puts (c,r,s) on the wide side.
template <class T>
PORTA_DEVICE WindowOperand<T> im2col(const ConvArgs& g, const T* x, bool transposed) {
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
template <class T>
struct ConvProblem {
  StridedOperand<T> a;
  WindowOperand<T> b;
  OutputView c;
  porta_ops::GemmShape shape;
};

// y[K, (N,P,Q)] = w[K, (C,R,S)] x im2col(x).
template <class T>
PORTA_DEVICE ConvProblem<T> forward(const ConvArgs& g, const T* x, const T* w, float* y) {
  const int64_t pq = g.out_h * g.out_w, crs = g.channels * g.kernel_h * g.kernel_w;
  return ConvProblem<T>{StridedOperand<T>{w, crs, Split::stride(1), 0}, im2col(g, x, false),
                        OutputView{y, pq, Split{pq, g.out_channels * pq, 1}, 0, 1.0f, 0.0f},
                        porta_ops::GemmShape{g.out_channels, g.batch * pq, crs, 1}};
}

// dx[C, (N,H,W)] = w^T[C, (K,R,S)] x gather(dy).
template <class T>
PORTA_DEVICE ConvProblem<T> backward_data(const ConvArgs& g, const T* dy, const T* w, float* dx) {
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
PORTA_DEVICE ConvProblem<T> backward_weights(const ConvArgs& g, const T* x, const T* dy,
                                             float* dw) {
  const int64_t pq = g.out_h * g.out_w, crs = g.channels * g.kernel_h * g.kernel_w;
  return ConvProblem<T>{
      StridedOperand<T>{dy, pq, Split{pq, g.out_channels * pq, 1}, 0},  // dy[n, k, pq]
      im2col(g, x, true), OutputView{dw, crs, Split::stride(1), 0, 1.0f, 0.0f},
      porta_ops::GemmShape{g.out_channels, crs, g.batch * pq, 1}};
}

template <class T>
PORTA_DEVICE void run(const ConvProblem<T>& p, const ConvArgs& g) {
  porta_ops::run_gemm(p.a, p.b, p.c, p.shape, g.tiles);
}

}  // namespace

// Each pass is one launch planned by plan_gemm (gemm_params.h) for its GEMM sizes, followed by
// its _f32_reduce kernel (same arguments) when the plan splits the depth. The reduction reads
// only the partials and the output, so the f32 one serves every dtype.

PORTA_KERNEL(conv2d_forward_f32, ConvArgs g, const float* x, const float* w, float* y) {
  run(forward(g, x, w, y), g);
}
PORTA_KERNEL(conv2d_forward_f16, ConvArgs g, const porta_ops::f16* x, const porta_ops::f16* w,
             float* y) {
  run(forward(g, x, w, y), g);
}
PORTA_KERNEL(conv2d_forward_bf16, ConvArgs g, const porta_ops::bf16* x, const porta_ops::bf16* w,
             float* y) {
  run(forward(g, x, w, y), g);
}

PORTA_KERNEL(conv2d_forward_f32_reduce, ConvArgs g, const float* x, const float* w, float* y) {
  const ConvProblem<float> p = forward(g, x, w, y);
  porta_ops::reduce_partials(p.c, p.shape, g.tiles);
}

PORTA_KERNEL(conv2d_backward_data_f32, ConvArgs g, const float* dy, const float* w, float* dx) {
  run(backward_data(g, dy, w, dx), g);
}
PORTA_KERNEL(conv2d_backward_data_f16, ConvArgs g, const porta_ops::f16* dy,
             const porta_ops::f16* w, float* dx) {
  run(backward_data(g, dy, w, dx), g);
}
PORTA_KERNEL(conv2d_backward_data_bf16, ConvArgs g, const porta_ops::bf16* dy,
             const porta_ops::bf16* w, float* dx) {
  run(backward_data(g, dy, w, dx), g);
}

PORTA_KERNEL(conv2d_backward_data_f32_reduce, ConvArgs g, const float* dy, const float* w,
             float* dx) {
  const ConvProblem<float> p = backward_data(g, dy, w, dx);
  porta_ops::reduce_partials(p.c, p.shape, g.tiles);
}

PORTA_KERNEL(conv2d_backward_weights_f32, ConvArgs g, const float* x, const float* dy, float* dw) {
  run(backward_weights(g, x, dy, dw), g);
}
PORTA_KERNEL(conv2d_backward_weights_f16, ConvArgs g, const porta_ops::f16* x,
             const porta_ops::f16* dy, float* dw) {
  run(backward_weights(g, x, dy, dw), g);
}
PORTA_KERNEL(conv2d_backward_weights_bf16, ConvArgs g, const porta_ops::bf16* x,
             const porta_ops::bf16* dy, float* dw) {
  run(backward_weights(g, x, dy, dw), g);
}

PORTA_KERNEL(conv2d_backward_weights_f32_reduce, ConvArgs g, const float* x, const float* dy,
             float* dw) {
  const ConvProblem<float> p = backward_weights(g, x, dy, dw);
  porta_ops::reduce_partials(p.c, p.shape, g.tiles);
}
