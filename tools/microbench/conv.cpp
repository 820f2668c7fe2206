// 2-D convolution, fp32, NCHW, forward, backward-data and backward-weights, on the quick (Q)
// shapes of porta-bench's suites. FLOPs = 2*N*K*C*R*S*P*Q (the direct count) for each direction.
//   conv_fwd/porta/<W>x<H>x<C>_n<N>_k<K>_<R>x<S>          porta_conv2d_forward etc.
//   conv_fwd/onednn/...           oneDNN convolution primitives on the same plain NCHW / OIHW
//                                 layouts as Porta
//   conv_fwd/onednn_blocked/...   the same with format_tag::any: the layouts oneDNN prefers
//                                 (nChw16c, ...); inputs are reordered before timing, outputs
//                                 after, so this shows what the plain layout costs oneDNN
// (conv_bwd_data/..., conv_bwd_weights/... likewise). Shape names add _pad<p> and _stride<s>
// when the padding is not "same" or the stride is not 1.
#include <array>
#include <cstdio>

#include "baselines.h"

namespace microbench {
namespace {

enum class Direction { forward, backward_data, backward_weights };

const char* op_name(Direction d) {
  switch (d) {
    case Direction::forward:
      return "conv_fwd";
    case Direction::backward_data:
      return "conv_bwd_data";
    case Direction::backward_weights:
      return "conv_bwd_weights";
  }
  return "?";
}

// DeepBench's names: W, H, C, N, K, S (filter width), R (filter height), pads, strides.
struct ConvShape {
  int64_t w, h, c, n, k, s, r, pad_w, pad_h, stride_w, stride_h;

  int64_t p() const { return (h + 2 * pad_h - r) / stride_h + 1; }  // output height
  int64_t q() const { return (w + 2 * pad_w - s) / stride_w + 1; }  // output width
  size_t x_size() const { return static_cast<size_t>(n * c * h * w); }
  size_t w_size() const { return static_cast<size_t>(k * c * r * s); }
  size_t y_size() const { return static_cast<size_t>(n * k * p() * q()); }
  double gflop() const { return 2.0 * n * k * c * r * s * p() * q() / 1e9; }

  std::string name() const {
    char text[160];
    int len = std::snprintf(
        text, sizeof text, "%lldx%lldx%lld_n%lld_k%lld_%lldx%lld", static_cast<long long>(w),
        static_cast<long long>(h), static_cast<long long>(c), static_cast<long long>(n),
        static_cast<long long>(k), static_cast<long long>(r), static_cast<long long>(s));
    if (pad_h != (r - 1) / 2 || pad_w != (s - 1) / 2) {
      len +=
          std::snprintf(text + len, sizeof text - len, "_pad%lld", static_cast<long long>(pad_h));
    }
    if (stride_h != 1 || stride_w != 1) {
      std::snprintf(text + len, sizeof text - len, "_stride%lld", static_cast<long long>(stride_h));
    }
    return text;
  }

  porta_conv2d_desc_t desc() const {
    porta_conv2d_desc_t d{};
    d.struct_size = sizeof d;
    d.batch = n, d.in_channels = c, d.in_height = h, d.in_width = w;
    d.out_channels = k, d.kernel_height = r, d.kernel_width = s;
    d.pad_h = pad_h, d.pad_w = pad_w;
    d.stride_h = stride_h, d.stride_w = stride_w;
    d.dilation_h = 1, d.dilation_w = 1;
    d.dtype = PORTA_DTYPE_F32;
    return d;
  }
};

// DeepBench training conv layers 2, 3 (with N = 4), 4 and 6.
const ConvShape kShapes[] = {
    {56, 56, 64, 4, 64, 3, 3, 1, 1, 1, 1},
    {28, 28, 128, 4, 128, 3, 3, 1, 1, 1, 1},
    {7, 7, 512, 16, 512, 3, 3, 1, 1, 1, 1},
    {14, 14, 1024, 16, 256, 1, 1, 0, 0, 1, 1},
};

struct ConvProblem {
  ConvShape shape;
  int sets = 1;
  std::vector<std::vector<float>> x, w, dy;  // per set; dy has y's shape
  // Per direction: sampled exact outputs and the baseline's full output, for set 0.
  std::array<Samples, 3> samples;
  std::array<std::vector<float>, 3> reference;
  std::string reference_name;

