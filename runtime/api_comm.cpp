// Collectives (porta_comm.h): communicators over the engine of each device's backend, with every
// argument checked here so that the engines only move data.
#include <fmt/format.h>
#include <porta/porta_comm.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "runtime.h"

using namespace porta;

namespace {

size_t dtype_size(porta_dtype_t dtype) { return dtype == PORTA_DTYPE_F32 ? 4 : 2; }

porta_status_t check_dtype(const char* function, porta_dtype_t dtype, bool reduces) {
  const bool known =
      dtype == PORTA_DTYPE_F32 || dtype == PORTA_DTYPE_F16 || dtype == PORTA_DTYPE_BF16;
  if (!known || (reduces && dtype == PORTA_DTYPE_F16)) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: dtype {} is not accepted; accepted: PORTA_DTYPE_F32, PORTA_DTYPE_BF16{}",
                function, static_cast<int>(dtype), reduces ? "" : ", PORTA_DTYPE_F16");
  }
  return PORTA_SUCCESS;
}

porta_status_t check_op(const char* function, porta_reduce_op_t op) {
  if (op != PORTA_REDUCE_SUM && op != PORTA_REDUCE_AVG) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: op {} is not accepted; accepted: PORTA_REDUCE_SUM, PORTA_REDUCE_AVG", function,
                static_cast<int>(op));
  }
  return PORTA_SUCCESS;
}

// A buffer of the communicator's device with room for bytes.
porta_status_t check_buffer(Runtime& runtime, const char* function, const char* argument,
                            const void* ptr, size_t bytes, const Comm& comm) {
  if (!ptr) return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is NULL", function, argument);
  Allocation allocation;
  if (!runtime.find_allocation(ptr, allocation) || allocation.kind != PORTA_MEMORY_DEVICE) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} {} is not device memory", function, argument,
                ptr);
  }
  if (allocation.device != comm.device) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: {} is memory of device {}, the communicator's device is {}", function,
                argument, allocation.device->id, comm.device->id);
  }
  return check_room(function, argument, ptr, bytes, 1, allocation);
}

// The bytes of `blocks` runs of count elements (a buffer that holds one per rank has size
// blocks): INVALID_ARGUMENT where that passes what an address space holds, rather than a
// product that wraps to a small size.
porta_status_t byte_count(const char* function, size_t count, porta_dtype_t dtype, size_t blocks,
                          size_t* out) {
  if (count > SIZE_MAX / dtype_size(dtype) / blocks) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: count {} of {}-byte elements{} is more than memory can hold", function, count,
                dtype_size(dtype), blocks > 1 ? fmt::format(", times {} ranks", blocks) : "");
  }
  *out = count * dtype_size(dtype) * blocks;
  return PORTA_SUCCESS;
}

// send (send_bytes) and recv (recv_bytes) apart, or send exactly at in_place (in place): the
// engines read send while they write recv, so a partial overlap would read what they wrote.
porta_status_t apart_or_in_place(const char* function, const void* send, size_t send_bytes,
                                 const void* recv, size_t recv_bytes, const void* in_place) {
  if (send == in_place || !ranges_overlap(send, send_bytes, recv, recv_bytes)) return PORTA_SUCCESS;
  return fail(PORTA_ERROR_INVALID_ARGUMENT,
              "{}: send and recv overlap without being in place (send at {}, as this collective "
              "takes it in place)",
              function, in_place);
}

// A stream of the communicator's device (NULL: the device's default stream).
porta_status_t lookup(Runtime& runtime, const char* function, const std::shared_ptr<Comm>& comm,
                      porta_stream_t stream_handle, porta_stream_t& stream) {
  if (!stream_handle) stream_handle = comm->device->default_stream;
  std::shared_ptr<Stream> found;
  if (porta_status_t status = resolve(runtime, function, stream_handle, found);
      status != PORTA_SUCCESS) {
    return status;
  }
  if (found->device != comm->device) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: the stream belongs to device {}, the communicator to device {}", function,
                found->device->id, comm->device->id);
  }
  stream = stream_handle;
  return PORTA_SUCCESS;
}

