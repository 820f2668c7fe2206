// porta-microbench: Porta's portable ops against OpenBLAS and oneDNN on the same machine, in the
// same run, with the same number of threads (finer-grained than porta-bench).
//
//   porta-microbench [Google Benchmark flags]
//   porta-microbench --benchmark_filter='^gemm/.*/1024x1024x1024'
//   porta-microbench --benchmark_filter='^conv_fwd/(porta|onednn)/'
//
// Benchmarks are named op/implementation/shape[/variant]: gemm/porta/1024x1024x1024/NN,
// gemm/openblas/..., gemm/onednn/..., conv_fwd/onednn/56x56x64_n4_k64_3x3,
// conv_bwd_data/..., conv_bwd_weights/..., softmax_fwd/porta/16384x1024 (see gemm.cpp, conv.cpp,
// softmax.cpp), and launch/porta/... the fixed cost of a launch (launch.cpp). Each reports its rate
// as the counter GFLOP/s (GB/s for softmax), from real time.
//
// Method (tools/bench/README.md, "How it measures"): random normal inputs, never zeros; input sets
// rotated so that they do not all fit in the last-level cache; every call synchronized (Porta's
// stream, oneDNN's stream); a warm-up, then 20 repetitions by default, and a closing table of the
// medians with the ratios of Porta to each library. Before a benchmark is timed its result is
// checked against 256 outputs computed in double and against the baseline library's full
// output (max |x - ref| / max |ref| <= 1e-3; element by element for softmax): a wrong result
// fails the benchmark with the error instead of reporting a number.
//
// Porta runs on the CPU backend with the portable ops unless PORTA_BACKEND / PORTA_OPS say
// otherwise. OpenBLAS and oneDNN are given as many threads as Porta's CPU backend has workers.
// Defaults given below can be overridden by the same flags on the command line. On a machine
// busy with other work, --benchmark_enable_random_interleaving=true alternates the repetitions
// of all benchmarks so that load changes hit every implementation alike (all cases then stay
// allocated: a few GiB). Exits 1 when any benchmark failed (an op Porta does not provide yet,
// a wrong result), after the table.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "baselines.h"

namespace microbench {
namespace {

const char* const kDefaultFlags[] = {
    "--benchmark_repetitions=20",       // at least 20 on a CPU
    "--benchmark_min_time=0.05",        // seconds per repetition, at least one iteration
    "--benchmark_min_warmup_time=0.2",  // also lets other libraries' idle threads go to sleep
    "--benchmark_display_aggregates_only=true",
};

// A boolean flag as Google Benchmark reads it: "--flag", "--flag=true" and the like are true.
bool truthy(const std::string& flag) {
  const size_t eq = flag.find('=');
  if (eq == std::string::npos) return true;
  std::string value = flag.substr(eq + 1);
  for (char& ch : value) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return !(value == "0" || value == "f" || value == "n" || value == "false" || value == "no" ||
           value == "off");
}

int affinity_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<int>(online) : 1;
}

// The largest cache of CPU 0 in sysfs (glibc's sysconf can report the whole package's L3 on
// virtual machines: 320 MiB here against lscpu's 32), else sysconf's L3; 0 when unknown.
size_t last_level_cache_bytes() {
  size_t best = 0;
  for (int index = 0; index < 8; ++index) {
    const std::string path =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size";
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (!f) continue;
    unsigned long long value = 0;
    char suffix = 0;
    const int got = std::fscanf(f, "%llu%c", &value, &suffix);
    std::fclose(f);
    if (got < 1) continue;
    if (got == 2 && (suffix == 'K' || suffix == 'k')) value <<= 10;
    if (got == 2 && (suffix == 'M' || suffix == 'm')) value <<= 20;
    best = std::max(best, static_cast<size_t>(value));
  }
  if (best) return best;
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? static_cast<size_t>(l3) : 0;
}

void init_porta() {
  Environment& env = environment();
  // The CPU backend and the portable ops unless the environment names others.
  porta_init_options_t options{};
  options.struct_size = sizeof options;
  if (!std::getenv("PORTA_BACKEND")) options.backend = "cpu";
  if (!std::getenv("PORTA_OPS")) options.ops = "portable";
  try {
    porta::init(&options);
    env.device = porta::default_device();
    const porta_device_properties_t props = porta::device_properties(env.device);
    env.device_name = props.name;
    env.backend = props.backend;
    env.stream = std::make_unique<porta::stream>(env.device);
    env.threads =
        env.backend == "cpu" && props.compute_units > 0 ? props.compute_units : affinity_threads();
    env.porta_ok = true;
  } catch (const porta::error& e) {
    env.porta_error = std::string("Porta unavailable: ") + e.what();
    env.threads = affinity_threads();
  }
  if (const size_t llc = last_level_cache_bytes()) env.llc_bytes = llc;
}

// The console output, plus a closing table: per op and shape, the median rate of each
// implementation and Porta's ratio to each of the others. A benchmark whose every repetition
// failed is shown once, not once per repetition.
class Reporter : public benchmark::ConsoleReporter {
 public:
  using ConsoleReporter::ConsoleReporter;

