// porta-gpu-driver-tests: the CUDA and HIP plugins' driver logic, run by the real plugin against
// a stand-in driver library (fake_cuda_driver.cpp, fake_hip_runtime.cpp) that the loader finds
// first: CTest puts the fake libcuda.so.1 on LD_LIBRARY_PATH, and the HIP cases name a fake ROCm
// installation with ROCM_PATH. The fakes are configured per case through PORTA_FAKE_CUDA and
// PORTA_FAKE_HIP, read at cuInit / hipInit.
#define CATCH_CONFIG_MAIN
#include <dlfcn.h>
#include <porta/porta.h>
#include <porta/porta_comm.h>
#include <porta/porta_ops.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gpu_vendor.h"

namespace {

const std::string kBackend = porta::gpu::kBackendName;

struct Fresh {
  explicit Fresh(const char* fake_config) {
    for (const char* name : {"PORTA_BACKEND", "PORTA_DEVICE", "PORTA_PLUGIN_PATH"}) unsetenv(name);
    setenv(kBackend == "cuda" ? "PORTA_FAKE_CUDA" : "PORTA_FAKE_HIP", fake_config, 1);
    porta_shutdown();
  }
  ~Fresh() { porta_shutdown(); }
};

porta_status_t init(const char* ops = "portable") {
  porta_init_options_t o;
  std::memset(&o, 0, sizeof(o));
  o.struct_size = sizeof(o);
  o.backend = kBackend.c_str();
  o.ops = ops;
  o.log_level = "off";
  const porta_status_t status = porta_init(&o);
  if (status != PORTA_SUCCESS) UNSCOPED_INFO("porta_init: " << porta_last_error_message());
  return status;
}

std::string message() { return porta_last_error_message(); }

porta_launch_config_t config(uint32_t group) {
  porta_launch_config_t c;
  std::memset(&c, 0, sizeof(c));
  c.struct_size = sizeof(c);
  c.grid[0] = c.grid[1] = c.grid[2] = 1;
  c.group[0] = group;
  c.group[1] = c.group[2] = 1;
  return c;
}

// The fake itself, as the plugin opened it.
void* fake_library() {
#if defined(PORTA_GPU_HIP)
  const std::string path = std::string(getenv("ROCM_PATH")) + "/lib/libamdhip64.so.7";
  void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
#else
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
#endif
  REQUIRE(library);
  return library;
}

template <class Fn>
Fn fake_function(const char* name) {
  auto fn = reinterpret_cast<Fn>(dlsym(fake_library(), name));
  REQUIRE(fn);
  return fn;
}

// The test library's kernel without parameters, loaded on device 0.
porta_kernel_t test_kernel(porta_module_t& module) {
  REQUIRE(porta_module_load(0, PORTA_TEST_GPU_CODE_OBJECT, &module) == PORTA_SUCCESS);
  porta_kernel_t kernel = nullptr;
  REQUIRE(porta_kernel_get(module, "noop", &kernel) == PORTA_SUCCESS);
  return kernel;
}

}  // namespace

#if !defined(PORTA_GPU_HIP)

TEST_CASE("cuda driver: a driver older than the kernels' toolkit is named with both versions") {
  Fresh fresh("version=12040");
  REQUIRE(init() == PORTA_SUCCESS);
  porta_module_t module = nullptr;
  const porta_status_t status = porta_module_load(0, PORTA_TEST_GPU_CODE_OBJECT, &module);
  INFO(message());
  CHECK(status == PORTA_ERROR_INCOMPATIBLE_VERSION);
  // The toolkit porta_add_kernel_library recorded beside the fatbin (13000 for CUDA 13.0).
  std::ifstream recorded(std::string(PORTA_TEST_GPU_CODE_OBJECT) + ".toolkit");
  int toolkit = 0;
  REQUIRE(recorded >> toolkit);
  const std::string built = "built with CUDA " + std::to_string(toolkit / 1000) + "." +
                            std::to_string(toolkit % 1000 / 10);
  CHECK(message().find(built) != std::string::npos);
  CHECK(message().find("the driver supports CUDA 12.4 (12040)") != std::string::npos);
}

TEST_CASE("cuda driver: a driver of the kernels' toolkit loads them") {
  Fresh fresh("version=13000");
  REQUIRE(init() == PORTA_SUCCESS);
  porta_module_t module = nullptr;
  test_kernel(module);
  CHECK(porta_module_unload(module) == PORTA_SUCCESS);
}

