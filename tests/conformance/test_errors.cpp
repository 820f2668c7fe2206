// Bad input: every documented error, with its exact status, a non-empty last error message, and
// nothing changed where that can be observed (outputs untouched, memory contents, objects still
// alive and usable).
#include <elf.h>
#include <porta/porta_plugin.h>
#include <sys/mman.h>
#include <unistd.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>

#include "../elf_image.h"
#include "common.h"

using namespace porta_test;

namespace {

// Values that are no handle the runtime ever issued.
std::vector<uintptr_t> made_up_handles() {
  static int local;
  return {0x1234,        0xDEADBEEF,         reinterpret_cast<uintptr_t>(&local),
          ~uintptr_t{0}, uintptr_t{1} << 63, 0x00FF000000000001ull};
}

template <typename Handle>
Handle as_handle(uintptr_t value) {
  return reinterpret_cast<Handle>(value);
}

// How much of a code object must be present to load it: for an ELF file, the end of its last
// loadable segment (what follows, section headers and debug information, may be cut without harm);
// otherwise the whole image.
size_t loaded_bytes(const std::vector<char>& image) {
  if (image.size() < sizeof(Elf64_Ehdr) || std::memcmp(image.data(), ELFMAG, SELFMAG) != 0 ||
      image[EI_CLASS] != ELFCLASS64) {
    return image.size();
  }
  Elf64_Ehdr header;
  std::memcpy(&header, image.data(), sizeof(header));
  size_t end = 0;
  for (size_t i = 0; i < header.e_phnum; ++i) {
    const size_t offset = header.e_phoff + i * header.e_phentsize;
    if (offset + sizeof(Elf64_Phdr) > image.size()) break;
    Elf64_Phdr segment;
    std::memcpy(&segment, image.data() + offset, sizeof(segment));
    if (segment.p_type == PT_LOAD) end = std::max<size_t>(end, segment.p_offset + segment.p_filesz);
  }
  return end > 0 ? std::min(end, image.size()) : image.size();
}

porta_device_t default_device() {
  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  return device;
}

}  // namespace

TEST_CASE("errors: status names", "[errors]") {
  const std::pair<porta_status_t, const char*> names[] = {
      {PORTA_SUCCESS, "PORTA_SUCCESS"},
      {PORTA_NOT_READY, "PORTA_NOT_READY"},
      {PORTA_ERROR_INVALID_ARGUMENT, "PORTA_ERROR_INVALID_ARGUMENT"},
      {PORTA_ERROR_INVALID_HANDLE, "PORTA_ERROR_INVALID_HANDLE"},
      {PORTA_ERROR_NOT_FOUND, "PORTA_ERROR_NOT_FOUND"},
      {PORTA_ERROR_OUT_OF_MEMORY, "PORTA_ERROR_OUT_OF_MEMORY"},
      {PORTA_ERROR_UNSUPPORTED, "PORTA_ERROR_UNSUPPORTED"},
      {PORTA_ERROR_UNAVAILABLE, "PORTA_ERROR_UNAVAILABLE"},
      {PORTA_ERROR_INCOMPATIBLE_VERSION, "PORTA_ERROR_INCOMPATIBLE_VERSION"},
      {PORTA_ERROR_DEVICE_LOST, "PORTA_ERROR_DEVICE_LOST"},
      {PORTA_ERROR_BACKEND, "PORTA_ERROR_BACKEND"},
      {PORTA_ERROR_KERNEL_HAZARD, "PORTA_ERROR_KERNEL_HAZARD"},
      {PORTA_ERROR_INTERNAL, "PORTA_ERROR_INTERNAL"},
  };
  for (const auto& [status, name] : names) {
    const char* got = porta_status_name(status);
    REQUIRE(got != nullptr);
    CHECK(std::string(got) == name);
  }
  for (porta_status_t unknown : {-10, -1000, 2, 12345, INT32_MIN, INT32_MAX}) {
    INFO("status " << unknown);
    const char* got = porta_status_name(unknown);
    REQUIRE(got != nullptr);
    CHECK(std::string(got).size() > 0);
  }
}

TEST_CASE("errors: the last error message is per thread and kept by successful calls", "[errors]") {
  std::string initial, after_failure, after_success;
  std::thread thread([&] {
    const char* message = porta_last_error_message();
    initial = message ? message : "(NULL)";
    int32_t count = 0;
    porta_device_count(nullptr);
    after_failure = porta_last_error_message();
    porta_device_count(&count);
    after_success = porta_last_error_message();
  });
  thread.join();
  CHECK(initial.empty());
  CHECK_FALSE(after_failure.empty());
  CHECK(after_success == after_failure);
  // Another thread's failure did not touch this thread's message.
  const std::string mine = porta_last_error_message();
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_count(nullptr));
  CHECK(std::string(porta_last_error_message()) == mine);
}

TEST_CASE("errors: NOT_READY is not an error and sets no message", "[errors]" PT_KERNELS_TAG) {
  const porta_device_t device = default_device();
  Module module(device);
  porta_kernel_t spin = module.kernel("spin");
  Buffer out(device, 256);
  Stream stream(device);
  Event event(device);
  (void)spin_iterations(device);  // calibrate before the fresh thread
  porta_status_t stream_status = PORTA_SUCCESS, event_status = PORTA_SUCCESS;
  std::string message = "unset";
  std::thread thread([&] {
    launch_spin(device, spin, out.as<float>(), stream.get());
    porta_event_record(event.get(), stream.get());
    stream_status = porta_stream_query(stream.get());
    event_status = porta_event_query(event.get());
    message = porta_last_error_message();
  });
  thread.join();
  CHECK(Status{stream_status} == Status{PORTA_NOT_READY});
  CHECK(Status{event_status} == Status{PORTA_NOT_READY});
  CHECK(message.empty());
  PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
}

