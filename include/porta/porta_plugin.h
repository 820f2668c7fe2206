/*
 * porta_plugin.h: the ABI between libporta and its plugins.
 *
 * A plugin is a shared object that exports one C symbol,
 * porta_plugin_entry (type porta_plugin_entry_fn). libporta calls it once after dlopen with the
 * host's services and receives a porta_plugin_t describing the plugin and its interface. Two
 * kinds, one loader: a backend plugin, libporta_<backend>.so, provides devices, memory, streams,
 * events, modules and launch; an op plugin, libporta_ops_<name>.so, provides the operator set.
 *
 * Rules a plugin follows:
 * - Every pointer it hands back stays valid until its shutdown slot returns.
 * - Each slot returns a porta_status_t; on error it may call host->set_error_message first with
 *   the detail (its vendor's error name and code). It never throws and never aborts.
 * - Arguments reaching a slot have been validated by libporta: handles are live, sizes are within
 *   allocations, devices match, outputs are non-NULL. A plugin trusts them.
 * - Slots marked optional may be NULL; libporta then supplies the behaviour or answers
 *   PORTA_ERROR_UNSUPPORTED.
 * - Versioning: porta_plugin_t.abi_major must equal PORTA_PLUGIN_ABI_MAJOR or the plugin is
 *   refused. A minor below libporta's is accepted: later minors only append slots, and libporta
 *   reads a slot only when struct_size covers it. ABI 2 changed the op plugin interface (see
 *   porta_ops_interface_t); the backend and collective engine interfaces are those of ABI 1.2
 *   (the "ABI 1.x" notes below date their slots), so their plugins need only a rebuild. ABI 2.1
 *   appended the arrival record slots to the collective engine interface, ABI 2.2 device_wait to
 *   the backend interface, ABI 2.3 comm_refuse to the collective engine interface.
 *
 * An interface is a struct of function pointers taking the plugin's own context first (an op
 * plugin's op slots take a porta_op_context_t, which holds it). Objects
 * (devices, streams, events, modules, kernels) are opaque pointers of the plugin's choosing;
 * libporta wraps them in checked handles before users see them.
 */
#ifndef PORTA_PORTA_PLUGIN_H_
#define PORTA_PORTA_PLUGIN_H_

#include "porta.h"
#include "porta_comm.h"
#include "porta_op_table.h"
#include "porta_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PORTA_PLUGIN_ABI_MAJOR 2
#define PORTA_PLUGIN_ABI_MINOR 3

#define PORTA_PLUGIN_ENTRY_SYMBOL "porta_plugin_entry"

#if defined(__GNUC__)
#define PORTA_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define PORTA_PLUGIN_EXPORT
#endif

typedef enum porta_log_level {
  PORTA_LOG_TRACE = 0,
  PORTA_LOG_DEBUG = 1,
  PORTA_LOG_INFO = 2,
  PORTA_LOG_WARN = 3,
  PORTA_LOG_ERROR = 4,
  PORTA_LOG_OFF = 5
} porta_log_level_t;

/* What libporta offers a plugin. Valid from the entry call until the plugin's shutdown. */
typedef struct porta_host_api_s {
  size_t struct_size;
  /* Sets the calling thread's last error message, shown by porta_last_error_message(). */
  void (*set_error_message)(const char* message);
  /* Writes to Porta's log when level is enabled. */
  void (*log)(porta_log_level_t level, const char* message);
  /* ABI 1.2: a setting libporta has read from porta_init_options_t or the environment and
   * checked, or NULL when it is not set: "cpu_mode" (fast, simt or racecheck), "PORTA_CPU_DEVICES"
   * (how many devices the CPU backend makes). Absent from older hosts. */
  const char* (*setting)(const char* name);
} porta_host_api_t;

/* Which way a copy goes; resolved by libporta from its allocation records. */
typedef enum porta_copy_kind {
  PORTA_COPY_HOST_TO_HOST = 0,
  PORTA_COPY_HOST_TO_DEVICE = 1,
  PORTA_COPY_DEVICE_TO_HOST = 2,
  PORTA_COPY_DEVICE_TO_DEVICE = 3
} porta_copy_kind_t;

