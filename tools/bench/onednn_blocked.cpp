// onednn-blocked: oneDNN's convolution on the layouts it prefers, the baseline a framework that
// keeps its tensors in oneDNN's blocked layouts gets; onednn-winograd: the same by oneDNN's
// Winograd kernels (F(4x4, 3x3): 3x3 filters of stride 1), which a framework may ask for. Porta's
// op takes plain NCHW and reorders on every call (the vendor plugin's onednn row); here the inputs
// are reordered once, before timing, and the output stays blocked while timed. The call is queued
// on the Porta stream as a host function, as the vendor plugin queues its own, so that Porta's
// events time it the same way.
//
// A module of its own (lib/porta_bench_onednn.so, built where oneDNN is found) that porta-bench
// opens when it measures these rows (blocked_conv.cpp): porta-bench itself then runs where oneDNN
// is not installed (a GPU machine), and says why the rows are missing.
#include <omp.h>

#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string>

#include "case.h"

namespace bench {

namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

dt dnnl_type(porta_dtype_t dtype) {
  return dtype == PORTA_DTYPE_BF16 ? dt::bf16 : dtype == PORTA_DTYPE_F16 ? dt::f16 : dt::f32;
}

struct Blocked {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::primitive primitive;
  int in0_arg = 0, in1_arg = 0, out_arg = 0;
  std::vector<std::pair<dnnl::memory, dnnl::memory>> inputs;  // per set, in oneDNN's layouts
  std::vector<dnnl::memory> outs;                             // per set, in oneDNN's layout
  dnnl::memory out_plain, scratchpad;
  std::optional<dnnl::reorder> out_reorder;
  int threads = 1;
  std::mutex mutex;
  std::string error;  // the first failure of a queued call

  struct Call {
    Blocked* self;
    int set;  // -1: the output's reorder
  };
  std::vector<Call> calls;  // one per set, and the reorder last

  static void run(void* data) {
    const Call& call = *static_cast<Call*>(data);
    Blocked& b = *call.self;
    try {
      if (omp_get_max_threads() != b.threads) omp_set_num_threads(b.threads);
      dnnl::stream s(b.engine);
      if (call.set < 0) {
        if (b.out_reorder) b.out_reorder->execute(s, b.outs[0], b.out_plain);
      } else {
        b.primitive.execute(s, {{b.in0_arg, b.inputs[call.set].first},
                                {b.in1_arg, b.inputs[call.set].second},
                                {b.out_arg, b.outs[call.set]},
                                {DNNL_ARG_SCRATCHPAD, b.scratchpad}});
      }
      s.wait();
    } catch (const std::exception& e) {
      std::lock_guard lock(b.mutex);
      if (b.error.empty()) b.error = std::string("oneDNN: ") + e.what();
    }
  }

  void queue(porta_stream_t stream, Call& call) {
    porta::check(porta_stream_launch_host_func(stream, &Blocked::run, &call));
  }
};

// A primitive descriptor, oneDNN's refusal turned into UNSUPPORTED.
template <class Make>
auto make_pd(const std::string& what, Make&& make) -> decltype(make()) {
  try {
    return make();
  } catch (const dnnl::error& e) {
    if (e.status == dnnl_unimplemented || e.status == dnnl_invalid_arguments)
      throw porta::error(PORTA_ERROR_UNSUPPORTED, "oneDNN has no " + what + ": " + e.what());
    throw;
  }
}

}  // namespace

}  // namespace bench

