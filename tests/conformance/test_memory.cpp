// Memory: device and pinned host allocations, copies in every direction (blocking and
// asynchronous), memset, and pointer_info. Bad memory arguments are in test_errors.cpp.
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common.h"

using namespace porta_test;

namespace {

const size_t kSizes[] = {1, 7, 33, 256, 4099, size_t{1} << 20};

porta_pointer_info_t pointer_info(const void* ptr) {
  porta_pointer_info_t info;
  std::memset(&info, 0xCD, sizeof(info));
  info.struct_size = sizeof(info);
  PT_REQUIRE_OK(porta_pointer_info(ptr, &info));
  return info;
}

void check_bytes(const std::vector<uint8_t>& got, const std::vector<uint8_t>& expected) {
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != expected[i]) {
      INFO("first difference at byte " << i << " of " << got.size());
      REQUIRE(static_cast<int>(got[i]) == static_cast<int>(expected[i]));
    }
  }
}

// The VmFlags of the mapping that holds ptr, from /proc/self/smaps ("" if none is found).
std::string mapping_flags(const void* ptr) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(ptr);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t start = 0, end = 0;
    char dash = 0;
    std::istringstream header(line);
    if (header >> std::hex >> start >> dash >> end && dash == '-') {
      inside = start <= address && address < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line.substr(8) + " ";
    }
  }
  return "";
}

}  // namespace

TEST_CASE("memory: device allocations are aligned, recorded and freed", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    for (size_t size : kSizes) {
      INFO("size " << size);
      void* ptr = nullptr;
      PT_REQUIRE_OK(porta_memory_alloc(device, size, &ptr));
      REQUIRE(ptr != nullptr);
      CHECK(reinterpret_cast<uintptr_t>(ptr) % 256 == 0);
      const porta_pointer_info_t info = pointer_info(ptr);
      CHECK(info.kind == PORTA_MEMORY_DEVICE);
      CHECK(info.device == device);
      CHECK(info.base == ptr);
      CHECK(info.size == size);
      PT_REQUIRE_OK(porta_memory_free(ptr));
      // Freed memory is no longer Porta's.
      const porta_pointer_info_t after = pointer_info(ptr);
      CHECK(after.kind == PORTA_MEMORY_UNKNOWN);
      CHECK(after.device == -1);
      CHECK(after.base == nullptr);
      CHECK(after.size == 0);
    }
  }
}

TEST_CASE("memory: CPU allocations of 2 MiB and more start on a huge page and ask for huge pages",
          "[memory]") {
  if (!is_cpu_backend()) {
    WARN("skipped on " << backend_name() << ": its driver places device memory");
    return;
  }
  // THP's "madvise" mode, the usual default, gives huge pages only to ranges that ask.
  const bool huge_pages = std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good();
  if (!huge_pages) WARN("this kernel has no transparent huge pages: the advice is not checked");
  constexpr size_t kHugePage = size_t{2} << 20;
  for (size_t size : {kHugePage, kHugePage + 1, 5 * kHugePage + 123}) {
    INFO("size " << size);
    void* ptr = nullptr;
    PT_REQUIRE_OK(porta_memory_alloc(devices().front(), size, &ptr));
    CHECK(reinterpret_cast<uintptr_t>(ptr) % kHugePage == 0);
    std::memset(ptr, 0x5A, size);
    if (huge_pages) {
      const std::string flags = mapping_flags(static_cast<char*>(ptr) + size - 1);
      INFO("VmFlags:" << flags);
      CHECK(flags.find(" hg ") != std::string::npos);
    }
    PT_REQUIRE_OK(porta_memory_free(ptr));
  }
}

TEST_CASE("memory: many live allocations are distinct", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    std::vector<void*> ptrs;
    for (int i = 0; i < 64; ++i) {
      void* ptr = nullptr;
      PT_REQUIRE_OK(porta_memory_alloc(device, 1000 + i, &ptr));
      ptrs.push_back(ptr);
    }
    std::vector<void*> sorted = ptrs;
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
    for (size_t i = 0; i < ptrs.size(); ++i) {
      const porta_pointer_info_t info = pointer_info(static_cast<char*>(ptrs[i]) + 999);
      CHECK(info.base == ptrs[i]);
      CHECK(info.size == 1000 + i);
    }
    // Free in an order other than allocation's.
    for (size_t i = 0; i < ptrs.size(); i += 2) PT_CHECK_OK(porta_memory_free(ptrs[i]));
    for (size_t i = 1; i < ptrs.size(); i += 2) PT_CHECK_OK(porta_memory_free(ptrs[i]));
  }
}

TEST_CASE("memory: size 0 allocates nothing and NULL frees nothing", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    void* ptr = reinterpret_cast<void*>(0x1);
    PT_REQUIRE_OK(porta_memory_alloc(device, 0, &ptr));
    CHECK(ptr == nullptr);
    ptr = reinterpret_cast<void*>(0x1);
    PT_REQUIRE_OK(porta_host_alloc(device, 0, &ptr));
    CHECK(ptr == nullptr);
  }
  PT_CHECK_OK(porta_memory_free(nullptr));
  PT_CHECK_OK(porta_host_free(nullptr));
}

