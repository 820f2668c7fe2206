// PORTA_CPU_MODE=simt and racecheck on kernels with the mistakes a GPU punishes and the CPU's fast
// mode hides (hazard_kernels.cpp): racecheck reports each one, with the kernel, group, items,
// phase and buffer, and fails the launch's stream with PORTA_ERROR_KERNEL_HAZARD; the correct
// version of each runs clean and right. Each test initialises Porta itself, in the mode it needs.
#define CATCH_CONFIG_MAIN
#include <porta/porta.h>
#include <porta/porta_ops.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "../child_process.h"

using namespace porta_test;

namespace {

// Porta initialised on the CPU backend in one mode, shut down at the end of the test. A sanitizer
// build has no racecheck builds of kernel libraries: the test is skipped there, saying so.
class Session {
 public:
  explicit Session(const char* mode) {
#ifndef PORTA_TEST_RACECHECK_BUILT
    if (mode && std::string(mode) == "racecheck") {
      std::printf("skipped: this build (PORTA_SANITIZE) has no racecheck kernel builds\n");
      std::exit(77);
    }
#endif
    porta_init_options_t options{};
    options.struct_size = sizeof(options);
    options.backend = "cpu";
    options.cpu_mode = mode;
    status_ = porta_init(&options);
  }
  ~Session() { porta_shutdown(); }
  porta_status_t status() const { return status_; }

