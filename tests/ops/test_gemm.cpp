// porta_gemm against the float64 reference: every transpose combination, sizes that are not a
// multiple of any tile, leading dimensions beyond the minimum, strided and broadcast batches,
// alpha/beta (beta = 0 must not read a NaN-poisoned C), DeepBench training shapes scaled down,
// and f16/bf16 inputs where the implementation offers them.
//
// Tolerance: each element of C is alpha * (a sum of k fp32 products) + beta * C. Whatever the
// order of summation (row by row, blocked, split-K, FMA), the rounding error of such a sum is at
// most gamma_n * (the sum of the magnitudes of its terms), gamma_n = n*u/(1 - n*u), u = 2^-24,
// with n = k + 3 roundings on the longest path (k - 1 additions, the product, alpha, beta*C and
// the final addition, less the overlap). We allow (k + 2) * 2^-23 = 2(k + 2)u times
//   scale = |alpha| * sum_p |op(A)[i][p] * op(B)[p][j]| + |beta * C[i][j]|,
// computed by the reference itself on absolute values. This bound holds for every correct fp32
// implementation, so the test cannot be flaky, yet one wrong or missing term of size ~1 is far
// outside it for every k used here (at k = 129 the allowance is 1.5e-5 of the scale, and a term
// is ~1/k = 8e-3 of it). An implementation that rounds inputs to TF32 or bf16 internally fails it,
// as it should: porta_ops.h promises fp32 math.
//
// f16 and bf16 inputs: the test draws values that the dtype holds exactly and the reference takes
// those rounded values, so what is measured is the accumulation alone. Their significands have 11
// and 8 bits, so every product is exact in fp32 (at most 22 bits) and each element of C is again
// a sum of k exact fp32 terms: the same bound applies, growing with k as above. It also covers
// tensor cores, whose fp32 accumulation may truncate rather than round (an error of up to 2u per
// addition instead of u, still within 2(k + 2)u). The 16-bit cases span the same transposes, odd
// sizes, leading dimensions, strided and broadcast batches, misaligned (2-byte) offsets and
// split-K reductions as fp32. The portable implementation must provide them; another one may say
// UNSUPPORTED, and must then write nothing.
#include <cmath>
#include <sstream>

#include "gemm_params.h"
#include "ops_test.h"

using namespace ops_test;

namespace {

struct GemmCase {
  porta_transpose_t trans_a = PORTA_NO_TRANSPOSE, trans_b = PORTA_NO_TRANSPOSE;
  int64_t m = 1, n = 1, k = 1;
  int64_t pad_a = 0, pad_b = 0, pad_c = 0;  // leading dimension minus the minimum
  int64_t batch = 1;
  int64_t gap_a = 0, gap_b = 0, gap_c = 0;        // batch stride minus one matrix's span
  bool broadcast_a = false, broadcast_b = false;  // stride 0: one matrix for every batch
  bool misaligned = false;  // A, B and C 4, 8 and 12 bytes past a 256-byte boundary
  float alpha = 1.0f, beta = 0.0f;
};

std::string describe(const GemmCase& c) {
  std::ostringstream out;
  out << (c.trans_a == PORTA_TRANSPOSE ? "T" : "N") << (c.trans_b == PORTA_TRANSPOSE ? "T" : "N")
      << " m=" << c.m << " n=" << c.n << " k=" << c.k << " ld pads " << c.pad_a << "/" << c.pad_b
      << "/" << c.pad_c << " batch=" << c.batch << " gaps " << c.gap_a << "/" << c.gap_b << "/"
      << c.gap_c << (c.broadcast_a ? " A broadcast" : "") << (c.broadcast_b ? " B broadcast" : "")
      << " alpha=" << c.alpha << " beta=" << c.beta << (c.misaligned ? " misaligned" : "");
  return out.str();
}

// A stored operand: its rows and columns as stored, and which elements belong to a matrix.
struct Stored {
  int64_t rows, cols, ld, stride, span;
  std::vector<char> inside;  // per element of the span
};

Stored stored(int64_t rows, int64_t cols, int64_t pad, int64_t batch, int64_t gap, bool broadcast) {
  Stored s{rows, cols, cols + pad, 0, 0, {}};
  const int64_t one = (rows - 1) * s.ld + cols;
  s.stride = broadcast ? 0 : one + gap;
  s.span = ops_ref::matrix_span(rows, cols, s.ld, batch, s.stride);
  s.inside.assign(static_cast<size_t>(s.span), 0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) s.inside[b * s.stride + r * s.ld + c] = 1;
    }
  }
  return s;
}

