// Host side of softmax, log-softmax and cross-entropy: the launch shape of the row kernels
// (kernels/softmax_kernels.cpp) and, for the loss, the per-row losses' deterministic reduction.
#include "portable_ops.h"

namespace porta::portable_ops {

porta_status_t Ops::softmax_forward(const Op* op, const porta_softmax_forward_args_t* a) {
  return guarded("porta_softmax_forward", [&] {
    const RowLaunch shape = row_launch(*op, "softmax_forward", a->rows, a->cols);
    const int32_t log_softmax = a->mode == PORTA_LOG_SOFTMAX;
    launch(*op, "softmax_forward", shape.grid, shape.group, 0, a->rows, a->cols, log_softmax, a->x,
           a->y);
  });
}

porta_status_t Ops::softmax_backward(const Op* op, const porta_softmax_backward_args_t* a) {
  return guarded("porta_softmax_backward", [&] {
    const RowLaunch shape = row_launch(*op, "softmax_backward", a->rows, a->cols);
    const int32_t log_softmax = a->mode == PORTA_LOG_SOFTMAX;
    launch(*op, "softmax_backward", shape.grid, shape.group, 0, a->rows, a->cols, log_softmax, a->y,
           a->dy, a->dx);
  });
}

// Two kernels, no float atomics: the rows' losses go to this stream's scratch buffer, then one
// group sums them in a fixed order, so the loss is the same bit for bit on every run.
porta_status_t Ops::cross_entropy(const Op* op, const porta_cross_entropy_args_t* a) {
  return guarded("porta_cross_entropy", [&] {
    const int64_t rows = a->rows;
    const RowLaunch shape = row_launch(*op, "cross_entropy_rows", rows, a->cols);
    const uint32_t reduce_items = runs_on_host(*op) ? 1 : max_group_items(*op, "mean_reduce");
    const float inv_rows = static_cast<float>(1.0 / static_cast<double>(rows));
    Scratch scratch = scratch_for(*op, static_cast<size_t>(rows) * sizeof(float));
    float* row_loss = scratch.as<float>();
    const float* row_loss_in = row_loss;
    launch(*op, "cross_entropy_rows", shape.grid, shape.group, 0, rows, a->cols, a->logits,
           a->labels, row_loss, a->dlogits, inv_rows);
    launch(*op, "mean_reduce", dim3(1), dim3(reduce_items), 0, rows, row_loss_in, a->loss);
  });
}

}  // namespace porta::portable_ops
