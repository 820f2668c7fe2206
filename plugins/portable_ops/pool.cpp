// Host side of max pooling: row launches over y (forward) and over dx (backward, a gather), or
// over planes (the host's scatter).
#include <limits>

#include "checked.h"
#include "portable_ops.h"

namespace porta::portable_ops {
namespace {

struct PoolShape {
  int64_t planes, out_h, out_w;
};

PoolShape shape_of(const porta_pool2d_desc_t& d) {
  PoolShape shape{};
  porta::check(porta_pool2d_output_size(&d, &shape.out_h, &shape.out_w));
  const Checked<int64_t> planes = Checked(d.batch) * d.channels;
  // libporta checked the tensors' sizes; this keeps the plugin safe on its own.
  if (!planes.valid() || !(planes * shape.out_h * shape.out_w).valid() ||
      !(planes * d.in_height * d.in_width).valid()) {
    plugin::throw_error(PORTA_ERROR_INVALID_ARGUMENT, "the pooling's tensor sizes overflow");
  }
  shape.planes = planes.value();
  return shape;
}

// Launches `name` over `rows` rows of `length`, with the geometry and then buffers as arguments.
template <class... Buffers>
void launch_pool(const Op& op, const char* name, const porta_pool2d_desc_t& d, int64_t rows,
                 int64_t length, const Buffers&... buffers) {
  const PoolShape s = shape_of(d);
  // At most 256 items: the kernels declare that limit (kPoolItems in kernels/pool_kernels.cpp).
  const RowLaunch shape = row_launch(op, name, rows, length, 1, 256);
  launch(op, name, shape.grid, shape.group, 0, s.planes, d.in_height, d.in_width, s.out_h, s.out_w,
         d.window_h, d.window_w, d.stride_h, d.stride_w, d.pad_h, d.pad_w, buffers...);
}

}  // namespace

porta_status_t Ops::max_pool2d_forward(const Op* op, const porta_max_pool2d_forward_args_t* a) {
  return guarded("porta_max_pool2d_forward", [&] {
    const PoolShape s = shape_of(*a->desc);
    launch_pool(*op, "max_pool2d_forward", *a->desc, s.planes * s.out_h, s.out_w, a->x, a->y);
  });
}

// Windows that do not overlap (the usual 2x2 stride 2): one pass, max_pool2d_backward_disjoint.
// Overlapping windows on the host: one pass over planes, each finding its windows' maxima and
// adding their dy to the elements they chose (max_pool2d_backward_scatter). Elsewhere two: each
// window's first maximum into the stream's scratch (int32, one per output), then each dx element
// gathers the dy of the windows that chose it (a scatter would need atomics). Planes too large
// for int32 indices take one kernel that recomputes the maxima as it gathers (several times the
// work).
porta_status_t Ops::max_pool2d_backward(const Op* op, const porta_max_pool2d_backward_args_t* a) {
  return guarded("porta_max_pool2d_backward", [&] {
    const porta_pool2d_desc_t& d = *a->desc;
    const PoolShape s = shape_of(d);
    const int64_t dx_rows = s.planes * d.in_height;
    if (d.in_height * d.in_width > std::numeric_limits<int32_t>::max()) {
      launch_pool(*op, "max_pool2d_backward", d, dx_rows, d.in_width, a->x, a->dy, a->dx);
      return;
    }
    if (d.stride_h >= d.window_h && d.stride_w >= d.window_w) {
      launch_pool(*op, "max_pool2d_backward_disjoint", d, s.planes * s.out_h, s.out_w, a->x, a->dy,
                  a->dx);
      return;
    }
    if (runs_on_host(*op)) {
      launch_pool(*op, "max_pool2d_backward_scatter", d, s.planes, d.in_height * d.in_width, a->x,
                  a->dy, a->dx);
      return;
    }
    const int64_t outputs = s.planes * s.out_h * s.out_w;
    Scratch scratch = scratch_for(*op, static_cast<size_t>(outputs) * sizeof(int32_t));
    int32_t* argmax = scratch.as<int32_t>();
    const int32_t* argmax_in = argmax;
    launch_pool(*op, "max_pool2d_argmax", d, s.planes * s.out_h, s.out_w, a->x, argmax);
    launch_pool(*op, "max_pool2d_backward_gather", d, dx_rows, d.in_width, argmax_in, a->dy, a->dx);
  });
}

}  // namespace porta::portable_ops
