// The comparison across implementations and backends, and the reports: the table on stdout,
// JSON and CSV (schema in README.md beside this file).
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "bench.h"
#include "output_file.h"

namespace bench {

namespace {

// A plugin's list of ops and its version live in fields of the report row appended after the
// first release; the row is read through these so that the tool builds against either header.
template <class Row>
std::optional<std::string> ops_field(const Row& row) {
  if constexpr (requires { row.ops; }) {
    if (row.struct_size >= offsetof(Row, ops) + sizeof(row.ops)) return std::string(row.ops);
  }
  return std::nullopt;
}

template <class Row>
std::string version_field(const Row& row) {
  if constexpr (requires { row.version; }) {
    if (row.struct_size >= offsetof(Row, version) + sizeof(row.version))
      return std::string(row.version);
  }
  return "";
}

std::string key(const Record& r) {
  return std::string(op_name(r.op)) + "|" + r.shape.text() + "|" + dtype_name(r.dtype);
}

std::string read_first_line(const char* path, const char* prefix) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return line.substr(std::string(prefix).size());
  }
  return "";
}

std::string trim(std::string s) {
  const auto not_space = [](unsigned char ch) { return !std::isspace(ch); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::string fixed(double v, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, v);
  return text;
}

std::string scientific(double v) {
  if (std::isinf(v)) return "inf";
  char text[64];
  std::snprintf(text, sizeof text, "%.1e", v);
  return text;
}

nlohmann::ordered_json optional_number(const std::optional<double>& v) {
  if (!v || !std::isfinite(*v)) return nullptr;
  return *v;
}

std::string csv_number(const std::optional<double>& v) {
  if (!v || !std::isfinite(*v)) return "";
  std::ostringstream out;
  out.precision(9);
  out << *v;
  return out.str();
}

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) out += ch == '"' ? std::string("\"\"") : std::string(1, ch == '\n' ? ' ' : ch);
  return out + "\"";
}

const char* outcome_name(porta_plugin_outcome_t outcome) { return porta::to_string(outcome); }

}  // namespace

std::optional<std::set<std::string>> listed_ops(const porta_plugin_report_t& row) {
  const std::optional<std::string> text = ops_field(row);
  if (!text) return std::nullopt;
  std::set<std::string> ops;
  std::stringstream in(*text);
  std::string name;
  while (std::getline(in, name, ',')) {
    name = trim(name);
    if (!name.empty()) ops.insert(name);
  }
  return ops;
}

std::string plugin_version(const porta_plugin_report_t& row) { return version_field(row); }

const char* error_metric(Op op) { return is_bandwidth_op(op) ? "elementwise" : "normwise"; }

double tolerance(porta_dtype_t dtype) { return dtype == PORTA_DTYPE_F32 ? 1e-3 : 2e-2; }

double relative_error(Op op, const std::vector<float>& x, const std::vector<float>& ref) {
  if (x.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double scale = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(x[i]) && std::isfinite(ref[i]))
      return std::numeric_limits<double>::infinity();
    if (std::isfinite(ref[i])) scale = std::max(scale, std::fabs(double(ref[i])));
  }
  double worst = 0.0;
  const bool elementwise = is_bandwidth_op(op);
  const double floor = elementwise ? 1e-3 * scale : scale;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(ref[i])) continue;
    const double diff = std::fabs(double(x[i]) - double(ref[i]));
    const double denominator = elementwise ? std::max(std::fabs(double(ref[i])), floor) : floor;
    worst = std::max(worst, denominator > 0.0 ? diff / denominator : diff);
  }
  return worst;
}

void compare(std::vector<Record>& records, const std::map<std::string, Peak>& peaks) {
  for (Record& r : records) {
    if (r.status != "ok") continue;
    if (auto p = peaks.find(r.backend); p != peaks.end()) {
      // The peak of the inputs' type (Peak::fma_peak): none on matrix units, whose 16-bit rate
      // is not measured, and no percentage is better than a wrong one.
      const double peak = p->second.fma_peak(r.dtype);
      if (r.gflops && peak > 0) r.pct_peak = 100.0 * *r.gflops / peak;
      // GB/s against the copy timed with the op on its own memory; the probe's where none was.
      const double copy = r.copy_gbps.value_or(p->second.copy_gbps);
      if (r.gbps && copy > 0) r.pct_peak = 100.0 * *r.gbps / copy;
    }
    // The vendor baseline is the fastest vendor library on this backend.
    const Record* best = nullptr;
    for (const Record& other : records) {
      if (other.status != "ok" || key(other) != key(r) || other.backend != r.backend ||
          other.kind != "vendor")
        continue;
      if (!best || other.median_ms < best->median_ms) best = &other;
    }
    if (best) {
      r.ratio_to_vendor = best->median_ms / r.median_ms;
      r.best_vendor = best->impl;
    }
    for (const Record& other : records) {
      if (&other == &r || other.status != "ok" || key(other) != key(r)) continue;
      const double e = relative_error(r.op, r.output, other.output);
      r.max_rel_err = std::max(r.max_rel_err.value_or(0.0), e);
    }
  }
}

