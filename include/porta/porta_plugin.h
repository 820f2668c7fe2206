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
 *   reads a slot only when struct_size covers it.
 *
 * The interface is a struct of function pointers taking the plugin's own context first. Objects
 * (devices, streams, events, modules, kernels) are opaque pointers of the plugin's choosing;
 * libporta wraps them in checked handles before users see them.
 */
#ifndef PORTA_PORTA_PLUGIN_H_
#define PORTA_PORTA_PLUGIN_H_

#include "porta.h"
#include "porta_comm.h"
#include "porta_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PORTA_PLUGIN_ABI_MAJOR 1
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

  /* ABI 1.3. Optional (launch arguments unchecked when NULL or NOT_FOUND): the kernel's parameters
   * as its module records them: their count, each one's size in bytes (count entries), and the
   * parameter list as written in PORTA_KERNEL ("uint32_t n, float a, const float* x") or NULL.
   * The arrays live as long as the kernel. libporta asks once, at porta_kernel_get, and checks
   * every launch's arguments against the answer (porta_kernel_launch). */
  porta_status_t (*kernel_params)(porta_backend_context_t context, void* kernel,
                                  uint32_t* out_count, const uint32_t** out_sizes,
                                  const char** out_signature);
} porta_backend_interface_t;

/* The interface of an op plugin: implementations of porta_ops.h for one or more backends. An op
 * plugin is a client of the public API: it launches its kernels with porta_kernel_launch on the
 * stream it is handed, exactly as a user's kernel library would. libporta has checked every
 * argument as porta_ops.h describes (shapes, buffer sizes, devices; stream is a live handle,
 * never NULL), so a slot only computes. A slot may be NULL: the op is then UNSUPPORTED. */
typedef struct porta_ops_interface_s {
  size_t struct_size;

  porta_status_t (*initialize)(porta_backend_context_t* out_context);
  void (*shutdown)(porta_backend_context_t context);
  /* SUCCESS when it serves devices of this backend ("cpu", "cuda", ...); otherwise
   * PORTA_ERROR_UNAVAILABLE with the reason as message. */
  porta_status_t (*supports_backend)(porta_backend_context_t context, const char* backend);

  porta_status_t (*gemm)(porta_backend_context_t context, porta_stream_t stream,
                         const porta_gemm_desc_t* desc, const void* a, const void* b, float* c);
  porta_status_t (*conv2d_forward)(porta_backend_context_t context, porta_stream_t stream,
                                   const porta_conv2d_desc_t* desc, const void* x, const void* w,
                                   float* y);
  porta_status_t (*conv2d_backward_data)(porta_backend_context_t context, porta_stream_t stream,
                                         const porta_conv2d_desc_t* desc, const void* dy,
                                         const void* w, float* dx);
  porta_status_t (*conv2d_backward_weights)(porta_backend_context_t context, porta_stream_t stream,
                                            const porta_conv2d_desc_t* desc, const void* x,
                                            const void* dy, float* dw);
  porta_status_t (*softmax_forward)(porta_backend_context_t context, porta_stream_t stream,
                                    porta_softmax_mode_t mode, int64_t rows, int64_t cols,
                                    const float* x, float* y);
  porta_status_t (*softmax_backward)(porta_backend_context_t context, porta_stream_t stream,
                                     porta_softmax_mode_t mode, int64_t rows, int64_t cols,
                                     const float* y, const float* dy, float* dx);
  porta_status_t (*cross_entropy)(porta_backend_context_t context, porta_stream_t stream,
                                  int64_t rows, int64_t cols, const float* logits,
                                  const int32_t* labels, float* loss, float* dlogits);
  porta_status_t (*bias_add)(porta_backend_context_t context, porta_stream_t stream, int64_t batch,
                             int64_t channels, int64_t spatial, const float* x, const float* bias,
                             float* y);
  porta_status_t (*bias_backward)(porta_backend_context_t context, porta_stream_t stream,
                                  int64_t batch, int64_t channels, int64_t spatial, const float* dy,
                                  float* dbias);
  porta_status_t (*relu_forward)(porta_backend_context_t context, porta_stream_t stream,
                                 int64_t count, const float* x, float* y);
  porta_status_t (*relu_backward)(porta_backend_context_t context, porta_stream_t stream,
                                  int64_t count, const float* x, const float* dy, float* dx);
  porta_status_t (*max_pool2d_forward)(porta_backend_context_t context, porta_stream_t stream,
                                       const porta_pool2d_desc_t* desc, const float* x, float* y);
  porta_status_t (*max_pool2d_backward)(porta_backend_context_t context, porta_stream_t stream,
                                        const porta_pool2d_desc_t* desc, const float* x,
                                        const float* dy, float* dx);
  porta_status_t (*sgd_update)(porta_backend_context_t context, porta_stream_t stream,
                               int64_t count, float* weights, const float* grads, float* velocity,
                               float learning_rate, float momentum, float weight_decay);
  porta_status_t (*adam_update)(porta_backend_context_t context, porta_stream_t stream,
                                int64_t count, float* weights, const float* grads, float* m,
                                float* v, const porta_adam_params_t* params);

  /* Since ABI minor 1; libporta reads it only when struct_size covers it. */
  porta_status_t (*convert)(porta_backend_context_t context, porta_stream_t stream,
                            int64_t count, porta_dtype_t src_dtype, const void* src,
                            porta_dtype_t dst_dtype, void* dst);

  /* ABI 1.2. Optional: whether the plugin serves this device of a backend it supports, asked
   * once per device after supports_backend (a GPU architecture its code was not built for is
   * PORTA_ERROR_UNSUPPORTED, with the architectures it was built for as message). */
  porta_status_t (*supports_device)(porta_backend_context_t context,
                                    const porta_device_properties_t* device);
} porta_ops_interface_t;

/* The interface of a collective engine (kind PORTA_PLUGIN_KIND_COMM, libporta_comm_<name>.so):
 * NCCL, RCCL, MPI. Like an op plugin it is a client of the public API (streams, native handles).
 * libporta has checked every argument as porta_comm.h describes: the communicator is live, the
 * stream (never NULL) belongs to its device, buffers are device memory of that device with room
 * for count elements, dtype and op are valid, 0 <= rank < size, 0 <= root < size. */
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
 * in initialize. out_plugin->struct_size is set by libporta to the size it can read. */
typedef porta_status_t (*porta_plugin_entry_fn)(const porta_host_api_t* host,
                                                porta_plugin_t* out_plugin);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PORTA_PORTA_PLUGIN_H_ */