TEST_CASE("cuda driver: a later minor version that fails to load says which versions met") {
  Fresh fresh("version=13000,fail=cuModuleLoadData:222");  // CUDA_ERROR_UNSUPPORTED_PTX_VERSION
  REQUIRE(init() == PORTA_SUCCESS);
  // A copy of the fatbin recorded as built with CUDA 13.1.
  const std::string dir = std::string(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  const std::string copy = dir + "/porta-driver-test-" + std::to_string(getpid()) + ".fatbin";
  REQUIRE(system(("cp '" + std::string(PORTA_TEST_GPU_CODE_OBJECT) + "' '" + copy + "' && " +
                  "echo 13010 > '" + copy + ".toolkit'")
                     .c_str()) == 0);
  porta_module_t module = nullptr;
  const porta_status_t status = porta_module_load(0, copy.c_str(), &module);
  INFO(message());
  CHECK(status == PORTA_ERROR_INCOMPATIBLE_VERSION);
  CHECK(message().find("built with CUDA 13.1") != std::string::npos);
  CHECK(message().find("the driver supports CUDA 13.0") != std::string::npos);
  std::remove(copy.c_str());
  std::remove((copy + ".toolkit").c_str());
}

TEST_CASE("cuda driver: the vendor plugin names the driver and library versions") {
  Fresh fresh("version=12040");
  REQUIRE(init("vendor") == PORTA_SUCCESS);
  size_t count = 0;
  REQUIRE(porta_loader_report_count(&count) == PORTA_SUCCESS);
  bool found = false;
  for (size_t i = 0; i < count; ++i) {
    porta_plugin_report_t row;
    std::memset(&row, 0, sizeof(row));
    row.struct_size = sizeof(row);
    REQUIRE(porta_loader_report_get(i, &row) == PORTA_SUCCESS);
    if (std::string(row.name) != "vendor_cuda") continue;
    found = true;
    INFO(row.reason);
    CHECK(row.outcome != PORTA_PLUGIN_LOADED);
    CHECK(std::string(row.reason).find("the driver supports CUDA 12.4") != std::string::npos);
    CHECK(std::string(row.reason).find("built for CUDA 13") != std::string::npos);
  }
  if (!found) {
    WARN("skipped: the vendor_cuda plugin is not built here");
    std::exit(77);
  }
}

TEST_CASE("cuda driver: contexts are retained at first use, and a refusing device is alone") {
  Fresh fresh("devices=3,refuse=1");
  REQUIRE(init() == PORTA_SUCCESS);
  int32_t devices = 0;
  REQUIRE(porta_device_count(&devices) == PORTA_SUCCESS);
  REQUIRE(devices == 3);
  auto retained = fake_function<int (*)(int)>("porta_fake_cuda_retained");
  for (int i = 0; i < 3; ++i) CHECK(retained(i) == 0);  // none at initialisation

  void* p = nullptr;
  REQUIRE(porta_memory_alloc(0, 256, &p) == PORTA_SUCCESS);
  CHECK(retained(0) == 1);
  CHECK(retained(2) == 0);
  for (int attempt = 0; attempt < 2; ++attempt) {
    void* q = nullptr;
    CHECK(porta_memory_alloc(1, 256, &q) == PORTA_ERROR_UNAVAILABLE);
    CHECK(message().find("device 1") != std::string::npos);
    CHECK(message().find("CUDA_ERROR_DEVICE_UNAVAILABLE") != std::string::npos);
  }
  void* r = nullptr;
  REQUIRE(porta_memory_alloc(2, 256, &r) == PORTA_SUCCESS);
  CHECK(porta_memory_free(p) == PORTA_SUCCESS);
  CHECK(porta_memory_free(r) == PORTA_SUCCESS);
  porta_shutdown();
  for (int i = 0; i < 3; ++i) CHECK(retained(i) == 0);  // released again
}

TEST_CASE("cuda driver: a device in prohibited mode is unusable, the others work") {
  Fresh fresh("devices=2,prohibited=0");
  REQUIRE(init() == PORTA_SUCCESS);
  void* p = nullptr;
  CHECK(porta_memory_alloc(0, 64, &p) == PORTA_ERROR_UNAVAILABLE);
  CHECK(message().find("CUDA_ERROR_UNKNOWN") != std::string::npos);
  REQUIRE(porta_memory_alloc(1, 64, &p) == PORTA_SUCCESS);
  CHECK(porta_memory_free(p) == PORTA_SUCCESS);
}

TEST_CASE("cuda driver: the caller's current context is restored after each call") {
  Fresh fresh("devices=2");
  REQUIRE(init() == PORTA_SUCCESS);
  auto get = fake_function<CUresult (*)(CUcontext*)>("cuCtxGetCurrent");
  auto set = fake_function<CUresult (*)(CUcontext)>("cuCtxSetCurrent");
  void* native = nullptr;
  REQUIRE(porta_device_native_handle(1, &native) == PORTA_SUCCESS);
  auto* own = static_cast<CUcontext>(native);
  REQUIRE(set(own) == CUDA_SUCCESS);  // the application works on device 1
  void* p = nullptr;
  REQUIRE(porta_memory_alloc(0, 64, &p) == PORTA_SUCCESS);
  CUcontext current = nullptr;
  REQUIRE(get(&current) == CUDA_SUCCESS);
  CHECK(current == own);
  REQUIRE(porta_memory_free(p) == PORTA_SUCCESS);
  REQUIRE(set(nullptr) == CUDA_SUCCESS);  // a thread without a context keeps none
  REQUIRE(porta_memory_alloc(0, 64, &p) == PORTA_SUCCESS);
  REQUIRE(get(&current) == CUDA_SUCCESS);
  CHECK(current == nullptr);
  REQUIRE(porta_memory_free(p) == PORTA_SUCCESS);
}

TEST_CASE("cuda driver: sticky errors are DEVICE_LOST, then every later call too") {
  const char* code = GENERATE("719", "226", "214", "220", "700");
  const std::string fake = std::string("fail=cuLaunchKernel:") + code;
  Fresh fresh(fake.c_str());
  REQUIRE(init() == PORTA_SUCCESS);
  porta_module_t module = nullptr;
  porta_kernel_t kernel = test_kernel(module);
  porta_stream_t stream = nullptr;
  REQUIRE(porta_stream_create(0, &stream) == PORTA_SUCCESS);
  porta_launch_config_t c = config(32);
  CHECK(porta_kernel_launch(kernel, &c, nullptr, stream) == PORTA_ERROR_DEVICE_LOST);
  INFO(message());
  CHECK(porta_stream_synchronize(stream) == PORTA_ERROR_DEVICE_LOST);
  // Host functions do not run after one (porta.h).
  bool ran = false;
  CHECK(porta_stream_launch_host_func(
            stream, [](void* flag) { *static_cast<bool*>(flag) = true; }, &ran) ==
        PORTA_ERROR_DEVICE_LOST);
  CHECK_FALSE(ran);
  void* p = nullptr;
  CHECK(porta_memory_alloc(0, 64, &p) == PORTA_ERROR_DEVICE_LOST);
}

TEST_CASE("cuda driver: a kernel's own group limit is reported and enforced") {
  Fresh fresh("max_threads=512");
  REQUIRE(init() == PORTA_SUCCESS);
  porta_module_t module = nullptr;
  porta_kernel_t kernel = test_kernel(module);
  int32_t max = 0;
  REQUIRE(porta_kernel_max_group_size(kernel, &max) == PORTA_SUCCESS);
  CHECK(max == 512);
  porta_launch_config_t c = config(1024);  // within the device's 1024
  CHECK(porta_kernel_launch(kernel, &c, nullptr, nullptr) == PORTA_ERROR_INVALID_ARGUMENT);
  CHECK(message().find("exceeds this kernel's 512") != std::string::npos);
  c = config(512);
  CHECK(porta_kernel_launch(kernel, &c, nullptr, nullptr) == PORTA_SUCCESS);
}

// The portable ops' answer for a device: SUCCESS, or the status of an op on it.
porta_status_t ops_answer() {
  void* buffer = nullptr;
  REQUIRE(porta_memory_alloc(0, 256, &buffer) == PORTA_SUCCESS);
  const porta_status_t status =
      porta_relu_forward(nullptr, 1, static_cast<float*>(buffer), static_cast<float*>(buffer) + 1);
  porta_memory_free(buffer);
  return status;
}

TEST_CASE("cuda driver: a GPU the kernels were not built for is told so at initialisation") {
  {
    Fresh fresh("cc=75");
    REQUIRE(init() == PORTA_SUCCESS);
    CHECK(ops_answer() == PORTA_ERROR_UNSUPPORTED);
    INFO(message());
    CHECK(message().find("no code object for sm_75") != std::string::npos);
    CHECK(message().find("sm_80, sm_90") != std::string::npos);
  }
  for (const char* served : {"cc=86", "cc=120"}) {  // SASS of sm_80; PTX of compute_90
    Fresh fresh(served);
    REQUIRE(init() == PORTA_SUCCESS);
    CHECK(ops_answer() != PORTA_ERROR_UNSUPPORTED);
  }
}

#else  // HIP

namespace {
// ROCM_PATH for a fake installation: rocm7 exports hipGetDevicePropertiesR0000, rocm5 does not.
void use_rocm(const char* which) {
  setenv("ROCM_PATH", (std::string(PORTA_FAKE_ROCM_DIR) + "/" + which).c_str(), 1);
}
std::string architecture() {
  porta_device_properties_t p;
  std::memset(&p, 0, sizeof(p));
  p.struct_size = sizeof(p);
  REQUIRE(porta_device_properties(0, &p) == PORTA_SUCCESS);
  return p.architecture;
}
}  // namespace

TEST_CASE("hip driver: $ROCM_PATH/lib first, the newest soname first, named in the reason") {
  use_rocm("rocm7");  // holds libamdhip64.so.7 and a libamdhip64.so.5 beside it
  Fresh fresh("init_error=100,runtime=70012000");
  CHECK(init() == PORTA_ERROR_UNAVAILABLE);
  INFO(message());
  CHECK(message().find("/rocm7/lib/libamdhip64.so.7, HIP driver 70012000") != std::string::npos);
  CHECK(message().find("HIP runtime 70012000") != std::string::npos);
}

TEST_CASE("hip driver: hipGetDevicePropertiesR0000 is preferred to the plain symbol") {
  use_rocm("rocm7");
  Fresh fresh("runtime=70012000");
  REQUIRE(init() == PORTA_SUCCESS);
  CHECK(architecture() == "gfx90a");  // the plain symbol would have said gfx000
}

TEST_CASE("hip driver: the plain symbol only from a runtime older than ROCm 6") {
  use_rocm("rocm5");  // no R0000
  {
    Fresh fresh("runtime=50231000");
    REQUIRE(init() == PORTA_SUCCESS);
    CHECK(architecture() == "gfx000");
  }
  {
    Fresh fresh("runtime=70012000");
    CHECK(init() == PORTA_ERROR_UNAVAILABLE);  // the only backend asked for cannot be used
    INFO(message());
    CHECK(message().find("PORTA_ERROR_INCOMPATIBLE_VERSION") != std::string::npos);
    CHECK(message().find("exports no hipGetDevicePropertiesR0000") != std::string::npos);
  }
}

TEST_CASE("hip driver: the module's image stays alive until it is unloaded") {
  use_rocm("rocm7");
  Fresh fresh("");
  REQUIRE(init() == PORTA_SUCCESS);
  porta_module_t module = nullptr;
  // The fake compares the image at hipModuleGetFunction with what it was given at load.
  porta_kernel_t kernel = test_kernel(module);
  CHECK(kernel != nullptr);
  CHECK(porta_module_unload(module) == PORTA_SUCCESS);
}

TEST_CASE("hip driver: an architecture without a code object is UNSUPPORTED, naming the built") {
  use_rocm("rocm7");
  Fresh fresh("arch=gfx942");
  REQUIRE(init() == PORTA_SUCCESS);
  void* buffer = nullptr;
  REQUIRE(porta_memory_alloc(0, 256, &buffer) == PORTA_SUCCESS);
  CHECK(porta_relu_forward(nullptr, 1, static_cast<float*>(buffer),
                           static_cast<float*>(buffer) + 1) == PORTA_ERROR_UNSUPPORTED);
  INFO(message());
  CHECK(message().find("no code object for gfx942") != std::string::npos);
  CHECK(message().find("gfx90a") != std::string::npos);
  CHECK(message().find("gfx1030") != std::string::npos);
  porta_memory_free(buffer);
}

TEST_CASE("hip driver: the grid limit keeps work-items per dimension below 2^32") {
  use_rocm("rocm7");
  Fresh fresh("");
  REQUIRE(init() == PORTA_SUCCESS);
  porta_device_properties_t p;
  std::memset(&p, 0, sizeof(p));
  p.struct_size = sizeof(p);
  REQUIRE(porta_device_properties(0, &p) == PORTA_SUCCESS);
  for (int i = 0; i < 3; ++i) {
    CHECK(uint64_t(p.max_grid_dims[i]) * uint64_t(p.max_work_group_dims[i]) <= UINT32_MAX);
  }
}

TEST_CASE("hip driver: a launch failure is DEVICE_LOST, a kernel's limit is reported") {
  use_rocm("rocm7");
  Fresh fresh("fail=hipModuleLaunchKernel:719");
  REQUIRE(init() == PORTA_SUCCESS);
  porta_module_t module = nullptr;
  porta_kernel_t kernel = test_kernel(module);
  int32_t max = 0;
  REQUIRE(porta_kernel_max_group_size(kernel, &max) == PORTA_SUCCESS);
  CHECK(max == 256);
  porta_launch_config_t c = config(64);
  CHECK(porta_kernel_launch(kernel, &c, nullptr, nullptr) == PORTA_ERROR_DEVICE_LOST);
  CHECK(message().find("hipErrorLaunchFailure") != std::string::npos);
}

#endif

// ---- two devices: peer access, copies and events between them; collectives ---------------------

namespace {

// How often the fake saw NAME: "enable I J", "copy I J", "wait I J" (the fakes' headers).
int peer_events(const std::string& name) {
#if defined(PORTA_GPU_HIP)
  return fake_function<int (*)(const char*)>("porta_fake_hip_peer")(name.c_str());
#else
  return fake_function<int (*)(const char*)>("porta_fake_cuda_peer")(name.c_str());
#endif
}

// The fake's configuration (and, for HIP, its installation).
const char* with_fake(const char* config) {
#if defined(PORTA_GPU_HIP)
  use_rocm("rocm7");
#endif
  return config;
}

// Copies data from device `from` to device `to` with porta_memcpy_async on a new stream of
// device `on`, and returns what arrived.
std::vector<float> copy_between(porta_device_t from, porta_device_t to, porta_device_t on,
                                const std::vector<float>& data) {
  const size_t bytes = data.size() * sizeof(float);
  void *src = nullptr, *dst = nullptr;
  porta_stream_t stream = nullptr;
  REQUIRE(porta_memory_alloc(from, bytes, &src) == PORTA_SUCCESS);
  REQUIRE(porta_memory_alloc(to, bytes, &dst) == PORTA_SUCCESS);
  REQUIRE(porta_memcpy(src, data.data(), bytes) == PORTA_SUCCESS);
  REQUIRE(porta_stream_create(on, &stream) == PORTA_SUCCESS);
  const porta_status_t status = porta_memcpy_async(dst, src, bytes, stream);
  INFO(message());
  REQUIRE(status == PORTA_SUCCESS);
  REQUIRE(porta_stream_synchronize(stream) == PORTA_SUCCESS);
  std::vector<float> out(data.size());
  REQUIRE(porta_memcpy(out.data(), dst, bytes) == PORTA_SUCCESS);
  CHECK(porta_stream_destroy(stream) == PORTA_SUCCESS);
  CHECK(porta_memory_free(src) == PORTA_SUCCESS);
  CHECK(porta_memory_free(dst) == PORTA_SUCCESS);
  return out;
}

std::vector<float> counting(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float(i) + 0.5f;
  return v;
}

}  // namespace

TEST_CASE("gpu driver: devices with peer access copy directly, access enabled once per pair") {
  Fresh fresh(with_fake("devices=2,peer=1"));
  REQUIRE(init() == PORTA_SUCCESS);
  int32_t direct = 0;
  REQUIRE(porta_device_can_access_peer(0, 1, &direct) == PORTA_SUCCESS);
  CHECK(direct == 1);
  const std::vector<float> data = counting(3000);
  CHECK(copy_between(0, 1, 0, data) == data);
  CHECK(copy_between(0, 1, 0, data) == data);
  CHECK(peer_events("copy 0 1") == 2);
  CHECK(peer_events("enable 0 1") == 1);  // at the first copy, not at initialisation
  CHECK(peer_events("enable 1 0") == 0);
  // On a stream of the destination, its device is the one given access.
  CHECK(copy_between(0, 1, 1, data) == data);
  CHECK(copy_between(1, 0, 1, data) == data);
  CHECK(peer_events("copy 0 1") == 3);
  CHECK(peer_events("copy 1 0") == 1);
  CHECK(peer_events("enable 1 0") == 1);
  // Copies within one device stay ordinary copies.
  CHECK(copy_between(1, 1, 1, data) == data);
  CHECK(peer_events("copy 1 1") == 0);
}

TEST_CASE("gpu driver: peer access an application enabled already is used as it is") {
  Fresh fresh(with_fake("devices=2,peer=1,peer_enabled=1"));
  REQUIRE(init() == PORTA_SUCCESS);
  const std::vector<float> data = counting(100);
  CHECK(copy_between(0, 1, 0, data) == data);
  CHECK(copy_between(0, 1, 0, data) == data);
  CHECK(peer_events("copy 0 1") == 2);
  CHECK(peer_events("enable 0 1") == 0);
}

TEST_CASE("gpu driver: devices without peer access are staged through host memory") {
  Fresh fresh(with_fake("devices=2,peer=0"));
  REQUIRE(init() == PORTA_SUCCESS);
  int32_t direct = 1;
  REQUIRE(porta_device_can_access_peer(0, 1, &direct) == PORTA_SUCCESS);
  CHECK(direct == 0);
  const std::vector<float> data = counting(3000);
  CHECK(copy_between(0, 1, 0, data) == data);
  CHECK(copy_between(1, 0, 0, data) == data);
  CHECK(peer_events("copy 0 1") == 0);
  CHECK(peer_events("enable 0 1") == 0);
}

TEST_CASE("gpu driver: a stream of one device waits on an event recorded on another") {
  Fresh fresh(with_fake("devices=2"));
  REQUIRE(init() == PORTA_SUCCESS);
  porta_stream_t producer = nullptr, consumer = nullptr;
  porta_event_t event = nullptr;
  REQUIRE(porta_stream_create(0, &producer) == PORTA_SUCCESS);
  REQUIRE(porta_stream_create(1, &consumer) == PORTA_SUCCESS);
  REQUIRE(porta_event_create(0, &event) == PORTA_SUCCESS);
  REQUIRE(porta_event_record(event, producer) == PORTA_SUCCESS);
  const porta_status_t status = porta_stream_wait_event(consumer, event);
  INFO(message());
  CHECK(status == PORTA_SUCCESS);
  CHECK(peer_events("wait 1 0") == 1);
  CHECK(porta_stream_synchronize(consumer) == PORTA_SUCCESS);
  CHECK(porta_event_destroy(event) == PORTA_SUCCESS);
  CHECK(porta_stream_destroy(producer) == PORTA_SUCCESS);
  CHECK(porta_stream_destroy(consumer) == PORTA_SUCCESS);
}

TEST_CASE("gpu driver: a collective a rank never joins is aborted after PORTA_COMM_TIMEOUT") {
  // The stand-in NCCL (RCCL) leaves the stream stalled, as a rank that never comes would.
  struct Settings {
    Settings() {
      setenv("PORTA_COMM_TIMEOUT", "1", 1);
      setenv("PORTA_FAKE_NCCL", "missing=1", 1);
    }
    ~Settings() {
      unsetenv("PORTA_COMM_TIMEOUT");
      unsetenv("PORTA_FAKE_NCCL");
    }
  } settings;
  Fresh fresh(with_fake("devices=1"));
  REQUIRE(init() == PORTA_SUCCESS);
  const char* engine = nullptr;
  const porta_status_t found = porta_comm_engine(0, &engine);
  INFO(message());
  REQUIRE(found == PORTA_SUCCESS);
  CHECK(std::string(engine) == (kBackend == "cuda" ? "nccl" : "rccl"));
  porta_comm_unique_id_t id;
  REQUIRE(porta_comm_get_unique_id(0, &id) == PORTA_SUCCESS);
  porta_comm_t comm = nullptr;
  REQUIRE(porta_comm_create(0, 0, 2, &id, &comm) == PORTA_SUCCESS);
  void* buffer = nullptr;
  REQUIRE(porta_memory_alloc(0, 64, &buffer) == PORTA_SUCCESS);
  porta_stream_t stream = nullptr;
  REQUIRE(porta_stream_create(0, &stream) == PORTA_SUCCESS);

  const auto start = std::chrono::steady_clock::now();
  // Queued: NCCL does not wait on the host.
  REQUIRE(porta_comm_all_reduce(comm, buffer, buffer, 16, PORTA_DTYPE_F32, PORTA_REDUCE_SUM,
                                stream) == PORTA_SUCCESS);
  // Would wait forever; the abort ends it.
  porta_stream_synchronize(stream);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(waited >= 0.9);
  CHECK(waited < 30);
  // From then on the communicator says what happened, at once.
  CHECK(porta_comm_all_reduce(comm, buffer, buffer, 16, PORTA_DTYPE_F32, PORTA_REDUCE_SUM,
                              stream) == PORTA_ERROR_DEVICE_LOST);
  const std::string why = message();
  INFO(why);
  CHECK(why.find("all_reduce of 16 elements (collective 1) on rank 0 of 2") != std::string::npos);
  CHECK(why.find("did not complete within 1") != std::string::npos);
  // Made without the launcher: no arrival record to name the missing ranks from, and it says so.
  CHECK(why.find("the ranks that did not arrive at collective 1 cannot be named: the communicator "
                 "was made by porta_comm_create, without the launcher's arrival record") !=
        std::string::npos);
  CHECK(why.find("ncclCommAbort") != std::string::npos);
  CHECK(porta_comm_barrier(comm, stream) == PORTA_ERROR_DEVICE_LOST);
  CHECK(porta_comm_destroy(comm) == PORTA_SUCCESS);
  CHECK(porta_stream_destroy(stream) == PORTA_SUCCESS);
  CHECK(porta_memory_free(buffer) == PORTA_SUCCESS);
}

TEST_CASE("gpu driver: an error NCCL reports aborts the communicator at once") {
  struct Settings {
    Settings() { setenv("PORTA_FAKE_NCCL", "async_error=6", 1); }  // ncclRemoteError
    ~Settings() { unsetenv("PORTA_FAKE_NCCL"); }
  } settings;
  Fresh fresh(with_fake("devices=1"));
  REQUIRE(init() == PORTA_SUCCESS);  // PORTA_COMM_TIMEOUT: the default, 300 s
  porta_comm_unique_id_t id;
  REQUIRE(porta_comm_get_unique_id(0, &id) == PORTA_SUCCESS);
  porta_comm_t comm = nullptr;
  REQUIRE(porta_comm_create(0, 1, 2, &id, &comm) == PORTA_SUCCESS);
  void* buffer = nullptr;
  REQUIRE(porta_memory_alloc(0, 64, &buffer) == PORTA_SUCCESS);
  porta_stream_t stream = nullptr;
  REQUIRE(porta_stream_create(0, &stream) == PORTA_SUCCESS);
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(porta_comm_broadcast(comm, buffer, buffer, 16, PORTA_DTYPE_F32, 0, stream) ==
          PORTA_SUCCESS);
  CHECK(porta_comm_barrier(comm, stream) == PORTA_ERROR_DEVICE_LOST);
  const std::string why = message();
  INFO(why);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(30));
  CHECK(why.find("broadcast of 16 elements (collective 1) on rank 1 of 2 failed") !=
        std::string::npos);
  CHECK(why.find("ncclCommGetAsyncError: remote process exited") != std::string::npos);
  CHECK(why.find("ncclCommAbort") != std::string::npos);
  CHECK(porta_comm_destroy(comm) == PORTA_SUCCESS);
  CHECK(porta_stream_destroy(stream) == PORTA_SUCCESS);
  CHECK(porta_memory_free(buffer) == PORTA_SUCCESS);
}

