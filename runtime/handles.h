// Checked handles. A handle is not a pointer the runtime dereferences: it encodes a type tag, a
// slot index and the slot's generation, so a destroyed, foreign or wrongly typed handle is
// recognised by arithmetic and a table lookup, and can never crash the runtime.
//
//   bits 63..56  type tag (never 0, so no real user-space address decodes)
//   bits 55..32  generation of the slot when the handle was issued (24 bits, never 0)
//   bits 31..0   slot index
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace porta {

static_assert(sizeof(void*) == 8, "handles are encoded in 64-bit pointers");

enum class HandleTag : uint8_t {
  kStream = 0xA1,
  kEvent = 0xA2,
  kModule = 0xA3,
  kKernel = 0xA4,
  kComm = 0xA5
};

// A table of live objects of one type. Lookups hand out shared ownership, so an object lives
// until every call using it has returned, even if another thread destroys its handle meanwhile.
template <typename T, HandleTag Tag>
class HandleTable {
 public:
  uintptr_t insert(std::shared_ptr<T> object) {
    std::lock_guard lock(mutex_);
    // Room for every slot in free_ and in remove_all's result, made before anything changes:
    // retiring handles, at shutdown too, then never allocates.
    const size_t slots = slots_.size() + (free_.empty() ? 1 : 0);
    free_.reserve(slots);
    removed_.reserve(slots);
    uint32_t index;
    if (!free_.empty()) {
      index = free_.back();
      free_.pop_back();
    } else {
      index = static_cast<uint32_t>(slots_.size());
      slots_.push_back(Slot{});
    }
    slots_[index].object = std::move(object);
    return encode(index, slots_[index].generation);
  }

  // The object behind a live handle of this table's type, or nullptr.
  std::shared_ptr<T> find(uintptr_t handle) const {
    std::lock_guard lock(mutex_);
    const Slot* slot = slot_of(handle);
    return slot ? slot->object : nullptr;
  }

  // Retires the handle; returns its object, or nullptr if the handle was not live.
  std::shared_ptr<T> remove(uintptr_t handle) {
    std::lock_guard lock(mutex_);
    Slot* slot = const_cast<Slot*>(slot_of(handle));
    if (!slot) return nullptr;
    return retire(static_cast<uint32_t>(handle & 0xFFFFFFFFu));
  }

  // Retires every live handle (at shutdown); returns their objects. Never allocates.
  std::vector<std::shared_ptr<T>> remove_all() noexcept {
    std::lock_guard lock(mutex_);
    for (uint32_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].object) removed_.push_back(retire(i));
    }
    return std::exchange(removed_, {});
  }

 private:
  struct Slot {
    std::shared_ptr<T> object;
    uint32_t generation = 1;
  };

  static uintptr_t encode(uint32_t index, uint32_t generation) {
    return (uintptr_t{static_cast<uint8_t>(Tag)} << 56) | (uintptr_t{generation} << 32) | index;
  }

  const Slot* slot_of(uintptr_t handle) const {
    if ((handle >> 56) != static_cast<uint8_t>(Tag)) return nullptr;
    uint32_t index = static_cast<uint32_t>(handle & 0xFFFFFFFFu);
    uint32_t generation = static_cast<uint32_t>((handle >> 32) & 0xFFFFFFu);
    if (index >= slots_.size()) return nullptr;
    const Slot& slot = slots_[index];
    return slot.object && slot.generation == generation ? &slot : nullptr;
  }

  // A slot that has issued its last generation is never reused: a new generation 1 would bring
  // its first handle, perhaps still held somewhere, back to life. It costs one Slot per 2^24 - 1
  // objects created in it.
  std::shared_ptr<T> retire(uint32_t index) {
    Slot& slot = slots_[index];
    if (slot.generation < kLastGeneration) {
      ++slot.generation;
      free_.push_back(index);
    }
    return std::move(slot.object);
  }

  static constexpr uint32_t kLastGeneration = 0xFFFFFFu;

  mutable std::mutex mutex_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  std::vector<std::shared_ptr<T>> removed_;  // empty; its capacity is remove_all's
};

}  // namespace porta
