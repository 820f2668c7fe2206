/*
 * porta.h: the Porta runtime C API.
 *
 * One library, libporta.so, loads the backend for the hardware at hand as a plugin (CUDA, HIP,
 * Level Zero, CPU) and dispatches every call below to it. Plain C11; no exception crosses it.
 *
 * Conventions, for every function unless its comment says otherwise:
 * - It returns a porta_status_t: PORTA_SUCCESS (0) or an error code. On error the outputs are left
 *   untouched, nothing was changed, and porta_last_error_message() says what was wrong (the
 *   argument's name, or the backend's own error name and code). A successful call leaves the last
 *   message as it was, like errno.
 * - It is thread-safe. Handles may be used from any thread.
 * - The first call initialises the runtime from the environment (see porta_init) if the
 *   application has not done so; if that fails, the call returns the initialisation's status.
 *   Calls that release (frees, destroys, porta_module_unload) never initialise: with the runtime
 *   down, what they name is stale (INVALID_HANDLE, or INVALID_ARGUMENT for a pointer; freeing
 *   NULL is SUCCESS), as for a wrapper's destructor that runs after porta_shutdown.
 * - Handles are checked: a NULL, destroyed, or foreign handle, or one of another type, gives
 *   PORTA_ERROR_INVALID_HANDLE, never a crash. A NULL porta_stream_t means the default stream of
 *   the default device (see porta_stream_default). An object destroyed while another thread is
 *   still in a call that uses it lives until that call returns: such a call succeeds or answers
 *   INVALID_HANDLE, it never crashes or hangs.
 * - Outputs come last and are named out_*. Structs start with struct_size: set it to
 *   sizeof(the struct) before passing it in; structs only grow by appending fields. Each has a
 *   PORTA_<STRUCT>_MIN_SIZE, the size of its first release: any struct_size from there on is
 *   accepted (a smaller one is INVALID_ARGUMENT), fields beyond the caller's struct_size are
 *   neither read nor written, and a struct filled by Porta gets min(struct_size, Porta's sizeof)
 *   bytes, its struct_size included.
 *
 * Environment:
 *   PORTA_BACKEND      auto (default) | cpu | cuda | hip | level_zero | a comma list in preference
 *                      order, e.g. "cuda,hip,cpu".
 *   PORTA_DEVICE       index of the default device (default 0).
 *   PORTA_PLUGIN_PATH  colon-separated absolute directories searched first for
 *                      libporta_<backend>.so (a relative one is INVALID_ARGUMENT).
 *   PORTA_OPS          portable (default) | vendor: which implementation of porta_ops.h runs.
 *   PORTA_LOG          off | error | warn (default) | info | debug | trace; messages go to stderr.
 *   PORTA_CPU_MODE     fast (default) | simt | racecheck: how the CPU backend runs kernels (see
 *                      porta_cpu_racecheck_report).
 *   PORTA_CPU_DEVICES  how many devices the CPU backend splits the host into (default 1), each
 *                      with its own share of the cores and its own thread pool.
 *   PORTA_VENDOR_LIBRARY  with PORTA_OPS=vendor: a comma list of the libraries the vendor
 *                      plugins may use (onednn, openblas, cublas, cudnn), preferred first;
 *                      default: all of them. Ops of the libraries left out run portable.
 * In a set-user-ID or set-group-ID program they are ignored (read with secure_getenv).
 */
#ifndef PORTA_PORTA_H_
#define PORTA_PORTA_H_

#include <stddef.h>
#include <stdint.h>

/* The end of a field: a struct's size up to and including it (the PORTA_*_MIN_SIZE constants). */
#define PORTA_FIELD_END(type, field) (offsetof(type, field) + sizeof(((type*)0)->field))

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PORTA_API __declspec(dllimport)
#elif defined(PORTA_BUILDING_RUNTIME)
#define PORTA_API __attribute__((visibility("default")))
#else
#define PORTA_API
#endif

#define PORTA_VERSION_MAJOR 0
#define PORTA_VERSION_MINOR 1
#define PORTA_VERSION_PATCH 0

/* ---------------------------------------------------------------------------------------------
 * Status
 * ------------------------------------------------------------------------------------------- */

typedef int32_t porta_status_t;

