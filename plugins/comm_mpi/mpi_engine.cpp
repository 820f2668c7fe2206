// The MPI collective engine (libporta_comm_mpi.so): collectives for CPU devices, whose memory is
// host memory MPI reads directly, and the launcher for every engine (rank and size from mpirun,
// a broadcast of the unique id).
//
// Every collective first makes the ranks announce themselves to each other with non-blocking
// messages, waiting at most PORTA_COMM_TIMEOUT seconds: a rank that never comes is named in the
// error instead of hanging the others inside a blocking MPI call. The MPI collective itself runs
// non-blocking too, polled against the same deadline. A rank that refuses a collective (libporta's
// checks, or this engine's) still makes the announcement, marked refused, so that the others fail
// at once and every rank counts the same collectives.
//
// MPI_COMM_WORLD is the meeting place of every communicator's making (and of the launcher's
// broadcast and arrival record); that work is serialised by one lock per process, since MPI matches
// collectives on a communicator by their order alone.
#include <dlfcn.h>
#include <mpi.h>
#include <porta/porta_plugin.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "plugin_kit.h"

namespace porta::comm_mpi {
namespace {

using plugin::guarded;
using plugin::throw_error;

constexpr int kArrivalTag = 7301;
constexpr int kIdTag = 7302;

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, length);
}

void check(int code, const std::string& what) {
  if (code != MPI_SUCCESS) throw_error(PORTA_ERROR_BACKEND, what + ": " + mpi_error(code));
}

// The work done on MPI_COMM_WORLD: comm_create, launcher_broadcast, launcher_arrivals_open. Two
// threads' Iallgathers or dups there at once would be matched in whatever order each rank ran them.
std::mutex g_world_mutex;

// MPI is initialised once per process and finalised at exit: it cannot be initialised again, so
// the plugin pins itself in memory once it has started MPI.
std::mutex g_init_mutex;

void ensure_mpi() {
  std::lock_guard lock(g_init_mutex);
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
  if (provided < MPI_THREAD_MULTIPLE) {
    plugin::log(PORTA_LOG_WARN, "MPI provides thread level " + std::to_string(provided) +
                                    ", not MPI_THREAD_MULTIPLE: use one communicator per process");
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  Dl_info self{};
  if (dladdr(reinterpret_cast<void*>(&ensure_mpi), &self) && self.dli_fname) {
    dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
  }
  std::atexit([] {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  });
}

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

double timeout_seconds() {
  const char* text = plugin::setting("PORTA_COMM_TIMEOUT");
  return text ? std::atof(text) : 300.0;
}

using Clock = std::chrono::steady_clock;

Clock::time_point deadline_from_now() {
  return Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds() * 1000));
}

struct Comm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 0;
  uint64_t sequence = 0;  // collectives so far
  std::string broken;     // why the communicator is unusable; "" while it works
  std::mutex mutex;       // one collective at a time: their messages must not interleave
};

