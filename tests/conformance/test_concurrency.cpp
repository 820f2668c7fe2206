// Concurrency: several host threads, each with its own streams, launching, copying, recording and
// waiting at once; events handed across threads and streams; objects created and destroyed while
// other threads use theirs. Labelled `concurrency` in CTest, and run again under ThreadSanitizer
// by tools/test.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <sstream>

#include "common.h"

using namespace porta_test;

namespace {

constexpr int kThreads = 4;

// Collects failures from worker threads (Catch's assertions are not thread-safe) and reports
// them on the main thread.
class Failures {
 public:
  void add(std::string what) {
    std::lock_guard lock(mutex_);
    failures_.push_back(std::move(what));
  }
  // Records a failure unless status is expected; returns whether it was.
  bool expect(porta_status_t status, porta_status_t expected, const char* what) {
    if (status == expected) return true;
    add(std::string(what) + " -> " + porta_status_name(status) + ": " + porta_last_error_message());
    return false;
  }
  bool ok(porta_status_t status, const char* what) { return expect(status, PORTA_SUCCESS, what); }
  void report() {
    std::lock_guard lock(mutex_);
    for (const std::string& failure : failures_) FAIL_CHECK(failure);
    CHECK(failures_.empty());
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> failures_;
};

#define WORKER_OK(failures, expr) (failures).ok((expr), #expr)

void run_threads(int count, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i) threads.emplace_back(body, i);
  for (auto& thread : threads) thread.join();
}

}  // namespace

TEST_CASE("concurrency: threads with their own streams launch, copy and wait at once",
          "[concurrency]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    Failures failures;
    run_threads(kThreads, [&](int thread) {
      constexpr int kN = 4099;
      constexpr int kIterations = 25;
      porta_stream_t stream = nullptr;
      porta_event_t done = nullptr;
      void *x = nullptr, *y = nullptr, *pinned = nullptr;
      if (!WORKER_OK(failures, porta_stream_create(device, &stream)) ||
          !WORKER_OK(failures, porta_event_create(device, &done)) ||
          !WORKER_OK(failures, porta_memory_alloc(device, kN * sizeof(float), &x)) ||
          !WORKER_OK(failures, porta_memory_alloc(device, kN * sizeof(float), &y)) ||
          !WORKER_OK(failures, porta_host_alloc(device, kN * sizeof(float), &pinned))) {
        return;
      }
      float* host = static_cast<float*>(pinned);
      for (int it = 0; it < kIterations; ++it) {
        // x = thread + it, y = it; y = 2x + y: small integers, exact.
        const float xv = static_cast<float>(thread + it), yv = static_cast<float>(it);
        for (int i = 0; i < kN; ++i) host[i] = xv;
        WORKER_OK(failures, porta_memcpy_async(x, host, kN * sizeof(float), stream));
        std::vector<float> ys(kN, yv);  // pageable, copied before the sync below
        WORKER_OK(failures, porta_memcpy_async(y, ys.data(), kN * sizeof(float), stream));
        WORKER_OK(failures, launch_saxpy(saxpy, kN, 2.0f, static_cast<float*>(x),
                                         static_cast<float*>(y), 64, stream));
        WORKER_OK(failures, porta_event_record(done, stream));
        // Alternate between waiting on the event and on the stream.
        if (it % 2) {
          WORKER_OK(failures, porta_event_synchronize(done));
        } else {
          while (porta_event_query(done) == PORTA_NOT_READY) std::this_thread::yield();
          failures.expect(porta_event_query(done), PORTA_SUCCESS, "porta_event_query");
        }
        // Pinned memory was read by the first copy; its reuse now is safe.
        WORKER_OK(failures, porta_memcpy_async(host, y, kN * sizeof(float), stream));
        WORKER_OK(failures, porta_stream_synchronize(stream));
        const float want = 2.0f * xv + yv;
        for (int i = 0; i < kN; ++i) {
          if (host[i] != want) {
            failures.add("thread " + std::to_string(thread) + " iteration " + std::to_string(it) +
                         " element " + std::to_string(i) + ": " + std::to_string(host[i]) +
                         " != " + std::to_string(want));
            break;
          }
        }
      }
      WORKER_OK(failures, porta_host_free(pinned));
      WORKER_OK(failures, porta_memory_free(x));
      WORKER_OK(failures, porta_memory_free(y));
      WORKER_OK(failures, porta_event_destroy(done));
      WORKER_OK(failures, porta_stream_destroy(stream));
    });
    failures.report();
  }
}

