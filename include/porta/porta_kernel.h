/*
 * porta_kernel.h: the portable kernel dialect, and what a kernel looks like to the backends.
 *
 * One source compiles as plain C++ for the CPU backend, as CUDA (nvcc), as HIP (hipcc) and as
 * SPIR-V for OpenCL and Level Zero (clang 15, see the SPIR-V section below). The
 * model is OCCA's: a kernel body runs once per work-group (the outer loop, the grid); inside it,
 * porta::inner() loops over the group's work-items, with a barrier implied after each inner
 * loop. Shared memory is declared in the body's scope with PORTA_SHARED. On a GPU a work-item is
 * a thread and inner() runs its body once per thread, then synchronises; on the CPU a work-group
 * runs on one pool thread, inner() is a plain loop the compiler inlines and vectorises, and
 * shared memory is an ordinary local array.
 *
 *     #include <porta/porta_kernel.h>
 *
 *     PORTA_KERNEL(saxpy, uint32_t n, float a, const float* x, float* y) {
 *       const uint32_t first = porta::group_id(0) * porta::group_size(0);
 *       porta::inner([&](uint32_t item) {
 *         const uint32_t i = first + item;
 *         if (i < n) y[i] = a * x[i] + y[i];
 *       });
 *     }
 *
 * Rules that keep one source correct everywhere:
 * - A variable declared in the body outside inner() is per group on the CPU but per work-item on
 *   a GPU: use it only for values every work-item agrees on. A value a work-item keeps from one
 *   inner loop to the next lives in porta::exclusive<T, MaxItems> (OCCA's exclusive), indexed by
 *   the item. On the CPU it holds MaxItems slots: declare such a kernel with
 *   PORTA_KERNEL_MAX_GROUP(name, MaxItems, ...), so that a launch of larger groups is refused.
 * - Every work-item of a group must reach every inner() call (barriers), so branch inside inner.
 * - Specialise a hot path per target with PORTA_TARGET_CPU / PORTA_TARGET_CUDA / PORTA_TARGET_HIP
 *   / PORTA_TARGET_SPIRV (or PORTA_TARGET_GPU, which includes SPIR-V), keeping the same kernel
 *   name and parameters. PORTA_TARGET_SIMT is the host build that runs the GPU model
 *   (PORTA_CPU_MODE=simt|racecheck): it takes the paths that are not PORTA_TARGET_CPU's, without
 *   vendor intrinsics.
 * - No double in kernels: many GPUs (Intel Gen12LP and DG2) have no fp64.
 * - No Porta calls in kernels: a GPU kernel cannot make them, and on the CPU one that waits for
 *   the device (a synchronize, a free, an unload) waits for the kernel making it, for ever.
 *
 * porta_add_kernel_library() (cmake/) compiles a source once per CPU instruction-set level and
 * per GPU architecture; porta_module_load() picks the code object that fits the device.
 *
 * CPU code objects. Underneath, a CPU module is a shared object. Each kernel in it is described
 * by an exported constant
 *
 *     const porta_cpu_kernel_t porta_cpu_kernel_<name>;
 *
 * whose run_group runs one work-group: every work-item of it, with barriers honoured, since the
 * CPU backend calls it once per group from its thread pool, groups in any order and in parallel.
 * param_sizes let the backend copy the launch arguments at launch time, as a GPU driver does.
 * That part is plain C, so a module can be written in C or anything that exports C symbols;
 * PORTA_KERNEL generates it from the kernel's signature.
 */
#ifndef PORTA_PORTA_KERNEL_H_
#define PORTA_PORTA_KERNEL_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PORTA_CPU_KERNEL_ABI_VERSION 1
#define PORTA_CPU_KERNEL_SYMBOL_PREFIX "porta_cpu_kernel_"
/* Optional beside a descriptor: const uint32_t porta_cpu_max_group_size_<name>, the most
 * work-items per group the kernel takes (PORTA_KERNEL_MAX_GROUP). Its prefix is not the
 * descriptors': modules built before named it porta_cpu_kernel_max_group_size_<name>, which is
 * also the descriptor of a kernel named max_group_size_<name>; the backend still reads that
 * name, where the symbol is smaller than a descriptor. */
