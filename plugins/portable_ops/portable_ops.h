// Shared by the portable op plugin's host files: the kernel library of each device, and launches.
#pragma once

#include <porta/porta.hpp>
#include <porta/porta_ops.h>
#include <porta/porta_plugin.h>

#include <cstdint>
#include <exception>
#include <new>
#include <string>

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

// Reports an error from the plugin itself through the host API and returns status.
porta_status_t fail(porta_status_t status, const std::string& message);

// Runs body, turning a porta::error into its status (the message is already the thread's last
// error, set by the failing call) and anything else into PORTA_ERROR_BACKEND: nothing throws
// across the plugin ABI.
template <class Body>
porta_status_t guarded(const char* op, Body&& body) noexcept {
  try {
    body();
    return PORTA_SUCCESS;
  } catch (const porta::error& e) {
    return fail(e.status(), std::string(op) + ": " + e.message());
  } catch (const std::bad_alloc&) {
    return fail(PORTA_ERROR_OUT_OF_MEMORY, std::string(op) + ": out of host memory");
  } catch (const std::exception& e) {
    return fail(PORTA_ERROR_BACKEND, std::string(op) + ": " + e.what());
  }
}

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
// pool.cpp
porta_status_t max_pool2d_forward(void*, porta_stream_t, const porta_pool2d_desc_t*,
                                  const float* x, float* y);
porta_status_t max_pool2d_backward(void*, porta_stream_t, const porta_pool2d_desc_t*,
                                   const float* x, const float* dy, float* dx);

}  // namespace porta::portable_ops
