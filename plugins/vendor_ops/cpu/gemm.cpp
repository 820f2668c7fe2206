// GEMM: fp32 through OpenBLAS's cblas_sgemm (row-major, as Porta's), one call per batch, or through
// oneDNN's matmul when PORTA_VENDOR_LIBRARY prefers oneDNN or leaves OpenBLAS out; bf16 and f16
// inputs through oneDNN's matmul with fp32 output and accumulation, where oneDNN has it.
#include <cblas.h>

#include <atomic>
#include <bit>
#include <cstdint>
#include <utility>

#include "vendor_cpu.h"

namespace porta::vendor_cpu {
namespace {

// OpenBLAS's pool is global and its thread count too: calls are serialised so that two streams
// never race on either (they would share the same cores anyway).
std::mutex blas_mutex;
int blas_threads = 0;

void sgemm(const porta_gemm_desc_t& d, const float* a, const float* b, float* c, int threads) {
  std::lock_guard lock(blas_mutex);
  if (blas_threads != threads) {
    openblas_set_num_threads(threads);
    blas_threads = threads;
  }
  const CBLAS_TRANSPOSE ta = d.trans_a == PORTA_TRANSPOSE ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = d.trans_b == PORTA_TRANSPOSE ? CblasTrans : CblasNoTrans;
  for (int64_t i = 0; i < d.batch_count; ++i) {
    // With beta == 0 OpenBLAS overwrites C without reading it, as Porta promises.
    cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(d.m), static_cast<int>(d.n),
                static_cast<int>(d.k), d.alpha, a + i * d.stride_a, static_cast<int>(d.lda),
                b + i * d.stride_b, static_cast<int>(d.ldb), d.beta, c + i * d.stride_c,
                static_cast<int>(d.ldc));
  }
}

// One matrix of the batch as oneDNN's matmul: A (m x k) and B (k x n) described with their
// leading dimensions and transposes as strides, C (m x n) fp32 with ldc. alpha is the output
// scale, beta a sum post-op (left out when 0, so that C is not read).
struct Matmul {
  dnnl::matmul primitive;
  dnnl::memory::desc a, b, c, scratchpad;
};

Cache<Matmul> matmuls;

// GemmLibraries as bits (openblas 1, onednn 2, prefer_onednn 4), read by every GEMM.
std::atomic<unsigned> gemm_libraries{3};

GemmLibraries current_gemm_libraries() {
  const unsigned bits = gemm_libraries.load(std::memory_order_acquire);
  return {.openblas = (bits & 1) != 0, .onednn = (bits & 2) != 0, .prefer_onednn = (bits & 4) != 0};
}

Matmul make_matmul(const porta_gemm_desc_t& d) {
  using dims = dnnl::memory::dims;
  const auto type = dnnl_type(d.dtype);
  const dims a_strides = d.trans_a == PORTA_TRANSPOSE ? dims{1, d.lda} : dims{d.lda, 1};
  const dims b_strides = d.trans_b == PORTA_TRANSPOSE ? dims{1, d.ldb} : dims{d.ldb, 1};
  Matmul m;
  m.a = dnnl::memory::desc({d.m, d.k}, type, a_strides);
  m.b = dnnl::memory::desc({d.k, d.n}, type, b_strides);
  m.c = dnnl::memory::desc({d.m, d.n}, dnnl::memory::data_type::f32, dims{d.ldc, 1});
  dnnl::primitive_attr attr = user_scratchpad();
  if (d.alpha != 1.0f) attr.set_output_scales(0, {d.alpha});
  if (d.beta != 0.0f) {
    dnnl::post_ops post;
    post.append_sum(d.beta);
    attr.set_post_ops(post);
  }
  auto pd = make_pd(std::string(dtype_name(d.dtype)) + " matmul with fp32 output", [&] {
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(m.a, m.b, m.c), attr, engine());
  });
  m.primitive = dnnl::matmul(pd);
  m.scratchpad = pd.scratchpad_desc();
  return m;
}