enum {
  PORTA_SUCCESS = 0,
  /* Not an error: a query found work still pending. Does not set the last error message. */
  PORTA_NOT_READY = 1,
  PORTA_ERROR_INVALID_ARGUMENT = -1,   /* a NULL output, a wrong size, shape or device */
  PORTA_ERROR_INVALID_HANDLE = -2,     /* NULL, destroyed, foreign, or of another type */
  PORTA_ERROR_NOT_FOUND = -3,          /* no such kernel, file, device index or plugin */
  PORTA_ERROR_OUT_OF_MEMORY = -4,      /* host or device allocation failed */
  PORTA_ERROR_UNSUPPORTED = -5,        /* this backend or device cannot do it */
  PORTA_ERROR_UNAVAILABLE = -6,        /* driver or device missing, backend not loaded */
  PORTA_ERROR_INCOMPATIBLE_VERSION = -7, /* plugin ABI or code object of another version */
  PORTA_ERROR_DEVICE_LOST = -8,        /* the device stopped answering; the context is unusable */
  PORTA_ERROR_BACKEND = -9,            /* the vendor driver failed; the message has its code */
  /* PORTA_CPU_MODE=racecheck found a data race, a divergent barrier or a value outside inner()
   * that differs between work-items in a kernel: the launch's stream returns it, the message and
   * porta_cpu_racecheck_report() say where. */
  PORTA_ERROR_KERNEL_HAZARD = -10,
  /* A bug: an unexpected exception inside Porta or a plugin; the message has its text. */
  PORTA_ERROR_INTERNAL = -11
};
/* PORTA_ERROR_DEVICE_LOST (an illegal address, a kernel that failed or timed out, an uncorrectable
 * or contained memory error, ...) is sticky on CUDA and HIP: the driver marks the device's context
 * unusable, every later call on that device returns DEVICE_LOST (memory, copies, streams, events,
 * modules, launches, ops), nothing queued on it runs again, host functions included, and neither
 * porta_shutdown nor a new porta_init recovers it: only a new process does. Other devices keep
 * working. The CPU backend never reports it. */

/* A static, never-NULL name for a status: "PORTA_ERROR_INVALID_HANDLE". Any thread. */
PORTA_API const char* porta_status_name(porta_status_t status);

/* The message of the last call that failed on this thread, or "" if none has. The pointer stays
 * valid until this thread's next failing Porta call. Never NULL. */
PORTA_API const char* porta_last_error_message(void);

/* ---------------------------------------------------------------------------------------------
 * Initialisation and the loader
 * ------------------------------------------------------------------------------------------- */

typedef struct porta_init_options_s {
  size_t struct_size;
  /* Each field overrides its environment variable when not NULL; NULL reads the variable. */
  const char* backend;     /* as PORTA_BACKEND */
  const char* device;      /* as PORTA_DEVICE */
  const char* plugin_path; /* as PORTA_PLUGIN_PATH */
  const char* log_level;   /* as PORTA_LOG */
  const char* ops;         /* as PORTA_OPS */
  const char* cpu_mode;    /* as PORTA_CPU_MODE */
  const char* cpu_devices; /* as PORTA_CPU_DEVICES */
} porta_init_options_t;
#define PORTA_INIT_OPTIONS_MIN_SIZE PORTA_FIELD_END(porta_init_options_t, log_level)

/* Loads the backends that PORTA_BACKEND names (all of them for "auto") and enumerates their
 * devices: first the devices of the first usable backend in preference order, then the others'.
 * The selected backend is the one the default device belongs to.
 * options: NULL reads everything from the environment.
 * Idempotent: a call while initialised returns the first call's status and ignores options.
 * A failure (a bad environment value, or no usable backend among those named) is kept until
 * porta_shutdown(); the loader report stays readable either way. Running out of memory is not
 * kept: after OUT_OF_MEMORY nothing stays initialised, and the next call tries again.
 * Returns: SUCCESS; INVALID_ARGUMENT for a bad option or environment value (the message lists
 * the accepted values); UNAVAILABLE or INCOMPATIBLE_VERSION when no backend named can be used
 * (the message says, per plugin, the path tried and why it failed); OUT_OF_MEMORY when host
 * memory ran out, also while loading a backend or op plugin. */
PORTA_API porta_status_t porta_init(const porta_init_options_t* options);

/* Destroys every stream, event, module and allocation still alive (reporting the allocations
 * through the log first, see porta_memory_report_live), unloads the plugins and forgets an
 * initialisation failure. Handles from before become stale (INVALID_HANDLE).
 * The work queued before it ends first (its host functions may still call Porta); from then on
 * other calls return UNAVAILABLE until it has finished. Must not be called from a host function.
 * Always returns SUCCESS. */
PORTA_API porta_status_t porta_shutdown(void);

/* The name of the selected backend ("cpu", "cuda", ...), a static string.
 * Returns: SUCCESS; INVALID_ARGUMENT if out_name is NULL; the initialisation's error. */
PORTA_API porta_status_t porta_backend_selected(const char** out_name);

typedef enum porta_plugin_outcome {
  PORTA_PLUGIN_LOADED = 0,       /* usable; its devices are enumerated */
  PORTA_PLUGIN_NOT_FOUND = 1,    /* no such plugin file in any searched directory */
  PORTA_PLUGIN_LOAD_FAILED = 2,  /* dlopen failed (the reason holds dlerror()) */
  PORTA_PLUGIN_NO_ENTRY = 3,     /* the file lacks the entry symbol porta_plugin_entry */
  PORTA_PLUGIN_INCOMPATIBLE = 4, /* another ABI major, or a malformed description */
  PORTA_PLUGIN_INIT_FAILED = 5,  /* its initialisation failed or threw */
  PORTA_PLUGIN_UNAVAILABLE = 6,  /* loaded, but no driver or no device */
  PORTA_PLUGIN_NOT_REQUESTED = 7 /* not named by PORTA_BACKEND; not tried */
} porta_plugin_outcome_t;

