// The operator set's front door: every argument of every op is checked here, once for all
// implementations, then the call goes to the op plugin that serves the stream's device. The entry
// points themselves are made from porta_op_table.h at the end; each op's check is check_<op>.
#include <porta/porta_op_table.h>
#include <porta/porta_ops.h>

#include <cmath>
#include <cstring>
#include <initializer_list>

#include "plugin_kit/checked.h"
#include "runtime.h"
#include "versioned_struct.h"

using namespace porta;

namespace {

// An op call being checked: where it runs and who implements it.
struct OpCall {
  explicit OpCall(const char* function_name) : function(function_name) {}
  const char* function;
  porta_stream_t stream = nullptr;  // never NULL once resolved
  Device* device = nullptr;
  OpsPlugin* ops = nullptr;
  // Held until the plugin's slot returns, so that its storage (op_storage) outlives the call.
  std::shared_ptr<Stream> stream_object;
  void* native_device = nullptr;
  void* native_stream = nullptr;
  // A descriptor the caller passed, copied whole: a caller's smaller (older) struct is
  // zero-extended, so that nothing past its struct_size is read, here or in a plugin.
  mutable union {
    porta_gemm_desc_t gemm;
    porta_conv2d_desc_t conv2d;
    porta_pool2d_desc_t pool2d;
    porta_adam_params_t adam;
  } whole{};
};

porta_gemm_desc_t& whole_of(const OpCall& call, const porta_gemm_desc_t*) {
  return call.whole.gemm;
}
porta_conv2d_desc_t& whole_of(const OpCall& call, const porta_conv2d_desc_t*) {
  return call.whole.conv2d;
}
porta_pool2d_desc_t& whole_of(const OpCall& call, const porta_pool2d_desc_t*) {
  return call.whole.pool2d;
}
porta_adam_params_t& whole_of(const OpCall& call, const porta_adam_params_t*) {
  return call.whole.adam;
}

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
  // The backend's own handles, for plugins that queue on them (optional slots: NULL without).
  const Backend& backend = *call.device->backend;
  if (backend.interface.device_native_handle &&
      backend.interface.device_native_handle(backend.context, call.device->index,
                                             &call.native_device) != PORTA_SUCCESS) {
    call.native_device = nullptr;
  }
  if (backend.interface.stream_native_handle &&
      backend.interface.stream_native_handle(backend.context, stream->native,
                                             &call.native_stream) != PORTA_SUCCESS) {
    call.native_stream = nullptr;
  }
  take_plugin_message();  // a refusal above is the plugin's to report when it needs the handle
  call.stream_object = std::move(stream);
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
  if (ranges_overlap(out, static_cast<uint64_t>(out_bytes), in, static_cast<uint64_t>(in_bytes))) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} overlaps {}{}", call.function, out_name,
                in_name, in_place_ok ? " (only exactly the same buffer is allowed)" : "");
  }
  return PORTA_SUCCESS;
}

// A descriptor of at least its first release's size (min_size), which desc then points to a
// whole copy of (see OpCall::whole).
template <typename Desc>
porta_status_t descriptor(const OpCall& call, const char* name, const Desc*& desc,
                          size_t min_size) {
  PORTA_CHECK(check_struct_size(call.function, name, desc, min_size));
  Desc& whole = whole_of(call, desc);
  whole = whole_copy(*desc);
  desc = &whole;
  return PORTA_SUCCESS;
}