// Polls request until done or the deadline; false on a timeout. An error MPI reports (a count
// that differs between the ranks, say) is thrown.
bool wait_until(MPI_Request& request, Clock::time_point deadline) {
  for (int spins = 0;; ++spins) {
    int done = 0;
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return true;
    if (Clock::now() > deadline) return false;
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string text;
  for (int rank : ranks) text += (text.empty() ? "" : ", ") + std::to_string(rank);
  return text;
}

// What a rank calls: the collective's number on the communicator, its kind and arguments, and
// whether this rank refused it. Every rank must call the same; MPI would otherwise return garbage
// (another dtype or root), fail on one rank only (another count), or wait for the deadline
// (another collective).
struct Call {
  uint64_t sequence = 0, kind = 0, count = 0, dtype = 0, op = 0, root = 0, refused = 0;

  bool same_as(const Call& other) const {
    return kind == other.kind && count == other.count && dtype == other.dtype && op == other.op &&
           root == other.root;
  }
  std::string text() const {
    static const char* const kKinds[] = {"create",     "all_reduce",     "broadcast",
                                         "all_gather", "reduce_scatter", "barrier"};
    return std::string(kind < 6 ? kKinds[kind] : "?") + " of " + std::to_string(count) +
           " elements (dtype " + std::to_string(dtype) + ", op " + std::to_string(op) + ", root " +
           std::to_string(root) + ")";
  }
};
constexpr int kCallWords = sizeof(Call) / sizeof(uint64_t);

// Every rank tells every other what it calls (the collective's number and arguments) and waits
// for theirs. A rank that refused its call (call.refused) returns once it has heard from every
// other; the others then fail, naming it.
void arrive(Comm& c, const char* what, Call call, Clock::time_point deadline) {
  call.sequence = ++c.sequence;
  std::vector<Call> theirs(c.size);
  std::vector<MPI_Request> sends(c.size, MPI_REQUEST_NULL), receives(c.size, MPI_REQUEST_NULL);
  for (int peer = 0; peer < c.size; ++peer) {
    if (peer == c.rank) continue;
    check(MPI_Irecv(&theirs[peer], kCallWords, MPI_UINT64_T, peer, kArrivalTag, c.comm,
                    &receives[peer]),
          "MPI_Irecv");
    check(MPI_Isend(&call, kCallWords, MPI_UINT64_T, peer, kArrivalTag, c.comm, &sends[peer]),
          "MPI_Isend");
  }
  std::vector<int> missing;
  for (int peer = 0; peer < c.size; ++peer) {
    if (peer == c.rank) continue;
    if (!wait_until(receives[peer], deadline)) missing.push_back(peer);
  }
  if (!missing.empty()) {
    for (int peer : missing) {
      MPI_Cancel(&receives[peer]);
      MPI_Request_free(&receives[peer]);
    }
    for (MPI_Request& send : sends) {
      if (send != MPI_REQUEST_NULL) MPI_Request_free(&send);
    }
    c.broken = std::string(what) + " (collective " + std::to_string(c.sequence) +
               ") timed out after " + std::to_string(timeout_seconds()) + " s: rank(s) " +
               rank_list(missing) + " of " + std::to_string(c.size) + " did not arrive";
    throw_error(PORTA_ERROR_DEVICE_LOST, c.broken + "; the communicator is unusable now");
  }
  MPI_Waitall(c.size, sends.data(), MPI_STATUSES_IGNORE);
  for (int peer = 0; peer < c.size; ++peer) {
    if (peer != c.rank && theirs[peer].sequence != c.sequence) {
      c.broken = std::string(what) + ": rank " + std::to_string(peer) + " is at collective " +
                 std::to_string(theirs[peer].sequence) + ", this rank at " +
                 std::to_string(c.sequence) + " (the ranks called different collectives)";
      throw_error(PORTA_ERROR_INVALID_ARGUMENT, c.broken);
    }
  }
  if (call.refused) return;  // this rank's own refusal is what it reports
  std::vector<int> refused;
  for (int peer = 0; peer < c.size; ++peer) {
    if (peer != c.rank && theirs[peer].refused) refused.push_back(peer);
  }
  if (!refused.empty()) {
    throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                "rank(s) " + rank_list(refused) + " refused this " + what + " (rank " +
                    std::to_string(refused[0]) + ": " + theirs[refused[0]].text() +
                    "); no rank ran it, and the communicator is still usable");
  }
  // Every rank compares every other's call with its own, so all of them refuse a mismatch and
  // none starts the collective: the communicator stays usable.
  for (int peer = 0; peer < c.size; ++peer) {
    if (peer != c.rank && !theirs[peer].same_as(call)) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                  "rank " + std::to_string(peer) + " called " + theirs[peer].text() +
                      ", this rank " + call.text() +
                      "; every rank must call the same, and none ran it");
    }
  }
}

// Waits for the work queued on stream before the collective through an event recorded after it,
// leaving an error of that work to the stream (its porta_stream_synchronize reports it): the
// collective is one more piece of the stream's work, which runs after a failed one as any other
// does, and NCCL's queued collectives do. SUCCESS, or the wait's own failure (*why says it).
porta_status_t wait_for_stream(porta_stream_t stream, std::string* why) {
  porta_device_t device = 0;
  porta_event_t event = nullptr;
  porta_status_t status = porta_stream_device(stream, &device);
  if (status == PORTA_SUCCESS) status = porta_event_create(device, &event);
  if (status == PORTA_SUCCESS) status = porta_event_record(event, stream);
  if (status == PORTA_SUCCESS) status = porta_event_synchronize(event);
  if (status != PORTA_SUCCESS) *why = porta_last_error_message();
  if (event) porta_event_destroy(event);
  return status;
}