TEST_CASE("errors: NULL outputs", "[errors]") {
  const porta_device_t device = devices().front();
  Stream stream(device);
  Event a(device), b(device);
  PT_REQUIRE_OK(porta_event_record(a.get(), stream.get()));
  PT_REQUIRE_OK(porta_event_record(b.get(), stream.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
  int local = 0;
  const char name[] = "saxpy";
  const char path[] = "/nonexistent/porta/module.so";

  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_backend_selected(nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_count(nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_default(nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_properties(device, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_memory_info(device, nullptr, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_native_handle(device, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_alloc(device, 64, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_host_alloc(device, 64, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_pointer_info(&local, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_create(device, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_default(device, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_device(stream.get(), nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_stream_native_handle(stream.get(), nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_event_create(device, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_event_elapsed_ms(a.get(), b.get(), nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_loader_report_count(nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_loader_report_get(0, nullptr));
  // NULL inputs of the module calls.
  porta_module_t module = nullptr;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_module_load(device, nullptr, &module));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_module_load_data(device, nullptr, 64, &module));
  CHECK(module == nullptr);
  // A NULL output is refused before the file is even looked at.
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_module_load(device, path, nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_module_load_data(device, name, 5, nullptr));
}

TEST_CASE("errors: NULL outputs of module lookups", "[errors]" PT_KERNELS_TAG) {
  const porta_device_t device = devices().front();
  Module module(device);
  porta_kernel_t kernel = nullptr;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_module_load(device, kernels_path().c_str(), nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_kernel_get(module.get(), "saxpy", nullptr));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_kernel_get(module.get(), nullptr, &kernel));
  CHECK(kernel == nullptr);
}

TEST_CASE("errors: bad frees change nothing", "[errors][memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    SECTION("double free") {
      void* ptr = nullptr;
      PT_REQUIRE_OK(porta_memory_alloc(device, 1024, &ptr));
      PT_REQUIRE_OK(porta_memory_free(ptr));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_free(ptr));
      const CallResult again = call_on_fresh_thread([&] { return porta_memory_free(ptr); });
      // Named a double free where freed addresses are remembered, that is, where they stay the
      // device's (otherwise the address may already be the host's own memory).
      const bool remembered = properties(device).capabilities & PORTA_CAPABILITY_RESERVED_ADDRESSES;
      CHECK_THAT(again.message,
                 Catch::Contains(remembered ? "double free" : "not a live allocation") &&
                     Catch::Contains("porta_memory_free"));
      void* host = nullptr;
      PT_REQUIRE_OK(porta_host_alloc(device, 1024, &host));
      PT_REQUIRE_OK(porta_host_free(host));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_host_free(host));
    }
    SECTION("interior pointers") {
      void* ptr = nullptr;
      PT_REQUIRE_OK(porta_memory_alloc(device, 4096, &ptr));
      PT_REQUIRE_OK(porta_memset(ptr, 0x42, 4096));
      for (size_t offset : {size_t{1}, size_t{256}, size_t{4095}}) {
        INFO("offset " << offset);
        PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                       porta_memory_free(static_cast<char*>(ptr) + offset));
      }
      // Still alive, intact and usable.
      porta_pointer_info_t info;
      info.struct_size = sizeof(info);
      PT_REQUIRE_OK(porta_pointer_info(ptr, &info));
      CHECK(info.kind == PORTA_MEMORY_DEVICE);
      CHECK(download(ptr, 4096) == std::vector<uint8_t>(4096, 0x42));
      PT_CHECK_OK(porta_memory_free(ptr));

      void* host = nullptr;
      PT_REQUIRE_OK(porta_host_alloc(device, 4096, &host));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_host_free(static_cast<char*>(host) + 8));
      PT_CHECK_OK(porta_host_free(host));
    }
    SECTION("foreign pointers") {
      void* heap = std::malloc(1024);
      int local = 0;
      for (void* foreign : {heap, static_cast<void*>(&local), reinterpret_cast<void*>(0x1234)}) {
        PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_free(foreign));
        PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_host_free(foreign));
      }
      std::free(heap);
    }
    SECTION("the wrong kind of free") {
      Buffer device_memory(device, 1024);
      Buffer pinned(device, 1024, Buffer::kPinned);
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_host_free(device_memory.get()));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_free(pinned.get()));
      porta_pointer_info_t info;
      info.struct_size = sizeof(info);
      PT_REQUIRE_OK(porta_pointer_info(device_memory.get(), &info));
      CHECK(info.kind == PORTA_MEMORY_DEVICE);
      PT_REQUIRE_OK(porta_pointer_info(pinned.get(), &info));
      CHECK(info.kind == PORTA_MEMORY_HOST_PINNED);
      // (The Buffers free them properly.)
    }
  }
}

TEST_CASE("errors: copies that overrun an allocation change nothing", "[errors][memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    Buffer d(device, 1024), d2(device, 2048);
    Buffer pinned(device, 100, Buffer::kPinned);
    PT_REQUIRE_OK(porta_memset(d.get(), 0x11, 1024));
    PT_REQUIRE_OK(porta_memset(d2.get(), 0x22, 2048));
    std::memset(pinned.get(), 0x33, 100);
    std::vector<uint8_t> host(4096, 0x44);
    char* const dp = d.bytes();

    struct Copy {
      void* dst;
      const void* src;
      size_t size;
      const char* what;
    };
    const Copy bad[] = {
        {dp, host.data(), 1025, "host to device, one byte too many"},
        {dp + 512, host.data(), 513, "offset + size past the end"},
        {dp + 1023, host.data(), 2, "last byte + 1"},
        {host.data(), dp, 1025, "device to host, source overrun"},
        {host.data(), dp + 1000, 25, "device to host, interior source overrun"},
        {d2.get(), dp, 2048, "device to device, source overrun"},
        {dp, d2.get(), 2048, "device to device, destination overrun"},
        {pinned.get(), host.data(), 101, "pinned destination overrun"},
        {host.data(), pinned.get(), 101, "pinned source overrun"},
        {dp, host.data(), SIZE_MAX, "SIZE_MAX"},
        {dp + 512, host.data(), SIZE_MAX - 256, "offset + size wraps around"},
        {nullptr, host.data(), 16, "NULL destination"},
        {dp, nullptr, 16, "NULL source"},
        // Overlapping ranges, as memcpy's: undefined on the GPU drivers, refused by OpenCL.
        {dp + 1, dp, 512, "device ranges overlapping, dst after src"},
        {dp, dp + 100, 200, "device ranges overlapping, src after dst"},
        {dp, dp, 16, "dst is src"},
        {pinned.bytes() + 10, pinned.bytes(), 20, "pinned ranges overlapping"},
        {host.data() + 1, host.data(), 100, "host ranges overlapping"},
    };
    for (const Copy& copy : bad) {
      INFO(copy.what);
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memcpy(copy.dst, copy.src, copy.size));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                     porta_memcpy_async(copy.dst, copy.src, copy.size, stream.get()));
    }
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(download(d.get(), 1024) == std::vector<uint8_t>(1024, 0x11));
    CHECK(download(d2.get(), 2048) == std::vector<uint8_t>(2048, 0x22));
    CHECK(std::vector<uint8_t>(pinned.bytes(), pinned.bytes() + 100) ==
          std::vector<uint8_t>(100, 0x33));
    CHECK(host == std::vector<uint8_t>(4096, 0x44));
    // The exact fit is fine.
    PT_CHECK_OK(porta_memcpy(dp + 512, host.data(), 512));
  }
}

namespace {

// A bad copy, blocking and on a stream, must fail with INVALID_ARGUMENT and a message containing
// `says` (what it wrote is checked by the callers).
void check_refused(void* dst, const void* src, size_t size, const std::string& says,
                   porta_stream_t stream) {
  INFO("dst " << dst << " src " << src << " size " << size);
  for (int async = 0; async < 2; ++async) {
    INFO((async ? "async" : "blocking"));
    const CallResult copied = call_on_fresh_thread([&] {
      return async ? porta_memcpy_async(dst, src, size, stream) : porta_memcpy(dst, src, size);
    });
    INFO("copy: " << copied.message);
    CHECK(Status{copied.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    CHECK_THAT(copied.message, Catch::Contains(says));
  }
}

void check_set_refused(void* dst, size_t size, const std::string& says, porta_stream_t stream) {
  for (int async = 0; async < 2; ++async) {
    INFO((async ? "async" : "blocking") << " set of " << size << " bytes at " << dst);
    const CallResult set = call_on_fresh_thread([&] {
      return async ? porta_memset_async(dst, 0x77, size, stream) : porta_memset(dst, 0x77, size);
    });
    INFO("set: " << set.message);
    CHECK(Status{set.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    CHECK_THAT(set.message, Catch::Contains(says));
  }
}

}  // namespace

TEST_CASE("errors: copies that touch an allocation without lying inside it change nothing",
          "[errors][memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    constexpr size_t kSize = 4096;
    Buffer d(device, kSize);
    Buffer pinned(device, kSize, Buffer::kPinned);
    PT_REQUIRE_OK(porta_memset(d.get(), 0x11, kSize));
    std::memset(pinned.get(), 0x33, kSize);
    std::vector<uint8_t> host(256, 0x44);
    for (char* base : {d.bytes(), pinned.bytes()}) {
      INFO((base == d.bytes() ? "device memory" : "pinned memory"));
      // Starting at the end of the allocation: an overrun by one element.
      check_refused(base + kSize, host.data(), 64, "start at the end of", stream.get());
      check_refused(host.data(), base + kSize, 64, "start at the end of", stream.get());
      // Starting before the allocation and running into it.
      check_refused(base - 16, host.data(), 64, "run into", stream.get());
      check_refused(host.data(), base - 16, 64, "run into", stream.get());
      check_set_refused(base - 16, 64, "run into", stream.get());
    }
    check_set_refused(d.bytes() + kSize, 64, "start at the end of", stream.get());
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(download(d.get(), kSize) == std::vector<uint8_t>(kSize, 0x11));
    CHECK(std::vector<uint8_t>(pinned.bytes(), pinned.bytes() + kSize) ==
          std::vector<uint8_t>(kSize, 0x33));
    CHECK(host == std::vector<uint8_t>(256, 0x44));
  }
}

// Host memory the process cannot read at either end of the range (a page unmapped again, a
// device allocation's guard page, an address no one mapped) is refused, not faulted on.
TEST_CASE("errors: copies from or to memory the host cannot read are refused", "[errors][memory]") {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* unmapped =
      mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(unmapped != MAP_FAILED);
  // The second page made unreadable (kept reserved: unmapped, a sanitizer's allocator could
  // map it again before the copies).
  REQUIRE(mprotect(static_cast<char*>(unmapped) + page, page, PROT_NONE) == 0);
  char* const hole = static_cast<char*>(unmapped) + page;
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    Buffer d(device, 4096);
    PT_REQUIRE_OK(porta_memset(d.get(), 0x11, 4096));
    std::vector<uint8_t> host(64, 0x44);
    const char* says = "nor host memory this process can read";
    for (char* wild : {hole, hole + 100, hole - 8}) {  // the last runs from mapped into the hole
      check_refused(d.get(), wild, 64, says, stream.get());
      check_refused(wild, d.get(), 64, says, stream.get());
      check_refused(host.data(), wild, 64, says, stream.get());
      check_refused(wild, host.data(), 64, says, stream.get());
    }
    if (properties(device).capabilities & PORTA_CAPABILITY_HOST_IS_DEVICE) {
      // The CPU backend's guard page after an allocation, past the byte that starts at its end.
      check_refused(host.data(), d.bytes() + 4096 + 1, 8, says, stream.get());
      check_refused(d.bytes() + 4096 + 1, host.data(), 8, says, stream.get());
    }
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(download(d.get(), 4096) == std::vector<uint8_t>(4096, 0x11));
    CHECK(host == std::vector<uint8_t>(64, 0x44));
  }
  munmap(unmapped, 2 * page);
}

// A blocking copy or set runs on the device's default stream, after the work queued there: an
// error of that work is the stream's, for its synchronize to report, not the call's.
TEST_CASE("errors: blocking copies and sets leave an earlier error to the default stream",
          "[errors][memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    porta_stream_t default_stream = nullptr;
    PT_REQUIRE_OK(porta_stream_default(device, &default_stream));
    Buffer d(device, 64);
    std::vector<uint8_t> host(64, 0x44);
    for (int call = 0; call < 2; ++call) {
      INFO((call == 0 ? "porta_memcpy" : "porta_memset"));
      // On the CPU backend a host function's exception fails its stream.
      PT_REQUIRE_OK(porta_stream_launch_host_func(
          default_stream, [](void*) { throw std::runtime_error("failed on purpose"); }, nullptr));
      PT_CHECK_OK(call == 0 ? porta_memcpy(d.get(), host.data(), 64)
                            : porta_memset(d.get(), 0x44, 64));
      CHECK(download(d.get(), 64) == host);
      const CallResult later =
          call_on_fresh_thread([&] { return porta_stream_synchronize(default_stream); });
      if (later.status == PORTA_SUCCESS) {
        WARN("device " << device << ": a host function's exception does not fail its stream");
        break;
      }
      CHECK(Status{later.status} == Status{PORTA_ERROR_INTERNAL});
      CHECK_THAT(later.message, Catch::Contains("failed on purpose"));
      PT_CHECK_OK(porta_stream_synchronize(default_stream));
    }
  }
}

TEST_CASE("errors: copies into freed memory are refused as use after free", "[errors][memory]") {
  for (porta_device_t device : devices_with_reserved_addresses("use after free")) {
    INFO("device " << device);
    Stream stream(device);
    std::vector<uint8_t> host(256, 0x44);
    void* freed = nullptr;
    PT_REQUIRE_OK(porta_memory_alloc(device, 1024, &freed));
    PT_REQUIRE_OK(porta_memory_free(freed));
    char* const f = static_cast<char*>(freed);
    for (char* at : {f, f + 512}) {
      check_refused(at, host.data(), 64, "use after free", stream.get());
      check_refused(host.data(), at, 64, "use after free", stream.get());
      check_set_refused(at, 64, "porta_memory_free", stream.get());
    }
    CHECK(host == std::vector<uint8_t>(256, 0x44));
    // Memory allocated again at those addresses is live again.
    void* again = nullptr;
    PT_REQUIRE_OK(porta_memory_alloc(device, 1024, &again));
    if (again == freed) PT_CHECK_OK(porta_memcpy(again, host.data(), 64));
    PT_CHECK_OK(porta_memory_free(again));
  }
}

// As many freed allocations are remembered as the CPU backend keeps reserved (1024,
// docs/reliability.md): one that was still reserved but no longer remembered would be taken for
// host memory, which the host cannot read there.
TEST_CASE("errors: the last 1024 freed allocations are refused as use after free",
          "[errors][memory]") {
  for (porta_device_t device : devices_with_reserved_addresses("use after free, 1024 frees on")) {
    INFO("device " << device);
    Stream stream(device);
    std::vector<uint8_t> host(64, 0x44);
    void* oldest = nullptr;
    PT_REQUIRE_OK(porta_memory_alloc(device, 64, &oldest));
    PT_REQUIRE_OK(porta_memory_free(oldest));
    for (int i = 1; i < 1024; ++i) {
      void* later = nullptr;
      PT_REQUIRE_OK(porta_memory_alloc(device, 64, &later));
      PT_REQUIRE_OK(porta_memory_free(later));
    }
    check_refused(host.data(), oldest, 64, "use after free", stream.get());
    check_refused(oldest, host.data(), 64, "use after free", stream.get());
    CHECK(host == std::vector<uint8_t>(64, 0x44));
  }
}

TEST_CASE("errors: freed addresses the host maps again are host memory", "[errors][memory]") {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (porta_device_t device : devices_with_reserved_addresses("host memory at freed addresses")) {
    INFO("device " << device);
    Stream stream(device);
    Buffer d(device, 64);
    void* freed = nullptr;
    PT_REQUIRE_OK(porta_memory_alloc(device, page, &freed));
    PT_REQUIRE_OK(porta_memory_free(freed));
    std::vector<uint8_t> host(64, 0x44);
    check_refused(d.get(), freed, 64, "use after free", stream.get());
    // The host takes the addresses: as a GPU driver's next mmap may, or here, over the CPU
    // backend's reserved range, as if it had given the range back.
    const bool host_is_device = properties(device).capabilities & PORTA_CAPABILITY_HOST_IS_DEVICE;
    const int fixed = host_is_device ? MAP_FIXED : MAP_FIXED_NOREPLACE;
    void* mapped =
        mmap(freed, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | fixed, -1, 0);
    if (mapped != freed) {
      if (mapped != MAP_FAILED) munmap(mapped, page);
      WARN("device " << device << ": the driver keeps freed addresses mapped: nothing to check");
      continue;
    }
    std::memset(mapped, 0x5a, page);
    PT_CHECK_OK(porta_memcpy(d.get(), mapped, 64));
    CHECK(download(d.get(), 64) == std::vector<uint8_t>(64, 0x5a));
    PT_CHECK_OK(porta_memcpy(static_cast<char*>(mapped) + 64, host.data(), 64));
    CHECK(static_cast<uint8_t*>(mapped)[64] == 0x44);
    // Given back: reserved again on the CPU backend, unmapped elsewhere.
    if (host_is_device) {
      CHECK(mmap(freed, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                 -1, 0) == freed);
    } else {
      CHECK(munmap(freed, page) == 0);
    }
  }
}

TEST_CASE("errors: pointers from before porta_shutdown are refused", "[errors][memory]") {
  std::vector<porta_device_t> before =
      devices_with_reserved_addresses("pointers from before porta_shutdown");
  if (before.empty()) return;
  std::vector<void*> stale;
  for (porta_device_t device : before) {
    void* ptr = nullptr;
    PT_REQUIRE_OK(porta_memory_alloc(device, 1024, &ptr));
    stale.push_back(ptr);
  }
  porta_shutdown();
  PT_REQUIRE_OK(porta_init(nullptr));
  Stream stream(before.front());
  std::vector<uint8_t> host(256, 0x44);
  for (void* ptr : stale) {
    check_refused(ptr, host.data(), 64, "porta_shutdown", stream.get());
    check_refused(host.data(), ptr, 64, "use after free", stream.get());
    check_set_refused(ptr, 64, "porta_shutdown", stream.get());
  }
  CHECK(host == std::vector<uint8_t>(256, 0x44));
}

TEST_CASE("errors: bad memsets change nothing", "[errors][memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    Buffer d(device, 1024);
    Buffer pinned(device, 64, Buffer::kPinned);
    PT_REQUIRE_OK(porta_memset(d.get(), 0x11, 1024));
    std::memset(pinned.get(), 0x33, 64);
    std::vector<uint8_t> host(64, 0x44);
    int local = 0x55;

    for (int value : {-1, 256, 1000, INT_MIN, INT_MAX}) {
      INFO("value " << value);
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memset(d.get(), value, 16));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                     porta_memset_async(d.get(), value, 16, stream.get()));
    }
    struct Set {
      void* dst;
      size_t size;
      const char* what;
    };
    const Set bad[] = {
        {d.get(), 1025, "one byte too many"},
        {d.bytes() + 1000, 25, "offset + size past the end"},
        {d.bytes() + 512, SIZE_MAX - 256, "offset + size wraps around"},
        {host.data(), 16, "pageable host memory"},
        {pinned.get(), 16, "pinned host memory (not device memory)"},
        {&local, sizeof(local), "the stack"},
        {nullptr, 16, "NULL"},
    };
    for (const Set& set : bad) {
      INFO(set.what);
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memset(set.dst, 0, set.size));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                     porta_memset_async(set.dst, 0, set.size, stream.get()));
    }
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(download(d.get(), 1024) == std::vector<uint8_t>(1024, 0x11));
    CHECK(std::vector<uint8_t>(pinned.bytes(), pinned.bytes() + 64) ==
          std::vector<uint8_t>(64, 0x33));
    CHECK(host == std::vector<uint8_t>(64, 0x44));
    CHECK(local == 0x55);
  }
}

