// Elementwise kernels: one work-item per element; bias add and its gradient walk rows.
#include "common.h"

using porta_ops::kLanes;
using porta_ops::kMaxItems;

PORTA_KERNEL(relu_forward, int64_t count, const float* x, float* y) {
  porta_ops::for_each_index(count, [&](int64_t i) { y[i] = x[i] > 0.0f ? x[i] : 0.0f; });
}

// dy is read whatever x is: a load under the condition would keep the CPU loop from vectorising
// where the target has no masked loads.
PORTA_KERNEL(relu_backward, int64_t count, const float* x, const float* dy, float* dx) {
  porta_ops::for_each_index(count, [&](int64_t i) {
    const float g = dy[i];
    dx[i] = porta_ops::pick(x[i] > 0.0f, g, 0.0f);
  });
}

// y = x + bias[row % channels] over rows [row, end) of `length` (at least kLanes) elements,
// which lie one after another: one run of blocks, each block's lanes past its row's end taking
// the next row's bias.
PORTA_DEVICE_FUNCTION void add_bias_rows(int64_t row, int64_t end, int64_t length, int64_t channels,
                                         const float* x, const float* bias, float* y) {
  x += row * length;
  y += row * length;
  int64_t left = length;  // of the row the next block starts in
  float now = bias[row % channels], next = bias[(row + 1) % channels];
  porta_ops::walk_blocks((end - row) * length, 0, 1, [&](int64_t first, auto count) {
    float v[kLanes];
    for (uint32_t lane = 0; lane < count; ++lane) v[lane] = x[first + lane];
    for (uint32_t lane = 0; lane < count; ++lane) {
      v[lane] += porta_ops::pick(int64_t(lane) < left, now, next);
    }
    for (uint32_t lane = 0; lane < count; ++lane) y[first + lane] = v[lane];
    left -= kLanes;
    if (left <= 0) {
      left += length;
      ++row;
      now = next;
      next = bias[(row + 1) % channels];
    }
  });
}

// y = x + bias over rows of length `length`: with per_column, bias[column] (a batch x channels
// tensor, spatial 1); otherwise bias[row % channels] (rows are the batch x channels planes).
// A group has group_size(0) items per row and group_size(1) rows; y may be x. On the host (one
// item per row, kLanes of them at a time) the group's rows are one run of x and y, taken as such:
// row by row, rows of 196 floats ran at 87% of the copy rate, a tenth lost at their ends.
PORTA_KERNEL(bias_add, int64_t rows, int64_t length, int64_t channels, int32_t per_column,
             const float* x, const float* bias, float* y) {
  const uint32_t items = porta::group_size(0);
  const int64_t first_row = porta_ops::group_index() * porta::group_size(1);
  if (kLanes > 1 && items == 1 && !per_column && length >= kLanes) {
    const int64_t end = porta_ops::min64(first_row + porta::group_size(1), rows);
    porta::inner([&](uint32_t, uint32_t r) {
      if (r == 0 && first_row < end) add_bias_rows(first_row, end, length, channels, x, bias, y);
    });
    return;
  }
  porta::inner([&](uint32_t item, uint32_t r) {
    const int64_t row = first_row + r;
    if (row >= rows) return;
    const float* xr = x + row * length;
    float* yr = y + row * length;
    if (per_column) {
      porta_ops::map(length, item, items, xr, bias, yr,
                     [](int64_t, float v, float b) { return v + b; });
    } else {
      const float b = bias[row % channels];
      porta_ops::map(length, item, items, xr, yr, [&](int64_t, float v) { return v + b; });
    }
  });
}

