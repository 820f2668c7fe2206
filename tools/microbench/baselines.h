// porta-microbench: the baseline libraries, each present only when CMake found it.
//   OpenBLAS: cblas_sgemm.
//   oneDNN:   one CPU engine and stream for every primitive; helpers for plain and blocked memory.
#ifndef PORTA_TOOLS_MICROBENCH_BASELINES_H_
#define PORTA_TOOLS_MICROBENCH_BASELINES_H_

#include "common.h"

#if PORTA_MICROBENCH_HAVE_OPENBLAS
#include <cblas.h>
#endif

#if PORTA_MICROBENCH_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace microbench {

// Gives OpenBLAS and oneDNN (OpenMP, in Debian's build) `threads` threads.
void set_baseline_threads(int threads);
// For the run's context: version, build and threads, or why the library is not built in.
std::string openblas_description();
std::string onednn_description();

#if PORTA_MICROBENCH_HAVE_DNNL
dnnl::engine& dnnl_engine();
dnnl::stream& dnnl_stream();

// Memory of layout `want` holding `plain` (a host array of layout plain_md): the array itself
// when the layouts match (no copy), else a reorder into memory the library allocates.
dnnl::memory dnnl_input(const dnnl::memory::desc& want, const dnnl::memory::desc& plain_md,
                        const float* plain);
// The contents of `mem` in layout plain_md, as a host vector.
std::vector<float> dnnl_to_plain(const dnnl::memory& mem, const dnnl::memory::desc& plain_md);
#endif

}  // namespace microbench

#endif  // PORTA_TOOLS_MICROBENCH_BASELINES_H_