  void ReportRuns(const std::vector<Run>& runs) override {
    bool all_failed = !runs.empty();
    for (const Run& run : runs) {
      all_failed &= run.error_occurred;
      const std::string name = run.run_name.function_name;
      repetitions_ = std::max<int64_t>(repetitions_, run.repetitions);
      if (run.error_occurred) {
        Result& r = result(name);
        r.error = run.error_message;
        continue;
      }
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      const bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
      if (!median && !single) continue;
      for (const char* unit : {"GFLOP/s", "GB/s"}) {
        auto it = run.counters.find(unit);
        if (it == run.counters.end()) continue;
        Result& r = result(name);
        r.value = it->second.value;
        r.unit = unit;
      }
    }
    if (all_failed && runs.size() > 1) {
      ConsoleReporter::ReportRuns({runs.front()});
    } else {
      ConsoleReporter::ReportRuns(runs);
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    for (const auto& [name, error] : failures()) result(name).error = error;
    if (rows_.empty()) return;
    // Registration order (random interleaving finishes benchmarks in any order).
    auto rank = [](const std::string& op, const std::string& impl, const std::string& shape) {
      const auto& names = registered_benchmarks();
      for (size_t i = 0; i < names.size(); ++i) {
        const Parts p = split(names[i]);
        if ((op.empty() || p.op == op) && (impl.empty() || p.impl == impl) &&
            (shape.empty() || p.shape == shape)) {
          return i;
        }
      }
      return names.size();
    };
    std::stable_sort(rows_.begin(), rows_.end(), [&](const Row& a, const Row& b) {
      return rank(a.op, "", a.shape) < rank(b.op, "", b.shape);
    });
    std::stable_sort(impls_.begin(), impls_.end(), [&](const std::string& a, const std::string& b) {
      return rank("", a, "") < rank("", b, "");
    });
    std::ostream& out = GetOutputStream();
    std::vector<std::string> others;  // the implementations Porta is compared with
    const bool have_porta = std::find(impls_.begin(), impls_.end(), "porta") != impls_.end();
    for (const std::string& impl : impls_) {
      if (have_porta && impl != "porta") others.push_back(impl);  // ratio columns
    }
    // Right-aligned cells, each column as wide as its header (at least 10).
    auto cell = [&out](const std::string& text, size_t width) {
      out << ' ' << std::string(width > text.size() ? width - text.size() : 0, ' ') << text;
    };
    auto number = [](double value, int decimals) {
      char text[32];
      std::snprintf(text, sizeof text, "%.*f", decimals, value);
      return std::string(text);
    };
    size_t shape_width = 5;
    for (const Row& row : rows_) shape_width = std::max(shape_width, row.shape.size());
    out << "\nSummary: median rate over " << repetitions_ << " repetition(s); GFLOP/s (softmax: "
        << "GB/s); " << environment().threads << " threads for every library; ratio = porta / "
        << "library, > 1 when Porta is faster\n";
    out << std::string("op") + std::string(15, ' ') << ' ' << "shape"
        << std::string(shape_width - 5, ' ');
    for (const std::string& impl : impls_) cell(impl, std::max<size_t>(10, impl.size()));
    for (const std::string& impl : others)
      cell("porta/" + impl, std::max<size_t>(10, impl.size() + 6));
    out << "\n";
    std::vector<std::string> errors;
    for (const Row& row : rows_) {
      out << row.op << std::string(row.op.size() < 17 ? 17 - row.op.size() : 0, ' ') << ' '
          << row.shape << std::string(shape_width - row.shape.size(), ' ');
      for (const std::string& impl : impls_) {
        const size_t width = std::max<size_t>(10, impl.size());
        auto it = row.results.find(impl);
        if (it == row.results.end()) {
          cell("-", width);
        } else if (!it->second.error.empty()) {
          cell("FAILED", width);
          errors.push_back(row.op + "/" + impl + "/" + row.shape + ": " + it->second.error);
        } else {
          cell(number(it->second.value, 1), width);
        }
      }
      const Result* porta = find(row, "porta");
      for (const std::string& impl : others) {
        const size_t width = std::max<size_t>(10, impl.size() + 6);
        const Result* other = find(row, impl);
        cell(porta && other && other->value > 0.0 ? number(porta->value / other->value, 3) : "-",
             width);
      }
      out << "\n";
    }
    if (!errors.empty()) {
      out << "\nFailed (no number reported):\n";
      for (const std::string& e : errors) out << "  " << e << "\n";
    }
    out.flush();
  }

 private:
  struct Result {
    double value = 0.0;
    std::string unit, error;
  };
  struct Row {
    std::string op, shape;
    std::map<std::string, Result> results;  // by implementation
  };

  struct Parts {
    std::string op, impl, shape;
  };
  // name = op/impl/shape...
  static Parts split(const std::string& name) {
    const size_t a = name.find('/');
    const size_t b = a == std::string::npos ? a : name.find('/', a + 1);
    if (b == std::string::npos) return {name, "?", ""};
    return {name.substr(0, a), name.substr(a + 1, b - a - 1), name.substr(b + 1)};
  }

  Result& result(const std::string& name) {
    auto [op, impl, shape] = split(name);
    if (std::find(impls_.begin(), impls_.end(), impl) == impls_.end()) impls_.push_back(impl);
    for (Row& row : rows_) {
      if (row.op == op && row.shape == shape) return row.results[impl];
    }
    rows_.push_back({op, shape, {}});
    return rows_.back().results[impl];
  }
  static const Result* find(const Row& row, const std::string& impl) {
    auto it = row.results.find(impl);
    return it != row.results.end() && it->second.error.empty() ? &it->second : nullptr;
  }

  std::vector<Row> rows_;
  std::vector<std::string> impls_;
  int64_t repetitions_ = 1;
};

}  // namespace
}  // namespace microbench

