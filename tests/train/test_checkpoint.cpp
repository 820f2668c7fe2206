// The checkpoint format (tools/train/CHECKPOINT.md): CRC-32, a round trip bit for bit, and
// rejection of every kind of damaged file: a flipped byte anywhere, truncation at any length, a
// wrong magic or version, trailing bytes, and tensors the model does not expect.
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <porta/porta.hpp>

#include "checkpoint.h"
#include "model.h"
#include "train_test.h"

using namespace porta_train;
using namespace train_test;
using Catch::Matchers::Contains;

namespace {

std::vector<Tensor> sample_tensors() {
  Tensor a{"layer.weight", {2, 3}, {1.5f, -2.0f, 0.0f, -0.0f, 1e-38f, 3.25e7f}};
  Tensor b{"layer.bias", {3}, {std::numeric_limits<float>::infinity(), 0.1f, -7.0f}};
  Tensor c{"scalar", {}, {42.0f}};
  return {a, b, c};
}

// Rewrites the trailing CRC so that only the field under test is wrong.
void fix_crc(std::vector<uint8_t>& bytes) {
  const uint32_t crc = crc32(bytes.data(), bytes.size() - 4);
  for (int i = 0; i < 4; ++i) bytes[bytes.size() - 4 + i] = uint8_t(crc >> (8 * i));
}

}  // namespace

TEST_CASE("checkpoint: CRC-32 matches the standard check values", "[checkpoint]") {
  CHECK(crc32("123456789", 9) == 0xCBF43926u);
  CHECK(crc32("", 0) == 0u);
  // Continuing from a previous value equals one pass.
  CHECK(crc32("6789", 4, crc32("12345", 5)) == 0xCBF43926u);
}

TEST_CASE("checkpoint: round trip through a file, bit for bit", "[checkpoint]") {
  ScratchDir dir;
  const std::vector<Tensor> tensors = sample_tensors();
  write_checkpoint(dir.file("a.ckpt"), tensors);
  CHECK_FALSE(std::filesystem::exists(dir.file("a.ckpt.partial")));
  const std::vector<Tensor> back = read_checkpoint(dir.file("a.ckpt"));
  REQUIRE(back.size() == tensors.size());
  for (size_t i = 0; i < back.size(); ++i) {
    CHECK(back[i].name == tensors[i].name);
    CHECK(back[i].shape == tensors[i].shape);
    REQUIRE(back[i].values.size() == tensors[i].values.size());
    for (size_t e = 0; e < back[i].values.size(); ++e) {
      CHECK(std::bit_cast<uint32_t>(back[i].values[e]) ==
            std::bit_cast<uint32_t>(tensors[i].values[e]));
    }
  }
  // The layout of CHECKPOINT.md, little-endian: magic, version 1, 3 tensors, the payload size.
  const std::vector<uint8_t> bytes = read_file(dir.file("a.ckpt"));
  CHECK(std::memcmp(bytes.data(), "PORTACKP", 8) == 0);
  CHECK(bytes[8] == 1);
  CHECK(bytes[12] == 3);
  uint64_t payload = 0;
  for (int i = 0; i < 8; ++i) payload |= uint64_t(bytes[16 + i]) << (8 * i);
  CHECK(payload + 24 + 4 == bytes.size());
  CHECK(bytes[24] == 12);  // the first name's length, then the name
  CHECK(std::memcmp(&bytes[26], "layer.weight", 12) == 0);
}

TEST_CASE("checkpoint: one that cannot replace its file is kept and named", "[checkpoint]") {
  ScratchDir dir;
  // A directory that is not empty cannot be renamed over.
  const std::string occupied = dir.file("occupied");
  std::filesystem::create_directories(std::filesystem::path(occupied) / "inside");
  std::string message;
  try {
    write_checkpoint(occupied, sample_tensors());
  } catch (const checkpoint_error& e) {
    message = e.what();
  }
  INFO(message);
  const std::string kept = "what was written is kept in ";
  const size_t at = message.find(kept);
  REQUIRE(at != std::string::npos);
  const std::string file = message.substr(at + kept.size());
  CHECK(std::filesystem::equivalent(std::filesystem::path(file).parent_path(), dir.path()));
  CHECK(read_checkpoint(file).size() == sample_tensors().size());
  CHECK(std::filesystem::is_directory(occupied));
}

