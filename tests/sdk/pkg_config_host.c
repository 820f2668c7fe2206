/* pkg_config_host.c: a C program built with nothing but `pkg-config --cflags --libs porta`. It
 * links libporta, initialises on the backend PORTA_BACKEND names and copies a buffer through
 * device memory. Exit 0 on success, 1 on any failure. */
#include <porta/porta.h>
#include <stdio.h>
#include <string.h>

#define CALL(expr)                                                                               \
  do {                                                                                           \
    porta_status_t status_ = (expr);                                                             \
    if (status_ != PORTA_SUCCESS) {                                                              \
      fprintf(stderr, "pkg_config_host: %s failed: %s: %s\n", #expr, porta_status_name(status_), \
              porta_last_error_message());                                                       \
      return 1;                                                                                  \
    }                                                                                            \
  } while (0)

int main(void) {
  CALL(porta_init(NULL));
  const char* backend = NULL;
  porta_device_t device = -1;
  CALL(porta_backend_selected(&backend));
  CALL(porta_device_default(&device));
  const char text[] = "through the device and back";
  char back[sizeof(text)] = {0};
  void* buffer = NULL;
  CALL(porta_memory_alloc(device, sizeof(text), &buffer));
  CALL(porta_memcpy(buffer, text, sizeof(text)));
  CALL(porta_memcpy(back, buffer, sizeof(back)));
  CALL(porta_memory_free(buffer));
  CALL(porta_shutdown());
  if (memcmp(text, back, sizeof(text)) != 0) {
    fprintf(stderr, "pkg_config_host: the copy came back as '%s'\n", back);
    return 1;
  }
  printf("pkg_config_host: backend %s, device %d: copy correct\n", backend, device);
  return 0;
}