typedef void* porta_backend_context_t;

/* The interface of a backend plugin: devices, memory, streams, events, modules, launch.
 * Indices named device are the backend's own, in [0, device_count). */
typedef struct porta_backend_interface_s {
  size_t struct_size;

  /* Opens the driver and counts devices. A machine without the driver or any device is not an
   * error of the plugin: return PORTA_ERROR_UNAVAILABLE with the reason in the message. */
  porta_status_t (*initialize)(porta_backend_context_t* out_context, int32_t* out_device_count);
  /* Releases everything; libporta has destroyed every object it created before calling. */
  void (*shutdown)(porta_backend_context_t context);

  porta_status_t (*device_properties)(porta_backend_context_t context, int32_t device,
                                      porta_device_properties_t* out_properties);
  porta_status_t (*device_memory_info)(porta_backend_context_t context, int32_t device,
                                       uint64_t* out_free, uint64_t* out_total);
  porta_status_t (*device_synchronize)(porta_backend_context_t context, int32_t device);
  /* Optional. */
  porta_status_t (*device_native_handle)(porta_backend_context_t context, int32_t device,
                                         void** out_native);

  /* size > 0. Device memory must be aligned to at least 256 bytes. */
  porta_status_t (*memory_alloc)(porta_backend_context_t context, int32_t device, size_t size,
                                 void** out_ptr);
  porta_status_t (*memory_free)(porta_backend_context_t context, int32_t device, void* ptr);
  porta_status_t (*host_alloc)(porta_backend_context_t context, int32_t device, size_t size,
                               void** out_ptr);
  porta_status_t (*host_free)(porta_backend_context_t context, int32_t device, void* ptr);

  porta_status_t (*stream_create)(porta_backend_context_t context, int32_t device,
                                  void** out_stream);
  /* Called after stream_synchronize; the stream has no pending work. */
  porta_status_t (*stream_destroy)(porta_backend_context_t context, void* stream);
  porta_status_t (*stream_synchronize)(porta_backend_context_t context, void* stream);
  /* SUCCESS when idle, PORTA_NOT_READY when work is pending, or a failed operation's error. */
  porta_status_t (*stream_query)(porta_backend_context_t context, void* stream);
  porta_status_t (*stream_wait_event)(porta_backend_context_t context, void* stream, void* event);
  /* Optional. */
  porta_status_t (*stream_native_handle)(porta_backend_context_t context, void* stream,
                                         void** out_native);

  /* size > 0; both ranges lie within their allocations when those are Porta's. */
  porta_status_t (*memcpy_async)(porta_backend_context_t context, void* stream, void* dst,
                                 const void* src, size_t size, porta_copy_kind_t kind);
  porta_status_t (*memset_async)(porta_backend_context_t context, void* stream, void* dst,
                                 uint8_t value, size_t size);

  porta_status_t (*event_create)(porta_backend_context_t context, int32_t device, void** out_event);
  porta_status_t (*event_destroy)(porta_backend_context_t context, void* event);
  porta_status_t (*event_record)(porta_backend_context_t context, void* event, void* stream);
  /* SUCCESS when complete or never recorded, PORTA_NOT_READY otherwise. */
  porta_status_t (*event_query)(porta_backend_context_t context, void* event);
  porta_status_t (*event_synchronize)(porta_backend_context_t context, void* event);
  /* Both recorded and complete (libporta checked with event_query). */
  porta_status_t (*event_elapsed_ms)(porta_backend_context_t context, void* start, void* end,
                                     float* out_ms);

  /* The image is only borrowed for the call. */
  porta_status_t (*module_load_data)(porta_backend_context_t context, int32_t device,
                                     const void* image, size_t size, void** out_module);
  /* Optional: load straight from a file (the CPU backend dlopens it). When NULL, libporta reads
   * the file and calls module_load_data. */
  porta_status_t (*module_load_file)(porta_backend_context_t context, int32_t device,
                                     const char* path, void** out_module);
  porta_status_t (*module_unload)(porta_backend_context_t context, void* module);
  /* PORTA_ERROR_NOT_FOUND when the module has no such kernel. */
  porta_status_t (*kernel_get)(porta_backend_context_t context, void* module, const char* name,
                               void** out_kernel);
  /* config has been checked against the device's limits; args as in porta_kernel_launch. */
  porta_status_t (*kernel_launch)(porta_backend_context_t context, void* kernel,
                                  const porta_launch_config_t* config, void** args, void* stream);

  /* Optional: the file-name endings of the code objects the device can load, best first, joined
   * by ':' (".cpu-x86-64-v4.so:.cpu-x86-64-v3.so:.cpu-x86-64.so"). porta_module_load appends
   * them to a kernel library's base name to pick the build that fits. The string lives as long
   * as the plugin. */
  porta_status_t (*code_object_suffixes)(porta_backend_context_t context, int32_t device,
                                         const char** out_suffixes);

  /* ABI 1.1. Optional (UNSUPPORTED when NULL): queues fn(user_data) on the stream, to run once
   * the work queued before it has completed and before the work queued after it starts (see
   * porta_stream_launch_host_func). fn is not NULL. */
  porta_status_t (*stream_launch_host_func)(porta_backend_context_t context, void* stream,
                                            porta_host_fn_t fn, void* user_data);

  /* ABI 1.2. Optional (an empty report when NULL): the kernel checker's findings, as
   * porta_cpu_racecheck_report describes them. */
  porta_status_t (*checker_report)(porta_backend_context_t context, char* out_text,
                                   size_t capacity, size_t* out_length, size_t* out_count);

  /* ABI 1.2. Optional (the device's max_work_group_size when NULL): the most work-items per group
   * the kernel can be launched with on its device, which its registers or a declared limit
   * (PORTA_KERNEL_MAX_GROUP) may hold below the device's. */
  porta_status_t (*kernel_max_group_size)(porta_backend_context_t context, void* kernel,
                                          int32_t* out_max);

  /* ABI 1.2. Optional: whether device can read and write peer's memory directly, so that
   * memcpy_async on a stream of either may copy between them (kind DEVICE_TO_DEVICE) and
   * stream_wait_event may wait on an event of the other. When NULL, or when it answers 0,
   * libporta stages copies between the two through pinned host memory. device != peer. */
  porta_status_t (*device_can_access_peer)(porta_backend_context_t context, int32_t device,
                                           int32_t peer, int32_t* out_direct);

  /* ABI 1.2. Optional, all five or none: stream-ordered allocation from the driver's own pool of
   * the stream's device (cuMemAllocAsync, hipMallocAsync), behind porta_memory_alloc_async and
   * its siblings. When NULL, or when memory_alloc_async answers UNSUPPORTED (a driver without
   * pools), libporta serves the device from its own caching pool over memory_alloc. size > 0;
   * memory_free_async receives memory of the stream's device. pool_stats fills bytes_in_use,
   * bytes_cached, peak_bytes_in_use and release_threshold (libporta counts the allocations). */
  porta_status_t (*memory_alloc_async)(porta_backend_context_t context, void* stream, size_t size,
                                       void** out_ptr);
  porta_status_t (*memory_free_async)(porta_backend_context_t context, void* stream, void* ptr);
  porta_status_t (*memory_pool_stats)(porta_backend_context_t context, int32_t device,
                                      porta_memory_pool_stats_t* out_stats);
  porta_status_t (*memory_pool_set_release_threshold)(porta_backend_context_t context,
                                                      int32_t device, uint64_t bytes);
  porta_status_t (*memory_pool_trim)(porta_backend_context_t context, int32_t device,
                                     uint64_t keep_bytes);

  /* ABI 2.0. Optional (launch arguments unchecked when NULL or NOT_FOUND): the kernel's parameters
   * as its module records them: their count, each one's size in bytes (count entries), and the
   * parameter list as written in PORTA_KERNEL ("uint32_t n, float a, const float* x") or NULL.
   * The arrays live as long as the kernel. libporta asks once, at porta_kernel_get, and checks
   * every launch's arguments against the answer (porta_kernel_launch). */
  porta_status_t (*kernel_params)(porta_backend_context_t context, void* kernel,
                                  uint32_t* out_count, const uint32_t** out_sizes,
                                  const char** out_signature);

  /* ABI 2.2. Optional: waits for the work queued on every stream of the device before the call,
   * as device_synchronize does, but leaves a failed operation's error to its stream's
   * stream_synchronize or stream_query to report (porta_memory_free and porta_module_unload wait
   * this way, and report only their own errors). SUCCESS unless the wait itself fails. When NULL,
   * libporta waits with device_synchronize: a backend without errors of its own per stream (the
   * GPU drivers' are the context's) needs no other. */
  porta_status_t (*device_wait)(porta_backend_context_t context, int32_t device);
} porta_backend_interface_t;

