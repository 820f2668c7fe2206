/* Calls with enumerators out of range (bad_enums.c), for test_errors.cpp. */
#ifndef PORTA_TESTS_OPS_BAD_ENUMS_H_
#define PORTA_TESTS_OPS_BAD_ENUMS_H_

#include <porta/porta_ops.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { PORTA_TEST_TRANS_A = 0, PORTA_TEST_TRANS_B = 1, PORTA_TEST_DTYPE = 2 };

/* porta_gemm with *valid's field (PORTA_TEST_*) set to value. */
porta_status_t porta_test_gemm_bad_enum(porta_stream_t stream, const porta_gemm_desc_t* valid,
                                        int field, int value, const void* a, const void* b,
                                        float* c);
/* Pass 0 forward (x, w -> y), 1 backward-data (dy, w -> dx), 2 backward-weights (x, dy -> dw),
 * with *valid's dtype set to value. */
porta_status_t porta_test_conv2d_bad_dtype(int pass, porta_stream_t stream,
                                           const porta_conv2d_desc_t* valid, int value,
                                           const void* in0, const void* in1, float* out);
/* porta_softmax_forward (x -> y; in1 unused) or, if backward, porta_softmax_backward
 * (y, dy -> dx), with mode as given. */
porta_status_t porta_test_softmax_bad_mode(int backward, porta_stream_t stream, int mode,
                                           int64_t rows, int64_t cols, const float* in0,
                                           const float* in1, float* out);

/* porta_convert with the dtypes as given. */
porta_status_t porta_test_convert_bad_dtype(porta_stream_t stream, int64_t count, int src_dtype,
                                            const void* src, int dst_dtype, void* dst);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PORTA_TESTS_OPS_BAD_ENUMS_H_ */
