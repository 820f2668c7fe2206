// The op plugin's side of the ABI (porta_plugin.h, op plugin ABI 2): its interface made from the
// op table, and its per-stream storage.
#pragma once

#include <porta/porta_plugin.h>

#include <atomic>
#include <memory>

namespace porta::plugin {

// The interface of an op plugin whose slots are static members of Ops (functions, or constexpr
// pointers to functions): initialize, shutdown and supports_backend; optionally supports_device
// and release_stream_storage; and one per op it implements, named as its row of porta_op_table.h:
//   static porta_status_t relu_forward(const Op*, const porta_relu_forward_args_t*);
// (Op being porta_op_context_t).
// The ops Ops has no function for stay NULL, so a new row needs no change here or in a plugin
// that leaves it out.
template <class Ops>
constexpr porta_ops_interface_t ops_interface() {
  porta_ops_interface_t slots{};
  slots.struct_size = sizeof(slots);
  slots.initialize = Ops::initialize;
  slots.shutdown = Ops::shutdown;
  slots.supports_backend = Ops::supports_backend;
  if constexpr (requires { Ops::supports_device; }) {
    slots.supports_device = Ops::supports_device;
  }
  if constexpr (requires { Ops::release_stream_storage; }) {
    slots.release_stream_storage = Ops::release_stream_storage;
  }
#define PORTA_OP_REGISTER_(name, fields) \
  if constexpr (requires { Ops::name; }) slots.name = Ops::name;
  PORTA_OP_TABLE(PORTA_OP_REGISTER_)
#undef PORTA_OP_REGISTER_
  return slots;
}

// What the plugin keeps for the context's stream (porta_op_context_t.stream_storage), made by
// make() (a std::unique_ptr<T>) at its first use. Calls on one stream may race to make it: one
// wins, the others' are destroyed. The plugin's release_stream_storage gets it back as a T*.
template <class T, class Make>
T& stream_storage(const porta_op_context_t& context, Make&& make) {
  std::atomic_ref<void*> slot(*context.stream_storage);
  if (void* existing = slot.load(std::memory_order_acquire)) return *static_cast<T*>(existing);
  std::unique_ptr<T> made = make();
  void* expected = nullptr;
  if (slot.compare_exchange_strong(expected, made.get(), std::memory_order_acq_rel)) {
    return *made.release();
  }
  return *static_cast<T*>(expected);
}

}  // namespace porta::plugin
