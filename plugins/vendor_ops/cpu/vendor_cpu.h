// Shared by the CPU vendor op plugin's files: errors, the host-function queue that puts library
// calls in stream order, thread counts, and oneDNN's engine.
//
// The plugin runs on the CPU backend only, where device memory is host memory, so oneDNN and
// OpenBLAS read and write Porta's buffers directly. Each op builds (or finds cached) what it needs
// on the caller's thread, so that an input the library cannot handle is refused at once, then
// queues the library call with porta_stream_launch_host_func: it runs on the stream's worker in
// order with the stream's kernels, copies and events, on the libraries' own threads.
#pragma once

#include <porta/porta_ops.h>
#include <porta/porta_plugin.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <porta/porta.hpp>
#include <string>
#include <utility>
#include <vector>

#include "op_plugin.h"
#include "plugin_kit.h"

namespace porta::vendor_cpu {

// An error with its Porta status, thrown inside the plugin and turned into a status at the slot.
using plugin::Failure;

// What libporta resolved for an op call (porta_plugin.h): its stream, device and properties.
using Op = porta_op_context_t;

// The version of the oneDNN library loaded ("2.6.3").
std::string dnnl_version_text();

// oneDNN's status as its C name ("dnnl_unimplemented").
const char* dnnl_status_name(dnnl_status_t status);

// Runs an op slot's body, turning what it throws into a status and a message starting with op.
// Nothing throws across the plugin ABI.
porta_status_t guarded(const char* op, const std::function<void()>& body) noexcept;

// How many threads the libraries use for work on the op's device: its compute units.
int threads_for(const Op& context);

// Throws UNSUPPORTED naming the first of values past INT32_MAX: `library` (OpenBLAS's
// cblas_sgemm, oneDNN's convolution) keeps them in 32-bit ints, where a larger one would wrap.
void check_32_bit(const char* library,
                  std::initializer_list<std::pair<const char*, int64_t>> values);

// Queues work on the op's stream as a host function. work runs on the stream's worker with
// OpenMP (oneDNN's threading) set to threads; what it throws becomes the stream's error, which
// its next synchronize or query returns. Throws porta::error when the stream refuses the host
// function.
void enqueue(const Op& context, const char* op, int threads, std::function<void()> work);

// The CPU engine all primitives are made for.
const dnnl::engine& engine();

// Builds a primitive descriptor, turning oneDNN's refusal into UNSUPPORTED with what was asked
// for; other failures (out of memory) propagate.
template <class Make>
auto make_pd(const std::string& what, Make&& make) -> decltype(make()) {
  try {
    return make();
  } catch (const dnnl::error& e) {
    // libporta has checked the arguments, so a descriptor oneDNN refuses is a combination (a
    // dtype, a layout) it does not offer.
    if (e.status == dnnl_unimplemented || e.status == dnnl_invalid_arguments) {
      throw Failure(PORTA_ERROR_UNSUPPORTED,
                    "oneDNN " + dnnl_version_text() + " has no implementation of " + what +
                        " on this CPU (" + dnnl_status_name(e.status) + ": " + e.what() + ")");
    }
    throw;
  }
}

// Attributes asking for a user-managed scratchpad. oneDNN's default scratchpad is taken, at
// primitive creation, from a buffer global to the creating thread, which later creations on that
// thread resize: a primitive created on the caller's thread and run on a stream's worker would
// use freed memory. Every primitive here gets its scratchpad from the call that runs it.
dnnl::primitive_attr user_scratchpad();

// oneDNN's data type for a Porta dtype.
dnnl::memory::data_type dnnl_type(porta_dtype_t dtype);
const char* dtype_name(porta_dtype_t dtype);

// Primitives cached by a key of integers (the descriptor's fields), shared by every stream: a
// primitive is immutable and may run on several threads at once.
template <class Value>
class Cache {
 public:
  template <class Make>
  std::shared_ptr<const Value> get(const std::vector<int64_t>& key, Make&& make) {
    {
      std::lock_guard lock(mutex_);
      if (auto it = entries_.find(key); it != entries_.end()) return it->second;
    }
    auto value = std::make_shared<const Value>(make());
    std::lock_guard lock(mutex_);
    // Bounded: a program sweeping many shapes must not grow it forever.
    if (entries_.size() >= kCapacity) entries_.clear();
    return entries_.emplace(key, std::move(value)).first->second;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    entries_.clear();
  }

 private:
  static constexpr size_t kCapacity = 512;
  std::mutex mutex_;
  std::map<std::vector<int64_t>, std::shared_ptr<const Value>> entries_;
};

// Drops every cached primitive (at shutdown).
void clear_caches();

// The libraries GEMM may use (PORTA_VENDOR_LIBRARY; default: both, OpenBLAS for fp32).
struct GemmLibraries {
  bool openblas = true;
  bool onednn = true;
  bool prefer_onednn = false;  // fp32 through oneDNN's matmul although OpenBLAS is allowed
};
// Set at the plugin's entry, before any op runs.
void use_gemm_libraries(GemmLibraries libraries);

// The plugin's slots (plugin_kit/op_plugin.h makes its interface of them). The ops it leaves out
// (cross-entropy: no library op with Porta's label semantics; pooling: oneDNN's tie rule and
// workspace differ; the optimisers and dtype conversion: no library op) run on the portable
// plugin.
struct Ops {
  static porta_status_t initialize(void** out_state);
  static void shutdown(void* state);
  static porta_status_t supports_backend(void* state, const char* backend);
  // gemm.cpp
  static porta_status_t gemm(const Op* op, const porta_gemm_args_t* args);
  // conv.cpp
  static porta_status_t conv2d_forward(const Op* op, const porta_conv2d_forward_args_t* args);
  static porta_status_t conv2d_backward_data(const Op* op,
                                             const porta_conv2d_backward_data_args_t* args);
  static porta_status_t conv2d_backward_weights(const Op* op,
                                                const porta_conv2d_backward_weights_args_t* args);
  // dnnl_ops.cpp
  static porta_status_t softmax_forward(const Op* op, const porta_softmax_forward_args_t* args);
  static porta_status_t softmax_backward(const Op* op, const porta_softmax_backward_args_t* args);
  static porta_status_t bias_add(const Op* op, const porta_bias_add_args_t* args);
  static porta_status_t bias_backward(const Op* op, const porta_bias_backward_args_t* args);
  static porta_status_t relu_forward(const Op* op, const porta_relu_forward_args_t* args);
  static porta_status_t relu_backward(const Op* op, const porta_relu_backward_args_t* args);
};
void clear_conv_cache();
void clear_dnnl_ops_cache();
void clear_gemm_cache();

}  // namespace porta::vendor_cpu