TEST_CASE("gpu driver: collectives that complete are followed and released") {
  Fresh fresh(with_fake("devices=1"));
  REQUIRE(init() == PORTA_SUCCESS);
  porta_comm_unique_id_t id;
  REQUIRE(porta_comm_get_unique_id(0, &id) == PORTA_SUCCESS);
  porta_comm_t comm = nullptr;
  REQUIRE(porta_comm_create(0, 0, 1, &id, &comm) == PORTA_SUCCESS);
  float* buffer = nullptr;
  REQUIRE(porta_memory_alloc(0, 64, reinterpret_cast<void**>(&buffer)) == PORTA_SUCCESS);
  porta_stream_t stream = nullptr;
  REQUIRE(porta_stream_create(0, &stream) == PORTA_SUCCESS);
  for (int i = 0; i < 20; ++i) {
    REQUIRE(porta_comm_all_reduce(comm, buffer, buffer, 16, PORTA_DTYPE_F32, PORTA_REDUCE_SUM,
                                  stream) == PORTA_SUCCESS);
  }
  CHECK(porta_comm_barrier(comm, stream) == PORTA_SUCCESS);
  CHECK(porta_comm_destroy(comm) == PORTA_SUCCESS);
  CHECK(porta_stream_destroy(stream) == PORTA_SUCCESS);
  CHECK(porta_memory_free(buffer) == PORTA_SUCCESS);
}

