// Host side of softmax, log-softmax and cross-entropy: the launch shape of the row kernels
// (kernels/softmax_kernels.cpp) and, for the loss, the per-row losses' deterministic reduction.
#include "portable_ops.h"

namespace porta::portable_ops {

porta_status_t softmax_forward(void*, porta_stream_t stream, porta_softmax_mode_t mode,
                               int64_t rows, int64_t cols, const float* x, float* y) {
  return guarded("porta_softmax_forward", [&] {
    const RowLaunch shape = row_launch(stream, "softmax_forward", rows, cols);
    const int32_t log_softmax = mode == PORTA_LOG_SOFTMAX;
    launch(stream, "softmax_forward", shape.grid, shape.group, 0, rows, cols, log_softmax, x, y);
  });
}

porta_status_t softmax_backward(void*, porta_stream_t stream, porta_softmax_mode_t mode,
                                int64_t rows, int64_t cols, const float* y, const float* dy,
                                float* dx) {
  return guarded("porta_softmax_backward", [&] {
    const RowLaunch shape = row_launch(stream, "softmax_backward", rows, cols);
    const int32_t log_softmax = mode == PORTA_LOG_SOFTMAX;
    launch(stream, "softmax_backward", shape.grid, shape.group, 0, rows, cols, log_softmax, y, dy,
           dx);
  });
}

// Two kernels, no float atomics: the rows' losses go to this stream's scratch buffer, then one
// group sums them in a fixed order, so the loss is the same bit for bit on every run.
porta_status_t cross_entropy(void*, porta_stream_t stream, int64_t rows, int64_t cols,
                             const float* logits, const int32_t* labels, float* loss,
                             float* dlogits) {
  return guarded("porta_cross_entropy", [&] {
    const RowLaunch shape = row_launch(stream, "cross_entropy_rows", rows, cols);
    const uint32_t reduce_items = runs_on_host(stream) ? 1 : max_group_items(stream, "mean_reduce");
    const float inv_rows = static_cast<float>(1.0 / static_cast<double>(rows));
    Scratch scratch = scratch_for(stream, static_cast<size_t>(rows) * sizeof(float));
    float* row_loss = scratch.as<float>();
    const float* row_loss_in = row_loss;
    launch(stream, "cross_entropy_rows", shape.grid, shape.group, 0, rows, cols, logits, labels,
           row_loss, dlogits, inv_rows);
    launch(stream, "mean_reduce", dim3(1), dim3(reduce_items), 0, rows, row_loss_in, loss);
  });
}

}  // namespace porta::portable_ops
