// porta-loader-tests: the loader against broken plugins and bad settings.
//
// Each broken plugin (tests/loader/plugins) is copied into a fresh directory as
// libporta_level_zero.so and named by porta_init_options_t.plugin_path; the test checks
// porta_init's exact status, the loader report's row, the failure message, and that the failure
// stays until porta_shutdown. Every test starts and ends shut down, with PORTA_* cleared from the
// environment by main(), so no setting leaks from one test (or from the caller) into another.
#define CATCH_CONFIG_RUNNER
#include <dlfcn.h>
#include <elf.h>
#include <porta/porta.h>
#include <porta/porta_plugin.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>

#include "../conformance/common.h"
#include "../elf_image.h"

using namespace porta_test;

namespace {

const char* const kVariables[] = {"PORTA_BACKEND", "PORTA_DEVICE", "PORTA_PLUGIN_PATH", "PORTA_LOG",
                                  "PORTA_VENDOR_LIBRARY"};

// Shuts Porta down before and after a test, so each starts uninitialised.
struct Fresh {
  Fresh() { porta_shutdown(); }
  ~Fresh() { porta_shutdown(); }
};

// Sets an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

porta_init_options_t options(const char* backend, const char* plugin_path = nullptr,
                             const char* device = nullptr, const char* log_level = nullptr) {
  porta_init_options_t o;
  std::memset(&o, 0, sizeof(o));
  o.struct_size = sizeof(o);
  o.backend = backend;
  o.plugin_path = plugin_path;
  o.device = device;
  o.log_level = log_level;
  return o;
}

std::vector<porta_plugin_report_t> report() {
  size_t count = 0;
  PT_REQUIRE_OK(porta_loader_report_count(&count));
  std::vector<porta_plugin_report_t> rows(count);
  for (size_t i = 0; i < count; ++i) {
    std::memset(&rows[i], 0, sizeof(rows[i]));
    rows[i].struct_size = sizeof(rows[i]);
    PT_REQUIRE_OK(porta_loader_report_get(i, &rows[i]));
  }
  return rows;
}

porta_plugin_report_t row_of(const std::string& name) {
  for (const porta_plugin_report_t& row : report()) {
    if (row.name == name) return row;
  }
  FAIL("no loader report row for " << name);
  return {};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A broken plugin, installed in a fresh directory under a backend's file name: a copy of source,
// or whatever make puts at that name.
struct Installed {
  TempDir dir;
  std::string file;
  Installed(const char* source, const std::string& backend = "level_zero")
      : Installed(backend, [&](const std::string& to) { std::filesystem::copy_file(source, to); }) {
  }
  Installed(const std::string& backend, const std::function<void(const std::string&)>& make) {
    file = dir.path() + "/libporta_" + backend + ".so";
    make(file);
  }
};

struct Broken {
  const char* name;
  const char* source;  // the built plugin; nullptr: a text file written at test time
  porta_status_t init_status;
  porta_plugin_outcome_t outcome;
  std::vector<std::string> reason_mentions;
};

const Broken kBroken[] = {
    {"no entry symbol",
     PORTA_TEST_PLUGIN_NO_ENTRY,
     PORTA_ERROR_INCOMPATIBLE_VERSION,
     PORTA_PLUGIN_NO_ENTRY,
     {"porta_plugin_entry"}},
    {"another ABI major",
     PORTA_TEST_PLUGIN_WRONG_ABI,
     PORTA_ERROR_INCOMPATIBLE_VERSION,
     PORTA_PLUGIN_INCOMPATIBLE,
     {"ABI", std::to_string(PORTA_PLUGIN_ABI_MAJOR + 1)}},
    {"entry returns an error",
     PORTA_TEST_PLUGIN_ENTRY_ERROR,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_INIT_FAILED,
     {"entry refused by the test plugin"}},
    {"entry returns no status",
     PORTA_TEST_PLUGIN_ENTRY_UNDEFINED,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_INIT_FAILED,
     {"returned 7, which is no porta_status_t value"}},
    {"entry is data",
     PORTA_TEST_PLUGIN_ENTRY_IS_DATA,
     PORTA_ERROR_INCOMPATIBLE_VERSION,
     PORTA_PLUGIN_NO_ENTRY,
     {"porta_plugin_entry is not a function"}},
    {"entry throws",
     PORTA_TEST_PLUGIN_ENTRY_THROWS,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_INIT_FAILED,
     {"porta_plugin_entry: internal error", "threw on purpose"}},
    {"initialize finds no device",
     PORTA_TEST_PLUGIN_INIT_UNAVAILABLE,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_UNAVAILABLE,
     {"no test device here"}},
    {"initialize answers NOT_READY",
     PORTA_TEST_PLUGIN_INIT_NOT_READY,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_INIT_FAILED,
     {"initialize returned PORTA_NOT_READY"}},
    {"name does not match the file",
     PORTA_TEST_PLUGIN_NAME_MISMATCH,
     PORTA_ERROR_INCOMPATIBLE_VERSION,
     PORTA_PLUGIN_INCOMPATIBLE,
     {"cuda", "level_zero"}},
    // Loaded and initialised, but its devices cannot be opened: the backend is left out whole.
    {"device properties fail",
     PORTA_TEST_PLUGIN_DEVICE_PROPERTIES,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_INIT_FAILED,
     {"properties refused in the test plugin"}},
    {"a default stream is refused",
     PORTA_TEST_PLUGIN_DEFAULT_STREAM,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_INIT_FAILED,
     {"stream refused in the test plugin"}},
    {"an implausible device count",
     PORTA_TEST_PLUGIN_DEVICE_COUNT,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_INIT_FAILED,
     {"2147483647 devices"}},
    {"not an ELF file", nullptr, PORTA_ERROR_UNAVAILABLE, PORTA_PLUGIN_LOAD_FAILED, {}},
    // Opening a FIFO waits for a writer, which never comes.
    {"a FIFO", nullptr, PORTA_ERROR_UNAVAILABLE, PORTA_PLUGIN_LOAD_FAILED, {"not a regular file"}},
    // There, but broken: reported, not passed over for a plugin further down the path.
    {"a link to nothing",
     nullptr,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_LOAD_FAILED,
     {"cannot open the file", "No such file or directory"}},
    // 4 GiB with no data: refused by its size, before it is read.
    {"a file too large for a plugin",
     nullptr,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_LOAD_FAILED,
     {"4294967296 bytes, more than the"}},
    // Half of a real plugin: dlopen would map segments past the file's end (SIGBUS).
    {"a truncated ELF file",
     nullptr,
     PORTA_ERROR_UNAVAILABLE,
     PORTA_PLUGIN_LOAD_FAILED,
     {"truncated ELF file"}},
};

const Broken& broken_named(const std::string& name) {
  const auto found = std::find_if(std::begin(kBroken), std::end(kBroken),
                                  [&](const Broken& broken) { return broken.name == name; });
  REQUIRE(found != std::end(kBroken));
  return *found;
}

std::unique_ptr<Installed> install(const Broken& broken, const std::string& backend) {
  if (broken.source) return std::make_unique<Installed>(broken.source, backend);
  const std::string name = broken.name;
  if (name == "a FIFO") {
    return std::make_unique<Installed>(
        backend, [](const std::string& file) { REQUIRE(mkfifo(file.c_str(), 0600) == 0); });
  }
  if (name == "a link to nothing") {
    return std::make_unique<Installed>(backend, [](const std::string& file) {
      std::filesystem::create_symlink(file + ".gone", file);
    });
  }
  if (name == "a file too large for a plugin") {
    return std::make_unique<Installed>(backend, [](const std::string& file) {
      std::ofstream(file).close();
      std::filesystem::resize_file(file, uintmax_t{4} << 30);
    });
  }
  if (std::string(broken.name) == "a truncated ELF file") {
    // Cut in the middle of the loadable segment that ends last (what follows it, symbol tables
    // and debug information, dlopen never maps).
    std::ifstream plugin(PORTA_TEST_PLUGIN_NO_ENTRY, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(plugin)),
                            std::istreambuf_iterator<char>());
    REQUIRE(bytes.size() > sizeof(Elf64_Ehdr));
    Elf64_Ehdr header;
    std::memcpy(&header, bytes.data(), sizeof header);
    size_t cut = 0;
    for (int i = 0; i < header.e_phnum; ++i) {
      Elf64_Phdr segment;
      std::memcpy(&segment, bytes.data() + header.e_phoff + i * sizeof segment, sizeof segment);
      if (segment.p_type == PT_LOAD && segment.p_filesz > 0) {
        cut = std::max<size_t>(cut, segment.p_offset + segment.p_filesz / 2);
      }
    }
    REQUIRE(cut > 0);
    TempDir scratch;
    const std::string truncated = scratch.write("plugin.so", bytes.data(), cut);
    return std::make_unique<Installed>(truncated.c_str(), backend);
  }
  // Longer than an ELF header, so dlopen reads it and rejects its contents.
  static const char kText[] =
      "This is a text file named like a Porta plugin. It is not an ELF shared object, and "
      "dlopen must refuse it with a reason.\n";
  TempDir scratch;
  const std::string text = scratch.write("plugin.txt", kText, sizeof(kText) - 1);
  return std::make_unique<Installed>(text.c_str(), backend);
}

}  // namespace

