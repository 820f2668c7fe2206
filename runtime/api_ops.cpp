// The operator set's front door: every argument of every op is checked here, once for all
// implementations, then the call goes to the op plugin that serves the stream's device.
#include <porta/porta_ops.h>

#include <cmath>
#include <cstring>
#include <initializer_list>

#include "plugin_kit/checked.h"
#include "runtime.h"

using namespace porta;

namespace {

// An op call being checked: where it runs and who implements it.
struct OpCall {
  const char* function;
  porta_stream_t stream = nullptr;  // never NULL once resolved
  Device* device = nullptr;
  OpsPlugin* ops = nullptr;
};

#define PORTA_CHECK(expression)                                         \
  do {                                                                  \
    if (porta_status_t status_ = (expression); status_ != PORTA_SUCCESS) \
      return status_;                                                   \
  } while (false)

porta_status_t resolve(Runtime& runtime, OpCall& call, porta_stream_t handle) {
  std::shared_ptr<Stream> stream;
  PORTA_CHECK(porta::resolve(runtime, call.function, handle, stream));
  call.device = stream->device;
  call.stream = handle ? handle : call.device->default_stream;
  call.ops = call.device->ops;
  if (!call.ops) {
    return fail(call.device->ops_missing_status, "{}: no op implementation for device {}: {}",
                call.function, call.device->id, call.device->ops_missing);
  }
  return PORTA_SUCCESS;
}

porta_status_t positive(const OpCall& call, const char* name, int64_t value) {
  if (value >= 1) return PORTA_SUCCESS;
  return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is {}; it must be at least 1", call.function,
              name, value);
}

porta_status_t non_negative(const OpCall& call, const char* name, int64_t value) {
  if (value >= 0) return PORTA_SUCCESS;
  return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is {}; it must not be negative",
              call.function, name, value);
}

porta_status_t finite(const OpCall& call, const char* name, float value) {
  if (std::isfinite(value)) return PORTA_SUCCESS;
  return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is {}; it must be finite", call.function,
              name, value);
}

// The product of sizes, refusing one that overflows.
porta_status_t product(const OpCall& call, const char* what, std::initializer_list<int64_t> sizes,
                       int64_t& out) {
  Checked<int64_t> total = 1;
  for (int64_t size : sizes) total = total * size;
  if (!total.valid()) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: the size of {} overflows", call.function, what);
  }
  out = total.value();
  return PORTA_SUCCESS;
}

// An enum argument as the integer the caller passed: a C caller may pass any value, and loading
// an out-of-range value through the C++ enum type is undefined, so it is only ever read as bytes.
template <typename Enum>
int32_t raw(const Enum& value) {
  static_assert(sizeof(Enum) == sizeof(int32_t));
  int32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

size_t dtype_size(porta_dtype_t dtype) { return dtype == PORTA_DTYPE_F32 ? 4 : 2; }

porta_status_t known_dtype(const OpCall& call, const char* name, const porta_dtype_t& dtype) {
  const int32_t value = raw(dtype);
  if (value == PORTA_DTYPE_F32 || value == PORTA_DTYPE_F16 || value == PORTA_DTYPE_BF16) {
    return PORTA_SUCCESS;
  }
  return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} {} is not one of f32 (0), f16 (1), bf16 (2)",
              call.function, name, value);
}

porta_status_t known_dtype(const OpCall& call, const porta_dtype_t& dtype) {
  return known_dtype(call, "dtype", dtype);
}

// A buffer holding elements of element_size bytes: device memory of the stream's device, with
// room for them from ptr on.
porta_status_t buffer(Runtime& runtime, const OpCall& call, const char* name, const void* ptr,
                      int64_t elements, size_t element_size) {
  if (!ptr) return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is NULL", call.function, name);
  Allocation allocation;
  if (!runtime.find_allocation(ptr, allocation) || allocation.kind != PORTA_MEMORY_DEVICE) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: {} ({}) is not device memory from porta_memory_alloc", call.function, name,
                ptr);
  }
  if (allocation.device != call.device) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: {} is memory of device {} but the stream belongs to device {}",
                call.function, name, allocation.device->id, call.device->id);
  }
  return check_room(call.function, name, ptr, static_cast<uint64_t>(elements), element_size,
                    allocation);
}