// ---- both vendors
// --------------------------------------------------------------------------------

namespace {

void use_default_fake() {
#if defined(PORTA_GPU_HIP)
  use_rocm("rocm7");
#endif
}

int fake_launches() {
  return fake_function<int (*)()>(kBackend == "cuda" ? "porta_fake_cuda_launches"
                                                     : "porta_fake_hip_launches")();
}

std::vector<char> test_image() {
  std::ifstream file(PORTA_TEST_GPU_CODE_OBJECT, std::ios::binary);
  std::vector<char> image{std::istreambuf_iterator<char>(file), {}};
  REQUIRE(!image.empty());
  return image;
}

}  // namespace

TEST_CASE("driver: the image's parameter record checks launches, and a mismatch launches nothing") {
  use_default_fake();
  Fresh fresh("");
  REQUIRE(init() == PORTA_SUCCESS);
  porta_module_t module = nullptr;
  REQUIRE(porta_module_load(0, PORTA_TEST_GPU_CODE_OBJECT, &module) == PORTA_SUCCESS);
  porta_kernel_t saxpy = nullptr;
  REQUIRE(porta_kernel_get(module, "saxpy", &saxpy) == PORTA_SUCCESS);

  // Read through the driver (module globals) from what nvcc or hipcc built.
  porta_kernel_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.struct_size = sizeof(params);
  REQUIRE(porta_kernel_get_params(saxpy, &params) == PORTA_SUCCESS);
  REQUIRE(params.count == 4);
  const uint32_t sizes[] = {sizeof(int), sizeof(float), sizeof(void*), sizeof(void*)};
  const char* names[] = {"n", "a", "x", "y"};
  for (int i = 0; i < 4; ++i) {
    INFO("parameter " << i);
    CHECK(params.sizes[i] == sizes[i]);
    REQUIRE(params.names[i]);
    CHECK(std::string(params.names[i]) == names[i]);
  }

  int n = 1;
  float a = 2.0f;
  float* x = nullptr;
  float* y = nullptr;
  void* args[] = {&n, &a, &x, &y};
  size_t arg_sizes[] = {sizeof n, sizeof a, sizeof x, sizeof y};
  porta_launch_config_t c = config(32);
  c.arg_sizes = arg_sizes;
  const int before = fake_launches();
  c.arg_count = 3;
  CHECK(porta_kernel_launch(saxpy, &c, args, nullptr) == PORTA_ERROR_INVALID_ARGUMENT);
  CHECK(message().find("kernel 'saxpy' takes 4 parameters (int n, float a, const float* x, "
                       "float* y) but 3 arguments were given") != std::string::npos);
  c.arg_count = 4;
  arg_sizes[1] = sizeof(double);
  CHECK(porta_kernel_launch(saxpy, &c, args, nullptr) == PORTA_ERROR_INVALID_ARGUMENT);
  CHECK(
      message().find("kernel 'saxpy' parameter 1 'a' (float) takes 4 bytes but argument 1 has 8") !=
      std::string::npos);
  CHECK(fake_launches() == before);
  arg_sizes[1] = sizeof a;
  CHECK(porta_kernel_launch(saxpy, &c, args, nullptr) == PORTA_SUCCESS);
  CHECK(fake_launches() == before + 1);
  CHECK(porta_module_unload(module) == PORTA_SUCCESS);
}