TEST_CASE("loader: each broken plugin fails init with its exact status and reason", "[loader]") {
  for (const Broken& broken : kBroken) {
    Fresh fresh;
    INFO("plugin: " << broken.name);
    const auto installed = install(broken, "level_zero");
    const porta_init_options_t o = options("level_zero", installed->dir.path().c_str());

    const CallResult init = call_on_fresh_thread([&] { return porta_init(&o); });
    INFO("porta_init -> " << porta_status_name(init.status) << ": " << init.message);
    CHECK(Status{init.status} == Status{broken.init_status});

    const porta_plugin_report_t row = row_of("level_zero");
    INFO("row: outcome " << row.outcome << ", status " << porta_status_name(row.status)
                         << ", path '" << row.path << "', reason '" << row.reason << "'");
    CHECK(row.outcome == broken.outcome);
    CHECK(row.status < 0);
    CHECK(std::string(row.path) == installed->file);
    CHECK(std::string(row.reason).size() > 0);
    for (const std::string& mention : broken.reason_mentions) {
      CHECK(contains(row.reason, mention));
    }
    if (broken.outcome == PORTA_PLUGIN_INCOMPATIBLE && broken.reason_mentions[0] == "ABI") {
      CHECK(row.abi_major == PORTA_PLUGIN_ABI_MAJOR + 1);
      CHECK(row.abi_minor == 3u);
    }
    if (broken.outcome == PORTA_PLUGIN_UNAVAILABLE) {
      CHECK(Status{row.status} == Status{PORTA_ERROR_UNAVAILABLE});
    }
    if (std::string(broken.name) == "entry throws" ||
        std::string(broken.name) == "entry returns no status" ||
        std::string(broken.name) == "initialize answers NOT_READY") {
      // What foreign code throws, or an answer that is no error, is a bug there, not a driver's
      // failure.
      CHECK(Status{row.status} == Status{PORTA_ERROR_INTERNAL});
    }
    CHECK(row.device_count == 0);
    // The failure message says, per plugin, the path tried and why it failed.
    CHECK(contains(init.message, "level_zero"));
    CHECK(contains(init.message, installed->file));
    CHECK(contains(init.message, row.reason));

    // Sticky until shutdown: another init (even a good one) and every call report it.
    const porta_init_options_t good = options("cpu");
    PT_CHECK_FAILS(broken.init_status, porta_init(&good));
    int32_t count = -1;
    PT_CHECK_FAILS(broken.init_status, porta_device_count(&count));
    CHECK(count == -1);
    // The other backends were not requested.
    CHECK(row_of("cpu").outcome == PORTA_PLUGIN_NOT_REQUESTED);
  }
}

