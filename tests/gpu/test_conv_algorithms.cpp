// vendor_cuda's choice among cuDNN's ranked convolution algorithms (conv_algorithms.h): only
// those with exact fp32 products, run in CUDNN_FMA_MATH, deterministic ones first. Header-only,
// so it is tested here without a GPU (cudnn.h only, no cuDNN library call).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include "conv_algorithms.h"

using porta::vendor_cuda::choose_exact;

namespace {

template <class Perf, class Algo>
Perf ranked(Algo algo, cudnnMathType_t math = CUDNN_DEFAULT_MATH,
            cudnnDeterminism_t determinism = CUDNN_DETERMINISTIC,
            cudnnStatus_t status = CUDNN_STATUS_SUCCESS) {
  Perf p{};
  p.algo = algo;
  p.status = status;
  p.mathType = math;
  p.determinism = determinism;
  return p;
}

}  // namespace

TEST_CASE("conv algorithms: FFT and Winograd are passed over for an implicit GEMM") {
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  const Perf perf[] = {ranked<Perf>(CUDNN_CONVOLUTION_FWD_ALGO_FFT),
                       ranked<Perf>(CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED),
                       ranked<Perf>(CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING),
                       ranked<Perf>(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)};
  const Perf* chosen = choose_exact(perf, 4);
  REQUIRE(chosen);
  CHECK(chosen->algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM);
}

TEST_CASE("conv algorithms: tensor-op math is never chosen, failed entries neither") {
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  const Perf perf[] = {
      ranked<Perf>(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_TENSOR_OP_MATH),
      ranked<Perf>(CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION),
      ranked<Perf>(CUDNN_CONVOLUTION_FWD_ALGO_DIRECT, CUDNN_FMA_MATH, CUDNN_DETERMINISTIC,
                   CUDNN_STATUS_NOT_SUPPORTED),
      ranked<Perf>(CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_FMA_MATH)};
  const Perf* chosen = choose_exact(perf, 4);
  REQUIRE(chosen);
  CHECK(chosen == &perf[3]);
  CHECK(choose_exact(perf, 3) == nullptr);  // nothing acceptable among the first three
}

TEST_CASE("conv algorithms: backward passes prefer determinism, then take what is exact") {
  using Data = cudnnConvolutionBwdDataAlgoPerf_t;
  const Data data[] = {
      ranked<Data>(CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED),
      ranked<Data>(CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_DEFAULT_MATH, CUDNN_NON_DETERMINISTIC),
      ranked<Data>(CUDNN_CONVOLUTION_BWD_DATA_ALGO_1)};
  CHECK(choose_exact(data, 3)->algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1);
  CHECK(choose_exact(data, 2)->algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0);

  using Filter = cudnnConvolutionBwdFilterAlgoPerf_t;
  const Filter filter[] = {
      ranked<Filter>(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING),
      ranked<Filter>(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED),
      ranked<Filter>(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, CUDNN_FMA_MATH, CUDNN_NON_DETERMINISTIC)};
  CHECK(choose_exact(filter, 3)->algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3);
  CHECK(choose_exact(filter, 2) == nullptr);
}
