// runtime/handles.h on its own: the checked handles' generations.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#include <cstdint>
#include <memory>

#include "handles.h"

using Table = porta::HandleTable<int, porta::HandleTag::kEvent>;

TEST_CASE("handles: a destroyed handle stays stale however often its slot is reused",
          "[handles]") {
  Table table;
  const uintptr_t first = table.insert(std::make_shared<int>(1));
  REQUIRE(table.remove(first) != nullptr);
  // One slot, reused for generations 2 to 2^24 - 1, the last the 24 bits of a handle hold.
  const auto object = std::make_shared<int>(0);
  uint64_t elsewhere = 0;
  for (uint32_t generation = 2; generation < (1u << 24); ++generation) {
    const uintptr_t handle = table.insert(object);
    elsewhere += (handle & 0xFFFFFFFFu) != (first & 0xFFFFFFFFu);
    table.remove(handle);
  }
  REQUIRE(elsewhere == 0);
  // That slot has issued its last generation: the next object gets another, and the first
  // handle, whose generation a reused slot would issue again, stays stale.
  const uintptr_t fresh = table.insert(std::make_shared<int>(2));
  CHECK(fresh != first);
  CHECK((fresh & 0xFFFFFFFFu) != (first & 0xFFFFFFFFu));
  CHECK(table.find(first) == nullptr);
  CHECK(table.remove(first) == nullptr);
  REQUIRE(table.find(fresh) != nullptr);
  CHECK(*table.find(fresh) == 2);
}
