/* Calls with enumerators out of range, for test_errors.cpp. They are made from C because C lets
 * an enum object hold any value of its compatible integer type (C11 6.7.2.2), which is what a C
 * caller can pass, while in C++ merely forming such a value is undefined behaviour (and flagged
 * by -fsanitize=enum). Each copies a valid argument, sets one enumerator to `value`, and calls. */
#include "bad_enums.h"

porta_status_t porta_test_gemm_bad_enum(porta_stream_t stream, const porta_gemm_desc_t* valid,
                                        int field, int value, const void* a, const void* b,
                                        float* c) {
  porta_gemm_desc_t desc = *valid;
  if (field == PORTA_TEST_TRANS_A) desc.trans_a = value;
  if (field == PORTA_TEST_TRANS_B) desc.trans_b = value;
  if (field == PORTA_TEST_DTYPE) desc.dtype = value;
  return porta_gemm(stream, &desc, a, b, c);
}

porta_status_t porta_test_conv2d_bad_dtype(int pass, porta_stream_t stream,
                                           const porta_conv2d_desc_t* valid, int value,
                                           const void* in0, const void* in1, float* out) {
  porta_conv2d_desc_t desc = *valid;
  desc.dtype = value;
  switch (pass) {
    case 0:
      return porta_conv2d_forward(stream, &desc, in0, in1, out);
    case 1:
      return porta_conv2d_backward_data(stream, &desc, in0, in1, out);
    default:
      return porta_conv2d_backward_weights(stream, &desc, in0, in1, out);
  }
}

porta_status_t porta_test_softmax_bad_mode(int backward, porta_stream_t stream, int mode,
                                           int64_t rows, int64_t cols, const float* in0,
                                           const float* in1, float* out) {
  if (backward) return porta_softmax_backward(stream, mode, rows, cols, in0, in1, out);
  return porta_softmax_forward(stream, mode, rows, cols, in0, out);
}

porta_status_t porta_test_convert_bad_dtype(porta_stream_t stream, int64_t count, int src_dtype,
                                            const void* src, int dst_dtype, void* dst) {
  return porta_convert(stream, count, src_dtype, src, dst_dtype, dst);
}