// dbias[c] = sum of dy[n][c][s] over n and s; one group per channel (grid wrapped into y), its
// group_size(0) x group_size(1) items (powers of two) taking spatial positions and batch entries
// respectively, then a tree: a fixed order, so the result is the same on every run.
PORTA_KERNEL(bias_backward, int64_t batch, int64_t channels, int64_t spatial, const float* dy,
             float* dbias) {
  PORTA_SHARED float part[kMaxItems];
  const int64_t channel = porta_ops::group_index();
  const uint32_t items_x = porta::group_size(0);
  const uint32_t items_y = porta::group_size(1);
  const uint32_t items = items_x * items_y;
  porta::inner([&](uint32_t ix, uint32_t iy) {
    float lane_sum[kLanes];
    for (uint32_t lane = 0; lane < kLanes; ++lane) lane_sum[lane] = 0.0f;
    if (channel < channels) {
      for (int64_t n = iy; n < batch; n += items_y) {
        const float* plane = dy + (n * channels + channel) * spatial;
        porta_ops::walk(spatial, ix, items_x,
                        [&](int64_t s, uint32_t lane) { lane_sum[lane] += plane[s]; });
      }
    }
    part[iy * items_x + ix] = porta_ops::sum_lanes(lane_sum);
  });
  for (uint32_t half = items / 2; half > 0; half /= 2) {
    porta::inner([&](uint32_t ix, uint32_t iy) {
      const uint32_t i = iy * items_x + ix;
      if (i < half) part[i] += part[i + half];
    });
  }
  porta::inner([&](uint32_t ix, uint32_t iy) {
    if (ix == 0 && iy == 0 && channel < channels) dbias[channel] = part[0];
  });
}

// How far ahead in a run of memory bias_backward_parts asks for it, in floats (2 KiB).
constexpr int64_t kRunAhead = 2048 / sizeof(float);

// bias_backward on the host, first of two launches: each group sums the planes of one block of
// dy, `per_part` consecutive batch entries by `per_block` consecutive channels, into
// partial[part][channel]. Where a block holds every channel it is one contiguous run of memory;
// groups of a few channels each (a channel's planes a whole batch stride apart) read at half the
// rate on the same memory, since a core streams one run far faster than it starts many.
PORTA_KERNEL(bias_backward_parts, int64_t batch, int64_t channels, int64_t spatial,
             int64_t per_part, int64_t per_block, const float* dy, float* partial) {
  const int64_t blocks = porta_ops::div_up(channels, per_block);
  const int64_t part = porta_ops::group_index() / blocks;
  const int64_t first_n = part * per_part;
  const int64_t end_n = porta_ops::min64(first_n + per_part, batch);
  const int64_t first_c = porta_ops::group_index() % blocks * per_block;
  const int64_t end_c = porta_ops::min64(first_c + per_block, channels);
  porta::inner([&](uint32_t) {
    if (first_n >= batch) return;
    float* sums = partial + part * channels;
    for (int64_t c = first_c; c < end_c; ++c) sums[c] = 0.0f;
    for (int64_t n = first_n; n < end_n; ++n) {
      // The next entry's run is a batch stride away where the block is not every channel, and
      // the prefetchers do not look there. Within the run, 2 KiB on: planes of 196 floats read
      // at 82-85% of the copy's bandwidth without, 89-91% with (docs/decisions.md, "Max-pool
      // rows ask for their memory ahead").
      const int64_t ahead = n + 1 < end_n && per_block < channels ? channels * spatial : 0;
      for (int64_t c = first_c; c < end_c; ++c) {
        const float* plane = dy + (n * channels + c) * spatial;
        // The lanes past a partial block add -0, which leaves every sum as it is.
        porta_ops::Lanes sum = porta_ops::splat_lanes(0.0f);
        porta_ops::walk_blocks(spatial, 0, 1, [&](int64_t s, auto count) {
          if (ahead) porta_ops::prefetch(plane + ahead + s);
          porta_ops::prefetch(plane + kRunAhead + s);
          float v[kLanes];
          for (uint32_t lane = 0; lane < kLanes; ++lane) {
            v[lane] = lane < count ? plane[s + lane] : -0.0f;
          }
          sum = porta_ops::add(sum, porta_ops::as_lanes(v));
        });
        float lanes[kLanes];
        __builtin_memcpy(lanes, &sum, sizeof sum);
        sums[c] += porta_ops::sum_lanes(lanes);
      }
    }
  });
}