#ifdef PORTA_TEST_CPU_PLUGIN
TEST_CASE("loader: a plugin with malformed loader tables is refused with the reason", "[loader]") {
  // Each of these made glibc's loader assert (ending the process) or fault inside porta_init.
  const ElfImage original(PORTA_TEST_CPU_PLUGIN);
  const uint64_t relocations = original.tag(DT_RELASZ) / sizeof(Elf64_Rela);
  const size_t versym = original.table(DT_VERSYM);
  struct Damage {
    const char* what;
    std::function<void(ElfImage&)> apply;
    const char* reason;
  };
  const Damage damages[] = {
      {"DT_RELAENT not the size of a relocation",
       [](ElfImage& bad) { bad.put<uint64_t>(bad.tags.at(DT_RELAENT), 23); },
       "DT_RELAENT is 23, not 24"},
      {"DT_RELACOUNT beyond the table",
       [](ElfImage& bad) { bad.put<uint64_t>(bad.tags.at(DT_RELACOUNT), 0xfffff); },
       "DT_RELACOUNT 1048575 is beyond the table"},
      {"DT_RELACOUNT over a relocation that is not relative",
       [&](ElfImage& bad) { bad.put<uint64_t>(bad.tags.at(DT_RELACOUNT), relocations); },
       "within DT_RELACOUNT but not relative"},
      {"a symbol's version that no version table defines",
       [&](ElfImage& bad) { bad.put<uint16_t>(versym + 2, 0x7fff); },
       "symbol 1's version 32767 is not defined"},
      {"the version needs running past DT_VERNEEDNUM",
       [](ElfImage& bad) { bad.put<uint64_t>(bad.tags.at(DT_VERNEEDNUM), 1); },
       "the version needs run past DT_VERNEEDNUM"},
      {"PT_GNU_RELRO outside the loadable segments",
       [](ElfImage& bad) {
         bad.put<uint64_t>(bad.segment(PT_GNU_RELRO) + offsetof(Elf64_Phdr, p_vaddr),
                           uint64_t{1} << 40);
       },
       "PT_GNU_RELRO does not lie in a loadable segment"},
  };
  for (const Damage& damage : damages) {
    INFO(damage.what);
    ElfImage bad = original;
    damage.apply(bad);
    TempDir scratch;
    const std::string file = scratch.write("plugin.so", bad.bytes.data(), bad.bytes.size());
    Fresh fresh;
    const Installed installed(file.c_str(), "cpu");
    const porta_init_options_t o = options("cpu", installed.dir.path().c_str());
    const CallResult init = call_on_fresh_thread([&] { return porta_init(&o); });
    INFO("porta_init -> " << porta_status_name(init.status) << ": " << init.message);
    CHECK(Status{init.status} == Status{PORTA_ERROR_UNAVAILABLE});
    const porta_plugin_report_t row = row_of("cpu");
    INFO("reason '" << row.reason << "'");
    CHECK(row.outcome == PORTA_PLUGIN_LOAD_FAILED);
    CHECK(contains(row.reason, "malformed ELF"));
    CHECK(contains(row.reason, damage.reason));
  }
}
#endif

TEST_CASE("loader: a broken plugin in a list is skipped for the next backend", "[loader]") {
  for (const Broken& broken : kBroken) {
    Fresh fresh;
    INFO("plugin: " << broken.name);
    const auto installed = install(broken, "level_zero");
    const porta_init_options_t o = options("level_zero,cpu", installed->dir.path().c_str());
    PT_REQUIRE_OK(porta_init(&o));
    const char* selected = nullptr;
    PT_REQUIRE_OK(porta_backend_selected(&selected));
    CHECK(std::string(selected) == "cpu");
    int32_t count = 0;
    PT_REQUIRE_OK(porta_device_count(&count));
    CHECK(count >= 1);

    // Rows in the order tried: level_zero, then cpu.
    const std::vector<porta_plugin_report_t> rows = report();
    REQUIRE(rows.size() >= 2);
    CHECK(std::string(rows[0].name) == "level_zero");
    CHECK(rows[0].outcome == broken.outcome);
    CHECK(std::string(rows[0].path) == installed->file);
    CHECK(std::string(rows[1].name) == "cpu");
    CHECK(rows[1].outcome == PORTA_PLUGIN_LOADED);
    CHECK(rows[1].device_count == count);
    CHECK(std::string(rows[1].reason).empty());
  }
}

TEST_CASE("loader: a plugin's unended strings and undefined statuses stop at libporta",
          "[loader]") {
  Fresh fresh;
  Installed installed(PORTA_TEST_PLUGIN_ODD_ANSWERS, "level_zero");
  const porta_init_options_t o = options("level_zero", installed.dir.path().c_str());
  PT_REQUIRE_OK(porta_init(&o));
  // Its version string has no end: what was read of it fills the row's field.
  CHECK(std::strlen(row_of("level_zero").version) == sizeof(porta_plugin_report_t::version) - 1);
  porta_device_properties_t p{};
  p.struct_size = sizeof(p);
  PT_REQUIRE_OK(porta_device_properties(0, &p));
  CHECK(std::strlen(p.name) == sizeof(p.name) - 1);
  CHECK(std::strlen(p.architecture) == sizeof(p.architecture) - 1);
  CHECK(std::string(p.backend) == "level_zero");
  // memory_alloc answers 7, which porta.h does not define.
  void* memory = nullptr;
  const CallResult alloc = call_on_fresh_thread([&] { return porta_memory_alloc(0, 64, &memory); });
  CHECK(Status{alloc.status} == Status{PORTA_ERROR_INTERNAL});
  CHECK(contains(alloc.message, "the level_zero backend returned 7"));
  CHECK(memory == nullptr);
}

TEST_CASE("loader: a plugin calling Porta from its initialize or shutdown is refused", "[loader]") {
  Fresh fresh;
  unsetenv("PORTA_TEST_CALLED_AT_SHUTDOWN");
  Installed installed(PORTA_TEST_PLUGIN_CALLS_PORTA, "level_zero");
  const porta_init_options_t o = options("level_zero", installed.dir.path().c_str());
  // Its initialize fails, naming the call, unless each was refused as UNAVAILABLE.
  const CallResult init = call_on_fresh_thread([&] { return porta_init(&o); });
  INFO(init.message);
  REQUIRE(Status{init.status} == Status{PORTA_SUCCESS});
  int32_t count = 0;
  PT_REQUIRE_OK(porta_device_count(&count));
  CHECK(count == 1);
  PT_REQUIRE_OK(porta_shutdown());
  const char* at_shutdown = std::getenv("PORTA_TEST_CALLED_AT_SHUTDOWN");
  REQUIRE(at_shutdown != nullptr);
  CHECK(std::string(at_shutdown) == std::to_string(PORTA_ERROR_UNAVAILABLE));
  unsetenv("PORTA_TEST_CALLED_AT_SHUTDOWN");
}

