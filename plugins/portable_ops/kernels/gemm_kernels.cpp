// Kernels: GEMM, row-major, either operand transposed, strided batches; A and B in fp32, f16 or
// bf16, summed in fp32 into an fp32 C. The work is the engine's (gemm_engine.h); this file only
// says how A, B and C sit in memory.
#include "gemm_engine.h"

using porta_ops::GemmArgs;
using porta_ops::GemmShape;
using porta_ops::OutputView;
using porta_ops::Split;
using porta_ops::StridedOperand;

namespace {

// op(A) seen by its rows (i, depth k), op(B) by its columns (j, depth k), and C.
template <class T>
struct GemmProblem {
  StridedOperand<T> a, b;
  OutputView c;
  GemmShape shape;
};

template <class T>
PORTA_DEVICE_FUNCTION GemmProblem<T> problem_of(const GemmArgs& g) {
  using Operand = StridedOperand<T>;
  const T* a = static_cast<const T*>(g.a);
  const T* b = static_cast<const T*>(g.b);
  const Operand oa = g.trans_a ? Operand{a, 1, Split::stride(g.lda), g.stride_a}
                               : Operand{a, g.lda, Split::stride(1), g.stride_a};
  const Operand ob = g.trans_b ? Operand{b, g.ldb, Split::stride(1), g.stride_b}
                               : Operand{b, 1, Split::stride(g.ldb), g.stride_b};
  const OutputView c{g.c, g.ldc, Split::stride(1), g.stride_c, g.alpha, g.beta};
  return GemmProblem<T>{oa, ob, c, GemmShape{g.m, g.n, g.k, g.batch}};
}

template <class T>
PORTA_DEVICE_FUNCTION void gemm(const GemmArgs& args) {
  const GemmProblem<T> p = problem_of<T>(args);
  porta_ops::run_gemm(p.a, p.b, p.c, p.shape, args.tiles);
}

}  // namespace

// C = alpha * op(A) op(B) + beta * C for each batch entry; launched as plan_gemm
// (gemm_params.h) says.
PORTA_KERNEL_MAX_GROUP(gemm_f32, porta_ops::kEngineItems, GemmArgs args) { gemm<float>(args); }
PORTA_KERNEL_MAX_GROUP(gemm_f16, porta_ops::kEngineItems, GemmArgs args) {
  gemm<porta_ops::f16>(args);
}
PORTA_KERNEL_MAX_GROUP(gemm_bf16, porta_ops::kEngineItems, GemmArgs args) {
  gemm<porta_ops::bf16>(args);
}

// With split-K (args.tiles.splits > 1), after any of them: sums the partials into C. It reads
// only C and the partials, so one kernel serves every dtype.
PORTA_KERNEL(gemm_f32_reduce, GemmArgs args) {
  const GemmProblem<float> p = problem_of<float>(args);
  porta_ops::reduce_partials(p.c, p.shape, args.tiles);
}