// What a rank calls, for an engine told of a refusal.
porta_comm_call_t described(porta_comm_collective_t collective, size_t count, porta_dtype_t dtype,
                            porta_reduce_op_t op, int32_t root) {
  porta_comm_call_t call{};
  call.struct_size = sizeof(call);
  call.collective = collective;
  call.count = count;
  call.dtype = dtype;
  call.op = op;
  call.root = root;
  return call;
}

// A call refused on this rank once its communicator is known (status and its message already
// set): the engine takes part in it as refused (comm_refuse), so that the other ranks fail it at
// once naming this rank, and every rank counts the same collectives. An engine without the slot
// leaves the refusal on this rank, as before ABI 2.3. Returns the refusal.
porta_status_t refuse(const Comm& comm, porta_comm_call_t call, porta_status_t status) {
  CommPlugin& engine = *comm.engine;
  if (!engine.interface.comm_refuse) return status;
  const std::string reason = porta_last_error_message();
  call.struct_size = sizeof(call);
  call.reason = reason.c_str();
  take_plugin_message();
  const porta_status_t told = engine.interface.comm_refuse(engine.context, comm.native, &call);
  if (told == PORTA_SUCCESS) return fail(status, "{}", reason);
  std::string detail = take_plugin_message();
  return fail(status, "{}; and the {} engine could not tell the other ranks: {}", reason,
              engine.name,
              detail.empty() || !is_defined_status(told) ? porta_status_name(told) : detail);
}

// Runs a collective: checks, then the engine's slot, its message prefixed like a backend's. A
// count of 0 reaches the engine too: it moves nothing, but the ranks count and match it.
template <typename Check, typename Run>
porta_status_t collective(const char* function, const porta_comm_call_t& call, porta_comm_t handle,
                          porta_stream_t stream_handle, Check&& check, Run&& run) {
  return with_runtime(function, [&](Runtime& runtime) -> porta_status_t {
    // Held from before the buffers are checked: a free then waits for the engine to finish.
    CallerWork::Scope in_flight(runtime.caller_work);
    std::shared_ptr<Comm> comm;
    if (porta_status_t status = resolve(runtime, function, handle, comm); status != PORTA_SUCCESS) {
      return status;
    }
    porta_stream_t stream = nullptr;
    porta_status_t status = lookup(runtime, function, comm, stream_handle, stream);
    if (status == PORTA_SUCCESS) status = check(runtime, *comm);
    if (status != PORTA_SUCCESS) return refuse(*comm, call, status);
    take_plugin_message();
    status = run(*comm->engine, comm->native, stream);
    if (!is_defined_status(status)) {
      return undefined_status(function, fmt::format("the {} engine", comm->engine->name), status);
    }
    if (status < 0) {
      std::string detail = take_plugin_message();
      return fail(status, "{}: {} engine: {}", function, comm->engine->name,
                  detail.empty() ? porta_status_name(status) : detail);
    }
    return status;
  });
}

// Held by porta_comm_create_from_launcher from the broadcast of the id to the engine's setup, so
// that communicators made on several threads at once are made one after the other, each with the
// id broadcast for it: the launcher matches its broadcasts, and the MPI engine its setups, in the
// order each rank makes them.
std::mutex launcher_creates;

