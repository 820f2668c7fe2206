// porta-bench's rows between devices and processes:
//   all_reduce: an fp32 sum over the ranks of mpirun, on the engine porta_comm.h picks for the
//               device (MPI on CPU devices, NCCL or RCCL on GPUs), rated as nccl-tests rates it;
//   peer_copy:  a copy from device 0 to device 1 of each backend that has two, direct or staged
//               as porta_device_can_access_peer says.
// Both are timed on the host around a call and the synchronisation of its stream: a staged copy
// returns only once it is done, and an MPI collective runs on the calling thread, so events on
// the stream would not see all of either.
#include <porta/porta_comm.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

#include "bench.h"

namespace bench {
namespace {


std::string failure(porta_status_t status) {
  return std::string(porta_status_name(status)) + ": " + porta_last_error_message();
}

bool is_gpu(porta_device_t device) {
  return (porta::device_properties(device).capabilities & PORTA_CAPABILITY_HOST_IS_DEVICE) == 0;
}

// Runs `warmup` untimed calls, then `reps` timed ones, each after an untimed `before`; fills the
// record's timing and its rate in GB/s. A call's time is the host's, from its start to its end
// (calls synchronise their stream).
void time_calls(Record& r, int warmup, int reps, const std::function<void()>& before,
                const std::function<void()>& call) {
  using clock = std::chrono::steady_clock;
  for (int i = 0; i < warmup; ++i) {
    before();
    call();
  }
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    before();
    const auto start = clock::now();
    call();
    ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  r.median_ms = ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
  r.min_ms = ms.front();
  r.max_ms = ms.back();
  r.reps = reps;
  r.warmup = warmup;
  r.sets = 1;
  r.gbps = double(r.shape.size) / (r.median_ms * 1e6);
}

// The largest |x - expected| / |expected| (expected != 0), +inf for a non-finite x.
double worst_error(const std::vector<float>& x, const std::function<float(size_t)>& expected) {
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) return std::numeric_limits<double>::infinity();
    const double want = expected(i);
    worst = std::max(worst, std::fabs(double(x[i]) - want) / std::fabs(want));
  }
  return worst;
}

Record row(Op op, const Shape& shape, const std::string& backend, const std::string& device,
           const std::string& impl) {
  Record r;
  r.op = op;
  r.shape = shape;
  r.backend = backend;
  r.device = device;
  r.impl = impl;
  r.error_metric = "elementwise";
  return r;
}

void mark_failed(Record& r, const std::string& status, const std::string& message) {
  r.status = status;
  r.message = message;
}

// ---- all_reduce ---------------------------------------------------------------------------------

// Every rank sums its rank + 1 into every element: the result is n (n + 1) / 2 everywhere.
void measure_all_reduce(porta_comm_t comm, porta_device_t device, int rank, int ranks,
                        int reps_option, Record& r) {
  const size_t count = size_t(r.shape.size) / sizeof(float);
  porta::device_buffer<float> send(device, count), recv(device, count);
  send.copy_from_host(std::vector<float>(count, float(rank + 1)));
  porta::stream stream(device);
  const bool gpu = is_gpu(device);
  const int reps = reps_option ? reps_option : gpu ? 100 : 20;
  const int warmup = gpu ? 10 : 2;
  // Every rank starts each call together, so that one call's time is not another rank's lag.
  const auto barrier = [&] { porta::check(porta_comm_barrier(comm, stream.get())); };
  time_calls(r, warmup, reps, barrier, [&] {
    porta::check(porta_comm_all_reduce(comm, send.data(), recv.data(), count, PORTA_DTYPE_F32,
                                       PORTA_REDUCE_SUM, stream.get()));
    stream.synchronize();
  });
  const float sum = float(ranks) * float(ranks + 1) / 2.0f;
  r.max_rel_err = worst_error(recv.to_vector(), [&](size_t) { return sum; });
  r.ranks = ranks;
  r.algbw_gbps = r.gbps;
  r.busbw_gbps = *r.gbps * 2.0 * (ranks - 1) / ranks;
}

// Returns this process's rank (0 when no communicator could be made).
int all_reduce_rows(const MultiDeviceRun& run, Header& header, std::vector<Record>& records) {
  const porta_device_t device = porta::default_device();
  const porta_device_properties_t props = porta::device_properties(device);
  header.devices[props.backend] = props;
  const char* engine = nullptr;
  porta_comm_t comm = nullptr;
  porta_status_t status = porta_comm_engine(device, &engine);
  if (status == PORTA_SUCCESS) status = porta_comm_create_from_launcher(device, &comm);
  if (status != PORTA_SUCCESS) {
    const std::string why = failure(status);
    header.skipped.push_back("all_reduce on " + std::string(props.backend) + ": " + why);
    note("all_reduce on " + std::string(props.backend) + " skipped: " + why);
    for (const Shape& shape : run.shapes) {
      records.push_back(
          row(Op::all_reduce, shape, props.backend, props.name, engine ? engine : "none"));
      mark_failed(records.back(), "unsupported", why);
    }
    return 0;
  }
  int32_t rank = 0, ranks = 1;
  porta::check(porta_comm_rank(comm, &rank, &ranks, nullptr));
  size_t index = 0;
  for (const Shape& shape : run.shapes) {
    ++index;
    Record r = row(Op::all_reduce, shape, props.backend, props.name, engine);
    r.ranks = ranks;
    try {
      measure_all_reduce(comm, device, rank, ranks, run.reps, r);
    } catch (const porta::error& e) {
      mark_failed(r, "error", e.what());
    }
    if (rank == 0) {
      std::fprintf(
          stderr, "porta-bench: [%zu/%zu] all_reduce %s %s %s, %d ranks: %s\n", index,
          run.shapes.size(), shape.text().c_str(), props.backend, engine, ranks,
          r.status == "ok" ? (std::to_string(r.median_ms) + " ms").c_str() : r.message.c_str());
    }
    records.push_back(std::move(r));
  }
  porta_comm_destroy(comm);
  return rank;
}