TEST_CASE("checkpoint: every flipped byte is detected", "[checkpoint]") {
  const std::vector<uint8_t> good = encode_checkpoint(sample_tensors());
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t mask : {uint8_t(0x01), uint8_t(0x80)}) {
      std::vector<uint8_t> bad = good;
      bad[i] ^= mask;
      INFO("byte " << i << " ^ " << int(mask));
      CHECK_THROWS_AS(decode_checkpoint(bad, "flipped"), checkpoint_error);
    }
  }
  std::vector<uint8_t> bad = good;
  bad[40] ^= 0x10;  // inside the tensor data
  CHECK_THROWS_WITH(decode_checkpoint(bad, "x.ckpt"),
                    Contains("x.ckpt") && Contains("checksum mismatch"));
}

TEST_CASE("checkpoint: truncation at any length and trailing bytes are rejected", "[checkpoint]") {
  const std::vector<uint8_t> good = encode_checkpoint(sample_tensors());
  for (size_t n = 0; n < good.size(); ++n) {
    INFO("truncated to " << n << " of " << good.size() << " bytes");
    const std::vector<uint8_t> part(good.begin(), good.begin() + std::ptrdiff_t(n));
    CHECK_THROWS_AS(decode_checkpoint(part, "cut"), checkpoint_error);
  }
  const std::vector<uint8_t> part(good.begin(), good.end() - 10);
  CHECK_THROWS_WITH(decode_checkpoint(part, "cut"), Contains("truncated"));
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  CHECK_THROWS_WITH(decode_checkpoint(longer, "long"), Contains("trailing bytes"));

  ScratchDir dir;
  write_file(dir.file("cut.ckpt"), part);
  CHECK_THROWS_WITH(read_checkpoint(dir.file("cut.ckpt")), Contains("cut.ckpt: truncated"));
  CHECK_THROWS_WITH(read_checkpoint(dir.file("absent.ckpt")), Contains("no such file"));
  // A payload size near 2^64 is reported as it stands, not as a wrapped total.
  std::vector<uint8_t> huge = good;
  for (int i = 0; i < 8; ++i) huge[16 + i] = 0xff;
  CHECK_THROWS_WITH(decode_checkpoint(huge, "huge"),
                    Contains("truncated: the header announces a payload of 18446744073709551615"));
  // A file is refused from its header, before the rest is read: one far larger than it says.
  write_file(dir.file("large.ckpt"), good);
  std::filesystem::resize_file(dir.file("large.ckpt"), uint64_t{1} << 40);  // sparse
  CHECK_THROWS_WITH(read_checkpoint(dir.file("large.ckpt")), Contains("trailing bytes"));
}

TEST_CASE("checkpoint: wrong magic and wrong version are rejected", "[checkpoint]") {
  std::vector<uint8_t> bytes = encode_checkpoint(sample_tensors());
  std::vector<uint8_t> bad = bytes;
  bad[0] = 'X';
  fix_crc(bad);
  CHECK_THROWS_WITH(decode_checkpoint(bad, "m"), Contains("not a Porta checkpoint"));
  bad = bytes;
  bad[8] = 2;  // version 2, with a checksum that matches: the version check itself rejects it
  fix_crc(bad);
  CHECK_THROWS_WITH(decode_checkpoint(bad, "v"), Contains("version 2 is not supported"));
  bad = bytes;
  bad[8] = 0;
  bad[11] = 1;
  fix_crc(bad);
  CHECK_THROWS_WITH(decode_checkpoint(bad, "v"), Contains("version 16777216"));
}

