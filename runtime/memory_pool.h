// The stream-ordered pool of one device: blocks freed on a stream wait in a cache until a later
// allocation may safely reuse them (see porta_memory_alloc_async in porta.h).
#pragma once

#include <porta/porta.h>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

namespace porta {

struct Device;
struct Stream;

// What one stream knows about frees, for deciding which cached blocks it may reuse.
struct StreamOrder {
  std::mutex mutex;
  uint64_t frees = 0;  // porta_memory_free_async calls on this stream so far
  // For each other stream (by serial): how many of its frees this stream is ordered after,
  // through porta_stream_wait_event on events recorded after them.
  std::unordered_map<uint64_t, uint64_t> waited;
};

// Where the backend has pools of its own (its memory_alloc_async slots: CUDA, HIP) they serve
// the device, and the reuse rules are the driver's; otherwise the cache below does.
class MemoryPool {
 public:
  // released(ptr, bytes) is told of each block that goes back to the backend, to the driver's
  // pool, or (memory that never joined the cache) straight to the backend, while the pool's lock
  // is held: from then on it is freed memory for the runtime's records. A cached block is the
  // pool's own until then (holds_freed).
  using Released = std::function<void(void* ptr, size_t bytes)>;
  MemoryPool(Device& device, Released released) : device_(device), released_(std::move(released)) {}

  // A block of at least size bytes (> 0) for work on stream, reused from the cache when one is
  // safe for the stream, else new from the backend.
  porta_status_t allocate(const char* function, size_t size, Stream& stream, void** out_ptr);
  // Frees a live device allocation (its record already removed) in the order of stream:
  // through the driver's pool, or into the cache (size: the allocation's, for memory that did
  // not come from the pool).
  porta_status_t free(const char* function, void* ptr, size_t size, Stream& stream);
  // The block capacity of a live pool allocation, removing it from the in-use figures; 0 when ptr
  // did not come from the pool.
  size_t take_in_use(void* ptr);

  // Whether [begin, end) overlaps a cached (freed) block; *out_base gets the block's start.
  bool holds_freed(uintptr_t begin, uintptr_t end, uintptr_t* out_base);

  // Blocks freed on the stream up to its free number epoch are safe for every stream now (it was
  // synchronised); then cached bytes above the release threshold go back to the backend.
  void settle_stream(uint64_t stream_serial, uint64_t epoch);
  // How many blocks have been freed into the cache so far, on any stream: taken before a wait for
  // the whole device, whose end settles only those (settle_all).
  uint64_t frees_so_far();
  // The same as settle_stream for every stream, the blocks freed up to the count `freed` (the
  // device was synchronised after they were).
  void settle_all(uint64_t freed);
  // Releases settled blocks until at most keep_bytes stay cached.
  void release(uint64_t keep_bytes);
  // Releases every cached block; the device must be idle (shutdown).
  void release_all();

  porta_status_t set_release_threshold(const char* function, uint64_t bytes);
  porta_status_t stats(const char* function, porta_memory_pool_stats_t& out);
  // Device synchronised first by the caller, after `freed` blocks had been freed (settle_all).
  porta_status_t trim(const char* function, uint64_t keep_bytes, uint64_t freed);

 private:
  struct Block {
    void* ptr;
    uint64_t stream_serial;
    uint64_t epoch;  // the stream's free number
    uint64_t order;  // the device's: frees_ when it was cached
    bool settled;
  };
  bool reusable(const Block& block, Stream& stream);
  bool driver_pool() const;                  // mutex_ held
  void release_locked(uint64_t keep_bytes);  // mutex_ held

  Device& device_;
  Released released_;
  std::mutex mutex_;
  std::multimap<size_t, Block> cached_;            // by capacity
  std::map<uintptr_t, size_t> cached_by_address_;  // the same blocks: base to capacity
  std::unordered_map<void*, size_t> in_use_;       // live pool allocations: block capacity
  uint64_t bytes_in_use_ = 0;
  uint64_t bytes_cached_ = 0;
  uint64_t peak_bytes_in_use_ = 0;
  uint64_t reuse_count_ = 0;
  uint64_t release_threshold_ = 0;
  uint64_t frees_ = 0;               // blocks cached so far
  bool driver_lacks_pools_ = false;  // its memory_alloc_async answered UNSUPPORTED
};

}  // namespace porta