  size_t out_size(Direction d) const {
    switch (d) {
      case Direction::forward:
        return shape.y_size();
      case Direction::backward_data:
        return shape.x_size();
      case Direction::backward_weights:
        return shape.w_size();
    }
    return 0;
  }
  void check(Direction d, const std::string& impl, const float* out) const {
    const std::string what = std::string(op_name(d)) + " " + impl;
    check_samples(what, out, samples.at(static_cast<size_t>(d)));
    const auto& ref = reference.at(static_cast<size_t>(d));
    if (!ref.empty() && impl != reference_name) check_reference(what, out, ref, reference_name);
  }
};

// The output element `index` of direction d for set 0, in double, from the definition.
double exact_output(const ConvProblem& p, Direction d, size_t index) {
  const ConvShape& s = p.shape;
  const int64_t P = s.p(), Q = s.q();
  const float* x = p.x[0].data();
  const float* w = p.w[0].data();
  const float* dy = p.dy[0].data();
  auto X = [&](int64_t n, int64_t c, int64_t ih, int64_t iw) {
    return static_cast<double>(x[((n * s.c + c) * s.h + ih) * s.w + iw]);
  };
  auto W = [&](int64_t k, int64_t c, int64_t r, int64_t t) {
    return static_cast<double>(w[((k * s.c + c) * s.r + r) * s.s + t]);
  };
  auto DY = [&](int64_t n, int64_t k, int64_t op, int64_t oq) {
    return static_cast<double>(dy[((n * s.k + k) * P + op) * Q + oq]);
  };
  double sum = 0.0;
  int64_t i = static_cast<int64_t>(index);
  switch (d) {
    case Direction::forward: {
      const int64_t oq = i % Q, op = (i / Q) % P, k = (i / (P * Q)) % s.k, n = i / (P * Q * s.k);
      for (int64_t c = 0; c < s.c; ++c)
        for (int64_t r = 0; r < s.r; ++r)
          for (int64_t t = 0; t < s.s; ++t) {
            const int64_t ih = op * s.stride_h - s.pad_h + r, iw = oq * s.stride_w - s.pad_w + t;
            if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w) sum += X(n, c, ih, iw) * W(k, c, r, t);
          }
      break;
    }
    case Direction::backward_data: {
      const int64_t iw = i % s.w, ih = (i / s.w) % s.h, c = (i / (s.w * s.h)) % s.c,
                    n = i / (s.w * s.h * s.c);
      for (int64_t k = 0; k < s.k; ++k)
        for (int64_t r = 0; r < s.r; ++r)
          for (int64_t t = 0; t < s.s; ++t) {
            const int64_t ph = ih + s.pad_h - r, pw = iw + s.pad_w - t;
            if (ph < 0 || pw < 0 || ph % s.stride_h || pw % s.stride_w) continue;
            const int64_t op = ph / s.stride_h, oq = pw / s.stride_w;
            if (op < P && oq < Q) sum += DY(n, k, op, oq) * W(k, c, r, t);
          }
      break;
    }
    case Direction::backward_weights: {
      const int64_t t = i % s.s, r = (i / s.s) % s.r, c = (i / (s.s * s.r)) % s.c,
                    k = i / (s.s * s.r * s.c);
      for (int64_t n = 0; n < s.n; ++n)
        for (int64_t op = 0; op < P; ++op)
          for (int64_t oq = 0; oq < Q; ++oq) {
            const int64_t ih = op * s.stride_h - s.pad_h + r, iw = oq * s.stride_w - s.pad_w + t;
            if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w)
              sum += DY(n, k, op, oq) * X(n, c, ih, iw);
          }
      break;
    }
  }
  return sum;
}

std::string rotation_label(int sets) {
  return sets > 1 ? " (" + std::to_string(sets) + " input sets)" : "";
}

#if PORTA_MICROBENCH_HAVE_DNNL
// One oneDNN convolution primitive of direction d, plain (nchw/oihw) or in its preferred layouts.
struct DnnlConv {
  struct Operand {
    int arg;
    dnnl::memory::desc md, plain;
  };
  dnnl::primitive prim;
  Operand in0, in1, out;  // in0/in1: (x, w), (dy, w) or (x, dy)
  std::string impl;

