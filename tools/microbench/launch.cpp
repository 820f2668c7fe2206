// The fixed cost of a launch: queue work on Porta's stream and synchronize, with nothing to do.
//   launch/porta/sync            porta_stream_synchronize on an empty stream
//   launch/porta/host_func       an empty host function, then synchronize: the hand-over to the
//                                stream's worker and back
//   launch/porta/1group          an empty kernel of one work-group, then synchronize
//   launch/porta/2groups         of two work-groups: the CPU backend's pool takes part
//   launch/porta/1group/event    an empty kernel of one work-group, an event recorded after it,
//                                and the event synchronized instead of the stream
// Each also as .../after_idle: the same after the process has slept for 2 ms, as a launch after
// a pause on the host (the threads woken from a deeper sleep). Times per launch in microseconds.
#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>

#include "common.h"

namespace microbench {
namespace {

constexpr auto kIdlePause = std::chrono::milliseconds(2);

void nothing(void*) {}

// The empty kernel, loaded once from lib/ beside this program's bin/.
const porta::typed_kernel<uint32_t>& empty_kernel() {
  static std::optional<porta::module> module;
  static std::optional<porta::typed_kernel<uint32_t>> kernel;
  if (!kernel) {
    const auto path = std::filesystem::read_symlink("/proc/self/exe").parent_path() /
                      "../lib/porta_microbench_kernels";
    module.emplace(environment().device, path.string());
    kernel.emplace(module->kernel<uint32_t>("empty"));
  }
  return *kernel;
}

// groups: 0 for no work at all, -1 for a host function, else the kernel's work-groups. by_event:
// wait for an event recorded after the work rather than for the stream.
void time_launch(benchmark::State& state, int groups, bool by_event, bool after_idle) {
  try {
    require_porta();
    const porta::stream& stream = *environment().stream;
    const porta::typed_kernel<uint32_t>* kernel = groups > 0 ? &empty_kernel() : nullptr;
    const porta::event done(environment().device);
    auto launch = [&] {
      if (kernel) kernel->launch(stream, porta::dim3(groups), porta::dim3(64), uint32_t{0});
      if (groups < 0) stream.launch_host_func(nothing, nullptr);
      if (by_event) {
        done.record(stream);
        done.synchronize();
      } else {
        stream.synchronize();
      }
    };
    launch();  // loads and checks everything once, untimed
    for (auto _ : state) {
      if (after_idle) std::this_thread::sleep_for(kIdlePause);
      const auto start = std::chrono::steady_clock::now();
      launch();
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      state.SetIterationTime(took.count());
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

void register_launch() {
  const struct {
    const char* name;
    int groups;
    bool by_event;
  } kinds[] = {{"sync", 0, false},
               {"host_func", -1, false},
               {"1group", 1, false},
               {"2groups", 2, false},
               {"1group/event", 1, true}};
  for (const auto& kind : kinds) {
    for (bool after_idle : {false, true}) {
      const std::string name =
          std::string("launch/porta/") + kind.name + (after_idle ? "/after_idle" : "");
      const int groups = kind.groups;
      const bool by_event = kind.by_event;
      auto* b = benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& state) {
        time_launch(state, groups, by_event, after_idle);
      });
      b->UseManualTime()->Unit(benchmark::kMicrosecond);
      // The pauses are not timed but take the wall clock, and the run lasts until this much time
      // was timed (0 would mean the default): short minimums keep the repetitions short.
      if (after_idle) b->MinTime(5e-4)->MinWarmUpTime(1e-6);
    }
  }
}

}  // namespace microbench
