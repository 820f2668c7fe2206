/* The allocation-failure injector's controls (fault_injector.c). */
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Fails the fail_at-th allocation from now on (1 = the next one), and every one after it if
 * persistent; counts from zero again. */
void porta_fault_arm(long fail_at, int persistent);
/* Fails every allocation of at least size bytes from now on (the others succeed); counts from
 * zero again. */
void porta_fault_arm_size(size_t size);
/* Lets every allocation through again. */
void porta_fault_disarm(void);
/* Allocations seen, and failed, since the last porta_fault_arm. */
long porta_fault_calls(void);
long porta_fault_failed(void);

#ifdef __cplusplus
}
#endif
