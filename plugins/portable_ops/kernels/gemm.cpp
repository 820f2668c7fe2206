// Kernels: GEMM, fp32, row-major, either operand transposed, strided batches. The work is the
// engine's (gemm_engine.h); this file only says how A, B and C sit in memory.
#include "gemm_engine.h"

using porta_ops::GemmArgs;
using porta_ops::GemmShape;
using porta_ops::OutputView;
using porta_ops::Split;
using porta_ops::StridedOperand;

namespace {

// op(A) seen by its rows (i, depth k), op(B) by its columns (j, depth k), and C.
struct GemmProblem {
  StridedOperand a, b;
  OutputView c;
  GemmShape shape;
};

PORTA_DEVICE GemmProblem problem_of(const GemmArgs& g) {
  const StridedOperand a = g.trans_a ? StridedOperand{g.a, 1, Split::stride(g.lda), g.stride_a}
                                     : StridedOperand{g.a, g.lda, Split::stride(1), g.stride_a};
  const StridedOperand b = g.trans_b ? StridedOperand{g.b, g.ldb, Split::stride(1), g.stride_b}
                                     : StridedOperand{g.b, 1, Split::stride(g.ldb), g.stride_b};
  const OutputView c{g.c, g.ldc, Split::stride(1), g.stride_c, g.alpha, g.beta};
  return GemmProblem{a, b, c, GemmShape{g.m, g.n, g.k, g.batch}};
}

}  // namespace

// C = alpha * op(A) op(B) + beta * C for each batch entry; launched as plan_gemm
// (gemm_params.h) says.
PORTA_KERNEL(gemm_f32, GemmArgs args) {
  const GemmProblem p = problem_of(args);
  porta_ops::run_gemm(p.a, p.b, p.c, p.shape, args.tiles);
}

// With split-K (args.tiles.splits > 1), after gemm_f32: sums the partials into C.
PORTA_KERNEL(gemm_f32_reduce, GemmArgs args) {
  const GemmProblem p = problem_of(args);
  porta_ops::reduce_partials(p.c, p.shape, args.tiles);
}
