// The plugin side's one error path (plugin_kit.h: fail, throw_error, guarded) and the slots every
// backend shares (plugin_state.h), run against a host API that records what the plugin reports.
#define CATCH_CONFIG_MAIN
#include <link.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>
#include <porta/porta.hpp>
#include <stdexcept>
#include <string>

#include "elf_check.h"
#include "plugin_kit.h"
#include "plugin_state.h"

namespace plugin = porta::plugin;

namespace {

thread_local std::string g_message;

const porta_host_api_t kHost = {
    .struct_size = sizeof(porta_host_api_t),
    .set_error_message = [](const char* message) { g_message = message; },
    .log = [](porta_log_level_t, const char*) {},
    .setting = nullptr,
};

const porta_backend_interface_t kNoSlots = {};

// Enters as a backend named "kit" (its own exceptions' messages start with "kit: "), or as an op
// plugin (every message starts with the slot's name). Either stays for the rest of the process,
// so the op plugin's cases come last.
void enter_as_backend() {
  porta_plugin_t plugin{};
  plugin.struct_size = sizeof(plugin);
  REQUIRE(plugin::enter(&kHost, &plugin,
                        {.kind = PORTA_PLUGIN_KIND_BACKEND,
                         .name = "kit",
                         .version = "1",
                         .backend = &kNoSlots,
                         .ops = nullptr,
                         .name_in_errors = true}) == PORTA_SUCCESS);
}

struct State {
  static int live;
  State() { ++live; }
  ~State() { --live; }
  int32_t device_count() const { return 2; }
  const porta_device_properties_t& properties(int32_t device) {
    if (device != 0)
      plugin::throw_error(PORTA_ERROR_NOT_FOUND, "no device " + std::to_string(device));
    return properties_;
  }
  porta_device_properties_t properties_ = [] {
    porta_device_properties_t p{};
    p.struct_size = sizeof(p);
    std::strcpy(p.name, "kit device");
    p.compute_units = 7;
    p.capabilities = 0x55;
    return p;
  }();
};
int State::live = 0;

}  // namespace

TEST_CASE("plugin kit: fail sets the message and returns the status") {
  enter_as_backend();
  g_message.clear();
  CHECK(plugin::fail(PORTA_ERROR_UNSUPPORTED, "not here") == PORTA_ERROR_UNSUPPORTED);
  CHECK(g_message == "not here");
}

TEST_CASE("plugin kit: the guard maps each kind of exception to one status and message") {
  enter_as_backend();
  CHECK(plugin::guarded("slot", [] { return PORTA_NOT_READY; }) == PORTA_NOT_READY);
  CHECK(plugin::guarded("slot", [] {}) == PORTA_SUCCESS);

  g_message.clear();
  CHECK(plugin::guarded("slot", [] { plugin::throw_error(PORTA_ERROR_DEVICE_LOST, "gone"); }) ==
        PORTA_ERROR_DEVICE_LOST);
  CHECK(g_message == "gone");

  CHECK(plugin::guarded("slot", []() -> porta_status_t { throw std::bad_alloc(); }) ==
        PORTA_ERROR_OUT_OF_MEMORY);
  CHECK(g_message == "kit: slot: out of host memory");

  CHECK(plugin::guarded("slot", []() -> porta_status_t { throw std::logic_error("a bug"); }) ==
        PORTA_ERROR_INTERNAL);
  CHECK(g_message == "kit: slot: internal error: a bug");

  CHECK(plugin::guarded("slot", []() -> porta_status_t { throw 42; }) == PORTA_ERROR_INTERNAL);
  CHECK(g_message.find("kit: slot: internal error") == 0);
}

