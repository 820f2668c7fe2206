// porta-bench: what its parts share. The ops and shapes it measures (shapes.cpp), the peak
// probes (peaks.cpp), one measurement (measure.cpp), and the table, JSON and CSV (report.cpp).
// Everything goes through the public API only: porta.h, porta_ops.h, porta.hpp.
#ifndef PORTA_TOOLS_BENCH_BENCH_H_
#define PORTA_TOOLS_BENCH_BENCH_H_

#include <porta/porta_ops.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
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
  // The training step's other ops, rated in GB/s like the row ops.
  max_pool,
  max_pool_bwd,
  relu,
  relu_bwd,
  bias_add,
  bias_bwd,
  adam,
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
bool is_row_op(Op op);        // softmax, softmax_bwd, cross_entropy: fp32 only, rated in GB/s
bool is_multi_device(Op op);  // all_reduce, peer_copy: a buffer size, rated in GB/s
bool is_pool(Op op);          // max_pool, max_pool_bwd
// The row ops and the training step's others (pooling, ReLU, bias, Adam): fp32 only, rated in
// GB/s against the measured copy bandwidth.
bool is_bandwidth_op(Op op);

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
  // row ops; relu, relu_bwd, adam: cols elements (rows 1); bias_add, bias_bwd: batch x c x
  // cols (spatial); max_pool, max_pool_bwd: batch x c x h x w with window r x r, stride sh, pad ph
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
  // The peaks for bf16 and f16 inputs (fp32 accumulation), and where each comes from (0 with
  // matrix units: not measured).
  double bf16_gflops = 0.0, f16_gflops = 0.0;
  std::string bf16_source, f16_source;
  // The peak a GEMM or convolution with inputs of dtype is rated against (0: none).
  double fma_peak(porta_dtype_t dtype) const;
};
// Fills the 16-bit peaks of `peak` from its fp32 FMA rate: on a CPU with AVX512_BF16, bf16 twice
// the fp32 rate (vdpbf16ps does two bf16 products per fp32 lane per instruction: derived, not
// measured); 16-bit inputs are widened to fp32 elsewhere, so the fp32 rate is theirs.
void derive_16bit_peaks(Peak& peak, bool gpu);
// Runs both probes on `device` (bench kernels from `kernel_library`, a porta_module_load base
// name). Never throws: a failure leaves the rate 0 and says why in error.
Peak measure_peak(porta_device_t device, const std::string& kernel_library);
// Queues porta-bench's copy kernel (`peak_copy`) over n floats from src to dst, cut into groups
// as the copy probe cuts it.
void queue_copy(const porta::kernel& copy, const porta::stream& stream,
                const porta_device_properties_t& props, uint64_t n, const float* src, float* dst);

struct Settings {
  int reps = 0;                    // 0: the default for the device (20 on the CPU, 100 on a GPU)
  size_t cache_bytes = 32u << 20;  // the CPU's last-level cache, for the rotation of inputs
};
// The repetitions of `shape` on a GPU or a CPU under `settings`.
int repetitions(const Settings& settings, const Shape& shape, bool gpu);

// The algorithm of a convolution porta-bench calls oneDNN for itself (onednn_blocked.cpp):
// oneDNN's direct kernels, or Winograd's F(4x4, 3x3) (3x3 filters of stride 1 only).
enum class BlockedAlgorithm { none, direct, winograd };

// An implementation porta-bench measures, each in its own process (worker.cpp) so that the
// implementations of one shape can be timed in turn: the portable plugin, or one library of the
// vendor plugins (PORTA_VENDOR_LIBRARY), or oneDNN's convolution called directly on its own
// blocked layouts, by direct kernels or by Winograd's algorithm.
struct Variant {
  std::string impl;     // the row's name: portable, openblas, onednn, onednn-blocked, ...
  std::string ops;      // porta_init_options_t.ops
  std::string library;  // PORTA_VENDOR_LIBRARY, or "" for the portable plugin
  // onednn-blocked, onednn-winograd: porta-bench calls oneDNN's convolution itself, with this
  // algorithm; none for the plugins' rows.
  BlockedAlgorithm algorithm = BlockedAlgorithm::none;
  bool blocked() const { return algorithm != BlockedAlgorithm::none; }
  bool vendor() const { return impl != "portable"; }
};
// "a,b,c" as {"a", "b", "c"}.
std::vector<std::string> comma_list(const std::string& text);
// The variants --impl names, a comma-separated list of: portable, vendor (every library), all,
// or a row name.
std::vector<Variant> variants(const std::string& impl);
// The row names --impl accepts besides vendor and all.
std::vector<std::string> variant_names();

// One op, shape and input dtype to measure.
struct Problem {
  Shape shape;
  porta_dtype_t dtype;
};

// A worker process (worker.cpp): one variant's porta_init, driven by porta-bench over two pipes,
// each message a frame (its length, then its bytes) holding JSON.
class Worker {
 public:
  // Forks the worker; it initialises Porta (backends: porta_init_options_t.backend, "" for
  // the default) and answers the first call with its hello (see worker.cpp). close_in_child: the
  // pipes of the workers started before, which this one must not hold open.
  Worker(const Variant& variant, const std::string& backends, const Settings& settings,
         const std::vector<Problem>& todo, const std::string& kernel_library,
         const std::vector<int>& close_in_child);
  ~Worker();  // asks the worker to shut Porta down and waits for it
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Sends request (nothing for the hello) and returns the answer; throws std::runtime_error when
  // the worker has died (its exit status in the message).
  nlohmann::ordered_json call(const nlohmann::ordered_json& request);
  // The worker's first message (worker.cpp).
  nlohmann::ordered_json hello();
  // The floats the worker sent after answering "finish".
  std::vector<float> floats();
  const Variant& variant() const { return variant_; }
  std::vector<int> fds() const { return {to_, from_}; }
  // The CPU time, in ns, all of the worker's threads have used so far (the kernel's schedstat).
  uint64_t cpu_ns() const;
  // Whether any of the worker's threads is running or waiting for a core now (state R).
  bool running() const;