TEST_CASE("checkpoint: malformed fields behind a valid checksum are rejected", "[checkpoint]") {
  const std::vector<uint8_t> good = encode_checkpoint(sample_tensors());
  std::vector<uint8_t> bad = good;
  bad[12] = 4;  // one tensor more than the file holds
  fix_crc(bad);
  CHECK_THROWS_WITH(decode_checkpoint(bad, "c"), Contains("runs past the end"));
  bad = good;
  bad[12] = 2;  // one fewer: the third tensor's bytes are left over
  fix_crc(bad);
  CHECK_THROWS_WITH(decode_checkpoint(bad, "c"), Contains("after the last tensor"));
  bad = good;
  bad[24 + 2 + 12] = 7;  // the first tensor's dtype code
  fix_crc(bad);
  CHECK_THROWS_WITH(decode_checkpoint(bad, "c"), Contains("dtype code 7"));
  bad = good;
  bad[24 + 2 + 12 + 4 + 4 + 7] = 0x40;  // the first dimension, to 2^62
  fix_crc(bad);
  CHECK_THROWS_WITH(decode_checkpoint(bad, "c"), Contains("more elements than the file holds"));
}

TEST_CASE("checkpoint: writing rejects tensors that do not match their shapes", "[checkpoint]") {
  CHECK_THROWS_WITH(encode_checkpoint({{"a", {2, 2}, {1, 2, 3}}}), Contains("holds 4 values"));
  CHECK_THROWS_WITH(encode_checkpoint({{"a", {1}, {1}}, {"a", {1}, {2}}}), Contains("duplicate"));
  CHECK_THROWS_WITH(encode_checkpoint({{"", {1}, {1}}}), Contains("empty"));
}

TEST_CASE("checkpoint: the model loads its own parameters and rejects wrong shapes or names",
          "[checkpoint][model]") {
  const porta_device_t device = porta::default_device();
  porta::stream s(device);
  Model a(device, 8, Precision::f32, false), b(device, 8, Precision::f32, false);
  a.initialize(1);
  b.initialize(2);
  const std::vector<Tensor> params = a.parameters(s);
  ScratchDir dir;
  write_checkpoint(dir.file("m.ckpt"), params);
  b.load(read_checkpoint(dir.file("m.ckpt")), s);
  const std::vector<Tensor> loaded = b.parameters(s);
  REQUIRE(loaded.size() == params.size());
  for (size_t i = 0; i < params.size(); ++i) CHECK(loaded[i].values == params[i].values);

  // A wrong shape, a wrong name or a missing tensor is rejected before anything changes.
  Model c(device, 8, Precision::f32, false);
  c.initialize(3);
  const std::vector<Tensor> before = c.parameters(s);
  std::vector<Tensor> wrong = params;
  wrong[0].shape = {16, 1, 3, 3};
  wrong[0].values.resize(16 * 9);
  CHECK_THROWS_WITH(c.load(wrong, s), Contains("conv1.weight has shape [16, 1, 3, 3]") &&
                                          Contains("expects [32, 1, 3, 3]"));
  wrong = params;
  wrong[7].name = "fc2.b";
  CHECK_THROWS_WITH(c.load(wrong, s), Contains("no tensor named fc2.bias"));
  wrong = params;
  wrong.pop_back();
  CHECK_THROWS_WITH(c.load(wrong, s), Contains("holds 7 tensors"));
  for (float bad : {std::nanf(""), INFINITY}) {  // a weight that is not finite, in the last tensor
    wrong = params;
    wrong.back().values[1] = bad;
    CHECK_THROWS_WITH(c.load(wrong, s), Contains("at index 1: weights must be finite"));
  }
  const std::vector<Tensor> after = c.parameters(s);
  for (size_t i = 0; i < before.size(); ++i) CHECK(after[i].values == before[i].values);
}
