// The peak probes: the device's fp32 FMA rate and copy bandwidth, measured with porta-bench's
// own kernels (kernels/peak_kernels.cpp), so that "% of peak" means the same thing on every backend.
#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include "bench.h"

namespace bench {

namespace {

// Must match kernels/peak_kernels.cpp: FLOPs per work-item per round.
constexpr double kFlopsPerItemRound = 2.0 * 8 * 64;
constexpr int kProbeReps = 5;

bool is_gpu(const porta_device_properties_t& p) {
  return (p.capabilities & PORTA_CAPABILITY_HOST_IS_DEVICE) == 0;
}

// The best of kProbeReps timed launches, after one untimed: a peak is what the device can do,
// so the least disturbed run is the one that counts.
template <class Launch>
double best_ms(porta::stream& stream, porta_device_t device, Launch launch) {
  launch();
  stream.synchronize();
  double best = 0.0;
  porta::event start(device), stop(device);
  for (int i = 0; i < kProbeReps; ++i) {
    start.record(stream);
    launch();
    stop.record(stream);
    stream.synchronize();
    const double ms = porta::event::elapsed_ms(start, stop);
    if (i == 0 || ms < best) best = ms;
  }
  return best;
}

// Whether /proc/cpuinfo's flags of the first CPU list `flag`.
bool cpu_flag(const std::string& flag) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string word;
    while (words >> word)
      if (word == flag) return true;
    return false;
  }
  return false;
}

}  // namespace

double Peak::fma_peak(porta_dtype_t dtype) const {
  switch (dtype) {
    case PORTA_DTYPE_BF16:
      return bf16_gflops;
    case PORTA_DTYPE_F16:
      return f16_gflops;
    default:
      return fma_gflops;
  }
}

void derive_16bit_peaks(Peak& peak, bool gpu) {
  if (!gpu && cpu_flag("amx_bf16")) peak.matrix_units = true;
  if (peak.matrix_units) {
    peak.bf16_gflops = peak.f16_gflops = 0.0;
    peak.bf16_source = peak.f16_source = "matrix units: not measured";
    return;
  }
  const std::string widened = "the fp32 FMA probe (16-bit inputs are widened to fp32)";
  peak.f16_gflops = peak.fma_gflops;
  peak.f16_source = widened;
  if (!gpu && cpu_flag("avx512_bf16")) {
    peak.bf16_gflops = 2.0 * peak.fma_gflops;
    peak.bf16_source =
        "derived: 2 x the fp32 FMA probe (AVX512_BF16 vdpbf16ps: two bf16 products per fp32 "
        "lane per instruction)";
  } else {
    peak.bf16_gflops = peak.fma_gflops;
    peak.bf16_source = widened;
  }
}

Peak measure_peak(porta_device_t device, const std::string& kernel_library) {
  Peak peak;
  try {
    const porta_device_properties_t props = porta::device_properties(device);
    const bool gpu = is_gpu(props);
    porta::module module(device, kernel_library);
    porta::stream stream(device);
    const int units = std::max(props.compute_units, 1);
    const uint32_t group =
        static_cast<uint32_t>(std::min(256, std::max(props.max_work_group_size, 1)));

    // FMA rate: enough groups to fill every unit several times over; the rounds scaled until a
    // launch takes about 100 ms.
    {
      porta::kernel fma = module.kernel("peak_fma");
      const uint32_t groups = static_cast<uint32_t>(units * (gpu ? 32 : 4));
      porta::device_buffer<float> out(device, size_t(groups) * group);
      const float a = 0.999999f, b = 1e-7f;
      uint32_t rounds = 16;
      auto launch = [&] { fma.launch(stream, groups, group, rounds, a, b, out); };
      for (;;) {
        const double ms = best_ms(stream, device, launch);
        if (ms >= 50.0 || rounds >= (1u << 24)) {
          peak.fma_ms = ms;
          break;
        }
        const double scale = ms > 0.0 ? 100.0 / ms : 64.0;
        rounds = static_cast<uint32_t>(
            std::min(double(1u << 24), rounds * std::clamp(scale, 2.0, 64.0)));
      }
      peak.fma_gflops = kFlopsPerItemRound * rounds * groups * group / (peak.fma_ms * 1e6);
    }

    // Copy bandwidth: two buffers far larger than any last-level cache (at least 256 MiB each on
    // the CPU, 1 GiB on a GPU), within an eighth of the device's memory each.
    {
      porta::kernel copy = module.kernel("peak_copy");
      uint64_t bytes = gpu ? uint64_t{1} << 30 : uint64_t{256} << 20;
      bytes = std::min<uint64_t>(bytes, props.total_memory / 8);
      bytes &= ~uint64_t{4095};
      const uint64_t n = bytes / sizeof(float);
      porta::device_buffer<float> src(device, n), dst(device, n);
      src.memset(0x3f);  // touches every page before timing
      dst.memset(0);
      auto launch = [&] { queue_copy(copy, stream, props, n, src.data(), dst.data()); };
      peak.copy_ms = best_ms(stream, device, launch);
      peak.copy_bytes = bytes;
      // Read once and written once, as STREAM counts a copy.
      peak.copy_gbps = 2.0 * double(bytes) / (peak.copy_ms * 1e6);
    }
  } catch (const std::exception& e) {
    peak.error = e.what();
  }
  return peak;
}

void queue_copy(const porta::kernel& copy, const porta::stream& stream,
                const porta_device_properties_t& props, uint64_t n, const float* src, float* dst) {
  const bool gpu = is_gpu(props);
  const uint32_t limit = static_cast<uint32_t>(std::max(props.max_work_group_size, 1));
  const uint32_t group = std::min<uint32_t>(gpu ? 256 : 1024, limit);
  // Several chunks per unit, so that units finishing early take more; but no more groups than
  // there are whole groups of floats (the ops' small cases).
  const uint64_t most = std::max<uint64_t>(1, n / group);
  const uint32_t groups = static_cast<uint32_t>(
      std::min<uint64_t>(most, uint64_t(std::max(props.compute_units, 1)) * (gpu ? 64 : 16)));
  const uint64_t chunk = (n + groups - 1) / groups;
  copy.launch(stream, groups, group, n, chunk, src, dst);
}

}  // namespace bench