enum Kind : uint64_t { kCreate = 0, kAllReduce, kBroadcast, kAllGather, kReduceScatter, kBarrier };

// Runs one collective: the stream's earlier work first, then the arrival, then start(c, request,
// n), polled to the deadline; units is the count MPI is given (elements, or bytes where they go as
// bytes). A call this rank refuses (call.refused from libporta, MPI's int counts, a wait that
// failed) still arrives, marked refused, then returns (call.refused) or throws its refusal. A
// count of 0 arrives and moves nothing.
template <typename Start>
porta_status_t run(const char* what, void* native, porta_stream_t stream, Call call, size_t units,
                   Start&& start) {
  Comm& c = *static_cast<Comm*>(native);
  std::lock_guard lock(c.mutex);
  if (!c.broken.empty()) {
    throw_error(PORTA_ERROR_DEVICE_LOST, "the communicator is unusable: " + c.broken);
  }
  porta_status_t refusal = PORTA_SUCCESS;
  std::string why;
  if (call.refused) {
    // libporta refused it and reports why
  } else if (units > size_t(INT_MAX)) {
    refusal = PORTA_ERROR_INVALID_ARGUMENT;
    why = std::to_string(units) + " elements or bytes is more than MPI's int counts reach (" +
          std::to_string(INT_MAX) + ")";
  } else if (stream) {
    refusal = wait_for_stream(stream, &why);
    if (refusal != PORTA_SUCCESS) why = "the stream's earlier work could not be waited for: " + why;
  }
  if (refusal != PORTA_SUCCESS) call.refused = 1;
  const Clock::time_point deadline = deadline_from_now();
  arrive(c, what, call, deadline);
  if (refusal != PORTA_SUCCESS) throw_error(refusal, why);
  if (call.refused || (call.count == 0 && call.kind != kBarrier && call.kind != kCreate)) {
    return PORTA_SUCCESS;
  }
  MPI_Request request = MPI_REQUEST_NULL;
  start(c, request, static_cast<int>(units));
  if (request != MPI_REQUEST_NULL && !wait_until(request, deadline)) {
    c.broken = std::string(what) + " (collective " + std::to_string(c.sequence) +
               ") did not complete in " + std::to_string(timeout_seconds()) + " s";
    throw_error(PORTA_ERROR_DEVICE_LOST, c.broken);
  }
  return PORTA_SUCCESS;
}

// bf16 <-> f32: the top half of the float, rounded to nearest even (NaN kept quiet).
float from_bf16(uint16_t value) {
  uint32_t bits = uint32_t{value} << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

uint16_t to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

std::vector<float> widen(const void* data, size_t count) {
  std::vector<float> wide(count);
  auto* narrow = static_cast<const uint16_t*>(data);
  for (size_t i = 0; i < count; ++i) wide[i] = from_bf16(narrow[i]);
  return wide;
}

void narrow(const std::vector<float>& wide, void* data) {
  auto* out = static_cast<uint16_t*>(data);
  for (size_t i = 0; i < wide.size(); ++i) out[i] = to_bf16(wide[i]);
}

void divide(float* data, size_t count, int size) {
  for (size_t i = 0; i < count; ++i) data[i] /= static_cast<float>(size);
}

// ---- the slots ----------------------------------------------------------------------------------

porta_status_t initialize(porta_backend_context_t* out_context) {
  *out_context = nullptr;  // MPI starts on first use, not when Porta loads the engine
  return PORTA_SUCCESS;
}

void shutdown(porta_backend_context_t) {}

porta_status_t supports_backend(porta_backend_context_t, const char* backend) {
  if (std::strcmp(backend, "cpu") != 0) {
    return plugin::fail(PORTA_ERROR_UNAVAILABLE,
                        std::string("MPI moves host memory: it serves CPU devices, not ") +
                            backend + " (that is NCCL's or RCCL's)");
  }
  return PORTA_SUCCESS;
}

porta_status_t get_unique_id(porta_backend_context_t, porta_device_t,
                             porta_comm_unique_id_t* out_id) {
  return guarded("get_unique_id", [&] {
    std::random_device entropy;
    porta_comm_unique_id_t id{};
    std::memcpy(id.internal, "porta-mpi", 9);
    for (size_t i = 16; i < sizeof(id.internal); i += 4) {
      uint32_t word = entropy();
      std::memcpy(id.internal + i, &word, 4);
    }
    *out_id = id;
    return PORTA_SUCCESS;
  });
}

// A duplicate of MPI_COMM_WORLD (g_world_mutex held), made non-blocking and polled against the
// deadline. One still under way then cannot be cancelled: the handle it will write is left to it.
MPI_Comm dup_world(const std::string& what) {
  auto own = std::make_unique<MPI_Comm>(MPI_COMM_NULL);
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Comm_idup(MPI_COMM_WORLD, own.get(), &request), "MPI_Comm_idup");
  if (!wait_until(request, deadline_from_now())) {
    own.release();  // NOLINT: MPI writes it once the other ranks come
    throw_error(PORTA_ERROR_DEVICE_LOST,
                what + " was not made: not every process of the launcher " + "came within " +
                    std::to_string(timeout_seconds()) + " s (MPI_Comm_idup)");
  }
  MPI_Comm_set_errhandler(*own, MPI_ERRORS_RETURN);
  return *own;
}

