/*
 * porta_comm.h: collectives between processes, one device each, on an existing engine.
 *
 * A communicator joins `size` processes (ranks 0..size-1), each with one device. Its engine is
 * picked by the device's backend and opened at run time as a plugin (libporta_comm_<engine>.so):
 * NCCL (libnccl.so.2) for CUDA devices, RCCL (librccl.so.1) for HIP devices, MPI for CPU devices.
 * MPI is also the launcher for all of them: under `mpirun -np N`, porta_comm_create_from_launcher
 * takes the rank and size from it and broadcasts rank 0's unique id over MPI.
 *
 * Every collective is stream-ordered: it follows the work queued on the stream before it, and
 * work queued after it sees its result. On CPU devices the MPI engine runs the collective on the
 * calling thread once the stream's earlier work is done, and returns when it is complete. An error
 * of that earlier work stays with the stream (porta_stream_synchronize reports it); the collective
 * runs after it, as any later work on the stream does.
 *
 * Every rank calls the same collectives in the same order, with the same count, dtype, op and
 * root; a count of 0 moves no data (the buffers may be NULL) but is a collective all the same.
 * The MPI engine checks this before moving anything: a call that differs between the ranks fails
 * on every rank with PORTA_ERROR_INVALID_ARGUMENT naming the difference, and a call that one rank
 * refuses (INVALID_ARGUMENT for its arguments or stream; the communicator handle must be live)
 * still counts on that rank, so the others fail it at once with INVALID_ARGUMENT naming the rank.
 * Either way no rank ran it, and the communicator stays usable. NCCL and RCCL do not compare calls:
 * there the others' collective times out.
 *
 * A collective that some ranks never join does not hang: after PORTA_COMM_TIMEOUT seconds
 * (default 300) it fails with PORTA_ERROR_DEVICE_LOST, and the communicator is unusable from then
 * on (destroy it). The MPI engine names the ranks that did not arrive. NCCL and RCCL queue the
 * collective and return: a watchdog aborts the communicator once the collective has run on the
 * GPU that long (ending the wait of the stream's work), and the next call on the communicator
 * fails, naming the collective and this rank; NCCL does not say which ranks were missing.
 *
 * Conventions as in porta.h. Buffers are device memory of the communicator's device; counts are
 * elements of dtype (PORTA_DTYPE_F32 or PORTA_DTYPE_BF16; broadcast and all_gather take any).
 */
#ifndef PORTA_PORTA_COMM_H_
#define PORTA_PORTA_COMM_H_

#include "porta.h"
#include "porta_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct porta_comm_s* porta_comm_t;

/* What ranks share to find each other; made by one rank, passed to the others by the launcher. */
typedef struct porta_comm_unique_id_s {
  char internal[128];
} porta_comm_unique_id_t;

typedef enum porta_reduce_op {
  PORTA_REDUCE_SUM = 0,
  PORTA_REDUCE_AVG = 1 /* the sum divided by the number of ranks */
} porta_reduce_op_t;

/* The engine that serves the device's backend ("mpi", "nccl", "rccl"), a static string.
 * Returns: SUCCESS; NOT_FOUND for the device; INVALID_ARGUMENT for NULL out; UNAVAILABLE with
 * the reason when no engine is usable for it (plugin missing, library missing, no such device). */
PORTA_API porta_status_t porta_comm_engine(porta_device_t device, const char** out_name);

/* A new unique id for a communicator of the device's engine. Call on one rank only.
 * Returns: as porta_comm_engine. */
PORTA_API porta_status_t porta_comm_get_unique_id(porta_device_t device,
                                                  porta_comm_unique_id_t* out_id);

/* Joins the communicator `id` names as `rank` of `size`, on device. Collective: every rank calls
 * it with the same id and size, and the ranks make their communicators in the same order (as MPI
 * and NCCL require; two made at once on one rank are made one after the other). Returns: SUCCESS;
 * INVALID_ARGUMENT for NULL arguments, size < 1, a rank outside [0, size), a size or rank the
 * launcher contradicts, or ids that differ between ranks (the message names the ranks); UNAVAILABLE
 * as porta_comm_engine; DEVICE_LOST when ranks did not arrive in time. */
PORTA_API porta_status_t porta_comm_create(porta_device_t device, int32_t rank, int32_t size,
                                           const porta_comm_unique_id_t* id,
                                           porta_comm_t* out_comm);

/* porta_comm_create with the rank and size of the launcher (mpirun) and rank 0's unique id
 * broadcast over MPI. Calls on several threads of a rank at once make their communicators one
 * after the other: the k-th made on one rank is joined by the k-th made on each other rank.
 * Returns: as porta_comm_create; UNAVAILABLE when MPI is not usable. */
PORTA_API porta_status_t porta_comm_create_from_launcher(porta_device_t device,
                                                         porta_comm_t* out_comm);

/* The handle becomes stale at once; the communicator is destroyed once no call uses it (a
 * collective under way on another thread finishes first). Returns: SUCCESS; INVALID_HANDLE. */
PORTA_API porta_status_t porta_comm_destroy(porta_comm_t comm);

/* Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for NULL outputs (either may be NULL). */
PORTA_API porta_status_t porta_comm_rank(porta_comm_t comm, int32_t* out_rank, int32_t* out_size,
                                         porta_device_t* out_device);

/* recv = op over the ranks of send, count elements; send == recv is in place.
 * Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT (buffers, dtype, op, a stream of another
 * device; a call another rank refused or called differently); DEVICE_LOST on a timeout, or on a
 * communicator that timed out before. */
PORTA_API porta_status_t porta_comm_all_reduce(porta_comm_t comm, const void* send, void* recv,
                                               size_t count, porta_dtype_t dtype,
                                               porta_reduce_op_t op, porta_stream_t stream);

/* recv on every rank = send of root (count elements; root's send and recv may be the same). */
PORTA_API porta_status_t porta_comm_broadcast(porta_comm_t comm, const void* send, void* recv,
                                              size_t count, porta_dtype_t dtype, int32_t root,
                                              porta_stream_t stream);

/* recv (size * count elements) = every rank's send (count elements), in rank order. */
PORTA_API porta_status_t porta_comm_all_gather(porta_comm_t comm, const void* send, void* recv,
                                               size_t count, porta_dtype_t dtype,
                                               porta_stream_t stream);

/* recv (count elements) on rank r = op over the ranks of send's r-th block of count elements
 * (send holds size * count). */
PORTA_API porta_status_t porta_comm_reduce_scatter(porta_comm_t comm, const void* send, void* recv,
                                                   size_t count, porta_dtype_t dtype,
                                                   porta_reduce_op_t op, porta_stream_t stream);

/* Returns once every rank has reached it (in stream order). */
PORTA_API porta_status_t porta_comm_barrier(porta_comm_t comm, porta_stream_t stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PORTA_PORTA_COMM_H_ */
