// The SPIR-V side: the module reader the OpenCL and Level Zero plugins share, Level Zero without
// an Intel GPU, and the GPU-semantics kernels (tests/kernels/gpu_semantics.cpp) on the backend
// that PORTA_BACKEND names: the CPU backend's answers, and the GPU's answers on OpenCL.
#define CATCH_CONFIG_MAIN
#include <porta/porta.h>
#include <porta/porta_plugin.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "plugin_kit.h"
#include "spirv_reader.h"

namespace {

std::vector<char> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  REQUIRE(file.good());
  return std::vector<char>(std::istreambuf_iterator<char>(file), {});
}

std::string status_of(porta_status_t status) {
  return std::string(porta_status_name(status)) + ": " + porta_last_error_message();
}

#define REQUIRE_OK(expr) REQUIRE(status_of(expr) == status_of(PORTA_SUCCESS))

// Initialises Porta on PORTA_BACKEND (the CTest instance's), with PoCL's cache in the build.
struct Runtime {
  Runtime() {
    setenv("POCL_CACHE_DIR", PORTA_TEST_POCL_CACHE_DIR, 0);
    const porta_status_t status = porta_init(nullptr);
    INFO(porta_last_error_message());
    REQUIRE(status == PORTA_SUCCESS);
    REQUIRE_OK(porta_device_default(&device));
    porta_device_properties_t props{};
    props.struct_size = sizeof(props);
    REQUIRE_OK(porta_device_properties(device, &props));
    backend = props.backend;
    REQUIRE_OK(porta_module_load(device, PORTA_TEST_SEMANTICS_KERNELS, &module));
  }
  ~Runtime() { porta_shutdown(); }

  porta_kernel_t kernel(const char* name) {
    porta_kernel_t k = nullptr;
    REQUIRE_OK(porta_kernel_get(module, name, &k));
    return k;
  }

  // Runs the kernel over groups x items on in (copied to the device) and returns out.
  std::vector<float> run(const char* name, uint32_t groups, uint32_t items,
                         const std::vector<float>& in, std::vector<void*> leading_args = {}) {
    void* din = nullptr;
    void* dout = nullptr;
    const size_t count = size_t{groups} * items;
    REQUIRE_OK(porta_memory_alloc(device, in.size() * sizeof(float), &din));
    REQUIRE_OK(porta_memory_alloc(device, count * sizeof(float), &dout));
    REQUIRE_OK(porta_memcpy(din, in.data(), in.size() * sizeof(float)));
    REQUIRE_OK(porta_memset(dout, 0xff, count * sizeof(float)));
    std::vector<void*> args = leading_args;
    args.push_back(&din);
    args.push_back(&dout);
    porta_launch_config_t config{sizeof(config), {groups, 1, 1}, {items, 1, 1}, 0, 0, nullptr};
    REQUIRE_OK(porta_kernel_launch(kernel(name), &config, args.data(), nullptr));
    REQUIRE_OK(porta_device_synchronize(device));
    std::vector<float> out(count);
    REQUIRE_OK(porta_memcpy(out.data(), dout, count * sizeof(float)));
    porta_memory_free(din);
    porta_memory_free(dout);
    return out;
  }

  porta_device_t device = 0;
  std::string backend;
  porta_module_t module = nullptr;
};

}  // namespace

// ---- the reader -------------------------------------------------------------------------------

