// Modules and launches: loading from a file and from memory, kernel lookup, 1D/2D/3D grids of odd
// sizes, dynamic shared memory, argument capture, unloading. Bad launches are in test_errors.cpp.
//
// Results are compared exactly: saxpy's inputs are small integers and a = 0.5 or 2, so every
// product and sum is representable in float and no rounding (or FMA contraction) can occur.
#include <dlfcn.h>

#include <filesystem>
#include <sstream>

#include "common.h"

using namespace porta_test;

namespace {

const char* const kKernelNames[] = {"saxpy", "fill_index", "count_items", "shared_reverse",
                                    "spin",  "noop",       "variant"};

struct Shape {
  std::array<uint32_t, 3> grid;
  std::array<uint32_t, 3> group;
};

// Grids and groups that exercise every dimension with odd sizes.
const Shape kShapes[] = {
    {{1, 1, 1}, {1, 1, 1}},   {{7, 1, 1}, {1, 1, 1}},  {{1, 1, 1}, {33, 1, 1}},
    {{129, 1, 1}, {7, 1, 1}}, {{3, 5, 1}, {7, 3, 1}},  {{1, 33, 1}, {1, 1, 7}},
    {{2, 3, 4}, {4, 3, 2}},   {{5, 1, 7}, {1, 7, 1}},  {{1, 1, 129}, {1, 1, 1}},
    {{3, 7, 5}, {2, 2, 2}},   {{1, 1, 1}, {1, 1, 33}}, {{33, 1, 2}, {1, 129, 1}},
};

bool fits(const porta_device_properties_t& p, const Shape& s) {
  uint64_t items = 1;
  for (int d = 0; d < 3; ++d) {
    if (s.group[d] > static_cast<uint32_t>(p.max_work_group_dims[d])) return false;
    if (s.grid[d] > p.max_grid_dims[d]) return false;
    items *= s.group[d];
  }
  return items <= static_cast<uint64_t>(p.max_work_group_size);
}

uint64_t total_items(const Shape& s) {
  uint64_t n = 1;
  for (int d = 0; d < 3; ++d) n *= uint64_t{s.grid[d]} * s.group[d];
  return n;
}

std::string describe(const Shape& s) {
  std::ostringstream out;
  out << "grid " << s.grid[0] << "x" << s.grid[1] << "x" << s.grid[2] << ", group " << s.group[0]
      << "x" << s.group[1] << "x" << s.group[2];
  return out.str();
}

void check_saxpy(porta_device_t device, porta_kernel_t saxpy, int n, uint32_t group_size,
                 porta_stream_t stream) {
  INFO("saxpy n=" << n << " group " << group_size);
  constexpr int kGuard = 64;  // elements past n that must stay untouched
  std::vector<float> x(n), y(n + kGuard), expected(n + kGuard);
  for (int i = 0; i < n + kGuard; ++i) {
    if (i < n) x[i] = static_cast<float>(i % 100 - 50);
    y[i] = static_cast<float>(i % 7);
    expected[i] = i < n ? 0.5f * x[i] + y[i] : y[i];
  }
  Buffer dx(device, n * sizeof(float)), dy(device, (n + kGuard) * sizeof(float));
  PT_REQUIRE_OK(porta_memcpy(dx.get(), x.data(), n * sizeof(float)));
  PT_REQUIRE_OK(porta_memcpy(dy.get(), y.data(), (n + kGuard) * sizeof(float)));
  PT_REQUIRE_OK(launch_saxpy(saxpy, n, 0.5f, dx.as<float>(), dy.as<float>(), group_size, stream));
  PT_REQUIRE_OK(porta_stream_synchronize(stream));
  std::vector<float> got(n + kGuard);
  PT_REQUIRE_OK(porta_memcpy(got.data(), dy.get(), got.size() * sizeof(float)));
  for (int i = 0; i < n + kGuard; ++i) {
    if (got[i] != expected[i]) {
      INFO("element " << i << (i < n ? "" : " (past n)"));
      REQUIRE(got[i] == expected[i]);
    }
  }
}

}  // namespace