typedef enum porta_plugin_kind {
  PORTA_PLUGIN_KIND_BACKEND = 1, /* devices, memory, streams, events, modules, launch */
  PORTA_PLUGIN_KIND_OPS = 2,     /* the operator set of porta_ops.h */
  PORTA_PLUGIN_KIND_COMM = 3     /* a collective engine of porta_comm.h */
} porta_plugin_kind_t;

/* One row of the loader report: what happened to one plugin. */
typedef struct porta_plugin_report_s {
  size_t struct_size;
  char name[32];       /* a backend ("cpu", "cuda", "hip", "level_zero") or an op plugin
                          ("portable", "vendor_cpu", ...) */
  char path[1024];     /* the file tried, or the directories searched when none was found */
  porta_plugin_outcome_t outcome;
  porta_status_t status; /* SUCCESS when loaded, else the error it maps to */
  char reason[1024];   /* why it failed, in words; "" when loaded */
  uint32_t abi_major;  /* what the plugin reported; 0 when it could not be read */
  uint32_t abi_minor;
  int32_t device_count; /* backends only */
  porta_plugin_kind_t kind;
  /* Since 0.1 with plugin ABI 1.1; written only when struct_size covers them. */
  char version[256];   /* the plugin's version string (its libraries' versions too); "" unknown */
  char ops[512];       /* op plugins: the ops it implements, comma-separated, as named in
                          porta_ops.h without "porta_" ("gemm,conv2d_forward,..."); "" else */
} porta_plugin_report_t;
#define PORTA_PLUGIN_REPORT_MIN_SIZE PORTA_FIELD_END(porta_plugin_report_t, kind)

/* The loader report: one row per known backend in the order tried, then the backends not
 * requested, then the op plugins (the portable one, and a vendor one per loaded backend).
 * Readable after a failed initialisation too (it triggers initialisation if none happened).
 * A row is written up to out_report->struct_size (at least the first release's struct, which
 * ended at kind); fields beyond it are left alone.
 * With PORTA_OPS=vendor, an op that the vendor plugin's ops list lacks runs on the portable
 * plugin (see porta_ops.h); the list tells which ops truly run on the vendor library.
 * Returns: SUCCESS; INVALID_ARGUMENT for a NULL output, a struct_size too small, or an index
 * >= the count. */
PORTA_API porta_status_t porta_loader_report_count(size_t* out_count);
PORTA_API porta_status_t porta_loader_report_get(size_t index, porta_plugin_report_t* out_report);

/* ---------------------------------------------------------------------------------------------
 * Devices: an index in [0, count), in the order porta_init describes.
 * ------------------------------------------------------------------------------------------- */

typedef int32_t porta_device_t;

enum {
  PORTA_CAPABILITY_FP64 = 1u << 0,
  PORTA_CAPABILITY_FP16 = 1u << 1,
  PORTA_CAPABILITY_BF16 = 1u << 2,
  PORTA_CAPABILITY_MATRIX_CORES = 1u << 3,   /* tensor cores, matrix cores, XMX, AMX */
  PORTA_CAPABILITY_UNIFIED_ADDRESSING = 1u << 4, /* host and device share one address space */
  PORTA_CAPABILITY_ASYNC_COPY = 1u << 5,     /* copies overlap with kernels on another stream */
  PORTA_CAPABILITY_HOST_IS_DEVICE = 1u << 6, /* device memory is host memory (the CPU backend) */
  /* Freed device memory does not go back to the host's heap, so a copy into it is named a use
   * after free until the host maps those addresses again (the CPU backend keeps them reserved; a
   * GPU driver may hand them to a later mmap). Without it (OpenCL SVM, Level Zero USM), freed
   * addresses may become host memory at once. */
  PORTA_CAPABILITY_RESERVED_ADDRESSES = 1u << 7
};

typedef struct porta_device_properties_s {
  size_t struct_size;
  char name[256];                  /* "NVIDIA H100 80GB HBM3", "AMD EPYC 7B13 (2 threads)" */
  char backend[32];                /* "cuda", "cpu", ... */
  char architecture[64];           /* "sm_90", "gfx90a", "x86-64-v3", ... */
  uint64_t total_memory;           /* bytes */
  int32_t compute_units;           /* SMs, CUs, EUs, or host threads */
  int32_t max_work_group_size;     /* work-items per group */
  int32_t max_work_group_dims[3];  /* per dimension */
  int64_t max_grid_dims[3];        /* work-groups per dimension */
  int32_t shared_memory_per_group; /* bytes of shared (local) memory a group may use */
  int32_t subgroup_size;           /* warp or wavefront width; SIMD width in fp32 lanes on a CPU */
  int32_t clock_mhz;               /* 0 when unknown */
  uint32_t capabilities;           /* PORTA_CAPABILITY_* bits */
} porta_device_properties_t;
#define PORTA_DEVICE_PROPERTIES_MIN_SIZE PORTA_FIELD_END(porta_device_properties_t, capabilities)

