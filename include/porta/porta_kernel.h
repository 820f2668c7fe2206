/*
 * porta_kernel.h: what a kernel looks like to the backends.
 *
 * CPU code objects. A CPU module is a shared object. Each kernel in it is described by an
 * exported constant
 *
 *     const porta_cpu_kernel_t porta_cpu_kernel_<name>;
 *
 * whose run_group runs one work-group: every work-item of it, with barriers honoured, since the
 * CPU backend calls it once per group from its thread pool, groups in any order and in parallel.
 * param_sizes let the backend copy the launch arguments at launch time, as a GPU driver does.
 * Plain C, so a module can be written in C, C++ or anything that exports C symbols.
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
#define PORTA_CPU_KERNEL_MAX_PARAMS 64

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

#endif /* PORTA_PORTA_KERNEL_H_ */
