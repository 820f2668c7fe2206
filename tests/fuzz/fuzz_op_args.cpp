// Op descriptors and sizes through the public argument checks: every op of porta_ops.h with
// arbitrary shapes, leading dimensions, strides, dtypes and buffers (live device buffers at any
// offset, or NULL). A call either fails its checks with a documented status and a message, or
// runs within the buffers it was given (AddressSanitizer watches) and the stream stays usable.
#include <fuzzer/FuzzedDataProvider.h>
#include <porta/porta.h>
#include <porta/porta_ops.h>

#include <cstdint>
#include <cstdlib>
#include <limits>

#include "fuzz_common.h"

namespace {

constexpr size_t kBufferBytes = 64 << 10;
constexpr int kBuffers = 3;

struct State {
  float* buffers[kBuffers] = {};
  int32_t* labels = nullptr;  // all zero, a valid class for any cols >= 1; nothing else writes it
  porta_stream_t stream = nullptr;
};

State& state() {
  static State* created = [] {
    auto* s = new State();
    if (porta_init(nullptr) != PORTA_SUCCESS) std::abort();
    for (float*& buffer : s->buffers) {
      if (porta_memory_alloc(0, kBufferBytes, reinterpret_cast<void**>(&buffer)) ||
          porta_memset(buffer, 0, kBufferBytes)) {
        std::abort();
      }
    }
    if (porta_memory_alloc(0, kBufferBytes, reinterpret_cast<void**>(&s->labels)) ||
        porta_memset(s->labels, 0, kBufferBytes) || porta_stream_create(0, &s->stream)) {
      std::abort();
    }
    return s;
  }();
  return *created;
}

class Args {
 public:
  explicit Args(FuzzedDataProvider& input) : input_(input) {}

  // Small sizes mostly, and now and then the edges of int64.
  int64_t size() {
    static constexpr int64_t kEdges[] = {0,
                                         -1,
                                         std::numeric_limits<int64_t>::min(),
                                         std::numeric_limits<int64_t>::max(),
                                         int64_t(1) << 31,
                                         int64_t(1) << 32,
                                         int64_t(1) << 62,
                                         4097};
    if (input_.ConsumeIntegralInRange(0, 15) == 0) return input_.PickValueInArray(kEdges);
    return input_.ConsumeIntegralInRange<int64_t>(-2, 70);
  }


  // A live buffer at a float-aligned offset, or NULL.
  float* buffer() {
    if (input_.ConsumeIntegralInRange(0, 31) == 0) return nullptr;
    float* base = state().buffers[input_.ConsumeIntegralInRange(0, kBuffers - 1)];
    const size_t floats = kBufferBytes / sizeof(float);
    return base + (input_.ConsumeBool() ? 0 : input_.ConsumeIntegralInRange<size_t>(0, floats - 1));
  }

  // Enumerators only: values outside an enum are the op suite's business (tests/ops/bad_enums.c
  // passes them from C, where that is defined).
  porta_dtype_t dtype() { return static_cast<porta_dtype_t>(input_.ConsumeIntegralInRange(0, 2)); }

  porta_stream_t stream() { return input_.ConsumeBool() ? nullptr : state().stream; }