porta_status_t comm_create(porta_backend_context_t, porta_device_t, int32_t rank, int32_t size,
                           const porta_comm_unique_id_t* id, void** out_comm) {
  return guarded("comm_create", [&] {
    if (std::memcmp(id->internal, "porta-mpi", 9) != 0) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT,
                  "the unique id was not made by the MPI engine (porta_comm_get_unique_id on a CPU "
                  "device)");
    }
    ensure_mpi();
    std::lock_guard world(g_world_mutex);
    if (size != world_size()) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT, "size " + std::to_string(size) +
                                                    " but mpirun started " +
                                                    std::to_string(world_size()) + " process(es)");
    }
    if (rank != world_rank()) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT, "rank " + std::to_string(rank) +
                                                    " given, but this process is MPI rank " +
                                                    std::to_string(world_rank()));
    }
    auto c = std::make_unique<Comm>();
    c->comm = MPI_COMM_WORLD;
    c->rank = rank;
    c->size = size;
    // Every rank must hold the same id: compare each with rank 0's, under the deadline.
    std::vector<char> ids(size_t(size) * sizeof(id->internal));
    run("create", c.get(), nullptr, Call{}, 0, [&](Comm& comm, MPI_Request& request, int) {
      check(MPI_Iallgather(id->internal, sizeof(id->internal), MPI_CHAR, ids.data(),
                           sizeof(id->internal), MPI_CHAR, comm.comm, &request),
            "MPI_Iallgather");
    });
    std::vector<int> differing;
    for (int peer = 1; peer < size; ++peer) {
      if (std::memcmp(ids.data(), ids.data() + peer * sizeof(id->internal), sizeof(id->internal)) !=
          0) {
        differing.push_back(peer);
      }
    }
    if (!differing.empty()) {
      throw_error(PORTA_ERROR_INVALID_ARGUMENT, "the unique ids differ: rank(s) " +
                                                    rank_list(differing) +
                                                    " hold another id than rank 0");
    }
    // A communicator of its own, so that its messages never meet another's; under the deadline,
    // like everything that waits for the other ranks.
    c->comm = dup_world("the communicator");
    c->sequence = 0;
    *out_comm = c.release();
    return PORTA_SUCCESS;
  });
}

porta_status_t comm_destroy(porta_backend_context_t, void* native) {
  return guarded("comm_destroy", [&] {
    std::unique_ptr<Comm> c(static_cast<Comm*>(native));
    // Freeing may wait for the other ranks; a broken communicator has ranks that never come,
    // so its MPI communicator is left to MPI_Finalize.
    if (c->comm != MPI_COMM_NULL && c->comm != MPI_COMM_WORLD && c->broken.empty()) {
      MPI_Comm_free(&c->comm);
    }
    return PORTA_SUCCESS;
  });
}

// Every read of send below is inside start, which run calls after the stream's earlier work (that
// may still be writing send) has finished.
porta_status_t all_reduce(porta_backend_context_t, void* native, const void* send, void* recv,
                          size_t count, porta_dtype_t dtype, porta_reduce_op_t op,
                          porta_stream_t stream) {
  return guarded("all_reduce", [&] {
    std::vector<float> wide;
    float* target = static_cast<float*>(recv);
    run("all_reduce", native, stream, Call{0, kAllReduce, count, uint64_t(dtype), uint64_t(op)},
        count, [&](Comm& c, MPI_Request& request, int n) {
          if (dtype == PORTA_DTYPE_BF16) {
            wide = widen(send, count);  // summed in fp32, rounded once
            target = wide.data();
          }
          const void* source = dtype == PORTA_DTYPE_BF16 || send == recv ? MPI_IN_PLACE : send;
          check(MPI_Iallreduce(source, target, n, MPI_FLOAT, MPI_SUM, c.comm, &request),
                "MPI_Iallreduce");
        });
    const int size = static_cast<Comm*>(native)->size;
    if (op == PORTA_REDUCE_AVG) divide(target, count, size);
    if (dtype == PORTA_DTYPE_BF16) narrow(wide, recv);
    return PORTA_SUCCESS;
  });
}