TEST_CASE("errors: out of memory changes nothing", "[errors][memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Buffer existing(device, 4096);
    PT_REQUIRE_OK(porta_memset(existing.get(), 0x66, 4096));
    for (size_t size : {size_t{1} << 60, SIZE_MAX, SIZE_MAX - 255, SIZE_MAX / 2 + 1}) {
      INFO("size " << size);
      void* ptr = reinterpret_cast<void*>(0x1);
      PT_CHECK_FAILS(PORTA_ERROR_OUT_OF_MEMORY, porta_memory_alloc(device, size, &ptr));
      CHECK(ptr == reinterpret_cast<void*>(0x1));
      PT_CHECK_FAILS(PORTA_ERROR_OUT_OF_MEMORY, porta_host_alloc(device, size, &ptr));
      CHECK(ptr == reinterpret_cast<void*>(0x1));
    }
    // Everything still works, and what existed is intact. (Free memory is not compared: on the
    // CPU backend it is the host's, which other processes change at will.)
    CHECK(download(existing.get(), 4096) == std::vector<uint8_t>(4096, 0x66));
    Buffer fresh(device, 1 << 20);
    PT_CHECK_OK(porta_memset(fresh.get(), 1, 1 << 20));
    PT_CHECK_OK(porta_device_synchronize(device));
  }
}

