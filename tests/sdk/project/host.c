/*
 * host.c: a C11 host of the project, with no link-time dependency on libporta.
 *
 *   example_host <libporta.so.0> <folder of the project's kernel library and op plugin>
 *
 * It opens the installed libporta, resolves the calls it needs by name, initialises with the
 * project's folder first on the plugin path and its op plugin selected (PORTA_OPS=example) (the backend and
 * CPU mode from PORTA_BACKEND and PORTA_CPU_MODE), checks the backend came from libporta's own
 * folder, runs the project's scale_add kernel and checks every result.
 * On the CPU backend it then checks the loader report names the project's op plugin as the one
 * serving porta_relu_forward and calls that op through libporta. Exit 0 on success, 77 when the
 * backend is unavailable here (the reason on stderr), 1 on any other failure.
 */
#include <dlfcn.h>
#include <libgen.h>
#include <porta/porta.h>
#include <porta/porta_ops.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PORTA_CALLS(X)         \
  X(porta_init)                \
  X(porta_shutdown)            \
  X(porta_status_name)         \
  X(porta_last_error_message)  \
  X(porta_backend_selected)    \
  X(porta_loader_report_count) \
  X(porta_loader_report_get)   \
  X(porta_device_default)      \
  X(porta_memory_alloc)        \
  X(porta_memory_free)         \
  X(porta_memcpy)              \
  X(porta_stream_create)       \
  X(porta_stream_destroy)      \
  X(porta_stream_synchronize)  \
  X(porta_module_load)         \
  X(porta_module_unload)       \
  X(porta_kernel_get)          \
  X(porta_kernel_launch)       \
  X(porta_relu_forward)

static struct {
#define DECLARE(name) __typeof__(&name) name;
  PORTA_CALLS(DECLARE)
#undef DECLARE
} api;

static int failed(const char* what, porta_status_t status) {
  fprintf(stderr, "example_host: %s failed: %s: %s\n", what, api.porta_status_name(status),
          api.porta_last_error_message());
  return 1;
}

