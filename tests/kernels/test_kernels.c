/*
 * test_kernels.c: the CPU code object the test suites load (libporta_test_kernels.so).
 *
 * Each kernel is a porta_cpu_kernel_t descriptor (see porta_kernel.h) whose run_group runs one
 * work-group: an outer call per group, inner loops over the group's work-items. A barrier is the
 * boundary between two consecutive inner loops, as in the portable dialect.
 *
 * Kernels:
 *   saxpy(int n, float a, const float* x, float* y)   y[i] = a * x[i] + y[i], 1D, guarded i < n
 *   fill_index(uint32_t* out)                         out[g] = g, g the flattened global 3D index
 *   count_items(uint32_t* counts)                     atomically counts[g] += 1 (visited once?)
 *   shared_reverse(float* data)                       reverses each group's block through
 *                                                     dynamic shared memory
 *   spin(int64_t iterations, float* out)              a deliberately slow dependency chain
 *   noop()                                            no parameters, does nothing
 *   variant(uint32_t* out)                            *out = TEST_KERNELS_VARIANT, to tell
 *                                                     builds of this file apart
 *   limited()                                         noop's body, at most 64 items per group
 *   max_group_size_noop()                             noop's body, under a name whose
 *                                                     descriptor's symbol reads as noop's limit
 * saxpy alone records its parameter list (porta_kernel_signature_saxpy).
 */
#include <porta/porta_kernel.h>
#include <stdint.h>

/* The build hides every symbol by default; the descriptors are the module's interface. */
#define TEST_KERNEL_EXPORT __attribute__((visibility("default")))

#define DEFINE_KERNEL(name, params)                                       \
  TEST_KERNEL_EXPORT const porta_cpu_kernel_t porta_cpu_kernel_##name = { \
      sizeof(porta_cpu_kernel_t), PORTA_CPU_KERNEL_ABI_VERSION,           \
      (uint32_t)(sizeof(params) / sizeof(params[0])), params, name##_group}

/* Global coordinates of a work-item of the group, and the flattened global index. */
static uint64_t flat_global_index(const porta_cpu_work_group_t* g, uint32_t lx, uint32_t ly,
                                  uint32_t lz) {
  const uint64_t width = (uint64_t)g->grid[0] * g->group_size[0];
  const uint64_t height = (uint64_t)g->grid[1] * g->group_size[1];
  const uint64_t gx = (uint64_t)g->group_id[0] * g->group_size[0] + lx;
  const uint64_t gy = (uint64_t)g->group_id[1] * g->group_size[1] + ly;
  const uint64_t gz = (uint64_t)g->group_id[2] * g->group_size[2] + lz;
  return (gz * height + gy) * width + gx;
}

/* ---- saxpy ---------------------------------------------------------------------------------- */

static void saxpy_group(const porta_cpu_work_group_t* g, void* const* args) {
  const int n = *(const int*)args[0];
  const float a = *(const float*)args[1];
  const float* x = *(const float* const*)args[2];
  float* y = *(float* const*)args[3];
  const int64_t base = (int64_t)g->group_id[0] * g->group_size[0];
  for (uint32_t item = 0; item < g->group_size[0]; ++item) {
    const int64_t i = base + item;
    if (i < n) y[i] = a * x[i] + y[i];
  }
}
static const uint32_t saxpy_params[] = {sizeof(int), sizeof(float), sizeof(float*), sizeof(float*)};
DEFINE_KERNEL(saxpy, saxpy_params);
/* Names saxpy's parameters in launch errors, as PORTA_KERNEL records them; the other kernels
 * record their sizes only. */
TEST_KERNEL_EXPORT const char porta_kernel_signature_saxpy[] =
    "int n, float a, const float* x, float* y";

/* ---- fill_index ----------------------------------------------------------------------------- */

static void fill_index_group(const porta_cpu_work_group_t* g, void* const* args) {
  uint32_t* out = *(uint32_t* const*)args[0];
  for (uint32_t z = 0; z < g->group_size[2]; ++z)
    for (uint32_t y = 0; y < g->group_size[1]; ++y)
      for (uint32_t x = 0; x < g->group_size[0]; ++x) {
        const uint64_t index = flat_global_index(g, x, y, z);
        out[index] = (uint32_t)index;
      }
}
static const uint32_t fill_index_params[] = {sizeof(uint32_t*)};
DEFINE_KERNEL(fill_index, fill_index_params);

/* ---- count_items ---------------------------------------------------------------------------- */

/* Atomic, so a group run twice (or two groups mapped onto the same items) shows as a count of 2
 * rather than as a data race. */