TEST_CASE("errors: a destroyed stream is stale everywhere", "[errors][stream]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Buffer buffer(device, 64);
    PT_REQUIRE_OK(porta_memset(buffer.get(), 0x11, 64));
    Event event(device);
    std::vector<uint8_t> host(64, 0x22);
    porta_stream_t stream = nullptr;
    PT_REQUIRE_OK(porta_stream_create(device, &stream));
    PT_REQUIRE_OK(porta_stream_destroy(stream));

    porta_device_t owner = -7;
    void* native = reinterpret_cast<void*>(0x1);
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_destroy(stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_query(stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_synchronize(stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_device(stream, &owner));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_wait_event(stream, event.get()));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_native_handle(stream, &native));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_memcpy_async(buffer.get(), host.data(), 64, stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_memcpy_async(host.data(), buffer.get(), 64, stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_memset_async(buffer.get(), 0, 64, stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_record(event.get(), stream));
    CHECK(owner == -7);
    CHECK(native == reinterpret_cast<void*>(0x1));
    CHECK(download(buffer.get(), 64) == std::vector<uint8_t>(64, 0x11));
    CHECK(host == std::vector<uint8_t>(64, 0x22));
    // The event was not recorded by the failed call.
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(event.get()));
    float ms = 0;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_event_elapsed_ms(event.get(), event.get(), &ms));
  }
}

TEST_CASE("errors: every call words a stale stream alike", "[errors][stream]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Buffer buffer(device, 64);
    Event event(device);
    std::vector<uint8_t> host(64);
    porta_stream_t stream = nullptr;
    PT_REQUIRE_OK(porta_stream_create(device, &stream));
    PT_REQUIRE_OK(porta_stream_destroy(stream));
    std::ostringstream handle;
    handle << static_cast<void*>(stream);
    const std::pair<const char*, std::function<porta_status_t()>> calls[] = {
        {"porta_stream_synchronize", [&] { return porta_stream_synchronize(stream); }},
        {"porta_stream_wait_event", [&] { return porta_stream_wait_event(stream, event.get()); }},
        {"porta_memcpy_async",
         [&] { return porta_memcpy_async(buffer.get(), host.data(), 64, stream); }},
        {"porta_memset_async", [&] { return porta_memset_async(buffer.get(), 0, 64, stream); }},
        {"porta_event_record", [&] { return porta_event_record(event.get(), stream); }},
    };
    for (const auto& [function, call] : calls) {
      INFO(function);
      CHECK(call() == PORTA_ERROR_INVALID_HANDLE);
      CHECK(std::string(porta_last_error_message()) ==
            std::string(function) + ": stream " + handle.str() + " is not a live stream");
    }
  }
}

