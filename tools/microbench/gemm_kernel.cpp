// porta-gemm-kernel-bench: the CPU GEMM engine's inner loops on their own (Google Benchmark),
// built for the x86-64-v4 level (AVX-512) like the kernel library's fastest build, with the
// engine's own functions (kernels/gemm_engine_cpu.h), so that their ceiling is known apart from
// packing, threads and launches:
//   fma_peak                       16 independent FMA chains in registers: the core's peak
//   micro_kernel/<kb>              one MR x NR tile, packed A and B strips in L1
//   micro_kernel_rows/<kb>         the same with A's MR rows read in place (lda = 4608)
//   multiply_rows/<rows>/<cols>/<kb>    packed_gemm's loop for A read in place: every (A panel,
//                                  B strip) pair of a tile, B's panel in L2, A's rows of a
//                                  4608-deep matrix, C added into
//   multiply_packed/<rows>/<cols>/<kb>  the same with A packed
// Rates are FLOP per second of the thread's CPU time, so other work on the machine stretches the
// wall time but not the figures (as far as it leaves the caches alone). Run it on an idle core,
// e.g. taskset -c 1.
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "gemm_engine.h"

namespace {

using namespace porta_ops;
using namespace porta_ops::cpu;

constexpr int64_t kDepth = 4608;  // A's row length where its rows are read in place

// 64-byte aligned floats, filled with small values (no denormals, no overflow).
struct Buffer {
  float* p;
  explicit Buffer(int64_t n) : p(static_cast<float*>(std::aligned_alloc(64, round(n) * 4))) {
    for (int64_t i = 0; i < n; ++i) p[i] = 0.001f * float(i % 17) - 0.008f;
  }
  ~Buffer() { std::free(p); }
  static size_t round(int64_t n) { return size_t((n + 15) / 16 * 16); }
};

void report(benchmark::State& state, double flop_per_iteration) {
  state.counters["FLOP/s"] =
      benchmark::Counter(flop_per_iteration, benchmark::Counter::kIsIterationInvariantRate);
}

void fma_peak(benchmark::State& state) {
  constexpr int kChains = 16, kSteps = 1024;
  for (auto _ : state) {
    vfloat acc[kChains];
    const vfloat x = vfloat{} + 0.999f, y = vfloat{} + 0.001f;
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = vfloat{} + float(c);
    for (int s = 0; s < kSteps; ++s) {
#pragma GCC unroll 16
      for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * x + y;
    }
    for (int c = 0; c < kChains; ++c) benchmark::DoNotOptimize(acc[c]);
  }
  report(state, 2.0 * kChains * kSteps * kVL);
}

// One micro-tile, A packed or (kInPlace) its MR rows read from a kDepth-wide matrix.
template <bool kInPlace>
void micro_kernel_l1(benchmark::State& state) {
  const int64_t kb = state.range(0);
  Buffer a(kMR * (kInPlace ? kDepth : kb)), b(kNR * kb);
  MicroTile t;
  for (auto _ : state) {
    if (kInPlace) {
      micro_kernel_rows(kb, a.p, kDepth, a.p, Strip<float>{b.p, kNR}, nullptr, t);
    } else {
      micro_kernel(kb, Strip<float>{a.p, kMR}, Strip<float>{b.p, kNR}, nullptr, t);
    }
    benchmark::DoNotOptimize(t);
  }
  report(state, 2.0 * kMR * kNR * kb);
}

// A tile's worth of depth blocks, as packed_gemm runs them after packing: A's block at successive
// depths of a rows x kDepth matrix (read in place, or packed beforehand), one B panel, C added
// into.
template <bool kInPlace>
void multiply_tile(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1), kb = state.range(2);
  const int64_t blocks = kDepth / kb;
  Buffer a(rows * kDepth), packed_a(div_up(rows, kMR) * kMR * kDepth),
      b(div_up(cols, kNR) * kNR * kb), c(rows * cols), scratch(kMR * kb);
  if (!kInPlace) {  // strips of MR rows per depth block, as pack<kMR> lays them out
    for (int64_t blk = 0; blk < blocks; ++blk) {
      float* dst = packed_a.p + blk * div_up(rows, kMR) * kMR * kb;
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t d = 0; d < kb; ++d) {
          dst[(i / kMR) * kMR * kb + d * kMR + i % kMR] = a.p[i * kDepth + blk * kb + d];
        }
      }
    }
  }
  const OutputView out{c.p, cols, Split::stride(1), 0, 1.0f, 0.0f};
  for (auto _ : state) {
    for (int64_t blk = 0; blk < blocks; ++blk) {
      if (kInPlace) {
        multiply_rows(RowRuns<float>{a.p + blk * kb, 1, 0}, kDepth,
                      Panels<float, kNR>::packed(b.p, kb), kb, rows, cols, scratch.p, out, 0, 0,
                      blk == 0);
      } else {
        multiply_packed(
            Panels<float, kMR>::packed(packed_a.p + blk * div_up(rows, kMR) * kMR * kb, kb),
            Panels<float, kNR>::packed(b.p, kb), kb, rows, cols, out, 0, 0, blk == 0);
      }
    }
    benchmark::ClobberMemory();
  }
  report(state, 2.0 * rows * cols * kb * blocks);
}

}  // namespace

// Registered at run time from main (gemm_kernel_main.cpp), which first checks that the CPU has
// AVX-512: this file is compiled for x86-64-v4 and runs nothing before that.
void register_gemm_kernel_benchmarks() {
  benchmark::RegisterBenchmark("fma_peak", fma_peak);
  for (int64_t kb : {128, 256}) {
    benchmark::RegisterBenchmark("micro_kernel", micro_kernel_l1<false>)->Arg(kb);
    benchmark::RegisterBenchmark("micro_kernel_rows", micro_kernel_l1<true>)->Arg(kb);
  }
  // Tiles as plan_gemm cuts 512x784x4608 and 64x12544x576 on two threads (tile_k within 256 KiB).
  benchmark::RegisterBenchmark("multiply_rows", multiply_tile<true>)
      ->Args({256, 224, 208})
      ->Args({64, 256, 192});
  benchmark::RegisterBenchmark("multiply_packed", multiply_tile<false>)
      ->Args({256, 224, 208})
      ->Args({64, 256, 192});
}