// Random values inside the matrices, NaN in the gaps (a kernel that reads a gap poisons its
// result), rounded to what dtype holds.
std::vector<float> operand(Rng& rng, const Stored& s, porta_dtype_t dtype) {
  std::vector<float> values = normal(rng, static_cast<size_t>(s.span));
  if (dtype == PORTA_DTYPE_F16) values = round_to_f16(values);
  if (dtype == PORTA_DTYPE_BF16) values = round_to_bf16(values);
  for (size_t i = 0; i < values.size(); ++i) {
    if (!s.inside[i]) values[i] = poison_float();
  }
  return values;
}

// Runs one GEMM with fresh data from `seed` and checks it. A failing call is a failure, except
// UNSUPPORTED for 16-bit inputs; either way it must have written nothing. Returns its status.
porta_status_t run_gemm(const Env& env, const GemmCase& c, uint64_t seed,
                        porta_dtype_t dtype = PORTA_DTYPE_F32) {
  INFO("gemm " << describe(c) << " dtype " << dtype << ", seed " << seed);
  Rng rng(seed);
  const bool ta = c.trans_a == PORTA_TRANSPOSE, tb = c.trans_b == PORTA_TRANSPOSE;
  const Stored sa =
      stored(ta ? c.k : c.m, ta ? c.m : c.k, c.pad_a, c.batch, c.gap_a, c.broadcast_a);
  const Stored sb =
      stored(tb ? c.n : c.k, tb ? c.k : c.n, c.pad_b, c.batch, c.gap_b, c.broadcast_b);
  const Stored sc = stored(c.m, c.n, c.pad_c, c.batch, c.gap_c, false);

  porta_gemm_desc_t desc{};
  desc.struct_size = sizeof desc;
  desc.trans_a = c.trans_a;
  desc.trans_b = c.trans_b;
  desc.m = c.m, desc.n = c.n, desc.k = c.k;
  desc.lda = sa.ld, desc.ldb = sb.ld, desc.ldc = sc.ld;
  desc.alpha = c.alpha, desc.beta = c.beta;
  desc.batch_count = c.batch;
  desc.stride_a = sa.stride, desc.stride_b = sb.stride, desc.stride_c = sc.stride;
  desc.dtype = dtype;

  const std::vector<float> a = operand(rng, sa, dtype);
  const std::vector<float> b = operand(rng, sb, dtype);
  // C: random where beta reads it; NaN everywhere when beta is 0, which must then not matter.
  std::vector<float> c0 = c.beta != 0.0f ? operand(rng, sc, PORTA_DTYPE_F32)
                                         : std::vector<float>(sc.span, poison_float());

  Floats dc(env, c0.size(), kGuard, lead_for(c.misaligned, 2));
  dc.upload(c0);
  porta_status_t status;
  if (dtype == PORTA_DTYPE_F32) {
    Floats da(env, a.size(), kGuard, lead_for(c.misaligned, 0)),
        db(env, b.size(), kGuard, lead_for(c.misaligned, 1));
    da.upload(a);
    db.upload(b);
    status = porta_gemm(env.stream(), &desc, da.get(), db.get(), dc.get());
    env.sync();
    da.check_unchanged("A");
    db.check_unchanged("B");
  } else {
    DeviceArray<uint16_t> da(env, a.size(), kGuard, lead_for(c.misaligned, 0)),
        db(env, b.size(), kGuard, lead_for(c.misaligned, 1));
    da.upload(encode(dtype, a));
    db.upload(encode(dtype, b));
    status = porta_gemm(env.stream(), &desc, da.get(), db.get(), dc.get());
    env.sync();
    da.check_unchanged("A");
    db.check_unchanged("B");
  }
  if (status != PORTA_SUCCESS) {
    INFO("porta_gemm: " << porta_status_name(status) << ": " << porta_last_error_message());
    if (dtype == PORTA_DTYPE_F32 || status != PORTA_ERROR_UNSUPPORTED || portable_ops()) {
      FAIL_CHECK("porta_gemm failed");
    }
    dc.check_unchanged("C");
    return status;
  }

  std::vector<double> ref = widen(c0), scale = abs_of(widen(c0));
  ops_ref::gemm(desc, widen(a).data(), widen(b).data(), ref.data());
  porta_gemm_desc_t magnitude = desc;
  magnitude.alpha = std::fabs(desc.alpha);
  magnitude.beta = std::fabs(desc.beta);
  ops_ref::gemm(magnitude, abs_of(widen(a)).data(), abs_of(widen(b)).data(), scale.data());

  const std::vector<float> got = dc.download();
  Comparison comparison("C", double(c.k + 2) * kUlp);
  for (size_t i = 0; i < got.size(); ++i) {
    if (sc.inside[i]) {
      comparison.element(i, got[i], ref[i], scale[i]);
    } else {
      comparison.untouched(i, got[i], c0[i]);  // a gap between rows or batches of C
    }
  }
  PT_CHECK_CLOSE(comparison);
  dc.check_guard("C");
  return status;
}

