// Which cuDNN convolution algorithms vendor_cuda may run: those whose results meet the op
// tests' fp32 bound (a sum of exact fp32 products, 2(k + 2)u of the magnitude sum). FFT and
// Winograd transform the operands and round differently; tensor-op math (and the default math,
// which allows TF32 on sm_80 and later) rounds the inputs to 10 bits. Header-only, so that the
// choice is tested without a GPU.
#pragma once

#include <cudnn.h>

namespace porta::vendor_cuda {

inline bool exact_products(cudnnConvolutionFwdAlgo_t algo) {
  return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
         algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
         algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}

inline bool exact_products(cudnnConvolutionBwdDataAlgo_t algo) {
  return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 || algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
}

inline bool exact_products(cudnnConvolutionBwdFilterAlgo_t algo) {
  return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 ||
         algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 || algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
}

// The heuristics' ranking (perf[0..count)) narrowed to algorithms that work, compute with exact
// fp32 products and can run in CUDNN_FMA_MATH: the first deterministic one, else the first.
// NULL when there is none. The caller runs it in CUDNN_FMA_MATH whatever mathType it was ranked
// with.
template <class Perf>
const Perf* choose_exact(const Perf* perf, int count) {
  for (int deterministic_only = 1; deterministic_only >= 0; --deterministic_only) {
    for (int i = 0; i < count; ++i) {
      const Perf& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS || !exact_products(p.algo)) continue;
      if (p.mathType != CUDNN_FMA_MATH && p.mathType != CUDNN_DEFAULT_MATH) continue;
      if (deterministic_only && p.determinism != CUDNN_DETERMINISTIC) continue;
      return &p;
    }
  }
  return nullptr;
}

}  // namespace porta::vendor_cuda