int main(int argc, char** argv) {
  using namespace microbench;
  // The defaults first: a flag given on the command line comes later and wins.
  std::vector<std::string> storage(std::begin(kDefaultFlags), std::end(kDefaultFlags));
  std::vector<char*> args{argv[0]};
  for (std::string& flag : storage) args.push_back(flag.data());
  bool console = true, interleave = false;
  for (int i = 1; i < argc; ++i) {
    args.push_back(argv[i]);
    const std::string arg = argv[i];
    if (arg.rfind("--benchmark_format=", 0) == 0) console = arg == "--benchmark_format=console";
    if (arg.rfind("--benchmark_enable_random_interleaving", 0) == 0) interleave = truthy(arg);
  }
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;

  init_porta();
  Environment& env = environment();
  set_baseline_threads(env.threads);

  benchmark::AddCustomContext(
      "porta", env.porta_ok
                   ? env.device_name + " (" + env.backend + " backend, ops: " +
                         (std::getenv("PORTA_OPS") ? std::getenv("PORTA_OPS") : "portable") + ")"
                   : env.porta_error);
  benchmark::AddCustomContext(
      "threads", std::to_string(env.threads) + " for Porta, OpenBLAS and oneDNN alike");
  benchmark::AddCustomContext("openblas", openblas_description());
  benchmark::AddCustomContext("onednn", onednn_description());
  benchmark::AddCustomContext("inputs", "random normal; sets rotated to exceed 2x the " +
                                            std::to_string(env.llc_bytes >> 20) + " MiB LLC");
  benchmark::AddCustomContext(
      "check",
      "vs 256 outputs in double, and vs the baseline library's output where built in; "
      "max relative error 1e-3");
  if (!PORTA_MICROBENCH_HAVE_OPENBLAS)
    std::fprintf(stderr, "porta-microbench: %s\n", openblas_description().c_str());
  if (!PORTA_MICROBENCH_HAVE_DNNL)
    std::fprintf(stderr, "porta-microbench: %s\n", onednn_description().c_str());
  if (!env.porta_ok) std::fprintf(stderr, "porta-microbench: %s\n", env.porta_error.c_str());

  keep_all_cases(interleave);  // a case's setup then runs once, not at every repetition
  register_gemm();
  register_conv();
  register_softmax();
  register_launch();

  Reporter reporter(isatty(STDOUT_FILENO) ? benchmark::ConsoleReporter::OO_ColorTabular
                                          : benchmark::ConsoleReporter::OO_Tabular);
  if (console) {
    benchmark::RunSpecifiedBenchmarks(&reporter);
  } else {
    benchmark::RunSpecifiedBenchmarks();
  }
  benchmark::Shutdown();
  release_cases();
  env.stream.reset();
  return failures().empty() ? 0 : 1;
}
