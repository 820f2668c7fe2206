// Host side of the elementwise ops, bias add and its gradient, and the optimiser updates.
#include <algorithm>
#include <cmath>

#include "portable_ops.h"

namespace porta::portable_ops {

porta_status_t Ops::relu_forward(const Op* op, const porta_relu_forward_args_t* a) {
  return guarded("porta_relu_forward",
                    [&] { launch_elementwise(*op, "relu_forward", a->count, a->x, a->y); });
}

porta_status_t Ops::relu_backward(const Op* op, const porta_relu_backward_args_t* a) {
  return guarded("porta_relu_backward", [&] {
    launch_elementwise(*op, "relu_backward", a->count, a->x, a->dy, a->dx);
  });
}

// Rows that share one bias value (the planes of a batch x channels x spatial tensor), or, for a
// fully connected layer (spatial 1), rows of channels whose columns take bias[column].
porta_status_t Ops::bias_add(const Op* op, const porta_bias_add_args_t* a) {
  return guarded("porta_bias_add", [&] {
    const int32_t per_column = a->spatial == 1;
    const int64_t rows = per_column ? a->batch : a->batch * a->channels;
    const int64_t length = per_column ? a->channels : a->spatial;
    const RowLaunch shape = row_launch(*op, "bias_add", rows, length, 4, 256);
    launch(*op, "bias_add", shape.grid, shape.group, 0, rows, length, a->channels, per_column, a->x,
           a->bias, a->y);
  });
}

// One group per channel, its items splitting the spatial positions (x) and the batch (y) on a
// GPU, summed with a tree; on the host each group sums a block of consecutive batch entries and
// channels into scratch, and a second launch adds the blocks' sums of each channel. A fully
// connected layer's (spatial 1) rows of channels are summed down the batch instead, each item
// taking neighbouring channels, where there are enough channels to keep a GPU busy (on the CPU
// always, 64 an item, or all of them where the whole is one group's): a group per channel would
// read a column, strided.
porta_status_t Ops::bias_backward(const Op* op, const porta_bias_backward_args_t* a) {
  return guarded("porta_bias_backward", [&] {
    const int64_t batch = a->batch, channels = a->channels, spatial = a->spatial;
    const bool host = runs_on_host(*op);
    if (spatial == 1 && (host || channels >= 4096)) {
      const int64_t per_item =
          !host ? 1 : batch * channels <= kHostOneGroupElements ? channels : 64;
      const uint32_t items = host ? 1 : 256;
      const int64_t item_count = (channels + per_item - 1) / per_item;
      launch(*op, "bias_backward_columns", wrapped_grid((item_count + items - 1) / items),
             dim3(items), 0, batch, channels, per_item, a->dy, a->dbias);
      return;
    }
    if (host) {
      // Up to kParts parts of the batch, the channels split into blocks where there are fewer
      // entries than that, so that there are about kParts groups; the same for every thread
      // count, so that the sums are too.
      constexpr int64_t kParts = 16;
      const int64_t per_part = (batch + kParts - 1) / kParts;
      const int64_t parts = (batch + per_part - 1) / per_part;
      const int64_t blocks = std::min(channels, (kParts + parts - 1) / parts);
      const int64_t per_block = (channels + blocks - 1) / blocks;
      const int64_t groups = parts * ((channels + per_block - 1) / per_block);
      const Scratch scratch = scratch_for(*op, static_cast<size_t>(parts * channels) * sizeof(float));
      float* partial = scratch.as<float>();
      const float* partial_in = partial;
      launch(*op, "bias_backward_parts", wrapped_grid(groups), dim3(1), 0, batch, channels, spatial,
             per_part, per_block, a->dy, partial);
      launch_elementwise(*op, "bias_backward_combine", channels, parts, partial_in, a->dbias);
      return;
    }
    uint32_t items_x = 1, items_y = 1;
    while (items_x < 256 && items_x * 4 < spatial) items_x *= 2;
    while (items_x * items_y < 256 && items_y < batch) items_y *= 2;
    launch(*op, "bias_backward", wrapped_grid(channels), dim3(items_x, items_y), 0, batch, channels,
           spatial, a->dy, a->dbias);
  });
}

porta_status_t Ops::sgd_update(const Op* op, const porta_sgd_update_args_t* a) {
  return guarded("porta_sgd_update", [&] {
    launch_elementwise(*op, "sgd_update", a->count, a->weights, a->grads, a->velocity,
                       a->learning_rate, a->momentum, a->weight_decay);
  });
}

// The bias corrections 1 - beta^step are computed here once, in double precision (beta^step
// underflows to 0 for large steps, leaving 1), and folded into the step size and the scale of
// sqrt(v), as PyTorch does.
porta_status_t Ops::adam_update(const Op* op, const porta_adam_update_args_t* a) {
  return guarded("porta_adam_update", [&] {
    const porta_adam_params_t& params = *a->params;
    const double step = static_cast<double>(params.step);
    const double correction1 = 1.0 - std::pow(double{params.beta1}, step);
    const double correction2 = 1.0 - std::pow(double{params.beta2}, step);
    const float step_size = static_cast<float>(params.learning_rate / correction1);
    const float rsqrt_c2 = static_cast<float>(1.0 / std::sqrt(correction2));
    launch_elementwise(*op, "adam_update", a->count, a->weights, a->grads, a->m, a->v, params.beta1,
                       params.beta2, params.epsilon, params.weight_decay, step_size, rsqrt_c2);
  });
}

// One kernel per pair of dtypes (kernels/convert_kernels.cpp); the same dtype both ways is a copy.
porta_status_t Ops::convert(const Op* op, const porta_convert_args_t* a) {
  static const char* const kNames[] = {"f32", "f16", "bf16"};
  return guarded("porta_convert", [&] {
    if (a->src_dtype == a->dst_dtype) {
      const size_t bytes =
          static_cast<size_t>(a->count) * (a->src_dtype == PORTA_DTYPE_F32 ? 4 : 2);
      if (a->dst != a->src) porta::check(porta_memcpy_async(a->dst, a->src, bytes, op->stream));
      return;
    }
    const std::string name =
        std::string("convert_") + kNames[a->src_dtype] + "_" + kNames[a->dst_dtype];
    launch_elementwise(*op, name.c_str(), a->count, a->src, a->dst);
  });
}

}  // namespace porta::portable_ops
