// Shared by the portable op plugin's host files: the kernel library of each device, and launches.
#pragma once

#include <porta/porta.hpp>
#include <porta/porta_ops.h>
#include <porta/porta_plugin.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "plugin_kit.h"

namespace porta::portable_ops {

// The kernel of that name in the kernel library built for the stream's device, loaded on first
// use and kept until the plugin shuts down. Throws porta::error.
porta::kernel kernel_for(porta_stream_t stream, const char* name);

// The stream's device's properties (cached). Throws porta::error.
const porta_device_properties_t& properties_of(porta_stream_t stream);

// Queues kernel `name` on stream. Argument types must be exactly the kernel's parameter types.
template <class... Args>
void launch(porta_stream_t stream, const char* name, dim3 grid, dim3 group, uint32_t shared_bytes,
            const Args&... args) {
  kernel_for(stream, name).launch(porta::stream::wrap(stream, false),
                                  launch_config(grid, group, shared_bytes), args...);
}

// One-dimensional launch covering count items, 256 per group, wrapping the grid into y when it
// exceeds the x limit. Kernels recover the index with porta_ops_kernels.h's linear_index().
template <class... Args>
void launch_elementwise(porta_stream_t stream, const char* name, int64_t count,
                        const Args&... args) {
  constexpr uint32_t kGroup = 256;
  const int64_t groups = (count + kGroup - 1) / kGroup;
  const uint32_t x = static_cast<uint32_t>(groups < 65535 ? groups : 65535);
  const uint32_t y = static_cast<uint32_t>((groups + x - 1) / x);
  launch(stream, name, dim3(x, y), dim3(kGroup), 0, count, args...);
}

// True when the stream's device is the host (the CPU backend, unless its PORTA_CPU_MODE runs the
// SIMT builds, which are launched as on a GPU). Kernels built for it walk rows
// with vector lanes (porta_ops::kLanes) in one work-item rather than with many work-items, so
// row ops launch one item per row there.
bool runs_on_host(porta_stream_t stream);

// A grid of `groups` work-groups, wrapped into y past 65535 (the portable limit of x); kernels
// recover the group's number with porta_ops::group_index() and skip the surplus.
inline dim3 wrapped_grid(int64_t groups) {
  const uint32_t x = static_cast<uint32_t>(groups < 65535 ? groups : 65535);
  return dim3(x, static_cast<uint32_t>((groups + x - 1) / x));
}

// The most work-items a group of kernel `name` may have on the stream's device, as a power of
// two, at most porta_ops::kMaxItems (1024): the size of the kernels' per-item arrays in shared
// memory. The kernel's own limit (porta_kernel_max_group_size: its registers, its declared
// PORTA_KERNEL_MAX_GROUP) may be below the device's.
uint32_t max_group_items(porta_stream_t stream, const char* name);

// The launch of row kernel `name`: `rows` rows of `length` elements, group x = work-items per row
// (a power of two), group y = rows per group, the grid wrapped (see kernels/softmax_kernels.cpp). On the
// CPU one item per row, whose vector lanes walk it, and rows of about 8K elements per group (a
// pool thread's unit of work) while every thread still gets several groups. On a GPU about
// `per_item` elements per item, at most max_items (and max_group_items()) items per row, and
// short rows stacked up to 256 items per group. Never more than max_group_items() in all.
struct RowLaunch {
  dim3 grid;
  dim3 group;
};
RowLaunch row_launch(porta_stream_t stream, const char* name, int64_t rows, int64_t length,
                     int64_t per_item = 8, int64_t max_items = 1024);

// A device buffer an op may use between its own kernels, e.g. partial results on their way to a
// deterministic reduction. Each stream has its own, so ops queued on different streams never
// share one (nor wait for each other); within a stream, work runs in order. Holding a Scratch
// holds its stream's scratch lock: queue the work that uses it, then let it go. It grows when
// asked for more (the old buffer is freed once the device is idle) and lives until the plugin
// shuts down. Throws porta::error.
struct ScratchSlot;
class Scratch {
 public:
  Scratch(std::shared_ptr<ScratchSlot> slot, std::unique_lock<std::mutex> lock, void* data)
      : slot_(std::move(slot)), lock_(std::move(lock)), data_(data) {}
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }

 private:
  std::shared_ptr<ScratchSlot> slot_;  // outlives lock_, which locks a mutex of the slot
  std::unique_lock<std::mutex> lock_;
  void* data_;
};
Scratch scratch_for(porta_stream_t stream, size_t bytes);

// Slots run their bodies through guarded (plugin_kit.h): a porta::error keeps its status (its
// message is already the thread's last error, set by the failing call, and is passed on after the
// op's name), anything else becomes a status and a message: nothing throws across the plugin ABI.
using plugin::guarded;

// The slots, one file per family; arguments as in porta_plugin.h's porta_ops_interface_t.
// gemm.cpp
porta_status_t gemm(void*, porta_stream_t, const porta_gemm_desc_t*, const void* a,
                    const void* b, float* c);
// conv.cpp
porta_status_t conv2d_forward(void*, porta_stream_t, const porta_conv2d_desc_t*, const void* x,
                              const void* w, float* y);
porta_status_t conv2d_backward_data(void*, porta_stream_t, const porta_conv2d_desc_t*,
                                    const void* dy, const void* w, float* dx);
porta_status_t conv2d_backward_weights(void*, porta_stream_t, const porta_conv2d_desc_t*,
                                       const void* x, const void* dy, float* dw);
// softmax.cpp
porta_status_t softmax_forward(void*, porta_stream_t, porta_softmax_mode_t, int64_t rows,
                               int64_t cols, const float* x, float* y);
porta_status_t softmax_backward(void*, porta_stream_t, porta_softmax_mode_t, int64_t rows,
                                int64_t cols, const float* y, const float* dy, float* dx);
porta_status_t cross_entropy(void*, porta_stream_t, int64_t rows, int64_t cols,
                             const float* logits, const int32_t* labels, float* loss,
                             float* dlogits);
// elementwise.cpp
porta_status_t bias_add(void*, porta_stream_t, int64_t batch, int64_t channels, int64_t spatial,
                        const float* x, const float* bias, float* y);
porta_status_t bias_backward(void*, porta_stream_t, int64_t batch, int64_t channels,
                             int64_t spatial, const float* dy, float* dbias);
porta_status_t relu_forward(void*, porta_stream_t, int64_t count, const float* x, float* y);
porta_status_t relu_backward(void*, porta_stream_t, int64_t count, const float* x,
                             const float* dy, float* dx);
porta_status_t sgd_update(void*, porta_stream_t, int64_t count, float* weights,
                          const float* grads, float* velocity, float learning_rate,
                          float momentum, float weight_decay);
porta_status_t adam_update(void*, porta_stream_t, int64_t count, float* weights,
                           const float* grads, float* m, float* v,
                           const porta_adam_params_t* params);
porta_status_t convert(void*, porta_stream_t, int64_t count, porta_dtype_t src_dtype,
                       const void* src, porta_dtype_t dst_dtype, void* dst);
// pool.cpp
porta_status_t max_pool2d_forward(void*, porta_stream_t, const porta_pool2d_desc_t*,
                                  const float* x, float* y);
porta_status_t max_pool2d_backward(void*, porta_stream_t, const porta_pool2d_desc_t*,
                                   const float* x, const float* dy, float* dx);

}  // namespace porta::portable_ops