void run_f32(const Env& env, const GemmCase& c, uint64_t seed) { run_gemm(env, c, seed); }

constexpr porta_transpose_t N = PORTA_NO_TRANSPOSE, T = PORTA_TRANSPOSE;
const std::pair<porta_transpose_t, porta_transpose_t> kAllTransposes[] = {
    {N, N}, {N, T}, {T, N}, {T, T}};

// A case of shape {m, n, k} and the given transposes, the rest as GemmCase's defaults.
GemmCase shaped(const int64_t (&shape)[3], porta_transpose_t trans_a, porta_transpose_t trans_b) {
  GemmCase c;
  c.trans_a = trans_a, c.trans_b = trans_b;
  c.m = shape[0], c.n = shape[1], c.k = shape[2];
  return c;
}

}  // namespace

TEST_CASE("gemm: all four transpose combinations at sizes no tile divides", "[gemm]") {
  Env env;
  const int64_t shapes[][3] = {{1, 1, 1},     {1, 7, 33},   {7, 1, 129},  {33, 129, 7},
                               {129, 33, 1},  {2, 3, 5},    {65, 17, 31}, {129, 129, 129},
                               {31, 257, 65}, {255, 1, 64}, {1, 300, 5},  {97, 63, 200}};
  const std::pair<float, float> scalars[] = {
      {1.0f, 0.0f}, {-0.75f, 0.0f}, {1.5f, 0.5f}, {0.25f, -2.0f}};
  uint64_t index = 0;
  for (const auto& shape : shapes) {
    for (const auto& [ta, tb] : kAllTransposes) {
      GemmCase c = shaped(shape, ta, tb);
      std::tie(c.alpha, c.beta) = scalars[index % std::size(scalars)];
      run_f32(env, c, seed_for(index++));
    }
  }
}

TEST_CASE("gemm: leading dimensions beyond the minimum, gaps neither read nor written", "[gemm]") {
  Env env;
  const int64_t shapes[][3] = {{7, 33, 129}, {33, 7, 1}, {1, 65, 17}, {129, 31, 63}};
  const int64_t pads[][3] = {{1, 0, 0}, {0, 3, 0}, {0, 0, 5}, {17, 9, 33}};
  uint64_t index = 0;
  for (const auto& shape : shapes) {
    for (const auto& pad : pads) {
      for (const auto& [ta, tb] : kAllTransposes) {
        GemmCase c = shaped(shape, ta, tb);
        c.pad_a = pad[0], c.pad_b = pad[1], c.pad_c = pad[2];
        c.alpha = 1.25f;
        c.beta = index % 2 ? 0.0f : -0.5f;
        run_f32(env, c, seed_for(index++));
      }
    }
  }
}

