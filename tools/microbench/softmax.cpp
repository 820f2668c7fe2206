// Softmax forward over the rows of a rows x cols fp32 matrix, out of place. Reported in GB/s of
// the bound: 2*rows*cols*sizeof(float) bytes (read once, write once; as porta-bench rates row ops).
//   softmax_fwd/porta/<rows>x<cols>    porta_softmax_forward(PORTA_SOFTMAX)
//   softmax_fwd/onednn/<rows>x<cols>   a dnnl::softmax_forward primitive, axis 1
#include <algorithm>
#include <cmath>

#include "baselines.h"

namespace microbench {
namespace {

struct SoftmaxShape {
  int64_t rows, cols;
  std::string name() const { return std::to_string(rows) + "x" + std::to_string(cols); }
  size_t size() const { return static_cast<size_t>(rows * cols); }
  double gb() const { return 2.0 * size() * sizeof(float) / 1e9; }
};

const SoftmaxShape kShapes[] = {{16384, 1024}};

struct SoftmaxProblem {
  SoftmaxShape shape;
  int sets = 1;
  std::vector<std::vector<float>> x;
  Samples samples;  // whole rows, exact
  std::vector<float> reference;
  std::string reference_name;

  // Softmax outputs are positive and not tiny: checked element by element.
  void check(const std::string& impl, const float* y) const {
    check_samples("softmax_fwd " + impl, y, samples, true);
    if (!reference.empty() && impl != reference_name) {
      check_reference("softmax_fwd " + impl, y, reference, reference_name, true);
    }
  }
};

#if PORTA_MICROBENCH_HAVE_DNNL
dnnl::softmax_forward::primitive_desc dnnl_softmax(const SoftmaxShape& s, dnnl::memory::desc* md) {
  *md = dnnl::memory::desc({s.rows, s.cols}, dnnl::memory::data_type::f32,
                           dnnl::memory::format_tag::ab);
  return dnnl::softmax_forward::primitive_desc(
      dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, *md, 1), dnnl_engine());
}
#endif

std::shared_ptr<SoftmaxProblem> softmax_problem(const SoftmaxShape& shape) {
  return shared_problem<SoftmaxProblem>("softmax/" + shape.name(), [&] {
    auto p = std::make_shared<SoftmaxProblem>();
    p->shape = shape;
    p->sets = rotation_sets(2 * shape.size() * sizeof(float));
    for (int s = 0; s < p->sets; ++s) p->x.push_back(random_normal(shape.size(), 3000 + s));
    for (size_t row : sample_indices(static_cast<size_t>(shape.rows), 16, 13)) {
      const float* x = p->x[0].data() + row * shape.cols;
      double max = x[0], sum = 0.0;
      for (int64_t j = 0; j < shape.cols; ++j) max = std::max(max, static_cast<double>(x[j]));
      for (int64_t j = 0; j < shape.cols; ++j) sum += std::exp(x[j] - max);
      for (int64_t j = 0; j < shape.cols; ++j) {
        p->samples.index.push_back(row * shape.cols + j);
        p->samples.value.push_back(std::exp(x[j] - max) / sum);
      }
    }
#if PORTA_MICROBENCH_HAVE_DNNL
    dnnl::memory::desc md;
    dnnl::softmax_forward prim(dnnl_softmax(shape, &md));
    p->reference.resize(shape.size());
    prim.execute(dnnl_stream(),
                 {{DNNL_ARG_SRC, dnnl::memory(md, dnnl_engine(), p->x[0].data())},
                  {DNNL_ARG_DST, dnnl::memory(md, dnnl_engine(), p->reference.data())}});
    dnnl_stream().wait();
    p->reference_name = "onednn";
    check_samples("softmax_fwd onednn (reference)", p->reference.data(), p->samples, true);
#endif
    return p;
  });
}

class PortaSoftmax : public Case {
 public:
  explicit PortaSoftmax(const SoftmaxShape& shape) : p_(softmax_problem(shape)) {
    require_porta();
    sets = p_->sets;
    for (int i = 0; i < sets; ++i) {
      x_.push_back(to_device(p_->x[i]));
      y_.emplace_back(environment().device, shape.size());
    }
    run(0);
    p_->check("porta", to_host(y_[0]).data());
    label = environment().backend;
  }
  void run(int set) override {
    porta_stream_t stream = environment().stream->get();
    porta_check(porta_softmax_forward(stream, PORTA_SOFTMAX, p_->shape.rows, p_->shape.cols,
                                      x_[set].data(), y_[set].data()),
                "porta_softmax_forward");
    porta_check(porta_stream_synchronize(stream), "porta_softmax_forward (stream)");
  }

 private:
  std::shared_ptr<SoftmaxProblem> p_;
  std::vector<porta::device_buffer<float>> x_, y_;
};

#if PORTA_MICROBENCH_HAVE_DNNL
class OnednnSoftmax : public Case {
 public:
  explicit OnednnSoftmax(const SoftmaxShape& shape) : p_(softmax_problem(shape)) {
    dnnl::memory::desc md;
    auto pd = dnnl_softmax(shape, &md);
    prim_ = dnnl::softmax_forward(pd);
    sets = p_->sets;
    y_.assign(sets, std::vector<float>(shape.size()));
    for (int i = 0; i < sets; ++i) {
      args_.push_back({{DNNL_ARG_SRC, dnnl::memory(md, dnnl_engine(), p_->x[i].data())},
                       {DNNL_ARG_DST, dnnl::memory(md, dnnl_engine(), y_[i].data())}});
    }
    run(0);
    p_->check("onednn", y_[0].data());
    label = pd.impl_info_str();
  }
  void run(int set) override {
    prim_.execute(dnnl_stream(), args_[set]);
    dnnl_stream().wait();
  }

 private:
  std::shared_ptr<SoftmaxProblem> p_;
  dnnl::softmax_forward prim_;
  std::vector<std::vector<float>> y_;
  std::vector<std::unordered_map<int, dnnl::memory>> args_;
};
#endif

}  // namespace

void register_softmax() {
  for (const SoftmaxShape& shape : kShapes) {
    add_benchmark(
        "softmax_fwd/porta/" + shape.name(),
        [shape] { return std::make_unique<PortaSoftmax>(shape); }, shape.gb(), "GB/s");
#if PORTA_MICROBENCH_HAVE_DNNL
    add_benchmark(
        "softmax_fwd/onednn/" + shape.name(),
        [shape] { return std::make_unique<OnednnSoftmax>(shape); }, shape.gb(), "GB/s");
#endif
  }
}

}  // namespace microbench