  DnnlConv(const ConvShape& s, Direction d, bool blocked) {
    using tag = dnnl::memory::format_tag;
    const auto f32 = dnnl::memory::data_type::f32;
    const dnnl::memory::desc x_plain({s.n, s.c, s.h, s.w}, f32, tag::nchw);
    const dnnl::memory::desc w_plain({s.k, s.c, s.r, s.s}, f32, tag::oihw);
    const dnnl::memory::desc y_plain({s.n, s.k, s.p(), s.q()}, f32, tag::nchw);
    const dnnl::memory::desc x_md =
        blocked ? dnnl::memory::desc({s.n, s.c, s.h, s.w}, f32, tag::any) : x_plain;
    const dnnl::memory::desc w_md =
        blocked ? dnnl::memory::desc({s.k, s.c, s.r, s.s}, f32, tag::any) : w_plain;
    const dnnl::memory::desc y_md =
        blocked ? dnnl::memory::desc({s.n, s.k, s.p(), s.q()}, f32, tag::any) : y_plain;
    const dnnl::memory::dims strides{s.stride_h, s.stride_w}, pad{s.pad_h, s.pad_w};
    const auto algo = dnnl::algorithm::convolution_direct;
    dnnl::convolution_forward::primitive_desc fpd(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, algo, x_md, w_md, y_md,
                                        strides, pad, pad),
        dnnl_engine());
    switch (d) {
      case Direction::forward:
        prim = dnnl::convolution_forward(fpd);
        in0 = {DNNL_ARG_SRC, fpd.src_desc(), x_plain};
        in1 = {DNNL_ARG_WEIGHTS, fpd.weights_desc(), w_plain};
        out = {DNNL_ARG_DST, fpd.dst_desc(), y_plain};
        impl = fpd.impl_info_str();
        break;
      case Direction::backward_data: {
        dnnl::convolution_backward_data::primitive_desc pd(
            dnnl::convolution_backward_data::desc(algo, x_md, w_md, y_md, strides, pad, pad),
            dnnl_engine(), fpd);
        prim = dnnl::convolution_backward_data(pd);
        in0 = {DNNL_ARG_DIFF_DST, pd.diff_dst_desc(), y_plain};
        in1 = {DNNL_ARG_WEIGHTS, pd.weights_desc(), w_plain};
        out = {DNNL_ARG_DIFF_SRC, pd.diff_src_desc(), x_plain};
        impl = pd.impl_info_str();
        break;
      }
      case Direction::backward_weights: {
        dnnl::convolution_backward_weights::primitive_desc pd(
            dnnl::convolution_backward_weights::desc(algo, x_md, w_md, y_md, strides, pad, pad),
            dnnl_engine(), fpd);
        prim = dnnl::convolution_backward_weights(pd);
        in0 = {DNNL_ARG_SRC, pd.src_desc(), x_plain};
        in1 = {DNNL_ARG_DIFF_DST, pd.diff_dst_desc(), y_plain};
        out = {DNNL_ARG_DIFF_WEIGHTS, pd.diff_weights_desc(), w_plain};
        impl = pd.impl_info_str();
        break;
      }
    }
  }
};

// The host arrays of set `set` that are in0 and in1 of direction d.
std::pair<const float*, const float*> inputs_of(const ConvProblem& p, Direction d, int set) {
  switch (d) {
    case Direction::forward:
      return {p.x[set].data(), p.w[set].data()};
    case Direction::backward_data:
      return {p.dy[set].data(), p.w[set].data()};
    case Direction::backward_weights:
      return {p.x[set].data(), p.dy[set].data()};
  }
  return {nullptr, nullptr};
}
#endif

std::shared_ptr<ConvProblem> conv_problem(const ConvShape& shape) {
  return shared_problem<ConvProblem>("conv/" + shape.name(), [&] {
    auto p = std::make_shared<ConvProblem>();
    p->shape = shape;
    p->sets = rotation_sets((shape.x_size() + shape.w_size() + shape.y_size()) * sizeof(float));
    for (int s = 0; s < p->sets; ++s) {
      p->x.push_back(random_normal(shape.x_size(), 2000 + 3 * s));
      p->w.push_back(random_normal(shape.w_size(), 2001 + 3 * s));
      p->dy.push_back(random_normal(shape.y_size(), 2002 + 3 * s));
    }
    for (Direction d :
         {Direction::forward, Direction::backward_data, Direction::backward_weights}) {
      Samples& samples = p->samples.at(static_cast<size_t>(d));
      samples.index = sample_indices(p->out_size(d), 256, 11 + static_cast<int>(d));
      for (size_t index : samples.index) samples.value.push_back(exact_output(*p, d, index));
#if PORTA_MICROBENCH_HAVE_DNNL
      // The full reference for Porta's cross-check: oneDNN on the plain layouts.
      DnnlConv conv(shape, d, false);
      auto [in0, in1] = inputs_of(*p, d, 0);
      std::vector<float>& ref = p->reference.at(static_cast<size_t>(d));
      ref.resize(p->out_size(d));
      conv.prim.execute(
          dnnl_stream(),
          {{conv.in0.arg, dnnl::memory(conv.in0.md, dnnl_engine(), const_cast<float*>(in0))},
           {conv.in1.arg, dnnl::memory(conv.in1.md, dnnl_engine(), const_cast<float*>(in1))},
           {conv.out.arg, dnnl::memory(conv.out.md, dnnl_engine(), ref.data())}});
      dnnl_stream().wait();
      p->reference_name = "onednn";
      check_samples(std::string(op_name(d)) + " onednn (reference)", ref.data(), samples);
#endif
    }
    return p;
  });
}