TEST_CASE("loader: PORTA_PLUGIN_PATH is a colon-separated list searched in order", "[loader]") {
  Fresh fresh;
  TempDir empty;
  const auto installed = install(broken_named("initialize finds no device"), "level_zero");
  const std::string path = empty.path() + ":" + installed->dir.path();
  const porta_init_options_t o = options("level_zero", path.c_str());
  PT_CHECK_FAILS(PORTA_ERROR_UNAVAILABLE, porta_init(&o));
  const porta_plugin_report_t row = row_of("level_zero");
  CHECK(row.outcome == PORTA_PLUGIN_UNAVAILABLE);
  CHECK(std::string(row.path) == installed->file);
}

TEST_CASE("loader: a real backend with no plugin or driver here", "[loader]") {
  // cuda through the options, hip through the environment.
  for (const char* backend : {"cuda", "hip"}) {
    Fresh fresh;
    INFO("backend " << backend);
    TempDir empty;
    CallResult init;
    if (std::string(backend) == "cuda") {
      const porta_init_options_t o = options(backend, empty.path().c_str());
      init = call_on_fresh_thread([&] { return porta_init(&o); });
    } else {
      ScopedEnv env_backend("PORTA_BACKEND", backend);
      ScopedEnv env_path("PORTA_PLUGIN_PATH", empty.path().c_str());
      init = call_on_fresh_thread([&] { return porta_init(nullptr); });
    }
    INFO("porta_init -> " << porta_status_name(init.status) << ": " << init.message);
    const porta_plugin_report_t row = row_of(backend);
    INFO("row: outcome " << row.outcome << ", path '" << row.path << "', reason '" << row.reason
                         << "'");
    if (row.outcome == PORTA_PLUGIN_LOADED) {
      WARN(backend << " is really usable on this machine; nothing to check");
      continue;
    }
    // Named alone and unusable: an error, never a silent fallback to another backend.
    CHECK(Status{init.status} == Status{PORTA_ERROR_UNAVAILABLE});
    CHECK((row.outcome == PORTA_PLUGIN_NOT_FOUND || row.outcome == PORTA_PLUGIN_UNAVAILABLE));
    CHECK(row.status < 0);
    CHECK(std::string(row.reason).size() > 0);
    if (row.outcome == PORTA_PLUGIN_NOT_FOUND) {
      // The path names the directories searched, the given one first.
      CHECK(std::string(row.path).rfind(empty.path(), 0) == 0);
      CHECK(Status{row.status} == Status{PORTA_ERROR_NOT_FOUND});
    }
    CHECK(contains(init.message, backend));
    CHECK(contains(init.message, row.path));
    CHECK(contains(init.message, row.reason));
    for (const char* other : {"cpu", "level_zero"}) {
      CHECK(row_of(other).outcome == PORTA_PLUGIN_NOT_REQUESTED);
    }
  }
}

TEST_CASE("loader: bad settings are refused with the accepted values", "[loader]") {
  SECTION("PORTA_BACKEND=nonsense (environment)") {
    Fresh fresh;
    ScopedEnv env("PORTA_BACKEND", "nonsense");
    const CallResult init = call_on_fresh_thread([] { return porta_init(nullptr); });
    INFO(init.message);
    CHECK(Status{init.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    for (const char* accepted : {"nonsense", "cpu", "cuda", "hip", "level_zero", "auto"}) {
      CHECK(contains(init.message, accepted));
    }
    // The report stays readable after a failed initialisation.
    size_t rows = 0;
    PT_CHECK_OK(porta_loader_report_count(&rows));
  }
  SECTION("a bad name in a list (options)") {
    Fresh fresh;
    const porta_init_options_t o = options("cpu,metal");
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_init(&o));
  }
  SECTION("PORTA_DEVICE") {
    for (const char* device : {"abc", "99", "-1", "1x", "0.5"}) {
      Fresh fresh;
      INFO("device '" << device << "'");
      const porta_init_options_t o = options("cpu", nullptr, device);
      PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_init(&o));
    }
    Fresh fresh;
    const porta_init_options_t o = options("cpu", nullptr, "0");
    PT_CHECK_OK(porta_init(&o));
    porta_device_t device = -1;
    PT_CHECK_OK(porta_device_default(&device));
    CHECK(device == 0);
  }
  SECTION("PORTA_LOG=loud (environment)") {
    Fresh fresh;
    ScopedEnv env_log("PORTA_LOG", "loud");
    const porta_init_options_t o = options("cpu");
    const CallResult init = call_on_fresh_thread([&] { return porta_init(&o); });
    INFO(init.message);
    CHECK(Status{init.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    for (const char* level : {"loud", "off", "error", "warn", "info", "debug", "trace"}) {
      CHECK(contains(init.message, level));
    }
  }
  SECTION("a log level given in the options overrides the environment") {
    Fresh fresh;
    ScopedEnv env_log("PORTA_LOG", "loud");
    const porta_init_options_t o = options("cpu", nullptr, nullptr, "off");
    PT_CHECK_OK(porta_init(&o));
  }
  SECTION("PORTA_PLUGIN_PATH naming a missing directory") {
    Fresh fresh;
    const std::string missing = TempDir().path() + "/gone";  // TempDir removed at once
    const porta_init_options_t o = options("cpu", missing.c_str());
    const CallResult init = call_on_fresh_thread([&] { return porta_init(&o); });
    INFO(init.message);
    CHECK(Status{init.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    CHECK(contains(init.message, missing));
  }
  SECTION("PORTA_PLUGIN_PATH naming a relative directory") {
    // "." would load ./libporta_cpu.so from wherever the program runs.
    TempDir absolute;
    for (const std::string& path :
         {std::string("."), std::string("lib"), absolute.path() + ":relative/dir"}) {
      const std::string relative = path.find(':') == std::string::npos ? path : "relative/dir";
      INFO("PORTA_PLUGIN_PATH=" << path);
      {
        Fresh fresh;
        ScopedEnv env_path("PORTA_PLUGIN_PATH", path.c_str());
        const porta_init_options_t o = options("cpu");
        const CallResult init = call_on_fresh_thread([&] { return porta_init(&o); });
        INFO(init.message);
        CHECK(Status{init.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
        CHECK(contains(init.message, "PORTA_PLUGIN_PATH"));
        CHECK(contains(init.message, "'" + relative + "' is not an absolute path"));
      }
      {
        Fresh fresh;
        const porta_init_options_t o = options("cpu", path.c_str());
        const CallResult init = call_on_fresh_thread([&] { return porta_init(&o); });
        INFO(init.message);
        CHECK(Status{init.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
        CHECK(contains(init.message, "options.plugin_path"));
        CHECK(contains(init.message, "'" + relative + "' is not an absolute path"));
      }
    }
  }
  SECTION("an options struct_size smaller than the first release's") {
    Fresh fresh;
    porta_init_options_t o = options("cpu");
    o.struct_size = sizeof(size_t);
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_init(&o));
    o.struct_size = PORTA_INIT_OPTIONS_MIN_SIZE - 1;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_init(&o));
  }
  SECTION("options of a caller of the first release: nothing past its struct is read") {
    Fresh fresh;
    const porta_init_options_t full = options("cpu", nullptr, nullptr, "off");
    // Exactly the first release's bytes, so that the sanitized build catches a read past them.
    std::unique_ptr<unsigned char[]> old(new unsigned char[PORTA_INIT_OPTIONS_MIN_SIZE]);
    std::memcpy(old.get(), &full, PORTA_INIT_OPTIONS_MIN_SIZE);
    const size_t size = PORTA_INIT_OPTIONS_MIN_SIZE;
    std::memcpy(old.get(), &size, sizeof(size));
    PT_REQUIRE_OK(porta_init(reinterpret_cast<const porta_init_options_t*>(old.get())));
    const char* backend = nullptr;
    PT_REQUIRE_OK(porta_backend_selected(&backend));
    CHECK(std::string(backend) == "cpu");
  }
  SECTION("options of a caller of a later release: the appended field is not read") {
    Fresh fresh;
    struct {
      porta_init_options_t known;
      const char* appended;
    } newer;
    newer.known = options("cpu");
    newer.known.struct_size = sizeof(newer);
    newer.appended = "a setting of a later release";
    PT_REQUIRE_OK(porta_init(&newer.known));
    const char* backend = nullptr;
    PT_REQUIRE_OK(porta_backend_selected(&backend));
    CHECK(std::string(backend) == "cpu");
  }
}

TEST_CASE("loader: an init failure is kept until porta_shutdown", "[loader]") {
  Fresh fresh;
  const porta_init_options_t bad = options("nonsense");
  const porta_init_options_t good = options("cpu");
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_init(&bad));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_init(&good));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_init(nullptr));
  int32_t count = -1;
  const char* name = nullptr;
  void* ptr = nullptr;
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_count(&count));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_backend_selected(&name));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_alloc(0, 64, &ptr));
  CHECK(count == -1);
  CHECK(name == nullptr);
  CHECK(ptr == nullptr);
  PT_CHECK_OK(porta_shutdown());
  PT_CHECK_OK(porta_init(&good));
  PT_CHECK_OK(porta_device_count(&count));
  CHECK(count >= 1);
}