// The module's one entry (BlockedConvEntry in case.h): porta-bench has checked that op is a
// convolution and made d and what.
extern "C" __attribute__((visibility("default"))) void porta_bench_make_blocked_conv(
    bench::Case& c, bench::Op op, const porta_conv2d_desc_t& d, bench::BlockedAlgorithm algorithm,
    const std::string& what, int threads) {
  using namespace bench;
  int64_t p = 0, q = 0;
  porta::check(porta_conv2d_output_size(&d, &p, &q));
  const dims x = {d.batch, d.in_channels, d.in_height, d.in_width};
  const dims w = {d.out_channels, d.in_channels, d.kernel_height, d.kernel_width};
  const dims y = {d.batch, d.out_channels, p, q};
  const dims strides = {d.stride_h, d.stride_w}, dilations = {0, 0}, pad = {d.pad_h, d.pad_w};
  const dt type = dnnl_type(d.dtype);
  const dnnl::algorithm kind = algorithm == BlockedAlgorithm::winograd
                                   ? dnnl::algorithm::convolution_winograd
                                   : dnnl::algorithm::convolution_direct;

  auto b = std::make_shared<Blocked>();
  b->threads = threads;
  // The reorders below run on this thread: the same threads as the timed calls.
  omp_set_num_threads(threads);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto forward = [&] {
    return dnnl::convolution_forward::primitive_desc({dnnl::prop_kind::forward_training,
                                                      kind,
                                                      {x, type, tag::any},
                                                      {w, type, tag::any},
                                                      {y, dt::f32, tag::any},
                                                      strides,
                                                      dilations,
                                                      pad,
                                                      pad},
                                                     attr, b->engine);
  };
  // The two inputs' and the output's plain descriptors and oneDNN's chosen ones.
  dnnl::memory::desc in0_plain, in1_plain, out_plain, in0, in1, out, scratchpad;
  switch (op) {
    case Op::conv_fwd: {
      auto pd = make_pd(what, forward);
      b->primitive = dnnl::convolution_forward(pd);
      b->in0_arg = DNNL_ARG_SRC, b->in1_arg = DNNL_ARG_WEIGHTS, b->out_arg = DNNL_ARG_DST;
      in0_plain = {x, type, tag::nchw}, in1_plain = {w, type, tag::oihw};
      out_plain = {y, dt::f32, tag::nchw};
      in0 = pd.src_desc(), in1 = pd.weights_desc(), out = pd.dst_desc();
      scratchpad = pd.scratchpad_desc();
      break;
    }
    case Op::conv_bwd_data: {
      auto pd = make_pd(what, [&] {
        return dnnl::convolution_backward_data::primitive_desc({kind,
                                                                {x, dt::f32, tag::any},
                                                                {w, type, tag::any},
                                                                {y, type, tag::any},
                                                                strides,
                                                                dilations,
                                                                pad,
                                                                pad},
                                                               attr, b->engine, forward());
      });
      b->primitive = dnnl::convolution_backward_data(pd);
      b->in0_arg = DNNL_ARG_DIFF_DST, b->in1_arg = DNNL_ARG_WEIGHTS;
      b->out_arg = DNNL_ARG_DIFF_SRC;
      in0_plain = {y, type, tag::nchw}, in1_plain = {w, type, tag::oihw};
      out_plain = {x, dt::f32, tag::nchw};
      in0 = pd.diff_dst_desc(), in1 = pd.weights_desc(), out = pd.diff_src_desc();
      scratchpad = pd.scratchpad_desc();
      break;
    }
    default: {
      auto pd = make_pd(what, [&] {
        return dnnl::convolution_backward_weights::primitive_desc({kind,
                                                                   {x, type, tag::any},
                                                                   {w, dt::f32, tag::any},
                                                                   {y, type, tag::any},
                                                                   strides,
                                                                   dilations,
                                                                   pad,
                                                                   pad},
                                                                  attr, b->engine, forward());
      });
      b->primitive = dnnl::convolution_backward_weights(pd);
      b->in0_arg = DNNL_ARG_SRC, b->in1_arg = DNNL_ARG_DIFF_DST;
      b->out_arg = DNNL_ARG_DIFF_WEIGHTS;
      in0_plain = {x, type, tag::nchw}, in1_plain = {y, type, tag::nchw};
      out_plain = {w, dt::f32, tag::oihw};
      in0 = pd.src_desc(), in1 = pd.diff_dst_desc(), out = pd.diff_weights_desc();
      scratchpad = pd.scratchpad_desc();
      break;
    }
  }

  // Every set's inputs into oneDNN's layouts, once: not part of what is timed.
  dnnl::stream s(b->engine);
  const auto prepared = [&](const dnnl::memory::desc& plain, const dnnl::memory::desc& chosen,
                            void* data) {
    dnnl::memory user(plain, b->engine, data);
    if (plain == chosen) return user;
    dnnl::memory mine(chosen, b->engine);
    dnnl::reorder(user, mine).execute(s, user, mine);
    return mine;
  };
  for (auto& set : c.inputs)
    b->inputs.emplace_back(prepared(in0_plain, in0, set[0].get()),
                           prepared(in1_plain, in1, set[1].get()));
  s.wait();
  b->out_plain = dnnl::memory(out_plain, b->engine, c.outputs[0].data());
  for (size_t set = 0; set < c.inputs.size(); ++set) {
    b->outs.push_back(out == out_plain ? dnnl::memory(out, b->engine, c.outputs[set].data())
                                       : dnnl::memory(out, b->engine));
  }
  if (out != out_plain) b->out_reorder = dnnl::reorder(b->outs[0], b->out_plain);
  b->scratchpad = dnnl::memory(scratchpad, b->engine);
  for (int set = 0; set < static_cast<int>(c.inputs.size()); ++set)
    b->calls.push_back({b.get(), set});
  b->calls.push_back({b.get(), -1});

  Blocked* raw = b.get();
  c.run = [raw](int set, porta_stream_t stream) { raw->queue(stream, raw->calls[set]); };
  c.to_plain = [raw](porta_stream_t stream) { raw->queue(stream, raw->calls.back()); };
  c.check = [raw] {
    std::lock_guard lock(raw->mutex);
    if (!raw->error.empty()) throw porta::error(PORTA_ERROR_BACKEND, raw->error);
  };
  c.library_state = std::move(b);
}