 private:
  porta_status_t status_;
};

std::string report(size_t* count = nullptr) {
  size_t length = 0, lines = 0;
  REQUIRE(porta_cpu_racecheck_report(nullptr, 0, &length, &lines) == PORTA_SUCCESS);
  std::string text(length + 1, '\0');
  REQUIRE(porta_cpu_racecheck_report(text.data(), text.size(), &length, &lines) == PORTA_SUCCESS);
  text.resize(length);
  if (count) *count = lines;
  return text;
}

struct Run {
  porta_status_t status;
  std::string message;
  std::vector<float> y;
};

// One group of n items.
porta_launch_config_t one_group(uint32_t n) {
  porta_launch_config_t config{};
  config.struct_size = sizeof(config);
  config.grid[0] = config.grid[1] = config.grid[2] = 1;
  config.group[0] = n;
  config.group[1] = config.group[2] = 1;
  return config;
}

// Launches kernel(n, [x,] y) as one group of n items and returns the stream's status and y;
// between() runs after the launch is queued, before the stream is synchronised.
Run run(const char* kernel, uint32_t n, const std::vector<float>& x, std::vector<float> y,
        bool with_x = true, const std::function<void()>& between = {}) {
  porta_module_t module;
  REQUIRE(porta_module_load(0, PORTA_TEST_HAZARD_KERNELS, &module) == PORTA_SUCCESS);
  porta_kernel_t k;
  REQUIRE(porta_kernel_get(module, kernel, &k) == PORTA_SUCCESS);
  void *dx = nullptr, *dy = nullptr;
  REQUIRE(porta_memory_alloc(0, x.size() * sizeof(float), &dx) == PORTA_SUCCESS);
  REQUIRE(porta_memory_alloc(0, y.size() * sizeof(float), &dy) == PORTA_SUCCESS);
  REQUIRE(porta_memcpy(dx, x.data(), x.size() * sizeof(float)) == PORTA_SUCCESS);
  REQUIRE(porta_memcpy(dy, y.data(), y.size() * sizeof(float)) == PORTA_SUCCESS);
  const porta_launch_config_t config = one_group(n);
  void* with[] = {&n, &dx, &dy};
  void* without[] = {&n, &dy};
  REQUIRE(porta_kernel_launch(k, &config, with_x ? with : without, nullptr) == PORTA_SUCCESS);
  if (between) between();
  Run result;
  result.status = porta_stream_synchronize(nullptr);
  result.message = result.status == PORTA_SUCCESS ? "" : porta_last_error_message();
  REQUIRE(porta_memcpy(y.data(), dy, y.size() * sizeof(float)) == PORTA_SUCCESS);
  result.y = y;
  porta_memory_free(dx);
  porta_memory_free(dy);
  porta_module_unload(module);
  return result;
}

std::vector<float> ramp(uint32_t n) {
  std::vector<float> x(n);
  for (uint32_t i = 0; i < n; ++i) x[i] = float(i + 1);
  return x;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("racecheck: a missing barrier is a read/write race in shared memory", "[racecheck]") {
  Session session("racecheck");
  REQUIRE(session.status() == PORTA_SUCCESS);
  constexpr uint32_t n = 64;
  Run bad = run("missing_barrier", n, ramp(n), std::vector<float>(n));
  CHECK(bad.status == PORTA_ERROR_KERNEL_HAZARD);
  INFO(bad.message);
  CHECK(contains(bad.message, "kernel 'missing_barrier': read/write race in group (0,0,0)"));
  // Item 63, first in the phase, read tile[62]; item 62 then wrote it.
  CHECK(contains(bad.message, "between work-items (63,0,0) and (62,0,0)"));
  CHECK(contains(bad.message,
                 "4 bytes of PORTA_SHARED porta_kernel_body_missing_barrier("
                 "unsigned int, float const*, float*)::tile + 248"));
  CHECK(contains(bad.message, "in phase 0"));
  size_t count = 0;
  const std::string text = report(&count);
  INFO(text);
  CHECK(count == 1);  // once per kernel and site, however many items raced
  CHECK(contains(text, "missing_barrier"));

  Run good = run("missing_barrier_fixed", n, ramp(n), std::vector<float>(n));
  CHECK(good.status == PORTA_SUCCESS);
  for (uint32_t i = 0; i < n; ++i) CHECK(good.y[i] == (i == 0 ? 0.0f : float(i)));
  CHECK(report(&count) == text);
}

TEST_CASE("racecheck: two items writing one shared slot in a phase is a write/write race",
          "[racecheck]") {
  Session session("racecheck");
  REQUIRE(session.status() == PORTA_SUCCESS);
  constexpr uint32_t n = 32;
  Run bad = run("shared_conflict", n, ramp(n), std::vector<float>(n / 2));
  CHECK(bad.status == PORTA_ERROR_KERNEL_HAZARD);
  INFO(bad.message);
  // Both items of a pair read and write its slot in the second phase (phase 1); a phase runs its
  // items last to first, so the last pair is the first found.
  CHECK(contains(bad.message,
                 "race in group (0,0,0) between work-items (31,0,0) and (30,0,0) "
                 "in phase 1"));
  size_t count = 0;
  const std::string text = report(&count);
  INFO(text);
  CHECK(count == 2);
  CHECK(contains(text, "kernel 'shared_conflict': write/write race"));
  CHECK(contains(text, "kernel 'shared_conflict': read/write race"));
  CHECK(contains(text, "::pair_sum + 60"));  // slot 15, items 30 and 31
  CHECK(contains(bad.message, "PORTA_SHARED porta_kernel_body_shared_conflict("));
  Run good = run("shared_conflict_fixed", n, ramp(n), std::vector<float>(n / 2));
  CHECK(good.status == PORTA_SUCCESS);
  for (uint32_t p = 0; p < n / 2; ++p) CHECK(good.y[p] == float(4 * p + 3));
}

TEST_CASE("racecheck: a barrier only some items reach is divergent", "[racecheck]") {
  Session session("racecheck");
  REQUIRE(session.status() == PORTA_SUCCESS);
  constexpr uint32_t n = 16;
  Run bad = run("divergent_barrier", n, {}, std::vector<float>(n, 1.0f), false);
  CHECK(bad.status == PORTA_ERROR_KERNEL_HAZARD);
  INFO(bad.message);
  CHECK(contains(bad.message, "kernel 'divergent_barrier': divergent barrier in group (0,0,0)"));
  CHECK(contains(bad.message, "the kernel's end"));
  Run good = run("divergent_barrier_fixed", n, {}, std::vector<float>(n, 1.0f), false);
  CHECK(good.status == PORTA_SUCCESS);
  for (uint32_t i = 0; i < n; ++i) CHECK(good.y[i] == (i < n / 2 ? 2.0f : 1.0f));
}

TEST_CASE("racecheck: a value kept outside inner() that differs between items is reported",
          "[racecheck]") {
  Session session("racecheck");
  REQUIRE(session.status() == PORTA_SUCCESS);
  constexpr uint32_t n = 8;
  Run bad = run("kept_value", n, ramp(n), std::vector<float>(n));
  CHECK(bad.status == PORTA_ERROR_KERNEL_HAZARD);
  INFO(bad.message);
  CHECK(contains(bad.message, "kernel 'kept_value': a value kept outside inner() differs"));
  CHECK(contains(bad.message, "read in phase 1"));
  Run good = run("kept_value_fixed", n, ramp(n), std::vector<float>(n));
  CHECK(good.status == PORTA_SUCCESS);
  for (uint32_t i = 0; i < n; ++i) CHECK(good.y[i] == Approx(float(i + 1) / 36.0f));
}

TEST_CASE("racecheck: global memory races name the parameter and the offset", "[racecheck]") {
  Session session("racecheck");
  REQUIRE(session.status() == PORTA_SUCCESS);
  constexpr uint32_t n = 8;
  Run bad = run("global_race", n, ramp(n), std::vector<float>(1));
  CHECK(bad.status == PORTA_ERROR_KERNEL_HAZARD);
  INFO(bad.message);
  CHECK(contains(bad.message, "global memory, parameter 2 + 0 (allocation 0x"));
  CHECK(contains(bad.message, "of 4 bytes, offset 0)"));
  Run good = run("global_race_fixed", n, ramp(n), std::vector<float>(1));
  CHECK(good.status == PORTA_SUCCESS);
  CHECK(good.y[0] == 36.0f);
  // Every launch that finds a hazard fails, though its report lines (y[0] += is a read/write and
  // a write/write race) are not repeated.
  CHECK(run("global_race", n, ramp(n), std::vector<float>(1)).status == PORTA_ERROR_KERNEL_HAZARD);
  size_t count = 0;
  report(&count);
  CHECK(count == 2);
}

TEST_CASE("simt: values outside inner() are each item's own, as on a GPU", "[simt]") {
  constexpr uint32_t n = 8;
  {
    Session session("fast");
    REQUIRE(session.status() == PORTA_SUCCESS);
    Run fast = run("kept_value", n, ramp(n), std::vector<float>(n));
    REQUIRE(fast.status == PORTA_SUCCESS);
    CHECK(fast.y[n - 1] == Approx(8.0f / 36.0f));  // one total per group: looks right
  }
  Session session("simt");
  REQUIRE(session.status() == PORTA_SUCCESS);
  Run simt = run("kept_value", n, ramp(n), std::vector<float>(n));
  REQUIRE(simt.status == PORTA_SUCCESS);  // simt runs the GPU model but checks nothing
  for (uint32_t i = 0; i < n; ++i) CHECK(simt.y[i] == 1.0f);  // each item saw only its own
  size_t count = 1;
  CHECK(report(&count).empty());
  CHECK(count == 0);
}

TEST_CASE("simt and racecheck: modes are checked and shown as the device's architecture",
          "[racecheck]") {
  {
    Session session("gpu");
    CHECK(session.status() == PORTA_ERROR_INVALID_ARGUMENT);
    CHECK(contains(porta_last_error_message(),
                   "options.cpu_mode='gpu' is not accepted; accepted: fast"));
  }
  {
    setenv("PORTA_CPU_MODE", "SIMT", 1);
    Session session(nullptr);  // from the environment
    unsetenv("PORTA_CPU_MODE");
    CHECK(session.status() == PORTA_ERROR_INVALID_ARGUMENT);
    CHECK(contains(porta_last_error_message(),
                   "PORTA_CPU_MODE='SIMT' is not accepted; accepted: "
                   "fast (work-items as a loop), simt"));
    size_t length = 0, count = 0;
    CHECK(porta_cpu_racecheck_report(nullptr, 0, &length, &count) ==
          PORTA_ERROR_INVALID_ARGUMENT);  // every call says so until porta_shutdown
  }
  for (const char* mode : {"simt", "racecheck"}) {
    Session session(mode);
    REQUIRE(session.status() == PORTA_SUCCESS);
    porta_device_properties_t properties{};
    properties.struct_size = sizeof(properties);
    REQUIRE(porta_device_properties(0, &properties) == PORTA_SUCCESS);
    CHECK(std::string(properties.architecture) == mode);
  }
  Session session("racecheck");
  size_t length = 0, count = 0;
  CHECK(porta_cpu_racecheck_report(nullptr, 0, nullptr, &count) == PORTA_ERROR_INVALID_ARGUMENT);
  CHECK(porta_cpu_racecheck_report(nullptr, 4, &length, &count) == PORTA_ERROR_INVALID_ARGUMENT);
}

// Not a [simt] case: ThreadSanitizer, which runs those, rightly reports the kernel's race.
TEST_CASE("simt: a phase runs its items last to first, so a missing barrier shows", "[racecheck]") {
  constexpr uint32_t n = 8;
  {
    Session session("fast");
    REQUIRE(session.status() == PORTA_SUCCESS);
    Run fast = run("missing_barrier", n, ramp(n), std::vector<float>(n));
    REQUIRE(fast.status == PORTA_SUCCESS);
    for (uint32_t i = 1; i < n; ++i) CHECK(fast.y[i] == float(i));  // looks right
  }
  Session session("simt");
  REQUIRE(session.status() == PORTA_SUCCESS);
  // The neighbour below has not stored its element yet: the old (zero) contents are read.
  Run racy = run("missing_barrier", n, ramp(n), std::vector<float>(n));
  REQUIRE(racy.status == PORTA_SUCCESS);
  for (uint32_t i = 1; i < n; ++i) CHECK(racy.y[i] != float(i));
}

TEST_CASE("modes: every CPU build of a kernel library records its parameter list",
          "[simt][params]") {
  for (const char* mode : {"fast", "simt", "racecheck"}) {
#ifndef PORTA_TEST_RACECHECK_BUILT
    if (std::string(mode) == "racecheck") continue;  // a sanitizer build has none (see Session)
#endif
    INFO("mode " << mode);
    Session session(mode);
    REQUIRE(session.status() == PORTA_SUCCESS);
    porta_module_t module;
    REQUIRE(porta_module_load(0, PORTA_TEST_HAZARD_KERNELS, &module) == PORTA_SUCCESS);
    porta_kernel_t kernel;
    REQUIRE(porta_kernel_get(module, "missing_barrier", &kernel) == PORTA_SUCCESS);
    porta_kernel_params_t params{};
    params.struct_size = sizeof(params);
    REQUIRE(porta_kernel_get_params(kernel, &params) == PORTA_SUCCESS);
    REQUIRE(params.count == 3);
    const char* names[] = {"n", "x", "y"};
    const char* types[] = {"uint32_t", "const float*", "float*"};
    const uint32_t sizes[] = {4, 8, 8};
    for (int i = 0; i < 3; ++i) {
      INFO("parameter " << i);
      CHECK(params.sizes[i] == sizes[i]);
      REQUIRE(params.names[i]);
      CHECK(std::string(params.names[i]) == names[i]);
      REQUIRE(params.types[i]);
      CHECK(std::string(params.types[i]) == types[i]);
    }
    // A launch stating two arguments for three parameters is refused before it runs.
    uint32_t n = 1;
    void* y = nullptr;
    void* args[] = {&n, &y};
    const size_t arg_sizes[] = {sizeof n, sizeof y};
    porta_launch_config_t config = one_group(1);
    config.arg_count = 2;
    config.arg_sizes = arg_sizes;
    CHECK(porta_kernel_launch(kernel, &config, args, nullptr) == PORTA_ERROR_INVALID_ARGUMENT);
    CHECK(contains(porta_last_error_message(),
                   "kernel 'missing_barrier' takes 3 parameters (uint32_t n, const float* x, "
                   "float* y) but 2 arguments were given"));
    REQUIRE(porta_stream_synchronize(nullptr) == PORTA_SUCCESS);
    REQUIRE(porta_module_unload(module) == PORTA_SUCCESS);
  }
}

TEST_CASE("racecheck: a free or an unload after a failed launch leaves its error to the stream",
          "[racecheck]") {
  Session session("racecheck");
  REQUIRE(session.status() == PORTA_SUCCESS);
  constexpr uint32_t n = 8;
  // porta_memory_free of memory the launch does not use waits for it, frees and succeeds.
  Run freed = run("global_race", n, ramp(n), std::vector<float>(1), true, [] {
    void* other = nullptr;
    REQUIRE(porta_memory_alloc(0, 64, &other) == PORTA_SUCCESS);
    CHECK(porta_memory_free(other) == PORTA_SUCCESS);
    CHECK(porta_memory_free(other) == PORTA_ERROR_INVALID_ARGUMENT);  // a double free now
  });
  CHECK(freed.status == PORTA_ERROR_KERNEL_HAZARD);
  // So does porta_module_unload of another module.
  Run unloaded = run("global_race", n, ramp(n), std::vector<float>(1), true, [] {
    porta_module_t other;
    REQUIRE(porta_module_load(0, PORTA_TEST_HAZARD_KERNELS, &other) == PORTA_SUCCESS);
    CHECK(porta_module_unload(other) == PORTA_SUCCESS);
  });
  CHECK(unloaded.status == PORTA_ERROR_KERNEL_HAZARD);
}

TEST_CASE("racecheck: destroying a stream reports its failed launch and destroys it all the same",
          "[racecheck]") {
  Session session("racecheck");
  REQUIRE(session.status() == PORTA_SUCCESS);
  porta_module_t module;
  REQUIRE(porta_module_load(0, PORTA_TEST_HAZARD_KERNELS, &module) == PORTA_SUCCESS);
  porta_kernel_t kernel;
  REQUIRE(porta_kernel_get(module, "global_race", &kernel) == PORTA_SUCCESS);
  uint32_t n = 8;
  void *x = nullptr, *y = nullptr;
  REQUIRE(porta_memory_alloc(0, n * sizeof(float), &x) == PORTA_SUCCESS);
  REQUIRE(porta_memory_alloc(0, sizeof(float), &y) == PORTA_SUCCESS);
  const porta_launch_config_t config = one_group(n);
  void* args[] = {&n, &x, &y};
  porta_stream_t stream;
  REQUIRE(porta_stream_create(0, &stream) == PORTA_SUCCESS);
  REQUIRE(porta_kernel_launch(kernel, &config, args, stream) == PORTA_SUCCESS);
  CHECK(porta_stream_destroy(stream) == PORTA_ERROR_KERNEL_HAZARD);
  CHECK(porta_stream_destroy(stream) == PORTA_ERROR_INVALID_HANDLE);
  CHECK(porta_memory_free(x) == PORTA_SUCCESS);
  CHECK(porta_memory_free(y) == PORTA_SUCCESS);
  CHECK(porta_module_unload(module) == PORTA_SUCCESS);
}

TEST_CASE("racecheck: a build without the checker is refused, not run unchecked", "[racecheck]") {
  Session session("racecheck");
  REQUIRE(session.status() == PORTA_SUCCESS);
  // The fast build, named in full: its kernels would run unchecked and report a clean run.
  const std::string fast = std::string(PORTA_TEST_HAZARD_KERNELS) + ".cpu-x86-64.so";
  porta_module_t module = nullptr;
  CHECK(porta_module_load(0, fast.c_str(), &module) == PORTA_ERROR_INCOMPATIBLE_VERSION);
  CHECK(contains(porta_last_error_message(), "not a racecheck build"));
  CHECK(module == nullptr);
  // By its base name the library's racecheck build is picked.
  REQUIRE(porta_module_load(0, PORTA_TEST_HAZARD_KERNELS, &module) == PORTA_SUCCESS);
  CHECK(porta_module_unload(module) == PORTA_SUCCESS);
}

TEST_CASE("racecheck: hazard sites name the kernel library's file for addr2line", "[racecheck]") {
  Session session("racecheck");
  REQUIRE(session.status() == PORTA_SUCCESS);
  constexpr uint32_t n = 64;
  // Loaded from its file: "<file's base name>+0x<offset>", as README's addr2line line takes it,
  // not the "/proc/self/fd/N" the object is mapped through.
  Run bad = run("missing_barrier", n, ramp(n), std::vector<float>(n));
  CHECK(bad.status == PORTA_ERROR_KERNEL_HAZARD);
  INFO(bad.message);
  CHECK(contains(bad.message, "; sites porta_test_hazard_kernels.cpu-racecheck.so+0x"));
  CHECK(contains(bad.message, " and porta_test_hazard_kernels.cpu-racecheck.so+0x"));
  const std::string text = report();
  INFO(text);
  CHECK(contains(text, "sites porta_test_hazard_kernels.cpu-racecheck.so+0x"));

  // Loaded from memory: no file to name, and still its PORTA_SHARED variable by name.
  const std::string path = std::string(PORTA_TEST_HAZARD_KERNELS) + ".cpu-racecheck.so";
  std::FILE* file = std::fopen(path.c_str(), "rb");
  REQUIRE(file);
  std::vector<char> image;
  char chunk[1 << 16];
  for (size_t got; (got = std::fread(chunk, 1, sizeof(chunk), file)) > 0;) {
    image.insert(image.end(), chunk, chunk + got);
  }
  std::fclose(file);
  porta_module_t module;
  REQUIRE(porta_module_load_data(0, image.data(), image.size(), &module) == PORTA_SUCCESS);
  porta_kernel_t kernel;
  REQUIRE(porta_kernel_get(module, "missing_barrier", &kernel) == PORTA_SUCCESS);
  void *x = nullptr, *y = nullptr;
  REQUIRE(porta_memory_alloc(0, n * sizeof(float), &x) == PORTA_SUCCESS);
  REQUIRE(porta_memory_alloc(0, n * sizeof(float), &y) == PORTA_SUCCESS);
  uint32_t items = n;
  void* args[] = {&items, &x, &y};
  const porta_launch_config_t config = one_group(n);
  REQUIRE(porta_kernel_launch(kernel, &config, args, nullptr) == PORTA_SUCCESS);
  CHECK(porta_stream_synchronize(nullptr) == PORTA_ERROR_KERNEL_HAZARD);
  const std::string message = porta_last_error_message();
  INFO(message);
  CHECK(contains(message, "; sites module-image+0x"));
  CHECK(contains(message, "PORTA_SHARED porta_kernel_body_missing_barrier("));
  CHECK(porta_memory_free(x) == PORTA_SUCCESS);
  CHECK(porta_memory_free(y) == PORTA_SUCCESS);
  CHECK(porta_module_unload(module) == PORTA_SUCCESS);
}

// ---- exceptions out of a kernel ------------------------------------------------------------
// Host C++ in a kernel may throw (a vector that cannot be allocated, an at() out of range). Each
// item of a simt or racecheck build runs on a fiber of its own; what one throws fails the launch
// as in the fast mode, and the process and later launches go on.
namespace {

struct Thrown {
  porta_status_t status;
  std::string message;
  std::vector<float> y;
};

// Launches kernel(value, y) as one group of 4 items.
template <class T>
Thrown launch_four(porta_kernel_t kernel, T value) {
  constexpr uint32_t n = 4;
  void* y = nullptr;
  REQUIRE(porta_memory_alloc(0, n * sizeof(float), &y) == PORTA_SUCCESS);
  REQUIRE(porta_memset(y, 0, n * sizeof(float)) == PORTA_SUCCESS);
  void* args[] = {&value, &y};
  const porta_launch_config_t config = one_group(n);
  REQUIRE(porta_kernel_launch(kernel, &config, args, nullptr) == PORTA_SUCCESS);
  Thrown result;
  result.status = porta_stream_synchronize(nullptr);
  result.message = result.status == PORTA_SUCCESS ? "" : porta_last_error_message();
  result.y.resize(n);
  REQUIRE(porta_memcpy(result.y.data(), y, n * sizeof(float)) == PORTA_SUCCESS);
  REQUIRE(porta_memory_free(y) == PORTA_SUCCESS);
  return result;
}

void check_exceptions_fail_the_launch(const char* mode) {
  Session session(mode);
  REQUIRE(session.status() == PORTA_SUCCESS);
  porta_module_t module;
  REQUIRE(porta_module_load(0, PORTA_TEST_HAZARD_KERNELS, &module) == PORTA_SUCCESS);
  porta_kernel_t bad_alloc, out_of_range;
  REQUIRE(porta_kernel_get(module, "throws_bad_alloc", &bad_alloc) == PORTA_SUCCESS);
  REQUIRE(porta_kernel_get(module, "throws_out_of_range", &out_of_range) == PORTA_SUCCESS);
  for (int round = 0; round < 2; ++round) {  // the thread's fibers are usable after each
    INFO("mode " << mode << ", round " << round);
#ifdef PORTA_TEST_RACECHECK_BUILT
    // A sanitizer's allocator reports a request this large as an error of its own instead of
    // failing it, so only builds without one ask.
    const Thrown oom = launch_four(bad_alloc, uint64_t{1} << 62);
    CHECK(oom.status == PORTA_ERROR_OUT_OF_MEMORY);
    CHECK(contains(oom.message, "kernel 'throws_bad_alloc': out of host memory"));
#endif
    const Thrown range = launch_four(out_of_range, uint32_t{9});
    CHECK(range.status == PORTA_ERROR_BACKEND);
    CHECK(contains(range.message, "kernel 'throws_out_of_range' threw: "));
    // A phase runs its items last to first: items 3 and 2 finished it before item 1 threw (the
    // fast mode runs them in order: they never started it).
    const bool simt = std::string(mode) != "fast";
    CHECK(range.y == std::vector<float>{1.0f, 1.0f, simt ? 3.0f : 1.0f, simt ? 4.0f : 1.0f});
    // In range, the same kernel and a small allocation run right.
    const Thrown fine = launch_four(out_of_range, uint32_t{2});
    CHECK(fine.status == PORTA_SUCCESS);
    CHECK(fine.y == std::vector<float>{1.0f, 3.0f, 3.0f, 4.0f});
    const Thrown small = launch_four(bad_alloc, uint64_t{16});
    CHECK(small.status == PORTA_SUCCESS);
    CHECK(small.y == std::vector<float>(4, 16.0f));
  }
  size_t count = 1;
  CHECK(report(&count).empty());  // an abandoned group leaves no hazards behind
  CHECK(count == 0);
  CHECK(porta_module_unload(module) == PORTA_SUCCESS);
}

}  // namespace

TEST_CASE("simt: an exception out of a kernel fails its launch and not the process", "[simt]") {
  check_exceptions_fail_the_launch("simt");
}

TEST_CASE("racecheck: an exception out of a kernel fails its launch and not the process",
          "[racecheck]") {
  check_exceptions_fail_the_launch("racecheck");
}

TEST_CASE("modes: the fast mode names the kernel whose exception failed the launch",
          "[racecheck]") {
  check_exceptions_fail_the_launch("fast");
}

// ---- running out of memory ------------------------------------------------------------------
// A simt or racecheck launch needs memory of its own: a stack per work-item, and the checker's
// record of the group's accesses. Where it runs out, the launch fails with OUT_OF_MEMORY and the
// process goes on. Each case runs in a child process whose address space is limited to a little
// more than it already holds (child_process.h; a sanitizer reserves far more address space than it
// uses: not there).
namespace {

// The stream's status after `launch`, with its message in `message`.
porta_status_t outcome(porta_status_t queued, std::string& message) {
  const porta_status_t status =
      queued == PORTA_SUCCESS ? porta_stream_synchronize(nullptr) : queued;
  message = status == PORTA_SUCCESS ? "" : porta_last_error_message();
  return status;
}

}  // namespace

TEST_CASE("simt and racecheck: running out of memory fails the launch and not the process",
          "[racecheck]") {
#ifndef PORTA_TEST_RACECHECK_BUILT
  std::printf("skipped: a sanitizer build reserves more address space than a limit leaves\n");
  std::exit(77);
#endif
  // The work-items' stacks (256 KiB each) of a group larger than any before on its thread.
  CHECK(in_child([] {
    porta_init_options_t options{};
    options.struct_size = sizeof(options);
    options.backend = "cpu";
    options.cpu_mode = "simt";
    porta_module_t module = nullptr;
    porta_kernel_t kernel = nullptr;
    void *x = nullptr, *y = nullptr;
    if (!expect(porta_init(&options) == PORTA_SUCCESS &&
                    porta_module_load(0, PORTA_TEST_HAZARD_KERNELS, &module) == PORTA_SUCCESS &&
                    porta_kernel_get(module, "missing_barrier_fixed", &kernel) == PORTA_SUCCESS &&
                    porta_memory_alloc(0, 1024, &x) == PORTA_SUCCESS &&
                    porta_memory_alloc(0, 1024, &y) == PORTA_SUCCESS,
                "set-up failed"))
      return false;
    uint32_t n = 8;
    void* args[] = {&n, &x, &y};
    std::string message;
    porta_launch_config_t config = one_group(8);
    if (!expect(
            outcome(porta_kernel_launch(kernel, &config, args, nullptr), message) == PORTA_SUCCESS,
            "8 items: " + message))
      return false;
    if (!expect(limit_address_space(size_t{32} << 20), "cannot limit the address space"))
      return false;
    n = 256;
    config = one_group(256);
    const porta_status_t status =
        outcome(porta_kernel_launch(kernel, &config, args, nullptr), message);
    lift_address_space_limit();
    if (!expect(status == PORTA_ERROR_OUT_OF_MEMORY && contains(message, "stacks"),
                "256 items under the limit: " + std::string(porta_status_name(status)) + ": " +
                    message))
      return false;
    // With the memory back, the same launch runs.
    return expect(outcome(porta_kernel_launch(kernel, &config, args, nullptr), message) ==
                      PORTA_SUCCESS,
                  "256 items after: " + message) &&
           porta_memory_free(x) == PORTA_SUCCESS && porta_memory_free(y) == PORTA_SUCCESS &&
           porta_shutdown() == PORTA_SUCCESS;
  }));
  // The checker's record of a group that touches 32 MB (a softmax row of 2^22), about 48 bytes
  // a byte.
  CHECK(in_child([] {
    porta_init_options_t options{};
    options.struct_size = sizeof(options);
    options.backend = "cpu";
    options.cpu_mode = "racecheck";
    constexpr int64_t kCols = int64_t{1} << 22;
    float *x = nullptr, *y = nullptr;
    std::string message;
    if (!expect(
            porta_init(&options) == PORTA_SUCCESS &&
                porta_memory_alloc(0, kCols * 4, reinterpret_cast<void**>(&x)) == PORTA_SUCCESS &&
                porta_memory_alloc(0, kCols * 4, reinterpret_cast<void**>(&y)) == PORTA_SUCCESS &&
                porta_memset(x, 0, kCols * 4) == PORTA_SUCCESS &&
                outcome(porta_softmax_forward(nullptr, PORTA_SOFTMAX, 1, 256, x, y), message) ==
                    PORTA_SUCCESS,
            "set-up failed: " + message))
      return false;
    if (!expect(limit_address_space(size_t{512} << 20), "cannot limit the address space"))
      return false;
    const porta_status_t status =
        outcome(porta_softmax_forward(nullptr, PORTA_SOFTMAX, 1, kCols, x, y), message);
    lift_address_space_limit();
    return expect(status == PORTA_ERROR_OUT_OF_MEMORY && contains(message, "race checker"),
                  "a row of 2^22 under the limit: " + std::string(porta_status_name(status)) +
                      ": " + message) &&
           porta_memory_free(x) == PORTA_SUCCESS && porta_memory_free(y) == PORTA_SUCCESS &&
           porta_shutdown() == PORTA_SUCCESS;
  }));
}
