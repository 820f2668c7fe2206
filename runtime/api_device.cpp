// Devices: count, default, properties, memory, synchronisation, native handles.
#include <cstring>

#include "log.h"
#include "runtime.h"
#include "versioned_struct.h"

using namespace porta;

extern "C" PORTA_API porta_status_t porta_device_count(int32_t* out_count) {
  return with_runtime("porta_device_count", [&](Runtime& runtime) -> porta_status_t {
    if (!out_count)
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_device_count: out_count is NULL");
    *out_count = runtime.device_count();
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_device_default(porta_device_t* out_device) {
  return with_runtime("porta_device_default", [&](Runtime& runtime) -> porta_status_t {
    if (!out_device) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_device_default: out_device is NULL");
    }
    *out_device = runtime.default_device();
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t
porta_device_properties(porta_device_t device, porta_device_properties_t* out_properties) {
  return with_runtime("porta_device_properties", [&](Runtime& runtime) -> porta_status_t {
    Device* found = runtime.device(device, "porta_device_properties: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    porta_status_t status = check_struct_size("porta_device_properties", "out_properties",
                                              out_properties, PORTA_DEVICE_PROPERTIES_MIN_SIZE);
    if (status != PORTA_SUCCESS) return status;
    copy_out(out_properties, found->properties);
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_device_memory_info(porta_device_t device,
                                                             uint64_t* out_free,
                                                             uint64_t* out_total) {
  return with_runtime("porta_device_memory_info", [&](Runtime& runtime) -> porta_status_t {
    Device* found = runtime.device(device, "porta_device_memory_info: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!out_free || !out_total) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "porta_device_memory_info: out_free and out_total must not be NULL");
    }
    uint64_t free_bytes = 0, total_bytes = 0;
    const Backend& backend = *found->backend;
    porta_status_t status =
        call(backend, "porta_device_memory_info", backend.interface.device_memory_info,
             found->index, &free_bytes, &total_bytes);
    if (status == PORTA_SUCCESS) {
      *out_free = free_bytes;
      *out_total = total_bytes;
    }
    return status;
  });
}

namespace porta {

// Whether device reaches peer's memory directly: the same backend, and its plugin says so.
bool direct_peer_access(const Device& device, const Device& peer) {
  if (&device == &peer) return true;
  if (device.backend != peer.backend) return false;
  const Backend& backend = *device.backend;
  if (!backend.interface.device_can_access_peer) return false;
  int32_t direct = 0;
  take_plugin_message();
  porta_status_t status =
      backend.interface.device_can_access_peer(backend.context, device.index, peer.index, &direct);
  take_plugin_message();  // a failed query only means "not direct"
  return status == PORTA_SUCCESS && direct != 0;
}

void wait_for_device(const Device& device, const char* function) {
  const Backend& backend = *device.backend;
  if (call(backend, function, device_wait_slot(backend.interface), device.index) != PORTA_SUCCESS) {
    log().warn("{}", porta_last_error_message());
  }
}

}  // namespace porta

extern "C" PORTA_API porta_status_t porta_device_can_access_peer(porta_device_t device,
                                                                 porta_device_t peer,
                                                                 int32_t* out_direct) {
  return with_runtime("porta_device_can_access_peer", [&](Runtime& runtime) -> porta_status_t {
    Device* found = runtime.device(device, "porta_device_can_access_peer: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    Device* other = runtime.device(peer, "porta_device_can_access_peer: peer");
    if (!other) return PORTA_ERROR_NOT_FOUND;
    if (!out_direct) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_device_can_access_peer: out_direct is NULL");
    }
    *out_direct = direct_peer_access(*found, *other) && direct_peer_access(*other, *found);
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_device_synchronize(porta_device_t device) {
  return with_runtime("porta_device_synchronize", [&](Runtime& runtime) -> porta_status_t {
    if (porta_status_t refused = detail::refuse_wait_in_host_function("porta_device_synchronize")) {
      return refused;
    }
    Device* found = runtime.device(device, "porta_device_synchronize: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    const Backend& backend = *found->backend;
    // Only blocks freed before the wait began are settled by it: work another thread queues
    // meanwhile, and the frees behind it, may still be running when it returns.
    const uint64_t freed = found->pool->frees_so_far();
    porta_status_t status = call(backend, "porta_device_synchronize",
                                 backend.interface.device_synchronize, found->index);
    found->pool->settle_all(freed);  // the device's queued work has ended, failed or not
    return status;
  });
}

extern "C" PORTA_API porta_status_t porta_device_native_handle(porta_device_t device,
                                                               void** out_native) {
  return with_runtime("porta_device_native_handle", [&](Runtime& runtime) -> porta_status_t {
    Device* found = runtime.device(device, "porta_device_native_handle: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!out_native) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_device_native_handle: out_native is NULL");
    }
    const Backend& backend = *found->backend;
    if (!backend.interface.device_native_handle) {
      return fail(PORTA_ERROR_UNSUPPORTED,
                  "porta_device_native_handle: the {} backend has no native device handle",
                  backend.name);
    }
    return call(backend, "porta_device_native_handle", backend.interface.device_native_handle,
                found->index, out_native);
  });
}