TEST_CASE("spirv reader: kernel signatures of the test kernels", "[reader]") {
  const std::vector<char> image = read_file(PORTA_TEST_GPU_KERNELS_SPV);
  REQUIRE(porta::spirv::is_spirv(image.data(), image.size()));
  const auto kernels = porta::spirv::read_kernels(image.data(), image.size());
  using porta::spirv::ParamKind;
  // saxpy(int n, float a, const float* x, float* y)
  const auto& saxpy = kernels.at("saxpy").params;
  REQUIRE(saxpy.size() == 4);
  CHECK((saxpy[0].kind == ParamKind::value && saxpy[0].size == 4));
  CHECK((saxpy[1].kind == ParamKind::value && saxpy[1].size == 4));
  CHECK((saxpy[2].kind == ParamKind::global_pointer && saxpy[2].size == 8));
  CHECK((saxpy[3].kind == ParamKind::global_pointer && saxpy[3].size == 8));
  // spin(int64_t iterations, float* out)
  CHECK(kernels.at("spin").params.at(0).size == 8);
  CHECK(kernels.at("noop").params.empty());
  // shared_reverse(float*) plus the work-group pointer the pass step added for its dynamic
  // shared memory, which callers do not pass.
  const auto& reverse = kernels.at("shared_reverse");
  REQUIRE(reverse.params.size() == 2);
  CHECK(reverse.params[1].kind == ParamKind::local_pointer);
  CHECK(reverse.user_param_count() == 1);
}

TEST_CASE("spirv reader: structs passed by value have their C size", "[reader]") {
  // The portable ops pass their shapes as structs; gemm_f32 takes one GemmParams-like struct.
  const std::vector<char> image = read_file(PORTA_TEST_OPS_KERNELS_SPV);
  const auto kernels = porta::spirv::read_kernels(image.data(), image.size());
  bool by_value_struct = false;
  for (const auto& [name, signature] : kernels) {
    for (const auto& p : signature.params) {
      if (p.kind == porta::spirv::ParamKind::value && p.size > 8) by_value_struct = true;
      CHECK(p.size > 0);
    }
  }
  CHECK(by_value_struct);
}

TEST_CASE("spirv reader: a damaged module is INVALID_ARGUMENT, never a crash", "[reader]") {
  std::vector<char> image = read_file(PORTA_TEST_GPU_KERNELS_SPV);
  CHECK_FALSE(porta::spirv::is_spirv(image.data(), 16));
  for (size_t size : {size_t{20}, image.size() / 4 / 4 * 4, image.size() / 2 / 4 * 4}) {
    INFO("truncated to " << size << " bytes");
    try {
      porta::spirv::read_kernels(image.data(), size);
    } catch (const porta::plugin::Failure& failure) {
      CHECK(failure.status() == PORTA_ERROR_INVALID_ARGUMENT);
    }
  }
  std::memset(image.data(), 0, 4);
  try {
    porta::spirv::read_kernels(image.data(), image.size());
    FAIL("a module without the magic number was read");
  } catch (const porta::plugin::Failure& failure) {
    CHECK(failure.status() == PORTA_ERROR_INVALID_ARGUMENT);
  }
}

namespace {

// A kernel whose one parameter is a struct passed by value: struct n holds `width` copies of
// struct n - 1, `depth` deep, over a 32-bit int.
std::vector<uint32_t> nested_struct_module(uint32_t depth, uint32_t width) {
  std::vector<uint32_t> words = {0x07230203, 0x00010000, 0, 1000, 0};
  auto op = [&](uint32_t code, std::vector<uint32_t> operands) {
    words.push_back(uint32_t(operands.size() + 1) << 16 | code);
    words.insert(words.end(), operands.begin(), operands.end());
  };
  op(14, {2, 2});          // OpMemoryModel Physical64 OpenCL
  op(15, {6, 500, 0x6b});  // OpEntryPoint Kernel %500 "k"
  op(71, {501, 38, 2});    // OpDecorate %501 FuncParamAttr ByVal
  op(21, {1, 32, 0});      // %1 = OpTypeInt 32
  for (uint32_t d = 0; d < depth; ++d) {
    std::vector<uint32_t> operands = {2 + d};
    operands.insert(operands.end(), width, 1 + d);
    op(30, operands);  // OpTypeStruct
  }
  op(32, {400, 7, 1 + depth});  // OpTypePointer Function, to the last struct
  op(19, {401});                // OpTypeVoid
  op(33, {402, 401, 400});      // OpTypeFunction
  op(54, {401, 500, 0, 402});   // OpFunction
  op(55, {400, 501});           // OpFunctionParameter
  op(56, {});                   // OpFunctionEnd
  return words;
}

}  // namespace