#define PORTA_CPU_KERNEL_MAX_GROUP_PREFIX "porta_cpu_max_group_size_"
#define PORTA_CPU_KERNEL_OLD_MAX_GROUP_PREFIX "porta_cpu_kernel_max_group_size_"
#define PORTA_CPU_KERNEL_MAX_PARAMS 64
/* Beside each kernel, in every build but SPIR-V (whose module carries the parameter types
 * itself): const char porta_kernel_signature_<name>[], the parameter list as PORTA_KERNEL was
 * given it ("uint32_t n, float a, const float* x, float* y"), which names the parameters in
 * launch errors. A CUDA or HIP image adds porta_kernel_param_sizes_<name>, a uint32_t count
 * followed by each parameter's size in bytes (a CPU kernel's descriptor has them). Backends read
 * both through the driver (cuModuleGetGlobal) or the symbol table, and porta_kernel_launch checks
 * launch arguments against them. */
#define PORTA_KERNEL_SIGNATURE_PREFIX "porta_kernel_signature_"
#define PORTA_KERNEL_PARAM_SIZES_PREFIX "porta_kernel_param_sizes_"

/* The work-group being run. */
typedef struct porta_cpu_work_group_s {
  uint32_t group_id[3];   /* this group's index in the grid */
  uint32_t grid[3];       /* groups per dimension */
  uint32_t group_size[3]; /* work-items per group per dimension */
  void* shared_memory;    /* the group's dynamic shared memory, 64-byte aligned, or NULL */
  uint32_t shared_memory_bytes;
} porta_cpu_work_group_t;

/* args[i] points to the i-th parameter's value. */
typedef void (*porta_cpu_group_fn)(const porta_cpu_work_group_t* group, void* const* args);

typedef struct porta_cpu_kernel_s {
  size_t struct_size;       /* sizeof(porta_cpu_kernel_t) */
  uint32_t abi_version;     /* PORTA_CPU_KERNEL_ABI_VERSION */
  uint32_t param_count;     /* at most PORTA_CPU_KERNEL_MAX_PARAMS */
  const uint32_t* param_sizes; /* bytes of each parameter */
  porta_cpu_group_fn run_group;
} porta_cpu_kernel_t;

#ifdef __cplusplus
} /* extern "C" */
#endif


/* ------------------------------------------------------------------------------------------------
 * The dialect (C++17 and later; CUDA and HIP compilers included).
 * ---------------------------------------------------------------------------------------------- */
#ifdef __cplusplus

#include <stdint.h>

#include <cstddef>
#include <type_traits>
#include <utility>

#if defined(__SPIRV__) && defined(__HIP__)
#define PORTA_TARGET_SPIRV 1 /* clang -x hip --offload=spirv64: see the SPIR-V section below */
#elif defined(__HIPCC__)
#include <hip/hip_runtime.h>
#define PORTA_TARGET_HIP 1
#elif defined(__CUDACC__)
#define PORTA_TARGET_CUDA 1
#elif defined(PORTA_SIMT)
#define PORTA_TARGET_SIMT 1 /* the GPU model on the host: see "SIMT on the host" below */
#else
#define PORTA_TARGET_CPU 1
#endif
#ifndef PORTA_TARGET_SIMT
#define PORTA_TARGET_SIMT 0
#endif
#ifndef PORTA_TARGET_HIP
#define PORTA_TARGET_HIP 0
#endif
#ifndef PORTA_TARGET_CUDA
#define PORTA_TARGET_CUDA 0
#endif
#ifndef PORTA_TARGET_CPU
#define PORTA_TARGET_CPU 0
#endif
#ifndef PORTA_TARGET_SPIRV
#define PORTA_TARGET_SPIRV 0
#endif
#define PORTA_TARGET_GPU (PORTA_TARGET_CUDA || PORTA_TARGET_HIP || PORTA_TARGET_SPIRV)

/* ------------------------------------------------------------------------------------------------
 * SPIR-V (OpenCL, Level Zero). clang compiles the GPU branch as HIP for spirv64 without any HIP
 * headers (-nogpuinc), so this section supplies what hip_runtime.h would: the attribute
 * keywords, CUDA's built-in index variables, __syncthreads, atomicAdd and the float math the
 * kernels call. Work-item ids and barriers are SPIR-V built-ins, which llvm-spirv translates;
 * math goes through clang's builtins (glibc's <math.h> declares host functions only). The
 * build's LLVM pass step (cmake/spirv/) turns the dynamic shared memory array into a trailing
 * work-group pointer argument, which the backends size at launch.
 * ---------------------------------------------------------------------------------------------- */