/* Returns: SUCCESS; INVALID_ARGUMENT if out_count is NULL; the initialisation's error. */
PORTA_API porta_status_t porta_device_count(int32_t* out_count);

/* The default device: PORTA_DEVICE, or 0.
 * Returns: SUCCESS; INVALID_ARGUMENT if out_device is NULL; the initialisation's error. */
PORTA_API porta_status_t porta_device_default(porta_device_t* out_device);

/* Returns: SUCCESS; NOT_FOUND for a device index out of range; INVALID_ARGUMENT for a NULL out or
 * a struct_size smaller than the first release's struct. */
PORTA_API porta_status_t porta_device_properties(porta_device_t device,
                                                 porta_device_properties_t* out_properties);

/* Free and total device memory in bytes, as the driver reports them now.
 * Returns: SUCCESS; NOT_FOUND; INVALID_ARGUMENT for NULL outputs. */
PORTA_API porta_status_t porta_device_memory_info(porta_device_t device, uint64_t* out_free,
                                                  uint64_t* out_total);

/* Whether device and peer reach each other's memory directly: *out_direct is 1 when copies
 * between them run on the device (CUDA/HIP peer access, devices of the CPU backend), 0 when
 * porta_memcpy_async stages them through pinned host memory (devices of different backends, or
 * without peer access). A device is direct with itself.
 * Returns: SUCCESS; NOT_FOUND for either index; INVALID_ARGUMENT for NULL out_direct. */
PORTA_API porta_status_t porta_device_can_access_peer(porta_device_t device, porta_device_t peer,
                                                      int32_t* out_direct);

/* Waits for all work queued on every stream of the device.
 * Returns: SUCCESS; NOT_FOUND; the first error of an asynchronous operation that failed. */
PORTA_API porta_status_t porta_device_synchronize(porta_device_t device);

/* The backend's own handle for the device: CUcontext (cuda), hipDevice_t cast to a pointer (hip),
 * ze_device_handle_t (level_zero), cl_device_id (opencl). Returns: SUCCESS; NOT_FOUND; INVALID_ARGUMENT for NULL out;
 * UNSUPPORTED on the CPU backend, which has none. */
PORTA_API porta_status_t porta_device_native_handle(porta_device_t device, void** out_native);

/* ---------------------------------------------------------------------------------------------
 * Memory. Device pointers are plain addresses, as in CUDA and HIP, and are passed to kernels as
 * such. The runtime remembers every allocation, so copies and frees are checked against them.
 * ------------------------------------------------------------------------------------------- */

/* Allocates size bytes of device memory, aligned to at least 256 bytes. size 0 gives a NULL
 * pointer and SUCCESS. Returns: SUCCESS; NOT_FOUND; INVALID_ARGUMENT for NULL out;
 * OUT_OF_MEMORY. */
PORTA_API porta_status_t porta_memory_alloc(porta_device_t device, size_t size, void** out_ptr);

/* Frees device memory from porta_memory_alloc, after waiting for the pending work of every device
 * (as cudaFree does for its device; another device's stream may copy from or to it); an error of
 * that work stays with its stream, for porta_stream_synchronize or porta_stream_query to report.
 * NULL is a no-op. Returns: SUCCESS; INVALID_ARGUMENT for a pointer that is not the start of a
 * live device allocation (double free, interior or foreign pointer). */
PORTA_API porta_status_t porta_memory_free(void* ptr);

/* Allocates page-locked host memory that the device can copy from asynchronously. Rules as for
 * porta_memory_alloc; device says whose driver pins it. */
PORTA_API porta_status_t porta_host_alloc(porta_device_t device, size_t size, void** out_ptr);

/* Frees memory from porta_host_alloc. Rules as for porta_memory_free. */
PORTA_API porta_status_t porta_host_free(void* ptr);

typedef enum porta_memory_kind {
  PORTA_MEMORY_UNKNOWN = 0, /* not from Porta: ordinary (pageable) host memory */
  PORTA_MEMORY_DEVICE = 1,
  PORTA_MEMORY_HOST_PINNED = 2
} porta_memory_kind_t;

typedef struct porta_pointer_info_s {
  size_t struct_size;
  porta_memory_kind_t kind;
  porta_device_t device; /* -1 for PORTA_MEMORY_UNKNOWN */
  void* base;            /* start of the allocation holding the pointer; NULL if unknown */
  size_t size;           /* its size in bytes; 0 if unknown */
} porta_pointer_info_t;
#define PORTA_POINTER_INFO_MIN_SIZE PORTA_FIELD_END(porta_pointer_info_t, size)