class PortaConv : public Case {
 public:
  PortaConv(const ConvShape& shape, Direction d) : p_(conv_problem(shape)), d_(d) {
    require_porta();
    desc_ = shape.desc();
    sets = p_->sets;
    for (int i = 0; i < sets; ++i) {
      switch (d) {
        case Direction::forward:
          in0_.push_back(to_device(p_->x[i]));
          in1_.push_back(to_device(p_->w[i]));
          break;
        case Direction::backward_data:
          in0_.push_back(to_device(p_->dy[i]));
          in1_.push_back(to_device(p_->w[i]));
          break;
        case Direction::backward_weights:
          in0_.push_back(to_device(p_->x[i]));
          in1_.push_back(to_device(p_->dy[i]));
          break;
      }
      out_.emplace_back(environment().device, p_->out_size(d));
    }
    run(0);
    p_->check(d, "porta", to_host(out_[0]).data());
    label = environment().backend + rotation_label(sets);
  }
  void run(int set) override {
    porta_stream_t stream = environment().stream->get();
    const void* a = in0_[set].data();
    const void* b = in1_[set].data();
    float* out = out_[set].data();
    switch (d_) {
      case Direction::forward:
        porta_check(porta_conv2d_forward(stream, &desc_, a, b, out), "porta_conv2d_forward");
        break;
      case Direction::backward_data:
        porta_check(porta_conv2d_backward_data(stream, &desc_, a, b, out),
                    "porta_conv2d_backward_data");
        break;
      case Direction::backward_weights:
        porta_check(porta_conv2d_backward_weights(stream, &desc_, a, b, out),
                    "porta_conv2d_backward_weights");
        break;
    }
    porta_check(porta_stream_synchronize(stream), "porta_conv2d (stream)");
  }

 private:
  std::shared_ptr<ConvProblem> p_;
  Direction d_;
  porta_conv2d_desc_t desc_;
  std::vector<porta::device_buffer<float>> in0_, in1_, out_;
};

#if PORTA_MICROBENCH_HAVE_DNNL
class OnednnConv : public Case {
 public:
  OnednnConv(const ConvShape& shape, Direction d, bool blocked)
      : p_(conv_problem(shape)), conv_(shape, d, blocked) {
    sets = p_->sets;
    for (int i = 0; i < sets; ++i) {
      auto [in0, in1] = inputs_of(*p_, d, i);
      args_.push_back({{conv_.in0.arg, dnnl_input(conv_.in0.md, conv_.in0.plain, in0)},
                       {conv_.in1.arg, dnnl_input(conv_.in1.md, conv_.in1.plain, in1)},
                       {conv_.out.arg, dnnl::memory(conv_.out.md, dnnl_engine())}});
    }
    run(0);
    p_->check(d, blocked ? "onednn_blocked" : "onednn",
              dnnl_to_plain(args_[0].at(conv_.out.arg), conv_.out.plain).data());
    label = conv_.impl;
    if (blocked) {
      label += conv_.in0.md == conv_.in0.plain && conv_.in1.md == conv_.in1.plain &&
                       conv_.out.md == conv_.out.plain
                   ? " (chose the plain layouts)"
                   : " (blocked layouts)";
    }
    label += rotation_label(sets);
  }
  void run(int set) override {
    conv_.prim.execute(dnnl_stream(), args_[set]);
    dnnl_stream().wait();
  }

 private:
  std::shared_ptr<ConvProblem> p_;
  DnnlConv conv_;
  std::vector<std::unordered_map<int, dnnl::memory>> args_;
};
#endif

}  // namespace

void register_conv() {
  for (const ConvShape& shape : kShapes) {
    for (Direction d :
         {Direction::forward, Direction::backward_data, Direction::backward_weights}) {
      const std::string suffix = shape.name();
      const std::string op = op_name(d);
      add_benchmark(
          op + "/porta/" + suffix, [shape, d] { return std::make_unique<PortaConv>(shape, d); },
          shape.gflop(), "GFLOP/s");
#if PORTA_MICROBENCH_HAVE_DNNL
      add_benchmark(
          op + "/onednn/" + suffix,
          [shape, d] { return std::make_unique<OnednnConv>(shape, d, false); }, shape.gflop(),
          "GFLOP/s");
      add_benchmark(
          op + "/onednn_blocked/" + suffix,
          [shape, d] { return std::make_unique<OnednnConv>(shape, d, true); }, shape.gflop(),
          "GFLOP/s");
#endif
    }
  }
}

}  // namespace microbench