TEST_CASE("loader: init is idempotent and ignores later options", "[loader]") {
  Fresh fresh;
  const porta_init_options_t cpu = options("cpu");
  const porta_init_options_t bad = options("nonsense", nullptr, "abc", "loud");
  PT_REQUIRE_OK(porta_init(&cpu));
  PT_CHECK_OK(porta_init(&cpu));
  PT_CHECK_OK(porta_init(&bad));
  PT_CHECK_OK(porta_init(nullptr));
  const char* name = nullptr;
  PT_REQUIRE_OK(porta_backend_selected(&name));
  CHECK(std::string(name) == "cpu");
  // Shutdown is always SUCCESS, even repeated.
  PT_CHECK_OK(porta_shutdown());
  PT_CHECK_OK(porta_shutdown());
}

TEST_CASE("loader: the first call initialises from the environment", "[loader]") {
  SECTION("successfully") {
    Fresh fresh;
    ScopedEnv env("PORTA_BACKEND", "cpu");
    int32_t count = 0;
    PT_REQUIRE_OK(porta_device_count(&count));
    CHECK(count >= 1);
    const char* name = nullptr;
    PT_REQUIRE_OK(porta_backend_selected(&name));
    CHECK(std::string(name) == "cpu");
  }
  SECTION("returning the initialisation's error") {
    Fresh fresh;
    ScopedEnv env("PORTA_BACKEND", "nonsense");
    int32_t count = -1;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_device_count(&count));
    CHECK(count == -1);
  }
}

TEST_CASE("loader: auto picks the first usable backend in report order", "[loader]") {
  Fresh fresh;
  const porta_init_options_t o = options("auto");
  PT_REQUIRE_OK(porta_init(&o));
  const char* selected = nullptr;
  PT_REQUIRE_OK(porta_backend_selected(&selected));
  const std::vector<porta_plugin_report_t> rows = report();
  std::vector<std::string> names;
  std::string first_loaded;
  for (const porta_plugin_report_t& row : rows) {
    if (row.kind != PORTA_PLUGIN_KIND_BACKEND) continue;
    // auto requests every backend but OpenCL, which is used only when named (docs/decisions.md);
    // its row comes after the requested ones.
    if (std::string(row.name) == "opencl") {
      CHECK(row.outcome == PORTA_PLUGIN_NOT_REQUESTED);
      continue;
    }
    names.emplace_back(row.name);
    CHECK(row.outcome != PORTA_PLUGIN_NOT_REQUESTED);
    if (first_loaded.empty() && row.outcome == PORTA_PLUGIN_LOADED) first_loaded = row.name;
  }
  CHECK(std::string(selected) == first_loaded);
  for (const char* name : {"cpu", "cuda", "hip", "level_zero"}) {
    CHECK(std::count(names.begin(), names.end(), name) == 1);
  }
  // GPUs are preferred: cpu is tried last.
  REQUIRE_FALSE(names.empty());
  CHECK(names.back() == "cpu");
}