// Checks under the runtime's lock, then runs the op plugin's slot outside it: the plugin calls
// the public API itself.
template <typename Args, typename Slot>
porta_status_t dispatch(const char* function, porta_stream_t stream, Args& args,
                        porta_status_t (*check)(Runtime&, const OpCall&, Args&), Slot slot) {
  OpCall call{function};
  porta_status_t status = with_runtime(function, [&](Runtime& runtime) -> porta_status_t {
    PORTA_CHECK(resolve(runtime, call, stream));
    return check(runtime, call, args);
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
  const porta_op_context_t context{sizeof(porta_op_context_t),
                                   plugin->context,
                                   call.stream,
                                   call.device->id,
                                   &call.device->properties,
                                   call.native_device,
                                   call.native_stream,
                                   call.stream_object->op_storage_of(plugin)};
  return guarded(function, [&]() -> porta_status_t {
    take_plugin_message();
    PluginCall scope;  // the plugin's scratch is its own, not the application's
    status = implementation(&context, &args);
    if (!is_defined_status(status)) {
      return undefined_status(function, fmt::format("the {} op plugin", plugin->name), status);
    }
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

porta_status_t check_gemm(Runtime& runtime, const OpCall& call, porta_gemm_args_t& args) {
  PORTA_CHECK(descriptor(call, "the descriptor desc", args.desc, PORTA_GEMM_DESC_MIN_SIZE));
  const porta_gemm_desc_t* d = args.desc;
  const void *a = args.a, *b = args.b;
  const float* c = args.c;
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
                "{}: stride_c {} is less than the {} elements one C matrix spans ((m - 1) * ldc "
                "+ n): the batch's C matrices may not share rows",
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

porta_status_t conv_shape(const OpCall& call, const porta_conv2d_desc_t*& d, int64_t& p,
                          int64_t& q) {
  PORTA_CHECK(descriptor(call, "the descriptor desc", d, PORTA_CONV2D_DESC_MIN_SIZE));
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

porta_status_t conv_sizes(const OpCall& call, const porta_conv2d_desc_t*& d, ConvSizes& out) {
  int64_t p, q;
  PORTA_CHECK(conv_shape(call, d, p, q));
  PORTA_CHECK(product(call, "x", {d->batch, d->in_channels, d->in_height, d->in_width}, out.x));
  PORTA_CHECK(product(call, "w", {d->out_channels, d->in_channels, d->kernel_height,
                                  d->kernel_width}, out.w));
  return product(call, "y", {d->batch, d->out_channels, p, q}, out.y);
}

// A convolution's inputs and output: (first, second) -> out, with their element counts.
porta_status_t check_conv(Runtime& runtime, const OpCall& call, const porta_conv2d_desc_t*& d,
                          const char* first_name, const void* first, int64_t ConvSizes::*first_size,
                          const char* second_name, const void* second,
                          int64_t ConvSizes::*second_size, const char* out_name, const float* out,
                          int64_t ConvSizes::*out_size) {
  ConvSizes sizes{};
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

porta_status_t pool_shape(const OpCall& call, const porta_pool2d_desc_t*& d, int64_t& p,
                          int64_t& q) {
  PORTA_CHECK(descriptor(call, "the descriptor desc", d, PORTA_POOL2D_DESC_MIN_SIZE));
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

porta_status_t pool_sizes(const OpCall& call, const porta_pool2d_desc_t*& d, int64_t& x,
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
                           porta_status_t (*shape)(const OpCall&, const Desc*&, int64_t&, int64_t&),
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

// ---- GEMM and convolution ---------------------------------------------------------------------

porta_status_t check_conv2d_forward(Runtime& runtime, const OpCall& call,
                                    porta_conv2d_forward_args_t& a) {
  return check_conv(runtime, call, a.desc, "x", a.x, &ConvSizes::x, "w", a.w, &ConvSizes::w, "y",
                    a.y, &ConvSizes::y);
}

porta_status_t check_conv2d_backward_data(Runtime& runtime, const OpCall& call,
                                          porta_conv2d_backward_data_args_t& a) {
  return check_conv(runtime, call, a.desc, "dy", a.dy, &ConvSizes::y, "w", a.w, &ConvSizes::w, "dx",
                    a.dx, &ConvSizes::x);
}

porta_status_t check_conv2d_backward_weights(Runtime& runtime, const OpCall& call,
                                             porta_conv2d_backward_weights_args_t& a) {
  return check_conv(runtime, call, a.desc, "x", a.x, &ConvSizes::x, "dy", a.dy, &ConvSizes::y, "dw",
                    a.dw, &ConvSizes::w);
}

// ---- dtype conversion -------------------------------------------------------------------------

porta_status_t check_convert(Runtime& runtime, const OpCall& call, porta_convert_args_t& a) {
  PORTA_CHECK(positive(call, "count", a.count));
  PORTA_CHECK(known_dtype(call, "src_dtype", a.src_dtype));
  PORTA_CHECK(known_dtype(call, "dst_dtype", a.dst_dtype));
  const size_t in = dtype_size(a.src_dtype), out = dtype_size(a.dst_dtype);
  PORTA_CHECK(buffer(runtime, call, "src", a.src, a.count, in));
  PORTA_CHECK(buffer(runtime, call, "dst", a.dst, a.count, out));
  // In place only element for element: with different sizes, one item's write would land on
  // another's input.
  return apart(call, "dst", a.dst, a.count * int64_t(out), "src", a.src, a.count * int64_t(in),
               in == out);
}

// ---- softmax and cross-entropy ----------------------------------------------------------------

porta_status_t check_softmax_forward(Runtime& runtime, const OpCall& call,
                                     porta_softmax_forward_args_t& a) {
  int64_t count = 0;
  PORTA_CHECK(softmax_mode(call, a.mode));
  PORTA_CHECK(rows_cols(call, a.rows, a.cols, count));
  return tensors(runtime, call, count, {{"x", a.x}}, {{"y", a.y}}, true);
}

porta_status_t check_softmax_backward(Runtime& runtime, const OpCall& call,
                                      porta_softmax_backward_args_t& a) {
  int64_t count = 0;
  PORTA_CHECK(softmax_mode(call, a.mode));
  PORTA_CHECK(rows_cols(call, a.rows, a.cols, count));
  PORTA_CHECK(tensors(runtime, call, count, {{"y", a.y}}, {{"dx", a.dx}}, false));
  return tensors(runtime, call, count, {{"dy", a.dy}}, {{"dx", a.dx}}, true);
}

porta_status_t check_cross_entropy(Runtime& runtime, const OpCall& call,
                                   porta_cross_entropy_args_t& a) {
  int64_t count = 0;
  const int64_t rows = a.rows;
  const float *logits = a.logits, *loss = a.loss, *dlogits = a.dlogits;
  const int32_t* labels = a.labels;
  PORTA_CHECK(rows_cols(call, rows, a.cols, count));
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
}

// ---- bias, ReLU, pooling ----------------------------------------------------------------------

porta_status_t check_bias_add(Runtime& runtime, const OpCall& call, porta_bias_add_args_t& a) {
  int64_t count = 0;
  PORTA_CHECK(channel_shape(call, "x", a.batch, a.channels, a.spatial, count));
  PORTA_CHECK(buffer(runtime, call, "bias", a.bias, a.channels, 4));
  PORTA_CHECK(apart(call, "y", a.y, count * 4, "bias", a.bias, a.channels * 4, false));
  return tensors(runtime, call, count, {{"x", a.x}}, {{"y", a.y}}, true);
}

porta_status_t check_bias_backward(Runtime& runtime, const OpCall& call,
                                   porta_bias_backward_args_t& a) {
  int64_t count = 0;
  PORTA_CHECK(channel_shape(call, "dy", a.batch, a.channels, a.spatial, count));
  PORTA_CHECK(buffer(runtime, call, "dy", a.dy, count, 4));
  PORTA_CHECK(buffer(runtime, call, "dbias", a.dbias, a.channels, 4));
  return apart(call, "dbias", a.dbias, a.channels * 4, "dy", a.dy, count * 4, false);
}

porta_status_t check_relu_forward(Runtime& runtime, const OpCall& call,
                                  porta_relu_forward_args_t& a) {
  PORTA_CHECK(positive(call, "count", a.count));
  return tensors(runtime, call, a.count, {{"x", a.x}}, {{"y", a.y}}, true);
}

porta_status_t check_relu_backward(Runtime& runtime, const OpCall& call,
                                   porta_relu_backward_args_t& a) {
  PORTA_CHECK(positive(call, "count", a.count));
  PORTA_CHECK(tensors(runtime, call, a.count, {{"x", a.x}}, {{"dx", a.dx}}, false));
  return tensors(runtime, call, a.count, {{"dy", a.dy}}, {{"dx", a.dx}}, true);
}

porta_status_t check_max_pool2d_forward(Runtime& runtime, const OpCall& call,
                                        porta_max_pool2d_forward_args_t& a) {
  int64_t x_count = 0, y_count = 0;
  PORTA_CHECK(pool_sizes(call, a.desc, x_count, y_count));
  PORTA_CHECK(buffer(runtime, call, "x", a.x, x_count, 4));
  PORTA_CHECK(buffer(runtime, call, "y", a.y, y_count, 4));
  return apart(call, "y", a.y, y_count * 4, "x", a.x, x_count * 4, false);
}

porta_status_t check_max_pool2d_backward(Runtime& runtime, const OpCall& call,
                                         porta_max_pool2d_backward_args_t& a) {
  int64_t x_count = 0, y_count = 0;
  PORTA_CHECK(pool_sizes(call, a.desc, x_count, y_count));
  PORTA_CHECK(buffer(runtime, call, "x", a.x, x_count, 4));
  PORTA_CHECK(buffer(runtime, call, "dy", a.dy, y_count, 4));
  PORTA_CHECK(buffer(runtime, call, "dx", a.dx, x_count, 4));
  PORTA_CHECK(apart(call, "dx", a.dx, x_count * 4, "x", a.x, x_count * 4, false));
  return apart(call, "dx", a.dx, x_count * 4, "dy", a.dy, y_count * 4, false);
}

// ---- optimisers ---------------------------------------------------------------------------

porta_status_t check_sgd_update(Runtime& runtime, const OpCall& call, porta_sgd_update_args_t& a) {
  PORTA_CHECK(positive(call, "count", a.count));
  PORTA_CHECK(finite(call, "learning_rate", a.learning_rate));
  PORTA_CHECK(finite(call, "momentum", a.momentum));
  PORTA_CHECK(finite(call, "weight_decay", a.weight_decay));
  PORTA_CHECK(tensors(runtime, call, a.count, {{"grads", a.grads}},
                      {{"weights", a.weights}, {"velocity", a.velocity}}, false));
  return apart(call, "weights", a.weights, a.count * 4, "velocity", a.velocity, a.count * 4, false);
}

porta_status_t check_adam_update(Runtime& runtime, const OpCall& call,
                                 porta_adam_update_args_t& a) {
  const int64_t count = a.count;
  PORTA_CHECK(positive(call, "count", count));
  PORTA_CHECK(descriptor(call, "the descriptor params", a.params, PORTA_ADAM_PARAMS_MIN_SIZE));
  const porta_adam_params_t* params = a.params;
  PORTA_CHECK(finite(call, "learning_rate", params->learning_rate));
  PORTA_CHECK(finite(call, "weight_decay", params->weight_decay));
  for (auto [name, beta] : {std::pair{"beta1", params->beta1}, {"beta2", params->beta2}}) {
    if (!(beta >= 0.0f && beta < 1.0f)) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is {}; accepted: [0, 1)", call.function,
                  name, beta);
    }
  }
  if (!(params->epsilon > 0.0f) || !std::isfinite(params->epsilon)) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: epsilon is {}; it must be > 0", call.function,
                params->epsilon);
  }
  PORTA_CHECK(positive(call, "step", params->step));
  PORTA_CHECK(tensors(runtime, call, count, {{"grads", a.grads}},
                      {{"weights", a.weights}, {"m", a.m}, {"v", a.v}}, false));
  PORTA_CHECK(apart(call, "weights", a.weights, count * 4, "m", a.m, count * 4, false));
  PORTA_CHECK(apart(call, "weights", a.weights, count * 4, "v", a.v, count * 4, false));
  return apart(call, "m", a.m, count * 4, "v", a.v, count * 4, false);
}

// Copies a value as bytes: an enum parameter outside its enumerators (a C caller may pass one)
// is never loaded as the enum type before check_<op> has read it as an integer.
template <typename T>
void copy_bytes(T& to, const T& from) {
  std::memcpy(&to, &from, sizeof(T));
}
#define PORTA_OP_COPY_A_(type, name) \
  copy_bytes(args.name, name);       \
  PORTA_OP_COPY_B_
#define PORTA_OP_COPY_B_(type, name) \
  copy_bytes(args.name, name);       \
  PORTA_OP_COPY_A_
#define PORTA_OP_COPY_A_END_
#define PORTA_OP_COPY_B_END_

}  // namespace

extern "C" PORTA_API porta_status_t porta_conv2d_output_size(const porta_conv2d_desc_t* desc,
                                                             int64_t* out_height,
                                                             int64_t* out_width) {
  return output_size("porta_conv2d_output_size", conv_shape, desc, out_height, out_width);
}

extern "C" PORTA_API porta_status_t porta_pool2d_output_size(const porta_pool2d_desc_t* desc,
                                                             int64_t* out_height,
                                                             int64_t* out_width) {
  return output_size("porta_pool2d_output_size", pool_shape, desc, out_height, out_width);
}

// Every op's entry point: its arguments into porta_<op>_args_t, checked by check_<op>, run by the
// slot of the stream's op plugin.
#define PORTA_OP_ENTRY_(name, fields)                                                          \
  extern "C" PORTA_API porta_status_t porta_##name(                                            \
      porta_stream_t stream PORTA_OP_FIELDS(PORTA_OP_PARAM, fields)) {                         \
    porta_##name##_args_t args{};                                                              \
    args.struct_size = sizeof(args);                                                           \
    PORTA_OP_FIELDS(PORTA_OP_COPY, fields)                                                     \
    return dispatch("porta_" #name, stream, args, check_##name, &porta_ops_interface_t::name); \
  }
PORTA_OP_TABLE(PORTA_OP_ENTRY_)
#undef PORTA_OP_ENTRY_
