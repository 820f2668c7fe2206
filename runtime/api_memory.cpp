// Memory: allocation records make every copy, set and free checkable against what was allocated.
#include <algorithm>
#include <cstring>

#include "runtime.h"
#include "versioned_struct.h"

using namespace porta;

namespace {

porta_status_t allocate(Runtime& runtime, const char* function, porta_memory_kind_t kind,
                        porta_device_t device, size_t size, void** out_ptr) {
  Device* found = runtime.device(device, function);
  if (!found) return PORTA_ERROR_NOT_FOUND;
  if (!out_ptr) return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: out_ptr is NULL", function);
  if (size == 0) {
    *out_ptr = nullptr;
    return PORTA_SUCCESS;
  }
  const Backend& backend = *found->backend;
  auto slot = kind == PORTA_MEMORY_DEVICE ? backend.interface.memory_alloc
                                          : backend.interface.host_alloc;
  void* ptr = nullptr;
  porta_status_t status = call(backend, function, slot, found->index, size, &ptr);
  if (status != PORTA_SUCCESS) return status;
  runtime.remember(
      Allocation{reinterpret_cast<uintptr_t>(ptr), size, kind, found, PluginCall::active()});
  *out_ptr = ptr;
  return PORTA_SUCCESS;
}

porta_status_t release(Runtime& runtime, const char* function, porta_memory_kind_t kind,
                       void* ptr) {
  if (!ptr) return PORTA_SUCCESS;
  // A free waits for the devices' work (below).
  if (porta_status_t refused = detail::refuse_wait_in_host_function(function)) return refused;
  Allocation allocation;
  if (!runtime.forget(ptr, kind, function, allocation)) {
    Allocation other;
    if (!runtime.find_allocation(ptr, other)) {
      Device* owner = nullptr;
      uintptr_t base = 0;
      if (runtime.in_freed_pool_block(ptr, 1, &owner, &base) &&
          base == reinterpret_cast<uintptr_t>(ptr)) {
        return fail(PORTA_ERROR_INVALID_ARGUMENT,
                    "{}: double free: {} was freed by porta_memory_free_async (it is a cached "
                    "block of device {}'s pool)",
                    function, ptr, owner->id);
      }
      const Runtime::Touched freed = runtime.touched(ptr, 1);
      if (freed.kind == Runtime::Touched::kFreed &&
          freed.allocation.base == reinterpret_cast<uintptr_t>(ptr)) {
        return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: double free: {} was freed by {}", function,
                    ptr, freed.freed_by);
      }
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: {} is not a live allocation (already freed, or not from Porta)", function,
                  ptr);
    }
    if (other.base != reinterpret_cast<uintptr_t>(ptr)) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: {} points {} bytes into an allocation; pass its start", function, ptr,
                  reinterpret_cast<uintptr_t>(ptr) - other.base);
    }
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is {} memory; free it with {}", function,
                ptr, other.kind == PORTA_MEMORY_DEVICE ? "device" : "pinned host",
                other.kind == PORTA_MEMORY_DEVICE ? "porta_memory_free" : "porta_host_free");
  }
  Device* device = allocation.device;
  const Backend& backend = *device->backend;
  // Like cudaFree and cudaFreeHost: queued work may still use the memory, so let it finish
  // first; on every device, since another's streams may too (a copy between devices is queued
  // on either one's, pinned memory on any). An error of that work stays with its stream, for its
  // own synchronize or query to report.
  const uint64_t freed = device->pool->frees_so_far();
  runtime.caller_work.wait_for_earlier();
  for (porta_device_t id = 0; id < runtime.device_count(); ++id) {
    wait_for_device(*runtime.device(id, function), function);
  }
  if (kind == PORTA_MEMORY_DEVICE) {
    device->pool->take_in_use(ptr);  // memory from porta_memory_alloc_async may be freed here too
    device->pool->settle_all(freed);
  }
  auto slot = kind == PORTA_MEMORY_DEVICE ? backend.interface.memory_free
                                          : backend.interface.host_free;
  const porta_status_t status = call(backend, function, slot, device->index, ptr);
  runtime.released(allocation);
  return status;
}

