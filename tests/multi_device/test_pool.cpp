// The stream-ordered pool: porta_memory_alloc_async / porta_memory_free_async, reuse rules,
// figures, release threshold, trim, and bad input.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "multi_device.h"

using namespace porta_test;

namespace {

porta_memory_pool_stats_t stats(porta_device_t device) {
  porta_memory_pool_stats_t s{};
  s.struct_size = sizeof(s);
  PT_REQUIRE_OK(porta_memory_pool_stats(device, &s));
  return s;
}

void* alloc_async(porta_device_t device, size_t size, porta_stream_t stream) {
  void* ptr = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc_async(device, size, stream, &ptr));
  REQUIRE(ptr != nullptr);
  return ptr;
}

}  // namespace

TEST_CASE("pool: a block freed on a stream is reused by that stream without waiting",
          "[pool][kernels]") {
  CpuDevices runtime("2");
  for (porta_device_t device : {0, 1}) {
    INFO("device " << device);
    Module module(device);
    Stream stream(device);
    Buffer spin_out(device, 256);
    // The stream is busy: nothing below may wait for it.
    PT_REQUIRE_OK(launch_spin(device, module.kernel("spin"), spin_out.as<float>(), stream.get()));
    void* first = alloc_async(device, 1000, stream.get());
    PT_REQUIRE_OK(porta_memset_async(first, 0x11, 1000, stream.get()));
    PT_REQUIRE_OK(porta_memory_free_async(first, stream.get()));
    void* second = alloc_async(device, 900, stream.get());
    CHECK(second == first);
    CHECK(Status{porta_stream_query(stream.get())} == Status{PORTA_NOT_READY});
    PT_REQUIRE_OK(porta_memset_async(second, 0x22, 900, stream.get()));
    std::vector<uint8_t> got(900);
    PT_REQUIRE_OK(porta_memcpy_async(got.data(), second, 900, stream.get()));
    PT_REQUIRE_OK(porta_memory_free_async(second, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    for (uint8_t byte : got) REQUIRE(int(byte) == 0x22);
    CHECK(stats(device).reuse_count == 1);
  }
}

TEST_CASE("pool: another stream reuses a block only once an event orders it after the free",
          "[pool][kernels]") {
  CpuDevices runtime("2");
  const porta_device_t device = 1;
  PT_REQUIRE_OK(porta_memory_pool_set_release_threshold(device, UINT64_MAX));
  Module module(device);
  Stream producer(device), consumer(device);
  Buffer spin_out(device, 256);
  Event freed(device);
  PT_REQUIRE_OK(launch_spin(device, module.kernel("spin"), spin_out.as<float>(), producer.get()));
  void* block = alloc_async(device, 4096, producer.get());
  PT_REQUIRE_OK(porta_memory_free_async(block, producer.get()));
  // Not ordered after the free: the producer may still be using the block.
  void* other = alloc_async(device, 4096, consumer.get());
  CHECK(other != block);
  PT_REQUIRE_OK(porta_memory_free_async(other, consumer.get()));
  // An event recorded before the free does not order the consumer after it either.
  Event early(device);
  void* block2 = alloc_async(device, 8192, producer.get());
  PT_REQUIRE_OK(porta_event_record(early.get(), producer.get()));
  PT_REQUIRE_OK(porta_memory_free_async(block2, producer.get()));
  PT_REQUIRE_OK(porta_stream_wait_event(consumer.get(), early.get()));
  void* not_yet = alloc_async(device, 8192, consumer.get());
  CHECK(not_yet != block2);
  PT_REQUIRE_OK(porta_memory_free_async(not_yet, consumer.get()));
  // One recorded after the frees does.
  PT_REQUIRE_OK(porta_event_record(freed.get(), producer.get()));
  PT_REQUIRE_OK(porta_stream_wait_event(consumer.get(), freed.get()));
  void* reused = alloc_async(device, 4096, consumer.get());
  CHECK(reused == block);
  PT_REQUIRE_OK(porta_memory_free_async(reused, consumer.get()));
  PT_REQUIRE_OK(porta_device_synchronize(device));
}

TEST_CASE(
    "pool: a synchronised stream's blocks serve every stream and the threshold bounds the cache",
    "[pool]") {
  CpuDevices runtime("2");
  const porta_device_t device = 0;
  Stream first(device), second(device);
  // Threshold 0 (the default): synchronising gives the cached blocks back.
  void* block = alloc_async(device, 1 << 16, first.get());
  PT_REQUIRE_OK(porta_memory_free_async(block, first.get()));
  CHECK(stats(device).bytes_cached == 1 << 16);
  PT_REQUIRE_OK(porta_stream_synchronize(first.get()));
  CHECK(stats(device).bytes_cached == 0);
  // A high threshold keeps them, now usable by any stream.
  PT_REQUIRE_OK(porta_memory_pool_set_release_threshold(device, UINT64_MAX));
  block = alloc_async(device, 1 << 16, first.get());
  PT_REQUIRE_OK(porta_memory_free_async(block, first.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(first.get()));
  CHECK(stats(device).bytes_cached == 1 << 16);
  void* reused = alloc_async(device, 1 << 16, second.get());
  CHECK(reused == block);
  PT_REQUIRE_OK(porta_memory_free_async(reused, second.get()));
  // A threshold between keeps the cache at or under it.
  void* extra = alloc_async(device, 1 << 17, second.get());
  PT_REQUIRE_OK(porta_memory_free_async(extra, second.get()));
  PT_REQUIRE_OK(porta_memory_pool_set_release_threshold(device, 1 << 16));
  PT_REQUIRE_OK(porta_stream_synchronize(second.get()));
  CHECK(stats(device).bytes_cached <= 1 << 16);
}

// A wait for the whole device that began before a block was freed does not cover the work queued
// before the free on a stream it did not wait for: the block stays cached (threshold 0 would give
// it back at once) until that stream is synchronised. Each of the three waits in turn.
TEST_CASE("pool: a device-wide wait settles only the blocks freed before it began", "[pool]") {
  CpuDevices runtime("2");
  const porta_device_t device = 0;
  for (const char* wait :
       {"porta_device_synchronize", "porta_memory_free", "porta_memory_pool_trim"}) {
    INFO(wait);
    void* other = nullptr;
    PT_REQUIRE_OK(porta_memory_alloc(device, 256, &other));
    Stream busy(device);
    porta_status_t waited = PORTA_ERROR_INTERNAL;
    std::jthread waiter;  // joined after busy_hold lets it go, even when a check throws
    Hold busy_hold(busy.get());
    waiter = std::jthread([&] {
      const std::string name = wait;
      waited = name == "porta_device_synchronize" ? porta_device_synchronize(device)
               : name == "porta_memory_free"      ? porta_memory_free(other)
                                                  : porta_memory_pool_trim(device, 0);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the wait is under way
    Stream late(device);
    Hold late_hold(late.get());
    void* block = alloc_async(device, 1 << 16, late.get());
    PT_REQUIRE_OK(porta_memory_free_async(block, late.get()));
    busy_hold.release();
    waiter.join();
    CHECK(Status{waited} == Status{PORTA_SUCCESS});
    CHECK(stats(device).bytes_cached == 1 << 16);
    late_hold.release();
    PT_REQUIRE_OK(porta_stream_synchronize(late.get()));
    CHECK(stats(device).bytes_cached == 0);
  }
}

TEST_CASE(
    "pool: figures count blocks in use, cached, the peak and reuse, and trim empties the cache",
    "[pool]") {
  CpuDevices runtime("2");
  const porta_device_t device = 1;
  Stream stream(device);
  PT_REQUIRE_OK(porta_memory_pool_set_release_threshold(device, UINT64_MAX));
  porta_memory_pool_stats_t s = stats(device);
  CHECK(s.bytes_in_use == 0);
  CHECK(s.bytes_cached == 0);
  CHECK(s.allocation_count == 0);
  CHECK(s.release_threshold == UINT64_MAX);
  void* a = alloc_async(device, 1000, stream.get());  // a 1024-byte block
  void* b = alloc_async(device, 5000, stream.get());  // 5120
  s = stats(device);
  CHECK(s.bytes_in_use == 1024 + 5120);
  CHECK(s.allocation_count == 2);
  CHECK(s.peak_bytes_in_use == 1024 + 5120);
  // The allocation itself is recorded with the size asked for.
  porta_pointer_info_t info{};
  info.struct_size = sizeof(info);
  PT_REQUIRE_OK(porta_pointer_info(b, &info));
  CHECK(info.kind == PORTA_MEMORY_DEVICE);
  CHECK(info.device == device);
  CHECK(info.size == 5000);
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memset(b, 0, 5001));
  PT_REQUIRE_OK(porta_memory_free_async(b, stream.get()));
  s = stats(device);
  CHECK(s.bytes_in_use == 1024);
  CHECK(s.bytes_cached == 5120);
  CHECK(s.allocation_count == 1);
  CHECK(s.peak_bytes_in_use == 1024 + 5120);
  // A request more than twice smaller than the cached block gets a block of its own.
  void* small = alloc_async(device, 100, stream.get());
  CHECK(small != b);
  CHECK(stats(device).reuse_count == 0);
  PT_REQUIRE_OK(porta_memory_free_async(small, stream.get()));
  PT_REQUIRE_OK(porta_memory_free_async(a, stream.get()));
  PT_REQUIRE_OK(porta_memory_pool_trim(device, 1024));
  CHECK(stats(device).bytes_cached <= 1024);
  PT_REQUIRE_OK(porta_memory_pool_trim(device, 0));
  s = stats(device);
  CHECK(s.bytes_cached == 0);
  CHECK(s.bytes_in_use == 0);
  CHECK(s.allocation_count == 0);
}

TEST_CASE("pool: porta_memory_free takes pool memory, and free_async takes porta_memory_alloc's",
          "[pool]") {
  CpuDevices runtime("2");
  Stream stream(0);
  PT_REQUIRE_OK(porta_memory_pool_set_release_threshold(0, UINT64_MAX));
  void* pooled = alloc_async(0, 512, stream.get());
  PT_REQUIRE_OK(porta_memory_free(pooled));
  CHECK(stats(0).bytes_in_use == 0);
  void* plain = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(0, 4096, &plain));
  PT_REQUIRE_OK(porta_memory_free_async(plain, stream.get()));
  CHECK(stats(0).bytes_cached == 4096);
  CHECK(alloc_async(0, 4096, stream.get()) == plain);
  PT_REQUIRE_OK(porta_memory_free_async(plain, stream.get()));
}

TEST_CASE("pool: bad input is refused and changes nothing", "[pool][errors]") {
  CpuDevices runtime("2");
  Stream stream0(0), stream1(1);
  void* out = nullptr;
  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_memory_alloc_async(2, 64, stream0.get(), &out));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_memory_alloc_async(0, 64, stream0.get(), nullptr));
  // The stream must belong to the device allocated on.
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_memory_alloc_async(0, 64, stream1.get(), &out));
  porta_stream_t stale = nullptr;
  PT_REQUIRE_OK(porta_stream_create(0, &stale));
  PT_REQUIRE_OK(porta_stream_destroy(stale));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_memory_alloc_async(0, 64, stale, &out));
  CHECK(out == nullptr);
  PT_CHECK_OK(porta_memory_alloc_async(0, 0, stream0.get(), &out));
  CHECK(out == nullptr);

  void* block = alloc_async(1, 256, stream1.get());
  // Freeing on a stream of another device: refused, the memory stays live.
  const CallResult wrong =
      call_on_fresh_thread([&] { return porta_memory_free_async(block, stream0.get()); });
  CHECK(Status{wrong.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(wrong.message.find("memory of device 1 but the stream belongs to device 0") !=
        std::string::npos);
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_memory_free_async(static_cast<char*>(block) + 16, stream1.get()));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_memory_free_async(block, stale));
  CHECK(stats(1).allocation_count == 1);
  PT_REQUIRE_OK(porta_memset(block, 0, 256));
  PT_REQUIRE_OK(porta_memory_free_async(block, stream1.get()));
  // A double free names what happened.
  const CallResult twice =
      call_on_fresh_thread([&] { return porta_memory_free_async(block, stream1.get()); });
  CHECK(Status{twice.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(twice.message.find("already freed") != std::string::npos);
  const CallResult cached = call_on_fresh_thread([&] { return porta_memory_free(block); });
  CHECK(Status{cached.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(cached.message.find("double free") != std::string::npos);
  // Once a block has gone back to the backend (whole pages of it, which the host cannot read),
  // the messages name the call that freed it.
  void* pages = alloc_async(1, 1 << 16, stream1.get());
  PT_REQUIRE_OK(porta_memory_free_async(pages, stream1.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream1.get()));
  const CallResult after = call_on_fresh_thread([&] { return porta_memory_free(pages); });
  CHECK(Status{after.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  INFO(after.message);
  CHECK(after.message.find("freed by porta_memory_free_async") != std::string::npos);
  int on_stack = 0;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_free_async(&on_stack, stream0.get()));
  void* pinned = nullptr;
  PT_REQUIRE_OK(porta_host_alloc(0, 64, &pinned));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_free_async(pinned, stream0.get()));
  PT_REQUIRE_OK(porta_host_free(pinned));
  PT_CHECK_OK(porta_memory_free_async(nullptr, stream0.get()));

  porta_memory_pool_stats_t s{};
  s.struct_size = sizeof(s) - 1;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_pool_stats(0, &s));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_pool_stats(0, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_memory_pool_stats(5, &s));
  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_memory_pool_trim(-1, 0));
  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_memory_pool_set_release_threshold(2, 0));
}

