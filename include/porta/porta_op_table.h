/*
 * porta_op_table.h: the operator set as one table, a row per op of porta_ops.h.
 *
 * A row is OP(name, fields): the op's name without "porta_", then the parameters of its public
 * entry point after the stream, as a sequence of (type, name) pairs. Everything that lists the
 * ops follows from the rows:
 *   - porta_<name>_args_t, the versioned argument struct an op plugin's slot receives
 *     (struct_size first, then the fields in order), declared below;
 *   - the slot of the op in porta_ops_interface_t (porta_plugin.h), in row order;
 *   - libporta's definition of porta_<name>, which checks the arguments (check_<name> in
 *     runtime/api_ops.cpp) and calls the slot of the stream's op plugin;
 *   - the loader's list of slots and its report (porta_plugin_report_t.ops, porta-info);
 *   - the registration of every in-tree op plugin (plugin_kit/op_plugin.h).
 * Adding an op is its declaration in porta_ops.h, its check in runtime/api_ops.cpp, a row
 * appended here and its implementations; docs/ops.md walks through it.
 *
 * Rows are appended, never reordered or removed: their order is the op plugin ABI's slot layout.
 * A field appended to a row extends that op's argument struct; a plugin reads it only when the
 * struct_size it receives covers it.
 */
#ifndef PORTA_PORTA_OP_TABLE_H_
#define PORTA_PORTA_OP_TABLE_H_

#include "porta_ops.h"

/* clang-format off */
#define PORTA_OP_TABLE(OP)                                                                        \
  OP(gemm, (const porta_gemm_desc_t*, desc)(const void*, a)(const void*, b)(float*, c))            \
  OP(conv2d_forward, (const porta_conv2d_desc_t*, desc)(const void*, x)(const void*, w)            \
                     (float*, y))                                                                  \
  OP(conv2d_backward_data, (const porta_conv2d_desc_t*, desc)(const void*, dy)(const void*, w)     \
                           (float*, dx))                                                           \
  OP(conv2d_backward_weights, (const porta_conv2d_desc_t*, desc)(const void*, x)(const void*, dy)  \
                              (float*, dw))                                                        \
  OP(softmax_forward, (porta_softmax_mode_t, mode)(int64_t, rows)(int64_t, cols)(const float*, x) \
                      (float*, y))                                                                 \
  OP(softmax_backward, (porta_softmax_mode_t, mode)(int64_t, rows)(int64_t, cols)                 \
                       (const float*, y)(const float*, dy)(float*, dx))                            \
  OP(cross_entropy, (int64_t, rows)(int64_t, cols)(const float*, logits)(const int32_t*, labels)  \
                    (float*, loss)(float*, dlogits))                                               \
  OP(bias_add, (int64_t, batch)(int64_t, channels)(int64_t, spatial)(const float*, x)             \
               (const float*, bias)(float*, y))                                                    \
  OP(bias_backward, (int64_t, batch)(int64_t, channels)(int64_t, spatial)(const float*, dy)       \
                    (float*, dbias))                                                               \
  OP(relu_forward, (int64_t, count)(const float*, x)(float*, y))                                   \
  OP(relu_backward, (int64_t, count)(const float*, x)(const float*, dy)(float*, dx))               \
  OP(max_pool2d_forward, (const porta_pool2d_desc_t*, desc)(const float*, x)(float*, y))           \
  OP(max_pool2d_backward, (const porta_pool2d_desc_t*, desc)(const float*, x)(const float*, dy)    \
                          (float*, dx))                                                            \
  OP(sgd_update, (int64_t, count)(float*, weights)(const float*, grads)(float*, velocity)         \
                 (float, learning_rate)(float, momentum)(float, weight_decay))                     \
  OP(adam_update, (int64_t, count)(float*, weights)(const float*, grads)(float*, m)(float*, v)    \
                  (const porta_adam_params_t*, params))                                            \
  OP(convert, (int64_t, count)(porta_dtype_t, src_dtype)(const void*, src)                        \
              (porta_dtype_t, dst_dtype)(void*, dst))
/* clang-format on */

/* Walking a row's (type, name) sequence: PORTA_OP_FIELDS(EACH, fields) expands to
 * EACH(type, name) for every pair, in order. Two macros take turns, as the preprocessor does not
 * re-enter a macro while expanding it, and the last turn's name is pasted with _END into
 * nothing. EACH must be one of the walkers below (each needs its pair). */
#define PORTA_OP_FIELDS(EACH, fields) PORTA_OP_FIELDS_END_(EACH##_A_ fields)
#define PORTA_OP_FIELDS_END_(...) PORTA_OP_FIELDS_PASTE_(__VA_ARGS__)
#define PORTA_OP_FIELDS_PASTE_(...) __VA_ARGS__##END_

/* clang-format off */
/* PORTA_OP_MEMBER: "type name;" */
#define PORTA_OP_MEMBER_A_(type, name) type name; PORTA_OP_MEMBER_B_
#define PORTA_OP_MEMBER_B_(type, name) type name; PORTA_OP_MEMBER_A_
#define PORTA_OP_MEMBER_A_END_
#define PORTA_OP_MEMBER_B_END_
/* PORTA_OP_PARAM: ", type name" (a parameter list after a first parameter) */
#define PORTA_OP_PARAM_A_(type, name) , type name PORTA_OP_PARAM_B_
#define PORTA_OP_PARAM_B_(type, name) , type name PORTA_OP_PARAM_A_
#define PORTA_OP_PARAM_A_END_
#define PORTA_OP_PARAM_B_END_
/* PORTA_OP_VALUE: ", name" (an argument list or initialiser after a first value) */
#define PORTA_OP_VALUE_A_(type, name) , name PORTA_OP_VALUE_B_
#define PORTA_OP_VALUE_B_(type, name) , name PORTA_OP_VALUE_A_
#define PORTA_OP_VALUE_A_END_
#define PORTA_OP_VALUE_B_END_
/* clang-format on */

#ifdef __cplusplus
extern "C" {
#endif

/* The argument struct of each op: porta_<name>_args_t. */
#define PORTA_OP_ARGS_STRUCT_(name, fields)  \
  typedef struct porta_##name##_args_s {     \
    size_t struct_size;                      \
    PORTA_OP_FIELDS(PORTA_OP_MEMBER, fields) \
  } porta_##name##_args_t;
PORTA_OP_TABLE(PORTA_OP_ARGS_STRUCT_)
#undef PORTA_OP_ARGS_STRUCT_

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PORTA_PORTA_OP_TABLE_H_ */
