// porta-bench: what its parts share. The ops and shapes it measures (shapes.cpp), the peak
// probes (peaks.cpp), one measurement (measure.cpp), and the table, JSON and CSV (report.cpp).
// Everything goes through the public API only: porta.h, porta_ops.h, porta.hpp.
#ifndef PORTA_TOOLS_BENCH_BENCH_H_
#define PORTA_TOOLS_BENCH_BENCH_H_

#include <porta/porta_ops.h>

#include <cstdint>
#include <map>
#include <optional>
#include <porta/porta.hpp>
#include <set>
#include <string>
#include <vector>

namespace bench {

enum class Op {
  gemm,
  conv_fwd,
  conv_bwd_data,
  conv_bwd_weights,
  softmax,
  softmax_bwd,
  cross_entropy,
  // Between devices and processes (multi_device.cpp), not part of "all": all-reduce over the
  // ranks of mpirun, and a copy from device 0 to device 1 of a backend.
  all_reduce,
  peer_copy
};

// Every op, in the order the table lists them.
const std::vector<Op>& all_ops();
// The name on the command line and in the reports ("conv_fwd").
const char* op_name(Op op);
std::optional<Op> op_from_name(const std::string& name);
// The op's name in porta_ops.h without "porta_", as op plugins list what they implement
// ("conv2d_forward").
const char* op_api_name(Op op);
bool is_conv(Op op);
bool is_row_op(Op op);  // softmax, softmax_bwd, cross_entropy: fp32 only, rated in GB/s
bool is_multi_device(Op op);  // all_reduce, peer_copy: a buffer size, rated in GB/s

const char* dtype_name(porta_dtype_t dtype);
size_t dtype_size(porta_dtype_t dtype);

// One problem size of one op. The text form is the --shape syntax of the op (see shapes.cpp),
// and is how reports name the shape.
struct Shape {
  Op op = Op::gemm;
  // gemm
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  // conv, DeepBench's names: input W x H with C channels, batch N, K filters of S (wide) x
  // R (high), padding pw, ph, strides sw, sh
  int64_t w = 0, h = 0, c = 0, batch = 0, filters = 0, s = 0, r = 0, pw = 0, ph = 0, sw = 1, sh = 1;
  // row ops
  int64_t rows = 0, cols = 0;
  // all_reduce, peer_copy: the buffer's size in bytes
  int64_t size = 0;
  // Suites may lower the repetitions of their largest shapes (0: the default).
  int max_reps = 0;
  bool gpu_only = false;  // too slow for a CPU: the suite runs it on GPUs only

