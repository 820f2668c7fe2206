// Softmax and log-softmax (forward and backward), ReLU (forward and backward), bias add and its
// gradient through oneDNN, on Porta's plain layouts: each is one primitive on user memory, cached
// per shape.
#include <unordered_map>
#include <utility>

#include "vendor_cpu.h"

namespace porta::vendor_cpu {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// A primitive and its arguments' layouts, all plain fp32.
struct Cached {
  dnnl::primitive primitive;
  dnnl::memory::desc scratchpad;
  std::unordered_map<int, dnnl::memory::desc> args;
};

Cache<Cached> ops;

enum Kind : int64_t {
  kSoftmaxForward,
  kLogSoftmaxForward,
  kSoftmaxBackward,
  kLogSoftmaxBackward,
  kReluForward,
  kReluBackward,
  kBiasAdd,
  kBiasBackward,
};

dnnl::memory::desc matrix(int64_t rows, int64_t cols) { return {{rows, cols}, dt::f32, tag::ab}; }
dnnl::memory::desc vector(int64_t count) { return {{count}, dt::f32, tag::a}; }
dnnl::memory::desc channels(int64_t batch, int64_t channels, int64_t spatial) {
  return {{batch, channels, spatial}, dt::f32, tag::abc};
}

// The primitive of a primitive descriptor, with the scratchpad it needs.
template <class Primitive, class Pd>
Cached built(const Pd& pd) {
  return Cached{Primitive(pd), pd.scratchpad_desc(), {}};
}

Cached make_primitive(Kind kind, int64_t d0, int64_t d1, int64_t d2) {
  const dnnl::engine& e = engine();
  const dnnl::primitive_attr attr = user_scratchpad();
  const auto training = dnnl::prop_kind::forward_training;
  switch (kind) {
    case kSoftmaxForward:
      return built<dnnl::softmax_forward>(make_pd("softmax forward", [&] {
        return dnnl::softmax_forward::primitive_desc({training, matrix(d0, d1), 1}, attr, e);
      }));
    case kLogSoftmaxForward:
      return built<dnnl::logsoftmax_forward>(make_pd("log-softmax forward", [&] {
        // Its log(sum) is a polynomial good to ~2^-18 absolute (tests/ops/test_softmax.cpp).
        return dnnl::logsoftmax_forward::primitive_desc({training, matrix(d0, d1), 1}, attr, e);
      }));
    case kSoftmaxBackward:
      return built<dnnl::softmax_backward>(make_pd("softmax backward", [&] {
        dnnl::softmax_forward::primitive_desc hint({training, matrix(d0, d1), 1}, e);
        return dnnl::softmax_backward::primitive_desc({matrix(d0, d1), matrix(d0, d1), 1}, attr, e,
                                                      hint);
      }));
    case kLogSoftmaxBackward:
      return built<dnnl::logsoftmax_backward>(make_pd("log-softmax backward", [&] {
        dnnl::logsoftmax_forward::primitive_desc hint({training, matrix(d0, d1), 1}, e);
        return dnnl::logsoftmax_backward::primitive_desc({matrix(d0, d1), matrix(d0, d1), 1}, attr,
                                                         e, hint);
      }));
    case kReluForward:
      return built<dnnl::eltwise_forward>(make_pd("ReLU forward", [&] {
        return dnnl::eltwise_forward::primitive_desc(
            {training, dnnl::algorithm::eltwise_relu, vector(d0), 0.0f}, attr, e);
      }));
    case kReluBackward:
      return built<dnnl::eltwise_backward>(make_pd("ReLU backward", [&] {
        dnnl::eltwise_forward::primitive_desc hint(
            {training, dnnl::algorithm::eltwise_relu, vector(d0), 0.0f}, attr, e);
        return dnnl::eltwise_backward::primitive_desc(
            {dnnl::algorithm::eltwise_relu, vector(d0), vector(d0), 0.0f}, attr, e, hint);
      }));
    case kBiasAdd:
      return built<dnnl::binary>(make_pd("bias add (binary add)", [&] {
        return dnnl::binary::primitive_desc({dnnl::algorithm::binary_add, channels(d0, d1, d2),
                                             channels(1, d1, 1), channels(d0, d1, d2)},
                                            attr, e);
      }));
    case kBiasBackward:
    default:
      return built<dnnl::reduction>(make_pd("bias gradient (sum reduction)", [&] {
        return dnnl::reduction::primitive_desc(
            {dnnl::algorithm::reduction_sum, channels(d0, d1, d2), channels(1, d1, 1), 0.0f, 0.0f},
            attr, e);
      }));
  }
}

Cached make(Kind kind, int64_t d0, int64_t d1, int64_t d2) {
  Cached op = make_primitive(kind, d0, d1, d2);
  switch (kind) {
    case kSoftmaxForward:
    case kLogSoftmaxForward:
      op.args = {{DNNL_ARG_SRC, matrix(d0, d1)}, {DNNL_ARG_DST, matrix(d0, d1)}};
      break;
    case kSoftmaxBackward:
    case kLogSoftmaxBackward:
      op.args = {{DNNL_ARG_DST, matrix(d0, d1)},
                 {DNNL_ARG_DIFF_DST, matrix(d0, d1)},
                 {DNNL_ARG_DIFF_SRC, matrix(d0, d1)}};
      break;
    case kReluForward:
      op.args = {{DNNL_ARG_SRC, vector(d0)}, {DNNL_ARG_DST, vector(d0)}};
      break;
    case kReluBackward:
      op.args = {{DNNL_ARG_SRC, vector(d0)},
                 {DNNL_ARG_DIFF_DST, vector(d0)},
                 {DNNL_ARG_DIFF_SRC, vector(d0)}};
      break;
    case kBiasAdd:
      op.args = {{DNNL_ARG_SRC_0, channels(d0, d1, d2)},
                 {DNNL_ARG_SRC_1, channels(1, d1, 1)},
                 {DNNL_ARG_DST, channels(d0, d1, d2)}};
      break;
    case kBiasBackward:
      op.args = {{DNNL_ARG_SRC, channels(d0, d1, d2)}, {DNNL_ARG_DST, channels(1, d1, 1)}};
      break;
  }
  return op;
}

// Runs the primitive for kind and shape on the stream with the given (argument, pointer) pairs;
// each pointer is described by the layout the argument has in that primitive.
porta_status_t run(const char* op, const Op& context, Kind kind, int64_t d0, int64_t d1, int64_t d2,
                   std::vector<std::pair<int, const float*>> args) {
  return guarded(op, [&] {
    const int threads = threads_for(context);
    auto prim = ops.get({kind, d0, d1, d2}, [&] { return make(kind, d0, d1, d2); });
    enqueue(context, op, threads, [prim, args = std::move(args)] {
      const dnnl::engine& e = engine();
      dnnl::stream s(e);
      std::unordered_map<int, dnnl::memory> memories;
      for (auto [arg, ptr] : args) {
        // oneDNN takes non-const handles; inputs are only read.
        memories.emplace(arg, dnnl::memory(prim->args.at(arg), e, const_cast<float*>(ptr)));
      }
      memories.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(prim->scratchpad, e));
      prim->primitive.execute(s, memories);
      s.wait();
    });
  });
}

}  // namespace