TEST_CASE("loader: after shutdown every old handle is stale", "[loader]") {
  Fresh fresh;
  const porta_init_options_t o = options("cpu");
  PT_REQUIRE_OK(porta_init(&o));
  porta_stream_t stream = nullptr;
  porta_event_t event = nullptr;
  porta_module_t module = nullptr;
  porta_kernel_t kernel = nullptr;
  void* memory = nullptr;
  void* pinned = nullptr;
  PT_REQUIRE_OK(porta_stream_create(0, &stream));
  PT_REQUIRE_OK(porta_event_create(0, &event));
  PT_REQUIRE_OK(porta_memory_alloc(0, 1024, &memory));
  PT_REQUIRE_OK(porta_host_alloc(0, 1024, &pinned));
  PT_REQUIRE_OK(porta_module_load(0, PORTA_TEST_KERNELS_CPU, &module));
  PT_REQUIRE_OK(porta_kernel_get(module, "noop", &kernel));
  porta_stream_t old_default = nullptr;
  PT_REQUIRE_OK(porta_stream_default(0, &old_default));

  PT_REQUIRE_OK(porta_shutdown());
  PT_REQUIRE_OK(porta_init(&o));
  // New objects, possibly in the same slots, must not revive the old handles.
  Stream new_stream(0);
  Event new_event(0);
  Module new_module(0);
  porta_stream_t new_default = nullptr;
  PT_REQUIRE_OK(porta_stream_default(0, &new_default));
  CHECK(new_stream.get() != stream);
  CHECK(new_event.get() != event);
  CHECK(new_module.get() != module);
  CHECK(new_default != old_default);

  const porta_launch_config_t config = launch_config({1, 1, 1}, {1, 1, 1});
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_query(stream));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_destroy(stream));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_stream_query(old_default));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_query(event));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_event_destroy(event));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE, porta_module_unload(module));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_HANDLE,
                 porta_kernel_launch(kernel, &config, nullptr, new_stream.get()));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_memory_free(memory));
  PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_host_free(pinned));
  porta_pointer_info_t info;
  info.struct_size = sizeof(info);
  PT_REQUIRE_OK(porta_pointer_info(memory, &info));
  CHECK(info.kind == PORTA_MEMORY_UNKNOWN);
  // The new ones work.
  PT_CHECK_STATUS(PORTA_SUCCESS, porta_stream_query(new_stream.get()));
  PT_CHECK_STATUS(PORTA_SUCCESS, porta_event_query(new_event.get()));
  porta_kernel_t new_kernel = new_module.kernel("noop");
  PT_CHECK_OK(porta_kernel_launch(new_kernel, &config, nullptr, new_stream.get()));
  PT_CHECK_OK(porta_stream_synchronize(new_stream.get()));
}

TEST_CASE("loader: report rows carry versions and op lists, within the caller's struct_size",
          "[loader]") {
  Fresh fresh;
  const porta_init_options_t o = options("cpu");
  PT_REQUIRE_OK(porta_init(&o));
  const porta_plugin_report_t cpu = row_of("cpu");
  CHECK(std::string(cpu.version).find("porta-cpu") == 0);
  CHECK(std::string(cpu.ops).empty());  // a backend implements no ops

  size_t count = 0;
  PT_REQUIRE_OK(porta_loader_report_count(&count));
  bool portable_seen = false;
  for (size_t i = 0; i < count; ++i) {
    porta_plugin_report_t row;
    std::memset(&row, 0, sizeof(row));
    row.struct_size = sizeof(row);
    PT_REQUIRE_OK(porta_loader_report_get(i, &row));
    if (std::string(row.name) != "portable" || row.outcome != PORTA_PLUGIN_LOADED) continue;
    portable_seen = true;
    // The portable plugin implements every op, listed in the table's order.
#define PORTA_TEST_OP_NAME_(name, fields) "," #name
    CHECK("," + std::string(row.ops) == PORTA_OP_TABLE(PORTA_TEST_OP_NAME_));
#undef PORTA_TEST_OP_NAME_

    // A caller built against the first release passes a shorter struct: nothing past it is
    // written.
    constexpr size_t kFirstSize = PORTA_PLUGIN_REPORT_MIN_SIZE;
    porta_plugin_report_t old;
    std::memset(&old, 0x5A, sizeof(old));
    old.struct_size = kFirstSize;
    PT_REQUIRE_OK(porta_loader_report_get(i, &old));
    CHECK(std::string(old.name) == "portable");
    CHECK(old.kind == PORTA_PLUGIN_KIND_OPS);
    const auto* tail = reinterpret_cast<const unsigned char*>(&old) + kFirstSize;
    CHECK(std::all_of(tail, tail + (sizeof(old) - kFirstSize),
                      [](unsigned char byte) { return byte == 0x5A; }));
    old.struct_size = kFirstSize - 1;
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT, porta_loader_report_get(i, &old));

    // A caller of a later release, with a field appended: filled up to this release's struct,
    // the appended field left as it was.
    struct {
      porta_plugin_report_t known;
      uint64_t appended;
    } newer;
    std::memset(&newer, 0x5A, sizeof(newer));
    newer.known.struct_size = sizeof(newer);
    PT_REQUIRE_OK(porta_loader_report_get(i, &newer.known));
    CHECK(newer.known.struct_size == sizeof(newer));
    CHECK(std::string(newer.known.ops) == row.ops);
    CHECK(newer.appended == 0x5A5A5A5A5A5A5A5Aull);
  }
  CHECK(portable_seen);
}

TEST_CASE("loader: a backend of an older ABI minor loads and its missing slots are UNSUPPORTED",
          "[loader]") {
  Fresh fresh;
  Installed plugin(PORTA_TEST_PLUGIN_ABI_1_0);
  const porta_init_options_t o = options("level_zero", plugin.dir.path().c_str());
  PT_REQUIRE_OK(porta_init(&o));
  const porta_plugin_report_t row = row_of("level_zero");
  CHECK(row.outcome == PORTA_PLUGIN_LOADED);
  CHECK(row.abi_major == PORTA_PLUGIN_ABI_MAJOR);
  CHECK(row.abi_minor == 0);
  CHECK(row.device_count == 1);
  // Host functions came with ABI 1.1: libporta never reads the slot past the plugin's interface.
  static int calls = 0;
  porta_stream_t stream = nullptr;
  PT_REQUIRE_OK(porta_stream_default(0, &stream));
  const CallResult result = call_on_fresh_thread([&] {
    return porta_stream_launch_host_func(
        stream, [](void*) { ++calls; }, nullptr);
  });
  CHECK(result.status == PORTA_ERROR_UNSUPPORTED);
  CHECK(contains(result.message, "1.1"));
  CHECK(calls == 0);
}

