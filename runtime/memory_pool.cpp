#include "memory_pool.h"

#include <algorithm>

#include "log.h"
#include "runtime.h"

namespace porta {
namespace {

constexpr size_t kGranule = 256;  // the alignment every device allocation has

}  // namespace

porta_status_t MemoryPool::allocate(const char* function, size_t size, Stream& stream,
                                    void** out_ptr) {
  if (size > SIZE_MAX - kGranule) {
    return fail(PORTA_ERROR_OUT_OF_MEMORY, "{}: {} bytes cannot be allocated", function, size);
  }
  const size_t rounded = (size + kGranule - 1) / kGranule * kGranule;
  std::lock_guard lock(mutex_);
  const Backend& backend = *device_.backend;
  if (driver_pool()) {
    void* ptr = nullptr;
    porta_status_t status =
        call(backend, function, backend.interface.memory_alloc_async, stream.native, size, &ptr);
    if (status == PORTA_SUCCESS) {
      try {
        in_use_[ptr] = size;
      } catch (...) {  // no room for the record: the block goes back, nothing changed
        backend.interface.memory_free_async(backend.context, stream.native, ptr);
        throw;
      }
      *out_ptr = ptr;
      return PORTA_SUCCESS;
    }
    if (status != PORTA_ERROR_UNSUPPORTED) return status;
    driver_lacks_pools_ = true;  // from now on the cache below serves this device
    log().info("{}: device {}: {}; Porta's own pool serves it", function, device_.id,
               porta_last_error_message());
  }
  // A cached block at most twice the request: larger ones would waste more than they save.
  for (auto it = cached_.lower_bound(rounded); it != cached_.end() && it->first / 2 < rounded;
       ++it) {
    if (!reusable(it->second, stream)) continue;
    const size_t capacity = it->first;
    void* const ptr = it->second.ptr;
    in_use_[ptr] = capacity;  // first: the one step that may fail (for memory), changing nothing
    *out_ptr = ptr;
    cached_.erase(it);
    cached_by_address_.erase(reinterpret_cast<uintptr_t>(ptr));
    bytes_cached_ -= capacity;
    bytes_in_use_ += capacity;
    peak_bytes_in_use_ = std::max(peak_bytes_in_use_, bytes_in_use_);
    ++reuse_count_;
    return PORTA_SUCCESS;
  }
  void* ptr = nullptr;
  porta_status_t status =
      call(backend, function, backend.interface.memory_alloc, device_.index, rounded, &ptr);
  if (status == PORTA_ERROR_OUT_OF_MEMORY && bytes_cached_ > 0) {
    // What the cache holds may be what is missing: give back what is safe to, then try again.
    release_locked(0);
    status = call(backend, function, backend.interface.memory_alloc, device_.index, rounded, &ptr);
  }
  if (status != PORTA_SUCCESS) return status;
  try {
    in_use_[ptr] = rounded;
  } catch (...) {  // no room for the record: the memory goes back, nothing changed
    backend.interface.memory_free(backend.context, device_.index, ptr);
    throw;
  }
  bytes_in_use_ += rounded;
  peak_bytes_in_use_ = std::max(peak_bytes_in_use_, bytes_in_use_);
  *out_ptr = ptr;
  return PORTA_SUCCESS;
}

bool MemoryPool::driver_pool() const {
  const porta_backend_interface_t& slots = device_.backend->interface;
  return !driver_lacks_pools_ && slots.memory_alloc_async && slots.memory_free_async &&
         slots.memory_pool_stats && slots.memory_pool_set_release_threshold &&
         slots.memory_pool_trim;
}

bool MemoryPool::reusable(const Block& block, Stream& stream) {
  if (block.settled || block.stream_serial == stream.serial) return true;
  std::lock_guard lock(stream.order.mutex);
  auto it = stream.order.waited.find(block.stream_serial);
  return it != stream.order.waited.end() && it->second >= block.epoch;
}

porta_status_t MemoryPool::free(const char* function, void* ptr, size_t size, Stream& stream) {
  std::unique_lock lock(mutex_);
  const Backend& backend = *device_.backend;
  auto live = in_use_.find(ptr);
  const bool pooled = live != in_use_.end();
  if (driver_pool()) {
    if (pooled) {
      in_use_.erase(live);
      released_(ptr, size);
      return call(backend, function, backend.interface.memory_free_async, stream.native, ptr);
    }
    // Memory from porta_memory_alloc is not the driver pool's: free it once the stream is done,
    // without holding up the device's other stream-ordered calls meanwhile.
    released_(ptr, size);
    lock.unlock();
    porta_status_t status =
        call(backend, function, backend.interface.stream_synchronize, stream.native);
    porta_status_t freed =
        call(backend, function, backend.interface.memory_free, device_.index, ptr);
    return freed != PORTA_SUCCESS ? freed : status;
  }
  const size_t capacity = pooled ? live->second : size;  // porta_memory_alloc's joins as it is
  // The cache's two entries first: the steps that may fail (for memory), changing nothing.
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  cached_by_address_[address] = capacity;
  uint64_t epoch = 0;
  try {
    std::lock_guard order(stream.order.mutex);
    epoch = stream.order.frees + 1;
    cached_.emplace(capacity, Block{ptr, stream.serial, epoch, frees_ + 1, false});
    stream.order.frees = epoch;
  } catch (...) {
    cached_by_address_.erase(address);
    throw;
  }
  ++frees_;
  if (pooled) {
    in_use_.erase(live);
    bytes_in_use_ -= capacity;
  }
  bytes_cached_ += capacity;
  return PORTA_SUCCESS;
}

size_t MemoryPool::take_in_use(void* ptr) {
  std::lock_guard lock(mutex_);
  auto it = in_use_.find(ptr);
  if (it == in_use_.end()) return 0;
  const size_t capacity = it->second;
  in_use_.erase(it);
  if (!driver_pool()) bytes_in_use_ -= capacity;
  return capacity;
}

bool MemoryPool::holds_freed(uintptr_t begin, uintptr_t end, uintptr_t* out_base) {
  std::lock_guard lock(mutex_);
  // The blocks do not overlap: the one before begin (it may reach it), or the first after it.
  auto it = cached_by_address_.upper_bound(begin);
  if (it != cached_by_address_.begin() && begin - std::prev(it)->first < std::prev(it)->second) {
    *out_base = std::prev(it)->first;
    return true;
  }
  if (it != cached_by_address_.end() && it->first < end) {
    *out_base = it->first;
    return true;
  }
  return false;
}

void MemoryPool::settle_stream(uint64_t stream_serial, uint64_t epoch) {
  std::lock_guard lock(mutex_);
  for (auto& [capacity, block] : cached_) {
    if (block.stream_serial == stream_serial && block.epoch <= epoch) block.settled = true;
  }
  release_locked(release_threshold_);
}

uint64_t MemoryPool::frees_so_far() {
  std::lock_guard lock(mutex_);
  return frees_;
}

void MemoryPool::settle_all(uint64_t freed) {
  std::lock_guard lock(mutex_);
  for (auto& [capacity, block] : cached_) {
    if (block.order <= freed) block.settled = true;
  }
  release_locked(release_threshold_);
}

void MemoryPool::release(uint64_t keep_bytes) {
  std::lock_guard lock(mutex_);
  release_locked(keep_bytes);
}

void MemoryPool::release_locked(uint64_t keep_bytes) {
  const Backend& backend = *device_.backend;
  // Largest first: the fewest blocks to give back.
  for (auto it = cached_.end(); it != cached_.begin() && bytes_cached_ > keep_bytes;) {
    --it;
    if (!it->second.settled) continue;
    released_(it->second.ptr, it->first);
    backend.interface.memory_free(backend.context, device_.index, it->second.ptr);
    cached_by_address_.erase(reinterpret_cast<uintptr_t>(it->second.ptr));
    bytes_cached_ -= it->first;
    it = cached_.erase(it);
  }
}

void MemoryPool::release_all() {
  std::lock_guard lock(mutex_);
  for (auto& [capacity, block] : cached_) block.settled = true;
  release_locked(0);
  in_use_.clear();  // live allocations are freed through the runtime's records
  bytes_in_use_ = 0;
}

porta_status_t MemoryPool::set_release_threshold(const char* function, uint64_t bytes) {
  std::lock_guard lock(mutex_);
  const Backend& backend = *device_.backend;
  if (driver_pool()) {
    return call(backend, function, backend.interface.memory_pool_set_release_threshold,
                device_.index, bytes);
  }
  release_threshold_ = bytes;
  return PORTA_SUCCESS;
}

porta_status_t MemoryPool::stats(const char* function, porta_memory_pool_stats_t& out) {
  std::lock_guard lock(mutex_);
  porta_memory_pool_stats_t stats{};
  stats.struct_size = sizeof(stats);
  stats.allocation_count = in_use_.size();
  const Backend& backend = *device_.backend;
  if (driver_pool()) {
    // The driver does not say how often it reused a block: reuse_count stays 0 there.
    porta_status_t status =
        call(backend, function, backend.interface.memory_pool_stats, device_.index, &stats);
    if (status != PORTA_SUCCESS) return status;
  } else {
    stats.bytes_in_use = bytes_in_use_;
    stats.bytes_cached = bytes_cached_;
    stats.peak_bytes_in_use = peak_bytes_in_use_;
    stats.reuse_count = reuse_count_;
    stats.release_threshold = release_threshold_;
  }
  out = stats;
  return PORTA_SUCCESS;
}

porta_status_t MemoryPool::trim(const char* function, uint64_t keep_bytes, uint64_t freed) {
  {
    std::lock_guard lock(mutex_);
    const Backend& backend = *device_.backend;
    if (driver_pool()) {
      return call(backend, function, backend.interface.memory_pool_trim, device_.index, keep_bytes);
    }
  }
  settle_all(freed);
  release(keep_bytes);
  return PORTA_SUCCESS;
}

}  // namespace porta
