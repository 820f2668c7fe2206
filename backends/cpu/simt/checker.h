/* What a racecheck build of a kernel library (<lib>.cpu-racecheck.so) tells the CPU backend: it
 * exports porta_cpu_checker, and after each work-group the backend takes the hazards the checker
 * found in it on the calling thread. Plain C: shared by the backend and the SIMT runtime, which is
 * linked into each kernel library. */
#ifndef PORTA_CPU_SIMT_CHECKER_H_
#define PORTA_CPU_SIMT_CHECKER_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PORTA_CPU_CHECKER_SYMBOL "porta_cpu_checker"

typedef enum porta_cpu_hazard_kind {
  PORTA_CPU_HAZARD_WRITE_WRITE = 1, /* two items wrote the same byte between the same barriers */
  PORTA_CPU_HAZARD_READ_WRITE = 2,  /* one read what another wrote between the same barriers */
  PORTA_CPU_HAZARD_DIVERGENT_BARRIER = 3, /* items of the group reached different barriers */
  PORTA_CPU_HAZARD_ITEM_VALUE =
      4 /* a value outside inner() differed between items, then was read */
} porta_cpu_hazard_kind_t;

typedef enum porta_cpu_memory_space {
  PORTA_CPU_SPACE_GLOBAL = 0,         /* address: the address itself */
  PORTA_CPU_SPACE_SHARED = 1,         /* address: offset in the module's PORTA_SHARED storage */
  PORTA_CPU_SPACE_DYNAMIC_SHARED = 2, /* address: offset in the group's dynamic shared memory */
  PORTA_CPU_SPACE_PRIVATE = 3         /* address: offset below the top of the item's stack */
} porta_cpu_memory_space_t;

typedef struct porta_cpu_hazard_s {
  porta_cpu_hazard_kind_t kind;
  porta_cpu_memory_space_t space;
  uint32_t phase;    /* barriers the group had passed: inner() calls completed */
  uint32_t items[2]; /* the two work-items, flattened x fastest */
  uint32_t size;     /* bytes of the second access */
  uint64_t address;  /* see porta_cpu_memory_space_t */
  /* Code addresses: of the first and the second access (a write, then the read, for
   * ITEM_VALUE); for DIVERGENT_BARRIER, the barrier each item reached, 0 for the kernel's end. */
  uintptr_t sites[2];
} porta_cpu_hazard_t;

typedef struct porta_cpu_checker_s {
  size_t struct_size;
  /* Moves up to capacity of the hazards found on the calling thread since its last take into
   * out, one per kind and pair of sites per group, and returns how many it moved. */
  uint32_t (*take)(porta_cpu_hazard_t* out, uint32_t capacity);
} porta_cpu_checker_t;

/* What every SIMT and racecheck build exports: after each work-group the backend calls it on the
 * calling thread, and a message (a static string) means the group could not be run, or checked,
 * for want of memory (the fibers' stacks, the checker's shadow); NULL means it was. */
#define PORTA_SIMT_FAILURE_SYMBOL "porta_simt_take_failure"
typedef const char* (*porta_simt_take_failure_fn)(void);
const char* porta_simt_take_failure(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PORTA_CPU_SIMT_CHECKER_H_ */