// The messages of a set of bad op calls, each made on a fresh thread, under the given PORTA_OPS.
std::vector<std::string> op_error_messages(const char* ops) {
  porta_init_options_t o = options("cpu");
  o.ops = ops;
  PT_REQUIRE_OK(porta_init(&o));
  std::vector<std::string> messages;
  void* memory = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(0, 4096, &memory));
  auto* f = static_cast<float*>(memory);
  porta_gemm_desc_t gemm{};
  gemm.struct_size = sizeof gemm;
  gemm.m = gemm.n = gemm.k = 4;
  gemm.lda = 3;  // below k
  gemm.ldb = gemm.ldc = 4;
  gemm.alpha = 1.0f;
  gemm.batch_count = 1;
  porta_conv2d_desc_t conv{};
  conv.struct_size = sizeof conv;
  conv.batch = conv.in_channels = conv.out_channels = 1;
  conv.in_height = conv.in_width = 4;
  conv.kernel_height = conv.kernel_width = 5;  // larger than the input
  conv.stride_h = conv.stride_w = conv.dilation_h = conv.dilation_w = 1;
  const std::vector<std::function<porta_status_t()>> calls = {
      [&] { return porta_gemm(nullptr, &gemm, f, f + 64, f + 128); },
      [&] { return porta_conv2d_forward(nullptr, &conv, f, f + 64, f + 128); },
      [&] { return porta_softmax_forward(nullptr, PORTA_SOFTMAX, 0, 4, f, f + 64); },
      [&] { return porta_relu_backward(nullptr, 16, f, f + 8, f + 4); },     // overlap
      [&] { return porta_bias_add(nullptr, 1, 4, 4, f, nullptr, f + 64); },  // NULL bias
      [&] { return porta_cross_entropy(nullptr, 2, 4, f, nullptr, f + 64, nullptr); },
  };
  for (const auto& bad : calls) {
    const CallResult result = call_on_fresh_thread(bad);
    CHECK(result.status == PORTA_ERROR_INVALID_ARGUMENT);
    messages.push_back(result.message);
  }
  PT_CHECK_OK(porta_memory_free(memory));
  PT_REQUIRE_OK(porta_shutdown());
  return messages;
}

TEST_CASE("loader: op argument errors are libporta's, whichever op plugin runs", "[loader]") {
  Fresh fresh;
  porta_init_options_t o = options("cpu");
  o.ops = "vendor";
  PT_REQUIRE_OK(porta_init(&o));
  const porta_plugin_report_t vendor = row_of("vendor_cpu");
  PT_REQUIRE_OK(porta_shutdown());
  if (vendor.outcome != PORTA_PLUGIN_LOADED) {
    WARN("vendor_cpu is not loaded here (" << vendor.reason
                                           << "): only the portable run is checked");
  }
  const std::vector<std::string> portable = op_error_messages("portable");
  for (const std::string& message : portable) CHECK_FALSE(message.empty());
  if (vendor.outcome == PORTA_PLUGIN_LOADED) {
    CHECK(op_error_messages("vendor") == portable);
  }
}

TEST_CASE(
    "loader: PORTA_OPS names an op plugin of one's own, and a missing one leaves ops unavailable",
    "[loader]") {
  Fresh fresh;
  porta_init_options_t o = options("cpu");
  for (const char* bad : {"My_Ops", "../ops", "9ops", "ops.so"}) {
    INFO(bad);
    o.ops = bad;
    CHECK(porta_init(&o) == PORTA_ERROR_INVALID_ARGUMENT);
    CHECK(contains(porta_last_error_message(), "libporta_ops_<name>.so"));
    porta_shutdown();
  }
  o.ops = "absent_ops";
  PT_REQUIRE_OK(porta_init(&o));
  const porta_plugin_report_t row = row_of("absent_ops");
  CHECK(row.outcome == PORTA_PLUGIN_NOT_FOUND);
  CHECK(contains(row.reason, "libporta_ops_absent_ops.so"));
  void* memory = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(0, 64, &memory));
  auto* f = static_cast<float*>(memory);
  // Not replaced by the portable plugin: the op says why it cannot run.
  CHECK(porta_relu_forward(nullptr, 4, f, f + 4) == PORTA_ERROR_UNAVAILABLE);
  CHECK(contains(porta_last_error_message(), "absent_ops"));
  PT_CHECK_OK(porta_memory_free(memory));
  PT_REQUIRE_OK(porta_shutdown());
}

TEST_CASE("loader: PORTA_VENDOR_LIBRARY narrows the vendor plugin to the libraries named",
          "[loader]") {
  Fresh fresh;
  porta_init_options_t o = options("cpu");
  o.ops = "vendor";
  {
    ScopedEnv bad("PORTA_VENDOR_LIBRARY", "onednn,mkl");
    CHECK(porta_init(&o) == PORTA_ERROR_INVALID_ARGUMENT);
    const std::string message = porta_last_error_message();
    CHECK(contains(message, "PORTA_VENDOR_LIBRARY"));
    CHECK(contains(message, "'mkl'"));
    porta_shutdown();
  }
  PT_REQUIRE_OK(porta_init(&o));
  const porta_plugin_report_t all = row_of("vendor_cpu");
  PT_REQUIRE_OK(porta_shutdown());
  if (all.outcome != PORTA_PLUGIN_LOADED) {
    WARN("vendor_cpu is not loaded here (" << all.reason << ")");
    return;
  }
  CHECK(contains(all.ops, "gemm"));
  CHECK(contains(all.ops, "conv2d_forward"));
  const auto ops_with = [&](const char* libraries) {
    ScopedEnv only("PORTA_VENDOR_LIBRARY", libraries);
    PT_REQUIRE_OK(porta_init(&o));
    const porta_plugin_report_t row = row_of("vendor_cpu");
    PT_REQUIRE_OK(porta_shutdown());
    CHECK(row.outcome == PORTA_PLUGIN_LOADED);
    return std::string(row.ops);
  };
  // OpenBLAS has GEMM only; oneDNN everything the plugin implements; a library of another
  // plugin leaves this one with nothing (every op portable).
  CHECK(ops_with("openblas") == "gemm");
  CHECK(ops_with("onednn") == std::string(all.ops));
  CHECK(ops_with("openblas, onednn") == std::string(all.ops));
  CHECK(ops_with("cublas") == "");
  // Back to every library once the variable is gone.
  PT_REQUIRE_OK(porta_init(&o));
  CHECK(std::string(row_of("vendor_cpu").ops) == std::string(all.ops));
  PT_REQUIRE_OK(porta_shutdown());
}