void note(const std::string& text) { std::fprintf(stderr, "porta-bench: %s\n", text.c_str()); }

namespace {
CpuTimes cpu_times() {
  CpuTimes t;
  t.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
                 .count();
  // "cpu  user nice system idle iowait irq softirq steal ...", in clock ticks (guest time is
  // inside user's).
  std::ifstream in("/proc/stat");
  std::string cpu;
  double user, nice, system, idle, iowait, irq, softirq, steal;
  if (!(in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) ||
      cpu != "cpu")
    return t;
  const double tick = double(sysconf(_SC_CLK_TCK));
  t.machine_busy_s = (user + nice + system + irq + softirq + steal) / tick;
  const auto seconds = [](const timeval& v) { return double(v.tv_sec) + 1e-6 * double(v.tv_usec); };
  for (const int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    rusage u{};
    if (getrusage(who, &u) == 0) t.own_s += seconds(u.ru_utime) + seconds(u.ru_stime);
  }
  t.known = tick > 0;
  return t;
}
}  // namespace

void start_load(Header& header) {
  header.load_start = load_average();
  header.cpu_start = cpu_times();
}

void end_load(Header& header, bool alone) {
  header.load_end = load_average();
  const CpuTimes end = cpu_times();
  const double capacity = (end.wall_s - header.cpu_start.wall_s) * header.cores;
  if (alone && header.cpu_start.known && end.known && capacity > 0) {
    const double others = (end.machine_busy_s - header.cpu_start.machine_busy_s) -
                          (end.own_s - header.cpu_start.own_s);
    header.others_share = std::clamp(others / capacity, 0.0, 1.0);
  }
  // The share says what ran beside the run; the start's load average, where it is unknown, also
  // counts whatever ran in the minute before (this program's last run among it).
  const double busy_above = 0.5 * header.cores;
  const bool shared = header.others_share && *header.others_share > kOthersBusyAbove;
  const bool loaded = !header.others_share && !header.load_start.empty() &&
                      header.load_start[0] > busy_above;
  header.busy = loaded || shared;
  if (loaded)
    note("warning: the machine was busy (1-minute load average above " + fixed(busy_above, 1) +
         " at the start): other work shared the cores, timings are noisy");
  if (shared)
    note("warning: the machine was busy (other processes took " +
         fixed(100 * *header.others_share, 0) + "% of its CPU time during the run)" +
         ": timings are noisy");
}

std::vector<double> load_average() {
  std::ifstream in("/proc/loadavg");
  std::vector<double> load(3);
  if (!(in >> load[0] >> load[1] >> load[2])) return {};
  return load;
}

nlohmann::ordered_json libraries_json(const std::vector<porta_plugin_report_t>& report) {
  using json = nlohmann::ordered_json;
  json libraries = json::array();
  for (const porta_plugin_report_t& p : report) {
    json lib = {
        {"name", p.name},
        {"kind", p.kind == PORTA_PLUGIN_KIND_OPS ? "ops" : "backend"},
        {"outcome", outcome_name(p.outcome)},
        {"abi", p.abi_major ? std::to_string(p.abi_major) + "." + std::to_string(p.abi_minor)
                            : std::string()},
        {"version", plugin_version(p)},
        {"path", p.path},
        {"reason", p.reason}};
    if (auto ops = listed_ops(p); ops && p.kind == PORTA_PLUGIN_KIND_OPS) lib["ops"] = *ops;
    libraries.push_back(lib);
  }
  return libraries;
}

Header machine_header() {
  Header h;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &utc);
  h.date = date;
  h.cpu = trim(read_first_line("/proc/cpuinfo", "model name\t:"));
  if (h.cpu.empty()) {
    struct utsname u {};
    if (uname(&u) == 0) h.cpu = u.machine;
  }
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  h.cores = online > 0 ? static_cast<int>(online) : 0;
  std::string os = read_first_line("/etc/os-release", "PRETTY_NAME=");
  os.erase(std::remove(os.begin(), os.end(), '"'), os.end());
  struct utsname u {};
  if (uname(&u) == 0) os += (os.empty() ? "" : ", ") + std::string(u.sysname) + " " + u.release;
  h.os = os;
  h.porta_version = std::to_string(PORTA_VERSION_MAJOR) + "." +
                    std::to_string(PORTA_VERSION_MINOR) + "." + std::to_string(PORTA_VERSION_PATCH);
  return h;
}