TEST_CASE("plugin kit: the state behind the context, and the sized properties copy") {
  enter_as_backend();
  using Slots = plugin::PluginState<State>;
  porta_backend_context_t context = nullptr;
  int32_t devices = 0;
  REQUIRE(Slots::initialize(&context, &devices, [] { return std::make_unique<State>(); }) ==
          PORTA_SUCCESS);
  CHECK(devices == 2);
  CHECK(State::live == 1);

  // A caller whose struct ends before compute_units gets nothing past it.
  porta_device_properties_t out;
  std::memset(&out, 0xAB, sizeof(out));
  out.struct_size = offsetof(porta_device_properties_t, compute_units);
  REQUIRE(Slots::device_properties(context, 0, &out) == PORTA_SUCCESS);
  CHECK(out.struct_size == offsetof(porta_device_properties_t, compute_units));
  CHECK(std::string(out.name) == "kit device");
  unsigned char rest[sizeof(out.compute_units)];
  std::memset(rest, 0xAB, sizeof(rest));
  CHECK(std::memcmp(&out.compute_units, rest, sizeof(rest)) == 0);

  out.struct_size = sizeof(out);
  REQUIRE(Slots::device_properties(context, 0, &out) == PORTA_SUCCESS);
  CHECK(out.compute_units == 7);
  CHECK(out.capabilities == 0x55u);
  CHECK(Slots::device_properties(context, 1, &out) == PORTA_ERROR_NOT_FOUND);
  CHECK(g_message == "no device 1");

  // What make() throws is initialize's status, and nothing is handed out.
  porta_backend_context_t failed = nullptr;
  CHECK(Slots::initialize(&failed, &devices, []() -> std::unique_ptr<State> {
          plugin::throw_error(PORTA_ERROR_UNAVAILABLE, "no driver");
        }) == PORTA_ERROR_UNAVAILABLE);
  CHECK(failed == nullptr);

  Slots::shutdown(context);
  CHECK(State::live == 0);
}

TEST_CASE("plugin kit: an op plugin passes porta::error on, and names the op first") {
  porta_plugin_t plugin{};
  plugin.struct_size = sizeof(plugin);
  const porta_ops_interface_t no_ops = {};
  REQUIRE(plugin::enter_ops(&kHost, &plugin,
                            {.kind = PORTA_PLUGIN_KIND_OPS,
                             .name = "kit_ops",
                             .version = "1",
                             .backend = nullptr,
                             .ops = &no_ops,
                             .name_in_errors = false}) == PORTA_SUCCESS);
  CHECK(plugin::guarded("porta_gemm", [] {
          throw porta::error(PORTA_ERROR_INVALID_HANDLE, "stream 0x1 is not a live stream");
        }) == PORTA_ERROR_INVALID_HANDLE);
  CHECK(g_message == "porta_gemm: stream 0x1 is not a live stream");
  CHECK(plugin::guarded("porta_gemm", [] {
          plugin::throw_error(PORTA_ERROR_UNSUPPORTED, "f64");
        }) == PORTA_ERROR_UNSUPPORTED);
  CHECK(g_message == "porta_gemm: f64");
  CHECK(plugin::guarded("porta_gemm", [] { throw std::runtime_error("oops"); }) ==
        PORTA_ERROR_INTERNAL);
  CHECK(g_message == "porta_gemm: internal error: oops");
}

// Every shared object glibc has loaded into this process, and every one in the system's library
// directory (up to 16 MiB each), is well formed: the check before dlopen must accept them all.
// Real linkers' output holds what malformed-image tests do not: symbols that end the object
// (_end), undefined symbols outside DT_GNU_HASH's reach, TLS descriptors of the object's own block.
TEST_CASE("elf check: the shared objects of this system pass", "[elf]") {
  std::vector<std::string> paths;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        if (info->dlpi_name && info->dlpi_name[0] == '/') {
          static_cast<std::vector<std::string>*>(out)->push_back(info->dlpi_name);
        }
        return 0;
      },
      &paths);
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator("/usr/lib/" PORTA_TEST_MULTIARCH, error)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(error) && name.find(".so.") != std::string::npos &&
        entry.file_size(error) <= (size_t{16} << 20)) {
      paths.push_back(entry.path().string());
    }
  }
  CHECK(paths.size() > 3);
  size_t checked = 0;
  for (const std::string& path : paths) {
    std::ifstream file(path, std::ios::binary | std::ios::ate);
    std::string image(static_cast<size_t>(std::max<std::streamoff>(file.tellg(), 0)), '\0');
    file.seekg(0).read(image.data(), static_cast<std::streamsize>(image.size()));
    if (image.compare(0, SELFMAG, ELFMAG) != 0) continue;  // a linker script
    const auto problem = porta::elf::check_shared_object(image.data(), image.size());
    INFO(path << ": " << (problem ? problem->message : "accepted"));
    CHECK(!problem);
    ++checked;
  }
  WARN(checked << " shared objects checked");
}
