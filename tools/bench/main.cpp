// porta-bench: the same ops and shapes on every available backend and every implementation
// (portable, vendor), checked against each other, timed, and rated against the device's
// measured peaks (DeepBench training shapes, shapes.cpp). Only the
// public API is used. See README.md beside this file for the options and the JSON schema.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench.h"

namespace bench {
namespace {

const std::vector<std::string> kBackends = {"cpu", "cuda", "hip", "level_zero", "opencl"};

struct Options {
  std::vector<std::string> backends;
  std::string impl = "all";
  std::string op = "all";
  std::string suite = "quick";
  std::vector<std::string> shapes;
  std::string dtype = "f32";
  int reps = 0;
  std::string json_path, csv_path;
};

struct Problem {
  Shape shape;
  porta_dtype_t dtype;
};

// The largest cache of CPU 0 in sysfs (glibc's sysconf can report a whole package's L3 on a
// virtual machine), else sysconf's L3, else 32 MiB.
size_t last_level_cache_bytes() {
  size_t best = 0;
  for (int index = 0; index < 8; ++index) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    unsigned long long value = 0;
    char suffix = 0;
    if (!(in >> value)) continue;
    in >> suffix;
    if (suffix == 'K' || suffix == 'k') value <<= 10;
    if (suffix == 'M' || suffix == 'm') value <<= 20;
    best = std::max(best, static_cast<size_t>(value));
  }
  if (best) return best;
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? static_cast<size_t>(l3) : size_t{32} << 20;
}

// The bench kernels are built into lib/, beside this program's bin/.
std::string kernel_library() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (exe.parent_path() / ".." / "lib" / "porta_bench_kernels").lexically_normal().string();
}

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

void note(const std::string& text) { std::fprintf(stderr, "porta-bench: %s\n", text.c_str()); }

porta_dtype_t parse_dtype(const std::string& name) {
  return name == "bf16" ? PORTA_DTYPE_BF16 : name == "f16" ? PORTA_DTYPE_F16 : PORTA_DTYPE_F32;
}

// An output file must be writable before hours of measuring are spent on it: its directory
// must exist and be writable, and the file, if it exists, too.
void check_writable(const std::string& option, const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path file(path);
  const std::filesystem::path dir = file.has_parent_path() ? file.parent_path() : ".";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw CLI::ValidationError(option, "the directory of " + path + " does not exist");
  if (access(dir.c_str(), W_OK) != 0 ||
      (std::filesystem::exists(file, ec) && access(file.c_str(), W_OK) != 0))
    throw CLI::ValidationError(option, path + " is not writable");
  if (std::filesystem::is_directory(file, ec))
    throw CLI::ValidationError(option, path + " is a directory");
}

// The problems the options ask for, in table order. Throws CLI::ValidationError for a shape or
// a combination the options cannot express.
std::vector<Problem> problems(const Options& o) {
  std::vector<Op> ops;
  if (o.op == "all") {
    ops = all_ops();
  } else {
    ops = {*op_from_name(o.op)};
  }
  const porta_dtype_t dtype = parse_dtype(o.dtype);
  if (!o.shapes.empty() && ops.size() != 1)
    throw CLI::ValidationError(
        "--shape", "needs --op naming one op (the syntax is per op: " + shape_syntax() + ")");
  if (dtype != PORTA_DTYPE_F32 && ops.size() == 1 && is_multi_device(ops[0]))
    throw CLI::ValidationError("--dtype", std::string(op_name(ops[0])) + " moves fp32 only");
  if (dtype != PORTA_DTYPE_F32 && ops.size() == 1 && is_row_op(ops[0]))
    throw CLI::ValidationError(
        "--dtype",
        std::string(op_name(ops[0])) + " takes fp32 only; bf16 and f16 apply to gemm and conv");
  std::vector<Problem> out;
  for (Op op : ops) {
    if (dtype != PORTA_DTYPE_F32 && is_row_op(op)) continue;  // said in main()
    if (!o.shapes.empty()) {
      for (const std::string& text : o.shapes) {
        try {
          out.push_back({parse_shape(op, text), dtype});
        } catch (const std::invalid_argument& e) {
          throw CLI::ValidationError(e.what());
        }
      }
    } else {
      for (const Shape& s : suite_shapes(o.suite, op)) out.push_back({s, dtype});
    }
  }
  return out;
}

// One device per loaded backend: the default device for the selected backend, the first of
// each other backend's devices.
std::vector<std::pair<std::string, porta_device_t>> backend_devices() {
  std::vector<std::pair<std::string, porta_device_t>> out;
  const porta_device_t default_device = porta::default_device();
  const std::string selected = porta::device_properties(default_device).backend;
  out.emplace_back(selected, default_device);
  for (porta_device_t d : porta::devices()) {
    const std::string backend = porta::device_properties(d).backend;
    const bool seen =
        std::any_of(out.begin(), out.end(), [&](const auto& e) { return e.first == backend; });
    if (!seen) out.emplace_back(backend, d);
  }
  return out;
}