int main(int argc, char** argv) {
  for (const char* variable : kVariables) unsetenv(variable);
  return Catch::Session().run(argc, argv);
}

#ifdef PORTA_TEST_PORTABLE_OPS
TEST_CASE("loader: the portable op plugin without its kernel library says which file it lacks",
          "[loader]") {
  // The plugin alone in a directory searched first: libporta loads it, but it serves no backend,
  // and every op says why instead of failing at its first launch.
  Fresh fresh;
  TempDir dir;
  std::filesystem::copy_file(PORTA_TEST_PORTABLE_OPS, dir.path() + "/libporta_ops_portable.so");
  const porta_init_options_t o = options("cpu", dir.path().c_str());
  PT_REQUIRE_OK(porta_init(&o));
  const CallResult result =
      call_on_fresh_thread([] { return porta_relu_forward(nullptr, 1, nullptr, nullptr); });
  CHECK(result.status == PORTA_ERROR_UNAVAILABLE);
  INFO(result.message);
  CHECK(contains(result.message, "not built for the cpu backend"));
  CHECK(contains(result.message, dir.path() + "/portable_ops_kernels.cpu"));
  PT_REQUIRE_OK(porta_shutdown());
}
#endif

TEST_CASE("loader: an op plugin built for plugin ABI 1 is refused, naming both ABIs", "[loader]") {
  Fresh fresh;
  TempDir dir;
  std::filesystem::copy_file(PORTA_TEST_PLUGIN_OPS_ABI_1, dir.path() + "/libporta_ops_portable.so");
  const std::string path = dir.path();
  const porta_init_options_t init = options("cpu", path.c_str());
  // Op plugins are optional: the runtime comes up without one.
  PT_REQUIRE_OK(porta_init(&init));
  const porta_plugin_report_t row = row_of("portable");
  INFO(row.reason);
  CHECK(row.outcome == PORTA_PLUGIN_INCOMPATIBLE);
  CHECK(Status{row.status} == Status{PORTA_ERROR_INCOMPATIBLE_VERSION});
  CHECK(row.abi_major == 1u);
  CHECK(row.abi_minor == 2u);
  CHECK(contains(row.reason, "plugin portable"));
  CHECK(contains(row.reason, "ABI 1.2"));
  CHECK(contains(row.reason, std::to_string(PORTA_PLUGIN_ABI_MAJOR) + "." +
                                 std::to_string(PORTA_PLUGIN_ABI_MINOR)));
  CHECK(std::string(row.ops).empty());
  // Every op says why it has no implementation, before looking at its arguments.
  const CallResult relu =
      call_on_fresh_thread([] { return porta_relu_forward(nullptr, 1, nullptr, nullptr); });
  CHECK(Status{relu.status} == Status{PORTA_ERROR_UNAVAILABLE});
  CHECK(contains(relu.message, "ABI 1.2"));
}

TEST_CASE("loader: an op plugin's stream storage comes back once per stream, never polled",
          "[loader]") {
  struct Record {
    int calls, storage_reused, context_ok, released_destroyed, released_shutdown, released_counts;
  };
  Fresh fresh;
  TempDir dir;
  const std::string file = dir.path() + "/libporta_ops_portable.so";
  std::filesystem::copy_file(PORTA_TEST_PLUGIN_OPS_STORAGE, file);
  const std::string path = dir.path();
  const porta_init_options_t init = options("cpu", path.c_str());
  PT_REQUIRE_OK(porta_init(&init));
  // Our own reference keeps the plugin (and its record) mapped after porta_shutdown closes it.
  void* library = dlopen(file.c_str(), RTLD_NOW | RTLD_NOLOAD);
  REQUIRE(library != nullptr);
  auto record_of = reinterpret_cast<const Record* (*)()>(dlsym(library, "ops_storage_record"));
  REQUIRE(record_of != nullptr);
  const Record& record = *record_of();

  porta_device_t device = 0;
  PT_REQUIRE_OK(porta_device_default(&device));
  void* x = nullptr;
  void* y = nullptr;
  PT_REQUIRE_OK(porta_memory_alloc(device, 16, &x));
  PT_REQUIRE_OK(porta_memory_alloc(device, 16, &y));
  auto relu = [&](porta_stream_t stream) {
    return porta_relu_forward(stream, 4, static_cast<const float*>(x), static_cast<float*>(y));
  };
  porta_stream_t first = nullptr, second = nullptr;
  PT_REQUIRE_OK(porta_stream_create(device, &first));
  PT_REQUIRE_OK(porta_stream_create(device, &second));
  for (int i = 0; i < 3; ++i) PT_REQUIRE_OK(relu(first));
  PT_REQUIRE_OK(relu(second));
  PT_REQUIRE_OK(relu(nullptr));  // the default stream, which lives until shutdown
  CHECK(record.calls == 5);
  CHECK(record.context_ok == 5);
  CHECK(record.storage_reused == 2);  // the first stream's second and third calls
  CHECK(record.released_destroyed == 0);

  PT_REQUIRE_OK(porta_stream_destroy(first));
  CHECK(record.released_destroyed == 1);
  CHECK(record.released_counts == 3);
  PT_REQUIRE_OK(porta_stream_destroy(second));
  CHECK(record.released_destroyed == 2);
  CHECK(record.released_counts == 4);
  CHECK(record.released_shutdown == 0);

  porta_shutdown();  // the default stream's storage comes back before the plugin's shutdown
  CHECK(record.released_destroyed == 2);
  CHECK(record.released_shutdown == 1);
  CHECK(record.released_counts == 5);
  dlclose(library);
}