// An output must not share memory with an input, unless it is the very same buffer and the op
// allows that (in place).
porta_status_t apart(const OpCall& call, const char* out_name, const void* out, int64_t out_bytes,
                     const char* in_name, const void* in, int64_t in_bytes, bool in_place_ok) {
  if (!out || !in) return PORTA_SUCCESS;
  if (out == in && in_place_ok) return PORTA_SUCCESS;
  const auto o = reinterpret_cast<uintptr_t>(out);
  const auto i = reinterpret_cast<uintptr_t>(in);
  if (o < i + static_cast<uint64_t>(in_bytes) && i < o + static_cast<uint64_t>(out_bytes)) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} overlaps {}{}", call.function, out_name,
                in_name, in_place_ok ? " (only exactly the same buffer is allowed)" : "");
  }
  return PORTA_SUCCESS;
}

porta_status_t descriptor(const OpCall& call, const void* desc, size_t struct_size,
                          size_t expected) {
  if (!desc || struct_size < expected) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: the descriptor is NULL or its struct_size is below {}", call.function,
                expected);
  }
  return PORTA_SUCCESS;
}

// Checks under the runtime's lock, then runs the op plugin's slot outside it: the plugin calls
// the public API itself.
template <typename Check, typename Slot, typename... Args>
porta_status_t op(const char* function, porta_stream_t stream, Check&& check, Slot slot,
                  const Args&... args) {  // by reference: nothing is read before it is checked
  OpCall call{function};
  porta_status_t status = with_runtime(function, [&](Runtime& runtime) -> porta_status_t {
    PORTA_CHECK(resolve(runtime, call, stream));
    return check(runtime, call);
  });
  if (status != PORTA_SUCCESS) return status;
  // An op the vendor plugin leaves out runs on the portable plugin (see porta_ops.h).
  const OpsPlugin* plugin = call.ops;
  auto implementation = plugin->interface.*slot;
  if (!implementation && call.device->fallback_ops) {
    plugin = call.device->fallback_ops;
    implementation = plugin->interface.*slot;
  }
  if (!implementation) {
    return fail(PORTA_ERROR_UNSUPPORTED, "{}: the {} op plugin does not implement it{}{}",
                function, call.ops->name,
                call.device->fallback_missing.empty() ? "" : ", and no fallback: ",
                call.device->fallback_missing);
  }
  return guarded(function, [&]() -> porta_status_t {
    take_plugin_message();
    PluginCall scope;  // the plugin's scratch is its own, not the application's
    status = implementation(plugin->context, call.stream, args...);
    if (status < 0) {
      std::string detail = take_plugin_message();
      fail(status, "{}", detail.empty() ? fmt::format("{}: {} op plugin: {}", function,
                                                      plugin->name, porta_status_name(status))
                                        : detail);
    }
    return status;
  });
}

// ---- shapes ---------------------------------------------------------------------------------

// Elements a row-major matrix of rows x cols with leading dimension ld spans, over batch matrices
// stride apart.
porta_status_t matrix_span(const OpCall& call, const char* name, int64_t rows, int64_t cols,
                           int64_t ld, int64_t batch, int64_t stride, int64_t& out) {
  if (ld < cols) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: ld{} is {} but the stored matrix has {} columns",
                call.function, name, ld, cols);
  }
  PORTA_CHECK(non_negative(call, fmt::format("stride_{}", name).c_str(), stride));
  const Checked<int64_t> span = (Checked(rows) - 1) * ld + cols + (Checked(batch) - 1) * stride;
  if (!span.valid()) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: the size of {} overflows", call.function, name);
  }
  out = span.value();
  return PORTA_SUCCESS;
}