// Laid out type by type, not member by member: 60 levels of two members each are 2^60 paths
// through the types, read in no time and refused as larger than any argument.
TEST_CASE("spirv reader: deeply shared struct types are laid out once", "[reader]") {
  const std::vector<uint32_t> small = nested_struct_module(20, 2);
  const auto kernels = porta::spirv::read_kernels(small.data(), small.size() * 4);
  REQUIRE(kernels.count("k") == 1);
  REQUIRE(kernels.at("k").params.size() == 1);
  CHECK(kernels.at("k").params[0].size == (uint32_t{4} << 20));
  const std::vector<uint32_t> huge = nested_struct_module(60, 2);
  try {
    porta::spirv::read_kernels(huge.data(), huge.size() * 4);
    FAIL("a struct of 2^62 bytes was read as a kernel argument");
  } catch (const porta::plugin::Failure& failure) {
    CHECK(failure.status() == PORTA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(failure.what(), Catch::Contains("over 4 GiB"));
  }
}

// ---- Level Zero without an Intel GPU ------------------------------------------------------------

TEST_CASE("level_zero: without a GPU driver, unavailable with zeInit's answer", "[level_zero]") {
  porta_init_options_t options{};
  options.struct_size = sizeof(options);
  options.backend = "level_zero";
  const porta_status_t status = porta_init(&options);
  const std::string message = porta_last_error_message();
  if (status == PORTA_SUCCESS) {
    porta_shutdown();
    WARN("a Level Zero GPU is present: the conformance suite covers it, not this test");
    return;
  }
  INFO(message);
  CHECK(status == PORTA_ERROR_UNAVAILABLE);
  CHECK(message.find("zeInit failed: ZE_RESULT_ERROR_UNINITIALIZED (0x78000001)") !=
        std::string::npos);
  // The loader report has the same reason on the level_zero row.
  size_t rows = 0;
  REQUIRE(porta_loader_report_count(&rows) == PORTA_SUCCESS);
  bool found = false;
  for (size_t i = 0; i < rows; ++i) {
    porta_plugin_report_t row{};
    row.struct_size = sizeof(row);
    REQUIRE(porta_loader_report_get(i, &row) == PORTA_SUCCESS);
    if (std::string(row.name) == "level_zero" && row.kind == PORTA_PLUGIN_KIND_BACKEND) {
      found = true;
      CHECK(row.outcome == PORTA_PLUGIN_UNAVAILABLE);
      CHECK(std::string(row.reason).find("ZE_RESULT_ERROR_UNINITIALIZED") != std::string::npos);
    }
  }
  CHECK(found);
  porta_shutdown();
}

// ---- GPU semantics ------------------------------------------------------------------------------

TEST_CASE("semantics: a value kept outside inner() is per work-item on a GPU", "[semantics]") {
  Runtime rt;
  constexpr uint32_t kGroups = 2, kItems = 4;
  const std::vector<float> x = {7.0f, 9.0f};
  const std::vector<float> out = rt.run("keeps_value", kGroups, kItems, x);
  // The CPU backend runs the body once per group; a GPU (and OpenCL) once per work-item, and
  // only item 0 sets its own copy: 7 0 0 0 9 0 0 0.
  const bool per_group = rt.backend == "cpu";
  INFO("backend " << rt.backend);
  for (uint32_t g = 0; g < kGroups; ++g) {
    for (uint32_t i = 0; i < kItems; ++i) {
      CHECK(out[g * kItems + i] == (i == 0 || per_group ? x[g] : 0.0f));
    }
  }
}

TEST_CASE("semantics: a read of another item's store needs the barrier between", "[semantics]") {
  Runtime rt;
  constexpr uint32_t kGroups = 8, kItems = 64;
  std::vector<float> x(kGroups * kItems);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i);
  uint32_t with_barrier = 1;
  const std::vector<float> good = rt.run("rotate", kGroups, kItems, x, {&with_barrier});
  for (uint32_t g = 0; g < kGroups; ++g) {
    for (uint32_t i = 0; i < kItems; ++i) {
      CHECK(good[g * kItems + i] == x[g * kItems + (i + 1) % kItems]);
    }
  }
  // Without it, the items that read before their neighbour stored see the NaN the slots held.
  with_barrier = 0;
  const std::vector<float> bad = rt.run("rotate", kGroups, kItems, x, {&with_barrier});
  size_t stale = 0;
  for (float v : bad) stale += std::isnan(v) ? 1 : 0;
  INFO("backend " << rt.backend << ": " << stale << " stale reads");
  CHECK(stale > 0);
}