TEST_CASE("concurrency: a producer thread hands events to a consumer thread",
          "[concurrency]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    porta_kernel_t spin = module.kernel("spin");
    (void)spin_iterations(device);  // calibrate before the threads start
    constexpr int kRounds = 12;
    constexpr int kN = 1024;
    struct Round {
      void* x = nullptr;
      void* y = nullptr;
      porta_event_t ready = nullptr;
    };
    std::vector<Round> rounds(kRounds);
    for (Round& r : rounds) {
      PT_REQUIRE_OK(porta_memory_alloc(device, kN * sizeof(float), &r.x));
      PT_REQUIRE_OK(porta_memory_alloc(device, kN * sizeof(float), &r.y));
      PT_REQUIRE_OK(porta_event_create(device, &r.ready));
    }
    Buffer scratch(device, 256);
    std::mutex mutex;
    std::condition_variable published;
    int recorded = 0;  // rounds whose event the producer has recorded
    Failures failures;

    std::thread producer([&] {
      porta_stream_t stream = nullptr;
      if (!WORKER_OK(failures, porta_stream_create(device, &stream))) return;
      std::vector<float> x(kN), y(kN);
      for (int r = 0; r < kRounds; ++r) {
        std::fill(x.begin(), x.end(), static_cast<float>(r));
        std::fill(y.begin(), y.end(), 1.0f);
        // Some rounds start with real work so the consumer's wait has something to wait for.
        if (r % 3 == 0) {
          WORKER_OK(failures, launch_spin(device, spin, scratch.as<float>(), stream, 0.1));
        }
        WORKER_OK(failures, porta_memcpy_async(rounds[r].x, x.data(), kN * sizeof(float), stream));
        WORKER_OK(failures, porta_memcpy_async(rounds[r].y, y.data(), kN * sizeof(float), stream));
        WORKER_OK(failures, launch_saxpy(saxpy, kN, 2.0f, static_cast<float*>(rounds[r].x),
                                         static_cast<float*>(rounds[r].y), 128, stream));
        WORKER_OK(failures, porta_event_record(rounds[r].ready, stream));
        // x and y (pageable) must outlive the copies: wait before refilling them next round,
        // but only after publishing, so the consumer overlaps with this.
        {
          std::lock_guard lock(mutex);
          recorded = r + 1;
        }
        published.notify_all();
        WORKER_OK(failures, porta_stream_synchronize(stream));
      }
      WORKER_OK(failures, porta_stream_destroy(stream));
    });

    std::thread consumer([&] {
      porta_stream_t stream = nullptr;
      if (!WORKER_OK(failures, porta_stream_create(device, &stream))) return;
      std::vector<float> out(kN);
      for (int r = 0; r < kRounds; ++r) {
        {
          std::unique_lock lock(mutex);
          published.wait(lock, [&] { return recorded > r; });
        }
        // The consumer's stream waits on the producer's event; the host does not.
        WORKER_OK(failures, porta_stream_wait_event(stream, rounds[r].ready));
        WORKER_OK(failures,
                  porta_memcpy_async(out.data(), rounds[r].y, kN * sizeof(float), stream));
        WORKER_OK(failures, porta_stream_synchronize(stream));
        const float want = 2.0f * static_cast<float>(r) + 1.0f;
        for (int i = 0; i < kN; ++i) {
          if (out[i] != want) {
            failures.add("round " + std::to_string(r) + " element " + std::to_string(i) + ": " +
                         std::to_string(out[i]) + " != " + std::to_string(want));
            break;
          }
        }
      }
      WORKER_OK(failures, porta_stream_destroy(stream));
    });
    producer.join();
    consumer.join();
    failures.report();
    for (Round& r : rounds) {
      PT_CHECK_OK(porta_event_destroy(r.ready));
      PT_CHECK_OK(porta_memory_free(r.x));
      PT_CHECK_OK(porta_memory_free(r.y));
    }
  }
}

TEST_CASE("concurrency: cross-stream waits in both directions", "[concurrency]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    Stream a(device), b(device);
    Event a_done(device), b_done(device);
    constexpr int kN = 512;
    constexpr int kSteps = 20;
    Buffer x(device, kN * sizeof(float)), y(device, kN * sizeof(float));
    std::vector<float> ones(kN, 1.0f), zeros(kN, 0.0f);
    PT_REQUIRE_OK(porta_memcpy(x.get(), ones.data(), kN * sizeof(float)));
    PT_REQUIRE_OK(porta_memcpy(y.get(), zeros.data(), kN * sizeof(float)));
    // y += x alternately on a and b; each step waits for the other stream's previous step, so
    // the result counts every step exactly once only if every wait was honoured.
    for (int step = 0; step < kSteps; ++step) {
      Stream& mine = step % 2 ? b : a;
      Event& my_done = step % 2 ? b_done : a_done;
      Event& their_done = step % 2 ? a_done : b_done;
      PT_REQUIRE_OK(porta_stream_wait_event(mine.get(), their_done.get()));
      PT_REQUIRE_OK(launch_saxpy(saxpy, kN, 1.0f, x.as<float>(), y.as<float>(), 64, mine.get()));
      PT_REQUIRE_OK(porta_event_record(my_done.get(), mine.get()));
    }
    PT_REQUIRE_OK(porta_stream_synchronize(a.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(b.get()));
    std::vector<float> got(kN);
    PT_REQUIRE_OK(porta_memcpy(got.data(), y.get(), kN * sizeof(float)));
    CHECK(got == std::vector<float>(kN, static_cast<float>(kSteps)));
  }
}