porta_status_t check_gemm(Runtime& runtime, const OpCall& call, const porta_gemm_desc_t* d,
                          const void* a, const void* b, const float* c) {
  PORTA_CHECK(descriptor(call, d, d ? d->struct_size : 0, sizeof(porta_gemm_desc_t)));
  for (auto [name, value] : {std::pair{"trans_a", raw(d->trans_a)}, {"trans_b", raw(d->trans_b)}}) {
    if (value != PORTA_NO_TRANSPOSE && value != PORTA_TRANSPOSE) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is {}; accepted: 0 or 1", call.function,
                  name, value);
    }
  }
  PORTA_CHECK(known_dtype(call, d->dtype));
  PORTA_CHECK(positive(call, "m", d->m));
  PORTA_CHECK(positive(call, "n", d->n));
  PORTA_CHECK(positive(call, "k", d->k));
  PORTA_CHECK(positive(call, "batch_count", d->batch_count));
  const bool ta = d->trans_a == PORTA_TRANSPOSE, tb = d->trans_b == PORTA_TRANSPOSE;
  int64_t span_a, span_b, span_c;
  PORTA_CHECK(matrix_span(call, "a", ta ? d->k : d->m, ta ? d->m : d->k, d->lda, d->batch_count,
                          d->stride_a, span_a));
  PORTA_CHECK(matrix_span(call, "b", tb ? d->n : d->k, tb ? d->k : d->n, d->ldb, d->batch_count,
                          d->stride_b, span_b));
  PORTA_CHECK(matrix_span(call, "c", d->m, d->n, d->ldc, d->batch_count, d->stride_c, span_c));
  const int64_t c_matrix = (d->m - 1) * d->ldc + d->n;  // a part of span_c: no overflow
  if (d->batch_count > 1 && d->stride_c < c_matrix) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: stride_c {} makes the batch's C matrices overlap (each spans {} elements)",
                call.function, d->stride_c, c_matrix);
  }
  const size_t in = dtype_size(d->dtype);
  PORTA_CHECK(buffer(runtime, call, "a", a, span_a, in));
  PORTA_CHECK(buffer(runtime, call, "b", b, span_b, in));
  PORTA_CHECK(buffer(runtime, call, "c", c, span_c, sizeof(float)));
  PORTA_CHECK(apart(call, "c", c, span_c * 4, "a", a, span_a * int64_t(in), false));
  return apart(call, "c", c, span_c * 4, "b", b, span_b * int64_t(in), false);
}

// One axis of a sliding window: its values and the descriptor fields they come from, for messages.
struct Axis {
  const char* window_kind;  // "kernel" or "window"
  const char* in_name;
  int64_t in;
  const char* pad_name;
  int64_t pad;
  const char* window_name;
  int64_t window;
  const char* dilation_name;  // "" where there is no dilation (pooling): it is 1
  int64_t dilation;
  int64_t stride;
};

// The output length of a window sliding over an axis: (in + 2 pad - extent) / stride + 1, where
// extent = dilation (window - 1) + 1. Every step is checked, so that no descriptor's values wrap
// around into a plausible shape.
porta_status_t slide(const OpCall& call, const Axis& a, int64_t& out) {
  const Checked<int64_t> padded = Checked(a.in) + Checked(a.pad) * 2;
  if (!padded.valid()) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} {} + 2 x {} {} overflows", call.function,
                a.in_name, a.in, a.pad_name, a.pad);
  }
  const Checked<int64_t> extent = Checked(a.dilation) * (Checked(a.window) - 1) + 1;
  if (!extent.valid()) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: the {}'s extent {} {} x ({} {} - 1) + 1 overflows", call.function,
                a.window_kind, a.dilation_name, a.dilation, a.window_name, a.window);
  }
  if (padded.value() < extent.value()) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: the {}'s extent {} ({} {}{}{}) does not fit {} {} padded by {} {} on each "
                "side",
                call.function, a.window_kind, extent.value(), a.window_name, a.window,
                *a.dilation_name ? ", " : "",
                *a.dilation_name ? fmt::format("{} {}", a.dilation_name, a.dilation) : "",
                a.in_name, a.in, a.pad_name, a.pad);
  }
  out = (padded.value() - extent.value()) / a.stride + 1;  // stride >= 1: no overflow
  return PORTA_SUCCESS;
}

