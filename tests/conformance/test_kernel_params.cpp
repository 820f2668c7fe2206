// Kernel parameters: what the module records (porta_kernel_get_params), and launches whose stated
// arguments differ from them in count or size, refused with nothing launched; porta.hpp's
// launches state them, and its typed kernels check the stated types at lookup.
#include <cstddef>
#include <porta/porta.hpp>
#include <string>

#include "common.h"

using namespace porta_test;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// saxpy's buffers and arguments: y holds ones, so any run shows as a changed y.
struct SaxpyLaunch {
  static constexpr int kN = 64;
  explicit SaxpyLaunch(porta_device_t device)
      : x(device, kN * sizeof(float)), y(device, kN * sizeof(float)) {
    const std::vector<float> ones(kN, 1.0f);
    PT_REQUIRE_OK(porta_memcpy(x.get(), ones.data(), kN * sizeof(float)));
    PT_REQUIRE_OK(porta_memcpy(y.get(), ones.data(), kN * sizeof(float)));
    xp = x.as<float>();
    yp = y.as<float>();
  }
  std::vector<float> y_now() const {
    std::vector<float> got(kN);
    PT_REQUIRE_OK(porta_memcpy(got.data(), y.get(), kN * sizeof(float)));
    return got;
  }
  Buffer x, y;
  int n = kN;
  float a = 2.0f;
  float* xp = nullptr;
  float* yp = nullptr;
  void* args[4] = {&n, &a, &xp, &yp};
  size_t sizes[4] = {sizeof n, sizeof a, sizeof xp, sizeof yp};
};

}  // namespace

TEST_CASE("kernel params: the module records each kernel's parameters", "[params]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_params_t params{};
    params.struct_size = sizeof params;
    PT_REQUIRE_OK(porta_kernel_get_params(module.kernel("saxpy"), &params));
    REQUIRE(params.count == 4);
    CHECK(params.sizes[0] == sizeof(int));
    CHECK(params.sizes[1] == sizeof(float));
    CHECK(params.sizes[2] == sizeof(void*));
    CHECK(params.sizes[3] == sizeof(void*));
    // Names where the module records them (CPU and CUDA/HIP modules; SPIR-V has sizes only).
    if (params.names[0]) {
      const char* names[] = {"n", "a", "x", "y"};
      const char* types[] = {"int", "float", "const float*", "float*"};
      for (int i = 0; i < 4; ++i) {
        INFO("parameter " << i);
        REQUIRE(params.names[i] != nullptr);
        CHECK(std::string(params.names[i]) == names[i]);
        REQUIRE(params.types[i] != nullptr);
        CHECK(std::string(params.types[i]) == types[i]);
      }
    } else {
      WARN("device " << device << ": the module records parameter sizes only, no names");
    }
    PT_REQUIRE_OK(porta_kernel_get_params(module.kernel("noop"), &params));
    CHECK(params.count == 0);
    PT_REQUIRE_OK(porta_kernel_get_params(module.kernel("spin"), &params));
    REQUIRE(params.count == 2);
    CHECK(params.sizes[0] == sizeof(int64_t));

    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_kernel_get_params(module.kernel("saxpy"), nullptr));
    porta_kernel_params_t short_struct{};
    short_struct.struct_size = sizeof(size_t);
    PT_CHECK_FAILS(PORTA_ERROR_INVALID_ARGUMENT,
                   porta_kernel_get_params(module.kernel("saxpy"), &short_struct));
    PT_CHECK_FAILS(
        PORTA_ERROR_INVALID_HANDLE,
        porta_kernel_get_params(reinterpret_cast<porta_kernel_t>(module.get()), &params));
  }
}

TEST_CASE("launch: a wrong argument count is refused and nothing runs",
          "[params][launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    Stream stream(device);
    SaxpyLaunch launch(device);
    porta_launch_config_t config = launch_config({1, 1, 1}, {SaxpyLaunch::kN, 1, 1});
    config.arg_sizes = launch.sizes;
    for (uint32_t count : {0u, 3u, 5u}) {
      INFO("arg_count " << count);
      config.arg_count = count;
      const CallResult result = call_on_fresh_thread(
          [&] { return porta_kernel_launch(saxpy, &config, launch.args, stream.get()); });
      INFO(result.message);
      CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
      CHECK(contains(result.message, "kernel 'saxpy' takes 4 parameters"));
      CHECK(contains(result.message, std::to_string(count) + " arguments"));
    }
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(launch.y_now() == std::vector<float>(SaxpyLaunch::kN, 1.0f));
  }
}

