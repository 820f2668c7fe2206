#include "baselines.h"

#include <cstdio>
#include <string>

#ifndef PORTA_MICROBENCH_HAVE_OPENMP
#define PORTA_MICROBENCH_HAVE_OPENMP 0
#endif
#if PORTA_MICROBENCH_HAVE_OPENMP
#include <omp.h>
#endif

#ifndef PORTA_MICROBENCH_OPENBLAS_MISSING
#define PORTA_MICROBENCH_OPENBLAS_MISSING "not found when CMake configured the build"
#endif
#ifndef PORTA_MICROBENCH_DNNL_MISSING
#define PORTA_MICROBENCH_DNNL_MISSING "not found when CMake configured the build"
#endif

namespace microbench {

namespace {
std::string dnnl_thread_note;  // how oneDNN's thread count was set, or why it could not be
}

void set_baseline_threads(int threads) {
#if PORTA_MICROBENCH_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
#endif
#if PORTA_MICROBENCH_HAVE_DNNL
#if DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_OMP && PORTA_MICROBENCH_HAVE_OPENMP
  // Every benchmark runs on the main thread, whose OpenMP ICV this sets.
  omp_set_num_threads(threads);
  dnnl_thread_note = "OpenMP, omp_set_num_threads(" + std::to_string(threads) + ")";
#elif DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_SEQ
  dnnl_thread_note = "sequential build: 1 thread (not " + std::to_string(threads) + ")";
#else
  dnnl_thread_note = "threading runtime not set by this program: its default thread count";
#endif
#endif
  (void)threads;
}

std::string openblas_description() {
#if PORTA_MICROBENCH_HAVE_OPENBLAS
  return std::string(openblas_get_config()) + ", core " + openblas_get_corename() + ", " +
         std::to_string(openblas_get_num_threads()) + " threads";
#else
  return std::string("NOT BUILT IN (") + PORTA_MICROBENCH_OPENBLAS_MISSING +
         "): no OpenBLAS baseline";
#endif
}

std::string onednn_description() {
#if PORTA_MICROBENCH_HAVE_DNNL
  const dnnl_version_t* v = dnnl_version();
  const char* isa = "?";
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41:
      isa = "sse41";
      break;
    case dnnl::cpu_isa::avx:
      isa = "avx";
      break;
    case dnnl::cpu_isa::avx2:
      isa = "avx2";
      break;
    case dnnl::cpu_isa::avx2_vnni:
      isa = "avx2_vnni";
      break;
    case dnnl::cpu_isa::avx512_core:
      isa = "avx512_core";
      break;
    case dnnl::cpu_isa::avx512_core_vnni:
      isa = "avx512_core_vnni";
      break;
    case dnnl::cpu_isa::avx512_core_bf16:
      isa = "avx512_core_bf16";
      break;
    case dnnl::cpu_isa::avx512_core_amx:
      isa = "avx512_core_amx";
      break;
    default:
      break;
  }
  char text[256];
  std::snprintf(text, sizeof text, "oneDNN %d.%d.%d (%s), ISA %s, threads: %s", v->major, v->minor,
                v->patch, v->hash ? v->hash : "", isa, dnnl_thread_note.c_str());
  return text;
#else
  return std::string("NOT BUILT IN (") + PORTA_MICROBENCH_DNNL_MISSING + "): no oneDNN baseline";
#endif
}

#if PORTA_MICROBENCH_HAVE_DNNL
dnnl::engine& dnnl_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& dnnl_stream() {
  static dnnl::stream stream(dnnl_engine());
  return stream;
}

dnnl::memory dnnl_input(const dnnl::memory::desc& want, const dnnl::memory::desc& plain_md,
                        const float* plain) {
  dnnl::memory user(plain_md, dnnl_engine(), const_cast<float*>(plain));
  if (want == plain_md) return user;
  dnnl::memory out(want, dnnl_engine());
  dnnl::reorder(user, out).execute(dnnl_stream(), user, out);
  dnnl_stream().wait();
  return out;
}

std::vector<float> dnnl_to_plain(const dnnl::memory& mem, const dnnl::memory::desc& plain_md) {
  std::vector<float> out(plain_md.get_size() / sizeof(float));
  dnnl::memory user(plain_md, dnnl_engine(), out.data());
  dnnl::memory src = mem;
  dnnl::reorder(src, user).execute(dnnl_stream(), src, user);
  dnnl_stream().wait();
  return out;
}
#endif

}  // namespace microbench
