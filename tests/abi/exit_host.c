/*
 * exit_host.c: a host that leaves Porta to the end of the process, as a C++ wrapper's static
 * objects or an atexit handler do.
 *
 *   porta-exit-host
 *
 * Its atexit handler, registered before the first Porta call (so it runs after the exit-time
 * destructors of everything libporta made), shuts Porta down with an allocation still live, which
 * is logged; then releases what it held before, which must be refused as stale without starting
 * Porta again (no thread appears). Exit 0 on success, 1 on any failure; a crash is a failure.
 */
#include <dirent.h>
#include <porta/porta.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void* memory;
static porta_stream_t stream;

static int threads(void) {
  DIR* tasks = opendir("/proc/self/task");
  if (!tasks) return -1;
  int count = 0;
  for (struct dirent* entry; (entry = readdir(tasks));) count += entry->d_name[0] != '.';
  closedir(tasks);
  return count;
}

static int expect(porta_status_t got, porta_status_t wanted, const char* what) {
  if (got == wanted) return 1;
  fprintf(stderr, "%s: %s, expected %s: %s\n", what, porta_status_name(got),
          porta_status_name(wanted), porta_last_error_message());
  return 0;
}

/* Runs porta_shutdown with stderr caught in a file; whether it logged the live allocation. */
static int shutdown_logs_live_allocation(void) {
  FILE* caught = tmpfile();
  const int saved = dup(2);
  if (!caught || saved < 0 || dup2(fileno(caught), 2) < 0) return 0;
  const porta_status_t status = porta_shutdown();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  if (!expect(status, PORTA_SUCCESS, "porta_shutdown at exit")) return 0;
  char line[512];
  int logged = 0;
  rewind(caught);
  while (fgets(line, sizeof line, caught)) logged |= strstr(line, "live allocation") != NULL;
  fclose(caught);
  if (!logged) fprintf(stderr, "porta_shutdown did not log the live allocation\n");
  return logged;
}

static void at_exit(void) {
  int ok = shutdown_logs_live_allocation();
  const int before = threads();
  ok &= expect(porta_memory_free(memory), PORTA_ERROR_INVALID_ARGUMENT, "porta_memory_free");
  ok &= expect(porta_stream_destroy(stream), PORTA_ERROR_INVALID_HANDLE, "porta_stream_destroy");
  ok &= expect(porta_memory_free(NULL), PORTA_SUCCESS, "porta_memory_free(NULL)");
  const int after = threads();
  if (before != after) {
    fprintf(stderr, "releasing stale objects started Porta again: %d threads, then %d\n", before,
            after);
    ok = 0;
  }
  fflush(stderr);
  _exit(ok ? 0 : 1);
}

int main(void) {
  if (atexit(at_exit) != 0) return 1;
  if (!expect(porta_init(NULL), PORTA_SUCCESS, "porta_init") ||
      !expect(porta_memory_alloc(0, 4096, &memory), PORTA_SUCCESS, "porta_memory_alloc") ||
      !expect(porta_stream_create(0, &stream), PORTA_SUCCESS, "porta_stream_create")) {
    return 1;
  }
  return 0;  // memory and stream left live, for at_exit
}