porta_status_t Ops::softmax_forward(const Op* op, const porta_softmax_forward_args_t* a) {
  return run("porta_softmax_forward", *op,
             a->mode == PORTA_LOG_SOFTMAX ? kLogSoftmaxForward : kSoftmaxForward, a->rows, a->cols,
             0, {{DNNL_ARG_SRC, a->x}, {DNNL_ARG_DST, a->y}});
}

porta_status_t Ops::softmax_backward(const Op* op, const porta_softmax_backward_args_t* a) {
  return run("porta_softmax_backward", *op,
             a->mode == PORTA_LOG_SOFTMAX ? kLogSoftmaxBackward : kSoftmaxBackward, a->rows,
             a->cols, 0,
             {{DNNL_ARG_DST, a->y}, {DNNL_ARG_DIFF_DST, a->dy}, {DNNL_ARG_DIFF_SRC, a->dx}});
}

porta_status_t Ops::relu_forward(const Op* op, const porta_relu_forward_args_t* a) {
  return run("porta_relu_forward", *op, kReluForward, a->count, 0, 0,
             {{DNNL_ARG_SRC, a->x}, {DNNL_ARG_DST, a->y}});
}

porta_status_t Ops::relu_backward(const Op* op, const porta_relu_backward_args_t* a) {
  return run("porta_relu_backward", *op, kReluBackward, a->count, 0, 0,
             {{DNNL_ARG_SRC, a->x}, {DNNL_ARG_DIFF_DST, a->dy}, {DNNL_ARG_DIFF_SRC, a->dx}});
}

porta_status_t Ops::bias_add(const Op* op, const porta_bias_add_args_t* a) {
  return run("porta_bias_add", *op, kBiasAdd, a->batch, a->channels, a->spatial,
             {{DNNL_ARG_SRC_0, a->x}, {DNNL_ARG_SRC_1, a->bias}, {DNNL_ARG_DST, a->y}});
}

porta_status_t Ops::bias_backward(const Op* op, const porta_bias_backward_args_t* a) {
  // Nothing to reduce: oneDNN refuses a reduction whose output has the input's shape.
  if (a->batch == 1 && a->spatial == 1) {
    return guarded("porta_bias_backward", [&] {
      porta::check(porta_memcpy_async(
          a->dbias, a->dy, static_cast<size_t>(a->channels) * sizeof(float), op->stream));
    });
  }
  return run("porta_bias_backward", *op, kBiasBackward, a->batch, a->channels, a->spatial,
             {{DNNL_ARG_SRC, a->dy}, {DNNL_ARG_DST, a->dbias}});
}

void clear_dnnl_ops_cache() { ops.clear(); }

}  // namespace porta::vendor_cpu