// Where one side of a copy lies: a Porta allocation with enough room, or plain host memory.
struct Span {
  bool device_memory = false;
  Device* device = nullptr;
};

porta_status_t check_span(Runtime& runtime, const char* function, const char* argument,
                          const void* ptr, size_t size, Span& out) {
  if (!ptr) return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} is NULL", function, argument);
  Allocation allocation;
  if (!runtime.find_allocation(ptr, allocation)) {
    Device* owner = nullptr;
    uintptr_t base = 0;
    if (runtime.in_freed_pool_block(ptr, size, &owner, &base)) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT,
                  "{}: {}: use after free: {} bytes at {} touch a block of device {} that "
                  "porta_memory_free_async released",
                  function, argument, size, ptr, owner->id);
    }
    if (reinterpret_cast<uintptr_t>(ptr) + size < reinterpret_cast<uintptr_t>(ptr)) {
      return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} + {} bytes wraps around the address space",
                  function, argument, size);
    }
    // Host memory only if it touches no allocation: taken as host memory, a range that runs
    // into one, or into one that was freed, would be written as if it were the host's.
    const Runtime::Touched touched = runtime.touched(ptr, size);
    const Allocation& other = touched.allocation;
    const char* other_kind = other.kind == PORTA_MEMORY_DEVICE ? "device" : "pinned host";
    switch (touched.kind) {
      case Runtime::Touched::kNothing:
        if (!host_can_read_ends(ptr, size)) {
          return fail(PORTA_ERROR_INVALID_ARGUMENT,
                      "{}: {}: {} bytes at {} are neither in a Porta allocation nor host memory "
                      "this process can read (a wild or freed pointer?)",
                      function, argument, size, ptr);
        }
        break;
      case Runtime::Touched::kLive:
        return fail(PORTA_ERROR_INVALID_ARGUMENT,
                    "{}: {}: {} bytes at {} {} the {} allocation of {} bytes at {} without lying "
                    "inside it",
                    function, argument, size, ptr,
                    reinterpret_cast<uintptr_t>(ptr) == other.base + other.size
                        ? "start at the end of"
                        : "run into",
                    other_kind, other.size, reinterpret_cast<void*>(other.base));
      case Runtime::Touched::kFreed:
        return fail(PORTA_ERROR_INVALID_ARGUMENT,
                    "{}: {}: use after free: {} bytes at {} touch the {} allocation of {} bytes at "
                    "{}, which {} released",
                    function, argument, size, ptr, other_kind, other.size,
                    reinterpret_cast<void*>(other.base), touched.freed_by);
    }
    out = Span{};
    return PORTA_SUCCESS;
  }
  if (porta_status_t status = check_room(function, argument, ptr, size, 1, allocation);
      status != PORTA_SUCCESS) {
    return status;
  }
  out.device_memory = allocation.kind == PORTA_MEMORY_DEVICE;
  out.device = allocation.device;
  return PORTA_SUCCESS;
}

porta_status_t check_stream_device(const char* function, const char* argument, const Span& span,
                                   const Stream& stream) {
  if (span.device_memory && span.device != stream.device) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: {} is memory of device {} but the stream belongs to device {}", function,
                argument, span.device->id, stream.device->id);
  }
  return PORTA_SUCCESS;
}

// The stream a call runs on: the given one (async) or the default stream of the device the
// memory belongs to (blocking). nullptr when a blocking call touches host memory only.
porta_status_t resolve_stream(Runtime& runtime, const char* function, bool blocking,
                              porta_stream_t handle, Device* device,
                              std::shared_ptr<Stream>& out) {
  if (blocking) {
    out = device ? runtime.stream(device->default_stream) : nullptr;
    return PORTA_SUCCESS;
  }
  return resolve(runtime, function, handle, out);
}

// A stream of the device's own for one call, destroyed with it.
struct CallStream {
  const Device& device;
  void* native = nullptr;
  ~CallStream() {
    if (native) device.backend->interface.stream_destroy(device.backend->context, native);
  }
};

