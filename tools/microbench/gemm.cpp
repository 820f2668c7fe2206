// GEMM, fp32, row-major: C (m x n) = op(A) (m x k) * op(B) (k x n), alpha 1, beta 0.
// "TN" means op(A) = A^T (A stored k x m), as porta_gemm's trans_a; the shapes are the quick (Q)
// ones of porta-bench's suites, 1024^3 first. FLOPs = 2*m*n*k.
//   gemm/porta/<m>x<n>x<k>/<op>     porta_gemm on Porta's stream, synchronized every iteration
//   gemm/openblas/<m>x<n>x<k>/<op>  cblas_sgemm
//   gemm/onednn/<m>x<n>x<k>/<op>    a dnnl::matmul primitive (created before timing)
#include <cstdio>

#include "baselines.h"

namespace microbench {
namespace {

struct GemmShape {
  int64_t m, n, k;
  bool trans_a, trans_b;

  std::string name() const {
    char text[96];
    std::snprintf(text, sizeof text, "%lldx%lldx%lld/%c%c", static_cast<long long>(m),
                  static_cast<long long>(n), static_cast<long long>(k), trans_a ? 'T' : 'N',
                  trans_b ? 'T' : 'N');
    return text;
  }
  int64_t lda() const { return trans_a ? m : k; }
  int64_t ldb() const { return trans_b ? k : n; }
  size_t a_size() const { return static_cast<size_t>(m * k); }
  size_t b_size() const { return static_cast<size_t>(k * n); }
  size_t c_size() const { return static_cast<size_t>(m * n); }
  double gflop() const { return 2.0 * m * n * k / 1e9; }
};

const GemmShape kShapes[] = {
    {1024, 1024, 1024, false, false},  // #11
    {1760, 128, 1760, false, false},   // #1
    {2560, 64, 2560, false, false},    // #2
    {3072, 128, 1024, true, false},    // #3
    {35, 8457, 2560, false, false},    // #8
};

struct GemmProblem {
  GemmShape shape;
  int sets = 1;
  std::vector<std::vector<float>> a, b;  // per set
  Samples samples;                       // of C for set 0
  std::vector<float> reference;          // C for set 0 from the baseline; empty without one
  std::string reference_name;

  float a_at(int64_t i, int64_t p) const {  // op(A)[i][p] of set 0
    return shape.trans_a ? a[0][p * shape.m + i] : a[0][i * shape.k + p];
  }
  float b_at(int64_t p, int64_t j) const {
    return shape.trans_b ? b[0][j * shape.k + p] : b[0][p * shape.n + j];
  }