/* What the runtime knows of an address (any address; an interior pointer names its allocation).
 * Returns: SUCCESS; INVALID_ARGUMENT for NULL out or a struct_size too small. */
PORTA_API porta_status_t porta_pointer_info(const void* ptr, porta_pointer_info_t* out_info);

typedef struct porta_stream_s* porta_stream_t;
typedef struct porta_event_s* porta_event_t;

/* Copies size bytes; the direction (host to device, device to host, device to device, host to
 * host) follows from where dst and src were allocated. Every pointer that lies in a Porta
 * allocation must have size bytes left in it. A range outside every allocation is host memory
 * only if it touches none: one that runs into a live allocation or starts at its end, or touches
 * a recently freed one (also those freed by porta_shutdown) that the host has not mapped again,
 * is INVALID_ARGUMENT, the latter named a use after free (on devices with
 * PORTA_CAPABILITY_RESERVED_ADDRESSES).
 * The async form queues the copy on the stream and returns; host memory must stay valid until it
 * completes, and only pinned memory is guaranteed to overlap with other work. The blocking form
 * runs on the default stream of the device involved (dst's, for a copy between devices) and
 * waits for it.
 * Between two devices the stream must belong to one of them; the copy is ordered after the
 * stream's earlier work. With direct peer access (porta_device_can_access_peer) it is queued like
 * any copy; otherwise it is staged through pinned host memory (the other device's part on a
 * stream of its own, not ordered after its other streams' work) and the call returns once it has
 * completed; a free of either side waits for it.
 * size 0 is a no-op. Returns: SUCCESS; INVALID_ARGUMENT for NULL pointers, overlapping ranges
 * (as for memcpy), an overrun, a range touching an allocation it does not lie in, a freed
 * pointer, or a device pointer of a device neither the stream's nor (between devices) the other
 * side's; INVALID_HANDLE for the stream. */
PORTA_API porta_status_t porta_memcpy(void* dst, const void* src, size_t size);
PORTA_API porta_status_t porta_memcpy_async(void* dst, const void* src, size_t size,
                                            porta_stream_t stream);

/* Sets size bytes of device memory to the byte value (0..255). Checked as the copies are.
 * Returns: SUCCESS; INVALID_ARGUMENT for a pointer that is not device memory, an overrun or a
 * value out of range; INVALID_HANDLE for the stream. */
PORTA_API porta_status_t porta_memset(void* dst, int value, size_t size);
PORTA_API porta_status_t porta_memset_async(void* dst, int value, size_t size,
                                            porta_stream_t stream);

/* ---------------------------------------------------------------------------------------------
 * Stream-ordered allocation, as cudaMallocAsync. Each device has a pool: memory freed on a stream
 * is reused by later allocations on that stream at once (stream order makes that safe), and by
 * other streams once they are ordered after the free: by waiting on an event recorded after it
 * (porta_stream_wait_event), or after the freeing stream was synchronised. Cached memory goes back
 * to the backend at synchronisation points above the release threshold, and on a trim. Where the
 * driver has pools of its own (CUDA, HIP) the backend may serve these calls from them.
 * ------------------------------------------------------------------------------------------- */

/* Allocates size bytes of device memory of device, usable by work queued on stream after this
 * call (and by any stream ordered after it). The stream must belong to device. size 0 gives NULL.
 * The memory is a device allocation like any other (copies, kernels, porta_pointer_info) and may
 * also be freed with porta_memory_free.
 * Returns: SUCCESS; NOT_FOUND; INVALID_HANDLE for the stream; INVALID_ARGUMENT for NULL out_ptr or
 * a stream of another device; OUT_OF_MEMORY. */
PORTA_API porta_status_t porta_memory_alloc_async(porta_device_t device, size_t size,
                                                  porta_stream_t stream, void** out_ptr);

/* Frees device memory (from either alloc) once the work queued on stream before this call is
 * done: it returns to the device's pool at once, for reuse in stream order. Work on other streams
 * must not use it after this call. NULL is a no-op.
 * Returns: SUCCESS; INVALID_HANDLE for the stream; INVALID_ARGUMENT for a pointer that is not the
 * start of a live device allocation (double free, interior or foreign pointer) or a stream of
 * another device than the memory's. */
PORTA_API porta_status_t porta_memory_free_async(void* ptr, porta_stream_t stream);

typedef struct porta_memory_pool_stats_s {
  size_t struct_size;
  uint64_t bytes_in_use;      /* blocks held by live stream-ordered allocations */
  uint64_t bytes_cached;      /* freed blocks kept for reuse */
  uint64_t peak_bytes_in_use; /* the highest bytes_in_use so far */
  uint64_t allocation_count;  /* live stream-ordered allocations */
  uint64_t reuse_count;       /* allocations served from cached blocks so far */
  uint64_t release_threshold; /* cached bytes kept at synchronisation points */
} porta_memory_pool_stats_t;
#define PORTA_MEMORY_POOL_STATS_MIN_SIZE \
  PORTA_FIELD_END(porta_memory_pool_stats_t, release_threshold)