// Waits for the work queued on stream so far, leaving its error to the stream (an event recorded
// after it, waited for): the error of earlier work is not the caller's.
porta_status_t wait_leaving_error(const char* function, const Stream& stream) {
  const Device& device = *stream.device;
  const Backend& backend = *device.backend;
  void* event = nullptr;
  porta_status_t status =
      call(backend, function, backend.interface.event_create, device.index, &event);
  if (status != PORTA_SUCCESS) return status;
  status = call(backend, function, backend.interface.event_record, event, stream.native);
  if (status == PORTA_SUCCESS) {
    status = call(backend, function, backend.interface.event_synchronize, event);
  }
  backend.interface.event_destroy(backend.context, event);
  return status;
}

// A blocking call waits for what it queued on the device's default stream (and so for the work
// before it there), leaving an earlier error to the stream: it is not the caller's.
porta_status_t finish(const char* function, const Stream& stream, bool blocking,
                      porta_status_t status) {
  if (status != PORTA_SUCCESS || !blocking) return status;
  return wait_leaving_error(function, stream);
}

// Copies through a pinned buffer of the source device, chunk by chunk: out to the host on a
// stream of the source device, in from the host on a stream of the destination device, both made
// for the copy, so that their errors are the copy's own. The host waits for the given stream's
// earlier work first (leaving its error there), and for each step, so the copy is complete (and
// ordered after the stream's earlier work) when this returns; a free meanwhile waits for it
// (CallerWork).
porta_status_t copy_staged(Runtime& runtime, const char* function, void* dst, Device& to,
                           const void* src, Device& from, size_t size, const Stream& stream) {
  if (porta_status_t refused = detail::refuse_wait_in_host_function(function)) return refused;
  constexpr size_t kChunk = size_t{8} << 20;
  const Backend& out_backend = *from.backend;
  const Backend& in_backend = *to.backend;
  CallerWork::Scope in_flight(runtime.caller_work);
  porta_status_t status = wait_leaving_error(function, stream);
  if (status != PORTA_SUCCESS) return status;
  CallStream out{from}, in{to};
  status =
      call(out_backend, function, out_backend.interface.stream_create, from.index, &out.native);
  if (status != PORTA_SUCCESS) return status;
  status = call(in_backend, function, in_backend.interface.stream_create, to.index, &in.native);
  if (status != PORTA_SUCCESS) return status;
  void* staging = nullptr;
  const size_t staging_size = std::min(size, kChunk);
  status = call(out_backend, function, out_backend.interface.host_alloc, from.index, staging_size,
                &staging);
  if (status != PORTA_SUCCESS) return status;
  for (size_t done = 0; done < size && status == PORTA_SUCCESS; done += staging_size) {
    const size_t part = std::min(staging_size, size - done);
    status = call(out_backend, function, out_backend.interface.memcpy_async, out.native, staging,
                  static_cast<const char*>(src) + done, part, PORTA_COPY_DEVICE_TO_HOST);
    if (status == PORTA_SUCCESS) {
      status = call(out_backend, function, out_backend.interface.stream_synchronize, out.native);
    }
    if (status == PORTA_SUCCESS) {
      status = call(in_backend, function, in_backend.interface.memcpy_async, in.native,
                    static_cast<char*>(dst) + done, static_cast<const void*>(staging), part,
                    PORTA_COPY_HOST_TO_DEVICE);
    }
    if (status == PORTA_SUCCESS) {
      status = call(in_backend, function, in_backend.interface.stream_synchronize, in.native);
    }
  }
  out_backend.interface.host_free(out_backend.context, from.index, staging);
  return status;
}

