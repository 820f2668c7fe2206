// Streams: in-order queues on one device; NULL means the default device's default stream.
#include <algorithm>

#include "runtime.h"

using namespace porta;

namespace {

// A host function as queued: its thread is marked while it runs (HostFunctionCall). The record
// goes with the call; a device lost before the call never makes it, and leaves it behind.
struct QueuedHostFunction {
  porta_host_fn_t fn;
  void* user_data;

  static void run(void* queued) {
    const std::unique_ptr<QueuedHostFunction> self(static_cast<QueuedHostFunction*>(queued));
    HostFunctionCall mark;
    self->fn(self->user_data);
  }
};

// How many frees the stream has queued: a synchronisation that starts now covers them.
uint64_t queued_frees(Stream& stream) {
  std::lock_guard lock(stream.order.mutex);
  return stream.order.frees;
}

}  // namespace

extern "C" PORTA_API porta_status_t porta_stream_create(porta_device_t device,
                                                        porta_stream_t* out_stream) {
  return with_runtime("porta_stream_create", [&](Runtime& runtime) -> porta_status_t {
    Device* found = runtime.device(device, "porta_stream_create: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!out_stream) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_stream_create: out_stream is NULL");
    }
    auto stream = std::make_shared<Stream>();
    stream->device = found;
    const Backend& backend = *found->backend;
    porta_status_t status = call(backend, "porta_stream_create", backend.interface.stream_create,
                                 found->index, &stream->native);
    if (status != PORTA_SUCCESS) return status;
    *out_stream = reinterpret_cast<porta_stream_t>(runtime.streams.insert(std::move(stream)));
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_stream_destroy(porta_stream_t handle) {
  return with_runtime_to_release(
      "porta_stream_destroy", PORTA_ERROR_INVALID_HANDLE, false,
      [&](Runtime& runtime) -> porta_status_t {
        if (porta_status_t refused = detail::refuse_wait_in_host_function("porta_stream_destroy")) {
          return refused;
        }
        std::shared_ptr<Stream> stream;
        porta_status_t status = resolve(runtime, "porta_stream_destroy", handle, stream);
        if (status != PORTA_SUCCESS) return status;
        if (stream->is_default) {
          return fail(PORTA_ERROR_INVALID_ARGUMENT,
                      "porta_stream_destroy: a device's default stream cannot be destroyed");
        }
        if (!runtime.streams.remove(reinterpret_cast<uintptr_t>(handle))) {
          return fail(PORTA_ERROR_INVALID_HANDLE,
                      "porta_stream_destroy: stream was destroyed meanwhile");
        }
        // What is queued runs first and its error is reported here; the backend's stream goes with
        // the last reference (~Stream), which may be a call on another thread still using it.
        const Backend& backend = *stream->device->backend;
        const uint64_t frees = queued_frees(*stream);
        const porta_status_t pending = call(backend, "porta_stream_destroy",
                                            backend.interface.stream_synchronize, stream->native);
        stream->device->pool->settle_stream(stream->serial, frees);
        return pending;
      });
}

extern "C" PORTA_API porta_status_t porta_stream_default(porta_device_t device,
                                                         porta_stream_t* out_stream) {
  return with_runtime("porta_stream_default", [&](Runtime& runtime) -> porta_status_t {
    Device* found = runtime.device(device, "porta_stream_default: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!out_stream) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_stream_default: out_stream is NULL");
    }
    *out_stream = found->default_stream;
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_stream_device(porta_stream_t handle,
                                                        porta_device_t* out_device) {
  return with_runtime("porta_stream_device", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Stream> stream;
    porta_status_t status = resolve(runtime, "porta_stream_device", handle, stream);
    if (status != PORTA_SUCCESS) return status;
    if (!out_device) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_stream_device: out_device is NULL");
    }
    *out_device = stream->device->id;
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_stream_synchronize(porta_stream_t handle) {
  return with_runtime("porta_stream_synchronize", [&](Runtime& runtime) -> porta_status_t {
    if (porta_status_t refused = detail::refuse_wait_in_host_function("porta_stream_synchronize")) {
      return refused;
    }
    std::shared_ptr<Stream> stream;
    porta_status_t status = resolve(runtime, "porta_stream_synchronize", handle, stream);
    if (status != PORTA_SUCCESS) return status;
    const Backend& backend = *stream->device->backend;
    const uint64_t frees = queued_frees(*stream);
    status = call(backend, "porta_stream_synchronize", backend.interface.stream_synchronize,
                stream->native);
    stream->device->pool->settle_stream(stream->serial, frees);
    return status;
  });
}

extern "C" PORTA_API porta_status_t porta_stream_query(porta_stream_t handle) {
  return with_runtime("porta_stream_query", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Stream> stream;
    porta_status_t status = resolve(runtime, "porta_stream_query", handle, stream);
    if (status != PORTA_SUCCESS) return status;
    const Backend& backend = *stream->device->backend;
    return call(backend, "porta_stream_query", backend.interface.stream_query, stream->native);
  });
}

extern "C" PORTA_API porta_status_t porta_stream_wait_event(porta_stream_t handle,
                                                            porta_event_t event_handle) {
  return with_runtime("porta_stream_wait_event", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Stream> stream;
    porta_status_t status = resolve(runtime, "porta_stream_wait_event", handle, stream);
    if (status != PORTA_SUCCESS) return status;
    std::shared_ptr<Event> event;
    status = resolve(runtime, "porta_stream_wait_event", event_handle, event);
    if (status != PORTA_SUCCESS) return status;
    if (event->device->backend != stream->device->backend) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "porta_stream_wait_event: the event belongs to device {} of the {} backend, the "
                  "stream to device {} of the {} backend; wait for the event on the host instead",
                  event->device->id, event->device->backend->name, stream->device->id,
                  stream->device->backend->name);
    }
    const Backend& backend = *stream->device->backend;
    status = call(backend, "porta_stream_wait_event", backend.interface.stream_wait_event,
                stream->native, event->native);
    if (status != PORTA_SUCCESS) return status;
    // The stream is now ordered after the frees the event's stream had queued when it was
    // recorded, so the pool may hand their blocks to this stream.
    uint64_t serial = 0, frees = 0;
    {
      std::lock_guard lock(event->capture_mutex);
      serial = event->stream_serial;
      frees = event->stream_frees;
    }
    if (serial != 0 && serial != stream->serial) {
      std::lock_guard lock(stream->order.mutex);
      uint64_t& waited = stream->order.waited[serial];
      waited = std::max(waited, frees);
    }
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_stream_native_handle(porta_stream_t handle,
                                                               void** out_native) {
  return with_runtime("porta_stream_native_handle", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Stream> stream;
    porta_status_t status = resolve(runtime, "porta_stream_native_handle", handle, stream);
    if (status != PORTA_SUCCESS) return status;
    if (!out_native) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_stream_native_handle: out_native is NULL");
    }
    const Backend& backend = *stream->device->backend;
    if (!backend.interface.stream_native_handle) {
      return fail(PORTA_ERROR_UNSUPPORTED,
                  "porta_stream_native_handle: the {} backend's streams are Porta's own; there is "
                  "no native handle",
                  backend.name);
    }
    return call(backend, "porta_stream_native_handle", backend.interface.stream_native_handle,
                stream->native, out_native);
  });
}

extern "C" PORTA_API porta_status_t porta_stream_launch_host_func(porta_stream_t handle,
                                                                  porta_host_fn_t fn,
                                                                  void* user_data) {
  return with_runtime("porta_stream_launch_host_func", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Stream> stream;
    porta_status_t status = resolve(runtime, "porta_stream_launch_host_func", handle, stream);
    if (status != PORTA_SUCCESS) return status;
    if (!fn) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_stream_launch_host_func: fn is NULL");
    }
    const Backend& backend = *stream->device->backend;
    // NULL both when the plugin left it out and when its interface predates ABI 1.1 (the loader
    // leaves slots beyond the plugin's struct_size NULL).
    if (!backend.interface.stream_launch_host_func) {
      return fail(PORTA_ERROR_UNSUPPORTED,
                  "porta_stream_launch_host_func: the {} backend plugin does not provide host "
                  "functions (its interface predates plugin ABI 1.1 or leaves the slot out)",
                  backend.name);
    }
    auto queued = std::make_unique<QueuedHostFunction>(QueuedHostFunction{fn, user_data});
    status =
        call(backend, "porta_stream_launch_host_func", backend.interface.stream_launch_host_func,
             stream->native, &QueuedHostFunction::run, static_cast<void*>(queued.get()));
    if (status == PORTA_SUCCESS) queued.release();  // QueuedHostFunction::run deletes it
    return status;
  });
}