void print_table(const std::vector<Record>& records, const Header& header) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"op", "shape", "dtype", "backend", "impl", "median ms", "rate", "% peak",
                  "vs vendor", "max rel err"});
  for (const Record& r : records) {
    if (r.status != "ok") {
      rows.push_back({op_name(r.op), r.shape.text(), dtype_name(r.dtype), r.backend, r.impl,
                      r.status, "", "", "", ""});
      continue;
    }
    std::string rate = r.gflops ? fixed(*r.gflops, 1) + " GFLOP/s"
                       : r.gbps ? fixed(*r.gbps, 1) + " GB/s"
                                : "";
    if (r.busbw_gbps) rate += " (bus " + fixed(*r.busbw_gbps, 1) + ")";
    rows.push_back({op_name(r.op), r.shape.text(), dtype_name(r.dtype), r.backend, r.impl,
                    fixed(r.median_ms, 3), rate, r.pct_peak ? fixed(*r.pct_peak, 1) : "-",
                    r.ratio_to_vendor ? fixed(*r.ratio_to_vendor, 2) : "-",
                    r.max_rel_err ? scientific(*r.max_rel_err) : "-"});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  for (const auto& [backend, peak] : header.peaks) {
    const auto device = header.devices.find(backend);
    std::printf("peak %s (%s): %s GFLOP/s fp32 FMA, %s GB/s copy%s%s\n", backend.c_str(),
                device != header.devices.end() ? device->second.name : "?",
                fixed(peak.fma_gflops, 1).c_str(), fixed(peak.copy_gbps, 1).c_str(),
                peak.error.empty() ? "" : "; probe failed: ", peak.error.c_str());
    if (header.dtype != "f32") {
      const bool bf16 = header.dtype == "bf16";
      const double rate = bf16 ? peak.bf16_gflops : peak.f16_gflops;
      std::printf("peak %s %s: %s (%s)\n", backend.c_str(), header.dtype.c_str(),
                  rate > 0 ? (fixed(rate, 1) + " GFLOP/s").c_str() : "none",
                  (bf16 ? peak.bf16_source : peak.f16_source).c_str());
    }
  }
  const auto load_text = [](const std::vector<double>& l) {
    return l.empty() ? std::string("unknown") : fixed(l[0], 2);
  };
  const std::string others =
      header.others_share ? fixed(100 * *header.others_share, 0) + "%" : std::string("unknown");
  std::printf(
      "load average (1 min): %s at the start, %s at the end, %d cores; other processes' share of "
      "the CPU time during the run: %s%s\n",
      load_text(header.load_start).c_str(), load_text(header.load_end).c_str(), header.cores,
      others.c_str(), header.busy ? "; WARNING: the machine was busy, timings are noisy" : "");
  if (std::any_of(records.begin(), records.end(),
                  [](const Record& r) { return !r.interleaved.empty(); })) {
    std::printf(
        "implementations of one shape are timed in turn, one repetition each; "
        "vs vendor: the fastest vendor library\n");
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      const bool left = i < 5;
      std::string cell = row[i];
      const std::string pad(width[i] - cell.size(), ' ');
      line += (i ? "  " : "") + (left ? cell + pad : pad + cell);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
  for (const Record& r : records) {
    if (r.status != "ok")
      std::printf("%s %s %s %s: %s\n", op_name(r.op), r.shape.text().c_str(), r.backend.c_str(),
                  r.impl.c_str(), r.message.c_str());
  }
  std::fflush(stdout);
}

void write_json(const std::string& path, const Header& header, const std::vector<Record>& records) {
  using json = nlohmann::ordered_json;
  const json& libraries = header.plugins;
  json peaks = json::array();
  for (const auto& [backend, peak] : header.peaks) {
    const auto device = header.devices.find(backend);
    const bool known = device != header.devices.end();
    json entry = {
        {"backend", backend},
        {"device", known ? device->second.name : ""},
        {"architecture", known ? device->second.architecture : ""},
        {"compute_units", known ? device->second.compute_units : 0},
        {"clock_mhz",
         known && device->second.clock_mhz > 0 ? json(device->second.clock_mhz) : json(nullptr)},
        {"fma_gflops", peak.fma_gflops > 0 ? json(peak.fma_gflops) : json(nullptr)},
        {"copy_gbps", peak.copy_gbps > 0 ? json(peak.copy_gbps) : json(nullptr)},
        {"copy_bytes", peak.copy_bytes},
        {"bf16_gflops", peak.bf16_gflops > 0 ? json(peak.bf16_gflops) : json(nullptr)},
        {"bf16_source", peak.bf16_source},
        {"f16_gflops", peak.f16_gflops > 0 ? json(peak.f16_gflops) : json(nullptr)},
        {"f16_source", peak.f16_source}};
    if (!peak.error.empty()) entry["error"] = peak.error;
    peaks.push_back(entry);
  }
  json out_records = json::array();
  for (const Record& r : records) {
    out_records.push_back(
        {{"op", op_name(r.op)},
         {"shape", r.shape.text()},
         {"dtype", dtype_name(r.dtype)},
         {"backend", r.backend},
         {"device", r.device},
         {"impl", r.impl},
         {"status", r.status},
         {"message", r.message},
         {"median_ms", r.status == "ok" ? json(r.median_ms) : json(nullptr)},
         {"min_ms", r.status == "ok" ? json(r.min_ms) : json(nullptr)},
         {"max_ms", r.status == "ok" ? json(r.max_ms) : json(nullptr)},
         {"reps", r.reps},
         {"warmup", r.warmup},
         {"sets", r.sets},
         {"flops", r.shape.flops() > 0 ? json(r.shape.flops()) : json(nullptr)},
         {"bytes", r.shape.bytes(r.dtype)},
         {"gflops", optional_number(r.gflops)},
         {"gbps", optional_number(r.gbps)},
         {"pct_peak", optional_number(r.pct_peak)},
         {"copy_gbps", optional_number(r.copy_gbps)},
         {"ratio_to_vendor", optional_number(r.ratio_to_vendor)},
         {"max_rel_err", r.max_rel_err && std::isinf(*r.max_rel_err)
                             ? json("inf")
                             : optional_number(r.max_rel_err)},
         {"error_metric", r.error_metric},
         {"kind", r.kind},
         {"best_vendor", r.best_vendor.empty() ? json(nullptr) : json(r.best_vendor)},
         {"interleaved", r.interleaved},
         {"times_ms", r.times_ms},
         {"started_s", r.started_s}});
    if (r.ranks) {
      out_records.back()["ranks"] = *r.ranks;
      out_records.back()["algbw_gbps"] = optional_number(r.algbw_gbps);
      out_records.back()["busbw_gbps"] = optional_number(r.busbw_gbps);
    }
  }
  const auto load = [](const std::vector<double>& l) {
    return l.empty() ? json(nullptr) : json(l);
  };
  json doc = {{"schema", "porta-bench/2"},
              {"porta_version", header.porta_version},
              {"date", header.date},
              {"machine", {{"cpu", header.cpu}, {"cores", header.cores}, {"os", header.os}}},
              {"settings",
               {{"suite", header.suite},
                {"impl", header.impl},
                {"dtype", header.dtype},
                {"reps", header.reps ? json(header.reps) : json(nullptr)}}},
              {"load",
               {{"start", load(header.load_start)},
                {"end", load(header.load_end)},
                {"busy_above", 0.5 * header.cores},
                {"others_share", optional_number(header.others_share)},
                {"others_busy_above", kOthersBusyAbove},
                {"busy", header.busy}}},
              {"libraries", libraries},
              {"peaks", peaks},
              {"skipped", header.skipped},
              {"records", out_records}};
  porta_tools::write_whole_file(path, doc.dump(2) + "\n");
}

void write_csv(const std::string& path, const std::vector<Record>& records) {
  std::ostringstream file;
  file << "op,shape,dtype,backend,device,impl,status,message,median_ms,min_ms,max_ms,reps,warmup,"
          "sets,flops,bytes,gflops,gbps,pct_peak,copy_gbps,ratio_to_vendor,max_rel_err,"
          "error_metric,kind,best_vendor\n";
  for (const Record& r : records) {
    const bool ok = r.status == "ok";
    const auto when_ok = [&](double v) { return ok ? csv_number(v) : std::string(); };
    file << op_name(r.op) << "," << csv_quote(r.shape.text()) << "," << dtype_name(r.dtype) << ","
         << csv_quote(r.backend) << "," << csv_quote(r.device) << "," << r.impl << "," << r.status
         << "," << csv_quote(r.message) << "," << when_ok(r.median_ms) << "," << when_ok(r.min_ms)
         << "," << when_ok(r.max_ms) << "," << r.reps << "," << r.warmup << "," << r.sets << ","
         << (r.shape.flops() > 0 ? csv_number(r.shape.flops()) : "") << ","
         << csv_number(r.shape.bytes(r.dtype)) << "," << csv_number(r.gflops) << ","
         << csv_number(r.gbps) << "," << csv_number(r.pct_peak) << ","
         << csv_number(r.copy_gbps) << "," << csv_number(r.ratio_to_vendor) << ","
         << (r.max_rel_err && std::isinf(*r.max_rel_err) ? "inf" : csv_number(r.max_rel_err)) << ","
         << r.error_metric << "," << r.kind << "," << r.best_vendor << "\n";
  }
  porta_tools::write_whole_file(path, file.str());
}

}  // namespace bench