porta_status_t copy_between_devices(Runtime& runtime, const char* function, bool blocking,
                                    void* dst, Device& to, const void* src, Device& from,
                                    size_t size, const Stream& stream) {
  if (stream.device != &to && stream.device != &from) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: dst is memory of device {} and src of device {}, but the stream belongs to "
                "device {}; use a stream of either",
                function, to.id, from.id, stream.device->id);
  }
  if (!direct_peer_access(to, from) || !direct_peer_access(from, to)) {
    return copy_staged(runtime, function, dst, to, src, from, size, stream);
  }
  const Backend& backend = *stream.device->backend;
  porta_status_t status = call(backend, function, backend.interface.memcpy_async, stream.native,
                               dst, src, size, PORTA_COPY_DEVICE_TO_DEVICE);
  return finish(function, stream, blocking, status);
}

porta_status_t copy(Runtime& runtime, const char* function, bool blocking, void* dst,
                    const void* src, size_t size, porta_stream_t handle) {
  std::shared_ptr<Stream> stream;
  if (!blocking) {
    porta_status_t status = resolve_stream(runtime, function, false, handle, nullptr, stream);
    if (status != PORTA_SUCCESS) return status;
  }
  if (size == 0) return PORTA_SUCCESS;
  // A free on another thread, once past the checks below, waits until the copy is queued (and
  // so for it): freed between the two, the memory would be written after its unmap.
  CallerWork::Scope in_flight(runtime.caller_work);
  Span to, from;
  porta_status_t status = check_span(runtime, function, "dst", dst, size, to);
  if (status == PORTA_SUCCESS) status = check_span(runtime, function, "src", src, size, from);
  if (status != PORTA_SUCCESS) return status;
  // As memcpy's: the GPU drivers leave overlapping copies undefined and OpenCL refuses them.
  if (ranges_overlap(dst, size, src, size)) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: dst {} and src {} overlap ({} bytes each); copy through another buffer",
                function, dst, src, size);
  }
  const bool between_devices = to.device_memory && from.device_memory && to.device != from.device;
  if (blocking) {
    Device* device = to.device_memory ? to.device : from.device_memory ? from.device : nullptr;
    resolve_stream(runtime, function, true, nullptr, device, stream);
    if (!stream) {
      std::memmove(dst, src, size);
      return PORTA_SUCCESS;
    }
    // It waits for the device's default stream.
    if (porta_status_t refused = detail::refuse_wait_in_host_function(function)) return refused;
  }
  if (between_devices)
    return copy_between_devices(runtime, function, blocking, dst, *to.device, src, *from.device,
                                size, *stream);
  status = check_stream_device(function, "dst", to, *stream);
  if (status == PORTA_SUCCESS) status = check_stream_device(function, "src", from, *stream);
  if (status != PORTA_SUCCESS) return status;

  porta_copy_kind_t kind = to.device_memory
                               ? (from.device_memory ? PORTA_COPY_DEVICE_TO_DEVICE
                                                     : PORTA_COPY_HOST_TO_DEVICE)
                               : (from.device_memory ? PORTA_COPY_DEVICE_TO_HOST
                                                     : PORTA_COPY_HOST_TO_HOST);
  const Backend& backend = *stream->device->backend;
  status = call(backend, function, backend.interface.memcpy_async, stream->native, dst, src, size,
                kind);
  return finish(function, *stream, blocking, status);
}

porta_status_t set(Runtime& runtime, const char* function, bool blocking, void* dst, int value,
                   size_t size, porta_stream_t handle) {
  std::shared_ptr<Stream> stream;
  if (!blocking) {
    porta_status_t status = resolve_stream(runtime, function, false, handle, nullptr, stream);
    if (status != PORTA_SUCCESS) return status;
  }
  if (value < 0 || value > 255) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: value {} is not a byte (0 to 255)", function,
                value);
  }
  if (size == 0) return PORTA_SUCCESS;
  CallerWork::Scope in_flight(runtime.caller_work);  // as in copy()
  Span to;
  porta_status_t status = check_span(runtime, function, "dst", dst, size, to);
  if (status != PORTA_SUCCESS) return status;
  if (!to.device_memory) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: dst {} is not device memory", function, dst);
  }
  if (blocking) {
    resolve_stream(runtime, function, true, nullptr, to.device, stream);
    // It waits for the device's default stream.
    if (porta_status_t refused = detail::refuse_wait_in_host_function(function)) return refused;
  }
  status = check_stream_device(function, "dst", to, *stream);
  if (status != PORTA_SUCCESS) return status;
  const Backend& backend = *stream->device->backend;
  status = call(backend, function, backend.interface.memset_async, stream->native, dst,
                static_cast<uint8_t>(value), size);
  return finish(function, *stream, blocking, status);
}

}  // namespace