// bias_backward on the host, second launch: dbias[c] = the parts' sums of channel c, in order.
PORTA_KERNEL(bias_backward_combine, int64_t channels, int64_t parts, const float* partial,
             float* dbias) {
  porta_ops::for_each_index(channels, [&](int64_t c) {
    float sum = partial[c];
    for (int64_t part = 1; part < parts; ++part) sum += partial[part * channels + c];
    dbias[c] = sum;
  });
}

// bias_backward for spatial 1 (a fully connected layer): dbias[c] = sum over n of dy[n][c].
// Each item sums `per_item` neighbouring channels down the batch, in order: on a GPU (per_item 1)
// neighbouring items read neighbouring words; on the CPU the loop over the lanes vectorises, four
// vectors at a time so that each row is read as one run of 256 bytes (a vector's 64 once per
// pass down the batch were a fourth of the rate on 256 x 1024).
PORTA_KERNEL(bias_backward_columns, int64_t batch, int64_t channels, int64_t per_item,
             const float* dy, float* dbias) {
  const int64_t first_item = porta_ops::group_index() * porta::group_size(0);
  porta::inner([&](uint32_t item) {
    const int64_t first = (first_item + item) * per_item;
    const int64_t end = first + per_item < channels ? first + per_item : channels;
    const auto sum_down = [&](int64_t c, auto count) {
      float sum[4 * kLanes];
      for (uint32_t lane = 0; lane < count; ++lane) sum[lane] = 0.0f;
      for (int64_t n = 0; n < batch; ++n) {
        const float* row = dy + n * channels + c;
        for (uint32_t lane = 0; lane < count; ++lane) sum[lane] += row[lane];
      }
      for (uint32_t lane = 0; lane < count; ++lane) dbias[c + lane] = sum[lane];
    };
    int64_t c = first;
    for (; c + 4 * kLanes <= end; c += 4 * kLanes) {
      sum_down(c, porta_ops::fixed_count<4 * kLanes>{});
    }
    for (; c + kLanes <= end; c += kLanes) sum_down(c, porta_ops::fixed_count<kLanes>{});
    if (c < end) sum_down(c, uint32_t(end - c));
  });
}

// SGD with momentum, PyTorch's form: g = grad + weight_decay * w; velocity = momentum *
// velocity + g; w -= learning_rate * velocity.
PORTA_KERNEL(sgd_update, int64_t count, float* weights, const float* grads, float* velocity,
             float learning_rate, float momentum, float weight_decay) {
  porta_ops::for_each_index(count, [&](int64_t i) {
    const float w = weights[i];
    const float g = grads[i] + weight_decay * w;
    const float v = momentum * velocity[i] + g;
    velocity[i] = v;
    weights[i] = w - learning_rate * v;
  });
}

// Adam, in PyTorch's form: m and v as usual, then w -= step_size * m / (sqrt(v) * rsqrt_c2 +
// epsilon), where the host computed step_size = learning_rate / (1 - beta1^step) and rsqrt_c2 =
// 1 / sqrt(1 - beta2^step) in double precision: one square root and one division per element.
PORTA_KERNEL(adam_update, int64_t count, float* weights, const float* grads, float* m, float* v,
             float beta1, float beta2, float epsilon, float weight_decay, float step_size,
             float rsqrt_c2) {
  porta_ops::for_each_index(count, [&](int64_t i) {
    const float w = weights[i];
    const float g = grads[i] + weight_decay * w;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * (g * g);
    m[i] = mi;
    v[i] = vi;
    weights[i] = w - step_size * mi / (sqrtf(vi) * rsqrt_c2 + epsilon);
  });
}