/* The device pool's figures. Returns: SUCCESS; NOT_FOUND; INVALID_ARGUMENT for NULL out or a
 * struct_size too small. */
PORTA_API porta_status_t porta_memory_pool_stats(porta_device_t device,
                                                 porta_memory_pool_stats_t* out_stats);

/* How many cached bytes the pool keeps when a stream or the device is synchronised (default 0:
 * cached memory is released there, as CUDA's default pool does). UINT64_MAX keeps everything.
 * Returns: SUCCESS; NOT_FOUND. */
PORTA_API porta_status_t porta_memory_pool_set_release_threshold(porta_device_t device,
                                                                 uint64_t bytes);

/* Waits for the device's queued work, then releases cached blocks until at most keep_bytes stay
 * cached. Returns: SUCCESS; NOT_FOUND; the error of queued work that failed. */
PORTA_API porta_status_t porta_memory_pool_trim(porta_device_t device, uint64_t keep_bytes);

/* Writes every allocation still alive (device and pinned, with its size and device, then a count
 * and total per device) to the log at warn level; porta_shutdown does the same before freeing
 * them. *out_count and *out_bytes (each may be NULL) get the totals. Nothing is logged when none
 * is alive. Returns: SUCCESS. */
PORTA_API porta_status_t porta_memory_report_live(uint64_t* out_count, uint64_t* out_bytes);

/* ---------------------------------------------------------------------------------------------
 * Streams: in-order queues of work on one device. Work on different streams may overlap.
 * ------------------------------------------------------------------------------------------- */

/* Returns: SUCCESS; NOT_FOUND for the device; INVALID_ARGUMENT for NULL out; OUT_OF_MEMORY. */
PORTA_API porta_status_t porta_stream_create(porta_device_t device, porta_stream_t* out_stream);

/* Waits for the stream's queued work, then destroys it. The default streams cannot be destroyed.
 * Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for a default stream; else the error of the
 * stream's queued work (as porta_stream_synchronize's), the stream destroyed all the same. */
PORTA_API porta_status_t porta_stream_destroy(porta_stream_t stream);

/* The device's default stream: created with the device, alive until porta_shutdown. It is an
 * ordinary in-order stream; it does not synchronise implicitly with other streams.
 * Returns: SUCCESS; NOT_FOUND; INVALID_ARGUMENT for NULL out. */
PORTA_API porta_status_t porta_stream_default(porta_device_t device, porta_stream_t* out_stream);

/* Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for NULL out. */
PORTA_API porta_status_t porta_stream_device(porta_stream_t stream, porta_device_t* out_device);

/* Blocks until all work queued on the stream has finished.
 * Returns: SUCCESS; INVALID_HANDLE; the error of a queued operation that failed (then cleared). */
PORTA_API porta_status_t porta_stream_synchronize(porta_stream_t stream);

/* Returns: SUCCESS when all queued work has finished; NOT_READY when some is pending;
 * INVALID_HANDLE; the error of a queued operation that failed (then cleared). */
PORTA_API porta_status_t porta_stream_query(porta_stream_t stream);

/* Work queued on the stream after this call waits until the event's last recorded work has
 * completed, without blocking the host. An event never recorded is complete. The event may
 * belong to another stream of the same device, or to another device of the same backend.
 * Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for an event of another backend. */
PORTA_API porta_status_t porta_stream_wait_event(porta_stream_t stream, porta_event_t event);

/* The backend's own stream: CUstream (cuda), hipStream_t (hip), the immediate
 * ze_command_list_handle_t (level_zero), cl_command_queue (opencl). Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for NULL out; UNSUPPORTED on
 * the CPU backend, whose streams are Porta's own. */
PORTA_API porta_status_t porta_stream_native_handle(porta_stream_t stream, void** out_native);

/* A host function queued on a stream: it receives the user_data given with it. */
typedef void (*porta_host_fn_t)(void* user_data);

/* Queues a call of fn(user_data) on the stream, as cudaLaunchHostFunc does: fn runs on a thread
 * of the runtime's choosing, never one that queued it or waits for the stream, once all work
 * queued on the stream before it has completed, and work queued after it (and events recorded
 * after it) waits until fn has returned. The call itself returns at once. fn runs even when
 * earlier work on the stream failed with an ordinary error (returned by the stream's next
 * synchronize or query), and runs exactly once if this call succeeds. After
 * PORTA_ERROR_DEVICE_LOST on CUDA or HIP (see above) it never runs: this call then returns
 * DEVICE_LOST, or, if the device was lost after it returned, the stream's next synchronize does,
 * and fn is not called.
 * The stream fn runs in cannot advance until it returns, so the Porta functions that wait for
 * streams or devices (the synchronizes, blocking copies and sets of device memory, copies staged
 * between backends, frees, porta_module_unload, porta_stream_destroy, porta_memory_pool_trim,
 * porta_shutdown) return PORTA_ERROR_UNAVAILABLE at once when fn calls them, and change nothing.
 * GPU drivers also forbid their own API there, so a portable fn makes no Porta call at all. fn must
 * not throw or longjmp out (where Porta's own thread runs it, on the CPU, OpenCL and Level Zero
 * backends, an exception is caught and the stream's next synchronize returns it as INTERNAL).
 * Returns: SUCCESS; INVALID_HANDLE for the stream; INVALID_ARGUMENT for a NULL fn; UNSUPPORTED
 * when the stream's backend plugin predates host functions; DEVICE_LOST. */
