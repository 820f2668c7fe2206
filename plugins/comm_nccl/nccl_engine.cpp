// The NCCL collective engine (libporta_comm_nccl.so) for CUDA devices; built a second time with
// PORTA_COMM_RCCL defined as the RCCL engine (libporta_comm_rccl.so) for HIP devices, since RCCL
// keeps NCCL's API. The library is opened at run time, on first use, and only the few functions
// below are resolved, so the plugin builds and loads anywhere and says why it cannot serve.
// Collectives are queued on the stream's native handle: NCCL orders them like any GPU work.
//
// A rank that never joins a collective would leave the others' GPUs waiting forever, and every
// host wait behind them. Each communicator therefore has a watchdog thread that follows its
// queued collectives through events recorded around them: one that has started on the GPU but
// not finished within PORTA_COMM_TIMEOUT seconds, or an error ncclCommGetAsyncError reports, makes
// it abort the communicator (ncclCommAbort), which ends the waiting kernels; the next call on the
// communicator then fails with DEVICE_LOST and what happened. NCCL does not tell which ranks did
// not arrive: a communicator made from the launcher keeps the launcher's arrival record, where each
// rank publishes every collective it enters, and the error names the ranks whose last entry is
// below the collective that timed out. The record is written and read on the calling thread
// only, never by the watchdog, so any MPI thread level that allows the calls themselves will do.
#include <dlfcn.h>
#include <porta/porta_plugin.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "plugin_kit.h"
#include "plugin_state.h"