TEST_CASE("concurrency: objects created and destroyed on many threads", "[concurrency]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Failures failures;
    std::atomic<bool> stop{false};
    // Handles destroyed by the workers, probed by the watcher as they go.
    std::mutex stale_mutex;
    std::vector<porta_stream_t> stale_streams;
    std::vector<porta_event_t> stale_events;

    std::thread watcher([&] {
      while (!stop.load()) {
        std::vector<porta_stream_t> streams;
        std::vector<porta_event_t> events;
        {
          std::lock_guard lock(stale_mutex);
          streams = stale_streams;
          events = stale_events;
        }
        for (porta_stream_t s : streams) {
          failures.expect(porta_stream_query(s), PORTA_ERROR_INVALID_HANDLE, "stale stream query");
        }
        for (porta_event_t e : events) {
          failures.expect(porta_event_query(e), PORTA_ERROR_INVALID_HANDLE, "stale event query");
        }
        std::this_thread::yield();
      }
    });

    run_threads(kThreads, [&](int thread) {
      for (int it = 0; it < 50; ++it) {
        porta_stream_t stream = nullptr;
        porta_event_t event = nullptr;
        void* ptr = nullptr;
        void* pinned = nullptr;
        const size_t size = 256 + 64 * static_cast<size_t>(thread * 50 + it);
        if (!WORKER_OK(failures, porta_stream_create(device, &stream)) ||
            !WORKER_OK(failures, porta_event_create(device, &event)) ||
            !WORKER_OK(failures, porta_memory_alloc(device, size, &ptr)) ||
            !WORKER_OK(failures, porta_host_alloc(device, size, &pinned))) {
          return;
        }
        porta_pointer_info_t info;
        info.struct_size = sizeof(info);
        WORKER_OK(failures, porta_pointer_info(static_cast<char*>(ptr) + size - 1, &info));
        if (info.base != ptr || info.size != size || info.kind != PORTA_MEMORY_DEVICE) {
          failures.add("pointer_info of a live allocation named another one");
        }
        WORKER_OK(failures, porta_memset_async(ptr, thread, size, stream));
        WORKER_OK(failures, porta_memcpy_async(pinned, ptr, size, stream));
        WORKER_OK(failures, porta_event_record(event, stream));
        WORKER_OK(failures, porta_event_synchronize(event));
        if (static_cast<unsigned char*>(pinned)[size - 1] != thread) {
          failures.add("thread " + std::to_string(thread) + " read another thread's bytes");
        }
        WORKER_OK(failures, porta_memory_free(ptr));
        WORKER_OK(failures, porta_host_free(pinned));
        WORKER_OK(failures, porta_event_destroy(event));
        WORKER_OK(failures, porta_stream_destroy(stream));
        std::lock_guard lock(stale_mutex);
        stale_streams.push_back(stream);
        stale_events.push_back(event);
      }
    });
    stop = true;
    watcher.join();
    failures.report();
  }
}

TEST_CASE("concurrency: modules loaded and unloaded on many threads",
          "[concurrency]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    const std::vector<char> image = read_file(kernels_path());
    const std::string path = kernels_path();
    Failures failures;
    run_threads(kThreads, [&](int thread) {
      for (int it = 0; it < 10; ++it) {
        porta_module_t module = nullptr;
        const porta_status_t loaded =
            (thread + it) % 2 ? porta_module_load(device, path.c_str(), &module)
                              : porta_module_load_data(device, image.data(), image.size(), &module);
        if (!failures.ok(loaded, "module load")) return;
        porta_kernel_t saxpy = nullptr;
        WORKER_OK(failures, porta_kernel_get(module, "saxpy", &saxpy));
        porta_kernel_t missing = nullptr;
        failures.expect(porta_kernel_get(module, "missing", &missing), PORTA_ERROR_NOT_FOUND,
                        "kernel_get of a missing kernel");
        constexpr int kN = 100;
        void* y = nullptr;
        WORKER_OK(failures, porta_memory_alloc(device, kN * sizeof(float), &y));
        std::vector<float> host(kN, static_cast<float>(thread));
        WORKER_OK(failures, porta_memcpy(y, host.data(), kN * sizeof(float)));
        porta_stream_t stream = nullptr;
        WORKER_OK(failures, porta_stream_create(device, &stream));
        // y = 1 * y + y: doubles each element (x aliases y, which saxpy allows element-wise).
        WORKER_OK(failures, launch_saxpy(saxpy, kN, 1.0f, static_cast<float*>(y),
                                         static_cast<float*>(y), 32, stream));
        WORKER_OK(failures, porta_stream_synchronize(stream));
        WORKER_OK(failures, porta_memcpy(host.data(), y, kN * sizeof(float)));
        if (host[kN - 1] != 2.0f * static_cast<float>(thread)) {
          failures.add("thread " + std::to_string(thread) + ": wrong saxpy result");
        }
        WORKER_OK(failures, porta_stream_destroy(stream));
        WORKER_OK(failures, porta_memory_free(y));
        WORKER_OK(failures, porta_module_unload(module));
        failures.expect(porta_kernel_get(module, "saxpy", &saxpy), PORTA_ERROR_INVALID_HANDLE,
                        "kernel_get on an unloaded module");
      }
    });
    failures.report();
  }
}

