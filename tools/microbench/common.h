// porta-microbench: what the GEMM, conv and softmax benchmarks share: the environment (Porta's
// device and stream, the thread count every library gets), random inputs, the rotation of input
// sets, the correctness checks, and the loop that times one case.
#ifndef PORTA_TOOLS_MICROBENCH_COMMON_H_
#define PORTA_TOOLS_MICROBENCH_COMMON_H_

#include <benchmark/benchmark.h>
#include <porta/porta_ops.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <porta/porta.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef PORTA_MICROBENCH_HAVE_OPENBLAS
#define PORTA_MICROBENCH_HAVE_OPENBLAS 0
#endif
#ifndef PORTA_MICROBENCH_HAVE_DNNL
#define PORTA_MICROBENCH_HAVE_DNNL 0
#endif

namespace microbench {

// A result more than this far from the reference (max |x - ref| / max |ref|) fails the benchmark.
inline constexpr double kTolerance = 1e-3;

// What main() set up before registering the benchmarks.
struct Environment {
  bool porta_ok = false;
  std::string porta_error;  // why Porta could not be initialised, when !porta_ok
  porta_device_t device = 0;
  std::unique_ptr<porta::stream> stream;
  std::string device_name, backend;
  int threads = 1;              // Porta's worker threads; OpenBLAS and oneDNN get as many
  size_t llc_bytes = 32 << 20;  // last-level cache, for the rotation of input sets
};
Environment& environment();

// n samples of N(0, 1), the same for the same seed.
std::vector<float> random_normal(size_t n, uint64_t seed);

// How many input sets to rotate through so that one pass over them does not fit in the LLC
// (tools/bench/README.md, "How it measures"): 1 when one set is already twice the LLC, at most 8.
int rotation_sets(size_t bytes_per_set);

// max_i |x_i - ref_i| / max_i |ref_i| (normwise, so that elements near zero in a long dot product
// do not dominate); +inf when x holds a NaN or an infinity where ref does not.
double normwise_error(const float* x, const float* ref, size_t n);
// max_i |x_i - ref_i| / |ref_i|, for outputs bounded away from zero (softmax).
double elementwise_error(const float* x, const float* ref, size_t n);

// Sampled exact values: outputs at `index` computed in double straight from the definition,
// to check every implementation, the baselines included, independently of any library.
struct Samples {
  std::vector<size_t> index;
  std::vector<double> value;
};
// count distinct-ish indices in [0, n), reproducible.
std::vector<size_t> sample_indices(size_t n, size_t count, uint64_t seed);
// Throws std::runtime_error naming `what` when out disagrees with the samples.
void check_samples(const std::string& what, const float* out, const Samples& samples,
                   bool elementwise = false);
// Throws when out disagrees with the full reference output of another library.
void check_reference(const std::string& what, const float* out, const std::vector<float>& ref,
                     const std::string& ref_name, bool elementwise = false);

// One implementation of one op on one shape, ready to time: everything is allocated, inputs
// are in place, primitives are created and the result has been checked. run() does the op on
// input set `set` and waits for it to finish.
class Case {
 public:
  virtual ~Case() = default;
  virtual void run(int set) = 0;
  int sets = 1;
  std::string label;  // shown beside the result: implementation details, rotation
};

// time_case makes a benchmark's Case on its first call and keeps it for the later ones (the
// Google Benchmark runner calls a benchmark's function again for its warm-up and for every
// repetition): setup, checks included, runs once per benchmark. Only the most recent case is
// kept, so memory stays bounded, unless keep_all_cases(true) (for random interleaving, where
// the benchmarks' repetitions alternate). make() throwing records the message, and every later
// call for that name fails with it.
using CaseMaker = std::function<std::unique_ptr<Case>()>;
void keep_all_cases(bool keep);

// The body of every benchmark (`name` is its registered name): gets or makes the case, skips
// with the error if that failed, times run() over the rotating sets, and reports `work` per
// iteration as the rate counter `unit` ("GFLOP/s": work in GFLOP; "GB/s": work in GB).
void time_case(benchmark::State& state, const std::string& name, const CaseMaker& make, double work,
               const char* unit);
// Destroys the kept cases (their Porta buffers), before Porta's stream goes.
void release_cases();
// Every benchmark that failed in any call (setup, check or a timed run), by name, with the error:
// a failure in a later repetition must not hide behind the median of the others.
const std::map<std::string, std::string>& failures();

// Registers the benchmark `name` timing make()'s case: real time, milliseconds.
void add_benchmark(const std::string& name, CaseMaker make, double work, const char* unit);
// The names add_benchmark registered, in order.
const std::vector<std::string>& registered_benchmarks();

// Porta's errors as exceptions with the op's name.
void porta_check(porta_status_t status, const char* what);
// Throws the reason Porta is unusable, if it is.
void require_porta();
// A host vector copied into a new device buffer of Porta's device.
porta::device_buffer<float> to_device(const std::vector<float>& host);
std::vector<float> to_host(const porta::device_buffer<float>& buffer);

// A problem (inputs and references of one shape), shared by the implementations of that shape:
// the one for `key` while any case holds it, and the most recent one also between its cases.
template <class P, class Make>
std::shared_ptr<P> shared_problem(const std::string& key, Make make) {
  static std::map<std::string, std::weak_ptr<P>> live;
  static std::shared_ptr<P> last;
  std::shared_ptr<P> problem = live[key].lock();
  if (!problem) {
    last.reset();  // frees the previous problem first unless a case still holds it
    problem = make();
    live[key] = problem;
  }
  last = problem;
  return problem;
}

// Registration, each in its own file; names are op/implementation/shape[/variant].
void register_gemm();
void register_conv();
void register_softmax();
void register_launch();

}  // namespace microbench

#endif  // PORTA_TOOLS_MICROBENCH_COMMON_H_