extern "C" PORTA_API porta_status_t porta_memory_alloc(porta_device_t device, size_t size,
                                                       void** out_ptr) {
  return with_runtime("porta_memory_alloc", [&](Runtime& runtime) -> porta_status_t {
    return allocate(runtime, "porta_memory_alloc", PORTA_MEMORY_DEVICE, device, size, out_ptr);
  });
}

extern "C" PORTA_API porta_status_t porta_memory_free(void* ptr) {
  return with_runtime_to_release("porta_memory_free", PORTA_ERROR_INVALID_ARGUMENT, !ptr,
                                 [&](Runtime& runtime) -> porta_status_t {
                                   return release(runtime, "porta_memory_free", PORTA_MEMORY_DEVICE,
                                                  ptr);
                                 });
}

extern "C" PORTA_API porta_status_t porta_host_alloc(porta_device_t device, size_t size,
                                                     void** out_ptr) {
  return with_runtime("porta_host_alloc", [&](Runtime& runtime) -> porta_status_t {
    return allocate(runtime, "porta_host_alloc", PORTA_MEMORY_HOST_PINNED, device, size, out_ptr);
  });
}

extern "C" PORTA_API porta_status_t porta_host_free(void* ptr) {
  return with_runtime_to_release("porta_host_free", PORTA_ERROR_INVALID_ARGUMENT, !ptr,
                                 [&](Runtime& runtime) -> porta_status_t {
                                   return release(runtime, "porta_host_free",
                                                  PORTA_MEMORY_HOST_PINNED, ptr);
                                 });
}

extern "C" PORTA_API porta_status_t porta_pointer_info(const void* ptr,
                                                       porta_pointer_info_t* out_info) {
  return with_runtime("porta_pointer_info", [&](Runtime& runtime) -> porta_status_t {
    porta_status_t status =
        check_struct_size("porta_pointer_info", "out_info", out_info, PORTA_POINTER_INFO_MIN_SIZE);
    if (status != PORTA_SUCCESS) return status;
    porta_pointer_info_t info{};
    info.device = -1;
    Allocation allocation;
    if (ptr && runtime.find_allocation(ptr, allocation)) {
      info.kind = allocation.kind;
      info.device = allocation.device->id;
      info.base = reinterpret_cast<void*>(allocation.base);
      info.size = allocation.size;
    }
    copy_out(out_info, info);
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_memcpy(void* dst, const void* src, size_t size) {
  return with_runtime("porta_memcpy", [&](Runtime& runtime) -> porta_status_t {
    return copy(runtime, "porta_memcpy", true, dst, src, size, nullptr);
  });
}

extern "C" PORTA_API porta_status_t porta_memcpy_async(void* dst, const void* src, size_t size,
                                                       porta_stream_t stream) {
  return with_runtime("porta_memcpy_async", [&](Runtime& runtime) -> porta_status_t {
    return copy(runtime, "porta_memcpy_async", false, dst, src, size, stream);
  });
}

extern "C" PORTA_API porta_status_t porta_memset(void* dst, int value, size_t size) {
  return with_runtime("porta_memset", [&](Runtime& runtime) -> porta_status_t {
    return set(runtime, "porta_memset", true, dst, value, size, nullptr);
  });
}

extern "C" PORTA_API porta_status_t porta_memset_async(void* dst, int value, size_t size,
                                                       porta_stream_t stream) {
  return with_runtime("porta_memset_async", [&](Runtime& runtime) -> porta_status_t {
    return set(runtime, "porta_memset_async", false, dst, value, size, stream);
  });
}
