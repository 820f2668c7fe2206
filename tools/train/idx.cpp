#include "idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

namespace porta_train {

namespace {

// A gzFile that reads plain files transparently and closes itself.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      throw data_error(path + ": no such file");
    }
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) throw data_error(path + ": cannot open: " + std::strerror(errno));
  }
  ~GzReader() {
    if (file_) gzclose(file_);
  }

  // Whether the file is read as is (not gzip data); meaningful after the first read.
  bool plain() { return gzdirect(file_) != 0; }
  uint64_t file_size() {
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(path_, ec);
    return ec ? 0 : size;
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to size bytes; returns how many were read (fewer only at the end of the data).
  size_t read(uint8_t* out, size_t size) {
    size_t done = 0;
    while (done < size) {
      const unsigned chunk =
          static_cast<unsigned>(std::min<size_t>(size - done, std::numeric_limits<int>::max()));
      const int got = gzread(file_, out + done, chunk);
      if (got < 0) fail();
      if (got == 0) {
        // gzread answers 0 both at the end and for a stream cut short; only gzerror tells.
        int code = Z_OK;
        gzerror(file_, &code);
        if (code != Z_OK && code != Z_STREAM_END) fail();
        break;
      }
      done += static_cast<size_t>(got);
    }
    return done;
  }

 private:
  [[noreturn]] void fail() {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    throw data_error(path_ + ": corrupt or truncated gzip data (" +
                     (message && *message ? message : "zlib error " + std::to_string(code)) + ")");
  }

  std::string path_;
  gzFile file_ = nullptr;
};

// Deflate's largest compression ratio: no gzip stream of n bytes inflates past 1032 n.
constexpr uint64_t kMaxDeflateRatio = 1032;

uint32_t big_endian_u32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

}  // namespace

IdxArray read_idx(const std::string& path, uint32_t expected_rank) {
  GzReader in(path);
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
  IdxArray out;
  std::vector<uint8_t> header(4 * size_t(expected_rank));
  if (in.read(header.data(), header.size()) != header.size()) {
    throw data_error(path + ": truncated in the IDX header");
  }
  uint64_t total = 1;
  for (uint32_t d = 0; d < expected_rank; ++d) {
    const uint32_t dim = big_endian_u32(&header[4 * d]);
    out.dims.push_back(dim);
    // Datasets of this kind are far below 2^40 bytes; a larger product is a corrupt header.
    if (dim != 0 && total > (uint64_t(1) << 40) / dim) {
      throw data_error(path + ": IDX dimensions are implausibly large (corrupt header)");
    }
    total *= dim;
  }
  // The header is checked against the file before anything is allocated for it, and the data is
  // read in chunks as it arrives, so a short file announcing a large array costs nothing.
  const uint64_t header_bytes = 4 + header.size();
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
  return out;
}

ImageSet read_image_set(const std::string& images_path, const std::string& labels_path,
                        int classes) {
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  if (images.dims[0] != labels.dims[0]) {
    throw data_error(images_path + " holds " + std::to_string(images.dims[0]) + " images but " +
                     labels_path + " holds " + std::to_string(labels.dims[0]) + " labels");
  }
  if (images.dims[0] == 0 || images.dims[1] == 0 || images.dims[2] == 0) {
    throw data_error(images_path + ": no images");
  }
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
