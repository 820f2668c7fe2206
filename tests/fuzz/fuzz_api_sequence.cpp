// Random sequences of runtime calls on several threads at once: streams, events, memory, copies,
// module loads, kernel launches, synchronisation, and calls on handles already destroyed. Each
// thread owns what it creates and destroys only that; device buffers made at start-up are shared
// by all, so the threads' copies, launches and frees meet in the runtime's tables, the
// allocation records and the backend's queues. Every call must return a documented status (a
// destroyed handle: INVALID_HANDLE), and every thread must finish (no crash, no hang).
#include <fuzzer/FuzzedDataProvider.h>
#include <porta/porta.h>

#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

#include "fuzz_common.h"

namespace {

constexpr int kThreads = 3;
constexpr size_t kSharedFloats = 4096;
constexpr int kSharedBuffers = 2;

float* g_shared[kSharedBuffers];

struct Op {
  uint8_t kind;
  uint16_t a, b, c;
};

void expect(porta_status_t status, porta_status_t wanted, const char* call) {
  if (status != wanted) {
    std::fprintf(stderr, "%s returned %s, expected %s: %s\n", call, porta_status_name(status),
                 porta_status_name(wanted), porta_last_error_message());
    std::abort();
  }
}
#define EXPECT(expr, wanted) expect(PORTA_FUZZ_CALL(expr), (wanted), #expr)
#define EXPECT_OK(expr) EXPECT(expr, PORTA_SUCCESS)

// One thread's objects.
class Worker {
 public:
  explicit Worker(const std::vector<Op>& ops) : ops_(ops), host_(kSharedFloats) {}

  void run() {
    for (const Op& op : ops_) step(op);
    for (porta_stream_t stream : streams_) EXPECT_OK(porta_stream_destroy(stream));
    for (porta_event_t event : events_) EXPECT_OK(porta_event_destroy(event));
    for (const Buffer& buffer : buffers_) EXPECT_OK(porta_memory_free(buffer.ptr));
    if (module_) EXPECT_OK(porta_module_unload(module_));
  }

 private:
  struct Buffer {
    float* ptr;
    size_t floats;
  };

  template <typename T>
  static T pick(const std::vector<T>& items, uint16_t index) {
    return items[index % items.size()];
  }

  porta_stream_t stream(uint16_t index) {
    return streams_.empty() || index % 4 == 0 ? nullptr : pick(streams_, index);
  }

  // A destination or source range of `floats` that lies inside a live buffer.
  float* place(uint16_t index, uint16_t offset, size_t floats) {
    if (!buffers_.empty() && index % 2) {
      const Buffer& buffer = pick(buffers_, index);
      if (floats > buffer.floats) return nullptr;
      return buffer.ptr + offset % (buffer.floats - floats + 1);
    }
    return g_shared[index % kSharedBuffers] + offset % (kSharedFloats - floats + 1);
  }