TEST_CASE("gemm: strided batches, with gaps and with a broadcast operand", "[gemm]") {
  Env env;
  uint64_t index = 0;
  for (const auto& [ta, tb] : kAllTransposes) {
    GemmCase c;
    c.trans_a = ta, c.trans_b = tb;
    c.m = 33, c.n = 7, c.k = 65, c.batch = 3;
    run_f32(env, c, seed_for(index++));  // packed back to back
    c.gap_a = 5, c.gap_b = 1, c.gap_c = 11, c.pad_c = 2, c.beta = 0.5f;
    run_f32(env, c, seed_for(index++));
    c.m = 1, c.n = 129, c.k = 7, c.batch = 5, c.broadcast_b = true;  // shared weights
    run_f32(env, c, seed_for(index++));
    c.broadcast_b = false, c.broadcast_a = true, c.beta = 0.0f;
    run_f32(env, c, seed_for(index++));
  }
  GemmCase many;  // many small matrices
  many.m = 3, many.n = 5, many.k = 7, many.batch = 129, many.gap_c = 1;
  run_f32(env, many, seed_for(index++));
}

TEST_CASE("gemm: operands at any 4-byte offset", "[gemm]") {
  Env env;
  const int64_t shapes[][3] = {{33, 17, 65}, {7, 129, 31}, {64, 64, 64}};
  uint64_t index = 0;
  for (const auto& shape : shapes) {
    for (const auto& [ta, tb] : kAllTransposes) {
      GemmCase c = shaped(shape, ta, tb);
      c.misaligned = true, c.beta = index % 2 ? 0.0f : 1.0f;
      run_f32(env, c, seed_for(index++));
      c.batch = 2, c.gap_a = 1, c.gap_c = 3;  // odd strides misalign the second batch again
      run_f32(env, c, seed_for(index++));
    }
  }
}

TEST_CASE("gemm: beta = 0 never reads C even when it holds NaN, alpha = 0 scales C", "[gemm]") {
  Env env;
  uint64_t index = 0;
  for (const auto& [ta, tb] : kAllTransposes) {
    GemmCase c;
    c.trans_a = ta, c.trans_b = tb;
    c.m = 17, c.n = 33, c.k = 9, c.batch = 2, c.gap_c = 3;
    c.beta = 0.0f;  // run_gemm poisons all of C with NaN when beta is 0
    for (float alpha : {1.0f, -2.5f, 0.0f}) {
      c.alpha = alpha;  // alpha = 0, beta = 0: C must become exactly 0
      run_f32(env, c, seed_for(index++));
    }
    c.alpha = 0.0f, c.beta = 2.0f;  // C = 2 C
    run_f32(env, c, seed_for(index++));
  }
}

// op(A) stored along k (NN, NT) is read where it is, MR rows at a time, rather than packed (on
// the CPU): rows that are no multiple of any panel height (a last panel of more than half a
// panel's rows, of half exactly, of fewer: 36 and 27 for panels of 8 and 6), depths of several
// blocks (for bf16, which reads A's rows in pairs of depths, even blocks then an odd last one),
// rows of A apart by more than k, misaligned and batched operands.
void run_a_in_place(porta_dtype_t dtype) {
  Env env;
  const int64_t shapes[][3] = {
      {203, 97, 600}, {5, 70, 1031}, {301, 33, 259}, {36, 45, 300}, {27, 100, 517}};
  uint64_t index = 0;
  for (const auto& shape : shapes) {
    for (const porta_transpose_t tb : {N, T}) {
      GemmCase c = shaped(shape, N, tb);
      c.pad_a = index % 2 ? 0 : 13;
      c.beta = 0.5f;
      if (run_gemm(env, c, seed_for(index++), dtype) != PORTA_SUCCESS) return;  // UNSUPPORTED
      c.misaligned = true, c.batch = 2, c.gap_a = 3;
      run_gemm(env, c, seed_for(index++), dtype);
    }
  }
}

TEST_CASE("gemm: A read in place along k: many row panels, depth blocks, a partial panel",
          "[gemm]") {
  run_a_in_place(PORTA_DTYPE_F32);
}

TEST_CASE("gemm: bf16 A read in place along k, in pairs of depths", "[gemm][16bit]") {
  run_a_in_place(PORTA_DTYPE_BF16);
}