  // Throws unless c (set 0's output) matches the samples and, for another library, the reference.
  void check(const std::string& impl, const float* c) const {
    check_samples(impl, c, samples);
    if (!reference.empty() && impl != reference_name)
      check_reference(impl, c, reference, reference_name);
  }
};

#if PORTA_MICROBENCH_HAVE_OPENBLAS
void openblas_sgemm(const GemmShape& s, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
              s.trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(s.m),
              static_cast<blasint>(s.n), static_cast<blasint>(s.k), 1.0f, a,
              static_cast<blasint>(s.lda()), b, static_cast<blasint>(s.ldb()), 0.0f, c,
              static_cast<blasint>(s.n));
}
#endif

#if PORTA_MICROBENCH_HAVE_DNNL
// op(A), op(B) and C as oneDNN matmul descriptors: a transposed operand is the "ba" layout.
struct DnnlGemmDescs {
  dnnl::memory::desc a, b, c;
  explicit DnnlGemmDescs(const GemmShape& s) {
    using tag = dnnl::memory::format_tag;
    const auto f32 = dnnl::memory::data_type::f32;
    a = dnnl::memory::desc({s.m, s.k}, f32, s.trans_a ? tag::ba : tag::ab);
    b = dnnl::memory::desc({s.k, s.n}, f32, s.trans_b ? tag::ba : tag::ab);
    c = dnnl::memory::desc({s.m, s.n}, f32, tag::ab);
  }
};
#endif

std::shared_ptr<GemmProblem> gemm_problem(const GemmShape& shape) {
  return shared_problem<GemmProblem>("gemm/" + shape.name(), [&] {
    auto p = std::make_shared<GemmProblem>();
    p->shape = shape;
    p->sets = rotation_sets((shape.a_size() + shape.b_size() + shape.c_size()) * sizeof(float));
    for (int s = 0; s < p->sets; ++s) {
      p->a.push_back(random_normal(shape.a_size(), 1000 + 2 * s));
      p->b.push_back(random_normal(shape.b_size(), 1001 + 2 * s));
    }
    p->samples.index = sample_indices(shape.c_size(), 256, 7);
    for (size_t index : p->samples.index) {
      const int64_t i = static_cast<int64_t>(index) / shape.n,
                    j = static_cast<int64_t>(index) % shape.n;
      double sum = 0.0;
      for (int64_t q = 0; q < shape.k; ++q)
        sum += static_cast<double>(p->a_at(i, q)) * p->b_at(q, j);
      p->samples.value.push_back(sum);
    }
    // The full reference for Porta's cross-check: OpenBLAS, else oneDNN.
#if PORTA_MICROBENCH_HAVE_OPENBLAS
    p->reference.resize(shape.c_size());
    openblas_sgemm(shape, p->a[0].data(), p->b[0].data(), p->reference.data());
    p->reference_name = "openblas";
    check_samples("openblas (reference)", p->reference.data(), p->samples);
#elif PORTA_MICROBENCH_HAVE_DNNL
    p->reference.resize(shape.c_size());
    DnnlGemmDescs d(shape);
    dnnl::matmul prim(
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(d.a, d.b, d.c), dnnl_engine()));
    dnnl::memory a(d.a, dnnl_engine(), p->a[0].data()), b(d.b, dnnl_engine(), p->b[0].data()),
        c(d.c, dnnl_engine(), p->reference.data());
    prim.execute(dnnl_stream(), {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    dnnl_stream().wait();
    p->reference_name = "onednn";
    check_samples("onednn (reference)", p->reference.data(), p->samples);
#endif
    return p;
  });
}

std::string rotation_label(int sets) {
  return sets > 1 ? " (" + std::to_string(sets) + " input sets)" : "";
}

class PortaGemm : public Case {
 public:
  explicit PortaGemm(const GemmShape& shape) : p_(gemm_problem(shape)) {
    require_porta();
    const GemmShape& s = p_->shape;
    sets = p_->sets;
    for (int i = 0; i < sets; ++i) {
      a_.push_back(to_device(p_->a[i]));
      b_.push_back(to_device(p_->b[i]));
      c_.emplace_back(environment().device, s.c_size());
    }
    desc_ = porta_gemm_desc_t{};
    desc_.struct_size = sizeof desc_;
    desc_.trans_a = s.trans_a ? PORTA_TRANSPOSE : PORTA_NO_TRANSPOSE;
    desc_.trans_b = s.trans_b ? PORTA_TRANSPOSE : PORTA_NO_TRANSPOSE;
    desc_.m = s.m, desc_.n = s.n, desc_.k = s.k;
    desc_.lda = s.lda(), desc_.ldb = s.ldb(), desc_.ldc = s.n;
    desc_.alpha = 1.0f, desc_.beta = 0.0f;
    desc_.batch_count = 1;
    desc_.dtype = PORTA_DTYPE_F32;
    run(0);
    p_->check("porta", to_host(c_[0]).data());
    label = environment().backend + rotation_label(sets);
  }
  void run(int set) override {
    porta_stream_t stream = environment().stream->get();
    porta_check(porta_gemm(stream, &desc_, a_[set].data(), b_[set].data(), c_[set].data()),
                "porta_gemm");
    porta_check(porta_stream_synchronize(stream), "porta_gemm (stream)");
  }

 private:
  std::shared_ptr<GemmProblem> p_;
  std::vector<porta::device_buffer<float>> a_, b_, c_;
  porta_gemm_desc_t desc_;
};

#if PORTA_MICROBENCH_HAVE_OPENBLAS
class OpenblasGemm : public Case {
 public:
  explicit OpenblasGemm(const GemmShape& shape) : p_(gemm_problem(shape)) {
    sets = p_->sets;
    c_.assign(sets, std::vector<float>(p_->shape.c_size()));
    run(0);
    p_->check("openblas", c_[0].data());
    label = std::string(openblas_get_corename()) + rotation_label(sets);
  }
  void run(int set) override {
    openblas_sgemm(p_->shape, p_->a[set].data(), p_->b[set].data(), c_[set].data());
  }

 private:
  std::shared_ptr<GemmProblem> p_;
  std::vector<std::vector<float>> c_;
};
#endif

#if PORTA_MICROBENCH_HAVE_DNNL
class DnnlGemm : public Case {
 public:
  explicit DnnlGemm(const GemmShape& shape) : p_(gemm_problem(shape)) {
    sets = p_->sets;
    DnnlGemmDescs d(p_->shape);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(d.a, d.b, d.c), dnnl_engine());
    prim_ = dnnl::matmul(pd);
    c_.assign(sets, std::vector<float>(p_->shape.c_size()));
    for (int i = 0; i < sets; ++i) {
      args_.push_back({{DNNL_ARG_SRC, dnnl::memory(d.a, dnnl_engine(), p_->a[i].data())},
                       {DNNL_ARG_WEIGHTS, dnnl::memory(d.b, dnnl_engine(), p_->b[i].data())},
                       {DNNL_ARG_DST, dnnl::memory(d.c, dnnl_engine(), c_[i].data())}});
    }
    run(0);
    p_->check("onednn", c_[0].data());
    label = std::string(pd.impl_info_str()) + rotation_label(sets);
  }
  void run(int set) override {
    prim_.execute(dnnl_stream(), args_[set]);
    dnnl_stream().wait();
  }

 private:
  std::shared_ptr<GemmProblem> p_;
  dnnl::matmul prim_;
  std::vector<std::vector<float>> c_;
  std::vector<std::unordered_map<int, dnnl::memory>> args_;
};
#endif

}  // namespace

void register_gemm() {
  for (const GemmShape& shape : kShapes) {
    const std::string name = shape.name();
    add_benchmark(
        "gemm/porta/" + name, [shape] { return std::make_unique<PortaGemm>(shape); }, shape.gflop(),
        "GFLOP/s");
#if PORTA_MICROBENCH_HAVE_OPENBLAS
    add_benchmark(
        "gemm/openblas/" + name, [shape] { return std::make_unique<OpenblasGemm>(shape); },
        shape.gflop(), "GFLOP/s");
#endif
#if PORTA_MICROBENCH_HAVE_DNNL
    add_benchmark(
        "gemm/onednn/" + name, [shape] { return std::make_unique<DnnlGemm>(shape); }, shape.gflop(),
        "GFLOP/s");
#endif
  }
}

}  // namespace microbench
