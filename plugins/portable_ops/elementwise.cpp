// Host side of the elementwise ops, bias add and its gradient, and the optimiser updates.
#include <cmath>

#include "portable_ops.h"

namespace porta::portable_ops {

porta_status_t relu_forward(void*, porta_stream_t stream, int64_t count, const float* x, float* y) {
  return guarded("porta_relu_forward",
                 [&] { launch_elementwise(stream, "relu_forward", count, x, y); });
}

porta_status_t relu_backward(void*, porta_stream_t stream, int64_t count, const float* x,
                             const float* dy, float* dx) {
  return guarded("porta_relu_backward",
                 [&] { launch_elementwise(stream, "relu_backward", count, x, dy, dx); });
}

// Rows that share one bias value (the planes of a batch x channels x spatial tensor), or, for a
// fully connected layer (spatial 1), rows of channels whose columns take bias[column].
porta_status_t bias_add(void*, porta_stream_t stream, int64_t batch, int64_t channels,
                        int64_t spatial, const float* x, const float* bias, float* y) {
  return guarded("porta_bias_add", [&] {
    const int32_t per_column = spatial == 1;
    const int64_t rows = per_column ? batch : batch * channels;
    const int64_t length = per_column ? channels : spatial;
    const RowLaunch shape = row_launch(stream, "bias_add", rows, length, 4, 256);
    launch(stream, "bias_add", shape.grid, shape.group, 0, rows, length, channels, per_column, x,
           bias, y);
  });
}

// One group per channel, its items splitting the spatial positions (x) and the batch (y) on a
// GPU, summed with a tree. A fully connected layer's (spatial 1) rows of channels are summed down
// the batch instead, each item taking neighbouring channels, where there are enough channels to
// keep a GPU busy (on the CPU always): a group per channel would read a column, strided.
porta_status_t bias_backward(void*, porta_stream_t stream, int64_t batch, int64_t channels,
                             int64_t spatial, const float* dy, float* dbias) {
  return guarded("porta_bias_backward", [&] {
    const bool host = runs_on_host(stream);
    if (spatial == 1 && (host || channels >= 4096)) {
      const int64_t per_item = host ? 64 : 1;
      const uint32_t items = host ? 1 : 256;
      const int64_t item_count = (channels + per_item - 1) / per_item;
      launch(stream, "bias_backward_columns", wrapped_grid((item_count + items - 1) / items),
             dim3(items), 0, batch, channels, per_item, dy, dbias);
      return;
    }
    uint32_t items_x = 1, items_y = 1;
    if (!host) {
      while (items_x < 256 && items_x * 4 < spatial) items_x *= 2;
      while (items_x * items_y < 256 && items_y < batch) items_y *= 2;
    }
    launch(stream, "bias_backward", wrapped_grid(channels), dim3(items_x, items_y), 0, batch,
           channels, spatial, dy, dbias);
  });
}

porta_status_t sgd_update(void*, porta_stream_t stream, int64_t count, float* weights,
                          const float* grads, float* velocity, float learning_rate, float momentum,
                          float weight_decay) {
  return guarded("porta_sgd_update", [&] {
    launch_elementwise(stream, "sgd_update", count, weights, grads, velocity, learning_rate,
                       momentum, weight_decay);
  });
}

// The bias corrections 1 - beta^step are computed here once, in double precision (beta^step
// underflows to 0 for large steps, leaving 1).
porta_status_t adam_update(void*, porta_stream_t stream, int64_t count, float* weights,
                           const float* grads, float* m, float* v,
                           const porta_adam_params_t* params) {
  return guarded("porta_adam_update", [&] {
    const double step = static_cast<double>(params->step);
    const float correction1 = static_cast<float>(1.0 - std::pow(double{params->beta1}, step));
    const float correction2 = static_cast<float>(1.0 - std::pow(double{params->beta2}, step));
    launch_elementwise(stream, "adam_update", count, weights, grads, m, v, params->learning_rate,
                       params->beta1, params->beta2, params->epsilon, params->weight_decay,
                       correction1, correction2);
  });
}

// One kernel per pair of dtypes (kernels/convert_kernels.cpp); the same dtype both ways is a copy.
porta_status_t convert(void*, porta_stream_t stream, int64_t count, porta_dtype_t src_dtype,
                       const void* src, porta_dtype_t dst_dtype, void* dst) {
  static const char* const kNames[] = {"f32", "f16", "bf16"};
  return guarded("porta_convert", [&] {
    if (src_dtype == dst_dtype) {
      const size_t bytes = static_cast<size_t>(count) * (src_dtype == PORTA_DTYPE_F32 ? 4 : 2);
      if (dst != src) porta::check(porta_memcpy_async(dst, src, bytes, stream));
      return;
    }
    const std::string name = std::string("convert_") + kNames[src_dtype] + "_" + kNames[dst_dtype];
    launch_elementwise(stream, name.c_str(), count, src, dst);
  });
}

}  // namespace porta::portable_ops