TEST_CASE("module: load from a file and look kernels up", "[module]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    porta_module_t module = nullptr;
    PT_REQUIRE_OK(porta_module_load(device, kernels_path().c_str(), &module));
    REQUIRE(module != nullptr);
    for (const char* name : kKernelNames) {
      INFO("kernel " << name);
      porta_kernel_t kernel = nullptr;
      PT_REQUIRE_OK(porta_kernel_get(module, name, &kernel));
      CHECK(kernel != nullptr);
      // A second lookup gives a live handle too.
      porta_kernel_t again = nullptr;
      PT_REQUIRE_OK(porta_kernel_get(module, name, &again));
      CHECK(again != nullptr);
    }
    PT_REQUIRE_OK(porta_module_unload(module));
  }
}

TEST_CASE("module: load from memory and free the image at once", "[module]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    porta_module_t module = nullptr;
    {
      std::vector<char> image = read_file(kernels_path());
      REQUIRE_FALSE(image.empty());
      PT_REQUIRE_OK(porta_module_load_data(device, image.data(), image.size(), &module));
      REQUIRE(module != nullptr);
      std::fill(image.begin(), image.end(), 0);  // the runtime must have copied it
    }
    porta_kernel_t saxpy = nullptr;
    PT_REQUIRE_OK(porta_kernel_get(module, "saxpy", &saxpy));
    Stream stream(device);
    check_saxpy(device, saxpy, 129, 32, stream.get());
    PT_REQUIRE_OK(porta_module_unload(module));
  }
}

TEST_CASE("module: two loads are independent", "[module]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    porta_module_t first = nullptr, second = nullptr;
    PT_REQUIRE_OK(porta_module_load(device, kernels_path().c_str(), &first));
    std::vector<char> image = read_file(kernels_path());
    PT_REQUIRE_OK(porta_module_load_data(device, image.data(), image.size(), &second));
    CHECK(first != second);
    porta_kernel_t k1 = nullptr, k2 = nullptr;
    PT_REQUIRE_OK(porta_kernel_get(first, "saxpy", &k1));
    PT_REQUIRE_OK(porta_kernel_get(second, "saxpy", &k2));
    PT_REQUIRE_OK(porta_module_unload(first));
    // The first module's kernels are stale; the second's still run.
    Stream stream(device);
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   launch_saxpy(k1, 1, 1.0f, nullptr, nullptr, 1, stream.get()));
    check_saxpy(device, k2, 33, 7, stream.get());
    PT_REQUIRE_OK(porta_module_unload(second));
  }
}

TEST_CASE("launch: saxpy over odd sizes and group sizes", "[launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    const porta_device_properties_t p = properties(device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    Stream stream(device);
    for (int n : {1, 7, 33, 129, 1000, 4099}) {
      for (uint32_t group : {1u, 7u, 32u, 64u, 256u}) {
        if (group > static_cast<uint32_t>(p.max_work_group_dims[0]) ||
            group > static_cast<uint32_t>(p.max_work_group_size)) {
          continue;
        }
        check_saxpy(device, saxpy, n, group, stream.get());
      }
    }
  }
}

TEST_CASE("launch: the default stream (NULL)", "[launch]" PT_KERNELS_TAG) {
  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  Module module(device);
  check_saxpy(device, module.kernel("saxpy"), 1000, 64, nullptr);
}

TEST_CASE("launch: 1D, 2D and 3D grids map every work-item once", "[launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    const porta_device_properties_t p = properties(device);
    Module module(device);
    porta_kernel_t fill_index = module.kernel("fill_index");
    porta_kernel_t count_items = module.kernel("count_items");
    Stream stream(device);
    for (const Shape& shape : kShapes) {
      if (!fits(p, shape)) continue;
      INFO(describe(shape));
      const uint64_t n = total_items(shape);
      constexpr uint64_t kGuard = 64;
      const size_t bytes = (n + kGuard) * sizeof(uint32_t);
      Buffer index(device, bytes), counts(device, bytes);
      PT_REQUIRE_OK(porta_memset(index.get(), 0xFF, bytes));
      PT_REQUIRE_OK(porta_memset(counts.get(), 0, bytes));
      porta_launch_config_t config = launch_config(shape.grid, shape.group);
      uint32_t* index_ptr = index.as<uint32_t>();
      uint32_t* counts_ptr = counts.as<uint32_t>();
      void* index_args[] = {&index_ptr};
      void* count_args[] = {&counts_ptr};
      PT_REQUIRE_OK(porta_kernel_launch(fill_index, &config, index_args, stream.get()));
      PT_REQUIRE_OK(porta_kernel_launch(count_items, &config, count_args, stream.get()));
      PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
      std::vector<uint32_t> got_index(n + kGuard), got_counts(n + kGuard);
      PT_REQUIRE_OK(porta_memcpy(got_index.data(), index.get(), bytes));
      PT_REQUIRE_OK(porta_memcpy(got_counts.data(), counts.get(), bytes));
      for (uint64_t i = 0; i < n + kGuard; ++i) {
        const bool inside = i < n;
        const uint32_t want_index = inside ? static_cast<uint32_t>(i) : 0xFFFFFFFFu;
        const uint32_t want_count = inside ? 1u : 0u;
        if (got_index[i] != want_index || got_counts[i] != want_count) {
          INFO("global index " << i << (inside ? "" : " (past the grid)"));
          REQUIRE(got_index[i] == want_index);
          REQUIRE(got_counts[i] == want_count);
        }
      }
    }
  }
}