porta_status_t broadcast(porta_backend_context_t, void* native, const void* send, void* recv,
                         size_t count, porta_dtype_t dtype, int32_t root, porta_stream_t stream) {
  return guarded("broadcast", [&] {
    const size_t bytes = count * (dtype == PORTA_DTYPE_F32 ? 4 : 2);
    run("broadcast", native, stream, Call{0, kBroadcast, count, uint64_t(dtype), 0, uint64_t(root)},
        bytes, [&](Comm& c, MPI_Request& request, int n) {
          if (c.rank == root && send != recv) std::memmove(recv, send, bytes);
          check(MPI_Ibcast(recv, n, MPI_BYTE, root, c.comm, &request), "MPI_Ibcast");
        });
    return PORTA_SUCCESS;
  });
}

porta_status_t all_gather(porta_backend_context_t, void* native, const void* send, void* recv,
                          size_t count, porta_dtype_t dtype, porta_stream_t stream) {
  return guarded("all_gather", [&] {
    const size_t bytes = count * (dtype == PORTA_DTYPE_F32 ? 4 : 2);
    run("all_gather", native, stream, Call{0, kAllGather, count, uint64_t(dtype)}, bytes,
        [&](Comm& c, MPI_Request& request, int n) {
          // In place when send is this rank's block of recv, as NCCL allows.
          const bool in_place = send == static_cast<char*>(recv) + size_t(c.rank) * bytes;
          check(MPI_Iallgather(in_place ? MPI_IN_PLACE : send, n, MPI_BYTE, recv, n, MPI_BYTE,
                               c.comm, &request),
                "MPI_Iallgather");
        });
    return PORTA_SUCCESS;
  });
}

porta_status_t reduce_scatter(porta_backend_context_t, void* native, const void* send, void* recv,
                              size_t count, porta_dtype_t dtype, porta_reduce_op_t op,
                              porta_stream_t stream) {
  return guarded("reduce_scatter", [&] {
    const int size = static_cast<Comm*>(native)->size;
    std::vector<float> input, output;
    run("reduce_scatter", native, stream,
        Call{0, kReduceScatter, count, uint64_t(dtype), uint64_t(op)}, count,
        [&](Comm& c, MPI_Request& request, int n) {
          output.resize(count);
          // Through fp32 scratch: bf16 is summed in fp32, and send may overlap recv.
          input = dtype == PORTA_DTYPE_BF16
                      ? widen(send, count * size)
                      : std::vector<float>(static_cast<const float*>(send),
                                           static_cast<const float*>(send) + count * size);
          check(MPI_Ireduce_scatter_block(input.data(), output.data(), n, MPI_FLOAT, MPI_SUM,
                                          c.comm, &request),
                "MPI_Ireduce_scatter_block");
        });
    if (count == 0) return PORTA_SUCCESS;
    if (op == PORTA_REDUCE_AVG) divide(output.data(), count, size);
    if (dtype == PORTA_DTYPE_BF16) {
      narrow(output, recv);
    } else {
      std::memcpy(recv, output.data(), count * sizeof(float));
    }
    return PORTA_SUCCESS;
  });
}

porta_status_t barrier(porta_backend_context_t, void* native, porta_stream_t stream) {
  return guarded("barrier", [&] {
    // The arrival of every rank is the barrier.
    return run("barrier", native, stream, Call{0, kBarrier}, 0, [](Comm&, MPI_Request&, int) {});
  });
}