TEST_CASE("errors: a destroyed event is stale everywhere", "[errors][event]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    Event live(device);
    PT_REQUIRE_OK(porta_event_record(live.get(), stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    porta_event_t event = nullptr;
    PT_REQUIRE_OK(porta_event_create(device, &event));
    PT_REQUIRE_OK(porta_event_record(event, stream.get()));
    PT_REQUIRE_OK(porta_event_destroy(event));

    float ms = -5.0f;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_destroy(event));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_query(event));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_synchronize(event));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_record(event, stream.get()));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_elapsed_ms(event, live.get(), &ms));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_elapsed_ms(live.get(), event, &ms));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_wait_event(stream.get(), event));
    CHECK(ms == -5.0f);
    // The stream is unharmed: the capture of the destroyed event still runs through it.
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_synchronize(stream.get()));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(stream.get()));
  }
}

TEST_CASE("errors: stale handles stay stale after their slots are reused", "[errors]") {
  const porta_device_t device = devices().front();
  std::vector<porta_stream_t> old_streams;
  std::vector<porta_event_t> old_events;
  for (int i = 0; i < 32; ++i) {
    porta_stream_t s = nullptr;
    porta_event_t e = nullptr;
    PT_REQUIRE_OK(porta_stream_create(device, &s));
    PT_REQUIRE_OK(porta_event_create(device, &e));
    PT_REQUIRE_OK(porta_stream_destroy(s));
    PT_REQUIRE_OK(porta_event_destroy(e));
    old_streams.push_back(s);
    old_events.push_back(e);
  }
  Stream fresh_stream(device);
  Event fresh_event(device);
  for (porta_stream_t s : old_streams) {
    CHECK(s != fresh_stream.get());
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_query(s));
  }
  for (porta_event_t e : old_events) {
    CHECK(e != fresh_event.get());
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_query(e));
  }
  PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(fresh_stream.get()));
  PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(fresh_event.get()));
}

TEST_CASE("errors: foreign and made-up handles", "[errors]") {
  const porta_device_t device = devices().front();
  Stream stream(device);
  Event event(device);
  Buffer buffer(device, 64);
  porta_device_t owner = -7;
  float ms = 0;

  SECTION("an event passed as a stream, and a stream passed as an event") {
    const porta_stream_t event_as_stream = reinterpret_cast<porta_stream_t>(event.get());
    const porta_event_t stream_as_event = reinterpret_cast<porta_event_t>(stream.get());
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_query(event_as_stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_synchronize(event_as_stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_device(event_as_stream, &owner));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_destroy(event_as_stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_memset_async(buffer.get(), 0, 64, event_as_stream));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_query(stream_as_event));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_synchronize(stream_as_event));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_record(stream_as_event, stream.get()));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_destroy(stream_as_event));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_stream_wait_event(stream.get(), stream_as_event));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_module_unload(reinterpret_cast<porta_module_t>(stream.get())));
    porta_kernel_t kernel = nullptr;
    PT_CHECK_FAILS(
        PORTA_ERROR_INVALID_HANDLE,
        porta_kernel_get(reinterpret_cast<porta_module_t>(event.get()), "saxpy", &kernel));
    CHECK(kernel == nullptr);
    // Both survive the attempts to destroy them through the wrong type.
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(stream.get()));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(event.get()));
  }
  SECTION("made-up values") {
    const porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1});
    for (uintptr_t value : made_up_handles()) {
      INFO("handle value " << std::hex << value);
      const auto s = as_handle<porta_stream_t>(value);
      const auto e = as_handle<porta_event_t>(value);
      const auto m = as_handle<porta_module_t>(value);
      const auto k = as_handle<porta_kernel_t>(value);
      porta_kernel_t kernel = nullptr;
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_query(s));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_destroy(s));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_device(s, &owner));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_memset_async(buffer.get(), 0, 64, s));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_query(e));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_destroy(e));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_record(e, stream.get()));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_elapsed_ms(e, event.get(), &ms));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_module_unload(m));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_kernel_get(m, "saxpy", &kernel));
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_kernel_launch(k, &config, nullptr, nullptr));
    }
  }
  SECTION("NULL events, modules and kernels (a NULL stream is the default stream)") {
    porta_kernel_t kernel = nullptr;
    const porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1});
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_query(nullptr));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_synchronize(nullptr));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_destroy(nullptr));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_record(nullptr, stream.get()));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_elapsed_ms(nullptr, event.get(), &ms));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_wait_event(stream.get(), nullptr));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_module_unload(nullptr));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_kernel_get(nullptr, "saxpy", &kernel));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_kernel_launch(nullptr, &config, nullptr, stream.get()));
  }
  CHECK(owner == -7);
}

TEST_CASE("errors: event_elapsed_ms of a never-recorded event", "[errors][event]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    Event recorded(device), never(device);
    PT_REQUIRE_OK(porta_event_record(recorded.get(), stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    float ms = 99.0f;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_event_elapsed_ms(never.get(), recorded.get(), &ms));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_event_elapsed_ms(recorded.get(), never.get(), &ms));
    CHECK(ms == 99.0f);
  }
}

TEST_CASE("errors: modules that cannot be loaded", "[errors][module]") {
  const porta_device_t device = devices().front();
  TempDir dir;
  porta_module_t module = nullptr;

  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND,
                 porta_module_load(device, (dir.path() + "/missing.so").c_str(), &module));
  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND,
                 porta_module_load(device, "/nonexistent/dir/libmissing.so", &module));

  const char garbage[] = "this is not a code object for any device, only some words";
  const std::string garbage_file = dir.write("garbage.so", garbage, sizeof(garbage));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_module_load(device, garbage_file.c_str(), &module));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_module_load_data(device, garbage, sizeof(garbage), &module));

  const std::string empty = dir.write("empty.so", "", 0);
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_module_load(device, empty.c_str(), &module));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_module_load_data(device, garbage, 0, &module));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_module_load(device, nullptr, &module));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_module_load_data(device, nullptr, 100, &module));
  CHECK(module == nullptr);
}

TEST_CASE("errors: a truncated code object is refused without crashing",
          "[errors][module]" PT_KERNELS_TAG) {
  // Cut short inside what must be loaded, the backend's own kind of code object cannot be loaded,
  // and must not crash the process: dlopen of an ELF file cut inside a PT_LOAD segment touches
  // pages past the end of the file (SIGBUS) unless the backend checks the segments first.
  const porta_device_t device = devices().front();
  TempDir dir;
  porta_module_t module = nullptr;
  const std::vector<char> image = read_file(kernels_path());
  const size_t loaded = loaded_bytes(image);
  for (size_t size : {size_t{4}, size_t{64}, loaded / 4, loaded / 2, loaded / 4 * 3}) {
    INFO("the test module truncated to " << size << " of " << image.size() << " bytes");
    const std::string truncated = dir.write("truncated.so", image.data(), size);
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_module_load(device, truncated.c_str(), &module));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_module_load_data(device, image.data(), size, &module));
  }
  CHECK(module == nullptr);
}