// An fp32 op(B) stored along its rows (NN, TN) is NR-column strips at a stride, which the CPU's
// micro-kernel reads in place where a tile has few rows: a last strip that is partial (packed
// instead), leading dimensions that are no multiple of a strip's width, several depth blocks and
// column tiles, misaligned and batched operands, every transpose.
TEST_CASE("gemm: B's strips read in place at the operand's stride", "[gemm]") {
  Env env;
  const int64_t shapes[][3] = {{35, 1000, 700}, {13, 70, 300},    {64, 97, 1031},
                               {203, 97, 600},  {1000, 128, 513}, {41, 64, 259}};
  uint64_t index = 0;
  for (const auto& shape : shapes) {
    for (const auto& [ta, tb] : kAllTransposes) {
      GemmCase c = shaped(shape, ta, tb);
      c.pad_a = index % 2 ? 0 : 13;
      c.pad_b = index % 3 ? 5 : 0;
      c.beta = 0.5f;
      run_f32(env, c, seed_for(index++));
      c.misaligned = true, c.batch = 2, c.gap_a = 3, c.gap_b = 7;
      run_f32(env, c, seed_for(index++));
    }
  }
}

TEST_CASE("gemm: DeepBench training shapes, scaled down", "[gemm][deepbench]") {
  // gemm_problems.h training set (porta-bench's shapes), each dimension divided by about 8
  // and nudged off powers of two; the long-K case keeps a long reduction (K = 25000).
  Env env;
  struct Shape {
    int64_t m, n, k;
    porta_transpose_t ta, tb;
  };
  const Shape shapes[] = {{221, 16, 219, N, N},  {319, 9, 321, N, N},   {385, 17, 127, T, N},
                          {35, 1057, 321, N, N}, {255, 891, 257, N, T}, {33, 16, 25000, N, N},
                          {129, 127, 131, N, N}};
  uint64_t index = 0;
  for (const Shape& s : shapes) {
    GemmCase c;
    c.trans_a = s.ta, c.trans_b = s.tb;
    c.m = s.m, c.n = s.n, c.k = s.k;
    run_f32(env, c, seed_for(index++));
  }
}

TEST_CASE("gemm: more work-groups than one grid dimension holds", "[gemm][large]") {
  // 70001 > 65535, the portable limit of a grid's y and z: many batches, many rows, many
  // columns, and a long reduction (2^20 + 7 terms).
  Env env;
  uint64_t index = 0;
  for (const auto& [ta, tb] : {std::pair{N, N}, std::pair{T, T}}) {
    GemmCase c;
    c.trans_a = ta, c.trans_b = tb;
    c.m = 2, c.n = 3, c.k = 2, c.batch = 70001, c.beta = 0.5f;
    run_f32(env, c, seed_for(index++));
    c.m = 70001, c.n = 3, c.k = 2, c.batch = 1;
    run_f32(env, c, seed_for(index++));
    c.m = 3, c.n = 70001, c.k = 2;
    run_f32(env, c, seed_for(index++));
    c.m = 1, c.n = 2, c.k = (1 << 20) + 7;
    run_f32(env, c, seed_for(index++));
  }
}

