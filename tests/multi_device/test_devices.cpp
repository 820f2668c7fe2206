// PORTA_CPU_DEVICES and its init option: the CPU backend as several devices, each with its own
// share of the cores, and PORTA_DEVICE choosing among them.
#include <dirent.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "multi_device.h"

using namespace porta_test;

namespace {

unsigned usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof(set), &set) == 0);
  return static_cast<unsigned>(CPU_COUNT(&set));
}

// Sets an environment variable for a scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

porta_status_t init_cpu(const char* cpu_devices, const char* device = nullptr) {
  porta_init_options_t options{};
  options.struct_size = sizeof(options);
  options.backend = "cpu";
  options.cpu_devices = cpu_devices;
  options.device = device;
  return porta_init(&options);
}

}  // namespace

TEST_CASE("devices: PORTA_CPU_DEVICES splits the host into devices with a share of the cores each",
          "[devices]") {
  ScopedEnv backend("PORTA_BACKEND", "cpu");
  ScopedEnv devices("PORTA_CPU_DEVICES", "2");
  PT_REQUIRE_OK(porta_init(nullptr));
  REQUIRE(device_count() == 2);
  const unsigned cpus = usable_cpus();
  int32_t units = 0;
  for (porta_device_t device = 0; device < 2; ++device) {
    const porta_device_properties_t p = properties(device);
    INFO("device " << device << ": " << p.name);
    CHECK(std::string(p.backend) == "cpu");
    CHECK(p.compute_units >= 1);
    CHECK(std::string(p.name).find("(" + std::to_string(p.compute_units) + " thread") !=
          std::string::npos);
    units += p.compute_units;
  }
  // Disjoint shares that cover the machine; with one CPU each device gets it (shared).
  CHECK(units == static_cast<int32_t>(cpus >= 2 ? cpus : 2));
  porta_shutdown();
}

TEST_CASE("devices: without PORTA_CPU_DEVICES the CPU backend is one device of every core",
          "[devices]") {
  PT_REQUIRE_OK(init_cpu(nullptr));
  REQUIRE(device_count() == 1);
  CHECK(properties(0).compute_units == static_cast<int32_t>(usable_cpus()));
  porta_shutdown();
}

TEST_CASE("devices: the init option overrides PORTA_CPU_DEVICES", "[devices]") {
  ScopedEnv devices("PORTA_CPU_DEVICES", "5");
  PT_REQUIRE_OK(init_cpu("3"));
  CHECK(device_count() == 3);
  porta_shutdown();
}

TEST_CASE("devices: bad device counts are errors naming the accepted values", "[devices][errors]") {
  for (const char* bad : {"0", "-1", "two", "2x", "", "257", "99999999999"}) {
    INFO("options.cpu_devices='" << bad << "'");
    if (*bad == '\0') continue;  // an empty option reads as unset; checked below through the env
    const CallResult result = call_on_fresh_thread([&] { return init_cpu(bad); });
    CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    CHECK(result.message.find("options.cpu_devices") != std::string::npos);
    CHECK(result.message.find("accepted: a whole number from 1 to 256") != std::string::npos);
    porta_shutdown();
  }
  ScopedEnv backend("PORTA_BACKEND", "cpu");
  ScopedEnv devices("PORTA_CPU_DEVICES", "0");
  const CallResult result = call_on_fresh_thread([] { return porta_init(nullptr); });
  CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(result.message.find("PORTA_CPU_DEVICES='0'") != std::string::npos);
  // The failure is kept: every call reports it.
  int32_t count = 0;
  CHECK(Status{porta_device_count(&count)} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  porta_shutdown();
}

TEST_CASE("devices: PORTA_DEVICE picks the default device among them", "[devices]") {
  {
    ScopedEnv device("PORTA_DEVICE", "1");
    PT_REQUIRE_OK(init_cpu("2"));
    porta_device_t chosen = -1;
    PT_REQUIRE_OK(porta_device_default(&chosen));
    CHECK(chosen == 1);
    // A NULL stream is the default device's default stream.
    porta_device_t of_null = -1;
    PT_REQUIRE_OK(porta_stream_device(nullptr, &of_null));
    CHECK(of_null == 1);
    void* ptr = nullptr;
    PT_REQUIRE_OK(porta_memory_alloc(1, 64, &ptr));
    PT_CHECK_OK(porta_memset_async(ptr, 0, 64, nullptr));
    PT_CHECK_OK(porta_memory_free(ptr));
    porta_shutdown();
  }
  ScopedEnv device("PORTA_DEVICE", "2");
  const CallResult result = call_on_fresh_thread([] { return init_cpu("2"); });
  CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
  CHECK(result.message.find("PORTA_DEVICE=2 is out of range") != std::string::npos);
  porta_shutdown();
}

TEST_CASE("devices: kernels run on both devices at once and each gets its own results",
          "[devices][kernels]") {
  CpuDevices runtime("2");
  constexpr int n = 100003;
  Module module0(0), module1(1);
  Stream stream0(0), stream1(1);
  Buffer x0(0, n * sizeof(float)), y0(0, n * sizeof(float));
  Buffer x1(1, n * sizeof(float)), y1(1, n * sizeof(float));
  std::vector<float> x(n), y(n);
  for (int i = 0; i < n; ++i) x[i] = float(i % 97), y[i] = float(i % 13);
  for (Buffer* b : {&x0, &x1}) PT_REQUIRE_OK(porta_memcpy(b->get(), x.data(), n * sizeof(float)));
  for (Buffer* b : {&y0, &y1}) PT_REQUIRE_OK(porta_memcpy(b->get(), y.data(), n * sizeof(float)));
  PT_REQUIRE_OK(launch_saxpy(module0.kernel("saxpy"), n, 2.0f, x0.as<float>(), y0.as<float>(), 64,
                             stream0.get()));
  PT_REQUIRE_OK(launch_saxpy(module1.kernel("saxpy"), n, -3.0f, x1.as<float>(), y1.as<float>(), 64,
                             stream1.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream0.get()));
  PT_REQUIRE_OK(porta_stream_synchronize(stream1.get()));
  std::vector<float> got0(n), got1(n);
  PT_REQUIRE_OK(porta_memcpy(got0.data(), y0.get(), n * sizeof(float)));
  PT_REQUIRE_OK(porta_memcpy(got1.data(), y1.get(), n * sizeof(float)));
  for (int i = 0; i < n; ++i) {
    if (got0[i] != 2.0f * x[i] + y[i] || got1[i] != -3.0f * x[i] + y[i]) {
      INFO("element " << i);
      CHECK(got0[i] == 2.0f * x[i] + y[i]);
      CHECK(got1[i] == -3.0f * x[i] + y[i]);
      break;
    }
  }
  // Synchronising one device leaves the other's streams alone, and both answer.
  PT_CHECK_OK(porta_device_synchronize(0));
  PT_CHECK_OK(porta_device_synchronize(1));
}

namespace {

// The CPUs a thread may run on, as its status file lists them ("0-3", "2").
std::string cpu_list(const std::string& status_path) {
  std::ifstream status(status_path);
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Cpus_allowed_list:", 0) == 0) {
      return line.substr(line.find_first_not_of(" \t", 18));
    }
  }
  return "";
}