#if PORTA_TARGET_SPIRV
#define __host__ __attribute__((host))
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))

extern "C++" __device__ size_t __spirv_BuiltInLocalInvocationId(int);
extern "C++" __device__ size_t __spirv_BuiltInWorkgroupId(int);
extern "C++" __device__ size_t __spirv_BuiltInWorkgroupSize(int);
extern "C++" __device__ size_t __spirv_BuiltInNumWorkgroups(int);
extern "C++" __device__ void __spirv_ControlBarrier(int execution, int memory, int semantics);

namespace porta::spirv {
enum : int { kScopeWorkgroup = 2 };
/* Sequentially consistent, ordering work-group and global memory: what __syncthreads orders. */
enum : int { kBarrierSemantics = 0x10 | 0x100 | 0x200 };

template <size_t (*Builtin)(int)>
struct index3 {
  template <int D>
  struct component {
    __device__ __forceinline__ operator uint32_t() const { return uint32_t(Builtin(D)); }
  };
  component<0> x;
  component<1> y;
  component<2> z;
};

template <class T>
using global_ptr = __attribute__((address_space(1))) T*;
}  // namespace porta::spirv

/* CUDA's names, as the HIP branch has them from hip_runtime.h. */
static constexpr porta::spirv::index3<__spirv_BuiltInLocalInvocationId> threadIdx{};
static constexpr porta::spirv::index3<__spirv_BuiltInWorkgroupId> blockIdx{};
static constexpr porta::spirv::index3<__spirv_BuiltInWorkgroupSize> blockDim{};
static constexpr porta::spirv::index3<__spirv_BuiltInNumWorkgroups> gridDim{};

static __device__ __forceinline__ void __syncthreads() {
  __spirv_ControlBarrier(porta::spirv::kScopeWorkgroup, porta::spirv::kScopeWorkgroup,
                         porta::spirv::kBarrierSemantics);
}

/* Atomics on global memory only (PoCL has no atomics on generic pointers), as SPIR-V built-ins:
 * clang's __atomic builtins become library calls on this target. Float addition is a
 * compare-exchange loop. */
extern "C++" __device__ uint32_t __spirv_AtomicIAdd(porta::spirv::global_ptr<uint32_t>, int, int,
                                                    uint32_t);
extern "C++" __device__ uint32_t __spirv_AtomicCompareExchange(porta::spirv::global_ptr<uint32_t>,
                                                               int, int, int, uint32_t, uint32_t);
extern "C++" __device__ uint32_t __spirv_AtomicLoad(porta::spirv::global_ptr<uint32_t>, int, int);
namespace porta::spirv {
enum : int { kScopeDevice = 1, kRelaxed = 0 };
}
static __device__ __forceinline__ uint32_t atomicAdd(uint32_t* address, uint32_t value) {
  return __spirv_AtomicIAdd((porta::spirv::global_ptr<uint32_t>)address, porta::spirv::kScopeDevice,
                            porta::spirv::kRelaxed, value);
}
static __device__ __forceinline__ int atomicAdd(int* address, int value) {
  return int(atomicAdd(reinterpret_cast<uint32_t*>(address), uint32_t(value)));
}
static __device__ __forceinline__ float atomicAdd(float* address, float value) {
  using namespace porta::spirv;
  auto word = (global_ptr<uint32_t>)address;
  uint32_t expected = __spirv_AtomicLoad(word, kScopeDevice, kRelaxed);
  for (;;) {
    const uint32_t desired =
        __builtin_bit_cast(uint32_t, __builtin_bit_cast(float, expected) + value);
    const uint32_t seen =
        __spirv_AtomicCompareExchange(word, kScopeDevice, kRelaxed, kRelaxed, desired, expected);
    if (seen == expected) return __builtin_bit_cast(float, seen);
    expected = seen;
  }
}

/* Device overloads of the <math.h> functions kernels call (host and device overloads coexist in
 * HIP); each is an LLVM intrinsic or an OpenCL built-in after translation. */