// Makes the engine's communicator. From the launcher (launcher not NULL), an engine that cannot
// name the ranks that did not arrive itself gets the launcher's arrival record, opened first, by
// every rank, before the engine's own setup waits for them.
porta_status_t create(Runtime& runtime, const char* function, Device& device, CommPlugin& engine,
                      int32_t rank, int32_t size, const porta_comm_unique_id_t& id,
                      CommPlugin* launcher, porta_comm_t* out_comm) {
  auto comm = std::make_shared<Comm>();
  comm->device = &device;
  comm->engine = &engine;
  comm->rank = rank;
  comm->size = size;
  take_plugin_message();
  PluginCall scope;  // what the engine allocates for itself is its own
  const bool keeps_record = launcher && engine.interface.comm_attach_arrivals &&
                            launcher->interface.launcher_arrivals_open &&
                            launcher->interface.launcher_arrivals_close;
  porta_comm_arrivals_t arrivals{};
  arrivals.struct_size = sizeof(arrivals);
  if (keeps_record) {
    porta_status_t status =
        launcher->interface.launcher_arrivals_open(launcher->context, &arrivals);
    if (status != PORTA_SUCCESS) {
      std::string detail = take_plugin_message();
      return fail(status, "{}: the launcher: {}", function,
                  detail.empty() ? porta_status_name(status) : detail);
    }
  }
  porta_status_t status =
      engine.interface.comm_create(engine.context, device.id, rank, size, &id, &comm->native);
  if (status == PORTA_SUCCESS && keeps_record) {
    status = engine.interface.comm_attach_arrivals(engine.context, comm->native, &arrivals);
    if (status != PORTA_SUCCESS) engine.interface.comm_destroy(engine.context, comm->native);
  }
  if (status != PORTA_SUCCESS) {
    comm->native = nullptr;  // destroyed above, or never made
    std::string detail = take_plugin_message();
    if (keeps_record) {
      launcher->interface.launcher_arrivals_close(launcher->context, arrivals.record);
    }
    return fail(status, "{}: {} engine: {}", function, engine.name,
                detail.empty() ? porta_status_name(status) : detail);
  }
  if (keeps_record) {
    comm->launcher = launcher;
    comm->arrivals = arrivals.record;
  }
  *out_comm = reinterpret_cast<porta_comm_t>(runtime.comms.insert(std::move(comm)));
  return PORTA_SUCCESS;
}

}  // namespace

extern "C" PORTA_API porta_status_t porta_comm_engine(porta_device_t device,
                                                      const char** out_name) {
  return with_runtime("porta_comm_engine", [&](Runtime& runtime) -> porta_status_t {
    Device* found = runtime.device(device, "porta_comm_engine: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!out_name) return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_comm_engine: out_name is NULL");
    CommPlugin* engine = runtime.comm_engine("porta_comm_engine", *found);
    if (!engine) return PORTA_ERROR_UNAVAILABLE;
    *out_name = engine->name == "mpi" ? "mpi" : engine->name == "nccl" ? "nccl" : "rccl";
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_comm_get_unique_id(porta_device_t device,
                                                             porta_comm_unique_id_t* out_id) {
  return with_runtime("porta_comm_get_unique_id", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_comm_get_unique_id";
    Device* found = runtime.device(device, "porta_comm_get_unique_id: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!out_id) return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: out_id is NULL", function);
    CommPlugin* engine = runtime.comm_engine(function, *found);
    if (!engine) return PORTA_ERROR_UNAVAILABLE;
    take_plugin_message();
    porta_status_t status = engine->interface.get_unique_id(engine->context, device, out_id);
    if (status != PORTA_SUCCESS) {
      std::string detail = take_plugin_message();
      return fail(status, "{}: {} engine: {}", function, engine->name, detail);
    }
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_comm_create(porta_device_t device, int32_t rank,
                                                      int32_t size,
                                                      const porta_comm_unique_id_t* id,
                                                      porta_comm_t* out_comm) {
  return with_runtime("porta_comm_create", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_comm_create";
    Device* found = runtime.device(device, "porta_comm_create: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!id || !out_comm) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is NULL", function, id ? "out_comm" : "id");
    }
    if (size < 1 || rank < 0 || rank >= size) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: rank {} of size {}: the size must be 1 or more and the rank in [0, size)",
                  function, rank, size);
    }
    CommPlugin* engine = runtime.comm_engine(function, *found);
    if (!engine) return PORTA_ERROR_UNAVAILABLE;
    return create(runtime, function, *found, *engine, rank, size, *id, nullptr, out_comm);
  });
}

extern "C" PORTA_API porta_status_t porta_comm_create_from_launcher(porta_device_t device,
                                                                    porta_comm_t* out_comm) {
  return with_runtime("porta_comm_create_from_launcher", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_comm_create_from_launcher";
    Device* found = runtime.device(device, "porta_comm_create_from_launcher: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!out_comm) return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: out_comm is NULL", function);
    CommPlugin* launcher = runtime.launcher(function);
    if (!launcher) return PORTA_ERROR_UNAVAILABLE;
    CommPlugin* engine = runtime.comm_engine(function, *found);
    if (!engine) return PORTA_ERROR_UNAVAILABLE;
    int32_t rank = 0, size = 0;
    std::lock_guard one_at_a_time(launcher_creates);
    take_plugin_message();
    porta_status_t status = launcher->interface.launcher_rank(launcher->context, &rank, &size);
    porta_comm_unique_id_t id{};
    // Rank 0 makes the id; every rank takes part in the broadcast, even if that failed, so that
    // no rank waits for a broadcast that never comes.
    if (status == PORTA_SUCCESS && rank == 0) {
      status = engine->interface.get_unique_id(engine->context, device, &id);
    }
    if (status == PORTA_SUCCESS) {
      status = launcher->interface.launcher_broadcast(launcher->context, &id, sizeof(id), 0);
    }
    if (status != PORTA_SUCCESS) {
      std::string detail = take_plugin_message();
      return fail(status, "{}: {}", function, detail.empty() ? porta_status_name(status) : detail);
    }
    return create(runtime, function, *found, *engine, rank, size, id, launcher, out_comm);
  });
}