// A collective libporta refused on this rank: it arrives, marked refused, and moves nothing.
porta_status_t comm_refuse(porta_backend_context_t, void* native, const porta_comm_call_t* call) {
  return guarded("comm_refuse", [&] {
    static const char* const kWhat[] = {"create",     "all_reduce",     "broadcast",
                                        "all_gather", "reduce_scatter", "barrier"};
    const uint64_t asked = uint64_t(call->collective);
    const uint64_t kind = asked <= kBarrier ? asked : uint64_t{kBarrier};
    Call refused{0,
                 kind,
                 call->count,
                 uint64_t(uint32_t(call->dtype)),
                 uint64_t(uint32_t(call->op)),
                 uint64_t(uint32_t(call->root)),
                 1};
    return run(kWhat[kind], native, nullptr, refused, 0, [](Comm&, MPI_Request&, int) {});
  });
}

porta_status_t launcher_rank(porta_backend_context_t, int32_t* out_rank, int32_t* out_size) {
  return guarded("launcher_rank", [&] {
    ensure_mpi();
    *out_rank = world_rank();
    *out_size = world_size();
    return PORTA_SUCCESS;
  });
}

porta_status_t launcher_broadcast(porta_backend_context_t, void* data, size_t bytes, int32_t root) {
  return guarded("launcher_broadcast", [&] {
    ensure_mpi();
    std::lock_guard world(g_world_mutex);
    // Point to point with a deadline, like the collectives: a missing rank is an error.
    const Clock::time_point deadline =
        Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds() * 1000));
    const int rank = world_rank(), size = world_size();
    std::vector<MPI_Request> requests;
    if (rank == root) {
      for (int peer = 0; peer < size; ++peer) {
        if (peer == root) continue;
        MPI_Request& request = requests.emplace_back(MPI_REQUEST_NULL);
        check(MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, kIdTag, MPI_COMM_WORLD,
                        &request),
              "MPI_Isend");
      }
    } else {
      MPI_Request& request = requests.emplace_back(MPI_REQUEST_NULL);
      check(MPI_Irecv(data, static_cast<int>(bytes), MPI_BYTE, root, kIdTag, MPI_COMM_WORLD,
                      &request),
            "MPI_Irecv");
    }
    for (MPI_Request& request : requests) {
      if (!wait_until(request, deadline)) {
        MPI_Cancel(&request);
        MPI_Request_free(&request);
        throw_error(PORTA_ERROR_DEVICE_LOST,
                    "the launcher's broadcast of the unique id timed out "
                    "after " +
                        std::to_string(timeout_seconds()) + " s");
      }
    }
    return PORTA_SUCCESS;
  });
}

// ---- the arrival record -------------------------------------------------------------------------
// One MPI window over every process of the launcher, one uint64_t each, in a communicator of its
// own. A rank writes only its own entry, with an atomic MPI_Accumulate (MPI_REPLACE) that waits for
// nobody; a reader fetches every entry atomically (MPI_Rget_accumulate, MPI_NO_OP) and polls each
// against the deadline, so that a rank that cannot answer is reported instead of waited for.

struct Arrivals {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Win window = MPI_WIN_NULL;
  int rank = 0, size = 0;
  std::vector<uint64_t> landed;       // where reads land: a late answer must find it alive
  std::vector<MPI_Request> requests;  // reads still under way, per rank
  bool read = false;                  // a collective failed: its missing ranks may never come
};

porta_status_t arrive(void* record, uint64_t sequence) {
  return guarded("arrive", [&] {
    Arrivals& a = *static_cast<Arrivals*>(record);
    check(MPI_Accumulate(&sequence, 1, MPI_UINT64_T, a.rank, 0, 1, MPI_UINT64_T, MPI_REPLACE,
                         a.window),
          "MPI_Accumulate");
    check(MPI_Win_flush(a.rank, a.window), "MPI_Win_flush");  // on this rank: never waits
    return PORTA_SUCCESS;
  });
}

porta_status_t read_arrivals(void* record, uint64_t* out_sequences) {
  return guarded("read_arrivals", [&] {
    Arrivals& a = *static_cast<Arrivals*>(record);
    a.read = true;
    const Clock::time_point deadline = deadline_from_now();
    for (int peer = 0; peer < a.size; ++peer) {
      if (a.requests[peer] != MPI_REQUEST_NULL) continue;  // an earlier read still waits for it
      check(MPI_Rget_accumulate(nullptr, 0, MPI_UINT64_T, &a.landed[peer], 1, MPI_UINT64_T, peer, 0,
                                1, MPI_UINT64_T, MPI_NO_OP, a.window, &a.requests[peer]),
            "MPI_Rget_accumulate");
    }
    for (int peer = 0; peer < a.size; ++peer) {
      out_sequences[peer] =
          wait_until(a.requests[peer], deadline) ? a.landed[peer] : PORTA_COMM_NO_ANSWER;
    }
    return PORTA_SUCCESS;
  });
}

