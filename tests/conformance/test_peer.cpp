// Two devices of one backend: copies between their memory on a stream of either, ordered after
// the stream's earlier work, and a stream of one waiting on an event of the other. Runs where
// the backend has two devices (several GPUs, or PORTA_CPU_DEVICES=2).
#include "common.h"

using namespace porta_test;

TEST_CASE("peer: copies between devices and event waits across them", "[peer][multi-device]") {
  const std::vector<porta_device_t> all = devices();
  if (all.size() < 2) {
    WARN("only one device of backend " << backend_name() << ": no copies between devices");
    return;
  }
  constexpr size_t kSize = 300007;
  const porta_device_t d0 = all[0], d1 = all[1];
  int32_t direct = -1;
  PT_REQUIRE_OK(porta_device_can_access_peer(d0, d1, &direct));
  CHECK((direct == 0 || direct == 1));
  Stream s0(d0), s1(d1);
  Event written(d0);
  Buffer b0(d0, kSize), b1(d1, kSize), back(d0, kSize);
  const std::vector<uint8_t> source = pattern(kSize, 3);
  PT_REQUIRE_OK(porta_memcpy_async(b0.get(), source.data(), kSize, s0.get()));
  PT_REQUIRE_OK(porta_event_record(written.get(), s0.get()));
  PT_REQUIRE_OK(porta_stream_wait_event(s1.get(), written.get()));
  PT_REQUIRE_OK(porta_memset_async(b1.get(), 0x33, kSize, s1.get()));
  PT_REQUIRE_OK(porta_memcpy_async(b1.get(), b0.get(), kSize / 2, s1.get()));  // on d1's stream
  PT_REQUIRE_OK(porta_stream_synchronize(s1.get()));
  PT_REQUIRE_OK(porta_memcpy_async(back.get(), b1.get(), kSize, s0.get()));  // on d0's stream
  PT_REQUIRE_OK(porta_stream_synchronize(s0.get()));
  std::vector<uint8_t> expected = source;
  std::fill(expected.begin() + kSize / 2, expected.end(), uint8_t{0x33});
  CHECK(download(back.get(), kSize) == expected);
  PT_REQUIRE_OK(porta_memcpy(b1.get(), b0.get(), kSize));  // blocking
  CHECK(download(b1.get(), kSize) == source);
}
