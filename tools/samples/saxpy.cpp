// A first Porta program: y = a*x + y on the device PORTA_BACKEND selects, timed with events.
//   porta-sample-saxpy [n]
#include <porta/porta.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

int main(int argc, char** argv) try {
  const uint32_t n = argc > 1 ? static_cast<uint32_t>(std::strtoul(argv[1], nullptr, 10)) : 1u << 24;
  const float a = 2.0f;

  porta::init();
  const porta_device_t device = porta::default_device();
  const porta_device_properties_t properties = porta::device_properties(device);
  std::printf("device %d: %s (%s)\n", device, properties.name, properties.backend);

  // The kernel library is built into lib/, beside this program's bin/; porta_module_load picks
  // the build that fits the device.
  const auto module_path = std::filesystem::read_symlink("/proc/self/exe").parent_path() /
                           "../lib/porta_sample_kernels";
  porta::module module(device, module_path.string());
  // The parameter types as saxpy_kernels.cpp declares them: a launch that differs does not compile.
  auto saxpy = module.kernel<uint32_t, float, const float*, float*>("saxpy");

  std::vector<float> x(n), y(n);
  for (uint32_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>(i % 1000) * 0.5f;
    y[i] = static_cast<float>(i % 7);
  }
  porta::device_buffer<float> dx(device, n), dy(device, n);
  porta::stream stream(device);
  dx.copy_from_host_async(x.data(), n, stream);
  dy.copy_from_host_async(y.data(), n, stream);

  porta::event start(device), stop(device);
  const uint32_t group = 256;
  start.record(stream);
  saxpy.launch(stream, porta::div_up(n, group), group, n, a, dx, dy);
  stop.record(stream);

  std::vector<float> result(n);
  dy.copy_to_host_async(result.data(), n, stream);
  stream.synchronize();

  size_t wrong = 0;
  for (uint32_t i = 0; i < n; ++i) wrong += result[i] != a * x[i] + y[i];
  const float ms = porta::event::elapsed_ms(start, stop);
  std::printf("saxpy n=%u: %.3f ms, %.1f GB/s, %zu wrong\n", n, ms,
              3.0 * n * sizeof(float) / (ms * 1e6), wrong);
  return wrong == 0 ? 0 : 1;
} catch (const porta::error& e) {
  std::fprintf(stderr, "porta-sample-saxpy: %s\n", e.what());
  return 1;
}