TEST_CASE("memory: pinned host memory", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    for (size_t size : kSizes) {
      INFO("size " << size);
      void* ptr = nullptr;
      PT_REQUIRE_OK(porta_host_alloc(device, size, &ptr));
      REQUIRE(ptr != nullptr);
      CHECK(reinterpret_cast<uintptr_t>(ptr) % 256 == 0);
      // The host can use it directly.
      std::memset(ptr, 0x5A, size);
      CHECK(static_cast<unsigned char*>(ptr)[size - 1] == 0x5A);
      const porta_pointer_info_t info = pointer_info(static_cast<char*>(ptr) + size / 2);
      CHECK(info.kind == PORTA_MEMORY_HOST_PINNED);
      CHECK(info.device == device);
      CHECK(info.base == ptr);
      CHECK(info.size == size);
      PT_REQUIRE_OK(porta_host_free(ptr));
      CHECK(pointer_info(ptr).kind == PORTA_MEMORY_UNKNOWN);
    }
  }
}

TEST_CASE("memory: pointer_info of interior and unknown addresses", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Buffer buffer(device, 4096);
    for (size_t offset : {size_t{0}, size_t{1}, size_t{255}, size_t{2048}, size_t{4095}}) {
      INFO("offset " << offset);
      const porta_pointer_info_t info = pointer_info(buffer.bytes() + offset);
      CHECK(info.struct_size == sizeof(info));
      CHECK(info.kind == PORTA_MEMORY_DEVICE);
      CHECK(info.device == device);
      CHECK(info.base == buffer.get());
      CHECK(info.size == 4096);
    }
  }
  // Ordinary host memory, the stack and NULL are not Porta's.
  std::vector<char> heap(100);
  int local = 0;
  for (const void* ptr : {static_cast<const void*>(heap.data()), static_cast<const void*>(&local),
                          static_cast<const void*>(nullptr)}) {
    const porta_pointer_info_t info = pointer_info(ptr);
    CHECK(info.kind == PORTA_MEMORY_UNKNOWN);
    CHECK(info.device == -1);
    CHECK(info.base == nullptr);
    CHECK(info.size == 0);
  }
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_pointer_info(&local, nullptr));
  porta_pointer_info_t small;
  std::memset(&small, 0xCD, sizeof(small));
  small.struct_size = sizeof(small) - 1;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_pointer_info(&local, &small));
  CHECK(small.struct_size == sizeof(small) - 1);
  CHECK(small.base == reinterpret_cast<void*>(~uintptr_t{0} / 0xFF * 0xCD));
}

TEST_CASE("memory: blocking copies in every direction", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    for (size_t size : kSizes) {
      INFO("size " << size);
      const std::vector<uint8_t> source = pattern(size, 1);
      Buffer d1(device, size), d2(device, size);
      Buffer p1(device, size, Buffer::kPinned), p2(device, size, Buffer::kPinned);

      PT_REQUIRE_OK(porta_memcpy(d1.get(), source.data(), size));  // pageable -> device
      PT_REQUIRE_OK(porta_memcpy(d2.get(), d1.get(), size));       // device -> device
      std::vector<uint8_t> back(size, 0);
      PT_REQUIRE_OK(porta_memcpy(back.data(), d2.get(), size));  // device -> pageable
      check_bytes(back, source);

      PT_REQUIRE_OK(porta_memcpy(p1.get(), source.data(), size));  // pageable -> pinned
      PT_REQUIRE_OK(porta_memset(d1.get(), 0, size));
      PT_REQUIRE_OK(porta_memcpy(d1.get(), p1.get(), size));  // pinned -> device
      PT_REQUIRE_OK(porta_memcpy(p2.get(), d1.get(), size));  // device -> pinned
      std::vector<uint8_t> host(size, 0);
      PT_REQUIRE_OK(porta_memcpy(host.data(), p2.get(), size));  // pinned -> pageable
      check_bytes(host, source);

      std::vector<uint8_t> host2(size, 0);
      PT_REQUIRE_OK(porta_memcpy(host2.data(), host.data(), size));  // pageable -> pageable
      check_bytes(host2, source);
    }
  }
}

TEST_CASE("memory: copies to and from interior pointers touch only their range", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    constexpr size_t kSize = 4096;
    Buffer buffer(device, kSize);
    PT_REQUIRE_OK(porta_memset(buffer.get(), 0xEE, kSize));
    const std::vector<uint8_t> source = pattern(1000, 2);
    PT_REQUIRE_OK(porta_memcpy(buffer.bytes() + 3, source.data(), 1000));
    // The last bytes of the allocation, exactly up to its end.
    PT_REQUIRE_OK(porta_memcpy(buffer.bytes() + kSize - 7, source.data(), 7));
    std::vector<uint8_t> expected(kSize, 0xEE);
    std::copy(source.begin(), source.end(), expected.begin() + 3);
    std::copy(source.begin(), source.begin() + 7, expected.end() - 7);
    check_bytes(download(buffer.get(), kSize), expected);

    // Device to device between interior pointers of one allocation (non-overlapping ranges).
    PT_REQUIRE_OK(porta_memcpy(buffer.bytes() + 2000, buffer.bytes() + 3, 1000));
    std::copy(source.begin(), source.end(), expected.begin() + 2000);
    check_bytes(download(buffer.get(), kSize), expected);

    std::vector<uint8_t> part(10, 0);
    PT_REQUIRE_OK(porta_memcpy(part.data(), buffer.bytes() + 2005, 10));
    check_bytes(part, std::vector<uint8_t>(source.begin() + 5, source.begin() + 15));
  }
}