TEST_CASE("launch: the largest group the device allows", "[launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    const porta_device_properties_t p = properties(device);
    Module module(device);
    porta_kernel_t count_items = module.kernel("count_items");
    Stream stream(device);
    const uint32_t x =
        static_cast<uint32_t>(std::min(p.max_work_group_dims[0], p.max_work_group_size));
    const uint32_t y = static_cast<uint32_t>(
        std::min(p.max_work_group_dims[1], p.max_work_group_size / static_cast<int32_t>(x)));
    const Shape shape{{2, 1, 1}, {x, std::max(y, 1u), 1}};
    INFO(describe(shape));
    const uint64_t n = total_items(shape);
    Buffer counts(device, n * sizeof(uint32_t));
    PT_REQUIRE_OK(porta_memset(counts.get(), 0, n * sizeof(uint32_t)));
    porta_launch_config_t config = launch_config(shape.grid, shape.group);
    uint32_t* ptr = counts.as<uint32_t>();
    void* args[] = {&ptr};
    PT_REQUIRE_OK(porta_kernel_launch(count_items, &config, args, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    std::vector<uint32_t> got(n);
    PT_REQUIRE_OK(porta_memcpy(got.data(), counts.get(), n * sizeof(uint32_t)));
    CHECK(got == std::vector<uint32_t>(n, 1u));
  }
}

TEST_CASE("launch: dynamic shared memory", "[launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    const porta_device_properties_t p = properties(device);
    Module module(device);
    porta_kernel_t reverse = module.kernel("shared_reverse");
    Stream stream(device);
    for (uint32_t group : {1u, 7u, 64u, 256u}) {
      for (uint32_t extra : {0u, 100u}) {
        const uint32_t shared = group * sizeof(float) + extra;
        if (group > static_cast<uint32_t>(p.max_work_group_dims[0]) ||
            shared > static_cast<uint32_t>(p.shared_memory_per_group)) {
          continue;
        }
        INFO("group " << group << ", shared " << shared << " bytes");
        constexpr uint32_t kGroups = 5;
        const size_t n = size_t{group} * kGroups;
        std::vector<float> data(n), expected(n);
        for (size_t i = 0; i < n; ++i) data[i] = static_cast<float>(i);
        for (size_t g = 0; g < kGroups; ++g)
          for (size_t i = 0; i < group; ++i)
            expected[g * group + i] = data[g * group + group - 1 - i];
        Buffer buffer(device, n * sizeof(float));
        PT_REQUIRE_OK(porta_memcpy(buffer.get(), data.data(), n * sizeof(float)));
        porta_launch_config_t config = launch_config({kGroups, 1, 1}, {group, 1, 1}, shared);
        float* ptr = buffer.as<float>();
        void* args[] = {&ptr};
        PT_REQUIRE_OK(porta_kernel_launch(reverse, &config, args, stream.get()));
        PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
        std::vector<float> got(n);
        PT_REQUIRE_OK(porta_memcpy(got.data(), buffer.get(), n * sizeof(float)));
        CHECK(got == expected);
      }
    }
    // Exactly the device's limit is allowed.
    std::vector<float> one = {42.0f};
    Buffer buffer(device, sizeof(float));
    PT_REQUIRE_OK(porta_memcpy(buffer.get(), one.data(), sizeof(float)));
    porta_launch_config_t config =
        launch_config({1, 1, 1}, {1, 1, 1}, static_cast<uint32_t>(p.shared_memory_per_group));
    float* ptr = buffer.as<float>();
    void* args[] = {&ptr};
    PT_REQUIRE_OK(porta_kernel_launch(reverse, &config, args, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(download(buffer.get(), sizeof(float)) ==
          std::vector<uint8_t>(reinterpret_cast<uint8_t*>(one.data()),
                               reinterpret_cast<uint8_t*>(one.data()) + sizeof(float)));
  }
}

TEST_CASE("launch: a kernel without parameters takes NULL args", "[launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t noop = module.kernel("noop");
    Stream stream(device);
    const porta_launch_config_t config = launch_config({3, 2, 1}, {4, 1, 1});
    PT_REQUIRE_OK(porta_kernel_launch(noop, &config, nullptr, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
  }
}

TEST_CASE("launch: arguments are captured when the launch is queued", "[launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    porta_kernel_t spin = module.kernel("spin");
    Stream stream(device);
    constexpr int kN = 257;
    std::vector<float> x(kN, 3.0f), y(kN, 1.0f);
    Buffer dx(device, kN * sizeof(float)), dy(device, kN * sizeof(float)), scratch(device, 256);
    PT_REQUIRE_OK(porta_memcpy(dx.get(), x.data(), kN * sizeof(float)));
    PT_REQUIRE_OK(porta_memcpy(dy.get(), y.data(), kN * sizeof(float)));
    // Queue saxpy behind a spin, then change every argument's storage before it can run.
    PT_REQUIRE_OK(launch_spin(device, spin, scratch.as<float>(), stream.get(), 0.3));
    {
      int n = kN;
      float a = 2.0f;
      float* xp = dx.as<float>();
      float* yp = dy.as<float>();
      const porta_launch_config_t config = launch_config({(kN + 31) / 32, 1, 1}, {32, 1, 1});
      void* args[] = {&n, &a, &xp, &yp};
      PT_REQUIRE_OK(porta_kernel_launch(saxpy, &config, args, stream.get()));
      n = 0;
      a = -1000.0f;
      xp = nullptr;
      yp = nullptr;
    }
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    std::vector<float> got(kN);
    PT_REQUIRE_OK(porta_memcpy(got.data(), dy.get(), kN * sizeof(float)));
    CHECK(got == std::vector<float>(kN, 7.0f));  // 2 * 3 + 1, exact
  }
}

TEST_CASE("module: unload waits for pending work, then its kernels are stale",
          "[module]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    porta_module_t module = nullptr;
    PT_REQUIRE_OK(porta_module_load(device, kernels_path().c_str(), &module));
    porta_kernel_t saxpy = nullptr, spin = nullptr;
    PT_REQUIRE_OK(porta_kernel_get(module, "saxpy", &saxpy));
    PT_REQUIRE_OK(porta_kernel_get(module, "spin", &spin));
    Stream stream(device);
    constexpr int kN = 100;
    std::vector<float> x(kN, 1.0f), y(kN, 1.0f);
    Buffer dx(device, kN * sizeof(float)), dy(device, kN * sizeof(float)), scratch(device, 256);
    PT_REQUIRE_OK(porta_memcpy(dx.get(), x.data(), kN * sizeof(float)));
    PT_REQUIRE_OK(porta_memcpy(dy.get(), y.data(), kN * sizeof(float)));
    PT_REQUIRE_OK(launch_spin(device, spin, scratch.as<float>(), stream.get(), 0.3));
    PT_REQUIRE_OK(launch_saxpy(saxpy, kN, 2.0f, dx.as<float>(), dy.as<float>(), 32, stream.get()));
    // Unloading while the kernels are queued must not pull the code from under them.
    PT_REQUIRE_OK(porta_module_unload(module));
    PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(stream.get()));
    std::vector<float> got(kN);
    PT_REQUIRE_OK(porta_memcpy(got.data(), dy.get(), kN * sizeof(float)));
    CHECK(got == std::vector<float>(kN, 3.0f));

    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                   launch_saxpy(saxpy, kN, 2.0f, dx.as<float>(), dy.as<float>(), 32, stream.get()));
    porta_kernel_t kernel = nullptr;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_kernel_get(module, "saxpy", &kernel));
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_module_unload(module));
    CHECK(kernel == nullptr);
    // The failed launch queued nothing: y is unchanged.
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    PT_REQUIRE_OK(porta_memcpy(got.data(), dy.get(), kN * sizeof(float)));
    CHECK(got == std::vector<float>(kN, 3.0f));
  }
}