namespace porta::comm_nccl {
namespace {

using plugin::guarded;
using plugin::throw_error;

#if defined(PORTA_COMM_RCCL)
constexpr const char* kName = "rccl";
constexpr const char* kLibrary = "librccl.so.1";
constexpr const char* kBackend = "hip";
#else
constexpr const char* kName = "nccl";
constexpr const char* kLibrary = "libnccl.so.2";
constexpr const char* kBackend = "cuda";
#endif

// NCCL's C ABI, as nccl.h (and RCCL's rccl.h) define it.
using result_t = int;  // ncclResult_t; 0 is ncclSuccess
constexpr result_t kInProgress = 7;  // ncclInProgress (NCCL 2.14): not an error
struct NcclComm;
using comm_t = NcclComm*;
struct UniqueId {
  char internal[128];
};
constexpr int kFloat16 = 6, kFloat32 = 7, kBfloat16 = 9;  // ncclDataType_t
constexpr int kSum = 0, kAvg = 4;                         // ncclRedOp_t (ncclAvg: NCCL 2.10)
static_assert(sizeof(UniqueId) == sizeof(porta_comm_unique_id_t));

struct Library {
  result_t (*get_version)(int*);
  result_t (*get_unique_id)(UniqueId*);
  result_t (*comm_init_rank)(comm_t*, int, UniqueId, int);
  result_t (*comm_destroy)(comm_t);
  const char* (*get_error_string)(result_t);
  result_t (*all_reduce)(const void*, void*, size_t, int, int, comm_t, void*);
  result_t (*broadcast)(const void*, void*, size_t, int, int, comm_t, void*);
  result_t (*all_gather)(const void*, void*, size_t, int, comm_t, void*);
  result_t (*reduce_scatter)(const void*, void*, size_t, int, int, comm_t, void*);
  result_t (*comm_get_async_error)(comm_t, result_t*);
  result_t (*comm_abort)(comm_t);
};

struct Engine {
  std::mutex mutex;
  bool tried = false;
  std::string missing;  // why the library cannot serve; "" once open
  Library library{};
};

using EngineState = plugin::PluginState<Engine>;
Engine& engine_of(porta_backend_context_t context) { return EngineState::of(context); }

// Opens the library once; afterwards answers from what that found.
const Library& open_library(Engine& engine) {
  std::lock_guard lock(engine.mutex);
  if (!engine.tried) {
    engine.tried = true;
    void* handle = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* why = dlerror();
      engine.missing = std::string(kLibrary) + " cannot be opened: " + (why ? why : "?");
    } else {
      auto resolve = [&](auto& field, const char* symbol) {
        field = reinterpret_cast<std::remove_reference_t<decltype(field)>>(dlsym(handle, symbol));
        if (!field && engine.missing.empty()) {
          engine.missing = std::string(kLibrary) + " lacks " + symbol;
        }
      };
      Library& l = engine.library;
      resolve(l.get_version, "ncclGetVersion");
      resolve(l.get_unique_id, "ncclGetUniqueId");
      resolve(l.comm_init_rank, "ncclCommInitRank");
      resolve(l.comm_destroy, "ncclCommDestroy");
      resolve(l.get_error_string, "ncclGetErrorString");
      resolve(l.all_reduce, "ncclAllReduce");
      resolve(l.broadcast, "ncclBroadcast");
      resolve(l.all_gather, "ncclAllGather");
      resolve(l.reduce_scatter, "ncclReduceScatter");
      resolve(l.comm_get_async_error, "ncclCommGetAsyncError");
      resolve(l.comm_abort, "ncclCommAbort");
    }
  }
  if (!engine.missing.empty()) throw_error(PORTA_ERROR_UNAVAILABLE, engine.missing);
  return engine.library;
}

void check(const Library& l, result_t result, const std::string& what) {
  if (result != 0) {
    throw_error(PORTA_ERROR_BACKEND,
                what + ": " + l.get_error_string(result) + " (" + std::to_string(result) + ")");
  }
}

// NCCL runs on the calling thread's current device: any Porta call on the device makes it so.
void make_current(porta_device_t device) {
  porta_status_t status = porta_device_synchronize(device);
  if (status != PORTA_SUCCESS) throw_error(status, porta_last_error_message());
}

void* native_stream(porta_stream_t stream) {
  void* native = nullptr;
  porta_status_t status = porta_stream_native_handle(stream, &native);
  if (status != PORTA_SUCCESS) throw_error(status, porta_last_error_message());
  return native;
}

double timeout_seconds() {
  const char* text = plugin::setting("PORTA_COMM_TIMEOUT");
  return text ? std::atof(text) : 300.0;
}

using Clock = std::chrono::steady_clock;

// A collective queued on a stream, between two events: watched until `finished` completes.
struct Pending {
  std::string what;  // "all_reduce of 16 elements (collective 3)"
  uint64_t sequence = 0;
  porta_event_t started = nullptr, finished = nullptr;
  bool running = false;  // `started` has completed: the GPU waits for the other ranks
  Clock::time_point since;
};

struct Comm {
  comm_t comm = nullptr;
  porta_device_t device = 0;
  int rank = 0, size = 0;
  const Library* library = nullptr;
  float* barrier_scratch = nullptr;  // one float all-reduced by barrier

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Pending> pending;  // in queue order
  uint64_t sequence = 0;        // collectives queued so far
  std::string broken;           // why the communicator was aborted; "" while it works
  uint64_t timed_out = 0;       // the collective that timed out, its missing ranks not named yet
  porta_comm_arrivals_t arrivals{};  // the launcher's record; its record is NULL without one
  bool stopping = false;
  std::thread watchdog;
};

void release(Pending& p) {
  porta_event_destroy(p.started);
  porta_event_destroy(p.finished);
}

// Under c.mutex: aborts the communicator, which ends its waiting kernels, and says why from now on.
void abort_comm(Comm& c, const std::string& why) {
  c.broken = why;
  const result_t result = c.library->comm_abort(c.comm);
  c.broken += result == 0
                  ? "; the communicator was aborted (ncclCommAbort)"
                  : "; ncclCommAbort failed: " + std::string(c.library->get_error_string(result));
  for (Pending& p : c.pending) release(p);
  c.pending.clear();
  plugin::log(PORTA_LOG_ERROR, c.broken);
}

// The watchdog: follows the oldest pending collective until it finishes, and aborts the
// communicator when NCCL reports an error or the collective runs past the deadline.
void watch(Comm& c) {
  const auto timeout = std::chrono::duration<double>(timeout_seconds());
  std::unique_lock lock(c.mutex);
  while (!c.stopping) {
    c.wake.wait_for(lock, std::chrono::milliseconds(20));
    if (c.pending.empty() || !c.broken.empty()) continue;
    Pending& p = c.pending.front();
    const porta_status_t finished = porta_event_query(p.finished);
    if (finished == PORTA_SUCCESS) {
      release(p);
      c.pending.pop_front();
      continue;
    }
    const std::string where =
        p.what + " on rank " + std::to_string(c.rank) + " of " + std::to_string(c.size);
    if (finished != PORTA_NOT_READY) {
      abort_comm(c, where + ": " + porta_last_error_message());
      continue;
    }
    result_t async = 0;
    c.library->comm_get_async_error(c.comm, &async);
    if (async != 0 && async != kInProgress) {
      abort_comm(c, where + " failed: ncclCommGetAsyncError: " +
                        c.library->get_error_string(async) + " (" + std::to_string(async) + ")");
      continue;
    }
    if (!p.running && porta_event_query(p.started) == PORTA_SUCCESS) {
      p.running = true;
      p.since = Clock::now();
    }
    if (p.running && Clock::now() - p.since > timeout) {
      c.timed_out = p.sequence;  // named by the thread that reports it (see broken_reason)
      abort_comm(c, where + " did not complete within " + std::to_string(timeout_seconds()) +
                        " s of starting");
    }
  }
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string text;
  for (int rank : ranks) text += (text.empty() ? "" : ", ") + std::to_string(rank);
  return text;
}

// The ranks whose last entry in the arrival record is below collective `sequence`.
std::string missing_ranks(Comm& c, uint64_t sequence) {
  const std::string collective = "collective " + std::to_string(sequence);
  if (!c.arrivals.record) {
    return "the ranks that did not arrive at " + collective +
           " cannot be named: the communicator was made by porta_comm_create, without the "
           "launcher's arrival record (porta_comm_create_from_launcher under mpirun keeps one)";
  }
  std::vector<uint64_t> last(c.size, 0);
  const porta_status_t status = c.arrivals.read(c.arrivals.record, last.data());
  if (status != PORTA_SUCCESS) {
    return "the ranks that did not arrive at " + collective +
           " cannot be named: the launcher's arrival record cannot be read (" +
           porta_status_name(status) + ")";
  }
  std::vector<int> missing, silent;
  for (int rank = 0; rank < c.size; ++rank) {
    if (last[rank] == PORTA_COMM_NO_ANSWER) {
      silent.push_back(rank);
    } else if (last[rank] < sequence) {
      missing.push_back(rank);
    }
  }
  std::string text;
  if (!missing.empty()) {
    text = "rank(s) " + rank_list(missing) + " of " + std::to_string(c.size) +
           " did not arrive at " + collective;
  }
  if (!silent.empty()) {
    text += (text.empty() ? "" : "; ") + std::string("rank(s) ") + rank_list(silent) +
            " did not answer the launcher's arrival record within " +
            std::to_string(timeout_seconds()) + " s";
  }
  if (text.empty()) {
    text = "every rank has arrived at " + collective +
           " by now (the launcher's arrival record): one came late, or the collective waited "
           "for something else";
  }
  return text;
}

// Under c.mutex, on a thread calling Porta: why the communicator is unusable, naming once the
// ranks that did not arrive at the collective that timed out.
const std::string& broken_reason(Comm& c) {
  if (c.timed_out != 0) {
    c.broken += "; " + missing_ranks(c, c.timed_out);
    c.timed_out = 0;
  }
  return c.broken;
}

void stop_watchdog(Comm& c) {
  {
    std::lock_guard lock(c.mutex);
    c.stopping = true;
  }
  c.wake.notify_all();
  if (c.watchdog.joinable()) c.watchdog.join();
}

// Queues one collective, enqueue(native stream), between two events the watchdog follows. The
// lock is held throughout: an abort meanwhile would free the communicator under the call.
template <typename Enqueue>
void queue_collective(Comm& c, porta_stream_t stream, const std::string& what, Enqueue&& enqueue) {
  std::lock_guard lock(c.mutex);
  if (!c.broken.empty()) {
    throw_error(PORTA_ERROR_DEVICE_LOST,
                what + ": the communicator is unusable: " + broken_reason(c));
  }
  Pending p;
  p.sequence = ++c.sequence;
  p.what = what + " (collective " + std::to_string(p.sequence) + ")";
  if (c.arrivals.record) {
    const porta_status_t arrived = c.arrivals.arrive(c.arrivals.record, p.sequence);
    if (arrived != PORTA_SUCCESS) {
      throw_error(arrived, what + ": the launcher's arrival record cannot be written");
    }
  }
  porta_status_t status = porta_event_create(c.device, &p.started);
  if (status == PORTA_SUCCESS) status = porta_event_create(c.device, &p.finished);
  if (status == PORTA_SUCCESS) status = porta_event_record(p.started, stream);
  if (status != PORTA_SUCCESS) {
    const std::string why = porta_last_error_message();
    release(p);
    throw_error(status, what + ": " + why);
  }
  try {
    enqueue(native_stream(stream));
  } catch (...) {
    release(p);
    throw;
  }
  status = porta_event_record(p.finished, stream);
  if (status != PORTA_SUCCESS) {
    const std::string why = porta_last_error_message();
    release(p);
    throw_error(status, what + " was queued, but its completion cannot be followed: " + why);
  }
  c.pending.push_back(std::move(p));
  c.wake.notify_all();
}

std::string elements(const char* name, size_t count) {
  return std::string(name) + " of " + std::to_string(count) + " elements";
}

int nccl_type(porta_dtype_t dtype) {
  return dtype == PORTA_DTYPE_F32 ? kFloat32 : dtype == PORTA_DTYPE_BF16 ? kBfloat16 : kFloat16;
}

int nccl_op(porta_reduce_op_t op) { return op == PORTA_REDUCE_AVG ? kAvg : kSum; }

// ---- the slots ----------------------------------------------------------------------------------

porta_status_t initialize(porta_backend_context_t* out_context) {
  // The library is opened on first use: it is large.
  return EngineState::initialize(out_context, [] { return std::make_unique<Engine>(); });
}

porta_status_t supports_backend(porta_backend_context_t context, const char* backend) {
  return guarded("supports_backend", [&] {
    if (std::strcmp(backend, kBackend) != 0) {
      throw_error(PORTA_ERROR_UNAVAILABLE,
                  std::string(kName) + " serves " + kBackend + " devices, not " + backend);
    }
    open_library(engine_of(context));
    return PORTA_SUCCESS;
  });
}

porta_status_t get_unique_id(porta_backend_context_t context, porta_device_t device,
                             porta_comm_unique_id_t* out_id) {
  return guarded("get_unique_id", [&] {
    const Library& l = open_library(engine_of(context));
    make_current(device);
    UniqueId id{};
    check(l, l.get_unique_id(&id), "ncclGetUniqueId");
    std::memcpy(out_id->internal, id.internal, sizeof(id.internal));
    return PORTA_SUCCESS;
  });
}

porta_status_t comm_create(porta_backend_context_t context, porta_device_t device, int32_t rank,
                           int32_t size, const porta_comm_unique_id_t* id, void** out_comm) {
  return guarded("comm_create", [&] {
    const Library& l = open_library(engine_of(context));
    auto c = std::make_unique<Comm>();
    c->device = device;
    c->rank = rank;
    c->size = size;
    c->library = &l;
    void* scratch = nullptr;
    porta_status_t status = porta_memory_alloc(device, sizeof(float), &scratch);
    if (status != PORTA_SUCCESS) throw_error(status, porta_last_error_message());
    c->barrier_scratch = static_cast<float*>(scratch);
    make_current(device);
    UniqueId unique{};
    std::memcpy(unique.internal, id->internal, sizeof(unique.internal));
    result_t result = l.comm_init_rank(&c->comm, size, unique, rank);
    if (result != 0) {
      porta_memory_free(scratch);
      check(l, result,
            "ncclCommInitRank (rank " + std::to_string(rank) + " of " + std::to_string(size) + ")");
    }
    Comm& watched = *c;
    c->watchdog = std::thread([&watched] { watch(watched); });
    *out_comm = c.release();
    return PORTA_SUCCESS;
  });
}

porta_status_t comm_destroy(porta_backend_context_t context, void* native) {
  return guarded("comm_destroy", [&] {
    std::unique_ptr<Comm> c(static_cast<Comm*>(native));
    const Library& l = open_library(engine_of(context));
    stop_watchdog(*c);
    make_current(c->device);
    porta_memory_free(c->barrier_scratch);
    for (Pending& p : c->pending) release(p);
    // An aborted communicator is already released.
    if (c->broken.empty()) check(l, l.comm_destroy(c->comm), "ncclCommDestroy");
    return PORTA_SUCCESS;
  });
}

porta_status_t all_reduce(porta_backend_context_t context, void* native, const void* send,
                          void* recv, size_t count, porta_dtype_t dtype, porta_reduce_op_t op,
                          porta_stream_t stream) {
  return guarded("all_reduce", [&] {
    const Library& l = open_library(engine_of(context));
    Comm& c = *static_cast<Comm*>(native);
    queue_collective(c, stream, elements("all_reduce", count), [&](void* s) {
      if (count == 0) return;  // counted as a collective (the arrival record), moves nothing
      check(l, l.all_reduce(send, recv, count, nccl_type(dtype), nccl_op(op), c.comm, s),
            "ncclAllReduce");
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t broadcast(porta_backend_context_t context, void* native, const void* send,
                         void* recv, size_t count, porta_dtype_t dtype, int32_t root,
                         porta_stream_t stream) {
  return guarded("broadcast", [&] {
    const Library& l = open_library(engine_of(context));
    Comm& c = *static_cast<Comm*>(native);
    queue_collective(c, stream, elements("broadcast", count), [&](void* s) {
      if (count == 0) return;
      check(l, l.broadcast(send, recv, count, nccl_type(dtype), root, c.comm, s), "ncclBroadcast");
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t all_gather(porta_backend_context_t context, void* native, const void* send,
                          void* recv, size_t count, porta_dtype_t dtype, porta_stream_t stream) {
  return guarded("all_gather", [&] {
    const Library& l = open_library(engine_of(context));
    Comm& c = *static_cast<Comm*>(native);
    queue_collective(c, stream, elements("all_gather", count), [&](void* s) {
      if (count == 0) return;
      check(l, l.all_gather(send, recv, count, nccl_type(dtype), c.comm, s), "ncclAllGather");
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t reduce_scatter(porta_backend_context_t context, void* native, const void* send,
                              void* recv, size_t count, porta_dtype_t dtype, porta_reduce_op_t op,
                              porta_stream_t stream) {
  return guarded("reduce_scatter", [&] {
    const Library& l = open_library(engine_of(context));
    Comm& c = *static_cast<Comm*>(native);
    queue_collective(c, stream, elements("reduce_scatter", count), [&](void* s) {
      if (count == 0) return;
      check(l, l.reduce_scatter(send, recv, count, nccl_type(dtype), nccl_op(op), c.comm, s),
            "ncclReduceScatter");
    });
    return PORTA_SUCCESS;
  });
}

porta_status_t barrier(porta_backend_context_t context, void* native, porta_stream_t stream) {
  return guarded("barrier", [&] {
    // NCCL has no barrier: an all-reduce of one float needs every rank, then the host waits.
    const Library& l = open_library(engine_of(context));
    Comm& c = *static_cast<Comm*>(native);
    queue_collective(c, stream, "barrier", [&](void* s) {
      check(l, l.all_reduce(c.barrier_scratch, c.barrier_scratch, 1, kFloat32, kSum, c.comm, s),
            "ncclAllReduce (barrier)");
    });
    // The watchdog ends this wait if a rank never comes.
    porta_status_t status = porta_stream_synchronize(stream);
    std::lock_guard lock(c.mutex);
    if (!c.broken.empty()) throw_error(PORTA_ERROR_DEVICE_LOST, "barrier: " + broken_reason(c));
    if (status != PORTA_SUCCESS) throw_error(status, porta_last_error_message());
    return PORTA_SUCCESS;
  });
}

porta_status_t comm_attach_arrivals(porta_backend_context_t, void* native,
                                    const porta_comm_arrivals_t* arrivals) {
  Comm& c = *static_cast<Comm*>(native);
  std::lock_guard lock(c.mutex);
  c.arrivals = *arrivals;
  return PORTA_SUCCESS;
}

const porta_comm_interface_t kInterface = {
    .struct_size = sizeof(porta_comm_interface_t),
    .initialize = initialize,
    .shutdown = EngineState::shutdown,
    .supports_backend = supports_backend,
    .get_unique_id = get_unique_id,
    .comm_create = comm_create,
    .comm_destroy = comm_destroy,
    .all_reduce = all_reduce,
    .broadcast = broadcast,
    .all_gather = all_gather,
    .reduce_scatter = reduce_scatter,
    .barrier = barrier,
    .launcher_rank = nullptr,  // MPI launches; this engine only computes
    .launcher_broadcast = nullptr,
    .launcher_arrivals_open = nullptr,
    .launcher_arrivals_close = nullptr,
    .comm_attach_arrivals = comm_attach_arrivals,
    // NCCL queues without meeting the other ranks first: a collective refused on one rank stays
    // on that rank, and the others' times out (naming it through the arrival record).
    .comm_refuse = nullptr,
};

}  // namespace
}  // namespace porta::comm_nccl

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  return porta::plugin::enter(host, out_plugin,
                              {.kind = PORTA_PLUGIN_KIND_COMM,
                               .name = porta::comm_nccl::kName,
                               .version = porta::comm_nccl::kName,
                               .backend = nullptr,
                               .ops = nullptr,
                               .name_in_errors = false,
                               .comm = &porta::comm_nccl::kInterface});
}