/* What libporta resolved for one op call, handed to every op slot (op plugin ABI 2). Valid for
 * the duration of the call. */
typedef struct porta_op_context_s {
  size_t struct_size;
  void* state;                                 /* what the plugin's initialize returned */
  porta_stream_t stream;                       /* a live stream, never NULL (the default one
                                                  resolved) */
  porta_device_t device;                       /* the stream's device */
  const porta_device_properties_t* properties; /* the device's, as porta_device_properties */
  void* native_device; /* porta_device_native_handle's answer; NULL when the backend has none */
  void* native_stream; /* porta_stream_native_handle's answer; NULL when the backend has none */
  /* The plugin's storage for this stream: a void* that libporta keeps per (plugin, stream),
   * NULL until the plugin fills it. Ops on one stream may run on several threads at once, so it
   * is read and filled atomically (a compare-and-swap; plugin_kit's stream_storage does that).
   * libporta hands it to release_stream_storage once the stream is destroyed and the last call
   * using it has returned, or at shutdown: the plugin never polls for dead streams. */
  void** stream_storage;
} porta_op_context_t;

/* The interface of an op plugin: implementations of porta_ops.h for one or more backends. An op
 * plugin is a client of the public API: it launches its kernels with porta_kernel_launch on the
 * stream of its context, exactly as a user's kernel library would. libporta has checked every
 * argument as porta_ops.h describes (shapes, buffer sizes, devices; the stream is live), so a
 * slot only computes.
 *
 * Op plugin ABI 2 (PORTA_PLUGIN_ABI_MAJOR 2) replaced ABI 1's positional op slots, which took
 * the plugin's context and the stream followed by the public function's parameters, with one
 * slot per row of porta_op_table.h taking a porta_op_context_t and the op's versioned argument
 * struct (porta_<op>_args_t), and added per-stream storage (stream_storage above,
 * release_stream_storage below). A plugin built against ABI 1 is refused, naming both ABIs. */