TEST_CASE("driver: an image without parameter records launches unchecked, as before") {
  use_default_fake();
  Fresh fresh("");
  REQUIRE(init() == PORTA_SUCCESS);
  // The same image with the records' names changed, as an image built without porta_kernel.h.
  std::vector<char> image = test_image();
  const std::string prefix = "porta_kernel_param_sizes_";
  int renamed = 0;
  for (auto at = std::search(image.begin(), image.end(), prefix.begin(), prefix.end());
       at != image.end(); at = std::search(at + 1, image.end(), prefix.begin(), prefix.end())) {
    *at = 'P';
    ++renamed;
  }
  REQUIRE(renamed > 0);
  porta_module_t module = nullptr;
  REQUIRE(porta_module_load_data(0, image.data(), image.size(), &module) == PORTA_SUCCESS);
  porta_kernel_t saxpy = nullptr;
  REQUIRE(porta_kernel_get(module, "saxpy", &saxpy) == PORTA_SUCCESS);
  porta_kernel_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.struct_size = sizeof(params);
  CHECK(porta_kernel_get_params(saxpy, &params) == PORTA_ERROR_NOT_FOUND);
  CHECK(message().find("records no parameter list") != std::string::npos);
  int n = 1;
  void* args[] = {&n};
  const size_t arg_sizes[] = {sizeof n};
  porta_launch_config_t c = config(32);
  c.arg_count = 1;
  c.arg_sizes = arg_sizes;
  const int before = fake_launches();
  CHECK(porta_kernel_launch(saxpy, &c, args, nullptr) == PORTA_SUCCESS);
  CHECK(fake_launches() == before + 1);
  CHECK(porta_module_unload(module) == PORTA_SUCCESS);
}