#define CALL(expr)                                               \
  do {                                                           \
    porta_status_t status_ = (expr);                             \
    if (status_ != PORTA_SUCCESS) return failed(#expr, status_); \
  } while (0)

enum { kN = 1000 };

/* Whether path names a file directly in folder. */
static int in_folder(const char* path, const char* folder) {
  const size_t length = strlen(folder);
  return strncmp(path, folder, length) == 0 && path[length] == '/' &&
         strchr(path + length + 1, '/') == NULL;
}

/* The loader report's row of the named plugin of this kind, or 1 when there is none. */
static int find_row(const char* name, porta_plugin_kind_t kind, porta_plugin_report_t* row) {
  size_t count = 0;
  CALL(api.porta_loader_report_count(&count));
  for (size_t i = 0; i < count; ++i) {
    memset(row, 0, sizeof(*row));
    row->struct_size = sizeof(*row);
    CALL(api.porta_loader_report_get(i, row));
    if (row->kind == kind && strcmp(row->name, name) == 0) return 0;
  }
  fprintf(stderr, "example_host: no loader report row for %s\n", name);
  return 1;
}

/* y = 2 x + y on small integers: every result is exact in float. */
static int run_kernel(porta_device_t device, porta_stream_t stream, const char* library) {
  static float x[kN], y[kN], result[kN];
  for (int i = 0; i < kN; ++i) {
    x[i] = (float)(i % 50);
    y[i] = (float)(i % 3);
  }
  void* dx = NULL;
  void* dy = NULL;
  porta_module_t module = NULL;
  porta_kernel_t scale_add = NULL;
  CALL(api.porta_memory_alloc(device, sizeof(x), &dx));
  CALL(api.porta_memory_alloc(device, sizeof(y), &dy));
  CALL(api.porta_memcpy(dx, x, sizeof(x)));
  CALL(api.porta_memcpy(dy, y, sizeof(y)));
  CALL(api.porta_module_load(device, library, &module));
  CALL(api.porta_kernel_get(module, "scale_add", &scale_add));
  unsigned n = kN;
  float a = 2.0f;
  porta_launch_config_t config;
  memset(&config, 0, sizeof(config));
  config.struct_size = sizeof(config);
  config.grid[0] = (kN + 63) / 64;
  config.grid[1] = config.grid[2] = 1;
  config.group[0] = 64;
  config.group[1] = config.group[2] = 1;
  void* args[] = {&n, &a, &dx, &dy};
  CALL(api.porta_kernel_launch(scale_add, &config, args, stream));
  CALL(api.porta_stream_synchronize(stream));
  CALL(api.porta_memcpy(result, dy, sizeof(result)));
  int wrong = 0;
  for (int i = 0; i < kN; ++i) {
    if (result[i] != 2.0f * x[i] + y[i] && wrong++ < 5) {
      fprintf(stderr, "example_host: scale_add: y[%d] = %g, expected %g\n", i, result[i],
              2.0f * x[i] + y[i]);
    }
  }
  CALL(api.porta_module_unload(module));
  CALL(api.porta_memory_free(dx));
  CALL(api.porta_memory_free(dy));
  if (wrong) fprintf(stderr, "example_host: scale_add: %d of %d results wrong\n", wrong, kN);
  return wrong != 0;
}

/* porta_relu_forward through libporta, served by the project's op plugin. */
static int run_op(porta_device_t device, porta_stream_t stream, const char* folder) {
  porta_plugin_report_t row;
  if (find_row("example", PORTA_PLUGIN_KIND_OPS, &row)) return 1;
  if (row.outcome != PORTA_PLUGIN_LOADED || !in_folder(row.path, folder) ||
      strcmp(row.ops, "relu_forward") != 0) {
    fprintf(stderr,
            "example_host: the example op plugin is not the project's: outcome %d, path %s, "
            "ops '%s', reason '%s'\n",
            (int)row.outcome, row.path, row.ops, row.reason);
    return 1;
  }
  static float x[kN], result[kN];
  for (int i = 0; i < kN; ++i) x[i] = (float)(i % 7) - 3.0f;
  void* dx = NULL;
  void* dy = NULL;
  CALL(api.porta_memory_alloc(device, sizeof(x), &dx));
  CALL(api.porta_memory_alloc(device, sizeof(result), &dy));
  CALL(api.porta_memcpy(dx, x, sizeof(x)));
  CALL(api.porta_relu_forward(stream, kN, dx, dy));
  CALL(api.porta_stream_synchronize(stream));
  CALL(api.porta_memcpy(result, dy, sizeof(result)));
  int wrong = 0;
  for (int i = 0; i < kN; ++i) {
    const float expected = x[i] > 0.0f ? x[i] : 0.0f;
    if (result[i] != expected && wrong++ < 5) {
      fprintf(stderr, "example_host: relu: y[%d] = %g, expected %g\n", i, result[i], expected);
    }
  }
  CALL(api.porta_memory_free(dx));
  CALL(api.porta_memory_free(dy));
  if (wrong) fprintf(stderr, "example_host: relu: %d of %d results wrong\n", wrong, kN);
  return wrong != 0;
}

static int run(const char* libporta_folder, const char* folder) {
  /* The project's folder first: its libporta_ops_example.so serves the ops it implements. */
  porta_init_options_t options;
  memset(&options, 0, sizeof(options));
  options.struct_size = sizeof(options);
  options.plugin_path = folder;
  options.ops = "example";
  const porta_status_t init = api.porta_init(&options);
  if (init == PORTA_ERROR_UNAVAILABLE) {
    fprintf(stderr, "example_host: skipped: %s\n", api.porta_last_error_message());
    return 77;
  }
  if (init != PORTA_SUCCESS) return failed("porta_init", init);
  const char* selected = NULL;
  CALL(api.porta_backend_selected(&selected));
  const char* wanted = getenv("PORTA_BACKEND");
  if (wanted && strcmp(selected, wanted) != 0) {
    fprintf(stderr, "example_host: PORTA_BACKEND=%s but %s was selected\n", wanted, selected);
    return 1;
  }
  porta_plugin_report_t backend;
  if (find_row(selected, PORTA_PLUGIN_KIND_BACKEND, &backend)) return 1;
  if (!in_folder(backend.path, libporta_folder)) {
    fprintf(stderr, "example_host: the %s backend came from %s, not from libporta's folder %s\n",
            selected, backend.path, libporta_folder);
    return 1;
  }
  porta_device_t device = -1;
  porta_stream_t stream = NULL;
  CALL(api.porta_device_default(&device));
  CALL(api.porta_stream_create(device, &stream));
  char library[4096];
  snprintf(library, sizeof(library), "%s/example_kernels", folder);
  if (run_kernel(device, stream, library)) return 1;
  const int cpu = strcmp(selected, "cpu") == 0;
  if (cpu && run_op(device, stream, folder)) return 1;
  CALL(api.porta_stream_destroy(stream));
  CALL(api.porta_shutdown());
  printf("example_host: backend %s (%s): scale_add correct%s\n", selected, backend.path,
         cpu ? ", porta_relu_forward from the project's op plugin correct" : "");
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <libporta.so.0> <folder of example_kernels>\n", argv[0]);
    return 2;
  }
  const char* libporta = argv[1];
  if (dlopen(libporta, RTLD_NOW | RTLD_NOLOAD) != NULL) {
    fprintf(stderr, "example_host: %s was loaded before dlopen: a link-time dependency\n",
            libporta);
    return 1;
  }
  void* library = dlopen(libporta, RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    fprintf(stderr, "example_host: dlopen(%s): %s\n", libporta, dlerror());
    return 1;
  }
#define RESOLVE(name)                                                                         \
  *(void**)(&api.name) = dlsym(library, #name);                                               \
  if (!api.name) {                                                                            \
    fprintf(stderr, "example_host: %s does not export %s: %s\n", libporta, #name, dlerror()); \
    return 1;                                                                                 \
  }
  PORTA_CALLS(RESOLVE)
#undef RESOLVE
  char copy[4096];
  snprintf(copy, sizeof(copy), "%s", libporta);
  const int result = run(dirname(copy), argv[2]);
  dlclose(library);
  return result;
}