  void step(const Op& op) {
    switch (op.kind % 16) {
      case 0: {
        porta_stream_t stream = nullptr;
        EXPECT_OK(porta_stream_create(0, &stream));
        streams_.push_back(stream);
        break;
      }
      case 1:
        if (streams_.empty()) break;
        {
          const size_t i = op.a % streams_.size();
          EXPECT_OK(porta_stream_destroy(streams_[i]));
          stale_streams_.push_back(streams_[i]);
          streams_.erase(streams_.begin() + i);
        }
        break;
      case 2: {
        porta_event_t event = nullptr;
        EXPECT_OK(porta_event_create(0, &event));
        events_.push_back(event);
        break;
      }
      case 3:
        if (events_.empty()) break;
        {
          const size_t i = op.a % events_.size();
          EXPECT_OK(porta_event_destroy(events_[i]));
          stale_events_.push_back(events_[i]);
          events_.erase(events_.begin() + i);
        }
        break;
      case 4:
        if (!events_.empty()) EXPECT_OK(porta_event_record(pick(events_, op.a), stream(op.b)));
        break;
      case 5:
        if (!events_.empty()) {
          EXPECT_OK(porta_stream_wait_event(stream(op.b), pick(events_, op.a)));
        }
        break;
      case 6:
        if (!events_.empty()) {
          const porta_status_t status = PORTA_FUZZ_CALL(porta_event_query(pick(events_, op.a)));
          if (status != PORTA_SUCCESS && status != PORTA_NOT_READY) {
            expect(status, PORTA_SUCCESS, "porta_event_query");
          }
          if (op.b % 2) EXPECT_OK(porta_event_synchronize(pick(events_, op.a)));
        }
        break;
      case 7: {
        Buffer buffer{nullptr, size_t(1) + op.a % kSharedFloats};
        EXPECT_OK(porta_memory_alloc(0, buffer.floats * sizeof(float),
                                     reinterpret_cast<void**>(&buffer.ptr)));
        EXPECT_OK(porta_memset(buffer.ptr, 0, buffer.floats * sizeof(float)));
        buffers_.push_back(buffer);
        break;
      }
      case 8:
        if (buffers_.empty()) break;
        {
          const size_t i = op.a % buffers_.size();
          EXPECT_OK(porta_memory_free(buffers_[i].ptr));
          buffers_.erase(buffers_.begin() + i);
        }
        break;
      case 9: {  // device to device, or between the host and the device, maybe asynchronous
        const size_t floats = 1 + op.c % 512;
        float* dst = place(op.a, op.b, floats);
        float* src = place(op.b, op.a, floats);
        if (!dst || !src) break;
        if (dst < src + floats && src < dst + floats) break;  // overlapping copies are undefined
        const size_t bytes = floats * sizeof(float);
        switch (op.c % 4) {
          case 0:
            EXPECT_OK(porta_memcpy(dst, src, bytes));
            break;
          case 1:
            EXPECT_OK(porta_memcpy(dst, host_.data(), bytes));
            break;
          case 2:
            EXPECT_OK(porta_memcpy(host_.data(), src, bytes));
            break;
          default:
            EXPECT_OK(porta_memcpy_async(dst, src, bytes, stream(op.c / 4)));
            break;
        }
        break;
      }
      case 10: {
        const size_t floats = 1 + op.c % 1024;
        float* dst = place(op.a, op.b, floats);
        if (dst) EXPECT_OK(porta_memset_async(dst, 0, floats * sizeof(float), stream(op.c)));
        break;
      }
      case 11: {  // saxpy over a range of a buffer
        if (!module_) {
          EXPECT_OK(porta_module_load(0, PORTA_FUZZ_KERNELS, &module_));
          EXPECT_OK(porta_kernel_get(module_, "saxpy", &saxpy_));
        }
        const int n = 1 + op.c % 2048;
        float* x = place(op.a, op.b, size_t(n));
        float* y = place(op.b, op.a, size_t(n));
        if (!x || !y) break;
        float a = 0.5f;
        void* args[] = {const_cast<int*>(&n), &a, &x, &y};
        const uint32_t group = 64;
        porta_launch_config_t config{
            sizeof(config), {(uint32_t(n) + group - 1) / group, 1, 1}, {group, 1, 1}, 0, 0,
            nullptr};
        EXPECT_OK(porta_kernel_launch(saxpy_, &config, args, stream(op.c)));
        break;
      }
      case 12:
        if (module_ && op.a % 4 == 0) {  // unload after this thread's own launches
          EXPECT_OK(porta_module_unload(module_));
          module_ = nullptr;
          stale_kernel_ = saxpy_;
        }
        break;
      case 13: {
        const porta_status_t status = PORTA_FUZZ_CALL(porta_stream_query(stream(op.a)));
        if (status != PORTA_SUCCESS && status != PORTA_NOT_READY) {
          expect(status, PORTA_SUCCESS, "porta_stream_query");
        }
        EXPECT_OK(porta_stream_synchronize(stream(op.b)));
        break;
      }
      case 14:
        if (op.a % 8 == 0) EXPECT_OK(porta_device_synchronize(0));
        break;
      default:  // a handle this thread destroyed
        if (!stale_streams_.empty()) {
          EXPECT(porta_stream_synchronize(pick(stale_streams_, op.a)), PORTA_ERROR_INVALID_HANDLE);
          EXPECT(porta_stream_destroy(pick(stale_streams_, op.a)), PORTA_ERROR_INVALID_HANDLE);
        }
        if (!stale_events_.empty()) {
          EXPECT(porta_event_record(pick(stale_events_, op.b), nullptr),
                 PORTA_ERROR_INVALID_HANDLE);
          EXPECT(porta_event_query(pick(stale_events_, op.b)), PORTA_ERROR_INVALID_HANDLE);
        }
        if (stale_kernel_) {
          porta_launch_config_t config{sizeof(config), {1, 1, 1}, {1, 1, 1}, 0, 0, nullptr};
          int n = 0;
          float a = 0, *x = nullptr;
          void* args[] = {&n, &a, &x, &x};
          EXPECT(porta_kernel_launch(stale_kernel_, &config, args, nullptr),
                 PORTA_ERROR_INVALID_HANDLE);
        }
        break;
    }
  }

  const std::vector<Op>& ops_;
  std::vector<float> host_;
  std::vector<porta_stream_t> streams_, stale_streams_;
  std::vector<porta_event_t> events_, stale_events_;
  std::vector<Buffer> buffers_;
  porta_module_t module_ = nullptr;
  porta_kernel_t saxpy_ = nullptr;
  porta_kernel_t stale_kernel_ = nullptr;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("PORTA_LOG", "off", 1);
  if (porta_init(nullptr) != PORTA_SUCCESS) std::abort();
  for (float*& buffer : g_shared) {
    if (porta_memory_alloc(0, kSharedFloats * sizeof(float), reinterpret_cast<void**>(&buffer)) ||
        porta_memset(buffer, 0, kSharedFloats * sizeof(float))) {
      std::abort();
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  std::vector<Op> programs[kThreads];
  for (int ops = 0; input.remaining_bytes() > 0 && ops < 256; ++ops) {
    auto& program = programs[input.ConsumeIntegralInRange(0, kThreads - 1)];
    program.push_back(Op{input.ConsumeIntegral<uint8_t>(), input.ConsumeIntegral<uint16_t>(),
                         input.ConsumeIntegral<uint16_t>(), input.ConsumeIntegral<uint16_t>()});
  }
  std::vector<std::thread> threads;
  for (const auto& program : programs) {
    threads.emplace_back([&program] { Worker(program).run(); });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_OK(porta_device_synchronize(0));
  return 0;
}