PORTA_API porta_status_t porta_stream_launch_host_func(porta_stream_t stream, porta_host_fn_t fn,
                                                       void* user_data);

/* ---------------------------------------------------------------------------------------------
 * Events: markers in a stream, to wait on and to time work with.
 * ------------------------------------------------------------------------------------------- */

/* Returns: SUCCESS; NOT_FOUND for the device; INVALID_ARGUMENT for NULL out. */
PORTA_API porta_status_t porta_event_create(porta_device_t device, porta_event_t* out_event);

/* Destroys the event; waits already queued on it still complete normally.
 * Returns: SUCCESS; INVALID_HANDLE. */
PORTA_API porta_status_t porta_event_destroy(porta_event_t event);

/* Captures the stream's work queued so far: the event completes when that work has, and takes
 * the time then. Recording again replaces the previous capture.
 * Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for a stream of another device. */
PORTA_API porta_status_t porta_event_record(porta_event_t event, porta_stream_t stream);

/* Returns: SUCCESS when the captured work has completed (or never recorded); NOT_READY;
 * INVALID_HANDLE. */
PORTA_API porta_status_t porta_event_query(porta_event_t event);

/* Blocks until the captured work has completed. Returns: SUCCESS; INVALID_HANDLE. */
PORTA_API porta_status_t porta_event_synchronize(porta_event_t event);

/* Milliseconds between two completed events of the same device (negative if end came first).
 * Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for NULL out, events of different devices
 * or one never recorded; NOT_READY if either has not completed. */
PORTA_API porta_status_t porta_event_elapsed_ms(porta_event_t start, porta_event_t end,
                                                float* out_ms);

/* ---------------------------------------------------------------------------------------------
 * Modules and kernels. A module is a code object for one device: a shared object (cpu), a
 * cubin/fatbin/PTX (cuda), a HIP code object (hip), SPIR-V (level_zero).
 * ------------------------------------------------------------------------------------------- */

typedef struct porta_module_s* porta_module_t;
typedef struct porta_kernel_s* porta_kernel_t;

/* Loads a module from a file. path is either the code object itself, or the base name of a
 * kernel library built by porta_add_kernel_library ("lib/portable_ops"), in which case the build
 * that fits the device is picked: for the CPU the highest instruction-set level the host runs
 * (".cpu-x86-64-v4.so", then v3, then baseline), for a GPU its architecture.
 * Returns: SUCCESS; NOT_FOUND for a missing file (the message lists the names tried) or device;
 * INVALID_ARGUMENT for NULL arguments or a file the backend cannot load (the message says why);
 * INCOMPATIBLE_VERSION for a code object built for another device or ABI. */
PORTA_API porta_status_t porta_module_load(porta_device_t device, const char* path,
                                           porta_module_t* out_module);

/* Loads a module from memory; the image is copied and may be freed after the call.
 * The image must be trusted, as a shared library is: loading runs its code (a CPU module's
 * constructors; a GPU driver parses it). What can be checked is checked before the backend sees
 * it (an ELF image's headers, segments, dynamic section and relocations must lie within the
 * image and the object; a SPIR-V module's types and signatures), so a truncated or malformed image
 * is INVALID_ARGUMENT, but a well-formed image is not made harmless by that. What the driver
 * compiles it cannot check: a damaged SPIR (LLVM bitcode) image can abort the process inside
 * PoCL's compiler, as a damaged code object can inside a GPU driver.
 * Returns as porta_module_load. */
PORTA_API porta_status_t porta_module_load_data(porta_device_t device, const void* image,
                                                size_t size, porta_module_t* out_module);

/* Unloads the module after waiting for the device's pending work (whose errors stay with their
 * streams, as for porta_memory_free); its kernels become stale. A
 * launch of its kernel that another thread has under way still runs: the code is unmapped once
 * that launch has finished.
 * Returns: SUCCESS; INVALID_HANDLE. */
PORTA_API porta_status_t porta_module_unload(porta_module_t module);

/* Looks a kernel up by name. The handle lives as long as its module.
 * Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for NULL arguments; NOT_FOUND. */
PORTA_API porta_status_t porta_kernel_get(porta_module_t module, const char* name,
                                          porta_kernel_t* out_kernel);