TEST_CASE("concurrency: the default stream shared by many threads", "[concurrency]") {
  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  Failures failures;
  constexpr size_t kSize = 1 << 14;
  run_threads(kThreads, [&](int thread) {
    void* ptr = nullptr;
    if (!WORKER_OK(failures, porta_memory_alloc(device, kSize, &ptr))) return;
    std::vector<uint8_t> host(kSize);
    for (int it = 0; it < 20; ++it) {
      const int value = (thread * 20 + it) & 0xFF;
      WORKER_OK(failures, porta_memset(ptr, value, kSize));  // blocking, default stream
      WORKER_OK(failures, porta_memcpy_async(host.data(), ptr, kSize, nullptr));
      WORKER_OK(failures, porta_stream_synchronize(nullptr));
      if (host.front() != value || host.back() != value) {
        failures.add("thread " + std::to_string(thread) + " saw a foreign value");
      }
    }
    WORKER_OK(failures, porta_memory_free(ptr));
  });
  failures.report();
}

TEST_CASE("concurrency: errors on one thread do not leak into another", "[concurrency]") {
  Failures failures;
  run_threads(kThreads, [&](int thread) {
    for (int it = 0; it < 100; ++it) {
      if (thread % 2) {
        // Failing thread: its message names its own mistake.
        failures.expect(porta_memory_free(reinterpret_cast<void*>(0x1234)),
                        PORTA_ERROR_INVALID_ARGUMENT, "foreign free");
        if (std::string(porta_last_error_message()).empty()) failures.add("empty message");
      } else {
        // Succeeding thread: its message stays "".
        int32_t count = 0;
        WORKER_OK(failures, porta_device_count(&count));
        if (!std::string(porta_last_error_message()).empty()) {
          failures.add(std::string("a succeeding thread has a message: ") +
                       porta_last_error_message());
        }
      }
    }
  });
  failures.report();
}

// porta_init while initialised returns the first call's status. Asking to hold the runtime alone
// first, it waited until no other call held it: threads calling back to back kept it waiting for
// as long as they ran (the workers below stop only once it has returned; the deadline turns a
// wait that never ends into a failure).
TEST_CASE("concurrency: porta_init returns at once while other threads keep calling",
          "[concurrency]") {
  Failures failures;
  const porta_device_t device = devices().front();  // Catch's checks on this thread only
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < 3; ++i) {
    workers.emplace_back([&, i] {
      porta_stream_t stream = nullptr;
      WORKER_OK(failures, porta_stream_create(device, &stream));
      std::this_thread::sleep_for(std::chrono::microseconds(1700 * i));  // out of step
      ++started;
      const auto nap = [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(5)); };
      while (!stop && WORKER_OK(failures, porta_stream_launch_host_func(stream, nap, nullptr)) &&
             WORKER_OK(failures, porta_stream_synchronize(stream))) {
      }
      WORKER_OK(failures, porta_stream_destroy(stream));
    });
  }
  while (started < 3) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::promise<porta_status_t> init;
  std::future<porta_status_t> status = init.get_future();
  std::thread caller([&] { init.set_value(porta_init(nullptr)); });
  const bool returned = status.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  stop = true;
  caller.join();
  for (std::thread& worker : workers) worker.join();
  CHECK(returned);
  CHECK(Status{status.get()} == Status{PORTA_SUCCESS});
  failures.report();
}

// ---- objects destroyed while another thread uses them -------------------------------------------
// Each round races one thread's use of an object against another thread destroying it. The user
// gets SUCCESS (the call came first) or INVALID_HANDLE (the destroy came first); never a hang, a
// crash, or code that runs after its module was unloaded.

namespace {

constexpr int kRaceRounds = 40;

// Runs use() in a loop on two threads until it stops returning SUCCESS, while the calling
// thread destroys the object once use() has run at least once. Each user must end with refused
// (INVALID_HANDLE for a handle: its call came after the destroy), having had only SUCCESS before.
template <typename Use, typename Destroy>
void race(Use&& use, Destroy&& destroy, Failures& failures, const char* what,
          porta_status_t refused = PORTA_ERROR_INVALID_HANDLE) {
  constexpr int kUsers = 2;
  std::atomic<int> uses{0};
  std::atomic<int> done{0};
  std::vector<std::thread> users;
  for (int i = 0; i < kUsers; ++i) {
    users.emplace_back([&] {
      porta_status_t status;
      while ((status = use()) == PORTA_SUCCESS) ++uses;
      failures.expect(status, refused, what);
      ++done;
    });
  }
  while (uses.load() == 0 && done.load() == 0) std::this_thread::yield();
  destroy();
  for (std::thread& user : users) user.join();
}

}  // namespace