TEST_CASE("gemm: f16 and bf16 inputs are exact-product fp32 GEMMs, or UNSUPPORTED",
          "[gemm][16bit]") {
  // See the top of the file for the tolerance. Every transpose at sizes no tile divides, padded
  // leading dimensions, strided batches with gaps and a broadcast operand, 2-byte misalignment,
  // alpha = 0 and beta = 0 over NaN, and deep reductions (split-K on the CPU and on GPUs).
  Env env;
  struct Shape {
    int64_t m, n, k;
  };
  // The last: depth blocks of 256 and 255 on the CPU (an odd one after an even one).
  const Shape shapes[] = {{1, 1, 1},     {7, 33, 129},  {65, 17, 31}, {129, 129, 129}, {2, 3, 5},
                          {31, 257, 65}, {97, 63, 200}, {64, 64, 64}, {203, 150, 511}};
  uint64_t index = 0;
  for (porta_dtype_t dtype : {PORTA_DTYPE_F16, PORTA_DTYPE_BF16}) {
    bool supported = true;
    const auto run = [&](const GemmCase& c) {
      if (run_gemm(env, c, seed_for(index++), dtype) == PORTA_ERROR_UNSUPPORTED) supported = false;
    };
    for (const Shape& shape : shapes) {
      for (const auto& [ta, tb] : kAllTransposes) {
        GemmCase c;
        c.trans_a = ta, c.trans_b = tb;
        c.m = shape.m, c.n = shape.n, c.k = shape.k;
        c.alpha = index % 3 ? 0.5f : -1.25f;
        c.beta = index % 2 ? 1.0f : 0.0f;
        c.pad_a = index % 4, c.pad_b = index % 3, c.pad_c = index % 5;
        c.misaligned = index % 2 == 1;
        run(c);
        if (!supported) break;
      }
      if (!supported) break;
    }
    for (const auto& [ta, tb] : kAllTransposes) {
      if (!supported) break;
      GemmCase c;  // strided batches with gaps, then a broadcast operand
      c.trans_a = ta, c.trans_b = tb;
      c.m = 33, c.n = 7, c.k = 65, c.batch = 3, c.gap_a = 5, c.gap_b = 1, c.gap_c = 11;
      c.beta = 0.5f;
      run(c);
      c.m = 1, c.n = 129, c.k = 7, c.batch = 5, c.broadcast_b = true, c.gap_b = 0;
      run(c);
      c.alpha = 0.0f, c.beta = 0.0f;  // C becomes 0 whatever A and B hold
      run(c);
      c = GemmCase{};  // also where the leading dimensions pass the minimum
      c.trans_a = ta, c.trans_b = tb;
      c.m = c.n = c.k = 2, c.pad_a = 1, c.pad_b = 2;
      c.alpha = 0.0f, c.beta = 0.0f;
      run(c);
    }
    for (const auto& [ta, tb] : {std::pair{N, N}, std::pair{T, T}}) {
      if (!supported) break;
      GemmCase c;  // deep: the depth is split into partial sums on every target
      c.trans_a = ta, c.trans_b = tb;
      c.m = 33, c.n = 16, c.k = 25000;
      run(c);
    }
    if (!supported) WARN("porta_gemm: dtype " << dtype << " is UNSUPPORTED by this implementation");
  }
}

// On the CPU a thread's next row tile multiplies the block of B it packed for the one before,
// within one launch only: B rewritten in place between calls, and batch entries whose Bs differ
// at one address's distance, must each be read afresh. Tall and narrow, so that many row tiles
// share one column tile and one depth block.
TEST_CASE("gemm: a block of B packed by one call is not taken by the next", "[gemm]") {
  Env env;
  Rng rng(seed_for(1));
  const int64_t m = 1000, n = 96, k = 300;
  const std::vector<float> a = normal(rng, m * k);
  Floats da(env, a.size());
  da.upload(a);
  for (const int64_t batch : {1, 2}) {
    porta_gemm_desc_t desc{};
    desc.struct_size = sizeof desc;
    desc.m = m, desc.n = n, desc.k = k, desc.lda = k, desc.ldb = n, desc.ldc = n;
    desc.stride_a = 0, desc.stride_b = k * n, desc.stride_c = m * n;
    desc.alpha = 1.0f, desc.beta = 0.0f, desc.batch_count = batch, desc.dtype = PORTA_DTYPE_F32;
    Floats db(env, batch * k * n), dc(env, batch * m * n);
    for (int call = 0; call < 3; ++call) {
      INFO("batch " << batch << ", call " << call);
      const std::vector<float> b = normal(rng, batch * k * n);
      db.upload(b);
      PT_REQUIRE_OK(porta_gemm(nullptr, &desc, da.get(), db.get(), dc.get()));
      PT_REQUIRE_OK(porta_stream_synchronize(nullptr));
      std::vector<double> ref(batch * m * n), scale(batch * m * n);
      ops_ref::gemm(desc, widen(a).data(), widen(b).data(), ref.data());
      ops_ref::gemm(desc, abs_of(widen(a)).data(), abs_of(widen(b)).data(), scale.data());
      PT_CHECK_CLOSE(compare("C", dc.download(), ref, scale, double(k + 2) * kUlp));
    }
  }
}