TEST_CASE("errors: a CPU code object for another machine is INCOMPATIBLE_VERSION",
          "[errors][module]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) return;  // a CPU-specific image
  const porta_device_t device = devices().front();
  std::vector<char> image = read_file(kernels_path());
  REQUIRE(image.size() > 20);
  REQUIRE(std::memcmp(image.data(),
                      "\x7F"
                      "ELF",
                      4) == 0);
  // e_machine, at offset 18 of the ELF header (little-endian here): claim another architecture.
  const uint16_t here = static_cast<uint16_t>(static_cast<unsigned char>(image[18]) |
                                              (static_cast<unsigned char>(image[19]) << 8));
  const uint16_t other = here == 183 ? 62 : 183;  // AArch64, or x86-64 on an AArch64 host
  image[18] = static_cast<char>(other & 0xFF);
  image[19] = static_cast<char>(other >> 8);
  TempDir dir;
  const std::string file = dir.write("foreign.so", image.data(), image.size());
  porta_module_t module = nullptr;
  PT_CHECK_FAILS(PORTA_ERROR_INCOMPATIBLE_VERSION,
                 porta_module_load(device, file.c_str(), &module));
  PT_CHECK_FAILS(PORTA_ERROR_INCOMPATIBLE_VERSION,
                 porta_module_load_data(device, image.data(), image.size(), &module));
  CHECK(module == nullptr);
}

namespace {

// The parts of a little-endian ELF64 image that the malformed-image test rewrites.
struct ElfLayout {
  size_t dynamic_header = 0;  // offset of the PT_DYNAMIC program header
  std::vector<size_t> load_headers;
  std::map<int64_t, size_t> tags;  // dynamic tag -> offset of its d_un in the file
  size_t first_rela = 0;           // offset of the first Elf64_Rela entry, 0 if none
};

ElfLayout elf_layout(const std::vector<char>& image) {
  ElfLayout layout;
  Elf64_Ehdr header;
  std::memcpy(&header, image.data(), sizeof(header));
  std::vector<Elf64_Phdr> loads;
  Elf64_Phdr dynamic{};
  for (size_t i = 0; i < header.e_phnum; ++i) {
    const size_t at = header.e_phoff + i * sizeof(Elf64_Phdr);
    Elf64_Phdr segment;
    std::memcpy(&segment, image.data() + at, sizeof(segment));
    if (segment.p_type == PT_LOAD) {
      loads.push_back(segment);
      layout.load_headers.push_back(at);
    }
    if (segment.p_type == PT_DYNAMIC) {
      layout.dynamic_header = at;
      dynamic = segment;
    }
  }
  for (size_t at = dynamic.p_offset; at + sizeof(Elf64_Dyn) <= dynamic.p_offset + dynamic.p_filesz;
       at += sizeof(Elf64_Dyn)) {
    Elf64_Dyn entry;
    std::memcpy(&entry, image.data() + at, sizeof(entry));
    if (entry.d_tag == DT_NULL) break;
    layout.tags[entry.d_tag] = at + offsetof(Elf64_Dyn, d_un);
    if (entry.d_tag == DT_RELA) {
      for (const Elf64_Phdr& load : loads) {
        if (entry.d_un.d_ptr >= load.p_vaddr && entry.d_un.d_ptr < load.p_vaddr + load.p_filesz) {
          layout.first_rela = load.p_offset + (entry.d_un.d_ptr - load.p_vaddr);
        }
      }
    }
  }
  return layout;
}

template <typename T>
void poke(std::vector<char>& image, size_t offset, T value) {
  std::memcpy(image.data() + offset, &value, sizeof(value));
}

}  // namespace

TEST_CASE("errors: a CPU code object with a malformed dynamic section is refused before dlopen",
          "[errors][module]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) return;  // a CPU-specific image
  const porta_device_t device = devices().front();
  const std::vector<char> image = read_file(kernels_path());
  const ElfLayout layout = elf_layout(image);
  REQUIRE(layout.dynamic_header != 0);
  REQUIRE(layout.tags.count(DT_STRTAB));
  REQUIRE(layout.tags.count(DT_RELA));
  REQUIRE(layout.first_rela != 0);
  struct Damage {
    const char* what;
    std::function<void(std::vector<char>&)> apply;
  };
  const uint64_t far = uint64_t{1} << 40;
  const Damage damages[] = {
      {"the dynamic section's file offset past the end",
       [&](auto& bad) {
         poke<uint64_t>(bad, layout.dynamic_header + offsetof(Elf64_Phdr, p_offset), far);
       }},
      {"the dynamic section's address outside every segment",
       [&](auto& bad) {
         poke<uint64_t>(bad, layout.dynamic_header + offsetof(Elf64_Phdr, p_vaddr), far);
       }},
      {"no DT_NULL within the dynamic section",
       [&](auto& bad) {
         poke<uint64_t>(bad, layout.dynamic_header + offsetof(Elf64_Phdr, p_filesz), 16);
       }},
      {"the string table outside the object",
       [&](auto& bad) { poke<uint64_t>(bad, layout.tags.at(DT_STRTAB), far); }},
      {"the string table's size past the object",
       [&](auto& bad) { poke<uint64_t>(bad, layout.tags.at(DT_STRSZ), far); }},
      {"the relocation table outside the object",
       [&](auto& bad) { poke<uint64_t>(bad, layout.tags.at(DT_RELA), far); }},
      {"a relocation that writes outside the object",
       [&](auto& bad) {
         poke<uint64_t>(bad, layout.first_rela + offsetof(Elf64_Rela, r_offset), far);
       }},
      {"a loadable segment whose memory is smaller than its file bytes",
       [&](auto& bad) {
         poke<uint64_t>(bad, layout.load_headers.back() + offsetof(Elf64_Phdr, p_memsz), 1);
       }},
  };
  TempDir dir;
  for (const Damage& damage : damages) {
    INFO(damage.what);
    std::vector<char> bad = image;
    damage.apply(bad);
    porta_module_t module = nullptr;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_module_load_data(device, bad.data(), bad.size(), &module));
    const std::string file = dir.write("malformed.so", bad.data(), bad.size());
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_module_load(device, file.c_str(), &module));
    CHECK(module == nullptr);
  }
  // The undamaged image still loads.
  porta_module_t module = nullptr;
  PT_REQUIRE_OK(porta_module_load_data(device, image.data(), image.size(), &module));
  PT_CHECK_OK(porta_module_unload(module));
}