// The CPU lists of every thread of this process.
std::vector<std::string> thread_cpu_lists() {
  std::vector<std::string> lists;
  DIR* tasks = opendir("/proc/self/task");
  REQUIRE(tasks != nullptr);
  while (const dirent* entry = readdir(tasks)) {
    if (entry->d_name[0] == '.') continue;
    lists.push_back(cpu_list(std::string("/proc/self/task/") + entry->d_name + "/status"));
  }
  closedir(tasks);
  return lists;
}

struct HostAffinity {
  int cpus = 0;
};

void record_affinity(void* user_data) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    static_cast<HostAffinity*>(user_data)->cpus = CPU_COUNT(&set);
  }
}

}  // namespace

// Left to the OS, a pool thread woken while every core looked busy often landed on the core of
// the stream worker it was to help, and a kernel ran at half speed for as long as they stayed
// there. Each pool thread now has a core of its own, and the stream worker takes the remaining
// one only while it runs work-groups: host functions (and threads they start, such as a
// library's OpenMP team) still get every core of the device.
TEST_CASE("devices: each pool thread has a core of its own and stream workers keep the device's",
          "[devices][kernels]") {
  const unsigned cpus = usable_cpus();
  if (cpus < 2) {
    WARN("skipped: one usable CPU, so the pool has no threads to bind");
    return;
  }
  PT_REQUIRE_OK(init_cpu(nullptr));
  const std::string all = cpu_list("/proc/thread-self/status");  // every usable CPU
  std::vector<std::string> bound;
  for (const std::string& list : thread_cpu_lists()) {
    if (list != all) bound.push_back(list);
  }
  INFO("every CPU: " << all);
  CHECK(bound.size() == cpus - 1);
  std::sort(bound.begin(), bound.end());
  CHECK(std::unique(bound.begin(), bound.end()) == bound.end());
  for (const std::string& list : bound) CHECK(list.find_first_of(",-") == std::string::npos);

  // A launch of many groups (the stream worker, or this thread as it synchronizes, joins the
  // pool), then a host function; the thread that ran the groups gets its CPUs back.
  {
    constexpr int n = 1 << 20;
    Module module(0);
    Stream stream(0);
    Buffer x(0, n * sizeof(float)), y(0, n * sizeof(float));
    PT_REQUIRE_OK(porta_memset(x.get(), 0, n * sizeof(float)));
    PT_REQUIRE_OK(porta_memset(y.get(), 0, n * sizeof(float)));
    PT_REQUIRE_OK(launch_saxpy(module.kernel("saxpy"), n, 2.0f, x.as<float>(), y.as<float>(), 64,
                               stream.get()));
    HostAffinity seen;
    PT_REQUIRE_OK(porta_stream_launch_host_func(stream.get(), record_affinity, &seen));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(seen.cpus == static_cast<int>(cpus));
    for (int round = 0; round < 20; ++round) {
      PT_REQUIRE_OK(launch_saxpy(module.kernel("saxpy"), n, 2.0f, x.as<float>(), y.as<float>(), 64,
                                 stream.get()));
      PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
      CHECK(cpu_list("/proc/thread-self/status") == all);
    }
  }
  porta_shutdown();
}