porta_status_t conv_shape(const OpCall& call, const porta_conv2d_desc_t* d, int64_t& p,
                          int64_t& q) {
  PORTA_CHECK(descriptor(call, d, d ? d->struct_size : 0, sizeof(porta_conv2d_desc_t)));
  PORTA_CHECK(known_dtype(call, d->dtype));
  for (auto [name, value] :
       {std::pair{"batch", d->batch}, {"in_channels", d->in_channels}, {"in_height", d->in_height},
        {"in_width", d->in_width}, {"out_channels", d->out_channels},
        {"kernel_height", d->kernel_height}, {"kernel_width", d->kernel_width},
        {"stride_h", d->stride_h}, {"stride_w", d->stride_w}, {"dilation_h", d->dilation_h},
        {"dilation_w", d->dilation_w}}) {
    PORTA_CHECK(positive(call, name, value));
  }
  PORTA_CHECK(non_negative(call, "pad_h", d->pad_h));
  PORTA_CHECK(non_negative(call, "pad_w", d->pad_w));
  PORTA_CHECK(slide(call,
                    {"kernel", "in_height", d->in_height, "pad_h", d->pad_h, "kernel_height",
                     d->kernel_height, "dilation_h", d->dilation_h, d->stride_h},
                    p));
  return slide(call,
               {"kernel", "in_width", d->in_width, "pad_w", d->pad_w, "kernel_width",
                d->kernel_width, "dilation_w", d->dilation_w, d->stride_w},
               q);
}

// The element counts of a convolution's x, w and y.
struct ConvSizes {
  int64_t x, w, y;
};

porta_status_t conv_sizes(const OpCall& call, const porta_conv2d_desc_t* d, ConvSizes& out) {
  int64_t p, q;
  PORTA_CHECK(conv_shape(call, d, p, q));
  PORTA_CHECK(product(call, "x", {d->batch, d->in_channels, d->in_height, d->in_width}, out.x));
  PORTA_CHECK(product(call, "w", {d->out_channels, d->in_channels, d->kernel_height,
                                  d->kernel_width}, out.w));
  return product(call, "y", {d->batch, d->out_channels, p, q}, out.y);
}

// A convolution's inputs and output: (first, second) -> out, with their element counts.
porta_status_t check_conv(Runtime& runtime, const OpCall& call, const porta_conv2d_desc_t* d,
                          const char* first_name, const void* first, int64_t ConvSizes::*first_size,
                          const char* second_name, const void* second,
                          int64_t ConvSizes::*second_size, const char* out_name, const float* out,
                          int64_t ConvSizes::*out_size) {
  ConvSizes sizes;
  PORTA_CHECK(conv_sizes(call, d, sizes));
  const size_t in = dtype_size(d->dtype);
  PORTA_CHECK(buffer(runtime, call, first_name, first, sizes.*first_size, in));
  PORTA_CHECK(buffer(runtime, call, second_name, second, sizes.*second_size, in));
  PORTA_CHECK(buffer(runtime, call, out_name, out, sizes.*out_size, sizeof(float)));
  const int64_t out_bytes = sizes.*out_size * 4;
  PORTA_CHECK(apart(call, out_name, out, out_bytes, first_name, first,
                    sizes.*first_size * int64_t(in), false));
  return apart(call, out_name, out, out_bytes, second_name, second,
               sizes.*second_size * int64_t(in), false);
}

porta_status_t pool_shape(const OpCall& call, const porta_pool2d_desc_t* d, int64_t& p,
                          int64_t& q) {
  PORTA_CHECK(descriptor(call, d, d ? d->struct_size : 0, sizeof(porta_pool2d_desc_t)));
  for (auto [name, value] :
       {std::pair{"batch", d->batch}, {"channels", d->channels}, {"in_height", d->in_height},
        {"in_width", d->in_width}, {"window_h", d->window_h}, {"window_w", d->window_w},
        {"stride_h", d->stride_h}, {"stride_w", d->stride_w}}) {
    PORTA_CHECK(positive(call, name, value));
  }
  PORTA_CHECK(non_negative(call, "pad_h", d->pad_h));
  PORTA_CHECK(non_negative(call, "pad_w", d->pad_w));
  if (d->pad_h >= d->window_h || d->pad_w >= d->window_w) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: padding {}x{} must be smaller than the {}x{} window", call.function, d->pad_h,
                d->pad_w, d->window_h, d->window_w);
  }
  PORTA_CHECK(slide(call,
                    {"window", "in_height", d->in_height, "pad_h", d->pad_h, "window_h",
                     d->window_h, "", 1, d->stride_h},
                    p));
  return slide(call,
               {"window", "in_width", d->in_width, "pad_w", d->pad_w, "window_w", d->window_w, "",
                1, d->stride_w},
               q);
}

porta_status_t pool_sizes(const OpCall& call, const porta_pool2d_desc_t* d, int64_t& x,
                          int64_t& y) {
  int64_t p, q;
  PORTA_CHECK(pool_shape(call, d, p, q));
  PORTA_CHECK(product(call, "x", {d->batch, d->channels, d->in_height, d->in_width}, x));
  return product(call, "y", {d->batch, d->channels, p, q}, y);
}

