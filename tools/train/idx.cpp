#include "idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <new>
#include <utility>

namespace porta_train {

namespace {

// Reads a file as it is, or inflated where it is gzip data (its first two bytes 1f 8b), one
// member after another. zlib's inflate is driven directly rather than through gzread, which ends
// a stream whose last bytes (its trailer: checksum and size) are missing as if it were whole, and
// skips what follows the last member.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      throw data_error(path + ": no such file");
    }
    file_ = std::fopen(path.c_str(), "rb");
    if (!file_) throw data_error(path + ": cannot open: " + std::strerror(errno));
    refill();
    gzip_ = stream_.avail_in >= 2 && input_[0] == 0x1f && input_[1] == 0x8b;
    if (gzip_ && inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK) {
      std::fclose(file_);
      throw std::bad_alloc();
    }
  }
  ~GzReader() {
    if (gzip_) inflateEnd(&stream_);
    std::fclose(file_);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Whether the file is read as is (not gzip data).
  bool plain() const { return !gzip_; }
  uint64_t file_size() {
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(path_, ec);
    return ec ? 0 : size;
  }

  // Reads up to size bytes; returns how many were read (fewer only at the end of the data).
  size_t read(uint8_t* out, size_t size) {
    size_t done = 0;
    while (done < size) {
      if (stream_.avail_in == 0 && !refill()) break;
      if (!gzip_) {
        const size_t n = std::min<size_t>(size - done, stream_.avail_in);
        std::memcpy(out + done, stream_.next_in, n);
        stream_.next_in += n;
        stream_.avail_in -= static_cast<uInt>(n);
        done += n;
        continue;
      }
      if (ended_) {  // data after a member: another member, or garbage inflate refuses
        inflateReset(&stream_);
        ended_ = false;
      }
      stream_.next_out = out + done;
      stream_.avail_out = static_cast<uInt>(std::min<size_t>(size - done, UINT32_MAX));
      const int code = inflate(&stream_, Z_NO_FLUSH);
      done = static_cast<size_t>(stream_.next_out - out);
      if (code == Z_STREAM_END) {
        ended_ = true;
      } else if (code != Z_OK && code != Z_BUF_ERROR) {
        fail(stream_.msg ? stream_.msg : "zlib error " + std::to_string(code));
      }
    }
    return done;
  }

  // After the last read: gzip data must have ended with a whole member.
  void finish() {
    if (gzip_ && !ended_) fail("the stream ends early");
  }

 private:
  // More input, if the file has any; false at its end.
  bool refill() {
    const size_t got = std::fread(input_, 1, sizeof input_, file_);
    if (got == 0 && std::ferror(file_)) {
      throw data_error(path_ + ": cannot read: " + std::strerror(errno));
    }
    stream_.next_in = input_;
    stream_.avail_in = static_cast<uInt>(got);
    return got > 0;
  }
  [[noreturn]] void fail(const std::string& why) {
    throw data_error(path_ + ": corrupt or truncated gzip data (" + why + ")");
  }

  std::string path_;
  std::FILE* file_ = nullptr;
  bool gzip_ = false;
  bool ended_ = false;  // the last member so far ended whole
  z_stream stream_{};
  uint8_t input_[1 << 16];
};

// Deflate's largest compression ratio: no gzip stream of n bytes inflates past 1032 n.
constexpr uint64_t kMaxDeflateRatio = 1032;

uint32_t big_endian_u32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

}  // namespace

namespace {

// Reads and checks an IDX header (magic, type, rank, dimensions); returns the dimensions.
std::vector<uint32_t> read_header(GzReader& in, const std::string& path, uint32_t expected_rank) {
  uint8_t magic[4];
  if (in.read(magic, 4) != 4) throw data_error(path + ": truncated: shorter than an IDX header");
  if (magic[0] != 0 || magic[1] != 0) {
    throw data_error(path + ": not an IDX file (its first two bytes are not zero)");
  }
  if (magic[2] != 0x08) {
    char code[8];
    std::snprintf(code, sizeof code, "0x%02x", magic[2]);
    throw data_error(path + ": IDX element type " + code +
                     " is not supported (only 0x08, "
                     "unsigned bytes)");
  }
  if (magic[3] != expected_rank) {
    throw data_error(path + ": IDX file has " + std::to_string(magic[3]) +
                     " dimensions, expected " + std::to_string(expected_rank));
  }
  std::vector<uint8_t> header(4 * size_t(expected_rank));
  if (in.read(header.data(), header.size()) != header.size()) {
    throw data_error(path + ": truncated in the IDX header");
  }
  std::vector<uint32_t> dims;
  uint64_t total = 1;
  for (uint32_t d = 0; d < expected_rank; ++d) {
    const uint32_t dim = big_endian_u32(&header[4 * d]);
    dims.push_back(dim);
    // Datasets of this kind are far below 2^40 bytes; a larger product is a corrupt header.
    if (dim != 0 && total > (uint64_t(1) << 40) / dim) {
      throw data_error(path + ": IDX dimensions are implausibly large (corrupt header)");
    }
    total *= dim;
  }
  return dims;
}

}  // namespace