#ifdef PORTA_TEST_KERNELS_CPU_VARIANT3
namespace {
// What the module's variant kernel answers.
uint32_t run_variant(porta_device_t device, porta_module_t module) {
  porta_kernel_t variant = nullptr;
  PT_REQUIRE_OK(porta_kernel_get(module, "variant", &variant));
  Buffer out(device, sizeof(uint32_t));
  PT_REQUIRE_OK(porta_memset(out.get(), 0xFF, sizeof(uint32_t)));
  uint32_t* out_ptr = out.as<uint32_t>();
  void* args[] = {&out_ptr};
  const porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1});
  Stream stream(device);
  PT_REQUIRE_OK(porta_kernel_launch(variant, &config, args, stream.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
  uint32_t got = 0;
  PT_REQUIRE_OK(porta_memcpy(&got, out.get(), sizeof(got)));
  return got;
}

}  // namespace
#endif

#if defined(__x86_64__) && defined(PORTA_TEST_KERNELS_CPU_VARIANT3)
TEST_CASE("module: a kernel library's base name picks the build that fits the device",
          "[module]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) return;  // the suffixes below are the CPU's (porta.h)
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    const std::string architecture = properties(device).architecture;
    INFO("architecture " << architecture);
    TempDir dir;
    const std::string base = dir.path() + "/kernels";
    // Only a baseline build, then a v3 build beside it: a host that runs v3 (or v4, for which
    // there is no build) must pick v3; any other x86-64 host the baseline.
    const std::vector<char> baseline = read_file(kernels_path());
    const std::vector<char> v3 = read_file(PORTA_TEST_KERNELS_CPU_VARIANT3);
    dir.write("kernels.cpu-x86-64.so", baseline.data(), baseline.size());
    for (bool with_v3 : {false, true}) {
      INFO((with_v3 ? "baseline and v3 builds" : "a baseline build only"));
      if (with_v3) dir.write("kernels.cpu-x86-64-v3.so", v3.data(), v3.size());
      const bool runs_v3 = architecture == "x86-64-v3" || architecture == "x86-64-v4";
      const uint32_t expected = with_v3 && runs_v3 ? 3 : 0;
      porta_module_t module = nullptr;
      PT_REQUIRE_OK(porta_module_load(device, base.c_str(), &module));
      CHECK(run_variant(device, module) == expected);
      PT_REQUIRE_OK(porta_module_unload(module));
    }
    // A base name with no build at all: NOT_FOUND, and the message lists what was tried.
    const std::string missing = dir.path() + "/missing";
    porta_module_t module = nullptr;
    const CallResult result =
        call_on_fresh_thread([&] { return porta_module_load(device, missing.c_str(), &module); });
    INFO(result.message);
    CHECK(Status{result.status} == Status{PORTA_ERROR_NOT_FOUND});
    CHECK(result.message.find(missing + ".cpu-x86-64.so") != std::string::npos);
    CHECK(module == nullptr);
  }
}
#endif