porta_status_t softmax_mode(const OpCall& call, const porta_softmax_mode_t& mode) {
  const int32_t value = raw(mode);
  if (value == PORTA_SOFTMAX || value == PORTA_LOG_SOFTMAX) return PORTA_SUCCESS;
  return fail(PORTA_ERROR_INVALID_ARGUMENT,
              "{}: mode {} is not PORTA_SOFTMAX (0) or PORTA_LOG_SOFTMAX (1)", call.function,
              value);
}

porta_status_t rows_cols(const OpCall& call, int64_t rows, int64_t cols, int64_t& count) {
  PORTA_CHECK(positive(call, "rows", rows));
  PORTA_CHECK(positive(call, "cols", cols));
  return product(call, "rows x cols", {rows, cols}, count);
}

// A batch x channels x spatial tensor's element count, each size at least 1.
porta_status_t channel_shape(const OpCall& call, const char* name, int64_t batch,
                             int64_t channels, int64_t spatial, int64_t& count) {
  PORTA_CHECK(positive(call, "batch", batch));
  PORTA_CHECK(positive(call, "channels", channels));
  PORTA_CHECK(positive(call, "spatial", spatial));
  // In bytes too: the overlap checks compute them before the buffers' own checks.
  int64_t bytes;
  PORTA_CHECK(product(call, name, {batch, channels, spatial, int64_t{sizeof(float)}}, bytes));
  return product(call, name, {batch, channels, spatial}, count);
}

// Several same-sized fp32 tensors; the first `outputs` are written.
porta_status_t tensors(Runtime& runtime, const OpCall& call, int64_t count,
                       std::initializer_list<std::pair<const char*, const float*>> inputs,
                       std::initializer_list<std::pair<const char*, const float*>> outputs,
                       bool in_place_ok) {
  for (auto [name, ptr] : inputs) PORTA_CHECK(buffer(runtime, call, name, ptr, count, 4));
  for (auto [name, ptr] : outputs) PORTA_CHECK(buffer(runtime, call, name, ptr, count, 4));
  for (auto [out_name, out] : outputs) {
    for (auto [in_name, in] : inputs) {
      PORTA_CHECK(apart(call, out_name, out, count * 4, in_name, in, count * 4, in_place_ok));
    }
  }
  return PORTA_SUCCESS;
}

// The output height and width a sliding-window descriptor gives, without a stream or device.
template <typename Desc>
porta_status_t output_size(const char* function,
                           porta_status_t (*shape)(const OpCall&, const Desc*, int64_t&, int64_t&),
                           const Desc* desc, int64_t* out_height, int64_t* out_width) {
  return guarded(function, [&]() -> porta_status_t {
    OpCall call{function};
    int64_t p, q;
    PORTA_CHECK(shape(call, desc, p, q));
    if (!out_height || !out_width) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: out_height and out_width must not be NULL",
                  function);
    }
    *out_height = p;
    *out_width = q;
    return PORTA_SUCCESS;
  });
}

}  // namespace

// ---- GEMM and convolution ---------------------------------------------------------------------

extern "C" PORTA_API porta_status_t porta_gemm(porta_stream_t stream, const porta_gemm_desc_t* desc,
                                               const void* a, const void* b, float* c) {
  return op(
      "porta_gemm", stream,
      [&](Runtime& runtime, const OpCall& call) { return check_gemm(runtime, call, desc, a, b, c); },
      &porta_ops_interface_t::gemm, desc, a, b, c);
}

extern "C" PORTA_API porta_status_t porta_conv2d_output_size(const porta_conv2d_desc_t* desc,
                                                             int64_t* out_height,
                                                             int64_t* out_width) {
  return output_size("porta_conv2d_output_size", conv_shape, desc, out_height, out_width);
}

extern "C" PORTA_API porta_status_t porta_conv2d_forward(porta_stream_t stream,
                                                         const porta_conv2d_desc_t* desc,
                                                         const void* x, const void* w, float* y) {
  return op(
      "porta_conv2d_forward", stream,
      [&](Runtime& runtime, const OpCall& call) {
        return check_conv(runtime, call, desc, "x", x, &ConvSizes::x, "w", w, &ConvSizes::w, "y",
                          y, &ConvSizes::y);
      },
      &porta_ops_interface_t::conv2d_forward, desc, x, w, y);
}

