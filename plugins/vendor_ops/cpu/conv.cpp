// conv2d forward, backward-data and backward-weights through oneDNN. Porta's tensors are plain
// NCHW (weights OIHW); the primitives are created with format_tag::any so that oneDNN picks its
// own (blocked) layouts, and the queued call reorders into and out of them. Primitives and their
// reorders are cached per descriptor and pass.
#include <optional>
#include <string_view>

#include "vendor_cpu.h"

namespace porta::vendor_cpu {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

enum class Pass { kForward, kBackwardData, kBackwardWeights };

const char* pass_name(Pass pass) {
  switch (pass) {
    case Pass::kForward:
      return "convolution forward";
    case Pass::kBackwardData:
      return "convolution backward-data";
    default:
      return "convolution backward-weights";
  }
}

// One pass: its primitive, the user's plain layouts and oneDNN's chosen ones for the two inputs
// and the output, and a reorder where they differ.
struct Conv {
  dnnl::primitive primitive;
  int in0_arg, in1_arg, out_arg;
  dnnl::memory::desc in0_user, in1_user, out_user;
  dnnl::memory::desc in0, in1, out;
  std::optional<dnnl::reorder> in0_reorder, in1_reorder, out_reorder;
  dnnl::memory::desc scratchpad;
};

Cache<Conv> convs;

struct Shapes {
  dims x, w, y, strides, dilations, padding;
};

Shapes shapes(const porta_conv2d_desc_t& d) {
  int64_t p = 0, q = 0;
  porta::check(porta_conv2d_output_size(&d, &p, &q));
  // oneDNN 2.x keeps strides, dilations and padding in 32-bit ints inside: a pad of 2^32 would
  // become 0 and compute another convolution, silently.
  check_32_bit("oneDNN's convolution", {{"batch", d.batch},
                                        {"in_channels", d.in_channels},
                                        {"in_height", d.in_height},
                                        {"in_width", d.in_width},
                                        {"out_channels", d.out_channels},
                                        {"kernel_height", d.kernel_height},
                                        {"kernel_width", d.kernel_width},
                                        {"pad_h", d.pad_h},
                                        {"pad_w", d.pad_w},
                                        {"stride_h", d.stride_h},
                                        {"stride_w", d.stride_w},
                                        {"dilation_h", d.dilation_h},
                                        {"dilation_w", d.dilation_w},
                                        {"output height", p},
                                        {"output width", q}});
  // oneDNN counts dilation from 0 (no gap); Porta from 1. The right padding equal to the left one
  // gives the same output size: oneDNN divides (in + pad_l + pad_r - extent) by the stride, as
  // Porta does, and the window never reaches past the last input it needs.
  return {{d.batch, d.in_channels, d.in_height, d.in_width},
          {d.out_channels, d.in_channels, d.kernel_height, d.kernel_width},
          {d.batch, d.out_channels, p, q},
          {d.stride_h, d.stride_w},
          {d.dilation_h - 1, d.dilation_w - 1},
          {d.pad_h, d.pad_w}};
}

dnnl::convolution_forward::primitive_desc forward_pd(const porta_conv2d_desc_t& d,
                                                     const Shapes& s) {
  const dt type = dnnl_type(d.dtype);
  dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training,
                                       dnnl::algorithm::convolution_direct, {s.x, type, tag::any},
                                       {s.w, type, tag::any}, {s.y, dt::f32, tag::any}, s.strides,
                                       s.dilations, s.padding, s.padding);
  return dnnl::convolution_forward::primitive_desc(desc, user_scratchpad(), engine());
}

// Fills the plain and chosen layouts and the reorders between them.
void plan(Conv& c, const dnnl::memory::desc& in0, const dnnl::memory::desc& in1,
          const dnnl::memory::desc& out) {
  c.in0 = in0;
  c.in1 = in1;
  c.out = out;
  auto reorder = [](const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
    return dnnl::reorder(dnnl::reorder::primitive_desc(engine(), from, engine(), to));
  };
  if (c.in0 != c.in0_user) c.in0_reorder = reorder(c.in0_user, c.in0);
  if (c.in1 != c.in1_user) c.in1_reorder = reorder(c.in1_user, c.in1);
  if (c.out != c.out_user) c.out_reorder = reorder(c.out, c.out_user);
}

// One of a pass's two inputs or its output: the primitive's argument, the user's plain layout and
// the one oneDNN chose.
struct Operand {
  int arg;
  dnnl::memory::desc user, chosen;
};

// Fills c from a pass's primitive descriptor: the primitive, its operands' layouts with the
// reorders between them, and its scratchpad.
template <class Primitive, class PrimitiveDesc>
void set_up(Conv& c, const PrimitiveDesc& pd, const Operand& in0, const Operand& in1,
            const Operand& out) {
  c.primitive = Primitive(pd);
  c.in0_arg = in0.arg, c.in1_arg = in1.arg, c.out_arg = out.arg;
  c.in0_user = in0.user;
  c.in1_user = in1.user;
  c.out_user = out.user;
  plan(c, in0.chosen, in1.chosen, out.chosen);
  c.scratchpad = pd.scratchpad_desc();
}