#ifdef PORTA_TEST_KERNELS_CPU_VARIANT3
// Loading a CPU module by path maps the file that is at the path at the time of the call, as
// cuModuleLoad does, even where an object of the same name is loaded already. The two builds of
// the test kernels tell the files apart: variant() answers 0 in one and 3 in the other.
namespace {

porta_module_t load(porta_device_t device, const std::string& path) {
  porta_module_t module = nullptr;
  PT_REQUIRE_OK(porta_module_load(device, path.c_str(), &module));
  return module;
}

porta_module_t load_data(porta_device_t device, const std::vector<char>& image) {
  porta_module_t module = nullptr;
  PT_REQUIRE_OK(porta_module_load_data(device, image.data(), image.size(), &module));
  return module;
}

// The process's open file descriptors, to tell that unloading gave back every one.
size_t open_fd_count() {
  size_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++count;
  }
  return count;
}

// Whether the object of the shared library at path is still loaded (glibc finds it by its file,
// whatever name it was opened by).
bool stays_loaded(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (handle) dlclose(handle);
  return handle != nullptr;
}

// Every file opened for loads of the library at path is closed once their object is gone: as
// many fds open as before them. A build linked -z nodelete (the fuzzers') keeps every object, and
// with it the file that names it, so there they are not counted.
void check_fds_given_back(const std::string& path, size_t fds_before) {
  if (stays_loaded(path)) {
    WARN("kernel libraries stay loaded after unload in this build: fds not counted");
  } else {
    CHECK(open_fd_count() == fds_before);
  }
}