  std::string text() const;
  porta_conv2d_desc_t conv_desc(porta_dtype_t dtype) const;
  // Floating-point operations (gemm, conv: 2 per multiply-add, the direct count) or bytes moved
  // (row ops: each input read once, each output written once) per call.
  // gemm and conv read inputs of `dtype` and write fp32; the row ops are fp32 throughout.
  double flops() const;
  double bytes(porta_dtype_t dtype = PORTA_DTYPE_F32) const;
};

// Parses `text` as a shape of `op`; throws std::invalid_argument with what is wrong.
Shape parse_shape(Op op, const std::string& text);
// The syntax of --shape for each op, for --help and error messages.
std::string shape_syntax();
// The shapes of a suite ("quick", "deepbench") for one op: DeepBench's training shapes.
std::vector<Shape> suite_shapes(const std::string& suite, Op op);

// ---- measuring ------------------------------------------------------------------------------

// The measured peaks of one device (0 when a probe failed; error says why).
struct Peak {
  double fma_gflops = 0.0;
  double copy_gbps = 0.0;
  double fma_ms = 0.0, copy_ms = 0.0;
  uint64_t copy_bytes = 0;  // per buffer
  std::string error;
  // The device has matrix units (tensor or matrix cores) for 16-bit inputs, whose peak the fp32
  // FMA probe does not measure: f16 and bf16 rows then get no "% of peak".
  bool matrix_units = false;
};
// Runs both probes on `device` (bench kernels from `kernel_library`, a porta_module_load base
// name). Never throws: a failure leaves the rate 0 and says why in error.
Peak measure_peak(porta_device_t device, const std::string& kernel_library);

struct Settings {
  int reps = 0;                    // 0: the default for the device (20 on the CPU, 100 on a GPU)
  size_t cache_bytes = 32u << 20;  // the CPU's last-level cache, for the rotation of inputs
};

// One row of the results.
struct Record {
  Op op = Op::gemm;
  Shape shape;
  porta_dtype_t dtype = PORTA_DTYPE_F32;
  std::string backend, device, impl;
  std::string status = "ok";  // ok | unsupported | error
  std::string message;        // why, when not ok
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int reps = 0, warmup = 0, sets = 0;
  std::optional<double> gflops, gbps, pct_peak, ratio_to_vendor, max_rel_err;
  std::string error_metric;  // normwise | elementwise
  // The output (set 0) copied back, whole or an evenly strided sample of it, for the comparison
  // across implementations and backends.
  std::vector<float> output;
  // all_reduce: the ranks, and the bandwidths as nccl-tests defines them (algbw = bytes / time;
  // busbw = algbw * 2 (ranks - 1) / ranks, what each rank's links carry in a ring).
  std::optional<int> ranks;
  std::optional<double> algbw_gbps, busbw_gbps;
};

// Measures one op and shape on `device` with whatever implementation porta_init selected.
// Fills the timing, the rate and the output of `record` (op, shape, dtype set by the caller).
// Errors from Porta become status "unsupported" or "error" with the message; never throws them.
void measure(porta_device_t device, bool gpu, const Settings& settings, Record& record);

// ---- comparison and reports -------------------------------------------------------------------

// The relative error of `x` against `ref` for op's outputs: normwise for gemm and conv
// (max |x - ref| / max |ref|), elementwise with a floor for the row ops
// (max |x - ref| / max(|ref|, 1e-3 max |ref|)). +inf for a non-finite value where ref has none.
double relative_error(Op op, const std::vector<float>& x, const std::vector<float>& ref);
const char* error_metric(Op op);
// Beyond this, two implementations are said to disagree (fp32; bf16 and f16 inputs get 2e-2).
double tolerance(porta_dtype_t dtype);

// Fills ratio_to_vendor, max_rel_err and pct_peak of every record.
void compare(std::vector<Record>& records, const std::map<std::string, Peak>& peaks);

struct Header {
  std::string date;  // ISO 8601, UTC
  std::string cpu, os;
  int cores = 0;
  std::string porta_version;
  std::vector<porta_plugin_report_t> plugins;  // the loader report of the first initialisation
  std::map<std::string, porta_device_properties_t> devices;  // by backend
  std::map<std::string, Peak> peaks;                         // by backend
  std::vector<std::string> skipped;  // implementations not measured, and why
  std::string suite, impl, dtype;
  int reps = 0;
};
Header machine_header();

void print_table(const std::vector<Record>& records, const Header& header);
// Throw std::runtime_error naming the file when it cannot be written.
void write_json(const std::string& path, const Header& header, const std::vector<Record>& records);
void write_csv(const std::string& path, const std::vector<Record>& records);

// The all_reduce and peer_copy rows (multi_device.cpp): their own initialisation, devices and
// timing; the same header, table and files. Only rank 0 of an all-reduce reports. Returns the
// exit status.
struct MultiDeviceRun {
  std::vector<Shape> shapes;          // of one multi-device op
  std::vector<std::string> backends;  // as --backend
  int reps = 0;                       // 0: the default
  std::string json_path, csv_path;
};
int run_multi_device(const MultiDeviceRun& run, Header header);

// The ops an op plugin says it implements (porta_ops.h names without "porta_"), or nothing when
// its report row does not list them (every op is then assumed).
std::optional<std::set<std::string>> listed_ops(const porta_plugin_report_t& row);
// The plugin's version string from its report row, or "" when the row has none.
std::string plugin_version(const porta_plugin_report_t& row);

}  // namespace bench

#endif  // PORTA_TOOLS_BENCH_BENCH_H_