Conv make_conv(const porta_conv2d_desc_t& d, Pass pass) {
  const Shapes s = shapes(d);
  const dt type = dnnl_type(d.dtype);
  const std::string what =
      std::string(dtype_name(d.dtype)) + " " + pass_name(pass) + " with fp32 output";
  Conv c;
  switch (pass) {
    case Pass::kForward: {
      auto pd = make_pd(what, [&] { return forward_pd(d, s); });
      set_up<dnnl::convolution_forward>(
          c, pd, {DNNL_ARG_SRC, {s.x, type, tag::nchw}, pd.src_desc()},
          {DNNL_ARG_WEIGHTS, {s.w, type, tag::oihw}, pd.weights_desc()},
          {DNNL_ARG_DST, {s.y, dt::f32, tag::nchw}, pd.dst_desc()});
      break;
    }
    case Pass::kBackwardData: {
      auto pd = make_pd(what, [&] {
        dnnl::convolution_backward_data::desc desc(
            dnnl::algorithm::convolution_direct, {s.x, dt::f32, tag::any}, {s.w, type, tag::any},
            {s.y, type, tag::any}, s.strides, s.dilations, s.padding, s.padding);
        return dnnl::convolution_backward_data::primitive_desc(desc, user_scratchpad(), engine(),
                                                               forward_pd(d, s));
      });
      set_up<dnnl::convolution_backward_data>(
          c, pd, {DNNL_ARG_DIFF_DST, {s.y, type, tag::nchw}, pd.diff_dst_desc()},
          {DNNL_ARG_WEIGHTS, {s.w, type, tag::oihw}, pd.weights_desc()},
          {DNNL_ARG_DIFF_SRC, {s.x, dt::f32, tag::nchw}, pd.diff_src_desc()});
      break;
    }
    case Pass::kBackwardWeights: {
      auto pd = make_pd(what, [&] {
        dnnl::convolution_backward_weights::desc desc(
            dnnl::algorithm::convolution_direct, {s.x, type, tag::any}, {s.w, dt::f32, tag::any},
            {s.y, type, tag::any}, s.strides, s.dilations, s.padding, s.padding);
        dnnl::convolution_backward_weights::primitive_desc pd(desc, user_scratchpad(), engine(),
                                                              forward_pd(d, s));
        // oneDNN 2.6.3's AMX backward weights (jit:avx512_core_amx_bf16) returns wrong sums for
        // dilated layers (most of dw off, by as much as its scale; found by the op suite on a
        // Xeon with AMX): those take the next implementation oneDNN offers.
        const bool dilated = d.dilation_h > 1 || d.dilation_w > 1;
        auto amx = [&] {
          return std::string_view(pd.impl_info_str()).find("amx") != std::string_view::npos;
        };
        while (dilated && amx()) {
          if (!pd.next_impl()) {
            throw dnnl::error(dnnl_unimplemented, "no implementation but AMX for a dilated layer");
          }
        }
        return pd;
      });
      set_up<dnnl::convolution_backward_weights>(
          c, pd, {DNNL_ARG_SRC, {s.x, type, tag::nchw}, pd.src_desc()},
          {DNNL_ARG_DIFF_DST, {s.y, type, tag::nchw}, pd.diff_dst_desc()},
          {DNNL_ARG_DIFF_WEIGHTS, {s.w, dt::f32, tag::oihw}, pd.diff_weights_desc()});
      break;
    }
  }
  return c;
}

porta_status_t run(const char* op, Pass pass, const Op& context, const porta_conv2d_desc_t* desc,
                   const void* in0, const void* in1, float* out) {
  return guarded(op, [&] {
    const porta_conv2d_desc_t& d = *desc;
    const int threads = threads_for(context);
    auto conv = convs.get({static_cast<int64_t>(pass), d.dtype, d.batch, d.in_channels, d.in_height,
                           d.in_width, d.out_channels, d.kernel_height, d.kernel_width, d.pad_h,
                           d.pad_w, d.stride_h, d.stride_w, d.dilation_h, d.dilation_w},
                          [&] { return make_conv(d, pass); });
    enqueue(context, op, threads, [conv, in0, in1, out] {
      const dnnl::engine& e = engine();
      dnnl::stream s(e);
      // oneDNN takes non-const handles; inputs are only read.
      dnnl::memory user0(conv->in0_user, e, const_cast<void*>(in0));
      dnnl::memory user1(conv->in1_user, e, const_cast<void*>(in1));
      dnnl::memory user_out(conv->out_user, e, out);
      dnnl::memory m0 = user0, m1 = user1, mout = user_out;
      if (conv->in0_reorder) {
        m0 = dnnl::memory(conv->in0, e);
        conv->in0_reorder->execute(s, user0, m0);
      }
      if (conv->in1_reorder) {
        m1 = dnnl::memory(conv->in1, e);
        conv->in1_reorder->execute(s, user1, m1);
      }
      if (conv->out_reorder) mout = dnnl::memory(conv->out, e);
      dnnl::memory scratchpad(conv->scratchpad, e);
      conv->primitive.execute(s, {{conv->in0_arg, m0},
                                  {conv->in1_arg, m1},
                                  {conv->out_arg, mout},
                                  {DNNL_ARG_SCRATCHPAD, scratchpad}});
      if (conv->out_reorder) conv->out_reorder->execute(s, mout, user_out);
      s.wait();
    });
  });
}

}  // namespace

porta_status_t Ops::conv2d_forward(const Op* op, const porta_conv2d_forward_args_t* a) {
  return run("porta_conv2d_forward", Pass::kForward, *op, a->desc, a->x, a->w, a->y);
}

porta_status_t Ops::conv2d_backward_data(const Op* op, const porta_conv2d_backward_data_args_t* a) {
  return run("porta_conv2d_backward_data", Pass::kBackwardData, *op, a->desc, a->dy, a->w, a->dx);
}

porta_status_t Ops::conv2d_backward_weights(const Op* op,
                                            const porta_conv2d_backward_weights_args_t* a) {
  return run("porta_conv2d_backward_weights", Pass::kBackwardWeights, *op, a->desc, a->x, a->dy,
             a->dw);
}

void clear_conv_cache() { convs.clear(); }

}  // namespace porta::vendor_cpu