extern "C" PORTA_API porta_status_t porta_conv2d_backward_data(porta_stream_t stream,
                                                               const porta_conv2d_desc_t* desc,
                                                               const void* dy, const void* w,
                                                               float* dx) {
  return op(
      "porta_conv2d_backward_data", stream,
      [&](Runtime& runtime, const OpCall& call) {
        return check_conv(runtime, call, desc, "dy", dy, &ConvSizes::y, "w", w, &ConvSizes::w,
                          "dx", dx, &ConvSizes::x);
      },
      &porta_ops_interface_t::conv2d_backward_data, desc, dy, w, dx);
}

extern "C" PORTA_API porta_status_t porta_conv2d_backward_weights(porta_stream_t stream,
                                                                  const porta_conv2d_desc_t* desc,
                                                                  const void* x, const void* dy,
                                                                  float* dw) {
  return op(
      "porta_conv2d_backward_weights", stream,
      [&](Runtime& runtime, const OpCall& call) {
        return check_conv(runtime, call, desc, "x", x, &ConvSizes::x, "dy", dy, &ConvSizes::y,
                          "dw", dw, &ConvSizes::w);
      },
      &porta_ops_interface_t::conv2d_backward_weights, desc, x, dy, dw);
}

// ---- dtype conversion -------------------------------------------------------------------------

extern "C" PORTA_API porta_status_t porta_convert(porta_stream_t stream, int64_t count,
                                                  porta_dtype_t src_dtype, const void* src,
                                                  porta_dtype_t dst_dtype, void* dst) {
  return op(
      "porta_convert", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        PORTA_CHECK(positive(call, "count", count));
        PORTA_CHECK(known_dtype(call, "src_dtype", src_dtype));
        PORTA_CHECK(known_dtype(call, "dst_dtype", dst_dtype));
        const size_t in = dtype_size(src_dtype), out = dtype_size(dst_dtype);
        PORTA_CHECK(buffer(runtime, call, "src", src, count, in));
        PORTA_CHECK(buffer(runtime, call, "dst", dst, count, out));
        // In place only element for element: with different sizes, one item's write would land
        // on another's input.
        return apart(call, "dst", dst, count * int64_t(out), "src", src, count * int64_t(in),
                     in == out);
      },
      &porta_ops_interface_t::convert, count, src_dtype, src, dst_dtype, dst);
}

// ---- softmax and cross-entropy ----------------------------------------------------------------

extern "C" PORTA_API porta_status_t porta_softmax_forward(porta_stream_t stream,
                                                          porta_softmax_mode_t mode, int64_t rows,
                                                          int64_t cols, const float* x, float* y) {
  return op(
      "porta_softmax_forward", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        int64_t count;
        PORTA_CHECK(softmax_mode(call, mode));
        PORTA_CHECK(rows_cols(call, rows, cols, count));
        return tensors(runtime, call, count, {{"x", x}}, {{"y", y}}, true);
      },
      &porta_ops_interface_t::softmax_forward, mode, rows, cols, x, y);
}

extern "C" PORTA_API porta_status_t porta_softmax_backward(porta_stream_t stream,
                                                           porta_softmax_mode_t mode, int64_t rows,
                                                           int64_t cols, const float* y,
                                                           const float* dy, float* dx) {
  return op(
      "porta_softmax_backward", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        int64_t count;
        PORTA_CHECK(softmax_mode(call, mode));
        PORTA_CHECK(rows_cols(call, rows, cols, count));
        PORTA_CHECK(tensors(runtime, call, count, {{"y", y}}, {{"dx", dx}}, false));
        return tensors(runtime, call, count, {{"dy", dy}}, {{"dx", dx}}, true);
      },
      &porta_ops_interface_t::softmax_backward, mode, rows, cols, y, dy, dx);
}