// alpha 0, as in BLAS and the portable plugin: A and B are not read, and C = beta * C (0 where
// beta is 0, C not read). oneDNN's bf16 matmul with an output scale of 0 read C where A or B had
// leading dimensions past the minimum (a NaN in C stayed), so no library is called for it.
void scale_c(const porta_gemm_desc_t& d, float* c) {
  for (int64_t i = 0; i < d.batch_count; ++i) {
    for (int64_t r = 0; r < d.m; ++r) {
      float* row = c + i * d.stride_c + r * d.ldc;
      for (int64_t j = 0; j < d.n; ++j) row[j] = d.beta == 0.0f ? 0.0f : d.beta * row[j];
    }
  }
}

}  // namespace

porta_status_t Ops::gemm(const Op* op, const porta_gemm_args_t* args) {
  return guarded("porta_gemm", [&] {
    const porta_gemm_desc_t d = *args->desc;  // the queued call runs after this returns
    const void *a = args->a, *b = args->b;
    float* c = args->c;
    const int threads = threads_for(*op);
    const GemmLibraries libraries = current_gemm_libraries();
    if (d.dtype != PORTA_DTYPE_F32 && !libraries.onednn) {
      throw Failure(PORTA_ERROR_UNSUPPORTED,
                    "OpenBLAS's GEMM takes fp32 only, and " + std::string(dtype_name(d.dtype)) +
                        " GEMM runs on oneDNN, which PORTA_VENDOR_LIBRARY leaves out");
    }
    if (d.dtype == PORTA_DTYPE_F32 && libraries.openblas && !libraries.prefer_onednn) {
      check_32_bit(
          "OpenBLAS's cblas_sgemm",
          {{"m", d.m}, {"n", d.n}, {"k", d.k}, {"lda", d.lda}, {"ldb", d.ldb}, {"ldc", d.ldc}});
      enqueue(*op, "porta_gemm", threads, [d, a, b, c, threads] {
        if (d.alpha == 0.0f) return scale_c(d, c);
        sgemm(d, static_cast<const float*>(a), static_cast<const float*>(b), c, threads);
      });
      return;
    }
    auto matmul = matmuls.get({d.dtype, d.trans_a, d.trans_b, d.m, d.n, d.k, d.lda, d.ldb, d.ldc,
                               static_cast<int64_t>(std::bit_cast<uint32_t>(d.alpha)),
                               static_cast<int64_t>(std::bit_cast<uint32_t>(d.beta))},
                              [&] { return make_matmul(d); });
    // The primitive is made even for alpha 0, so that what oneDNN cannot run is refused alike.
    enqueue(*op, "porta_gemm", threads, [d, a, b, c, matmul] {
      if (d.alpha == 0.0f) return scale_c(d, c);
      dnnl::stream s(engine());
      dnnl::memory scratchpad(matmul->scratchpad, engine());
      const auto* a_bytes = static_cast<const char*>(a);
      const auto* b_bytes = static_cast<const char*>(b);
      const int64_t size = d.dtype == PORTA_DTYPE_F32 ? 4 : 2;  // bytes per input element
      for (int64_t i = 0; i < d.batch_count; ++i) {
        // oneDNN takes non-const handles; it only reads A and B.
        dnnl::memory ma(matmul->a, engine(), const_cast<char*>(a_bytes + i * d.stride_a * size));
        dnnl::memory mb(matmul->b, engine(), const_cast<char*>(b_bytes + i * d.stride_b * size));
        dnnl::memory mc(matmul->c, engine(), c + i * d.stride_c);
        matmul->primitive.execute(s, {{DNNL_ARG_SRC, ma},
                                      {DNNL_ARG_WEIGHTS, mb},
                                      {DNNL_ARG_DST, mc},
                                      {DNNL_ARG_SCRATCHPAD, scratchpad}});
      }
      s.wait();
    });
  });
}

void clear_gemm_cache() { matmuls.clear(); }

void use_gemm_libraries(GemmLibraries libraries) {
  gemm_libraries.store((libraries.openblas ? 1u : 0u) | (libraries.onednn ? 2u : 0u) |
                           (libraries.prefer_onednn ? 4u : 0u),
                       std::memory_order_release);
}

}  // namespace porta::vendor_cpu
