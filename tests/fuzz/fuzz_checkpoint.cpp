// The checkpoint decoder on arbitrary bytes: it either throws checkpoint_error or returns tensors
// that encode and decode back to themselves.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "checkpoint.h"

namespace {

bool same(const std::vector<porta_train::Tensor>& a, const std::vector<porta_train::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].shape != b[i].shape ||
        a[i].values.size() != b[i].values.size() ||
        std::memcmp(a[i].values.data(), b[i].values.data(), a[i].values.size() * sizeof(float)) !=
            0) {
      return false;
    }
  }
  return true;
}

void decode(const std::vector<uint8_t>& bytes) {
  std::vector<porta_train::Tensor> tensors;
  try {
    tensors = porta_train::decode_checkpoint(bytes, "input");
  } catch (const porta_train::checkpoint_error&) {
    return;
  }
  const auto again =
      porta_train::decode_checkpoint(porta_train::encode_checkpoint(tensors), "again");
  if (!same(tensors, again)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  decode(bytes);
  // The same bytes with a correct checksum in their last four, so that mutations reach the
  // record parser behind the CRC check.
  if (bytes.size() >= 4) {
    const uint32_t crc = porta_train::crc32(bytes.data(), bytes.size() - 4);
    for (int i = 0; i < 4; ++i) bytes[bytes.size() - 4 + i] = uint8_t(crc >> (8 * i));
    decode(bytes);
  }
  return 0;
}
