// Events: markers in a stream to wait on and to time work with.
#include "runtime.h"

using namespace porta;

namespace {


}  // namespace

extern "C" PORTA_API porta_status_t porta_event_create(porta_device_t device,
                                                       porta_event_t* out_event) {
  return with_runtime("porta_event_create", [&](Runtime& runtime) -> porta_status_t {
    Device* found = runtime.device(device, "porta_event_create: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    if (!out_event)
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "porta_event_create: out_event is NULL");
    auto event = std::make_shared<Event>();
    event->device = found;
    const Backend& backend = *found->backend;
    porta_status_t status = call(backend, "porta_event_create", backend.interface.event_create,
                                 found->index, &event->native);
    if (status != PORTA_SUCCESS) return status;
    *out_event = reinterpret_cast<porta_event_t>(runtime.events.insert(std::move(event)));
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_event_destroy(porta_event_t handle) {
  return with_runtime_to_release(
      "porta_event_destroy", PORTA_ERROR_INVALID_HANDLE, false,
      [&](Runtime& runtime) -> porta_status_t {
        std::shared_ptr<Event> event;
        if (porta_status_t status = retire(runtime, "porta_event_destroy", handle, event);
            status != PORTA_SUCCESS) {
          return status;
        }
        // The backend's event goes with the last reference (~Event): a call on another thread may
        // still be using it.
        return PORTA_SUCCESS;
      });
}

extern "C" PORTA_API porta_status_t porta_event_record(porta_event_t handle,
                                                       porta_stream_t stream_handle) {
  return with_runtime("porta_event_record", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Event> event;
    porta_status_t status = resolve(runtime, "porta_event_record", handle, event, "event");
    if (status != PORTA_SUCCESS) return status;
    std::shared_ptr<Stream> stream;
    status = resolve(runtime, "porta_event_record", stream_handle, stream);
    if (status != PORTA_SUCCESS) return status;
    if (stream->device != event->device) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "porta_event_record: the event belongs to device {}, the stream to {}",
                  event->device->id, stream->device->id);
    }
    const Backend& backend = *event->device->backend;
    // The frees queued on the stream so far, read before the record: a wait on the event is
    // ordered after at least these.
    uint64_t frees = 0;
    {
      std::lock_guard lock(stream->order.mutex);
      frees = stream->order.frees;
    }
    status = call(backend, "porta_event_record", backend.interface.event_record, event->native,
                  stream->native);
    if (status != PORTA_SUCCESS) return status;
    event->recorded = true;
    std::lock_guard lock(event->capture_mutex);
    event->stream_serial = stream->serial;
    event->stream_frees = frees;
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_event_query(porta_event_t handle) {
  return with_runtime("porta_event_query", [&](Runtime& runtime) -> porta_status_t {
    std::shared_ptr<Event> event;
    porta_status_t status = resolve(runtime, "porta_event_query", handle, event, "event");
    if (status != PORTA_SUCCESS) return status;
    const Backend& backend = *event->device->backend;
    return call(backend, "porta_event_query", backend.interface.event_query, event->native);
  });
}

extern "C" PORTA_API porta_status_t porta_event_synchronize(porta_event_t handle) {
  return with_runtime("porta_event_synchronize", [&](Runtime& runtime) -> porta_status_t {
    if (porta_status_t refused = detail::refuse_wait_in_host_function("porta_event_synchronize")) {
      return refused;
    }
    std::shared_ptr<Event> event;
    porta_status_t status = resolve(runtime, "porta_event_synchronize", handle, event, "event");
    if (status != PORTA_SUCCESS) return status;
    const Backend& backend = *event->device->backend;
    return call(backend, "porta_event_synchronize", backend.interface.event_synchronize,
                event->native);
  });
}

extern "C" PORTA_API porta_status_t porta_event_elapsed_ms(porta_event_t start_handle,
                                                           porta_event_t end_handle,
                                                           float* out_ms) {
  return with_runtime("porta_event_elapsed_ms", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_event_elapsed_ms";
    std::shared_ptr<Event> start, end;
    porta_status_t status = resolve(runtime, function, start_handle, start, "start");
    if (status == PORTA_SUCCESS) status = resolve(runtime, function, end_handle, end, "end");
    if (status != PORTA_SUCCESS) return status;
    if (!out_ms) return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: out_ms is NULL", function);
    if (start->device != end->device) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: start is on device {}, end on device {}",
                  function, start->device->id, end->device->id);
    }
    if (!start->recorded || !end->recorded) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} has never been recorded", function,
                  start->recorded ? "end" : "start");
    }
    const Backend& backend = *start->device->backend;
    for (const Event* event : {start.get(), end.get()}) {
      status = call(backend, function, backend.interface.event_query, event->native);
      if (status != PORTA_SUCCESS) return status;
    }
    float ms = 0;
    status = call(backend, function, backend.interface.event_elapsed_ms, start->native, end->native,
                  &ms);
    if (status == PORTA_SUCCESS) *out_ms = ms;
    return status;
  });
}
