// One op on one shape set up on a device (measure.cpp), and oneDNN's convolution on its own
// layouts in place of Porta's op (onednn_blocked.cpp).
#ifndef PORTA_TOOLS_BENCH_CASE_H_
#define PORTA_TOOLS_BENCH_CASE_H_

#include <functional>
#include <memory>

#include "bench.h"

namespace bench {

// A device buffer holding an operand in its dtype.
struct DeviceArray {
  porta::device_buffer<uint8_t> buffer;
  void* get() const { return buffer.data(); }
};

// run(set) queues the op on input set `set`, writing outputs[set].
struct Case {
  std::vector<std::vector<DeviceArray>> inputs;  // [set][operand]
  std::vector<porta::device_buffer<int32_t>> labels;
  // An output per set, as the inputs: no call writes into lines that an earlier call left in
  // the cache, which would save the reads a write of an uncached line costs (a copy pays them).
  std::vector<porta::device_buffer<float>> outputs;  // [set]
  // Bandwidth ops: each set's copy of its input 0 (copy_floats floats), timed with the op to
  // rate it against the memory it runs on, goes into the set's output where that holds input 0,
  // else into a buffer of its own, made with the set.
  std::vector<porta::device_buffer<float>> copy_buffers;  // [set], or none
  size_t copy_floats = 0;
  float* copy_target(int set) const {
    return copy_buffers.empty() ? outputs[set].data() : copy_buffers[set].data();
  }
  porta::device_buffer<float> loss;
  std::function<void(int set, porta_stream_t)> run;
  size_t output_count = 0;
  // Set where run() leaves the output in another layout: queues its conversion into output.
  std::function<void(porta_stream_t)> to_plain;
  // Set for ops that update their inputs in place (adam): queues the restoring of set 0's
  // inputs as they were made, so that output() is one call's result on every implementation.
  std::function<void(porta_stream_t)> restore;
  // Set where queued work reports failures on the host: throws the first one.
  std::function<void()> check;
  std::shared_ptr<void> library_state;  // what run() and to_plain() use
};

// Replaces c.run of a convolution (conv_fwd, conv_bwd_data, conv_bwd_weights) by oneDNN's
// primitive of `algorithm` on the layouts oneDNN prefers (format_tag::any): both inputs of every
// set reordered once, here, and the output left in oneDNN's layout by run(); to_plain() reorders it
// into c.outputs[0]. Runs on the CPU backend only (oneDNN reads Porta's buffers directly), with
// `threads` OpenMP threads. Throws porta::error UNSUPPORTED when the oneDNN module is missing (the
// reason: blocked_conv_missing()) or oneDNN lacks the combination.
void make_blocked_conv(Case& c, const Shape& shape, porta_dtype_t dtype, BlockedAlgorithm algorithm,
                       int threads);
// Why the onednn-blocked and onednn-winograd rows cannot be measured here ("" when they can): the
// module lib/porta_bench_onednn.so is not built or does not load.
std::string blocked_conv_missing();

// The module's entry, porta_bench_make_blocked_conv (onednn_blocked.cpp): make_blocked_conv with
// the convolution's descriptor made and the primitive's name for messages.
using BlockedConvEntry = void (*)(Case& c, Op op, const porta_conv2d_desc_t& d,
                                  BlockedAlgorithm algorithm, const std::string& what, int threads);

}  // namespace bench

#endif  // PORTA_TOOLS_BENCH_CASE_H_