// Changes the working directory, and restores it on destruction.
class WorkingDirectory {
 public:
  WorkingDirectory() : saved_(std::filesystem::current_path()) {}
  ~WorkingDirectory() {
    std::error_code ignored;
    std::filesystem::current_path(saved_, ignored);
  }
  WorkingDirectory(const WorkingDirectory&) = delete;
  WorkingDirectory& operator=(const WorkingDirectory&) = delete;
  void change(const std::string& dir) const { std::filesystem::current_path(dir); }

 private:
  std::filesystem::path saved_;
};

// Puts image at dir/name by a rename, as installers do: a new file (inode) under the old name.
void replace_file(const TempDir& dir, const std::string& name, const std::vector<char>& image) {
  const std::string fresh = dir.write(name + ".new", image.data(), image.size());
  std::filesystem::rename(fresh, dir.path() + "/" + name);
}

}  // namespace

TEST_CASE("module: a relative path names the file in the current directory",
          "[module]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) return;  // the files are CPU builds
  const std::vector<char> baseline = read_file(kernels_path());
  const std::vector<char> v3 = read_file(PORTA_TEST_KERNELS_CPU_VARIANT3);
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    TempDir dir;
    std::filesystem::create_directory(dir.path() + "/a");
    std::filesystem::create_directory(dir.path() + "/b");
    dir.write("a/kernels.so", baseline.data(), baseline.size());
    dir.write("b/kernels.so", v3.data(), v3.size());
    WorkingDirectory cwd;
    cwd.change(dir.path() + "/a");
    porta_module_t first = load(device, "kernels.so");
    CHECK(run_variant(device, first) == 0);
    // The same name in another directory is another file.
    cwd.change(dir.path() + "/b");
    porta_module_t second = load(device, "kernels.so");
    CHECK(run_variant(device, second) == 3);
    CHECK(run_variant(device, first) == 0);
    PT_REQUIRE_OK(porta_module_unload(first));
    PT_REQUIRE_OK(porta_module_unload(second));
  }
}

TEST_CASE("module: a file replaced under its name is loaded anew", "[module]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) return;  // the files are CPU builds
  const std::vector<char> baseline = read_file(kernels_path());
  const std::vector<char> v3 = read_file(PORTA_TEST_KERNELS_CPU_VARIANT3);
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    TempDir dir;
    const std::string path = dir.write("kernels.so", baseline.data(), baseline.size());
    porta_module_t old_module = load(device, path);
    CHECK(run_variant(device, old_module) == 0);
    // Replaced while the old module is loaded: the new load takes the new file, and the old
    // module keeps its code.
    replace_file(dir, "kernels.so", v3);
    porta_module_t new_module = load(device, path);
    CHECK(run_variant(device, new_module) == 3);
    CHECK(run_variant(device, old_module) == 0);
    PT_REQUIRE_OK(porta_module_unload(old_module));
    PT_REQUIRE_OK(porta_module_unload(new_module));
    // And replaced again once nothing of it is loaded.
    replace_file(dir, "kernels.so", baseline);
    porta_module_t again = load(device, path);
    CHECK(run_variant(device, again) == 0);
    PT_REQUIRE_OK(porta_module_unload(again));
  }
}

TEST_CASE("module: one file loaded twice works until each unload in either order",
          "[module]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) return;  // the files are CPU builds
  const std::vector<char> v3 = read_file(PORTA_TEST_KERNELS_CPU_VARIANT3);
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    TempDir dir;
    const std::string path = dir.write("kernels.so", v3.data(), v3.size());
    const size_t fds_before = open_fd_count();
    for (bool first_goes_first : {true, false}) {
      INFO((first_goes_first ? "the first load unloaded first" : "the second load unloaded first"));
      porta_module_t first = load(device, path);
      porta_module_t second = load(device, path);
      CHECK(run_variant(device, first) == 3);
      CHECK(run_variant(device, second) == 3);
      PT_REQUIRE_OK(porta_module_unload(first_goes_first ? first : second));
      porta_module_t left = first_goes_first ? second : first;
      CHECK(run_variant(device, left) == 3);
      // The file is still loadable, and the module left over still runs after that one goes.
      porta_module_t third = load(device, path);
      CHECK(run_variant(device, third) == 3);
      PT_REQUIRE_OK(porta_module_unload(third));
      CHECK(run_variant(device, left) == 3);
      PT_REQUIRE_OK(porta_module_unload(left));
    }
    check_fds_given_back(path, fds_before);
  }
}