TEST_CASE("concurrency: a stream destroyed while another thread synchronizes it", "[concurrency]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    constexpr size_t kSize = size_t{1} << 12;
    Buffer buffer(device, kSize);
    Failures failures;
    for (int round = 0; round < kRaceRounds; ++round) {
      porta_stream_t stream = nullptr;
      PT_REQUIRE_OK(porta_stream_create(device, &stream));
      // Work queued and waited for in a loop: a user may be queueing, or waiting in the stream,
      // while the destroy tears it down.
      auto use = [&] {
        porta_status_t status = porta_memset_async(buffer.get(), round & 0xFF, kSize, stream);
        return status == PORTA_SUCCESS ? porta_stream_synchronize(stream) : status;
      };
      race(
          use, [&] { WORKER_OK(failures, porta_stream_destroy(stream)); }, failures,
          "using a destroyed stream");
    }
    failures.report();
  }
}

namespace {

// A page of memory whose first read waits until fill() gives it its bytes (userfaultfd): a call
// that reads its arguments from there stops at that read, after what it did before, so that
// another thread can act in between, every time. Unusable where the kernel refuses userfaultfd.
class PausingPage {
 public:
  PausingPage() {
    fd_ = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC));
    if (fd_ < 0) return;
    uffdio_api api{};
    api.api = UFFD_API;
    void* page = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ioctl(fd_, UFFDIO_API, &api) != 0 || page == MAP_FAILED) return;
    page_ = static_cast<char*>(page);
    uffdio_register region{};
    region.range = {reinterpret_cast<uint64_t>(page_), kPage};
    region.mode = UFFDIO_REGISTER_MODE_MISSING;
    usable_ = ioctl(fd_, UFFDIO_REGISTER, &region) == 0;
  }
  ~PausingPage() {
    if (page_) munmap(page_, kPage);
    if (fd_ >= 0) close(fd_);
  }
  PausingPage(const PausingPage&) = delete;
  PausingPage& operator=(const PausingPage&) = delete;

  bool usable() const { return usable_; }
  template <typename T>
  T* at() const {
    return reinterpret_cast<T*>(page_);
  }
  // Waits up to timeout_ms for a thread to stop at a read of the page.
  bool wait_for_reader(int timeout_ms) {
    pollfd ready{fd_, POLLIN, 0};
    uffd_msg message{};
    return poll(&ready, 1, timeout_ms) == 1 &&
           read(fd_, &message, sizeof message) == ssize_t(sizeof message) &&
           message.event == UFFD_EVENT_PAGEFAULT;
  }
  // Gives the page its bytes (the rest zero), and lets the reader go on.
  bool fill(const void* bytes, size_t size) {
    alignas(4096) static char source[kPage];
    std::memset(source, 0, kPage);
    std::memcpy(source, bytes, size);
    uffdio_copy copy{};
    copy.dst = reinterpret_cast<uint64_t>(page_);
    copy.src = reinterpret_cast<uint64_t>(source);
    copy.len = kPage;
    return ioctl(fd_, UFFDIO_COPY, &copy) == 0;
  }

 private:
  static constexpr size_t kPage = 4096;
  int fd_ = -1;
  char* page_ = nullptr;
  bool usable_ = false;
};

}  // namespace

// A launch that took its stream before another thread destroyed it is queued after the destroy
// began to wait for the stream, and the destroy, the stream's last user, returns after it: the
// device's waits (porta_device_synchronize, and those behind porta_memory_free and
// porta_module_unload) must still count that launch.
TEST_CASE("concurrency: work queued while its stream is destroyed is waited for by the device",
          "[concurrency]" PT_KERNELS_TAG) {
  PausingPage page;
  if (!page.usable()) {
    WARN("skipped: no userfaultfd here (" << std::strerror(errno)
                                          << "), which holds the launch at its arguments");
    return;
  }
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t spin = module.kernel("spin");
    Buffer busy(device, 256), out(device, 256);
    PT_REQUIRE_OK(porta_memset(out.get(), 0, out.size()));
    porta_stream_t stream = nullptr;
    PT_REQUIRE_OK(porta_stream_create(device, &stream));
    // A first spin keeps the destroy waiting while the second launch goes on.
    PT_REQUIRE_OK(launch_spin(device, spin, busy.as<float>(), stream, 2.0));
    Event first_done(device);
    PT_REQUIRE_OK(porta_event_record(first_done.get(), stream));
    // The second launch reads its spin count from the page, which stops it there.
    const int64_t iterations = 3 * spin_iterations(device);
    float* out_ptr = out.as<float>();
    void* args[] = {page.at<int64_t>(), &out_ptr};
    const porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1});
    std::atomic<porta_status_t> launched{PORTA_ERROR_INTERNAL};
    std::thread launcher([&] { launched = porta_kernel_launch(spin, &config, args, stream); });
    const bool stopped = page.wait_for_reader(10000);
    auto destroyed = std::async(std::launch::async, [&] { return porta_stream_destroy(stream); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the destroy waits meanwhile
    REQUIRE(page.fill(&iterations, sizeof iterations));
    launcher.join();
    REQUIRE(stopped);
    REQUIRE(Status{launched.load()} == Status{PORTA_SUCCESS});
    // Once the destroy has what it waited for, it lets the stream go while the second spin runs.
    // (Polled: a wait on the event would hold the stream, and be its last user itself.)
    porta_status_t first;
    while ((first = porta_event_query(first_done.get())) == PORTA_NOT_READY) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    PT_REQUIRE_OK(first);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    PT_REQUIRE_OK(porta_device_synchronize(device));
    float last = 0.0f;
    PT_REQUIRE_OK(porta_memcpy(&last, out.get(), sizeof last));
    CHECK(last != 0.0f);  // the second spin ran to its end before the device's wait returned
    PT_CHECK_OK(destroyed.get());
  }
}

