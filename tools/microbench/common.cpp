#include "common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

namespace microbench {

Environment& environment() {
  static Environment env;
  return env;
}

std::vector<float> random_normal(size_t n, uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> out(n);
  for (float& v : out) v = normal(engine);
  return out;
}

int rotation_sets(size_t bytes_per_set) {
  const size_t target = 2 * environment().llc_bytes;
  const size_t sets = (target + bytes_per_set - 1) / std::max<size_t>(bytes_per_set, 1);
  return static_cast<int>(std::clamp<size_t>(sets, 1, 8));
}

namespace {
std::string format_error(double error) {
  char text[64];
  std::snprintf(text, sizeof text, "%.3g", error);
  return text;
}
}  // namespace

double normwise_error(const float* x, const float* ref, size_t n) {
  double scale = 0.0, diff = 0.0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]) && std::isfinite(ref[i]))
      return std::numeric_limits<double>::infinity();
    scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
    diff = std::max(diff, std::fabs(static_cast<double>(x[i]) - ref[i]));
  }
  return scale > 0.0 ? diff / scale : diff;
}

double elementwise_error(const float* x, const float* ref, size_t n) {
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]) && std::isfinite(ref[i]))
      return std::numeric_limits<double>::infinity();
    const double r = std::fabs(static_cast<double>(ref[i]));
    const double d = std::fabs(static_cast<double>(x[i]) - ref[i]);
    worst = std::max(worst, r > 0.0 ? d / r : d);
  }
  return worst;
}

std::vector<size_t> sample_indices(size_t n, size_t count, uint64_t seed) {
  std::vector<size_t> out;
  if (n == 0) return out;
  std::mt19937_64 engine(seed);
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  out.push_back(0);  // the corners, where padding and edges go wrong first
  out.push_back(n - 1);
  while (out.size() < count) out.push_back(pick(engine));
  return out;
}

void check_samples(const std::string& what, const float* out, const Samples& samples,
                   bool elementwise) {
  std::vector<float> got(samples.index.size()), want(samples.index.size());
  for (size_t i = 0; i < samples.index.size(); ++i) {
    got[i] = out[samples.index[i]];
    want[i] = static_cast<float>(samples.value[i]);
  }
  const double error = elementwise ? elementwise_error(got.data(), want.data(), got.size())
                                   : normwise_error(got.data(), want.data(), got.size());
  if (!(error <= kTolerance)) {
    size_t worst = 0;
    double worst_diff = -1.0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double d = std::isfinite(got[i]) ? std::fabs(got[i] - samples.value[i])
                                             : std::numeric_limits<double>::infinity();
      if (d > worst_diff) worst_diff = d, worst = i;
    }
    throw std::runtime_error(
        what + ": wrong result: relative error " + format_error(error) + " > " +
        format_error(kTolerance) + " against " + std::to_string(got.size()) +
        " outputs computed in double (at " + std::to_string(samples.index[worst]) + ": got " +
        format_error(got[worst]) + ", want " + format_error(samples.value[worst]) + ")");
  }
}

void check_reference(const std::string& what, const float* out, const std::vector<float>& ref,
                     const std::string& ref_name, bool elementwise) {
  const double error = elementwise ? elementwise_error(out, ref.data(), ref.size())
                                   : normwise_error(out, ref.data(), ref.size());
  if (!(error <= kTolerance)) {
    throw std::runtime_error(what + ": disagrees with " + ref_name + ": relative error " +
                             format_error(error) + " > " + format_error(kTolerance));
  }
}

void porta_check(porta_status_t status, const char* what) {
  if (status != PORTA_SUCCESS) {
    throw std::runtime_error(std::string(what) + ": " + porta_status_name(status) + ": " +
                             porta_last_error_message());
  }
}

void require_porta() {
  if (!environment().porta_ok) throw std::runtime_error(environment().porta_error);
}

porta::device_buffer<float> to_device(const std::vector<float>& host) {
  porta::device_buffer<float> buffer(environment().device, host.size());
  buffer.copy_from_host(host);
  return buffer;
}

std::vector<float> to_host(const porta::device_buffer<float>& buffer) { return buffer.to_vector(); }

namespace {
std::vector<std::string> registered;
}

const std::vector<std::string>& registered_benchmarks() { return registered; }

void add_benchmark(const std::string& name, CaseMaker make, double work, const char* unit) {
  registered.push_back(name);
  benchmark::RegisterBenchmark(name.c_str(),
                               [name, make = std::move(make), work, unit](benchmark::State& s) {
                                 time_case(s, name, make, work, unit);
                               })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

namespace {
std::map<std::string, std::unique_ptr<Case>> cases;  // by benchmark name
std::map<std::string, std::string> failed;           // by benchmark name: the error
bool keep_all = false;
}  // namespace

const std::map<std::string, std::string>& failures() { return failed; }
void keep_all_cases(bool keep) { keep_all = keep; }
void release_cases() { cases.clear(); }

void time_case(benchmark::State& state, const std::string& name, const CaseMaker& make, double work,
               const char* unit) {
  if (auto f = failed.find(name); f != failed.end()) {
    state.SkipWithError(f->second.c_str());
    return;
  }
  auto it = cases.find(name);
  if (it == cases.end()) {
    if (!keep_all) cases.clear();
    try {
      it = cases.emplace(name, make()).first;
    } catch (const std::exception& e) {
      failed[name] = e.what();
      state.SkipWithError(failed[name].c_str());
      return;
    }
  }
  Case& c = *it->second;
  int set = 0;
  try {
    for (auto _ : state) {
      c.run(set);
      if (++set == c.sets) set = 0;
    }
  } catch (const std::exception& e) {
    failed[name] = e.what();  // later repetitions report the same error
    cases.erase(it);
    state.SkipWithError(failed[name].c_str());
    return;
  }
  state.counters[unit] = benchmark::Counter(work, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(c.label);
}

}  // namespace microbench