 private:
  FuzzedDataProvider& input_;
};

porta_conv2d_desc_t conv_desc(FuzzedDataProvider& input, Args& args) {
  porta_conv2d_desc_t d{};
  d.struct_size =
      input.ConsumeIntegralInRange(0, 7) == 0 ? input.ConsumeIntegral<uint8_t>() : sizeof(d);
  d.batch = args.size();
  d.in_channels = args.size();
  d.in_height = args.size();
  d.in_width = args.size();
  d.out_channels = args.size();
  d.kernel_height = args.size();
  d.kernel_width = args.size();
  d.pad_h = args.size();
  d.pad_w = args.size();
  d.stride_h = args.size();
  d.stride_w = args.size();
  d.dilation_h = args.size();
  d.dilation_w = args.size();
  d.dtype = args.dtype();
  return d;
}

porta_pool2d_desc_t pool_desc(FuzzedDataProvider& input, Args& args) {
  porta_pool2d_desc_t d{};
  d.struct_size =
      input.ConsumeIntegralInRange(0, 7) == 0 ? input.ConsumeIntegral<uint8_t>() : sizeof(d);
  d.batch = args.size();
  d.channels = args.size();
  d.in_height = args.size();
  d.in_width = args.size();
  d.window_h = args.size();
  d.window_w = args.size();
  d.stride_h = args.size();
  d.stride_w = args.size();
  d.pad_h = args.size();
  d.pad_w = args.size();
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("PORTA_LOG", "off", 1);
  state();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  Args args(input);
  State& s = state();
  while (input.remaining_bytes() > 0) {
    const porta_stream_t stream = args.stream();
    switch (input.ConsumeIntegralInRange(0, 12)) {
      case 0: {
        porta_gemm_desc_t d{};
        d.struct_size =
            input.ConsumeIntegralInRange(0, 7) == 0 ? input.ConsumeIntegral<uint8_t>() : sizeof(d);
        d.trans_a = static_cast<porta_transpose_t>(input.ConsumeIntegralInRange(0, 1));
        d.trans_b = static_cast<porta_transpose_t>(input.ConsumeIntegralInRange(0, 1));
        d.m = args.size();
        d.n = args.size();
        d.k = args.size();
        d.lda = args.size();
        d.ldb = args.size();
        d.ldc = args.size();
        d.alpha = input.ConsumeFloatingPoint<float>();
        d.beta = input.ConsumeFloatingPoint<float>();
        d.batch_count = args.size();
        d.stride_a = args.size();
        d.stride_b = args.size();
        d.stride_c = args.size();
        d.dtype = args.dtype();
        PORTA_FUZZ_CALL(porta_gemm(stream, &d, args.buffer(), args.buffer(), args.buffer()));
        break;
      }
      case 1: {
        const porta_conv2d_desc_t d = conv_desc(input, args);
        int64_t height = 0, width = 0;
        PORTA_FUZZ_CALL(porta_conv2d_output_size(&d, &height, &width));
        break;
      }
      case 2: {
        const porta_conv2d_desc_t d = conv_desc(input, args);
        PORTA_FUZZ_CALL(
            porta_conv2d_forward(stream, &d, args.buffer(), args.buffer(), args.buffer()));
        break;
      }
      case 3: {
        const porta_conv2d_desc_t d = conv_desc(input, args);
        PORTA_FUZZ_CALL(
            porta_conv2d_backward_data(stream, &d, args.buffer(), args.buffer(), args.buffer()));
        break;
      }
      case 4: {
        const porta_conv2d_desc_t d = conv_desc(input, args);
        PORTA_FUZZ_CALL(
            porta_conv2d_backward_weights(stream, &d, args.buffer(), args.buffer(), args.buffer()));
        break;
      }
      case 5: {
        const porta_pool2d_desc_t d = pool_desc(input, args);
        int64_t height = 0, width = 0;
        PORTA_FUZZ_CALL(porta_pool2d_output_size(&d, &height, &width));
        break;
      }
      case 6: {
        const porta_pool2d_desc_t d = pool_desc(input, args);
        if (input.ConsumeBool()) {
          PORTA_FUZZ_CALL(porta_max_pool2d_forward(stream, &d, args.buffer(), args.buffer()));
        } else {
          PORTA_FUZZ_CALL(
              porta_max_pool2d_backward(stream, &d, args.buffer(), args.buffer(), args.buffer()));
        }
        break;
      }
      case 7: {
        const auto mode = static_cast<porta_softmax_mode_t>(input.ConsumeIntegralInRange(0, 1));
        const int64_t rows = args.size(), cols = args.size();
        if (input.ConsumeBool()) {
          PORTA_FUZZ_CALL(
              porta_softmax_forward(stream, mode, rows, cols, args.buffer(), args.buffer()));
        } else {
          PORTA_FUZZ_CALL(porta_softmax_backward(stream, mode, rows, cols, args.buffer(),
                                                 args.buffer(), args.buffer()));
        }
        break;
      }
      case 8: {
        const int64_t rows = args.size(), cols = args.size();
        PORTA_FUZZ_CALL(porta_cross_entropy(stream, rows, cols, args.buffer(),
                                            input.ConsumeBool() ? s.labels : nullptr, args.buffer(),
                                            args.buffer()));
        break;
      }
      case 9: {
        const int64_t batch = args.size(), channels = args.size(), spatial = args.size();
        if (input.ConsumeBool()) {
          PORTA_FUZZ_CALL(porta_bias_add(stream, batch, channels, spatial, args.buffer(),
                                         args.buffer(), args.buffer()));
        } else {
          PORTA_FUZZ_CALL(
              porta_bias_backward(stream, batch, channels, spatial, args.buffer(), args.buffer()));
        }
        break;
      }
      case 10: {
        const int64_t count = args.size();
        if (input.ConsumeBool()) {
          PORTA_FUZZ_CALL(porta_relu_forward(stream, count, args.buffer(), args.buffer()));
        } else {
          PORTA_FUZZ_CALL(
              porta_relu_backward(stream, count, args.buffer(), args.buffer(), args.buffer()));
        }
        break;
      }
      case 11: {
        const int64_t count = args.size();
        const porta_dtype_t from = args.dtype(), to = args.dtype();
        PORTA_FUZZ_CALL(porta_convert(stream, count, from, args.buffer(), to, args.buffer()));
        break;
      }
      default: {
        const int64_t count = args.size();
        if (input.ConsumeBool()) {
          PORTA_FUZZ_CALL(porta_sgd_update(stream, count, args.buffer(), args.buffer(),
                                           args.buffer(), input.ConsumeFloatingPoint<float>(),
                                           input.ConsumeFloatingPoint<float>(),
                                           input.ConsumeFloatingPoint<float>()));
        } else {
          porta_adam_params_t p{};
          p.struct_size = sizeof(p);
          p.learning_rate = input.ConsumeFloatingPoint<float>();
          p.beta1 = input.ConsumeFloatingPoint<float>();
          p.beta2 = input.ConsumeFloatingPoint<float>();
          p.epsilon = input.ConsumeFloatingPoint<float>();
          p.weight_decay = input.ConsumeFloatingPoint<float>();
          p.step = args.size();
          PORTA_FUZZ_CALL(porta_adam_update(stream, count, args.buffer(), args.buffer(),
                                            args.buffer(), args.buffer(), &p));
        }
        break;
      }
    }
  }
  if (PORTA_FUZZ_CALL(porta_stream_synchronize(s.stream)) != PORTA_SUCCESS ||
      PORTA_FUZZ_CALL(porta_stream_synchronize(nullptr)) != PORTA_SUCCESS) {
    std::abort();
  }
  return 0;
}
