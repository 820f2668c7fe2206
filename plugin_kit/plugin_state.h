// The slots every backend and collective engine writes the same way, around the one object of its
// own that libporta's context pointer holds: initialize makes it, shutdown deletes it, the other
// slots reach it through of(), and device_properties copies what the caller's struct holds.
//
//   using State = plugin::PluginState<Backend>;
//   porta_status_t initialize(porta_backend_context_t* out_context, int32_t* out_device_count) {
//     return State::initialize(out_context, out_device_count,
//                              [] { return std::make_unique<Backend>(Driver::open()); });
//   }
//   ... .shutdown = State::shutdown, .device_properties = State::device_properties, ...
#pragma once

#include <porta/porta_plugin.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "plugin_kit.h"

namespace porta::plugin {

template <typename State>
struct PluginState {
  static State& of(porta_backend_context_t context) noexcept {
    return *static_cast<State*>(context);
  }

  // A backend's initialize: make() returns the std::unique_ptr<State>, whose device_count() is
  // the backend's answer. Whatever make() throws is the status (guarded).
  template <typename Make>
  static porta_status_t initialize(porta_backend_context_t* out_context, int32_t* out_device_count,
                                   Make&& make) noexcept {
    return guarded("initialize", [&] {
      std::unique_ptr<State> state = make();
      *out_device_count = state->device_count();
      *out_context = state.release();
    });
  }

  // A collective engine's initialize, which has no devices of its own.
  template <typename Make>
  static porta_status_t initialize(porta_backend_context_t* out_context, Make&& make) noexcept {
    return guarded("initialize", [&] { *out_context = make().release(); });
  }

  static void shutdown(porta_backend_context_t context) noexcept {
    guarded("shutdown", [&] { delete static_cast<State*>(context); });
  }

  // Writes only the fields the caller's struct holds, keeping its struct_size, from
  // State::properties(device): a libporta built against a shorter struct reads no further.
  static porta_status_t device_properties(porta_backend_context_t context, int32_t device,
                                          porta_device_properties_t* out_properties) noexcept {
    return guarded("device_properties", [&] {
      const size_t caller_size = out_properties->struct_size;
      porta_device_properties_t full = of(context).properties(device);
      full.struct_size = caller_size;
      std::memcpy(out_properties, &full, std::min(caller_size, sizeof(full)));
    });
  }
};

}  // namespace porta::plugin