// A block in the cache is the pool's to answer for, and is recorded as freed memory only once it
// goes back to the backend: cached blocks neither push the records of memory freed earlier out
// (which the CPU backend still keeps reserved and unreadable), nor lose their own record to a
// range that runs into them while they are still mapped.
TEST_CASE("pool: freed memory is named as such whether cached or given back", "[pool][errors]") {
  CpuDevices runtime("2");
  Stream stream(0);
  std::vector<uint8_t> host(64, 0x44);
  void* freed = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(0, 4096, &freed));
  PT_REQUIRE_OK(porta_memory_free(freed));
  PT_REQUIRE_OK(porta_memory_pool_set_release_threshold(0, UINT64_MAX));
  std::vector<void*> blocks;
  for (int i = 0; i < 1100; ++i) blocks.push_back(alloc_async(0, 256, stream.get()));
  for (void* block : blocks) PT_REQUIRE_OK(porta_memory_free_async(block, stream.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
  CHECK(stats(0).bytes_cached >= 1100 * 256);
  CallResult copy =
      call_on_fresh_thread([&] { return porta_memcpy(host.data(), freed, host.size()); });
  CHECK(Status{copy.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(copy.message.find("use after free") != std::string::npos);

  PT_REQUIRE_OK(porta_memory_pool_trim(0, 0));

  // A range that starts before a cached block and runs into it.
  char* const block = static_cast<char*>(alloc_async(0, 256, stream.get()));
  PT_REQUIRE_OK(porta_memory_free_async(block, stream.get()));
  copy = call_on_fresh_thread([&] { return porta_memcpy(host.data(), block - 16, 64); });
  CHECK(Status{copy.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(copy.message.find("porta_memory_free_async released") != std::string::npos);
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memset(block - 16, 0, 64));
  // Given back to the backend, it is still named.
  PT_REQUIRE_OK(porta_memory_pool_trim(0, 0));
  CHECK(stats(0).bytes_cached == 0);
  copy = call_on_fresh_thread([&] { return porta_memcpy(host.data(), block, 16); });
  CHECK(Status{copy.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  INFO(copy.message);
  CHECK(copy.message.find("use after free") != std::string::npos);
  CHECK(copy.message.find("porta_memory_free_async") != std::string::npos);
  CHECK(host == std::vector<uint8_t>(64, 0x44));
  PT_REQUIRE_OK(porta_memory_pool_set_release_threshold(0, 0));
}

TEST_CASE("pool: streams allocating and freeing at once on both devices stay consistent",
          "[pool][concurrency]") {
  CpuDevices runtime("2");
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &failures] {
      const porta_device_t device = t % 2;
      porta_stream_t stream = nullptr;
      if (porta_stream_create(device, &stream) != PORTA_SUCCESS) {
        ++failures;
        return;
      }
      for (int i = 0; i < 200; ++i) {
        void* ptr = nullptr;
        const size_t size = 256 * (1 + (i * 7 + t) % 16);
        if (porta_memory_alloc_async(device, size, stream, &ptr) != PORTA_SUCCESS ||
            porta_memset_async(ptr, t, size, stream) != PORTA_SUCCESS ||
            porta_memory_free_async(ptr, stream) != PORTA_SUCCESS) {
          ++failures;
        }
        if (i % 50 == 0 && porta_stream_synchronize(stream) != PORTA_SUCCESS) ++failures;
      }
      if (porta_stream_destroy(stream) != PORTA_SUCCESS) ++failures;
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(failures == 0);
  for (porta_device_t device : {0, 1}) {
    CHECK(stats(device).allocation_count == 0);
    CHECK(stats(device).bytes_in_use == 0);
  }
}