#define PORTA_SPIRV_MATH1(fn) \
  static __device__ __forceinline__ float fn(float x) { return __builtin_##fn(x); }
#define PORTA_SPIRV_MATH2(fn) \
  static __device__ __forceinline__ float fn(float x, float y) { return __builtin_##fn(x, y); }
PORTA_SPIRV_MATH1(expf)
PORTA_SPIRV_MATH1(exp2f)
PORTA_SPIRV_MATH1(logf)
PORTA_SPIRV_MATH1(log2f)
PORTA_SPIRV_MATH1(sqrtf)
PORTA_SPIRV_MATH1(fabsf)
PORTA_SPIRV_MATH1(floorf)
PORTA_SPIRV_MATH1(ceilf)
PORTA_SPIRV_MATH2(fminf)
PORTA_SPIRV_MATH2(fmaxf)
PORTA_SPIRV_MATH2(powf)
static __device__ __forceinline__ float fmaf(float x, float y, float z) {
  return __builtin_fmaf(x, y, z);
}
#undef PORTA_SPIRV_MATH1
#undef PORTA_SPIRV_MATH2
#endif /* PORTA_TARGET_SPIRV */
/* ---- end of the SPIR-V section ------------------------------------------------------------- */

#if PORTA_TARGET_GPU
/* A function callable from kernels. */
#define PORTA_DEVICE_FUNCTION __device__ __forceinline__
/* Memory shared by a work-group, declared in the kernel body's scope. */
#define PORTA_SHARED __shared__
#if PORTA_TARGET_SPIRV
#define PORTA_KERNEL_RECORD(name, ...)
#else
/* Device globals the backend copies out of a loaded image (see porta_kernel_signature_ above),
 * kept although no kernel reads them. */
#define PORTA_KERNEL_RECORD(name, ...)                                                          \
  extern "C" __device__ __attribute__((used)) const char porta_kernel_signature_##name[] =      \
      #__VA_ARGS__;                                                                             \
  extern "C" __device__ __attribute__((used))                                                   \
  const ::porta::detail::param_sizes_of<decltype(name)>::type porta_kernel_param_sizes_##name = \
      ::porta::detail::param_sizes_of<decltype(name)>::value;
#endif
#define PORTA_KERNEL(name, ...)                 \
  extern "C" __global__ void name(__VA_ARGS__); \
  PORTA_KERNEL_RECORD(name, __VA_ARGS__)        \
  extern "C" __global__ void name(__VA_ARGS__)
#else
#if PORTA_TARGET_SIMT
#define PORTA_DEVICE_FUNCTION inline
/* One instance per OS thread, and a thread runs one group at a time: per group, as on a GPU. */
#define PORTA_SHARED static thread_local
#else
#define PORTA_DEVICE_FUNCTION inline __attribute__((always_inline))
#define PORTA_SHARED
#endif
#define PORTA_KERNEL(name, ...)                                                                  \
  static void porta_kernel_body_##name(__VA_ARGS__);                                             \
  extern "C" __attribute__((visibility("default")))                                              \
  const porta_cpu_kernel_t porta_cpu_kernel_##name =                                             \
      ::porta::detail::cpu_kernel<&porta_kernel_body_##name>::value;                             \
  extern "C" __attribute__((visibility("default"))) const char porta_kernel_signature_##name[] = \
      #__VA_ARGS__;                                                                              \
  static void porta_kernel_body_##name(__VA_ARGS__)
#endif

/* PORTA_KERNEL_MAX_GROUP(name, max_items, params...): a kernel that is never launched with more
 * than max_items work-items per group (a constant). On a GPU the compiler then budgets registers
 * for that many (CUDA __launch_bounds__, AMD amdgpu_flat_work_group_size, whose default is 1024),
 * and porta_kernel_max_group_size reports it on every backend; a larger launch is refused. */
#if PORTA_TARGET_CUDA
/* At least one group per multiprocessor: with the group size alone ptxas may aim at more groups
 * and spill registers to fit them. */
#define PORTA_KERNEL_MAX_GROUP(name, max_items, ...)                            \
  extern "C" __global__ void __launch_bounds__(max_items, 1) name(__VA_ARGS__); \
  PORTA_KERNEL_RECORD(name, __VA_ARGS__)                                        \
  extern "C" __global__ void __launch_bounds__(max_items, 1) name(__VA_ARGS__)
#elif PORTA_TARGET_HIP
#define PORTA_KERNEL_MAX_GROUP(name, max_items, ...)                                          \
  extern "C" __global__                                                                       \
      __attribute__((amdgpu_flat_work_group_size(1, max_items))) void name(__VA_ARGS__);      \
  PORTA_KERNEL_RECORD(name, __VA_ARGS__)                                                      \
  extern "C" __global__ __attribute__((amdgpu_flat_work_group_size(1, max_items))) void name( \
      __VA_ARGS__)
#else
/* The CPU backend finds the limit beside the kernel's descriptor. */
#define PORTA_KERNEL_MAX_GROUP(name, max_items, ...)            \
  extern "C" __attribute__((visibility("default")))             \
  const uint32_t porta_cpu_max_group_size_##name = (max_items); \
  PORTA_KERNEL(name, __VA_ARGS__)
#endif

namespace porta {

enum class target { cpu, cuda, hip, spirv, simt };
#if PORTA_TARGET_CUDA
inline constexpr target current_target = target::cuda;
#elif PORTA_TARGET_SPIRV
inline constexpr target current_target = target::spirv;
#elif PORTA_TARGET_HIP
inline constexpr target current_target = target::hip;
#elif PORTA_TARGET_SIMT
inline constexpr target current_target = target::simt;
#else
inline constexpr target current_target = target::cpu;
#endif

#if PORTA_TARGET_GPU

namespace detail {
/* The record PORTA_KERNEL_RECORD emits: the parameter count, then each parameter's size. */
template <class F>
struct param_sizes_of;
template <class... P>
struct param_sizes_of<void(P...)> {
  struct type {
    uint32_t count;
    uint32_t sizes[sizeof...(P) + 1];
  };
  static constexpr type value = {sizeof...(P), {static_cast<uint32_t>(sizeof(P))..., 0}};
};
}  // namespace detail

PORTA_DEVICE_FUNCTION uint32_t group_id(int d) { return d == 0 ? blockIdx.x : d == 1 ? blockIdx.y : blockIdx.z; }
PORTA_DEVICE_FUNCTION uint32_t group_count(int d) { return d == 0 ? gridDim.x : d == 1 ? gridDim.y : gridDim.z; }
PORTA_DEVICE_FUNCTION uint32_t group_size(int d) { return d == 0 ? blockDim.x : d == 1 ? blockDim.y : blockDim.z; }

/* Runs f for this work-item, then waits for the whole group. f takes (x), (x, y) or (x, y, z). */
template <class F>
PORTA_DEVICE_FUNCTION void inner(F&& f) {
  if constexpr (std::is_invocable_v<F, uint32_t, uint32_t, uint32_t>) {
    f(threadIdx.x, threadIdx.y, threadIdx.z);
  } else if constexpr (std::is_invocable_v<F, uint32_t, uint32_t>) {
    f(threadIdx.x, threadIdx.y);
  } else {
    f(threadIdx.x);
  }
  __syncthreads();
}

/* The group's dynamic shared memory (porta_launch_config_t.shared_memory_bytes). */
template <class T>
PORTA_DEVICE_FUNCTION T* dynamic_shared_memory() {
  /* 64-byte aligned, as on the CPU (HIP's default alignment is 1). */
  extern __shared__ __attribute__((aligned(64))) unsigned char porta_dynamic_shared[];
  return reinterpret_cast<T*>(porta_dynamic_shared);
}

/* A value each work-item keeps across inner loops: a register on a GPU. */
template <class T, uint32_t MaxItems>
class exclusive {
 public:
  PORTA_DEVICE_FUNCTION T& operator()(uint32_t) { return value_; }

 private:
  T value_;
};

PORTA_DEVICE_FUNCTION float atomic_add(float* address, float value) { return atomicAdd(address, value); }

/* ------------------------------------------------------------------------------------------------
 * SIMT on the host (PORTA_TARGET_SIMT): the <lib>.cpu-simt.so and <lib>.cpu-racecheck.so builds
 * of porta_add_kernel_library, which the CPU backend loads when PORTA_CPU_MODE asks for them.
 * The GPU model, run on the host: every work-item of a group is a fiber running the whole body,
 * so values outside inner() are private to each item; inner() runs the item's pass and ends in a
 * real barrier (the fiber waits until every item of the group has reached it); PORTA_SHARED is one
 * instance per group. The runtime behind these calls (backends/cpu/simt/) is linked into each
 * such build; the racecheck build adds the checker that watches every access in a phase.
 * ---------------------------------------------------------------------------------------------- */
#elif PORTA_TARGET_SIMT

namespace detail {
extern "C" {
#define PORTA_SIMT_RUNTIME __attribute__((visibility("hidden")))
/* The group the calling fiber belongs to, and its work-item (x fastest). */
PORTA_SIMT_RUNTIME const porta_cpu_work_group_t* porta_simt_group(void);
PORTA_SIMT_RUNTIME uint32_t porta_simt_item(void);
/* Runs call(closure) as the item's pass of an inner loop, then waits at the group's barrier. */
PORTA_SIMT_RUNTIME void porta_simt_inner(void (*call)(void*), void* closure);
/* Runs body(args) once per work-item of group, each on its own fiber. */
PORTA_SIMT_RUNTIME void porta_simt_run_group(const porta_cpu_work_group_t* group,
                                             void* const* args, void (*body)(void* const*));
/* Declares [address, address + size) the item's own (porta::exclusive), or no longer (0). */
PORTA_SIMT_RUNTIME void porta_simt_private(uintptr_t address, size_t size, int keep);
PORTA_SIMT_RUNTIME float porta_simt_atomic_add(float* address, float value);
}  // extern "C"

template <auto Body>
struct cpu_kernel;

/* The same descriptor as the CPU's; run_group hands the body to the fibers, and each fiber copies
 * the arguments into its own parameters, as each GPU thread has its own. */
template <class... P, void (*Body)(P...)>
struct cpu_kernel<Body> {
  static constexpr uint32_t sizes[sizeof...(P) + 1] = {static_cast<uint32_t>(sizeof(P))..., 0};

  template <size_t... I>
  static void invoke(void* const* args, std::index_sequence<I...>) {
    Body(*static_cast<std::remove_cv_t<P>*>(args[I])...);
  }
  static void body(void* const* args) { invoke(args, std::index_sequence_for<P...>{}); }
  static void run(const porta_cpu_work_group_t* group, void* const* args) {
    porta_simt_run_group(group, args, &body);
  }
  static constexpr porta_cpu_kernel_t value = {sizeof(porta_cpu_kernel_t),
                                               PORTA_CPU_KERNEL_ABI_VERSION, sizeof...(P), sizes,
                                               &run};
};
}  // namespace detail

inline uint32_t group_id(int d) { return detail::porta_simt_group()->group_id[d]; }
inline uint32_t group_count(int d) { return detail::porta_simt_group()->grid[d]; }
inline uint32_t group_size(int d) { return detail::porta_simt_group()->group_size[d]; }

/* Runs f for this work-item, then waits for the whole group. */
template <class F>
inline void inner(F&& f) {
  const porta_cpu_work_group_t* group = detail::porta_simt_group();
  const uint32_t item = detail::porta_simt_item();
  const uint32_t nx = group->group_size[0], ny = group->group_size[1];
  const uint32_t x = item % nx, y = item / nx % ny, z = item / (nx * ny);
  auto pass = [&] {
    if constexpr (std::is_invocable_v<F, uint32_t, uint32_t, uint32_t>) {
      f(x, y, z);
    } else if constexpr (std::is_invocable_v<F, uint32_t, uint32_t>) {
      f(x, y);
    } else {
      f(x);
    }
  };
  detail::porta_simt_inner([](void* closure) { (*static_cast<decltype(pass)*>(closure))(); },
                           &pass);
}

template <class T>
inline T* dynamic_shared_memory() {
  return static_cast<T*>(detail::porta_simt_group()->shared_memory);
}

/* A value each work-item keeps across inner loops: its own, as a register on a GPU. */
template <class T, uint32_t MaxItems>
class exclusive {
 public:
  exclusive() { detail::porta_simt_private(reinterpret_cast<uintptr_t>(this), sizeof(*this), 1); }
  ~exclusive() { detail::porta_simt_private(reinterpret_cast<uintptr_t>(this), sizeof(*this), 0); }
  exclusive(const exclusive&) = delete;
  exclusive& operator=(const exclusive&) = delete;
  T& operator()(uint32_t) { return value_; }

 private:
  T value_;
};

inline float atomic_add(float* address, float value) {
  return detail::porta_simt_atomic_add(address, value);
}
/* ---- end of SIMT on the host ---------------------------------------------------------------- */

#else /* the CPU */

namespace detail {
/* The work-group the calling pool thread is running; set before each group's body. In static
 * TLS (initial-exec): a kernel library is dlopened, and its dynamic TLS would be allocated at a
 * thread's first kernel, where running out of memory makes the C library end the process. */
inline thread_local const porta_cpu_work_group_t* current_group
    __attribute__((tls_model("initial-exec"))) = nullptr;

template <auto Body>
struct cpu_kernel;

/* Builds a kernel's descriptor from its body's signature: the parameter sizes, and a run_group
 * that unpacks the copied arguments into typed parameters. */
template <class... P, void (*Body)(P...)>
struct cpu_kernel<Body> {
  static constexpr uint32_t sizes[sizeof...(P) + 1] = {static_cast<uint32_t>(sizeof(P))..., 0};

  template <size_t... I>
  static void invoke(void* const* args, std::index_sequence<I...>) {
    Body(*static_cast<std::remove_cv_t<P>*>(args[I])...);
  }
  static void run(const porta_cpu_work_group_t* group, void* const* args) {
    current_group = group;
    invoke(args, std::index_sequence_for<P...>{});
  }
  static constexpr porta_cpu_kernel_t value = {sizeof(porta_cpu_kernel_t),
                                               PORTA_CPU_KERNEL_ABI_VERSION, sizeof...(P), sizes,
                                               &run};
};
}  // namespace detail

PORTA_DEVICE_FUNCTION uint32_t group_id(int d) { return detail::current_group->group_id[d]; }
PORTA_DEVICE_FUNCTION uint32_t group_count(int d) { return detail::current_group->grid[d]; }
PORTA_DEVICE_FUNCTION uint32_t group_size(int d) { return detail::current_group->group_size[d]; }

/* Runs f for every work-item of the group, x fastest. The loop bounds are copied to locals so
 * that stores in f cannot alias them and the loop vectorises. */
template <class F>
PORTA_DEVICE_FUNCTION void inner(F&& f) {
  const uint32_t nx = detail::current_group->group_size[0];
  const uint32_t ny = detail::current_group->group_size[1];
  const uint32_t nz = detail::current_group->group_size[2];
  if constexpr (std::is_invocable_v<F, uint32_t, uint32_t, uint32_t>) {
    for (uint32_t z = 0; z < nz; ++z)
      for (uint32_t y = 0; y < ny; ++y)
        for (uint32_t x = 0; x < nx; ++x) f(x, y, z);
  } else if constexpr (std::is_invocable_v<F, uint32_t, uint32_t>) {
    for (uint32_t y = 0; y < ny; ++y)
      for (uint32_t x = 0; x < nx; ++x) f(x, y);
  } else {
    for (uint32_t x = 0; x < nx; ++x) f(x);
  }
}

template <class T>
PORTA_DEVICE_FUNCTION T* dynamic_shared_memory() {
  return static_cast<T*>(detail::current_group->shared_memory);
}

/* A value each work-item keeps across inner loops: one slot per item on the CPU. */
template <class T, uint32_t MaxItems>
class exclusive {
 public:
  PORTA_DEVICE_FUNCTION T& operator()(uint32_t item) { return values_[item]; }

 private:
  T values_[MaxItems];
};

PORTA_DEVICE_FUNCTION float atomic_add(float* address, float value) {
  float expected, desired;
  __atomic_load(address, &expected, __ATOMIC_RELAXED);
  do {
    desired = expected + value;
  } while (!__atomic_compare_exchange(address, &expected, &desired, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED));
  return expected;
}

#endif

}  // namespace porta

#endif /* __cplusplus */

#endif /* PORTA_PORTA_KERNEL_H_ */