TEST_CASE("errors: a CPU code object with malformed loader tables is refused naming the problem",
          "[errors][module]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) return;  // a CPU-specific image
  const porta_device_t device = devices().front();
  const ElfImage original(kernels_path());
  const size_t symbol_1 = original.table(DT_SYMTAB) + sizeof(Elf64_Sym);
  const size_t gnu_hash = original.table(DT_GNU_HASH);
  const size_t symbolic = original.first_symbolic_rela(R_X86_64_RELATIVE);
  const uint64_t relocations = original.tag(DT_RELASZ) / sizeof(Elf64_Rela);
  struct Damage {
    const char* what;
    std::function<void(ElfImage&)> apply;
    const char* message;
  };
  const Damage damages[] = {
      {"a relocation's symbol index past the symbol table",
       [&](ElfImage& bad) {
         const auto info = bad.get<uint64_t>(symbolic + offsetof(Elf64_Rela, r_info));
         bad.put<uint64_t>(symbolic + offsetof(Elf64_Rela, r_info),
                           ELF64_R_INFO(0xffffff, ELF64_R_TYPE(info)));
       },
       "a relocation names symbol 16777215"},
      {"GNU hash buckets past the file",
       [&](ElfImage& bad) { bad.put<uint32_t>(gnu_hash, 0x7fffffff); },
       "DT_GNU_HASH's bloom filter and buckets"},
      {"a GNU hash bloom filter size that is not a power of two",
       [&](ElfImage& bad) { bad.put<uint32_t>(gnu_hash + 8, 0x7fffffff); },
       "bloom filter size 2147483647 is not a power of two"},
      {"a symbol's name outside the string table",
       [&](ElfImage& bad) {
         bad.put<uint32_t>(symbol_1 + offsetof(Elf64_Sym, st_name), 0x7fffffff);
       },
       "symbol 1's offset 2147483647 lies outside the string table"},
      {"DT_RELAENT not the size of a relocation",
       [&](ElfImage& bad) { bad.put<uint64_t>(bad.tags.at(DT_RELAENT), 23); },
       "DT_RELAENT is 23, not 24"},
      {"DT_SYMENT not the size of a symbol",
       [&](ElfImage& bad) { bad.put<uint64_t>(bad.tags.at(DT_SYMENT), 16); },
       "DT_SYMENT is 16, not 24"},
      {"DT_RELACOUNT beyond the table",
       [&](ElfImage& bad) { bad.put<uint64_t>(bad.tags.at(DT_RELACOUNT), 0xfffff); },
       "DT_RELACOUNT 1048575 is beyond the table"},
      {"DT_RELACOUNT over a relocation that is not relative",
       [&](ElfImage& bad) { bad.put<uint64_t>(bad.tags.at(DT_RELACOUNT), relocations); },
       "within DT_RELACOUNT but not relative"},
      {"PT_GNU_RELRO outside the loadable segments",
       [&](ElfImage& bad) {
         bad.put<uint64_t>(bad.segment(PT_GNU_RELRO) + offsetof(Elf64_Phdr, p_vaddr),
                           uint64_t{1} << 40);
       },
       "PT_GNU_RELRO does not lie in a loadable segment"},
  };
  TempDir dir;
  for (const Damage& damage : damages) {
    INFO(damage.what);
    ElfImage bad = original;
    damage.apply(bad);
    porta_module_t module = nullptr;
    const CallResult result = call_on_fresh_thread([&] {
      return porta_module_load_data(device, bad.bytes.data(), bad.bytes.size(), &module);
    });
    INFO(porta_status_name(result.status) << ": " << result.message);
    CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    CHECK(result.message.find(damage.message) != std::string::npos);
    const std::string file = dir.write("malformed.so", bad.bytes.data(), bad.bytes.size());
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_module_load(device, file.c_str(), &module));
    CHECK(module == nullptr);
  }
}

TEST_CASE("errors: kernels that do not exist", "[errors][module]" PT_KERNELS_TAG) {
  const porta_device_t device = devices().front();
  Module module(device);
  porta_kernel_t kernel = nullptr;
  for (const char* name :
       {"no_such_kernel", "", "saxpy_group", "porta_cpu_kernel_saxpy", "SAXPY", "saxpy "}) {
    INFO("name '" << name << "'");
    PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_kernel_get(module.get(), name, &kernel));
  }
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_kernel_get(module.get(), nullptr, &kernel));
  CHECK(kernel == nullptr);
  // The module is unharmed.
  porta_kernel_t saxpy = module.kernel("saxpy");
  CHECK(saxpy != nullptr);
}

TEST_CASE("errors: a CPU kernel named like another's group limit is a kernel, not a limit",
          "[errors][module]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) return;  // names of the CPU code object's symbols
  const porta_device_t device = devices().front();
  const int32_t device_max = properties(device).max_work_group_size;
  Module module(device);
  int32_t max = 0;
  // noop declares no limit, though a symbol named like its limit (kernel max_group_size_noop's
  // descriptor) exists; limited declares 64.
  PT_REQUIRE_OK(porta_kernel_max_group_size(module.kernel("noop"), &max));
  CHECK(max == device_max);
  PT_REQUIRE_OK(porta_kernel_max_group_size(module.kernel("limited"), &max));
  CHECK(max == 64);
  porta_kernel_t named_like_a_limit = module.kernel("max_group_size_noop");
  PT_REQUIRE_OK(porta_kernel_max_group_size(named_like_a_limit, &max));
  CHECK(max == device_max);
  Stream stream(device);
  const porta_launch_config_t config = launch_config({2, 1, 1}, {128, 1, 1});
  PT_CHECK_OK(porta_kernel_launch(named_like_a_limit, &config, nullptr, stream.get()));
  PT_CHECK_OK(porta_stream_synchronize(stream.get()));
  // limited's limit is no kernel.
  porta_kernel_t kernel = nullptr;
  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND,
                 porta_kernel_get(module.get(), "max_group_size_limited", &kernel));
  CHECK(kernel == nullptr);
}