TEST_CASE("launch: an argument of another size than its parameter is refused and nothing runs",
          "[params][launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    porta_kernel_params_t params{};
    params.struct_size = sizeof params;
    PT_REQUIRE_OK(porta_kernel_get_params(saxpy, &params));
    Stream stream(device);
    SaxpyLaunch launch(device);
    double wide_a = 2.0;  // the classic mistake: a double for a float parameter
    void* args[] = {&launch.n, &wide_a, &launch.xp, &launch.yp};
    size_t sizes[] = {sizeof launch.n, sizeof wide_a, sizeof launch.xp, sizeof launch.yp};
    porta_launch_config_t config = launch_config({1, 1, 1}, {SaxpyLaunch::kN, 1, 1});
    config.arg_count = 4;
    config.arg_sizes = sizes;
    const CallResult result = call_on_fresh_thread(
        [&] { return porta_kernel_launch(saxpy, &config, args, stream.get()); });
    INFO(result.message);
    CHECK(Status{result.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    CHECK(contains(result.message, "kernel 'saxpy' parameter 1"));
    CHECK(contains(result.message, "takes 4 bytes but argument 1 has 8"));
    if (params.names[1]) CHECK(contains(result.message, "parameter 1 'a' (float)"));
    // A pointer passed as a 4-byte integer.
    sizes[1] = sizeof launch.a;
    sizes[3] = sizeof(int);
    const CallResult pointer = call_on_fresh_thread(
        [&] { return porta_kernel_launch(saxpy, &config, args, stream.get()); });
    INFO(pointer.message);
    CHECK(Status{pointer.status} == Status{PORTA_ERROR_INVALID_ARGUMENT});
    CHECK(contains(pointer.message, "parameter 3"));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(launch.y_now() == std::vector<float>(SaxpyLaunch::kN, 1.0f));
  }
}

TEST_CASE("launch: stated arguments that match run, as do configs that state none",
          "[params][launch]" PT_KERNELS_TAG) {
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta_kernel_t saxpy = module.kernel("saxpy");
    Stream stream(device);
    SaxpyLaunch launch(device);
    porta_launch_config_t config = launch_config({1, 1, 1}, {SaxpyLaunch::kN, 1, 1});
    config.arg_count = 4;
    config.arg_sizes = launch.sizes;
    PT_REQUIRE_OK(porta_kernel_launch(saxpy, &config, launch.args, stream.get()));
    // Unstated (arg_sizes NULL), and a config from before arg_count existed: unchecked.
    config.arg_sizes = nullptr;
    PT_REQUIRE_OK(porta_kernel_launch(saxpy, &config, launch.args, stream.get()));
    config.struct_size = offsetof(porta_launch_config_t, arg_count);
    config.arg_count = 1;
    config.arg_sizes = launch.sizes;
    PT_REQUIRE_OK(porta_kernel_launch(saxpy, &config, launch.args, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
    CHECK(launch.y_now() == std::vector<float>(SaxpyLaunch::kN, 7.0f));
    // A kernel without parameters, stated as such.
    porta_launch_config_t none = launch_config({1, 1, 1}, {1, 1, 1});
    const size_t no_sizes[1] = {0};
    none.arg_sizes = no_sizes;
    PT_REQUIRE_OK(porta_kernel_launch(module.kernel("noop"), &none, nullptr, stream.get()));
    PT_REQUIRE_OK(porta_stream_synchronize(stream.get()));
  }
}

TEST_CASE("porta.hpp: launches state their arguments, typed kernels are checked at lookup",
          "[params][launch]" PT_KERNELS_TAG) {
  constexpr int kN = 64;
  for (porta_device_t device : devices()) {
    INFO("device " << device);
    Module module(device);
    porta::stream stream(device);
    porta::device_buffer<float> x(device, kN), y(device, kN);
    x.copy_from_host(std::vector<float>(kN, 1.0f));
    y.copy_from_host(std::vector<float>(kN, 1.0f));

    // Untyped: a double for saxpy's float a is refused by libporta, naming the parameter.
    const porta::kernel saxpy(module.kernel("saxpy"));
    try {
      saxpy.launch(stream, 1, kN, kN, 2.0, x, y);
      FAIL("a double for a float parameter was launched");
    } catch (const porta::error& e) {
      INFO(e.what());
      CHECK(Status{e.status()} == Status{PORTA_ERROR_INVALID_ARGUMENT});
      CHECK(contains(e.message(), "kernel 'saxpy' parameter 1"));
    }

    // Typed: stated types that differ from the module's record are refused at lookup.
    using wrong = porta::typed_kernel<int, double, const float*, float*>;
    try {
      wrong kernel(module.kernel("saxpy"));
      FAIL("a typed kernel whose types differ from the record was made");
    } catch (const porta::error& e) {
      INFO(e.what());
      CHECK(Status{e.status()} == Status{PORTA_ERROR_INVALID_ARGUMENT});
      CHECK(contains(e.message(), "parameter 1"));
    }
    using too_few = porta::typed_kernel<int, float, const float*>;
    CHECK_THROWS_AS(too_few(module.kernel("saxpy")), porta::error);

    const porta::typed_kernel<int, float, const float*, float*> typed(module.kernel("saxpy"));
    typed.launch(stream, 1, kN, kN, 2.0f, x, y);
    stream.synchronize();
    CHECK(y.to_vector() == std::vector<float>(kN, 3.0f));

    // Moved-from objects are refused, not taken for the default stream or a NULL pointer.
    porta::stream moved_to = std::move(stream);
    CHECK_THROWS_AS(stream.synchronize(), porta::error);
    CHECK_THROWS_AS(typed.launch(stream, 1, kN, kN, 2.0f, x, y), porta::error);
    porta::device_buffer<float> x2 = std::move(x);
    CHECK_THROWS_AS(typed.launch(moved_to, 1, kN, kN, 2.0f, x, y), porta::error);
    CHECK_THROWS_AS(saxpy.launch(moved_to, 1, kN, kN, 2.0f, x, y), porta::error);
    // Moved on, or moved into, a moved-from buffer stays one; a buffer moved into itself keeps
    // its memory.
    porta::device_buffer<float> x3(std::move(x));
    CHECK(x3.moved_from());
    CHECK_THROWS_AS(typed.launch(moved_to, 1, kN, kN, 2.0f, x3, y), porta::error);
    porta::device_buffer<float> x4(device, kN);
    x4 = std::move(x3);
    CHECK(x4.moved_from());
    CHECK_THROWS_AS(typed.launch(moved_to, 1, kN, kN, 2.0f, x4, y), porta::error);
    porta::device_buffer<float>& same = x2;
    x2 = std::move(same);
    CHECK_FALSE(x2.moved_from());
    CHECK(x2.data() != nullptr);
    // A count whose bytes pass 2^64 is no short copy.
    std::vector<float> host(kN);
    CHECK_THROWS_AS(y.copy_to_host(host.data(), (size_t{1} << 62) + 1), porta::error);
    // A grid of groups covers every item, or div_up says it cannot.
    CHECK(porta::div_up(0, 256) == 0);
    CHECK(porta::div_up(1000, 256) == 4);
    CHECK(porta::div_up(size_t{UINT32_MAX} * 256, 256) == UINT32_MAX);
    CHECK_THROWS_AS(porta::div_up(size_t{UINT32_MAX} * 256 + 1, 256), porta::error);
    CHECK_THROWS_AS(porta::div_up(SIZE_MAX, 256), porta::error);
    CHECK_THROWS_AS(porta::div_up(10, 0), porta::error);
    porta::stream reset(device);
    reset.reset();  // destroyed, and no handle for the default stream after it
    CHECK_THROWS_AS(reset.synchronize(), porta::error);
    CHECK_THROWS_AS(typed.launch(reset, 1, kN, kN, 2.0f, x2, y), porta::error);
    moved_to.synchronize();
    CHECK(y.to_vector() == std::vector<float>(kN, 3.0f));  // nothing above ran
  }
}