static void count_items_group(const porta_cpu_work_group_t* g, void* const* args) {
  uint32_t* counts = *(uint32_t* const*)args[0];
  for (uint32_t z = 0; z < g->group_size[2]; ++z)
    for (uint32_t y = 0; y < g->group_size[1]; ++y)
      for (uint32_t x = 0; x < g->group_size[0]; ++x)
        __atomic_fetch_add(&counts[flat_global_index(g, x, y, z)], 1u, __ATOMIC_RELAXED);
}
static const uint32_t count_items_params[] = {sizeof(uint32_t*)};
DEFINE_KERNEL(count_items, count_items_params);

/* ---- shared_reverse ------------------------------------------------------------------------- */

/* 1D. The launch provides group_size[0] * sizeof(float) bytes of dynamic shared memory; with less,
 * the kernel leaves data untouched, which the test sees as a failure. */
static void shared_reverse_group(const porta_cpu_work_group_t* g, void* const* args) {
  float* data = *(float* const*)args[0];
  const uint32_t n = g->group_size[0];
  float* tile = (float*)g->shared_memory;
  if (tile == NULL || g->shared_memory_bytes < n * sizeof(float)) return;
  float* block = data + (uint64_t)g->group_id[0] * n;
  for (uint32_t item = 0; item < n; ++item) tile[item] = block[item];
  /* barrier */
  for (uint32_t item = 0; item < n; ++item) block[item] = tile[n - 1 - item];
}
static const uint32_t shared_reverse_params[] = {sizeof(float*)};
DEFINE_KERNEL(shared_reverse, shared_reverse_params);

/* ---- spin ----------------------------------------------------------------------------------- */

/* A serial floating-point dependency chain: each step needs the previous result, so neither the
 * compiler (no -ffast-math) nor the CPU can shorten it. Each work-item writes its result, so the
 * loop cannot be removed either. */
static void spin_group(const porta_cpu_work_group_t* g, void* const* args) {
  const int64_t iterations = *(const int64_t*)args[0];
  float* out = *(float* const*)args[1];
  const uint64_t base = (uint64_t)g->group_id[0] * g->group_size[0];
  for (uint32_t item = 0; item < g->group_size[0]; ++item) {
    float v = (float)item;
    for (int64_t k = 0; k < iterations; ++k) v = v * 0.999999f + 1.0f;
    out[base + item] = v;
  }
}
static const uint32_t spin_params[] = {sizeof(int64_t), sizeof(float*)};
DEFINE_KERNEL(spin, spin_params);

/* ---- noop ----------------------------------------------------------------------------------- */

static void noop_group(const porta_cpu_work_group_t* g, void* const* args) {
  (void)g;
  (void)args;
}
TEST_KERNEL_EXPORT const porta_cpu_kernel_t porta_cpu_kernel_noop = {
    sizeof(porta_cpu_kernel_t), PORTA_CPU_KERNEL_ABI_VERSION, 0, NULL, noop_group};

/* ---- variant -------------------------------------------------------------------------------- */

/* The build defines TEST_KERNELS_VARIANT to tell its copies apart (the test of porta_module_load
 * picking a kernel library's build by suffix). */
#ifndef TEST_KERNELS_VARIANT
#define TEST_KERNELS_VARIANT 0
#endif

static void variant_group(const porta_cpu_work_group_t* g, void* const* args) {
  uint32_t* out = *(uint32_t* const*)args[0];
  if (g->group_id[0] == 0 && g->group_id[1] == 0 && g->group_id[2] == 0)
    *out = TEST_KERNELS_VARIANT;
}
static const uint32_t variant_params[] = {sizeof(uint32_t*)};
DEFINE_KERNEL(variant, variant_params);

/* ---- names that read as group limits -------------------------------------------------------- */

/* porta_cpu_kernel_max_group_size_<name> was a kernel's group limit in modules built before
 * PORTA_CPU_KERNEL_MAX_GROUP_PREFIX, and is also the descriptor of a kernel named
 * max_group_size_<name>: here the latter, which noop must not take for its limit. */
TEST_KERNEL_EXPORT const porta_cpu_kernel_t porta_cpu_kernel_limited = {
    sizeof(porta_cpu_kernel_t), PORTA_CPU_KERNEL_ABI_VERSION, 0, NULL, noop_group};
TEST_KERNEL_EXPORT const uint32_t porta_cpu_max_group_size_limited = 64;
TEST_KERNEL_EXPORT const porta_cpu_kernel_t porta_cpu_kernel_max_group_size_noop = {
    sizeof(porta_cpu_kernel_t), PORTA_CPU_KERNEL_ABI_VERSION, 0, NULL, noop_group};