// ---- peer_copy ----------------------------------------------------------------------------------

void measure_peer_copy(porta_device_t from, porta_device_t to, int reps_option, Record& r) {
  const size_t count = size_t(r.shape.size) / sizeof(float);
  std::vector<float> pattern(count);
  for (size_t i = 0; i < count; ++i) pattern[i] = float(i % 1000 + 1);
  porta::device_buffer<float> src(from, count), dst(to, count);
  src.copy_from_host(pattern);
  porta::stream stream(from);  // the copy follows the source's work, as a producer's would
  const bool gpu = is_gpu(from);
  const int reps = reps_option ? reps_option : gpu ? 100 : 20;
  time_calls(
      r, gpu ? 10 : 2, reps, [] {},
      [&] {
        porta::check(porta_memcpy_async(dst.data(), src.data(), r.shape.size, stream.get()));
        stream.synchronize();
      });
  r.max_rel_err = worst_error(dst.to_vector(), [&](size_t i) { return pattern[i]; });
}

void peer_copy_rows(const MultiDeviceRun& run, Header& header, std::vector<Record>& records) {
  std::map<std::string, std::vector<porta_device_t>> by_backend;
  std::vector<std::string> order;
  for (porta_device_t d : porta::devices()) {
    const std::string backend = porta::device_properties(d).backend;
    if (!by_backend.count(backend)) order.push_back(backend);
    by_backend[backend].push_back(d);
  }
  for (const std::string& backend : order) {
    const std::vector<porta_device_t>& devices = by_backend[backend];
    if (devices.size() < 2) {
      const std::string why = backend + " has one device" +
                              (backend == "cpu" ? " (PORTA_CPU_DEVICES=2 makes two)" : "");
      header.skipped.push_back("peer_copy on " + why);
      note("peer_copy skipped: " + why);
      continue;
    }
    const porta_device_t from = devices[0], to = devices[1];
    const porta_device_properties_t a = porta::device_properties(from),
                                    b = porta::device_properties(to);
    header.devices[backend] = a;
    int32_t direct = 0;
    porta::check(porta_device_can_access_peer(from, to, &direct));
    size_t index = 0;
    for (const Shape& shape : run.shapes) {
      ++index;
      Record r = row(Op::peer_copy, shape, backend, std::string(a.name) + " -> " + b.name,
                     direct ? "direct" : "staged");
      try {
        measure_peer_copy(from, to, run.reps, r);
      } catch (const porta::error& e) {
        mark_failed(r, "error", e.what());
      }
      std::fprintf(
          stderr, "porta-bench: [%zu/%zu] peer_copy %s %s %s: %s\n", index, run.shapes.size(),
          shape.text().c_str(), backend.c_str(), r.impl.c_str(),
          r.status == "ok" ? (std::to_string(r.median_ms) + " ms").c_str() : r.message.c_str());
      records.push_back(std::move(r));
    }
  }
}

}  // namespace

int run_multi_device(const MultiDeviceRun& run, Header header) {
  const Op op = run.shapes.front().op;
  std::string backend_list;
  for (const std::string& b : run.backends) backend_list += (backend_list.empty() ? "" : ",") + b;
  porta_init_options_t init{};
  init.struct_size = sizeof init;
  init.backend = run.backends.empty() ? nullptr : backend_list.c_str();
  const porta_status_t status = porta_init(&init);
  header.plugins = libraries_json(porta::loader_report());
  if (status != PORTA_SUCCESS) {
    note("cannot initialise Porta: " + failure(status));
    porta_shutdown();
    return 1;
  }
  std::vector<Record> records;
  int rank = 0;
  try {
    if (op == Op::all_reduce)
      rank = all_reduce_rows(run, header, records);
    else
      peer_copy_rows(run, header, records);
  } catch (const porta::error& e) {
    note(std::string("Porta failed: ") + e.what());
    porta_shutdown();
    return 1;
  }
  porta_shutdown();
  int rc = 0;
  for (const Record& r : records) {
    if (r.status == "error") rc = 1;
    if (r.max_rel_err && !(*r.max_rel_err <= tolerance(PORTA_DTYPE_F32))) {
      note(std::string(op_name(r.op)) + " " + r.shape.text() + " " + r.backend +
           ": wrong result (relative error " + std::to_string(*r.max_rel_err) + ")");
      rc = 1;
    }
  }
  if (rank != 0) return rc;  // rank 0 reports for all
  // The other ranks' CPU time is not this process's: other work cannot be told from it.
  end_load(header, std::none_of(records.begin(), records.end(),
                                [](const Record& r) { return r.ranks && *r.ranks > 1; }));
  if (records.empty()) {
    std::string why;
    for (const std::string& s : header.skipped) why += (why.empty() ? "" : "; ") + s;
    note("nothing was measured" + (why.empty() ? std::string() : ": " + why));
    return 1;
  }
  print_table(records, header);
  try {
    if (!run.json_path.empty()) write_json(run.json_path, header, records);
    if (!run.csv_path.empty()) write_csv(run.csv_path, records);
  } catch (const std::exception& e) {
    note(e.what());
    return 1;
  }
  return rc;
}

}  // namespace bench