TEST_CASE("errors: bad launches queue nothing", "[errors][launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    const porta_device_properties_t p = properties(device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    porta_kernel_t reverse = module.kernel("shared_reverse");
    Stream stream(device);
    Event event(device);
    constexpr int kN = 64;
    std::vector<float> ones(kN, 1.0f);
    Buffer x(device, kN * sizeof(float)), y(device, kN * sizeof(float));
    PT_REQUIRE_OK(porta_memcpy(x.get(), ones.data(), kN * sizeof(float)));
    PT_REQUIRE_OK(porta_memcpy(y.get(), ones.data(), kN * sizeof(float)));
    int n = kN;
    float a = 2.0f;
    float* xp = x.as<float>();
    float* yp = y.as<float>();
    void* args[] = {&n, &a, &xp, &yp};
    const porta_launch_config_t good = launch_config({1, 1, 1}, {kN, 1, 1});

    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_kernel_launch(saxpy, nullptr, args, stream.get()));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_kernel_launch(saxpy, &good, nullptr, stream.get()));
    // A NULL among the arguments, a pointer's and a value's: refused by every backend alike.
    for (int hole : {2, 0}) {
      void* holed[] = {&n, &a, &xp, &yp};
      holed[hole] = nullptr;
      INFO("args[" << hole << "] NULL");
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                     porta_kernel_launch(saxpy, &good, holed, stream.get()));
    }
    for (int d = 0; d < 3; ++d) {
      INFO("dimension " << d);
      porta_launch_config_t config = good;
      config.grid[d] = 0;
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                     porta_kernel_launch(saxpy, &config, args, stream.get()));
      config = good;
      config.group[d] = 0;
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                     porta_kernel_launch(saxpy, &config, args, stream.get()));
      // One past the per-dimension group limit (the others 1).
      config = launch_config({1, 1, 1}, {1, 1, 1});
      config.group[d] = static_cast<uint32_t>(p.max_work_group_dims[d]) + 1;
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                     porta_kernel_launch(saxpy, &config, args, stream.get()));
      // One past the grid limit, where a uint32_t can say it.
      if (p.max_grid_dims[d] < int64_t{UINT32_MAX}) {
        config = good;
        config.grid[d] = static_cast<uint32_t>(p.max_grid_dims[d]) + 1;
        PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                       porta_kernel_launch(saxpy, &config, args, stream.get()));
      }
    }
    // Each grid dimension within its limit, the work-groups 2^64 in all (wrapping to 0 in 64-bit
    // arithmetic): refused, not run as none.
    if (p.max_grid_dims[0] >= (1 << 30) && p.max_grid_dims[1] >= (1 << 30) &&
        p.max_grid_dims[2] >= 16) {
      const porta_launch_config_t config = launch_config({1u << 30, 1u << 30, 16}, {1, 1, 1});
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                     porta_kernel_launch(saxpy, &config, args, stream.get()));
    }
    // Each dimension within its limit, the product over the total.
    {
      porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1});
      uint64_t product = 1;
      for (int d = 0; d < 3 && product <= static_cast<uint64_t>(p.max_work_group_size); ++d) {
        config.group[d] = static_cast<uint32_t>(p.max_work_group_dims[d]);
        product *= config.group[d];
      }
      if (product > static_cast<uint64_t>(p.max_work_group_size)) {
        INFO("group " << config.group[0] << "x" << config.group[1] << "x" << config.group[2]);
        PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                       porta_kernel_launch(saxpy, &config, args, stream.get()));
      }
    }
    // Too much shared memory.
    for (uint32_t shared : {static_cast<uint32_t>(p.shared_memory_per_group) + 1, UINT32_MAX}) {
      INFO("shared " << shared << " bytes");
      porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1}, shared);
      void* reverse_args[] = {&yp};
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                     porta_kernel_launch(reverse, &config, reverse_args, stream.get()));
    }
    // Bad streams and kernels.
    porta_stream_t stale = nullptr;
    PT_REQUIRE_OK(porta_stream_create(device, &stale));
    PT_REQUIRE_OK(porta_stream_destroy(stale));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_kernel_launch(saxpy, &good, args, stale));
    PT_CHECK_FAILS(
        PORTA_ERROR_INVALID_HANDLE,
        porta_kernel_launch(saxpy, &good, args, reinterpret_cast<porta_stream_t>(event.get())));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_kernel_launch(reinterpret_cast<porta_kernel_t>(module.get()), &good, args,
                                       stream.get()));
    PT_CHECK_FAILS(
        PORTA_ERROR_INVALID_HANDLE,
        porta_kernel_launch(saxpy, &good, args, reinterpret_cast<porta_stream_t>(saxpy)));
    porta_kernel_t kernel = nullptr;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   porta_kernel_get(reinterpret_cast<porta_module_t>(saxpy), "saxpy", &kernel));

    // None of them ran: y is still all ones, and the stream is idle and healthy.
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    std::vector<float> got(kN);
    PT_REQUIRE_OK(porta_memcpy(got.data(), y.get(), kN * sizeof(float)));
    CHECK(got == ones);
    PT_REQUIRE_OK(porta_kernel_launch(saxpy, &good, args, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    PT_REQUIRE_OK(porta_memcpy(got.data(), y.get(), kN * sizeof(float)));
    CHECK(got == std::vector<float>(kN, 3.0f));
  }
}

TEST_CASE("errors: objects of two devices do not mix", "[errors][multi-device]") {
  const std::vector<porta_device_t> all = devices();
  if (all.size() < 2) {
    WARN("only one device of backend " << backend_name() << ": nothing to mix");
    return;
  }
  const porta_device_t d0 = all[0], d1 = all[1];
  Stream s0(d0), s1(d1);
  Event e0(d0), e1(d1);
  Buffer b0(d0, 256), b1(d1, 256);
  PT_REQUIRE_OK(porta_memset(b0.get(), 0x10, 256));
  PT_REQUIRE_OK(porta_memset(b1.get(), 0x20, 256));
  std::vector<uint8_t> host(256, 0);
  // Copies between the two devices are allowed (test_peer.cpp); host memory and one device's
  // memory must still use that device's stream.
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                 porta_memcpy_async(host.data(), b1.get(), 256, s0.get()));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memset_async(b1.get(), 0, 256, s0.get()));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_event_record(e0.get(), s1.get()));
  PT_REQUIRE_OK(porta_event_record(e0.get(), s0.get()));
  PT_REQUIRE_OK(porta_event_record(e1.get(), s1.get()));
  PT_REQUIRE_OK(porta_event_synchronize(e0.get()));
  PT_REQUIRE_OK(porta_event_synchronize(e1.get()));
  float ms = 0;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_event_elapsed_ms(e0.get(), e1.get(), &ms));
  CHECK(download(b0.get(), 256) == std::vector<uint8_t>(256, 0x10));
  CHECK(download(b1.get(), 256) == std::vector<uint8_t>(256, 0x20));
  CHECK(host == std::vector<uint8_t>(256, 0));
  if (!kernels_path().empty()) {
    Module module(d0);
    porta_kernel_t noop = module.kernel("noop");
    const porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1});
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_kernel_launch(noop, &config, nullptr, s1.get()));
  }
}

TEST_CASE("loader report: rows and arguments", "[errors][loader]") {
  size_t count = 0;
  PT_REQUIRE_OK(porta_loader_report_count(&count));
  REQUIRE(count >= 4);  // one row per known backend, then the op plugins
  const std::string selected = backend_name();
  std::vector<std::string> seen;
  for (size_t i = 0; i < count; ++i) {
    porta_plugin_report_t row;
    std::memset(&row, 0, sizeof(row));
    row.struct_size = sizeof(row);
    PT_REQUIRE_OK(porta_loader_report_get(i, &row));
    INFO("row " << i << ": " << row.name << " (" << row.path << ") outcome " << row.outcome << ": "
                << row.reason);
    CHECK(std::memchr(row.name, '\0', sizeof(row.name)) != nullptr);
    CHECK(std::memchr(row.path, '\0', sizeof(row.path)) != nullptr);
    CHECK(std::memchr(row.reason, '\0', sizeof(row.reason)) != nullptr);
    CHECK((row.kind == PORTA_PLUGIN_KIND_BACKEND || row.kind == PORTA_PLUGIN_KIND_OPS));
    if (row.kind != PORTA_PLUGIN_KIND_BACKEND) continue;  // op plugins: tests/ops covers them
    seen.push_back(row.name);
    if (row.name == selected) {
      CHECK(row.outcome == PORTA_PLUGIN_LOADED);
      CHECK(Status{row.status} == Status{PORTA_SUCCESS});
      CHECK(std::string(row.reason).empty());
      CHECK(std::string(row.path).find("libporta_" + selected) != std::string::npos);
      CHECK(row.abi_major == PORTA_PLUGIN_ABI_MAJOR);
      CHECK(row.device_count == static_cast<int32_t>(devices().size()));
    } else if (row.outcome != PORTA_PLUGIN_LOADED) {
      CHECK(std::string(row.reason).size() > 0);
      if (row.outcome != PORTA_PLUGIN_NOT_REQUESTED) CHECK(row.status < 0);
    }
  }
  for (const char* name : {"cpu", "cuda", "hip", "level_zero"}) {
    INFO("backend " << name);
    CHECK(std::count(seen.begin(), seen.end(), name) == 1);
  }
  porta_plugin_report_t row;
  std::memset(&row, 0xCD, sizeof(row));
  row.struct_size = sizeof(row);
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_loader_report_get(count, &row));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_loader_report_get(SIZE_MAX, &row));
  // Smaller than the first release's row (which ended at kind): refused, nothing written.
  row.struct_size = offsetof(porta_plugin_report_t, kind) + sizeof(row.kind) - 1;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_loader_report_get(0, &row));
  CHECK(static_cast<unsigned char>(row.name[0]) == 0xCD);
}
