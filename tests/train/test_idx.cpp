// The IDX reader on files the test writes: good ones (plain and gzip), and truncated, wrong-magic,
// wrong-rank, oversized and mismatched ones, each rejected with a message that says what is wrong.
#include <catch2/catch.hpp>

#include "idx.h"
#include "train_test.h"

using namespace train_test;
using Catch::Matchers::Contains;
using porta_train::data_error;
using porta_train::read_idx;
using porta_train::read_image_set;

namespace {
std::vector<uint8_t> iota_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(i * 7 + 3);
  return v;
}
}  // namespace

TEST_CASE("idx: reads plain and gzip files", "[idx]") {
  ScratchDir dir;
  const std::vector<uint8_t> data = iota_bytes(3 * 5 * 4);
  const std::vector<uint8_t> bytes = idx_bytes({3, 5, 4}, data);
  write_file(dir.file("plain"), bytes);
  write_gzip(dir.file("packed.gz"), bytes);
  for (const std::string name : {"plain", "packed.gz"}) {
    INFO(name);
    const porta_train::IdxArray a = read_idx(dir.file(name), 3);
    CHECK(a.dims == std::vector<uint32_t>{3, 5, 4});
    CHECK(a.data == data);
  }
}

TEST_CASE("idx: an image set and its labels", "[idx]") {
  ScratchDir dir;
  const porta_train::ImageSet set = synthetic_set(12, 5);
  write_split(dir.path().string(), "train", set);
  const porta_train::ImageSet back =
      read_image_set(porta_train::idx_path(dir.path().string(), "train", "images-idx3"),
                     porta_train::idx_path(dir.path().string(), "train", "labels-idx1"), 10);
  CHECK(back.count == 12);
  CHECK(back.rows == 28);
  CHECK(back.cols == 28);
  CHECK(back.pixels == set.pixels);
  CHECK(back.labels == set.labels);
}

TEST_CASE("idx: truncated files are rejected", "[idx]") {
  ScratchDir dir;
  const std::vector<uint8_t> bytes = idx_bytes({10, 28, 28}, iota_bytes(10 * 28 * 28));
  for (size_t cut : {size_t(0), size_t(3), size_t(9), size_t(16), bytes.size() - 1}) {
    INFO("cut to " << cut << " bytes");
    const std::vector<uint8_t> part(bytes.begin(), bytes.begin() + std::ptrdiff_t(cut));
    write_file(dir.file("plain"), part);
    CHECK_THROWS_WITH(read_idx(dir.file("plain"), 3), Contains("truncated"));
    write_gzip(dir.file("packed.gz"), part);
    CHECK_THROWS_WITH(read_idx(dir.file("packed.gz"), 3), Contains("truncated"));
  }
  // A gzip stream cut short: zlib's own error, or the short count, but never success.
  write_gzip(dir.file("whole.gz"), bytes);
  std::vector<uint8_t> packed = read_file(dir.file("whole.gz"));
  const std::vector<uint8_t> whole = packed;
  packed.resize(packed.size() / 2);
  write_file(dir.file("cut.gz"), packed);
  CHECK_THROWS_AS(read_idx(dir.file("cut.gz"), 3), data_error);
  // Cut by the last few bytes, its trailer (checksum and size) or some of it: the data may
  // inflate whole, and only the stream's end tells. And data after the last member is refused.
  write_file(dir.file("junk.gz"), [&] {
    std::vector<uint8_t> junk = whole;
    junk.insert(junk.end(), {'j', 'u', 'n', 'k'});
    return junk;
  }());
  CHECK_THROWS_WITH(read_idx(dir.file("junk.gz"), 3), Contains("corrupt or truncated gzip"));
  for (size_t cut = 1; cut <= 10; ++cut) {
    INFO("the last " << cut << " bytes cut");
    write_file(dir.file("cut.gz"), {whole.begin(), whole.end() - std::ptrdiff_t(cut)});
    CHECK_THROWS_WITH(read_idx(dir.file("cut.gz"), 3), Contains("truncated"));
  }
}