const porta_plugin_report_t* report_row(const std::vector<porta_plugin_report_t>& report,
                                        porta_plugin_kind_t kind, const std::string& name) {
  for (const porta_plugin_report_t& row : report)
    if (row.kind == kind && name == row.name) return &row;
  return nullptr;
}

int run(const Options& o, const std::vector<Problem>& todo) {
  Settings settings;
  settings.reps = o.reps;
  settings.cache_bytes = last_level_cache_bytes();

  Header header = machine_header();
  header.suite = o.shapes.empty() ? o.suite : "shape";
  header.impl = o.impl;
  header.dtype = o.dtype;
  header.reps = o.reps;
  if (!todo.empty() && is_multi_device(todo.front().shape.op)) {
    MultiDeviceRun multi{{}, o.backends, o.reps, o.json_path, o.csv_path};
    for (const Problem& p : todo) multi.shapes.push_back(p.shape);
    return run_multi_device(multi, std::move(header));
  }

  const std::vector<std::string> impls = o.impl == "all"
                                             ? std::vector<std::string>{"portable", "vendor"}
                                             : std::vector<std::string>{o.impl};
  const std::string backend_list = join(o.backends, ",");
  const std::string library = kernel_library();
  std::vector<Record> records;
  bool any_backend = false;

  for (const std::string& impl : impls) {
    porta_init_options_t init{};
    init.struct_size = sizeof init;
    init.backend = o.backends.empty() ? nullptr : backend_list.c_str();
    init.ops = impl.c_str();
    const porta_status_t status = porta_init(&init);
    const std::vector<porta_plugin_report_t> report = porta::loader_report();
    if (header.plugins.empty()) header.plugins = report;
    if (status != PORTA_SUCCESS) {
      const std::string why =
          std::string(porta_status_name(status)) + ": " + porta_last_error_message();
      porta_shutdown();
      note("cannot initialise Porta (" + impl + " ops): " + why);
      if (impl == impls.front()) return 1;
      continue;
    }
    any_backend = true;
    for (const std::string& wanted : o.backends) {
      const porta_plugin_report_t* row = report_row(report, PORTA_PLUGIN_KIND_BACKEND, wanted);
      if (row && row->outcome != PORTA_PLUGIN_LOADED && impl == impls.front()) {
        header.skipped.push_back(wanted + ": " + row->reason);
        note("backend " + wanted + " skipped: " + row->reason);
      }
    }
    try {
      for (const auto& [backend, device] : backend_devices()) {
        const porta_device_properties_t props = porta::device_properties(device);
        const bool gpu = (props.capabilities & PORTA_CAPABILITY_HOST_IS_DEVICE) == 0;
        // Which ops this implementation has on this backend.
        std::optional<std::set<std::string>> has;
        if (impl == "vendor") {
          const porta_plugin_report_t* row =
              report_row(report, PORTA_PLUGIN_KIND_OPS, "vendor_" + backend);
          if (!row || row->outcome != PORTA_PLUGIN_LOADED) {
            const std::string why = row ? row->reason : "not in the loader report";
            header.skipped.push_back("vendor ops on " + backend + ": " + why);
            note("no vendor ops on " + backend + ": " + why);
            continue;
          }
          has = listed_ops(*row);
        }
        header.devices[backend] = props;
        if (!header.peaks.count(backend)) {
          note("measuring the peaks of " + backend + " (" + props.name + ")");
          header.peaks[backend] = measure_peak(device, library);
          header.peaks[backend].matrix_units =
              (props.capabilities & PORTA_CAPABILITY_MATRIX_CORES) != 0;
          const Peak& p = header.peaks[backend];
          if (!p.error.empty())
            note("peak probe on " + backend + " failed: " + p.error);
          else
            note("peak " + backend + ": " + std::to_string(int(p.fma_gflops)) +
                 " GFLOP/s fp32 FMA, " + std::to_string(int(p.copy_gbps)) + " GB/s copy");
        }
        size_t index = 0;
        for (const Problem& problem : todo) {
          ++index;
          const Op op = problem.shape.op;
          if (has && !has->count(op_api_name(op))) continue;  // the portable plugin would run it
          if (problem.shape.gpu_only && !gpu) continue;
          Record r;
          r.op = op;
          r.shape = problem.shape;
          r.dtype = problem.dtype;
          r.backend = backend;
          r.device = props.name;
          r.impl = impl;
          measure(device, gpu, settings, r);
          std::string result =
              r.status == "ok" ? std::to_string(r.median_ms) + " ms" : r.status + ": " + r.message;
          std::fprintf(stderr, "porta-bench: [%zu/%zu] %s %s %s %s %s: %s\n", index, todo.size(),
                       op_name(op), r.shape.text().c_str(), dtype_name(r.dtype), backend.c_str(),
                       impl.c_str(), result.c_str());
          records.push_back(std::move(r));
        }
      }
    } catch (const porta::error& e) {
      note(std::string("Porta failed: ") + e.what());
      porta_shutdown();
      return 1;
    }
    porta_shutdown();
  }
  if (!any_backend) return 1;
  if (records.empty()) {
    note("nothing was measured" +
         (header.skipped.empty() ? std::string() : ": " + join(header.skipped, "; ")));
    return 1;
  }

  // Group the rows of one op, shape and dtype (measured one implementation at a time) so that
  // the table and the files read as comparisons: problems in suite order, and within one the
  // order measured (implementation, then backend).
  const auto problem_key = [](const Record& r) {
    return std::string(op_name(r.op)) + "|" + r.shape.text() + "|" + dtype_name(r.dtype);
  };
  std::map<std::string, size_t> first_seen;
  for (const Record& r : records) first_seen.emplace(problem_key(r), first_seen.size());
  std::stable_sort(records.begin(), records.end(), [&](const Record& a, const Record& b) {
    return first_seen.at(problem_key(a)) < first_seen.at(problem_key(b));
  });
  compare(records, header.peaks);
  print_table(records, header);
  int rc = 0;
  for (const Record& r : records) {
    if (r.status == "error") rc = 1;
    if (r.max_rel_err && !(*r.max_rel_err <= tolerance(r.dtype))) {
      note(std::string(op_name(r.op)) + " " + r.shape.text() + " " + r.backend + " " + r.impl +
           ": disagrees with another implementation or backend (relative error " +
           std::to_string(*r.max_rel_err) + ")");
      rc = 1;
    }
  }
  try {
    if (!o.json_path.empty()) write_json(o.json_path, header, records);
    if (!o.csv_path.empty()) write_csv(o.csv_path, records);
  } catch (const std::exception& e) {
    note(e.what());
    return 1;
  }
  return rc;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  Options o;
  CLI::App app{
      "porta-bench: GEMM, conv2d and the row ops on every backend and implementation, "
      "checked against each other and rated against the device's measured peaks."};
  std::vector<std::string> op_names{"all"};
  for (Op op : all_ops()) op_names.push_back(op_name(op));
  for (Op op : {Op::all_reduce, Op::peer_copy}) op_names.push_back(op_name(op));
  app.add_option("--backend", o.backends,
                 "a backend to measure (repeatable); default: every "
                 "usable one (PORTA_BACKEND, else auto)")
      ->check(CLI::IsMember(kBackends));
  app.add_option("--impl", o.impl, "op implementation: portable, vendor or all")
      ->check(CLI::IsMember({"portable", "vendor", "all"}))
      ->capture_default_str();
  app.add_option("--op", o.op,
                 "the op to measure, or all (all_reduce, under mpirun, and peer_copy only when "
                 "named)")
      ->check(CLI::IsMember(op_names))
      ->capture_default_str();
  app.add_option("--suite", o.suite, "shapes: quick (a few minutes on a 2-core CPU) or deepbench")
      ->check(CLI::IsMember({"quick", "deepbench"}))
      ->capture_default_str();
  app.add_option("--shape", o.shapes,
                 "a shape instead of the suite (repeatable; needs one --op): " + shape_syntax());
  app.add_option("--dtype", o.dtype, "input type of gemm and conv: f32, bf16 or f16")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
  app.add_option("--reps", o.reps, "timed repetitions (default 20 on a CPU, 100 on a GPU)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--json", o.json_path, "write the results as JSON to this file");
  app.add_option("--csv", o.csv_path, "write the records as CSV to this file");
  app.set_version_flag("--version", "porta-bench " + std::to_string(PORTA_VERSION_MAJOR) + "." +
                                        std::to_string(PORTA_VERSION_MINOR) + "." +
                                        std::to_string(PORTA_VERSION_PATCH));
  std::vector<Problem> todo;
  try {
    app.parse(argc, argv);
    // A backend named twice is measured once; the order is the preference order.
    std::vector<std::string> unique;
    for (const std::string& b : o.backends)
      if (std::find(unique.begin(), unique.end(), b) == unique.end()) unique.push_back(b);
    o.backends = unique;
    todo = problems(o);
    check_writable("--json", o.json_path);
    check_writable("--csv", o.csv_path);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (o.dtype != "f32" && o.op == "all")
    note("softmax, softmax_bwd and cross_entropy take fp32 only: left out for --dtype " + o.dtype);
  try {
    return run(o, todo);
  } catch (const std::exception& e) {
    note(e.what());
    return 1;
  }
}
