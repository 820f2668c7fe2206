// The collective engines as plugins: the MPI engine serves CPU devices; the NCCL and RCCL engines
// load anywhere and say why they cannot serve (no such library, or devices of another backend).
#include <dlfcn.h>
#include <porta/porta_comm.h>
#include <porta/porta_plugin.h>

#include <string>

#include "multi_device.h"

using namespace porta_test;

namespace {

thread_local std::string g_message;
void set_message(const char* message) { g_message = message ? message : ""; }
void ignore_log(porta_log_level_t, const char*) {}
const char* no_setting(const char*) { return nullptr; }
const porta_host_api_t kHost{sizeof(porta_host_api_t), set_message, ignore_log, no_setting};

// Loads an engine plugin by hand, as libporta's loader does, and asks it about backends.
void check_gpu_engine(const char* path, const char* name, const char* backend,
                      const char* library) {
  INFO(path);
  void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  REQUIRE(handle != nullptr);
  auto entry = reinterpret_cast<porta_plugin_entry_fn>(dlsym(handle, PORTA_PLUGIN_ENTRY_SYMBOL));
  REQUIRE(entry != nullptr);
  porta_plugin_t plugin{};
  plugin.struct_size = sizeof(plugin);
  REQUIRE(entry(&kHost, &plugin) == PORTA_SUCCESS);
  CHECK(plugin.kind == PORTA_PLUGIN_KIND_COMM);
  CHECK(std::string(plugin.name) == name);
  REQUIRE(plugin.comm != nullptr);
  const porta_comm_interface_t& comm = *plugin.comm;
  porta_backend_context_t context = nullptr;
  REQUIRE(comm.initialize(&context) == PORTA_SUCCESS);
  g_message.clear();
  CHECK(Status{comm.supports_backend(context, "cpu")} == Status{PORTA_ERROR_UNAVAILABLE});
  CHECK(g_message == std::string(name) + " serves " + backend + " devices, not cpu");
  // Its own backend: served when the library opens here, else the reason names the library.
  g_message.clear();
  const porta_status_t status = comm.supports_backend(context, backend);
  INFO(g_message);
  if (status != PORTA_SUCCESS) {
    CHECK(Status{status} == Status{PORTA_ERROR_UNAVAILABLE});
    CHECK(g_message.find(library) != std::string::npos);
  }
  comm.shutdown(context);
  dlclose(handle);
}

}  // namespace

TEST_CASE("comm engines: CPU devices are served by MPI", "[comm]") {
  CpuDevices runtime("2");
  const char* engine = nullptr;
  PT_REQUIRE_OK(porta_comm_engine(1, &engine));
  CHECK(std::string(engine) == "mpi");
  PT_CHECK_FAILS(PORTA_ERROR_NOT_FOUND, porta_comm_engine(2, &engine));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_comm_engine(0, nullptr));
}

TEST_CASE("comm engines: NCCL and RCCL load without a GPU and say why they cannot serve",
          "[comm]") {
  check_gpu_engine(PORTA_TEST_COMM_NCCL, "nccl", "cuda", "libnccl.so.2");
  check_gpu_engine(PORTA_TEST_COMM_RCCL, "rccl", "hip", "librccl.so.1");
}