TEST_CASE("idx: wrong magic, type or rank, and extra data are rejected", "[idx]") {
  ScratchDir dir;
  std::vector<uint8_t> bytes = idx_bytes({4, 2, 2}, iota_bytes(16));
  std::vector<uint8_t> bad = bytes;
  bad[0] = 0x1f;
  write_file(dir.file("magic"), bad);
  CHECK_THROWS_WITH(read_idx(dir.file("magic"), 3), Contains("not an IDX file"));
  bad = bytes;
  bad[2] = 0x0D;  // float elements
  write_file(dir.file("type"), bad);
  CHECK_THROWS_WITH(read_idx(dir.file("type"), 3), Contains("element type 0x0d"));
  write_file(dir.file("rank"), bytes);
  CHECK_THROWS_WITH(read_idx(dir.file("rank"), 1), Contains("3 dimensions, expected 1"));
  bad = bytes;
  bad.push_back(0);
  write_file(dir.file("long"), bad);
  CHECK_THROWS_WITH(read_idx(dir.file("long"), 3), Contains("more data than the header"));
  bad = idx_bytes({0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {});
  write_file(dir.file("huge"), bad);
  CHECK_THROWS_WITH(read_idx(dir.file("huge"), 3), Contains("implausibly large"));
  CHECK_THROWS_WITH(read_idx(dir.file("absent"), 3), Contains("no such file"));
}

TEST_CASE("idx: a short file announcing a huge array is rejected before allocating it", "[idx]") {
  ScratchDir dir;
  // 16 bytes announcing 2^16 x 2^12 x 2^12 = 2^40 bytes: within the plausible bound, so only the
  // file's size can tell. Reading it must not try to allocate that (the test would run out of
  // memory or time).
  const std::vector<uint8_t> bytes = idx_bytes({1u << 16, 1u << 12, 1u << 12}, {});
  REQUIRE(bytes.size() == 16);
  write_file(dir.file("plain"), bytes);
  CHECK_THROWS_WITH(read_idx(dir.file("plain"), 3),
                    Contains("truncated") && Contains("1099511627776") && Contains("holds 0"));
  write_gzip(dir.file("packed.gz"), bytes);
  CHECK_THROWS_WITH(read_idx(dir.file("packed.gz"), 3),
                    Contains("truncated") && Contains("gzip data can hold"));
  // Announcing what gzip data of its size could hold: read as it arrives, refused at its end.
  const std::vector<uint8_t> small = idx_bytes({10, 10, 10}, {});
  write_gzip(dir.file("short.gz"), small);
  CHECK_THROWS_WITH(read_idx(dir.file("short.gz"), 3), Contains("truncated"));
}

TEST_CASE("idx: image sets with mismatched counts or bad labels are rejected", "[idx]") {
  ScratchDir dir;
  write_file(dir.file("images"), idx_bytes({3, 28, 28}, iota_bytes(3 * 784)));
  write_file(dir.file("labels2"), idx_bytes({2}, {1, 2}));
  write_file(dir.file("labels_bad"), idx_bytes({3}, {1, 10, 2}));
  CHECK_THROWS_WITH(read_image_set(dir.file("images"), dir.file("labels2"), 10),
                    Contains("holds 3 images but") && Contains("holds 2 labels"));
  CHECK_THROWS_WITH(read_image_set(dir.file("images"), dir.file("labels_bad"), 10),
                    Contains("label 10 of item 1"));
  // The sizes are checked from the images' header, before their data is read: headers with no
  // data behind them are refused for their sizes, not as truncated.
  write_file(dir.file("huge"), idx_bytes({3, 4096, 4096}, {}));
  CHECK_THROWS_WITH(read_image_set(dir.file("huge"), dir.file("labels2"), 10, 28),
                    Contains("images are 4096x4096, the network takes 28x28"));
  write_file(dir.file("many"), idx_bytes({1000000, 28, 28}, {}));
  CHECK_THROWS_WITH(read_image_set(dir.file("many"), dir.file("labels2"), 10, 28),
                    Contains("holds 1000000 images but"));
}