extern "C" PORTA_API porta_status_t porta_cross_entropy(porta_stream_t stream, int64_t rows,
                                                        int64_t cols, const float* logits,
                                                        const int32_t* labels, float* loss,
                                                        float* dlogits) {
  return op(
      "porta_cross_entropy", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        int64_t count;
        PORTA_CHECK(rows_cols(call, rows, cols, count));
        PORTA_CHECK(buffer(runtime, call, "labels", labels, rows, sizeof(int32_t)));
        PORTA_CHECK(tensors(runtime, call, 1, {}, {{"loss", loss}}, false));
        // The sizes first: once logits (and dlogits) hold count floats, count * 4 cannot overflow.
        PORTA_CHECK(buffer(runtime, call, "logits", logits, count, sizeof(float)));
        if (dlogits) PORTA_CHECK(buffer(runtime, call, "dlogits", dlogits, count, sizeof(float)));
        PORTA_CHECK(apart(call, "loss", loss, 4, "logits", logits, count * 4, false));
        PORTA_CHECK(apart(call, "loss", loss, 4, "labels", labels, rows * 4, false));
        if (!dlogits) return tensors(runtime, call, count, {{"logits", logits}}, {}, false);
        PORTA_CHECK(apart(call, "loss", loss, 4, "dlogits", dlogits, count * 4, false));
        PORTA_CHECK(apart(call, "dlogits", dlogits, count * 4, "labels", labels, rows * 4, false));
        return tensors(runtime, call, count, {{"logits", logits}}, {{"dlogits", dlogits}}, false);
      },
      &porta_ops_interface_t::cross_entropy, rows, cols, logits, labels, loss, dlogits);
}

// ---- bias, ReLU, pooling ----------------------------------------------------------------------

extern "C" PORTA_API porta_status_t porta_bias_add(porta_stream_t stream, int64_t batch,
                                                   int64_t channels, int64_t spatial,
                                                   const float* x, const float* bias, float* y) {
  return op(
      "porta_bias_add", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        int64_t count;
        PORTA_CHECK(channel_shape(call, "x", batch, channels, spatial, count));
        PORTA_CHECK(buffer(runtime, call, "bias", bias, channels, 4));
        PORTA_CHECK(apart(call, "y", y, count * 4, "bias", bias, channels * 4, false));
        return tensors(runtime, call, count, {{"x", x}}, {{"y", y}}, true);
      },
      &porta_ops_interface_t::bias_add, batch, channels, spatial, x, bias, y);
}

extern "C" PORTA_API porta_status_t porta_bias_backward(porta_stream_t stream, int64_t batch,
                                                        int64_t channels, int64_t spatial,
                                                        const float* dy, float* dbias) {
  return op(
      "porta_bias_backward", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        int64_t count;
        PORTA_CHECK(channel_shape(call, "dy", batch, channels, spatial, count));
        PORTA_CHECK(buffer(runtime, call, "dy", dy, count, 4));
        PORTA_CHECK(buffer(runtime, call, "dbias", dbias, channels, 4));
        return apart(call, "dbias", dbias, channels * 4, "dy", dy, count * 4, false);
      },
      &porta_ops_interface_t::bias_backward, batch, channels, spatial, dy, dbias);
}

extern "C" PORTA_API porta_status_t porta_relu_forward(porta_stream_t stream, int64_t count,
                                                       const float* x, float* y) {
  return op(
      "porta_relu_forward", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        PORTA_CHECK(positive(call, "count", count));
        return tensors(runtime, call, count, {{"x", x}}, {{"y", y}}, true);
      },
      &porta_ops_interface_t::relu_forward, count, x, y);
}

extern "C" PORTA_API porta_status_t porta_relu_backward(porta_stream_t stream, int64_t count,
                                                        const float* x, const float* dy,
                                                        float* dx) {
  return op(
      "porta_relu_backward", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        PORTA_CHECK(positive(call, "count", count));
        PORTA_CHECK(tensors(runtime, call, count, {{"x", x}}, {{"dx", dx}}, false));
        return tensors(runtime, call, count, {{"dy", dy}}, {{"dx", dx}}, true);
      },
      &porta_ops_interface_t::relu_backward, count, x, dy, dx);
}

extern "C" PORTA_API porta_status_t porta_pool2d_output_size(const porta_pool2d_desc_t* desc,
                                                             int64_t* out_height,
                                                             int64_t* out_width) {
  return output_size("porta_pool2d_output_size", pool_shape, desc, out_height, out_width);
}