std::vector<uint32_t> read_idx_dims(const std::string& path, uint32_t expected_rank) {
  GzReader in(path);
  return read_header(in, path, expected_rank);
}

IdxArray read_idx(const std::string& path, uint32_t expected_rank,
                  const std::function<void(const std::vector<uint32_t>&)>& check_dims) {
  GzReader in(path);
  IdxArray out;
  out.dims = read_header(in, path, expected_rank);
  if (check_dims) check_dims(out.dims);
  uint64_t total = 1;
  for (uint32_t dim : out.dims) total *= dim;
  // The header is checked against the file before anything is allocated for it, and the data is
  // read in chunks as it arrives, so a short file announcing a large array costs nothing.
  const uint64_t header_bytes = 4 + 4 * uint64_t{expected_rank};
  if (in.plain()) {
    const uint64_t held = in.file_size() - header_bytes;
    if (total > held) {
      throw data_error(path + ": truncated: the header announces " + std::to_string(total) +
                       " bytes of data, the file holds " + std::to_string(held));
    }
    if (total < held) {
      throw data_error(path + ": more data than the header announces (" + std::to_string(total) +
                       " bytes; the file holds " + std::to_string(held) + ")");
    }
  } else if (total > in.file_size() * kMaxDeflateRatio) {
    throw data_error(path + ": truncated: the header announces " + std::to_string(total) +
                     " bytes of data, more than " + std::to_string(in.file_size()) +
                     " bytes of gzip data can hold");
  }
  constexpr size_t kChunk = size_t{1} << 20;
  size_t got = 0;
  while (got < total) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, total - got));
    out.data.resize(got + want);
    const size_t read = in.read(out.data.data() + got, want);
    got += read;
    if (read < want) break;
  }
  if (got != total) {
    throw data_error(path + ": truncated: the header announces " + std::to_string(total) +
                     " bytes of data, the file holds " + std::to_string(got));
  }
  uint8_t extra;
  if (in.read(&extra, 1) != 0) {
    throw data_error(path + ": more data than the header announces (" + std::to_string(total) +
                     " bytes)");
  }
  in.finish();
  return out;
}

ImageSet read_image_set(const std::string& images_path, const std::string& labels_path, int classes,
                        uint32_t side) {
  // The images' header, then the labels, then the images' data, whose sizes are checked against
  // both before any of it is read: a header announcing gigabytes of the wrong images costs
  // nothing.
  const auto check_images = [&](const std::vector<uint32_t>& dims) {
    if (dims[0] == 0 || dims[1] == 0 || dims[2] == 0) throw data_error(images_path + ": no images");
    if (side != 0 && (dims[1] != side || dims[2] != side)) {
      throw data_error(images_path + ": images are " + std::to_string(dims[1]) + "x" +
                       std::to_string(dims[2]) + ", the network takes " + std::to_string(side) +
                       "x" + std::to_string(side));
    }
  };
  check_images(read_idx_dims(images_path, 3));
  IdxArray labels = read_idx(labels_path, 1);
  IdxArray images = read_idx(images_path, 3, [&](const std::vector<uint32_t>& dims) {
    check_images(dims);
    if (dims[0] != labels.dims[0]) {
      throw data_error(images_path + " holds " + std::to_string(dims[0]) + " images but " +
                       labels_path + " holds " + std::to_string(labels.dims[0]) + " labels");
    }
  });
  for (size_t i = 0; i < labels.data.size(); ++i) {
    if (labels.data[i] >= classes) {
      throw data_error(labels_path + ": label " + std::to_string(labels.data[i]) + " of item " +
                       std::to_string(i) + " is not below " + std::to_string(classes));
    }
  }
  ImageSet set;
  set.count = images.dims[0];
  set.rows = images.dims[1];
  set.cols = images.dims[2];
  set.pixels = std::move(images.data);
  set.labels = std::move(labels.data);
  return set;
}

std::string idx_path(const std::string& dir, const std::string& split, const std::string& kind) {
  const std::string base = dir + "/" + split + "-" + kind + "-ubyte";
  std::error_code ec;
  if (!std::filesystem::exists(base + ".gz", ec) && std::filesystem::exists(base, ec)) return base;
  return base + ".gz";
}

}  // namespace porta_train