/* The most work-items per group the kernel can be launched with on its device: the device's
 * max_work_group_size, or less where the kernel's registers or its declared limit
 * (PORTA_KERNEL_MAX_GROUP in porta_kernel.h) allow fewer. Launches above it are refused.
 * Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for NULL out_max. */
PORTA_API porta_status_t porta_kernel_max_group_size(porta_kernel_t kernel, int32_t* out_max);

typedef struct porta_launch_config_s {
  size_t struct_size;
  uint32_t grid[3];            /* work-groups per dimension, each >= 1 */
  uint32_t group[3];           /* work-items per group per dimension, each >= 1 */
  uint32_t shared_memory_bytes; /* dynamic shared (local) memory per group */
  /* The arguments as the caller passes them, checked against the kernel's parameters
   * (porta_kernel_get_params) before anything is queued: arg_count entries of args, arg_sizes[i]
   * the bytes args[i] points to. arg_sizes NULL leaves them unchecked (a config whose struct_size
   * ends before these fields too). porta.hpp's launches always fill them. */
  uint32_t arg_count;
  const size_t* arg_sizes;
} porta_launch_config_t;
#define PORTA_LAUNCH_CONFIG_MIN_SIZE PORTA_FIELD_END(porta_launch_config_t, shared_memory_bytes)

/* A kernel's parameters as its module records them (porta_kernel.h's PORTA_KERNEL records them in
 * every build). The arrays live as long as the kernel's module. */
typedef struct porta_kernel_params_s {
  size_t struct_size;    /* set by the caller to sizeof(porta_kernel_params_t) */
  uint32_t count;        /* how many parameters the kernel takes */
  const uint32_t* sizes; /* count entries: bytes of each parameter's value */
  /* count entries: each parameter's name, or NULL where the module does not record it (SPIR-V
   * modules and modules not written with PORTA_KERNEL record sizes only) */
  const char* const* names;
  const char* const* types; /* count entries: each parameter's type as written, or NULL */
} porta_kernel_params_t;

/* The kernel's parameter list, which porta_kernel_launch checks arguments against.
 * Returns: SUCCESS; INVALID_HANDLE; INVALID_ARGUMENT for NULL out or a struct_size below
 * sizeof(porta_kernel_params_t); NOT_FOUND when the module records no parameter list for the
 * kernel (a CUDA or HIP image built without porta_kernel.h): its launches are then unchecked. */
PORTA_API porta_status_t porta_kernel_get_params(porta_kernel_t kernel,
                                                 porta_kernel_params_t* out_params);

/* Queues the kernel on the stream, as cuLaunchKernel does: args[i] points to the value of the
 * kernel's i-th parameter, which is copied before the call returns. When config->arg_sizes is set,
 * the arguments are checked against the kernel's recorded parameters first.
 * Returns: SUCCESS; INVALID_HANDLE for the kernel or stream; INVALID_ARGUMENT for NULL config or
 * args (when the kernel has parameters), a zero or oversize grid or group, too much shared memory,
 * or a stream of another device than the kernel's module, or a group larger than
 * porta_kernel_max_group_size; INVALID_ARGUMENT, with nothing queued, for an arg_count other than
 * the kernel's parameter count or an argument whose size differs from its parameter's (the
 * message names the kernel and the parameter's index, name and type where recorded). */
PORTA_API porta_status_t porta_kernel_launch(porta_kernel_t kernel,
                                             const porta_launch_config_t* config, void** args,
                                             porta_stream_t stream);

/* ---------------------------------------------------------------------------------------------
 * The CPU backend's kernel checker. PORTA_CPU_MODE (or porta_init_options_t.cpu_mode) picks how
 * the CPU backend runs kernels: fast (the default: a group's work-items as a loop, the
 * <lib>.cpu-<isa>.so builds), simt (every work-item a fiber of its own and a real barrier after
 * each inner loop, as on a GPU: <lib>.cpu-simt.so) or racecheck (simt, and every memory access
 * checked: <lib>.cpu-racecheck.so). The device's architecture then reads "simt" or "racecheck".
 * ------------------------------------------------------------------------------------------- */

/* The hazards racecheck has found since porta_init, one line per kernel, kind and pair of code
 * sites ("kernel 'k': read/write race in group (0,0,0) between work-items (3,0,0) and ..."),
 * each ending in a newline. Writes at most capacity bytes of it, NUL-terminated, to out_text
 * (which may be NULL when capacity is 0), the full length (without the NUL) to out_length and the
 * number of lines to out_count. Nothing found, or another mode: "" and 0.
 * Returns: SUCCESS; INVALID_ARGUMENT for NULL out_length or out_count, or a NULL out_text with a
 * capacity; the initialisation's error. */
PORTA_API porta_status_t porta_cpu_racecheck_report(char* out_text, size_t capacity,
                                                    size_t* out_length, size_t* out_count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PORTA_PORTA_H_ */