TEST_CASE("concurrency: an event destroyed while another thread makes a stream wait on it",
          "[concurrency]") {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    constexpr size_t kSize = size_t{1} << 16;
    Buffer buffer(device, kSize);
    Stream recorder(device), waiter(device);
    Failures failures;
    for (int round = 0; round < kRaceRounds; ++round) {
      porta_event_t event = nullptr;
      PT_REQUIRE_OK(porta_event_create(device, &event));
      auto use = [&] {
        porta_status_t status = porta_memset_async(buffer.get(), 1, kSize, recorder.get());
        if (status == PORTA_SUCCESS) status = porta_event_record(event, recorder.get());
        return status == PORTA_SUCCESS ? porta_stream_wait_event(waiter.get(), event) : status;
      };
      race(
          use, [&] { WORKER_OK(failures, porta_event_destroy(event)); }, failures,
          "using a destroyed event");
    }
    WORKER_OK(failures, porta_stream_synchronize(waiter.get()));
    failures.report();
  }
}

TEST_CASE("concurrency: a module unloaded while another thread launches its kernel",
          "[concurrency]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    // Loaded from memory, each load is a code object of its own, which the unload unmaps.
    const std::vector<char> image = read_file(kernels_path());
    constexpr int kN = 4096;
    Buffer x(device, kN * sizeof(float)), y(device, kN * sizeof(float));
    PT_REQUIRE_OK(porta_memset(x.get(), 0, kN * sizeof(float)));
    PT_REQUIRE_OK(porta_memset(y.get(), 0, kN * sizeof(float)));
    Stream stream(device);
    Failures failures;
    // Fewer rounds: each loads a module, which ThreadSanitizer makes slow.
    for (int round = 0; round < kRaceRounds / 2; ++round) {
      porta_module_t module = nullptr;
      porta_kernel_t saxpy = nullptr;
      PT_REQUIRE_OK(porta_module_load_data(device, image.data(), image.size(), &module));
      PT_REQUIRE_OK(porta_kernel_get(module, "saxpy", &saxpy));
      auto use = [&] {
        return launch_saxpy(saxpy, kN, 1.0f, x.as<float>(), y.as<float>(), 64, stream.get());
      };
      race(
          use, [&] { WORKER_OK(failures, porta_module_unload(module)); }, failures,
          "launching a kernel of an unloaded module");
      // Every launch that was accepted ran (or runs now) with its code still mapped.
      WORKER_OK(failures, porta_stream_synchronize(stream.get()));
    }
    failures.report();
  }
}

// A copy or set accepted before a free on another thread is queued before the free's wait for
// the devices, so it runs while the memory is still there; one after it is refused.
TEST_CASE("concurrency: memory freed while other threads copy to it and set it", "[concurrency]") {
  // Only where freed memory is told from host memory: elsewhere a copy into it after the free
  // is a copy into host memory, and the users would never be refused.
  for (porta_device_t device : devices_with_reserved_addresses("copies racing a free")) {
    INFO("device " << device);
    constexpr size_t kBytes = 4096;
    const std::vector<uint8_t> host(kBytes, 0x5A);
    Stream stream(device);
    Failures failures;
    for (int round = 0; round < kRaceRounds; ++round) {
      void* memory = nullptr;
      PT_REQUIRE_OK(porta_memory_alloc(device, kBytes, &memory));
      std::atomic<int> turn{0};
      // One stream for both users, so that their writes are ordered (ThreadSanitizer).
      auto use = [&]() -> porta_status_t {
        return turn++ % 2 ? porta_memset_async(memory, 1, kBytes, stream.get())
                          : porta_memcpy_async(memory, host.data(), kBytes, stream.get());
      };
      race(
          use, [&] { WORKER_OK(failures, porta_memory_free(memory)); }, failures,
          "copying to freed memory", PORTA_ERROR_INVALID_ARGUMENT);
      WORKER_OK(failures, porta_stream_synchronize(stream.get()));
    }
    failures.report();
  }
}

