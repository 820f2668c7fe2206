// porta-bench: the same ops and shapes on every available backend and every implementation
// (portable, vendor), checked against each other, timed, and rated against the device's
// measured peaks (DeepBench training shapes, shapes.cpp). Only the
// public API is used. See README.md beside this file for the options and the JSON schema.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "case.h"
#include "cli_checks.h"

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

porta_dtype_t parse_dtype(const std::string& name) {
  return name == "bf16" ? PORTA_DTYPE_BF16 : name == "f16" ? PORTA_DTYPE_F16 : PORTA_DTYPE_F32;
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
  if (dtype != PORTA_DTYPE_F32 && ops.size() == 1 && is_bandwidth_op(ops[0]))
    throw CLI::ValidationError(
        "--dtype",
        std::string(op_name(ops[0])) + " takes fp32 only; bf16 and f16 apply to gemm and conv");
  std::vector<Problem> out;
  for (Op op : ops) {
    if (dtype != PORTA_DTYPE_F32 && is_bandwidth_op(op)) continue;  // said in main()
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

// A porta_device_properties_t from the hex of its bytes (workers are forks of this program).
porta_device_properties_t properties_from_hex(const std::string& hex) {
  porta_device_properties_t props{};
  auto* bytes = reinterpret_cast<unsigned char*>(&props);
  for (size_t i = 0; i < sizeof props && 2 * i + 1 < hex.size(); ++i)
    bytes[i] = static_cast<unsigned char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return props;
}

// A worker's offer on one backend: the ops it measures there (none listed: every op).
struct Offer {
  Worker* worker;
  std::optional<std::set<std::string>> ops;
};

void add_once(std::vector<std::string>& list, const std::string& item) {
  if (std::find(list.begin(), list.end(), item) == list.end()) list.push_back(item);
}

// Sets up one problem on one backend in every worker that offers it, times them in turn, one
// repetition each (A B C A B C ...), and collects their outputs.
// Waits until the workers have gone idle. A library's threads keep spinning for a while after its
// call returns (OpenMP's and OpenBLAS's wait policies), and would take the cores from the
// implementation timed next: idle is less than 0.2 ms of CPU used, all workers together, in 2 ms,
// and no worker thread running at its end; at most 1 s. The state check is needed: the kernel
// adds a running thread's time to its schedstat only at the scheduler tick (4 ms at HZ=250), so a
// thread spinning since the last tick can read as idle for a whole window.
void settle(const std::vector<Worker*>& workers) {
  const auto busy_ns = [&] {
    uint64_t total = 0;
    for (const Worker* w : workers) total += w->cpu_ns();
    return total;
  };
  const auto any_running = [&] {
    return std::any_of(workers.begin(), workers.end(),
                       [](const Worker* w) { return w->running(); });
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  uint64_t before = busy_ns();
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const uint64_t after = busy_ns();
    if (after - before < 200'000 && !any_running()) return;
    before = after;
  }
}

std::vector<Record> measure_in_turn(const std::vector<Worker*>& takers, size_t problem_index,
                                    const Problem& problem, const std::string& backend,
                                    const std::string& device, int reps,
                                    std::chrono::steady_clock::time_point run_start) {
  using json = nlohmann::ordered_json;
  std::vector<Record> rows(takers.size());
  std::vector<std::string> order;
  for (Worker* w : takers) order.push_back(w->variant().impl);
  const auto fail = [](Record& r, const json& answer) {
    r.status = answer.value("status", "error");
    r.message = answer.value("message", "");
  };
  const auto failed = [](Record& r, const std::exception& e) {
    r.status = "error";
    r.message = e.what();
  };
  for (size_t k = 0; k < takers.size(); ++k) {
    Record& r = rows[k];
    r.op = problem.shape.op;
    r.shape = problem.shape;
    r.dtype = problem.dtype;
    r.backend = backend;
    r.device = device;
    r.impl = takers[k]->variant().impl;
    r.kind = takers[k]->variant().vendor() ? "vendor" : "portable";
    r.error_metric = error_metric(r.op);
    r.interleaved = order;
    try {
      const json answer = takers[k]->call(
          {{"cmd", "prepare"}, {"problem", problem_index}, {"backend", backend}, {"reps", reps}});
      if (answer.value("status", "") != "ok") {
        fail(r, answer);
        continue;
      }
      r.warmup = answer.value("warmup", 0);
      r.sets = answer.value("sets", 0);
      r.copy_bytes = answer.value("copy_bytes", 0.0);
    } catch (const std::exception& e) {
      failed(r, e);
    }
  }
  for (int i = 0; i < reps; ++i) {
    for (size_t k = 0; k < takers.size(); ++k) {
      Record& r = rows[k];
      if (r.status != "ok") continue;
      if (takers.size() > 1) settle(takers);
      const std::chrono::duration<double> since = std::chrono::steady_clock::now() - run_start;
      try {
        const json answer = takers[k]->call({{"cmd", "rep"}, {"i", i}});
        if (answer.value("status", "") != "ok") {
          fail(r, answer);
          continue;
        }
        r.times_ms.push_back(answer.at("ms").get<double>());
        if (answer.contains("copy_ms")) r.copy_times_ms.push_back(answer["copy_ms"].get<double>());
        r.started_s.push_back(since.count());
      } catch (const std::exception& e) {
        failed(r, e);
      }
    }
  }
  for (size_t k = 0; k < takers.size(); ++k) {
    Record& r = rows[k];
    if (r.status != "ok") continue;
    try {
      const json answer = takers[k]->call({{"cmd", "finish"}});
      std::vector<float> output = takers[k]->floats();
      if (answer.value("status", "") != "ok") {
        fail(r, answer);
        continue;
      }
      r.output = std::move(output);
      summarise(r);
    } catch (const std::exception& e) {
      failed(r, e);
    }
  }
  return rows;
}

int run(const Options& o, const std::vector<Problem>& todo) {
  using json = nlohmann::ordered_json;
  Settings settings;
  settings.reps = o.reps;
  settings.cache_bytes = last_level_cache_bytes();

  Header header = machine_header();
  header.suite = o.shapes.empty() ? o.suite : "shape";
  header.impl = o.impl;
  header.dtype = o.dtype;
  header.reps = o.reps;
  start_load(header);
  if (!todo.empty() && is_multi_device(todo.front().shape.op)) {
    MultiDeviceRun multi{{}, o.backends, o.reps, o.json_path, o.csv_path};
    for (const Problem& p : todo) multi.shapes.push_back(p.shape);
    return run_multi_device(multi, std::move(header));
  }

  const std::string backend_list = join(o.backends, ",");
  const std::string library = kernel_library();

  // One worker per implementation, all alive together.
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<int> worker_fds;
  for (const Variant& v : variants(o.impl)) {
    if (v.blocked() && !blocked_conv_missing().empty()) {
      add_once(header.skipped, v.impl + ": " + blocked_conv_missing());
      continue;
    }
    workers.push_back(
        std::make_unique<Worker>(v, backend_list, settings, todo, library, worker_fds));
    for (int fd : workers.back()->fds()) worker_fds.push_back(fd);
  }

  std::vector<std::string> backend_order;
  std::map<std::string, bool> gpu_of;
  std::map<std::string, std::vector<Offer>> offers;
  bool any_backend = false;
  for (const auto& w : workers) {
    const std::string& impl = w->variant().impl;
    json hello;
    try {
      hello = w->hello();
    } catch (const std::exception& e) {
      note(std::string("cannot initialise Porta (") + impl + "): " + e.what());
      continue;
    }
    if (header.plugins.empty() && hello.contains("libraries")) header.plugins = hello["libraries"];
    if (!hello.value("ok", false)) {
      note("cannot initialise Porta (" + impl + "): " + hello.value("error", ""));
      continue;
    }
    if (!any_backend) {
      for (const std::string& wanted : o.backends) {
        for (const json& row : header.plugins) {
          if (row.value("kind", "") == "backend" && row.value("name", "") == wanted &&
              row.value("outcome", "") != "loaded") {
            header.skipped.push_back(wanted + ": " + row.value("reason", ""));
            note("backend " + wanted + " skipped: " + row.value("reason", ""));
          }
        }
      }
    }
    any_backend = true;
    for (const json& b : hello["backends"]) {
      const std::string backend = b.at("backend");
      if (!gpu_of.count(backend)) {
        backend_order.push_back(backend);
        gpu_of[backend] = b.at("gpu").get<bool>();
        header.devices[backend] = properties_from_hex(b.at("properties"));
      }
      if (const std::string skip = b.value("skip", ""); !skip.empty()) {
        if (std::find(header.skipped.begin(), header.skipped.end(), skip) == header.skipped.end())
          note("not measured: " + skip);
        add_once(header.skipped, skip);
        continue;
      }
      Offer offer{w.get(), std::nullopt};
      if (!b.at("ops").is_null()) offer.ops = b.at("ops").get<std::set<std::string>>();
      offers[backend].push_back(offer);
    }
  }
  if (!any_backend) return 1;

  for (const std::string& backend : backend_order) {
    if (offers[backend].empty()) continue;
    const porta_device_properties_t& props = header.devices[backend];
    note("measuring the peaks of " + backend + " (" + props.name + ")");
    Peak p;
    try {
      const json answer =
          offers[backend].front().worker->call({{"cmd", "peak"}, {"backend", backend}});
      p.fma_gflops = answer.value("fma_gflops", 0.0);
      p.copy_gbps = answer.value("copy_gbps", 0.0);
      p.fma_ms = answer.value("fma_ms", 0.0);
      p.copy_ms = answer.value("copy_ms", 0.0);
      p.copy_bytes = answer.value("copy_bytes", uint64_t{0});
      p.error = answer.value("error", "");
    } catch (const std::exception& e) {
      p.error = e.what();
    }
    p.matrix_units = (props.capabilities & PORTA_CAPABILITY_MATRIX_CORES) != 0;
    derive_16bit_peaks(p, gpu_of[backend]);
    if (!p.error.empty())
      note("peak probe on " + backend + " failed: " + p.error);
    else
      note("peak " + backend + ": " + std::to_string(int(p.fma_gflops)) + " GFLOP/s fp32 FMA, " +
           std::to_string(int(p.copy_gbps)) + " GB/s copy");
    header.peaks[backend] = p;
  }

  std::vector<Record> records;
  const auto run_start = std::chrono::steady_clock::now();
  for (size_t index = 0; index < todo.size(); ++index) {
    const Problem& problem = todo[index];
    const Op op = problem.shape.op;
    for (const std::string& backend : backend_order) {
      if (problem.shape.gpu_only && !gpu_of[backend]) continue;
      std::vector<Worker*> takers;
      for (const Offer& offer : offers[backend])
        if (!offer.ops || offer.ops->count(op_api_name(op))) takers.push_back(offer.worker);
      if (takers.empty()) continue;
      const int reps = repetitions(settings, problem.shape, gpu_of[backend]);
      for (Record& r : measure_in_turn(takers, index, problem, backend,
                                       header.devices[backend].name, reps, run_start)) {
        const std::string result =
            r.status == "ok" ? std::to_string(r.median_ms) + " ms" : r.status + ": " + r.message;
        std::fprintf(stderr, "porta-bench: [%zu/%zu] %s %s %s %s %s: %s\n", index + 1, todo.size(),
                     op_name(op), r.shape.text().c_str(), dtype_name(r.dtype), backend.c_str(),
                     r.impl.c_str(), result.c_str());
        records.push_back(std::move(r));
      }
    }
  }
  workers.clear();  // each shuts its Porta down

  end_load(header);

  if (records.empty()) {
    note("nothing was measured" +
         (header.skipped.empty() ? std::string() : ": " + join(header.skipped, "; ")));
    return 1;
  }
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

namespace bench {

// "a,b,c" as {"a", "b", "c"}.
std::vector<std::string> comma_list(const std::string& text) {
  std::vector<std::string> items;
  size_t start = 0;
  for (size_t comma; (comma = text.find(',', start)) != std::string::npos; start = comma + 1) {
    items.push_back(text.substr(start, comma - start));
  }
  items.push_back(text.substr(start));
  return items;
}

std::vector<Variant> variants(const std::string& impl) {
  const std::vector<Variant> all = {{"portable", "portable", ""},
                                    {"openblas", "vendor", "openblas"},
                                    {"onednn", "vendor", "onednn"},
                                    {"onednn-blocked", "portable", "", BlockedAlgorithm::direct},
                                    {"onednn-winograd", "portable", "", BlockedAlgorithm::winograd},
                                    {"cublas", "vendor", "cublas"},
                                    {"cudnn", "vendor", "cudnn"}};
  std::vector<Variant> out;
  for (const Variant& v : all) {
    for (const std::string& name : comma_list(impl)) {
      if (name == "all" || name == v.impl || (name == "vendor" && v.vendor())) {
        out.push_back(v);
        break;
      }
    }
  }
  return out;
}

std::vector<std::string> variant_names() {
  std::vector<std::string> names;
  for (const Variant& v : variants("all")) names.push_back(v.impl);
  return names;
}

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
  std::vector<std::string> impl_names = variant_names();
  impl_names.insert(impl_names.end(), {"vendor", "all"});
  app.add_option("--impl", o.impl,
                 "op implementations, comma-separated, timed in turn: portable, a vendor "
                 "library (" +
                     join({impl_names.begin() + 1, impl_names.end() - 2}, ", ") +
                     "), vendor (each of them) or all")
      ->check([impl_names](const std::string& list) {
        for (const std::string& name : comma_list(list)) {
          if (std::find(impl_names.begin(), impl_names.end(), name) == impl_names.end()) {
            return "'" + name + "' is not one of " + join(impl_names, ", ");
          }
        }
        return std::string();
      })
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
      ->transform(porta_tools::kDecimal)
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
    porta_tools::check_output("--json", o.json_path);
    porta_tools::check_output("--csv", o.csv_path);
    porta_tools::check_apart("--csv", o.csv_path, "--json", o.json_path);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (o.dtype != "f32" && o.op == "all")
    note("the row ops, pooling, relu, bias and adam take fp32 only: left out for --dtype " +
         o.dtype);
  try {
    const int status = run(o, todo);
    return porta_tools::stdout_written("porta-bench") ? status : 1;
  } catch (const std::exception& e) {
    note(e.what());
    return 1;
  }
}
