// porta-gemm-kernel-bench's entry point, compiled for the baseline: the benchmarks
// (gemm_kernel.cpp) are AVX-512 code, registered only once the CPU is known to have it.
#include <benchmark/benchmark.h>

#include <cstdio>

void register_gemm_kernel_benchmarks();

int main(int argc, char** argv) {
  if (!__builtin_cpu_supports("avx512f")) {
    std::printf(
        "porta-gemm-kernel-bench: skipped: this CPU has no AVX-512 (the x86-64-v4 build)\n");
    return 0;
  }
  register_gemm_kernel_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