TEST_CASE("module: a module loaded from memory is not one loaded from a file",
          "[module]" PT_KERNELS_TAG) {
  if (!is_cpu_backend()) return;  // the files are CPU builds
  const std::vector<char> baseline = read_file(kernels_path());
  const std::vector<char> v3 = read_file(PORTA_TEST_KERNELS_CPU_VARIANT3);
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    TempDir dir;
    const std::string path = dir.write("kernels.so", baseline.data(), baseline.size());
    const size_t fds_before = open_fd_count();
    // The file loaded twice, the load whose file names the object unloaded first: its fd stays
    // open for the other, so an image loaded from memory now gets a number of its own.
    porta_module_t first = load(device, path);
    porta_module_t second = load(device, path);
    PT_REQUIRE_OK(porta_module_unload(first));
    porta_module_t from_memory = load_data(device, v3);
    CHECK(run_variant(device, from_memory) == 3);
    CHECK(run_variant(device, second) == 0);
    // The same bytes from memory and from a file are two modules, each unloaded on its own.
    porta_module_t same_bytes = load_data(device, baseline);
    CHECK(run_variant(device, same_bytes) == 0);
    PT_REQUIRE_OK(porta_module_unload(second));
    CHECK(run_variant(device, same_bytes) == 0);
    CHECK(run_variant(device, from_memory) == 3);
    porta_module_t file_again = load(device, path);
    CHECK(run_variant(device, file_again) == 0);
    PT_REQUIRE_OK(porta_module_unload(same_bytes));
    PT_REQUIRE_OK(porta_module_unload(from_memory));
    CHECK(run_variant(device, file_again) == 0);
    PT_REQUIRE_OK(porta_module_unload(file_again));
    check_fds_given_back(path, fds_before);
  }
}
#endif

TEST_CASE("module: a GPU kernel library's base name picks the device's code object",
          "[module]" PT_KERNELS_TAG) {
  const std::string backend = backend_name();
  if (backend != "cuda" && backend != "hip" && backend != "opencl" && backend != "level_zero") {
    return;  // the suffixes below are the GPUs'
  }
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    const std::string architecture = properties(device).architecture;
    INFO("architecture " << architecture);
    // What porta_add_kernel_library names a GPU build (cmake/PortaKernelLibrary.cmake): OpenCL
    // devices without SPIR-V support (architecture "spir") take the SPIR 1.2 build.
    std::string suffix = ".spv";
    if (backend == "cuda") suffix = ".cuda.fatbin";
    if (backend == "hip") suffix = ".hip-" + architecture + ".hsaco";
    if (backend == "opencl" && architecture == "spir") suffix = ".spir.bc";
    TempDir dir;
    const std::string base = dir.path() + "/kernels";
    // A decoy for another architecture beside it must not be taken.
    const std::vector<char> image = read_file(kernels_path());
    dir.write(backend == "cuda" ? "kernels.hip-gfx90a.hsaco" : "kernels.cuda.fatbin",
              image.data(), image.size());
    {
      // Only the decoy: NOT_FOUND, naming the file that was looked for.
      porta_module_t module = nullptr;
      const CallResult result =
          call_on_fresh_thread([&] { return porta_module_load(device, base.c_str(), &module); });
      INFO(result.message);
      CHECK(Status{result.status} == Status{PORTA_ERROR_NOT_FOUND});
      CHECK(result.message.find(base + suffix) != std::string::npos);
      CHECK(module == nullptr);
    }
    dir.write("kernels" + suffix, image.data(), image.size());
    porta_module_t module = nullptr;
    PT_REQUIRE_OK(porta_module_load(device, base.c_str(), &module));
    porta_kernel_t saxpy = nullptr;
    PT_REQUIRE_OK(porta_kernel_get(module, "saxpy", &saxpy));
    Stream stream(device);
    check_saxpy(device, saxpy, 1000, 128, stream.get());
    PT_REQUIRE_OK(porta_module_unload(module));
  }
}