TEST_CASE("semantics: shared memory in a helper is the group's own", "[semantics]") {
  Runtime rt;
  // Many groups, so that several run at once (PoCL: one per thread): a helper's shared array
  // made one global for all would mix their data.
  constexpr uint32_t kGroups = 2048, kItems = 64;
  std::vector<float> x(kGroups * kItems);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i);
  const std::vector<float> out = rt.run("reverse_in_helper", kGroups, kItems, x);
  size_t wrong = 0;
  for (uint32_t g = 0; g < kGroups; ++g) {
    for (uint32_t i = 0; i < kItems; ++i) {
      wrong += out[g * kItems + i] != x[g * kItems + kItems - 1 - i] ? 1 : 0;
    }
  }
  CHECK(wrong == 0);
}

// ---- streams ------------------------------------------------------------------------------------

// PoCL compiles a kernel again for a wider grid and, with launches of both widths in flight on
// several queues, used to give a finished launch's reference back to the wrong copy and abort the
// process (the OpenCL backend's KernelCacheGuard). Each thread queues launches of one kernel at
// widths growing in turn with the others', without waiting between them.
TEST_CASE("streams: one kernel at growing widths from several threads at once", "[streams]") {
  Runtime rt;
  constexpr uint32_t kThreads = 8, kLaunches = 32, kStep = 8;
  constexpr uint32_t kMostGroups = kLaunches * kThreads * kStep;
  const porta_kernel_t kernel = rt.kernel("reverse_in_helper");
  // Each group size is a kernel of its own to PoCL, whose widths grow afresh: many tries.
  for (uint32_t items = 2; items <= 64; items += 2) {
    std::vector<float> x(size_t{kMostGroups} * items);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(i);
    void* din = nullptr;
    REQUIRE_OK(porta_memory_alloc(rt.device, x.size() * sizeof(float), &din));
    REQUIRE_OK(porta_memcpy(din, x.data(), x.size() * sizeof(float)));
    std::vector<porta_status_t> failed(kThreads, PORTA_SUCCESS);
    std::vector<std::vector<float>> outs(kThreads);
    std::vector<std::thread> threads;
    for (uint32_t t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        porta_stream_t stream = nullptr;
        void* dout = nullptr;
        porta_status_t s = porta_stream_create(rt.device, &stream);
        if (s == PORTA_SUCCESS) s = porta_memory_alloc(rt.device, x.size() * sizeof(float), &dout);
        uint32_t groups = 0;
        for (uint32_t i = 0; i < kLaunches && s == PORTA_SUCCESS; ++i) {
          groups = (i * kThreads + t + 1) * kStep;
          void* args[] = {&din, &dout};
          porta_launch_config_t config{sizeof(config), {groups, 1, 1}, {items, 1, 1}, 0, 0,
                                       nullptr};
          s = porta_kernel_launch(kernel, &config, args, stream);
        }
        if (s == PORTA_SUCCESS) s = porta_stream_synchronize(stream);
        outs[t].resize(size_t{groups} * items);
        if (s == PORTA_SUCCESS) {
          s = porta_memcpy(outs[t].data(), dout, outs[t].size() * sizeof(float));
        }
        porta_memory_free(dout);
        if (stream) porta_stream_destroy(stream);
        failed[t] = s;
      });
    }
    for (std::thread& thread : threads) thread.join();
    porta_memory_free(din);
    for (uint32_t t = 0; t < kThreads; ++t) {
      INFO("group size " << items << ", thread " << t);
      REQUIRE(failed[t] == PORTA_SUCCESS);
      size_t wrong = 0;
      for (size_t i = 0; i < outs[t].size(); ++i) {
        wrong += outs[t][i] != x[i / items * items + items - 1 - i % items] ? 1 : 0;
      }
      CHECK(wrong == 0);
    }
  }
}