TEST_CASE("memory: asynchronous copies in every direction", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    for (size_t size : kSizes) {
      INFO("size " << size);
      const std::vector<uint8_t> source = pattern(size, 3);
      Buffer d1(device, size), d2(device, size);
      Buffer p1(device, size, Buffer::kPinned), p2(device, size, Buffer::kPinned);
      std::memcpy(p1.get(), source.data(), size);
      std::memset(p2.get(), 0, size);

      // One in-order chain: pinned -> device -> device -> pinned -> pinned.
      PT_REQUIRE_OK(porta_memcpy_async(d1.get(), p1.get(), size, stream.get()));
      PT_REQUIRE_OK(porta_memcpy_async(d2.get(), d1.get(), size, stream.get()));
      PT_REQUIRE_OK(porta_memcpy_async(p2.get(), d2.get(), size, stream.get()));
      PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
      check_bytes(std::vector<uint8_t>(p2.bytes(), p2.bytes() + size), source);

      // Pageable memory may be used too (it just need not overlap with other work).
      std::vector<uint8_t> pageable(size, 0);
      PT_REQUIRE_OK(porta_memcpy_async(d1.get(), source.data(), size, stream.get()));
      PT_REQUIRE_OK(porta_memcpy_async(pageable.data(), d1.get(), size, stream.get()));
      PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
      check_bytes(pageable, source);

      // Host to host, queued.
      std::memset(p2.get(), 0, size);
      PT_REQUIRE_OK(porta_memcpy_async(p2.get(), p1.get(), size, stream.get()));
      PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
      check_bytes(std::vector<uint8_t>(p2.bytes(), p2.bytes() + size), source);
    }
  }
}

TEST_CASE("memory: asynchronous copies on the default stream (NULL)", "[memory]") {
  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  const size_t size = 4099;
  const std::vector<uint8_t> source = pattern(size, 4);
  Buffer d(device, size);
  Buffer p(device, size, Buffer::kPinned);
  std::memset(p.get(), 0, size);
  PT_REQUIRE_OK(porta_memcpy_async(d.get(), source.data(), size, nullptr));
  PT_REQUIRE_OK(porta_memcpy_async(p.get(), d.get(), size, nullptr));
  PT_REQUIRE_OK(porta_stream_synchronize(nullptr));
  check_bytes(std::vector<uint8_t>(p.bytes(), p.bytes() + size), source);
}

TEST_CASE("memory: size 0 copies and sets are no-ops", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Buffer buffer(device, 64);
    Stream stream(device);
    PT_REQUIRE_OK(porta_memset(buffer.get(), 0x11, 64));
    std::vector<uint8_t> host(64, 0x22);
    PT_CHECK_OK(porta_memcpy(buffer.get(), host.data(), 0));
    PT_CHECK_OK(porta_memcpy(host.data(), buffer.get(), 0));
    PT_CHECK_OK(porta_memcpy_async(buffer.get(), host.data(), 0, stream.get()));
    PT_CHECK_OK(porta_memset(buffer.get(), 0x33, 0));
    PT_CHECK_OK(porta_memset_async(buffer.get(), 0x33, 0, stream.get()));
    // Size 0 at the very end of the allocation is still within it.
    PT_CHECK_OK(porta_memcpy(buffer.bytes() + 63, host.data(), 0));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    check_bytes(download(buffer.get(), 64), std::vector<uint8_t>(64, 0x11));
    check_bytes(host, std::vector<uint8_t>(64, 0x22));
  }
}

TEST_CASE("memory: memset, blocking and asynchronous, whole and partial", "[memory]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Stream stream(device);
    for (size_t size : kSizes) {
      INFO("size " << size);
      Buffer buffer(device, size);
      PT_REQUIRE_OK(porta_memset(buffer.get(), 0xAA, size));
      std::vector<uint8_t> expected(size, 0xAA);
      check_bytes(download(buffer.get(), size), expected);

      // A range in the middle, then the extreme values 0 and 255, on a stream.
      const size_t offset = size / 3, length = size - offset - size / 5;
      PT_REQUIRE_OK(porta_memset_async(buffer.bytes() + offset, 0, length, stream.get()));
      PT_REQUIRE_OK(porta_memset_async(buffer.get(), 255, 1, stream.get()));
      PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
      std::fill(expected.begin() + offset, expected.begin() + offset + length, 0);
      expected[0] = 255;
      check_bytes(download(buffer.get(), size), expected);
    }
  }
}
