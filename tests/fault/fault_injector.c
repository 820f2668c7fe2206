/* An allocation-failure injector: malloc, calloc, realloc, the aligned allocators and mmap, made to
 * fail on the n-th call (and, if persistent, on every call after it) counted from when it was
 * armed, or on every call of at least a given size, in every thread. Preload it into any program
 * (LD_PRELOAD) and arm it from the environment, or link it into a test and arm it around the calls
 * under test:
 *
 *   PORTA_FAULT_AT=n          fail the n-th allocation after start-up (1 = the first)
 *   PORTA_FAULT_PERSISTENT=1  and every one after it
 *
 * C++'s operator new allocates through malloc, so it fails too (std::bad_alloc). A failed call
 * returns NULL (MAP_FAILED for mmap) with errno ENOMEM, as the real ones do. */
#define _GNU_SOURCE
#include "fault_injector.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* glibc's own allocator, under the names it exports for exactly this use. */
extern void* __libc_malloc(size_t size);
extern void* __libc_calloc(size_t count, size_t size);
extern void* __libc_realloc(void* ptr, size_t size);
extern void* __libc_memalign(size_t alignment, size_t size);

static atomic_long g_fail_at; /* 0: disarmed */
static atomic_int g_persistent;
static atomic_long g_calls;  /* allocations since armed */
static atomic_long g_failed; /* allocations failed since armed */
static atomic_size_t g_fail_from_size; /* 0: off; else every allocation this large fails */

void porta_fault_arm(long fail_at, int persistent) {
  atomic_store(&g_fail_at, 0);
  atomic_store(&g_fail_from_size, 0);
  atomic_store(&g_calls, 0);
  atomic_store(&g_failed, 0);
  atomic_store(&g_persistent, persistent);
  atomic_store(&g_fail_at, fail_at);
}

void porta_fault_arm_size(size_t size) {
  atomic_store(&g_fail_at, 0);
  atomic_store(&g_calls, 0);
  atomic_store(&g_failed, 0);
  atomic_store(&g_fail_from_size, size);
}

void porta_fault_disarm(void) {
  atomic_store(&g_fail_at, 0);
  atomic_store(&g_fail_from_size, 0);
}

long porta_fault_calls(void) { return atomic_load(&g_calls); }

long porta_fault_failed(void) { return atomic_load(&g_failed); }

/* Whether this allocation, of size bytes, is to fail. */
static int should_fail(size_t size) {
  const long fail_at = atomic_load_explicit(&g_fail_at, memory_order_relaxed);
  const size_t fail_from_size = atomic_load_explicit(&g_fail_from_size, memory_order_relaxed);
  if (fail_at <= 0 && fail_from_size == 0) return 0;
  const long call = atomic_fetch_add(&g_calls, 1) + 1;
  if ((fail_at > 0 && (call == fail_at || (call > fail_at && atomic_load(&g_persistent)))) ||
      (fail_from_size > 0 && size >= fail_from_size)) {
    atomic_fetch_add(&g_failed, 1);
    errno = ENOMEM;
    return 1;
  }
  return 0;
}

__attribute__((constructor)) static void arm_from_environment(void) {
  const char* at = getenv("PORTA_FAULT_AT");
  if (!at || !*at) return;
  const char* persistent = getenv("PORTA_FAULT_PERSISTENT");
  porta_fault_arm(strtol(at, NULL, 10), persistent && *persistent == '1');
}

void* malloc(size_t size) { return should_fail(size) ? NULL : __libc_malloc(size); }

void* calloc(size_t count, size_t size) {
  size_t bytes;
  if (__builtin_mul_overflow(count, size, &bytes)) bytes = SIZE_MAX;
  return should_fail(bytes) ? NULL : __libc_calloc(count, size);
}

void* realloc(void* ptr, size_t size) {
  /* realloc(p, 0) frees: that is not an allocation that can fail. */
  if (!(ptr && size == 0) && should_fail(size)) return NULL;
  return __libc_realloc(ptr, size);
}

void* memalign(size_t alignment, size_t size) {
  return should_fail(size) ? NULL : __libc_memalign(alignment, size);
}

void* aligned_alloc(size_t alignment, size_t size) {
  return should_fail(size) ? NULL : __libc_memalign(alignment, size);
}

int posix_memalign(void** out, size_t alignment, size_t size) {
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  if (should_fail(size)) return ENOMEM;
  void* ptr = __libc_memalign(alignment, size);
  if (!ptr) return ENOMEM;
  *out = ptr;
  return 0;
}

void* valloc(size_t size) {
  return should_fail(size) ? NULL : __libc_memalign((size_t)sysconf(_SC_PAGESIZE), size);
}

/* Through the system call, not glibc's mmap: nothing here may reach the symbol being replaced.
 * mmap64 is the same function on 64-bit targets. */
void* mmap(void* address, size_t length, int protection, int flags, int fd, off_t offset) {
  if (should_fail(length)) return MAP_FAILED;
  long result = syscall(SYS_mmap, address, length, protection, flags, fd, offset);
  return (void*)result;
}

void* mmap64(void* address, size_t length, int protection, int flags, int fd, off_t offset)
    __attribute__((alias("mmap")));