extern "C" PORTA_API porta_status_t porta_max_pool2d_forward(porta_stream_t stream,
                                                             const porta_pool2d_desc_t* desc,
                                                             const float* x, float* y) {
  return op(
      "porta_max_pool2d_forward", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        int64_t x_count, y_count;
        PORTA_CHECK(pool_sizes(call, desc, x_count, y_count));
        PORTA_CHECK(buffer(runtime, call, "x", x, x_count, 4));
        PORTA_CHECK(buffer(runtime, call, "y", y, y_count, 4));
        return apart(call, "y", y, y_count * 4, "x", x, x_count * 4, false);
      },
      &porta_ops_interface_t::max_pool2d_forward, desc, x, y);
}

extern "C" PORTA_API porta_status_t porta_max_pool2d_backward(porta_stream_t stream,
                                                              const porta_pool2d_desc_t* desc,
                                                              const float* x, const float* dy,
                                                              float* dx) {
  return op(
      "porta_max_pool2d_backward", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        int64_t x_count, y_count;
        PORTA_CHECK(pool_sizes(call, desc, x_count, y_count));
        PORTA_CHECK(buffer(runtime, call, "x", x, x_count, 4));
        PORTA_CHECK(buffer(runtime, call, "dy", dy, y_count, 4));
        PORTA_CHECK(buffer(runtime, call, "dx", dx, x_count, 4));
        PORTA_CHECK(apart(call, "dx", dx, x_count * 4, "x", x, x_count * 4, false));
        return apart(call, "dx", dx, x_count * 4, "dy", dy, y_count * 4, false);
      },
      &porta_ops_interface_t::max_pool2d_backward, desc, x, dy, dx);
}

// ---- optimisers ---------------------------------------------------------------------------

extern "C" PORTA_API porta_status_t porta_sgd_update(porta_stream_t stream, int64_t count,
                                                     float* weights, const float* grads,
                                                     float* velocity, float learning_rate,
                                                     float momentum, float weight_decay) {
  return op(
      "porta_sgd_update", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        PORTA_CHECK(positive(call, "count", count));
        PORTA_CHECK(finite(call, "learning_rate", learning_rate));
        PORTA_CHECK(finite(call, "momentum", momentum));
        PORTA_CHECK(finite(call, "weight_decay", weight_decay));
        PORTA_CHECK(tensors(runtime, call, count, {{"grads", grads}},
                            {{"weights", weights}, {"velocity", velocity}}, false));
        return apart(call, "weights", weights, count * 4, "velocity", velocity, count * 4, false);
      },
      &porta_ops_interface_t::sgd_update, count, weights, grads, velocity, learning_rate,
      momentum, weight_decay);
}

extern "C" PORTA_API porta_status_t porta_adam_update(porta_stream_t stream, int64_t count,
                                                      float* weights, const float* grads, float* m,
                                                      float* v, const porta_adam_params_t* params) {
  return op(
      "porta_adam_update", stream,
      [&](Runtime& runtime, const OpCall& call) -> porta_status_t {
        PORTA_CHECK(positive(call, "count", count));
        PORTA_CHECK(descriptor(call, params, params ? params->struct_size : 0,
                               sizeof(porta_adam_params_t)));
        PORTA_CHECK(finite(call, "learning_rate", params->learning_rate));
        PORTA_CHECK(finite(call, "weight_decay", params->weight_decay));
        for (auto [name, beta] : {std::pair{"beta1", params->beta1}, {"beta2", params->beta2}}) {
          if (!(beta >= 0.0f && beta < 1.0f)) {
            return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is {}; accepted: [0, 1)",
                        call.function, name, beta);
          }
        }
        if (!(params->epsilon > 0.0f) || !std::isfinite(params->epsilon)) {
          return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: epsilon is {}; it must be > 0",
                      call.function, params->epsilon);
        }
        PORTA_CHECK(positive(call, "step", params->step));
        PORTA_CHECK(tensors(runtime, call, count, {{"grads", grads}},
                            {{"weights", weights}, {"m", m}, {"v", v}}, false));
        PORTA_CHECK(apart(call, "weights", weights, count * 4, "m", m, count * 4, false));
        PORTA_CHECK(apart(call, "weights", weights, count * 4, "v", v, count * 4, false));
        return apart(call, "m", m, count * 4, "v", v, count * 4, false);
      },
      &porta_ops_interface_t::adam_update, count, weights, grads, m, v, params);
}