namespace {

// Queues y = 2x + y on n floats (x = 1, y = seed) in groups of 64, waits, and checks y.
void saxpy_round(porta_kernel_t saxpy, porta_stream_t stream, float* x, float* y, int n, float seed,
                 Failures& failures, const std::string& where) {
  // Each host vector is read or written by the stream until the synchronize.
  const std::vector<float> ones(n, 1.0f), seeds(n, seed);
  std::vector<float> host(n);
  WORKER_OK(failures, porta_memcpy_async(x, ones.data(), n * sizeof(float), stream));
  WORKER_OK(failures, porta_memcpy_async(y, seeds.data(), n * sizeof(float), stream));
  WORKER_OK(failures, launch_saxpy(saxpy, n, 2.0f, x, y, 64, stream));
  WORKER_OK(failures, porta_memcpy_async(host.data(), y, n * sizeof(float), stream));
  if (!WORKER_OK(failures, porta_stream_synchronize(stream))) return;
  for (int i = 0; i < n; ++i) {
    if (host[i] != 2.0f + seed) {
      failures.add(where + " element " + std::to_string(i) + ": " + std::to_string(host[i]) +
                   " != " + std::to_string(2.0f + seed));
      return;
    }
  }
}

}  // namespace

// More streams than cores, each launching and waiting back to back: they must neither starve
// one another nor go wrong.
TEST_CASE("concurrency: more streams than cores launch and wait back to back",
          "[concurrency]" PT_KERNELS_TAG) {
  const int streams = static_cast<int>(std::max(8u, 4 * std::thread::hardware_concurrency()));
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    Failures failures;
    run_threads(streams, [&](int thread) {
      constexpr int kN = 1000;  // 16 groups: the pool takes part
      // The C API, not the suite's owners: Catch's assertions are not thread-safe.
      porta_stream_t stream = nullptr;
      void *x = nullptr, *y = nullptr;
      if (WORKER_OK(failures, porta_stream_create(device, &stream)) &&
          WORKER_OK(failures, porta_memory_alloc(device, kN * sizeof(float), &x)) &&
          WORKER_OK(failures, porta_memory_alloc(device, kN * sizeof(float), &y))) {
        for (int it = 0; it < 20; ++it) {
          saxpy_round(saxpy, stream, static_cast<float*>(x), static_cast<float*>(y), kN,
                      static_cast<float>(thread + it), failures,
                      "thread " + std::to_string(thread) + " iteration " + std::to_string(it));
        }
      }
      if (x) WORKER_OK(failures, porta_memory_free(x));
      if (y) WORKER_OK(failures, porta_memory_free(y));
      if (stream) WORKER_OK(failures, porta_stream_destroy(stream));
    });
    failures.report();
  }
}

// Kernels, copies and host functions on one stream while other threads synchronize it, or an
// event recorded into it, again and again (a backend may run work on a thread that waits for it,
// the CPU's does): the stream must keep its order, and a host function never runs on a thread
// that queued it or waits.
TEST_CASE("concurrency: a stream keeps its order while several threads synchronize it",
          "[concurrency]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    constexpr int kRounds = 300, kN = 1000;  // 16 groups, or 1 where a round takes kOneGroup
    constexpr int kOneGroup = 64;
    Buffer x(device, kN * sizeof(float)), y(device, kN * sizeof(float));
    Buffer staging(device, kRounds * sizeof(float), Buffer::kPinned);
    PT_REQUIRE_OK(porta_memset(y.get(), 0, kN * sizeof(float)));
    const std::vector<float> ones(kN, 1.0f);
    PT_REQUIRE_OK(porta_memcpy(x.get(), ones.data(), kN * sizeof(float)));
    Stream stream(device);
    Event progress(device);  // recorded after each round
    // Round r: y[0] += 1, y[0] copied to staging[r], and a host function that reads it.
    struct Seen {
      const float* from;
      float value = -1.0f;
      std::thread::id thread;
      static void run(void* data) {
        auto* seen = static_cast<Seen*>(data);
        seen->value = *seen->from;
        seen->thread = std::this_thread::get_id();
      }
    };
    std::vector<Seen> seen(kRounds);
    Failures failures;
    std::atomic<bool> queued{false};
    std::mutex waiters_mutex;
    std::vector<std::thread::id> waiters;  // every thread that queues or synchronizes
    run_threads(4, [&](int thread) {
      {
        std::lock_guard lock(waiters_mutex);
        waiters.push_back(std::this_thread::get_id());
      }
      if (thread == 1 || thread == 2) {  // waiters on the stream
        while (!queued) WORKER_OK(failures, porta_stream_synchronize(stream.get()));
        return;
      }
      if (thread == 3) {  // a waiter on the event
        while (!queued) WORKER_OK(failures, porta_event_synchronize(progress.get()));
        return;
      }
      for (int r = 0; r < kRounds; ++r) {
        float* copy = staging.as<float>() + r;
        seen[r].from = copy;
        const int n = r % 3 == 0 ? kOneGroup : kN;
        WORKER_OK(failures, launch_saxpy(saxpy, n, 1.0f, x.as<float>(), y.as<float>(), kOneGroup,
                                         stream.get()));
        WORKER_OK(failures, porta_memcpy_async(copy, y.get(), sizeof(float), stream.get()));
        WORKER_OK(failures, porta_stream_launch_host_func(stream.get(), Seen::run, &seen[r]));
        WORKER_OK(failures, porta_event_record(progress.get(), stream.get()));
        if (r % 7 == 0) WORKER_OK(failures, porta_stream_synchronize(stream.get()));
      }
      WORKER_OK(failures, porta_stream_synchronize(stream.get()));
      queued = true;
    });
    failures.report();
    for (int r = 0; r < kRounds; ++r) {
      INFO("round " << r);
      CHECK(seen[r].value == static_cast<float>(r + 1));
      CHECK(std::find(waiters.begin(), waiters.end(), seen[r].thread) == waiters.end());
    }
  }
}

