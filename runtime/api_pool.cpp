// Stream-ordered allocation: porta_memory_alloc_async and porta_memory_free_async over each
// device's pool, its figures, threshold and trim, and the report of live allocations.
#include "runtime.h"
#include "versioned_struct.h"

using namespace porta;

namespace {

porta_status_t stream_of_device(Runtime& runtime, const char* function, porta_stream_t handle,
                                const Device& device, const char* what,
                                std::shared_ptr<Stream>& out) {
  if (porta_status_t status = resolve(runtime, function, handle, out); status != PORTA_SUCCESS) {
    return status;
  }
  if (out->device != &device) {
    return fail(PORTA_ERROR_INVALID_ARGUMENT,
                "{}: the stream belongs to device {}, {} to device {}", function, out->device->id,
                what, device.id);
  }
  return PORTA_SUCCESS;
}

}  // namespace

extern "C" PORTA_API porta_status_t porta_memory_alloc_async(porta_device_t device, size_t size,
                                                             porta_stream_t stream_handle,
                                                             void** out_ptr) {
  return with_runtime("porta_memory_alloc_async", [&](Runtime& runtime) -> porta_status_t {
    const char* function = "porta_memory_alloc_async";
    Device* found = runtime.device(device, "porta_memory_alloc_async: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    std::shared_ptr<Stream> stream;
    porta_status_t status =
        stream_of_device(runtime, function, stream_handle, *found, "the allocation", stream);
    if (status != PORTA_SUCCESS) return status;
    if (!out_ptr) return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: out_ptr is NULL", function);
    if (size == 0) {
      *out_ptr = nullptr;
      return PORTA_SUCCESS;
    }
    Runtime::Record record = Runtime::make_record();  // before the memory, which then has room
    void* ptr = nullptr;
    status = found->pool->allocate(function, size, *stream, &ptr);
    if (status != PORTA_SUCCESS) return status;
    runtime.remember(std::move(record),
                     Allocation{reinterpret_cast<uintptr_t>(ptr), size, PORTA_MEMORY_DEVICE, found,
                                PluginCall::active()});
    *out_ptr = ptr;
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_memory_free_async(void* ptr,
                                                            porta_stream_t stream_handle) {
  return with_runtime_to_release(
      "porta_memory_free_async", PORTA_ERROR_INVALID_ARGUMENT, !ptr,
      [&](Runtime& runtime) -> porta_status_t {
        const char* function = "porta_memory_free_async";
        std::shared_ptr<Stream> stream;
        if (porta_status_t status = resolve(runtime, function, stream_handle, stream);
            status != PORTA_SUCCESS) {
          return status;
        }
        if (!ptr) return PORTA_SUCCESS;
        Allocation allocation;
        const bool live = runtime.find_allocation(ptr, allocation);
        if (!live || allocation.base != reinterpret_cast<uintptr_t>(ptr) ||
            allocation.kind != PORTA_MEMORY_DEVICE) {
          Device* owner = nullptr;
          uintptr_t base = 0;
          if (!live && runtime.in_freed_pool_block(ptr, 1, &owner, &base)) {
            return fail(PORTA_ERROR_INVALID_ARGUMENT,
                        "{}: {} was already freed (it is a cached block of device {}'s pool)",
                        function, ptr, owner->id);
          }
          if (!live) {
            return fail(PORTA_ERROR_INVALID_ARGUMENT,
                        "{}: {} is not a live allocation (already freed, or not from Porta)",
                        function, ptr);
          }
          if (allocation.kind != PORTA_MEMORY_DEVICE) {
            return fail(PORTA_ERROR_INVALID_ARGUMENT,
                        "{}: {} is pinned host memory; free it with porta_host_free", function,
                        ptr);
          }
          return fail(PORTA_ERROR_INVALID_ARGUMENT,
                      "{}: {} points {} bytes into an allocation; pass its start", function, ptr,
                      reinterpret_cast<uintptr_t>(ptr) - allocation.base);
        }
        if (stream->device != allocation.device) {
          return fail(PORTA_ERROR_INVALID_ARGUMENT,
                      "{}: {} is memory of device {} but the stream belongs to device {}", function,
                      ptr, allocation.device->id, stream->device->id);
        }
        Runtime::Record record = runtime.forget_into_pool(ptr);
        if (!record) {
          return fail(PORTA_ERROR_INVALID_ARGUMENT, "{}: {} was freed by another thread meanwhile",
                      function, ptr);
        }
        // Where the pool cannot take it (out of memory), the memory stays live, its record back.
        porta_status_t status = PORTA_SUCCESS;
        try {
          status = allocation.device->pool->free(function, ptr, allocation.size, *stream);
        } catch (...) {
          runtime.remember(std::move(record), allocation);
          throw;
        }
        if (status != PORTA_SUCCESS) runtime.remember(std::move(record), allocation);
        return status;
      });
}

extern "C" PORTA_API porta_status_t porta_memory_pool_stats(porta_device_t device,
                                                            porta_memory_pool_stats_t* out_stats) {
  return with_runtime("porta_memory_pool_stats", [&](Runtime& runtime) -> porta_status_t {
    Device* found = runtime.device(device, "porta_memory_pool_stats: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    porta_status_t status = check_struct_size("porta_memory_pool_stats", "out_stats", out_stats,
                                              PORTA_MEMORY_POOL_STATS_MIN_SIZE);
    if (status != PORTA_SUCCESS) return status;
    porta_memory_pool_stats_t stats{};
    status = found->pool->stats("porta_memory_pool_stats", stats);
    if (status != PORTA_SUCCESS) return status;
    copy_out(out_stats, stats);
    return PORTA_SUCCESS;
  });
}

extern "C" PORTA_API porta_status_t porta_memory_pool_set_release_threshold(porta_device_t device,
                                                                            uint64_t bytes) {
  return with_runtime(
      "porta_memory_pool_set_release_threshold", [&](Runtime& runtime) -> porta_status_t {
        Device* found = runtime.device(device, "porta_memory_pool_set_release_threshold: device");
        if (!found) return PORTA_ERROR_NOT_FOUND;
        return found->pool->set_release_threshold("porta_memory_pool_set_release_threshold", bytes);
      });
}

extern "C" PORTA_API porta_status_t porta_memory_pool_trim(porta_device_t device,
                                                           uint64_t keep_bytes) {
  return with_runtime("porta_memory_pool_trim", [&](Runtime& runtime) -> porta_status_t {
    if (porta_status_t refused = detail::refuse_wait_in_host_function("porta_memory_pool_trim")) {
      return refused;
    }
    Device* found = runtime.device(device, "porta_memory_pool_trim: device");
    if (!found) return PORTA_ERROR_NOT_FOUND;
    const Backend& backend = *found->backend;
    const uint64_t freed = found->pool->frees_so_far();
    runtime.caller_work.wait_for_earlier();  // as porta_memory_free does
    porta_status_t status =
        call(backend, "porta_memory_pool_trim", backend.interface.device_synchronize, found->index);
    // Even after a failed synchronisation the queued work has ended: the blocks freed before it
    // began are free to go.
    porta_status_t trimmed = found->pool->trim("porta_memory_pool_trim", keep_bytes, freed);
    return status != PORTA_SUCCESS ? status : trimmed;
  });
}

extern "C" PORTA_API porta_status_t porta_memory_report_live(uint64_t* out_count,
                                                             uint64_t* out_bytes) {
  return with_runtime("porta_memory_report_live", [&](Runtime& runtime) -> porta_status_t {
    runtime.report_live_allocations("porta_memory_report_live", out_count, out_bytes);
    return PORTA_SUCCESS;
  });
}
