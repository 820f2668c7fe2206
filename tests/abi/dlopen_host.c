/*
 * dlopen_host.c: a host program with no link-time dependency on libporta.
 *
 *   porta-dlopen-host <path of libporta.so> <path of the test kernel module>
 *
 * It proves libporta is not loaded before it asks for it (RTLD_NOLOAD), opens it, resolves the
 * calls it needs by name, initialises from the environment (PORTA_BACKEND), runs saxpy on the
 * default device and checks the result exactly. Exit 0 on success, 1 on any failure.
 */
#include <dlfcn.h>
#include <porta/porta.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The API, as function pointer types, declared from the header's prototypes. */
#define PORTA_CALLS(X)        \
  X(porta_init)               \
  X(porta_shutdown)           \
  X(porta_status_name)        \
  X(porta_last_error_message) \
  X(porta_backend_selected)   \
  X(porta_device_default)     \
  X(porta_device_properties)  \
  X(porta_memory_alloc)       \
  X(porta_memory_free)        \
  X(porta_memcpy)             \
  X(porta_stream_create)      \
  X(porta_stream_destroy)     \
  X(porta_stream_synchronize) \
  X(porta_module_load)        \
  X(porta_module_unload)      \
  X(porta_kernel_get)         \
  X(porta_kernel_launch)

static struct {
#define DECLARE(name) __typeof__(&name) name;
  PORTA_CALLS(DECLARE)
#undef DECLARE
} api;

static int failed(const char* what, porta_status_t status) {
  fprintf(stderr, "dlopen_host: %s failed: %s: %s\n", what, api.porta_status_name(status),
          api.porta_last_error_message());
  return 1;
}

#define CALL(expr)                                               \
  do {                                                           \
    porta_status_t status_ = (expr);                             \
    if (status_ != PORTA_SUCCESS) return failed(#expr, status_); \
  } while (0)

enum { kN = 1000 };

static int run(const char* kernels_path) {
  const char* backend = getenv("PORTA_BACKEND");
  /* NULL options: everything, the backend included, comes from the environment. */
  CALL(api.porta_init(NULL));
  const char* selected = NULL;
  CALL(api.porta_backend_selected(&selected));
  if (backend && strchr(backend, ',') == NULL && strcmp(backend, "auto") != 0 &&
      strcmp(selected, backend) != 0) {
    fprintf(stderr, "dlopen_host: PORTA_BACKEND=%s but %s was selected\n", backend, selected);
    return 1;
  }
  porta_device_t device = -1;
  CALL(api.porta_device_default(&device));
  porta_device_properties_t properties;
  memset(&properties, 0, sizeof(properties));
  properties.struct_size = sizeof(properties);
  CALL(api.porta_device_properties(device, &properties));

  /* Small integers and a = 2: every result is exact in float. */
  static float x[kN], y[kN], result[kN];
  for (int i = 0; i < kN; ++i) {
    x[i] = (float)(i % 50);
    y[i] = (float)(i % 3);
  }
  void* dx = NULL;
  void* dy = NULL;
  CALL(api.porta_memory_alloc(device, sizeof(x), &dx));
  CALL(api.porta_memory_alloc(device, sizeof(y), &dy));
  CALL(api.porta_memcpy(dx, x, sizeof(x)));
  CALL(api.porta_memcpy(dy, y, sizeof(y)));

  porta_module_t module = NULL;
  porta_kernel_t saxpy = NULL;
  porta_stream_t stream = NULL;
  CALL(api.porta_module_load(device, kernels_path, &module));
  CALL(api.porta_kernel_get(module, "saxpy", &saxpy));
  CALL(api.porta_stream_create(device, &stream));
  int n = kN;
  float a = 2.0f;
  porta_launch_config_t config;
  memset(&config, 0, sizeof(config));
  config.struct_size = sizeof(config);
  config.grid[0] = (kN + 63) / 64;
  config.grid[1] = config.grid[2] = 1;
  config.group[0] = 64;
  config.group[1] = config.group[2] = 1;
  void* args[] = {&n, &a, &dx, &dy};
  CALL(api.porta_kernel_launch(saxpy, &config, args, stream));
  CALL(api.porta_stream_synchronize(stream));
  CALL(api.porta_memcpy(result, dy, sizeof(result)));

  int wrong = 0;
  for (int i = 0; i < kN; ++i) {
    const float expected = 2.0f * x[i] + y[i];
    if (result[i] != expected) {
      if (wrong++ < 5)
        fprintf(stderr, "dlopen_host: y[%d] = %g, expected %g\n", i, result[i], expected);
    }
  }
  CALL(api.porta_stream_destroy(stream));
  CALL(api.porta_module_unload(module));
  CALL(api.porta_memory_free(dx));
  CALL(api.porta_memory_free(dy));
  CALL(api.porta_shutdown());
  if (wrong) {
    fprintf(stderr, "dlopen_host: %d of %d results wrong\n", wrong, kN);
    return 1;
  }
  printf("dlopen_host: backend %s, device %d (%s): saxpy of %d elements correct\n", selected,
         device, properties.name, kN);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <libporta.so> <test kernel module>\n", argv[0]);
    return 2;
  }
  const char* libporta = argv[1];
  if (dlopen(libporta, RTLD_NOW | RTLD_NOLOAD) != NULL) {
    fprintf(stderr, "dlopen_host: %s was loaded before dlopen: a link-time dependency\n", libporta);
    return 1;
  }
  void* library = dlopen(libporta, RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    fprintf(stderr, "dlopen_host: dlopen(%s): %s\n", libporta, dlerror());
    return 1;
  }
#define RESOLVE(name)                                                                        \
  *(void**)(&api.name) = dlsym(library, #name);                                              \
  if (!api.name) {                                                                           \
    fprintf(stderr, "dlopen_host: %s does not export %s: %s\n", libporta, #name, dlerror()); \
    return 1;                                                                                \
  }
  PORTA_CALLS(RESOLVE)
#undef RESOLVE
  const int result = run(argv[2]);
  dlclose(library);
  return result;
}