 private:
  nlohmann::ordered_json receive();
  std::string died();
  Variant variant_;
  int pid_ = -1, to_ = -1, from_ = -1;
};

// One case set up in a worker: its inputs, a warm-up done, then one timed call per rep().
class Measurement {
 public:
  // Throws porta::error (UNSUPPORTED: the implementation lacks the case) or std::exception.
  // kernel_library: porta-bench's kernels, for the copy the bandwidth ops are rated against.
  Measurement(porta_device_t device, bool gpu, const Settings& settings, const Shape& shape,
              porta_dtype_t dtype, int reps, BlockedAlgorithm blocked,
              const std::string& kernel_library);
  ~Measurement();
  int sets() const;
  int warmup() const { return warmup_; }
  // Bytes one copy moves (read plus written), 0 where the op is not rated in GB/s.
  double copy_bytes() const;
  struct Times {
    double ms = 0.0;
    // Bandwidth ops: a copy of one of the op's inputs into its own memory, timed right after.
    std::optional<double> copy_ms;
  };
  // One call on input set i % sets between two events, and the copy: their times in ms.
  Times rep(int i);
  // The output of set 0, whole or an evenly strided sample (cross-entropy: the loss appended).
  std::vector<float> output();

 private:
  void copy_set(int set);  // queues the copy of set's input 0
  struct State;
  std::unique_ptr<State> state_;
  int warmup_ = 0;
};

// One row of the results.
struct Record {
  Op op = Op::gemm;
  Shape shape;
  porta_dtype_t dtype = PORTA_DTYPE_F32;
  std::string backend, device, impl;
  std::string kind = "portable";  // portable | vendor
  std::string status = "ok";      // ok | unsupported | error
  std::string message;            // why, when not ok
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int reps = 0, warmup = 0, sets = 0;
  std::optional<double> gflops, gbps, pct_peak, ratio_to_vendor, max_rel_err;
  // Bandwidth ops: the copy timed with each repetition (Measurement::rep), its bytes, and its
  // rate from the median, which pct_peak is quoted against.
  double copy_bytes = 0.0;
  std::vector<double> copy_times_ms;
  std::optional<double> copy_gbps;
  std::string best_vendor;  // the fastest vendor row of the op, shape, dtype and backend
  // The implementations timed in turn with this one, in their order (this one included), each
  // repetition's time, and when it started (seconds since the run started).
  std::vector<std::string> interleaved;
  std::vector<double> times_ms, started_s;
  std::string error_metric;  // normwise | elementwise
  // The output (set 0) copied back, whole or an evenly strided sample of it, for the comparison
  // across implementations and backends.
  std::vector<float> output;
  // all_reduce: the ranks, and the bandwidths as nccl-tests defines them (algbw = bytes / time;
  // busbw = algbw * 2 (ranks - 1) / ranks, what each rank's links carry in a ring).
  std::optional<int> ranks;
  std::optional<double> algbw_gbps, busbw_gbps;
};

// Fills median, min, max and the rate of `record` from its times.
void summarise(Record& record);

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

// The machine's busy CPU time (all cores, /proc/stat) and this process's and its reaped
// children's, with the wall clock, in seconds; known is false where /proc/stat cannot be read.
struct CpuTimes {
  double wall_s = 0, machine_busy_s = 0, own_s = 0;
  bool known = false;
};
// Other processes above this share of the machine's CPU time during a run make it busy.
constexpr double kOthersBusyAbove = 0.1;

struct Header {
  std::string date;  // ISO 8601, UTC
  std::string cpu, os;
  int cores = 0;
  std::string porta_version;
  // The loader report of the first initialisation, as the JSON's "libraries".
  nlohmann::ordered_json plugins = nlohmann::ordered_json::array();
  std::map<std::string, porta_device_properties_t> devices;  // by backend
  std::map<std::string, Peak> peaks;                         // by backend
  std::vector<std::string> skipped;  // implementations not measured, and why
  std::string suite, impl, dtype;
  int reps = 0;
  // /proc/loadavg (1, 5, 15 minutes) when the run started and ended; the end's counts the run's
  // own threads of the last minute. others_share: the share of the machine's CPU time that other
  // processes took during the run (/proc/stat's busy time less this process's and its workers'),
  // unknown where other ranks of mpirun ran beside it. busy: others_share above
  // kOthersBusyAbove, or where it is unknown the 1-minute load above half the cores at the start.
  std::vector<double> load_start, load_end;
  CpuTimes cpu_start;
  std::optional<double> others_share;
  bool busy = false;
};
Header machine_header();
// The three load averages of /proc/loadavg (empty when it cannot be read).
std::vector<double> load_average();
// Records the load average and the CPU times when the run starts.
void start_load(Header& header);
// The loader report as JSON's "libraries" (written in the worker that initialised Porta).
nlohmann::ordered_json libraries_json(const std::vector<porta_plugin_report_t>& report);
// A line on stderr, prefixed "porta-bench: ".
void note(const std::string& text);
// Records the load average and other processes' share of the CPU time at the end of the run
// (the workers reaped), and warns when the machine was busy. alone: no other rank of mpirun ran
// beside this process, so all CPU time but its own and its workers' was other work.
void end_load(Header& header, bool alone = true);

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