// A stream destroyed, and the backend shut down, right after work, while the stream worker and
// the pool threads are still on their way back to waiting: they must stop at once, not hang.
TEST_CASE("concurrency: streams and the backend stop while their threads wait for work",
          "[concurrency]" PT_KERNELS_TAG) {
  for (int round = 0; round < 3; ++round) {
    for (porta_device_t device : devices()) {
      INFO("round " << round << ", device " << device);
      Module module(device);
      porta_kernel_t saxpy = module.kernel("saxpy");
      Failures failures;
      constexpr int kN = 4099;
      Buffer x(device, kN * sizeof(float)), y(device, kN * sizeof(float));
      for (int it = 0; it < 20; ++it) {
        porta_stream_t stream = nullptr;
        PT_REQUIRE_OK(porta_stream_create(device, &stream));
        saxpy_round(saxpy, stream, x.as<float>(), y.as<float>(), kN, static_cast<float>(it),
                    failures, "iteration " + std::to_string(it));
        PT_CHECK_OK(porta_stream_destroy(stream));
      }
      // The default stream's worker and the pool have just run work too.
      porta_stream_t default_stream = nullptr;
      PT_REQUIRE_OK(porta_stream_default(device, &default_stream));
      saxpy_round(saxpy, default_stream, x.as<float>(), y.as<float>(), kN, 7.0f, failures,
                  "default stream");
      failures.report();
    }
    porta_shutdown();
    PT_REQUIRE_OK(porta_init(nullptr));
  }
}

// The CPU backend's threads poll for a short while before they sleep (backends/cpu/spin_wait.h):
// once the work is done they must give the cores back, never keep spinning.
TEST_CASE("concurrency: the backend's threads stop using the cores soon after work",
          "[concurrency]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) {
    WARN("skipped on " << backend_name() << ": the threads that wait there are the driver's");
    return;
  }
  // CPU seconds used so far by the backend's threads, found by their names, so that other
  // threads of the process (a vendor library's, a sanitizer's) do not count.
  const auto backend_cpu_seconds = [] {
    uint64_t ticks = 0;
    int threads = 0;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      std::getline(comm, name);
      if (name != "porta-pool" && name != "porta-stream") continue;
      std::ifstream stat_file(task.path() / "stat");
      std::string stat;
      std::getline(stat_file, stat);
      // Fields after the name's closing parenthesis: state is the 3rd, utime and stime the 14th
      // and 15th of the line.
      std::istringstream fields(stat.substr(stat.rfind(')') + 2));
      std::string field;
      uint64_t utime = 0, stime = 0;
      for (int i = 3; i <= 15 && fields >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
      }
      ticks += utime + stime;
      ++threads;
    }
    return std::make_pair(static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK)),
                          threads);
  };
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    Failures failures;
    constexpr int kN = 4099;  // several groups: the pool takes part
    Buffer x(device, kN * sizeof(float)), y(device, kN * sizeof(float));
    porta_stream_t stream = nullptr;
    PT_REQUIRE_OK(porta_stream_default(device, &stream));
    for (int it = 0; it < 10; ++it) {
      saxpy_round(saxpy, stream, x.as<float>(), y.as<float>(), kN, static_cast<float>(it),
                  failures, "iteration " + std::to_string(it));
    }
    failures.report();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto [before, threads] = backend_cpu_seconds();
    REQUIRE(threads >= 1);  // at least the stream's worker
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    // A thread left spinning would take most of a core: 400 ms, or a share of it under load. The
    // clock counts in ticks (10 ms), so a few may fall in by rounding.
    CHECK(backend_cpu_seconds().first - before < 0.05);
  }
}
