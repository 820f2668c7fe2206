// IDX files (the format of MNIST and Fashion-MNIST), plain or gzip-compressed: a big-endian
// header (two zero bytes, a type code, the number of dimensions, then each dimension as a u32)
// followed by the elements in row-major order. Only unsigned-byte elements (type 0x08) are read,
// the only type these datasets use.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace porta_train {

// A file that cannot be read, or whose content is not what it must be; the message names the
// file and what is wrong.
class data_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;  // product(dims) bytes
};

// Reads an IDX file of unsigned bytes with `expected_rank` dimensions (gzip is detected from the
// content, not the name). Throws data_error for a missing or unreadable file, a corrupt or
// truncated gzip stream, a wrong magic, type or rank, a size that overflows, and fewer or more
// bytes than the header announces. check_dims, if given, sees the dimensions before any data is
// read, and may throw.
IdxArray read_idx(const std::string& path, uint32_t expected_rank,
                  const std::function<void(const std::vector<uint32_t>&)>& check_dims = {});

// Reads only the header of such a file: its dimensions.
std::vector<uint32_t> read_idx_dims(const std::string& path, uint32_t expected_rank);

// A labelled image set: count images of rows x cols bytes, and one label per image.
struct ImageSet {
  int64_t count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols
  std::vector<uint8_t> labels;  // count, each < classes
};

// Reads an images file (rank 3) and its labels file (rank 1). Throws data_error when either is
// bad, their counts differ, the set is empty, the images are not side x side (side 0: any), or a
// label is not below `classes`; all but the last before the images' data is read.
ImageSet read_image_set(const std::string& images_path, const std::string& labels_path, int classes,
                        uint32_t side = 0);

// The paths of a Fashion-MNIST split ("train" or "t10k") in dir: <split>-images-idx3-ubyte.gz
// (or without .gz where only the uncompressed file exists) and the labels likewise.
std::string idx_path(const std::string& dir, const std::string& split, const std::string& kind);

}  // namespace porta_train