porta_status_t launcher_arrivals_open(porta_backend_context_t, porta_comm_arrivals_t* out) {
  return guarded("launcher_arrivals_open", [&] {
    ensure_mpi();
    std::lock_guard world(g_world_mutex);
    // Making the window waits for every process: meet them first, under the deadline.
    MPI_Request met = MPI_REQUEST_NULL;
    check(MPI_Ibarrier(MPI_COMM_WORLD, &met), "MPI_Ibarrier");
    if (!wait_until(met, deadline_from_now())) {
      throw_error(PORTA_ERROR_DEVICE_LOST,
                  "the arrival record was not made: not every process of the launcher came "
                  "within " +
                      std::to_string(timeout_seconds()) + " s");
    }
    auto a = std::make_unique<Arrivals>();
    a->rank = world_rank();
    a->size = world_size();
    a->landed.assign(a->size, 0);
    a->requests.assign(a->size, MPI_REQUEST_NULL);
    a->comm = dup_world("the arrival record");
    uint64_t* mine = nullptr;
    check(MPI_Win_allocate(sizeof(uint64_t), sizeof(uint64_t), MPI_INFO_NULL, a->comm, &mine,
                           &a->window),
          "MPI_Win_allocate");
    MPI_Win_set_errhandler(a->window, MPI_ERRORS_RETURN);
    *mine = 0;
    check(MPI_Win_lock_all(MPI_MODE_NOCHECK, a->window), "MPI_Win_lock_all");
    MPI_Win_sync(a->window);  // the 0 above, before any access through the window
    check(MPI_Barrier(a->comm), "MPI_Barrier");  // every entry is 0 before anyone writes
    out->record = a.release();
    out->arrive = arrive;
    out->read = read_arrivals;
    return PORTA_SUCCESS;
  });
}

void launcher_arrivals_close(porta_backend_context_t, void* record) {
  auto* a = static_cast<Arrivals*>(record);
  // Freeing waits for every rank: after a failure some may never come, so it is left to exit.
  if (a->read) return;
  MPI_Win_unlock_all(a->window);
  MPI_Request met = MPI_REQUEST_NULL;
  if (MPI_Ibarrier(a->comm, &met) != MPI_SUCCESS || !wait_until(met, deadline_from_now())) {
    plugin::log(PORTA_LOG_WARN,
                "an arrival record is left to MPI_Finalize: not every rank "
                "destroyed its communicator within " +
                    std::to_string(timeout_seconds()) + " s");
    return;
  }
  MPI_Win_free(&a->window);
  MPI_Comm_free(&a->comm);
  delete a;
}

const porta_comm_interface_t kInterface = {
    .struct_size = sizeof(porta_comm_interface_t),
    .initialize = initialize,
    .shutdown = shutdown,
    .supports_backend = supports_backend,
    .get_unique_id = get_unique_id,
    .comm_create = comm_create,
    .comm_destroy = comm_destroy,
    .all_reduce = all_reduce,
    .broadcast = broadcast,
    .all_gather = all_gather,
    .reduce_scatter = reduce_scatter,
    .barrier = barrier,
    .launcher_rank = launcher_rank,
    .launcher_broadcast = launcher_broadcast,
    .launcher_arrivals_open = launcher_arrivals_open,
    .launcher_arrivals_close = launcher_arrivals_close,
    .comm_attach_arrivals = nullptr,  // this engine names the ranks that did not arrive itself
    .comm_refuse = comm_refuse,
};

}  // namespace
}  // namespace porta::comm_mpi

extern "C" PORTA_PLUGIN_EXPORT porta_status_t porta_plugin_entry(const porta_host_api_t* host,
                                                                 porta_plugin_t* out_plugin) {
  return porta::plugin::enter(host, out_plugin,
                              {.kind = PORTA_PLUGIN_KIND_COMM,
                               .name = "mpi",
                               .version = "porta-comm-mpi",
                               .backend = nullptr,
                               .ops = nullptr,
                               .name_in_errors = false,
                               .comm = &porta::comm_mpi::kInterface});
}