typedef struct porta_ops_interface_s {
  size_t struct_size;

  porta_status_t (*initialize)(void** out_state);
  void (*shutdown)(void* state);
  /* SUCCESS when it serves devices of this backend ("cpu", "cuda", ...); otherwise
   * PORTA_ERROR_UNAVAILABLE with the reason as message. */
  porta_status_t (*supports_backend)(void* state, const char* backend);
  /* Optional: whether the plugin serves this device of a backend it supports, asked once per
   * device after supports_backend (a GPU architecture its code was not built for is
   * PORTA_ERROR_UNSUPPORTED, with the architectures it was built for as message). */
  porta_status_t (*supports_device)(void* state, const porta_device_properties_t* device);
  /* Optional (required once a plugin fills stream_storage): releases what the plugin stored for a
   * stream. shutting_down is 0 when the stream was destroyed: its work has finished, and the
   * plugin may call Porta (porta_memory_free). It is 1 at porta_shutdown, before the plugin's
   * shutdown: no Porta call may be made then, and libporta frees all Porta memory itself. */
  void (*release_stream_storage)(void* state, void* storage, int32_t shutting_down);

  /* One slot per op, in the table's order; NULL for an op the plugin leaves out (UNSUPPORTED, or
   * the portable plugin's under PORTA_OPS=vendor). The struct's fields are the public function's
   * parameters after the stream; struct_size is libporta's sizeof. */
#define PORTA_OP_SLOT_(name, fields) \
  porta_status_t (*name)(const porta_op_context_t* context, const porta_##name##_args_t* args);
  PORTA_OP_TABLE(PORTA_OP_SLOT_)
#undef PORTA_OP_SLOT_
} porta_ops_interface_t;

/* ABI 2.1: the launcher's arrival record of one communicator, kept on the hosts: each rank
 * publishes the number of the last collective it entered, and any rank reads every rank's, to
 * name the ranks that did not arrive at a collective that never finished. Its functions are
 * called on a thread calling Porta, never on an engine's own threads (MPI may require that). */
#define PORTA_COMM_NO_ANSWER UINT64_MAX /* a rank whose entry could not be read in time */
typedef struct porta_comm_arrivals_s {
  size_t struct_size;
  void* record;
  /* This rank entered collective `sequence` (1 for the first). Never waits for other ranks. */
  porta_status_t (*arrive)(void* record, uint64_t sequence);
  /* Every rank's last sequence into out_sequences[size] (0: none yet; PORTA_COMM_NO_ANSWER when
   * a rank's could not be read within PORTA_COMM_TIMEOUT). */
  porta_status_t (*read)(void* record, uint64_t* out_sequences);
} porta_comm_arrivals_t;

/* ABI 2.3: a collective as one rank called it, for comm_refuse. */
typedef enum porta_comm_collective {
  PORTA_COMM_ALL_REDUCE = 1,
  PORTA_COMM_BROADCAST = 2,
  PORTA_COMM_ALL_GATHER = 3,
  PORTA_COMM_REDUCE_SCATTER = 4,
  PORTA_COMM_BARRIER = 5
} porta_comm_collective_t;
typedef struct porta_comm_call_s {
  size_t struct_size;
  porta_comm_collective_t collective;
  size_t count;
  porta_dtype_t dtype;  /* as the caller passed them: possibly the invalid value refused */
  porta_reduce_op_t op; /* all_reduce, reduce_scatter; else 0 */
  int32_t root;         /* broadcast; else 0 */
  const char* reason;   /* why this rank refused it (libporta's message) */
} porta_comm_call_t;

/* The interface of a collective engine (kind PORTA_PLUGIN_KIND_COMM, libporta_comm_<name>.so):
 * NCCL, RCCL, MPI. Like an op plugin it is a client of the public API (streams, native handles).
 * libporta has checked every argument as porta_comm.h describes: the communicator is live, the
 * stream (never NULL) belongs to its device, buffers are device memory of that device with room
 * for count elements, dtype and op are valid, 0 <= rank < size, 0 <= root < size. A count of 0
 * reaches the engine too (its buffers unchecked, maybe NULL): it moves no data, but the engine
 * counts and matches it among the ranks like any other collective. */
typedef struct porta_comm_interface_s {
  size_t struct_size;

  porta_status_t (*initialize)(porta_backend_context_t* out_context);
  void (*shutdown)(porta_backend_context_t context);
  /* SUCCESS when the engine serves devices of this backend here; otherwise UNAVAILABLE with the
   * reason as message (the engine's library is missing, no such device, ...). May open the
   * engine's library on first use. */
  porta_status_t (*supports_backend)(porta_backend_context_t context, const char* backend);

  porta_status_t (*get_unique_id)(porta_backend_context_t context, porta_device_t device,
                                  porta_comm_unique_id_t* out_id);
  porta_status_t (*comm_create)(porta_backend_context_t context, porta_device_t device,
                                int32_t rank, int32_t size, const porta_comm_unique_id_t* id,
                                void** out_comm);
  porta_status_t (*comm_destroy)(porta_backend_context_t context, void* comm);
  porta_status_t (*all_reduce)(porta_backend_context_t context, void* comm, const void* send,
                               void* recv, size_t count, porta_dtype_t dtype, porta_reduce_op_t op,
                               porta_stream_t stream);
  porta_status_t (*broadcast)(porta_backend_context_t context, void* comm, const void* send,
                              void* recv, size_t count, porta_dtype_t dtype, int32_t root,
                              porta_stream_t stream);
  porta_status_t (*all_gather)(porta_backend_context_t context, void* comm, const void* send,
                               void* recv, size_t count, porta_dtype_t dtype,
                               porta_stream_t stream);
  porta_status_t (*reduce_scatter)(porta_backend_context_t context, void* comm, const void* send,
                                   void* recv, size_t count, porta_dtype_t dtype,
                                   porta_reduce_op_t op, porta_stream_t stream);
  porta_status_t (*barrier)(porta_backend_context_t context, void* comm, porta_stream_t stream);

  /* Optional: the launcher's side (MPI). The calling process's rank and the number of
   * processes started; UNAVAILABLE when none launched this one. */
  porta_status_t (*launcher_rank)(porta_backend_context_t context, int32_t* out_rank,
                                  int32_t* out_size);
  /* Optional: copies root's bytes to every process of the launcher (host memory). */
  porta_status_t (*launcher_broadcast)(porta_backend_context_t context, void* data, size_t bytes,
                                       int32_t root);

  /* ABI 2.1, optional: the launcher's arrival record over all its processes, opened by all of
   * them (as porta_comm_create_from_launcher is called), and closed. Closing waits at most
   * PORTA_COMM_TIMEOUT for the others; a record that was read (a collective failed) is left to
   * the launcher's exit instead, since the ranks it waited for may never come. */
  porta_status_t (*launcher_arrivals_open)(porta_backend_context_t context,
                                           porta_comm_arrivals_t* out_arrivals);
  void (*launcher_arrivals_close)(porta_backend_context_t context, void* record);
  /* ABI 2.1, optional: hands a communicator made from the launcher its arrival record (valid
   * until comm_destroy returns), for an engine that cannot tell by itself which ranks did not
   * arrive (NCCL, RCCL). */
  porta_status_t (*comm_attach_arrivals)(porta_backend_context_t context, void* comm,
                                         const porta_comm_arrivals_t* arrivals);
  /* ABI 2.3, optional: this rank refused a collective on a live communicator (an argument, the
   * stream) before calling the engine. The engine takes part in it as refused, so that the ranks
   * stay in step: an engine that matches each call among the ranks (MPI's arrival round) counts
   * it on every rank, and the others fail it at once with PORTA_ERROR_INVALID_ARGUMENT naming
   * this rank. Moves no data. SUCCESS when it took part (libporta returns the refusal either
   * way); DEVICE_LOST when the others did not come in time, as for any collective. When NULL (an
   * engine that queues without meeting the others first: NCCL, RCCL) the refusal stays on this
   * rank, and the others' collective waits out PORTA_COMM_TIMEOUT. */
  porta_status_t (*comm_refuse)(porta_backend_context_t context, void* comm,
                                const porta_comm_call_t* call);
} porta_comm_interface_t;

/* What the entry point fills in. */
typedef struct porta_plugin_s {
  size_t struct_size;
  uint32_t abi_major; /* PORTA_PLUGIN_ABI_MAJOR the plugin was built against */
  uint32_t abi_minor;
  porta_plugin_kind_t kind;
  const char* name;    /* "cpu", "cuda", ... for a backend, "portable", "vendor_cpu", ... for op
                        * plugins; must match the file name */
  const char* version; /* the plugin's own version, and its driver's if known */
  const porta_backend_interface_t* backend; /* kind == PORTA_PLUGIN_KIND_BACKEND */
  const porta_ops_interface_t* ops;         /* kind == PORTA_PLUGIN_KIND_OPS */
  /* ABI 1.2 */
  const porta_comm_interface_t* comm; /* kind == PORTA_PLUGIN_KIND_COMM */
} porta_plugin_t;

/* The one symbol a plugin exports. It must be cheap and must not touch the driver: that happens
 * in initialize. out_plugin->struct_size is set by libporta to the size it can read. The entry,
 * initialize and shutdown run inside porta_init or porta_shutdown: a porta.h call made there is
 * refused with PORTA_ERROR_UNAVAILABLE. */
typedef porta_status_t (*porta_plugin_entry_fn)(const porta_host_api_t* host,
                                                porta_plugin_t* out_plugin);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PORTA_PORTA_PLUGIN_H_ */