// PoCL's kernel cache tells kernels apart by their program's build as well as by name: a kernel
// named like one of another image that launched wider is still a kernel of its own, whose wider
// launches need the same guard (keyed by the name alone, they went unguarded and PoCL aborted).
TEST_CASE("streams: kernels of one name in two images at growing widths", "[streams]") {
#ifndef PORTA_TEST_SAMPLE_KERNELS
  WARN("skipped: the sample kernel library (tools) is not built here");
  return;
#endif
  Runtime rt;
  if (rt.backend != "opencl") {  // the GPU kernels' library has no CPU build
    WARN("skipped on the " << rt.backend << " backend: a test of OpenCL's kernel cache");
    return;
  }
  constexpr uint32_t kThreads = 8, kLaunches = 32, kStep = 8;
  constexpr uint32_t kMostGroups = kLaunches * kThreads * kStep, kMostItems = 64;
  const size_t floats = size_t{kMostGroups} * kMostItems * 2;
  void* x = nullptr;
  REQUIRE_OK(porta_memory_alloc(rt.device, floats * sizeof(float), &x));
  REQUIRE_OK(porta_memset(x, 0, floats * sizeof(float)));
  // The other image's saxpy, launched wider than any launch below at every group size.
  {
    porta_module_t other = nullptr;
    porta_kernel_t saxpy = nullptr;
    REQUIRE_OK(porta_module_load(rt.device, PORTA_TEST_SAMPLE_KERNELS, &other));
    REQUIRE_OK(porta_kernel_get(other, "saxpy", &saxpy));
    for (uint32_t items = 2; items <= kMostItems; items += 2) {
      uint32_t n = 0;
      float a = 1.0f;
      void* args[] = {&n, &a, &x, &x};
      porta_launch_config_t config{sizeof(config), {kMostGroups * 2, 1, 1}, {items, 1, 1}, 0, 0,
                                   nullptr};
      REQUIRE_OK(porta_kernel_launch(saxpy, &config, args, nullptr));
    }
    REQUIRE_OK(porta_device_synchronize(rt.device));
    REQUIRE_OK(porta_module_unload(other));
  }
  porta_module_t module = nullptr;
  porta_kernel_t saxpy = nullptr;
  REQUIRE_OK(porta_module_load(rt.device, PORTA_TEST_KERNELS_GPU, &module));
  REQUIRE_OK(porta_kernel_get(module, "saxpy", &saxpy));
  for (uint32_t items = 2; items <= kMostItems; items += 2) {
    std::vector<porta_status_t> failed(kThreads, PORTA_SUCCESS);
    std::vector<std::thread> threads;
    for (uint32_t t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        porta_stream_t stream = nullptr;
        void* y = nullptr;
        porta_status_t s = porta_stream_create(rt.device, &stream);
        if (s == PORTA_SUCCESS) s = porta_memory_alloc(rt.device, floats * sizeof(float), &y);
        for (uint32_t i = 0; i < kLaunches && s == PORTA_SUCCESS; ++i) {
          const uint32_t groups = (i * kThreads + t + 1) * kStep;
          int n = static_cast<int>(groups * items);
          float a = 1.0f;
          void* args[] = {&n, &a, &x, &y};
          porta_launch_config_t config{sizeof(config), {groups, 1, 1}, {items, 1, 1}, 0, 0,
                                       nullptr};
          s = porta_kernel_launch(saxpy, &config, args, stream);
        }
        if (s == PORTA_SUCCESS) s = porta_stream_synchronize(stream);
        porta_memory_free(y);
        if (stream) porta_stream_destroy(stream);
        failed[t] = s;
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (uint32_t t = 0; t < kThreads; ++t) {
      INFO("group size " << items << ", thread " << t);
      CHECK(failed[t] == PORTA_SUCCESS);
    }
  }
  REQUIRE_OK(porta_module_unload(module));
  porta_memory_free(x);
}