extern "C" PORTA_API porta_status_t porta_comm_destroy(porta_comm_t handle) {
  return with_runtime_to_release("porta_comm_destroy", PORTA_ERROR_INVALID_HANDLE, false,
                                 [&](Runtime& runtime) -> porta_status_t {
                                   // The handle goes now; the communicator once no call uses it
                                   // (~Comm): a collective under way on another thread finishes on
                                   // it first.
                                   std::shared_ptr<Comm> comm;
                                   return retire(runtime, "porta_comm_destroy", handle, comm);
                                 });
}

extern "C" PORTA_API porta_status_t porta_comm_rank(porta_comm_t handle, int32_t* out_rank,
                                                    int32_t* out_size, porta_device_t* out_device) {
  return with_runtime("porta_comm_rank", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Comm> comm;
    if (porta_status_t status = resolve(runtime, "porta_comm_rank", handle, comm);
        status != PORTA_SUCCESS) {
      return status;
    }
    if (out_rank) *out_rank = comm->rank;
    if (out_size) *out_size = comm->size;
    if (out_device) *out_device = comm->device->id;
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_comm_all_reduce(porta_comm_t comm, const void* send,
                                                          void* recv, size_t count,
                                                          porta_dtype_t dtype, porta_reduce_op_t op,
                                                          porta_stream_t stream) {
  const char* function = "porta_comm_all_reduce";
  return collective(
      function, described(PORTA_COMM_ALL_REDUCE, count, dtype, op, 0), comm, stream,
      [&](Runtime& runtime, const Comm& c) -> porta_status_t {
        porta_status_t status = check_dtype(function, dtype, true);
        if (status == PORTA_SUCCESS) status = check_op(function, op);
        if (status != PORTA_SUCCESS || count == 0) return status;  // no data: buffers unused
        size_t bytes = 0;
        status = byte_count(function, count, dtype, 1, &bytes);
        if (status == PORTA_SUCCESS)
          status = check_buffer(runtime, function, "send", send, bytes, c);
        if (status == PORTA_SUCCESS)
          status = check_buffer(runtime, function, "recv", recv, bytes, c);
        if (status == PORTA_SUCCESS)
          status = apart_or_in_place(function, send, bytes, recv, bytes, recv);
        return status;
      },
      [&](CommPlugin& engine, void* native, porta_stream_t s) -> porta_status_t {
        return engine.interface.all_reduce(engine.context, native, send, recv, count, dtype, op, s);
      });
}

extern "C" PORTA_API porta_status_t porta_comm_broadcast(porta_comm_t comm, const void* send,
                                                         void* recv, size_t count,
                                                         porta_dtype_t dtype, int32_t root,
                                                         porta_stream_t stream) {
  const char* function = "porta_comm_broadcast";
  return collective(
      function, described(PORTA_COMM_BROADCAST, count, dtype, PORTA_REDUCE_SUM, root), comm, stream,
      [&](Runtime& runtime, const Comm& c) -> porta_status_t {
        porta_status_t status = check_dtype(function, dtype, false);
        if (status != PORTA_SUCCESS) return status;
        if (root < 0 || root >= c.size) {
          return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: root {} is not a rank (0 to {})", function,
                      root, c.size - 1);
        }
        if (count == 0) return PORTA_SUCCESS;  // no data: buffers unused
        size_t bytes = 0;
        status = byte_count(function, count, dtype, 1, &bytes);
        if (status == PORTA_SUCCESS && c.rank == root)
          status = check_buffer(runtime, function, "send", send, bytes, c);
        if (status == PORTA_SUCCESS)
          status = check_buffer(runtime, function, "recv", recv, bytes, c);
        if (status == PORTA_SUCCESS && c.rank == root)
          status = apart_or_in_place(function, send, bytes, recv, bytes, recv);
        return status;
      },
      [&](CommPlugin& engine, void* native, porta_stream_t s) -> porta_status_t {
        return engine.interface.broadcast(engine.context, native, send, recv, count, dtype, root,
                                          s);
      });
}

extern "C" PORTA_API porta_status_t porta_comm_all_gather(porta_comm_t comm, const void* send,
                                                          void* recv, size_t count,
                                                          porta_dtype_t dtype,
                                                          porta_stream_t stream) {
  const char* function = "porta_comm_all_gather";
  return collective(
      function, described(PORTA_COMM_ALL_GATHER, count, dtype, PORTA_REDUCE_SUM, 0), comm, stream,
      [&](Runtime& runtime, const Comm& c) -> porta_status_t {
        porta_status_t status = check_dtype(function, dtype, false);
        if (status != PORTA_SUCCESS || count == 0) return status;  // no data: buffers unused
        size_t bytes = 0, all = 0;
        status = byte_count(function, count, dtype, 1, &bytes);
        if (status == PORTA_SUCCESS) status = byte_count(function, count, dtype, c.size, &all);
        if (status == PORTA_SUCCESS)
          status = check_buffer(runtime, function, "send", send, bytes, c);
        if (status == PORTA_SUCCESS) status = check_buffer(runtime, function, "recv", recv, all, c);
        if (status == PORTA_SUCCESS) {
          status = apart_or_in_place(function, send, bytes, recv, all,
                                     static_cast<const char*>(recv) + size_t(c.rank) * bytes);
        }
        return status;
      },
      [&](CommPlugin& engine, void* native, porta_stream_t s) -> porta_status_t {
        return engine.interface.all_gather(engine.context, native, send, recv, count, dtype, s);
      });
}

extern "C" PORTA_API porta_status_t porta_comm_reduce_scatter(porta_comm_t comm, const void* send,
                                                              void* recv, size_t count,
                                                              porta_dtype_t dtype,
                                                              porta_reduce_op_t op,
                                                              porta_stream_t stream) {
  const char* function = "porta_comm_reduce_scatter";
  return collective(
      function, described(PORTA_COMM_REDUCE_SCATTER, count, dtype, op, 0), comm, stream,
      [&](Runtime& runtime, const Comm& c) -> porta_status_t {
        porta_status_t status = check_dtype(function, dtype, true);
        if (status == PORTA_SUCCESS) status = check_op(function, op);
        if (status != PORTA_SUCCESS || count == 0) return status;  // no data: buffers unused
        size_t bytes = 0, all = 0;  // send may overlap recv: the engines copy it first
        status = byte_count(function, count, dtype, 1, &bytes);
        if (status == PORTA_SUCCESS) status = byte_count(function, count, dtype, c.size, &all);
        if (status == PORTA_SUCCESS) status = check_buffer(runtime, function, "send", send, all, c);
        if (status == PORTA_SUCCESS)
          status = check_buffer(runtime, function, "recv", recv, bytes, c);
        return status;
      },
      [&](CommPlugin& engine, void* native, porta_stream_t s) -> porta_status_t {
        return engine.interface.reduce_scatter(engine.context, native, send, recv, count, dtype, op,
                                               s);
      });
}

extern "C" PORTA_API porta_status_t porta_comm_barrier(porta_comm_t comm, porta_stream_t stream) {
  return collective(
      "porta_comm_barrier", described(PORTA_COMM_BARRIER, 0, PORTA_DTYPE_F32, PORTA_REDUCE_SUM, 0),
      comm, stream, [](Runtime&, const Comm&) -> porta_status_t { return PORTA_SUCCESS; },
      [](CommPlugin& engine, void* native, porta_stream_t s) -> porta_status_t {
        return engine.interface.barrier(engine.context, native, s);
      });
}
