// Checkpoints: named tensors with shapes and dtypes in one versioned, checksummed, little-endian
// file. The format is specified in CHECKPOINT.md beside this file.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace porta_train {

// A file that cannot be written or read back as a valid checkpoint; the message names the file
// and what is wrong.
class checkpoint_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr char kCheckpointMagic[8] = {'P', 'O', 'R', 'T', 'A', 'C', 'K', 'P'};
constexpr uint32_t kCheckpointVersion = 1;

enum class TensorDtype : uint32_t { f32 = 0 };  // the codes of CHECKPOINT.md

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;  // product(shape) elements
};

// CRC-32 (IEEE 802.3, reflected, as zlib and PNG compute it), continuing from `crc` (0 to start).
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

// The file's bytes for these tensors. Throws checkpoint_error for an empty or too long name, a
// duplicate name, or values that do not match the shape.
std::vector<uint8_t> encode_checkpoint(const std::vector<Tensor>& tensors);
// Parses bytes written by encode_checkpoint; `what` names the source in messages. Throws
// checkpoint_error for a wrong magic or version, truncation, trailing bytes, a checksum mismatch
// and any field out of range.
std::vector<Tensor> decode_checkpoint(const std::vector<uint8_t>& bytes, const std::string& what);

// Writes through a temporary file of its own beside path, renamed into place, so a failed write
// leaves no partial file; where path is a link, the file it names is replaced. Where the rename
// fails, the finished temporary file stays, and the error names it.
void write_checkpoint(const std::string& path, const std::vector<Tensor>& tensors);
// Reads and decodes path; a file larger than max_bytes is refused before it is read.
std::vector<Tensor> read_checkpoint(const std::string& path, uint64_t max_bytes = UINT64_MAX);

std::string shape_string(const std::vector<int64_t>& shape);  // "[32, 1, 3, 3]"

}  // namespace porta_train
