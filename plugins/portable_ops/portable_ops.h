// Shared by the portable op plugin's host files: the kernel library of each device, and launches.
#pragma once

#include <porta/porta.hpp>
#include <porta/porta_ops.h>
#include <porta/porta_plugin.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "op_plugin.h"
#include "plugin_kit.h"

namespace porta::portable_ops {

// Every helper below takes the op's context (porta_plugin.h): the stream, its device and the
// device's properties as libporta resolved them, so an op asks libporta nothing it already knows.
using Op = porta_op_context_t;

// The kernel of that name in the kernel library built for the op's device, loaded on first use
// and kept until the plugin shuts down. Throws porta::error.
porta::kernel kernel_for(const Op& op, const char* name);
// Whether the op's kernel library has kernel `name` (some are built for one ISA level only).
bool has_kernel(const Op& op, const char* name);

// The plugin's own environment settings: the index in `accepted` of environment variable
// `variable`'s value, 0 (the default) where it is unset or empty. Any other value throws
// (a plugin failure, INVALID_ARGUMENT from the op) naming the accepted ones.
int setting_choice(const char* variable, std::initializer_list<const char*> accepted);

// Queues kernel `name` on the op's stream. Argument types must be exactly the kernel's parameter
// types.
template <class... Args>
void launch(const Op& op, const char* name, dim3 grid, dim3 group, uint32_t shared_bytes,
            const Args&... args) {
  kernel_for(op, name).launch(porta::stream::wrap(op.stream, false),
                              launch_config(grid, group, shared_bytes), args...);
}

// True when the op's device is the host (the CPU backend, unless its PORTA_CPU_MODE runs the
// SIMT builds, which are launched as on a GPU). Kernels built for it walk rows
// with vector lanes (porta_ops::kLanes) in one work-item rather than with many work-items, so
// row ops launch one item per row there.
bool runs_on_host(const Op& op);

// On the host, an elementwise pass over up to this many elements is one group: waking a second
// thread costs more than it saves there (Adam on 18432 elements, ReLU on 100352, the bias
// gradient of 64 x 128: 7 us for two groups, 1 us for one).
inline constexpr int64_t kHostOneGroupElements = int64_t{1} << 17;

// One-dimensional launch covering count items, 256 per group, wrapping the grid into y when it
// exceeds the x limit; kernels walk it with porta_ops::for_each_index(). On a GPU an item takes
// one element; on the host a group takes about 8K elements (32 passes of its items), so that
// the cost of starting a group stays small against its work, and up to kHostOneGroupElements
// are one group.
template <class... Args>
void launch_elementwise(const Op& op, const char* name, int64_t count, const Args&... args) {
  constexpr uint32_t kGroup = 256;
  const bool host = runs_on_host(op);
  const int64_t per_group = host ? 32 * kGroup : kGroup;
  const int64_t groups = host && count <= kHostOneGroupElements
                             ? 1
                             : std::max<int64_t>(1, (count + per_group - 1) / per_group);
  const uint32_t x = static_cast<uint32_t>(groups < 65535 ? groups : 65535);
  const uint32_t y = static_cast<uint32_t>((groups + x - 1) / x);
  launch(op, name, dim3(x, y), dim3(kGroup), 0, count, args...);
}

// A grid of `groups` work-groups, wrapped into y past 65535 (the portable limit of x); kernels
// recover the group's number with porta_ops::group_index() and skip the surplus.
inline dim3 wrapped_grid(int64_t groups) {
  const uint32_t x = static_cast<uint32_t>(groups < 65535 ? groups : 65535);
  return dim3(x, static_cast<uint32_t>((groups + x - 1) / x));
}

// The most work-items a group of kernel `name` may have on the op's device, as a power of
// two, at most porta_ops::kMaxItems (1024): the size of the kernels' per-item arrays in shared
// memory. The kernel's own limit (porta_kernel_max_group_size: its registers, its declared
// PORTA_KERNEL_MAX_GROUP) may be below the device's; it is asked once per kernel.
uint32_t max_group_items(const Op& op, const char* name);

// The launch of row kernel `name`: `rows` rows of `length` elements, group x = work-items per row
// (a power of two), group y = rows per group, the grid wrapped (see kernels/softmax_kernels.cpp). On the
// CPU one item per row, whose vector lanes walk it, and rows of about 8K elements per group (a
// pool thread's unit of work) while every thread still gets several groups; up to
// kHostOneGroupElements in all, one group. On a GPU about
// `per_item` elements per item, at most max_items (and max_group_items()) items per row, and
// short rows stacked up to 256 items per group. Never more than max_group_items() in all.
struct RowLaunch {
  dim3 grid;
  dim3 group;
};
RowLaunch row_launch(const Op& op, const char* name, int64_t rows, int64_t length,
                     int64_t per_item = 8, int64_t max_items = 1024);

// A device buffer an op may use between its own kernels, e.g. partial results on their way to a
// deterministic reduction. Each stream has its own (in the stream's storage, see porta_plugin.h),
// so ops queued on different streams never share one (nor wait for each other); within a stream,
// work runs in order. Holding a Scratch holds its stream's scratch lock: queue the work that uses
// it, then let it go. It grows when asked for more (the old buffer is freed once the device is
// idle) and is freed when its stream is destroyed. Throws porta::error.
struct StreamScratch;
class Scratch {
 public:
  Scratch(std::unique_lock<std::mutex> lock, void* data) : lock_(std::move(lock)), data_(data) {}
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }

 private:
  std::unique_lock<std::mutex> lock_;  // of the stream's StreamScratch, which outlives the op
  void* data_;
};
Scratch scratch_for(const Op& op, size_t bytes);

// Slots run their bodies through guarded (plugin_kit.h): a porta::error keeps its status (its
// message is already the thread's last error, set by the failing call, and is passed on after the
// op's name), anything else becomes a status and a message: nothing throws across the plugin ABI.
using plugin::guarded;

// The plugin's slots (plugin_kit/op_plugin.h makes its interface of them): the ops, one file per
// family, each named after its row of porta_op_table.h, and the plugin's own (ops_plugin.cpp).
struct Ops {
  static porta_status_t initialize(void** out_state);
  static void shutdown(void* state);
  static porta_status_t supports_backend(void* state, const char* backend);
  static porta_status_t supports_device(void* state, const porta_device_properties_t* device);
  static void release_stream_storage(void* state, void* storage, int32_t shutting_down);
#define PORTA_PORTABLE_OP_(name, fields) \
  static porta_status_t name(const Op* op, const porta_##name##_args_t* args);
  PORTA_OP_TABLE(PORTA_PORTABLE_OP_)  // gemm.cpp, conv.cpp, softmax.cpp, elementwise.cpp, pool.cpp
#undef PORTA_PORTABLE_OP_
};

}  // namespace porta::portable_ops