TEST_CASE("gemm: the NULL stream is the default device's default stream", "[gemm]") {
  Env env;
  Rng rng(seed_for(0));
  const int64_t m = 7, n = 9, k = 5;
  porta_gemm_desc_t desc{};
  desc.struct_size = sizeof desc;
  desc.m = m, desc.n = n, desc.k = k, desc.lda = k, desc.ldb = n, desc.ldc = n;
  desc.alpha = 1.0f, desc.beta = 0.0f, desc.batch_count = 1, desc.dtype = PORTA_DTYPE_F32;
  const std::vector<float> a = normal(rng, m * k), b = normal(rng, k * n);
  Floats da(env, a.size()), db(env, b.size()), dc(env, m * n);
  da.upload(a);
  db.upload(b);
  PT_REQUIRE_OK(porta_gemm(nullptr, &desc, da.get(), db.get(), dc.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(nullptr));
  std::vector<double> ref(m * n), scale(m * n);
  ops_ref::gemm(desc, widen(a).data(), widen(b).data(), ref.data());
  ops_ref::gemm(desc, abs_of(widen(a)).data(), abs_of(widen(b)).data(), scale.data());
  PT_CHECK_CLOSE(compare("C", dc.download(), ref, scale, double(k + 2) * kUlp));
}

namespace {

// The depth blocks fit within a split, and the splits cover the depth k.
void check_covers_depth(const porta_ops::GemmTiles& t, int64_t k) {
  CHECK(t.tile_k <= t.split_depth);
  CHECK(int64_t{t.splits} * t.split_depth >= k);
}

// A plan that reads an operand in place keeps the packed plan's tiles (p), with depth blocks no
// shallower, within a split, and splits covering the depth k.
void check_keeps_tiles(const porta_ops::GemmTiles& p, const porta_ops::GemmTiles& t, int64_t k) {
  CHECK(t.tile_m == p.tile_m);
  CHECK(t.tile_n == p.tile_n);
  CHECK(t.tile_k >= p.tile_k);
  check_covers_depth(t, k);
}

}  // namespace

TEST_CASE("gemm plan: an A read in place takes taller tiles and deeper blocks", "[gemm][plan]") {
  // Rows shrink before columns (down to 128), since each column tile streams A again while a
  // thread's next row tile multiplies the block of B it packed last; blocks go deeper than the
  // packed plan's for the same tiles, and the group's shared memory must still hold B's panel and
  // one panel of rows of A (a partial last one's copy).
  const int64_t shapes[][3] = {{2560, 64, 2560}, {1760, 128, 1760}, {1024, 1024, 1024},
                               {35, 8457, 2560}, {203, 97, 600},    {5, 70, 1031},
                               {33, 16, 25000},  {4096, 4096, 4096}, {1, 1, 1}};
  for (const int64_t threads : {1, 2, 16}) {
    const porta_ops::GemmTarget target{true, threads, 256 * 1024};
    for (const auto& s : shapes) {
      porta_ops::GemmPlan packed{}, in_place{};
      REQUIRE(porta_ops::plan_gemm(s[0], s[1], s[2], 1, target, porta_ops::kGemmPathNative,
                                   &packed));
      REQUIRE(porta_ops::plan_gemm(s[0], s[1], s[2], 1, target, porta_ops::kGemmPathNative,
                                   &in_place, true));
      const porta_ops::GemmTiles &p = packed.tiles, &t = in_place.tiles;
      INFO(s[0] << "x" << s[1] << "x" << s[2] << " on " << threads << " threads");
      CHECK(t.tile_n >= p.tile_n);
      CHECK(t.tiles_m * t.tile_m >= s[0]);
      CHECK(t.tiles_n * t.tile_n >= s[1]);
      CHECK(t.tiles_m * t.tiles_n * t.splits >=
            std::min<int64_t>(p.tiles_m * p.tiles_n * p.splits, 4 * threads));
      if (t.tile_m == p.tile_m && t.tile_n == p.tile_n) CHECK(t.tile_k >= p.tile_k);
      check_covers_depth(t, s[2]);
      CHECK(in_place.shared_bytes <= target.shared_bytes);
      CHECK(int64_t{in_place.shared_bytes} >=
            (int64_t{t.tile_n} + porta_ops::kCpuRowMultiple) * t.tile_k * 4);
    }
  }
  // 1760x128x1760 on two threads: eight row tiles of all 128 columns (A streamed once), where
  // the packed plan takes two column tiles.
  const porta_ops::GemmTarget two{true, 2, 256 * 1024};
  porta_ops::GemmPlan plan{};
  REQUIRE(porta_ops::plan_gemm(1760, 128, 1760, 1, two, porta_ops::kGemmPathNative, &plan, true));
  CHECK(plan.tiles.tiles_n == 1);
  CHECK(plan.tiles.tiles_m == 8);
}

TEST_CASE("gemm plan: B's strips read in place take no room and keep the tiles", "[gemm][plan]") {
  // B in place where a tile has few rows; the tiles stay the packed plan's, and shared memory
  // holds only a partial last strip of B.
  const int64_t shapes[][3] = {{35, 8457, 2560}, {3072, 128, 1024}, {1024, 1024, 1024},
                               {2560, 64, 2560}, {5, 70, 1031},     {1, 1, 1}};
  const int32_t b = porta_ops::kGemmPanelsB;
  for (const int64_t threads : {1, 2, 16}) {
    const porta_ops::GemmTarget target{true, threads, 256 * 1024};
    for (const auto& s : shapes) {
      porta_ops::GemmPlan packed{}, panels{};
      REQUIRE(
          porta_ops::plan_gemm(s[0], s[1], s[2], 1, target, porta_ops::kGemmPathNative, &packed));
      REQUIRE(porta_ops::plan_gemm(s[0], s[1], s[2], 1, target, porta_ops::kGemmPathNative, &panels,
                                   false, false, b));
      const porta_ops::GemmTiles &p = packed.tiles, &t = panels.tiles;
      INFO(s[0] << "x" << s[1] << "x" << s[2] << " on " << threads << " threads");
      CHECK(p.panels_in_place == 0);
      check_keeps_tiles(p, t, s[2]);
      CHECK(panels.shared_bytes <= target.shared_bytes);
      const int64_t a_rows = t.block_m;
      const int64_t b_cols =
          t.panels_in_place & porta_ops::kGemmPanelsB ? porta_ops::kCpuColumnMultiple : t.tile_n;
      CHECK(int64_t{panels.shared_bytes} >= (a_rows + b_cols) * t.tile_k * 4);
      CHECK(bool(t.panels_in_place & porta_ops::kGemmPanelsB) == (t.tile_m <= 64));
    }
  }
}

TEST_CASE("gemm plan: a small product takes fewer groups, at least one per thread",
          "[gemm][plan]") {
  // Each group packs its own panel of B, so that a product too small to keep four groups per
  // thread busy is cut into fewer, larger tiles; larger ones keep about four per thread.
  struct Case {
    int64_t m, n, k, threads, groups;
  };
  const Case cases[] = {{64, 64, 64, 2, 2},       {64, 64, 64, 16, 8},   {128, 128, 128, 2, 8},
                        {128, 128, 128, 16, 16},  {256, 256, 256, 2, 8}, {1, 1, 1, 2, 1},
                        {1024, 1024, 1024, 2, 12}};
  for (const Case& c : cases) {
    const porta_ops::GemmTarget target{true, c.threads, 256 * 1024};
    porta_ops::GemmPlan plan{};
    REQUIRE(
        porta_ops::plan_gemm(c.m, c.n, c.k, 1, target, porta_ops::kGemmPathNative, &plan, true));
    const porta_ops::GemmTiles& t = plan.tiles;
    INFO(c.m << "x" << c.n << "x" << c.k << " on " << c.threads << " threads");
    CHECK(t.tiles_m * t.tiles_n * t.splits == c.groups);
    CHECK(t.tiles_m * t.tile_m >= c.m);
    CHECK(t.tiles_n * t.tile_n >= c.n);
  }
}
