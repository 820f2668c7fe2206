#include "checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "output_file.h"

namespace porta_train {

namespace {

constexpr size_t kMaxName = 1024;
constexpr uint32_t kMaxRank = 8;
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8;  // magic, version, tensor count, payload bytes

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[n] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

// Little-endian writes and reads, independent of the host's byte order.
class Writer {
 public:
  void u16(uint16_t v) { uint(v, 2); }
  void u32(uint32_t v) { uint(v, 4); }
  void u64(uint64_t v) { uint(v, 8); }
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  }
  std::vector<uint8_t> out;

 private:
  void uint(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
};

class Reader {
 public:
  Reader(const std::vector<uint8_t>& bytes, size_t end, const std::string& what)
      : bytes_(bytes), end_(end), what_(what) {}
  uint16_t u16(const char* field) { return static_cast<uint16_t>(uint(2, field)); }
  uint32_t u32(const char* field) { return static_cast<uint32_t>(uint(4, field)); }
  uint64_t u64(const char* field) { return uint(8, field); }
  const uint8_t* take(size_t n, const char* field) {
    need(n, field);
    const uint8_t* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  size_t position() const { return pos_; }
  void seek(size_t pos) { pos_ = pos; }

 private:
  void need(size_t n, const char* field) {
    if (end_ - pos_ < n) {
      throw checkpoint_error(what_ + ": corrupt: " + field + " at byte " + std::to_string(pos_) +
                             " runs past the end of the tensor data");
    }
  }
  uint64_t uint(int n, const char* field) {
    const uint8_t* p = take(static_cast<size_t>(n), field);
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(p[i]) << (8 * i);
    return v;
  }
  const std::vector<uint8_t>& bytes_;
  size_t end_;
  size_t pos_ = 0;
  const std::string& what_;
};

uint64_t element_count(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

}  // namespace

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = kCrcTable[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::vector<uint8_t> encode_checkpoint(const std::vector<Tensor>& tensors) {
  Writer w;
  w.bytes(kCheckpointMagic, sizeof kCheckpointMagic);
  w.u32(kCheckpointVersion);
  w.u32(static_cast<uint32_t>(tensors.size()));
  w.u64(0);  // payload bytes, patched below
  std::set<std::string> names;
  for (const Tensor& t : tensors) {
    if (t.name.empty() || t.name.size() > kMaxName) {
      throw checkpoint_error("tensor name '" + t.name + "' is empty or longer than " +
                             std::to_string(kMaxName) + " bytes");
    }
    if (!names.insert(t.name).second) throw checkpoint_error("duplicate tensor name " + t.name);
    if (t.shape.size() > kMaxRank) throw checkpoint_error(t.name + ": rank above 8");
    for (int64_t d : t.shape) {
      if (d < 0) throw checkpoint_error(t.name + ": negative dimension");
    }
    if (element_count(t.shape) != t.values.size()) {
      throw checkpoint_error(t.name + ": shape " + shape_string(t.shape) + " holds " +
                             std::to_string(element_count(t.shape)) + " values, given " +
                             std::to_string(t.values.size()));
    }
    w.u16(static_cast<uint16_t>(t.name.size()));
    w.bytes(t.name.data(), t.name.size());
    w.u32(static_cast<uint32_t>(TensorDtype::f32));
    w.u32(static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) w.u64(static_cast<uint64_t>(d));
    for (float v : t.values) w.u32(std::bit_cast<uint32_t>(v));
  }
  const uint64_t payload = w.out.size() - kHeaderBytes;
  for (int i = 0; i < 8; ++i) w.out[16 + i] = static_cast<uint8_t>(payload >> (8 * i));
  w.u32(crc32(w.out.data(), w.out.size()));
  return std::move(w.out);
}

namespace {

// The header's checks against the file's size, from its first bytes (head, at most the header):
// the magic, the version, and a payload that makes up the file exactly. Returns the tensor count
// and the payload's size.
std::pair<uint32_t, uint64_t> check_header(const std::vector<uint8_t>& head, uint64_t file_size,
                                           const std::string& what) {
  if (head.size() < sizeof kCheckpointMagic ||
      std::memcmp(head.data(), kCheckpointMagic, sizeof kCheckpointMagic) != 0) {
    throw checkpoint_error(what + ": not a Porta checkpoint (wrong magic)");
  }
  if (file_size < kHeaderBytes + 4 || head.size() < kHeaderBytes) {
    throw checkpoint_error(what + ": truncated: " + std::to_string(file_size) +
                           " bytes, shorter than the header");
  }
  Reader header(head, kHeaderBytes, what);
  header.take(sizeof kCheckpointMagic, "magic");
  const uint32_t version = header.u32("version");
  if (version != kCheckpointVersion) {
    throw checkpoint_error(what + ": checkpoint format version " + std::to_string(version) +
                           " is not supported (this build reads version " +
                           std::to_string(kCheckpointVersion) + ")");
  }
  const uint32_t count = header.u32("tensor count");
  const uint64_t payload = header.u64("payload size");
  const uint64_t room = file_size - kHeaderBytes - 4;  // what the file has for the payload
  if (payload != room) {
    throw checkpoint_error(what + ": " + (payload > room ? "truncated" : "trailing bytes") +
                           ": the header announces a payload of " + std::to_string(payload) +
                           " bytes, the file has room for " + std::to_string(room));
  }
  return {count, payload};
}

}  // namespace

std::vector<Tensor> decode_checkpoint(const std::vector<uint8_t>& bytes, const std::string& what) {
  const std::vector<uint8_t> head(bytes.begin(),
                                  bytes.begin() + std::min(bytes.size(), kHeaderBytes));
  const auto [count, payload] = check_header(head, bytes.size(), what);
  const size_t end = kHeaderBytes + static_cast<size_t>(payload);
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= uint32_t(bytes[end + i]) << (8 * i);
  const uint32_t actual = crc32(bytes.data(), end);
  if (stored != actual) {
    char detail[64];
    std::snprintf(detail, sizeof detail, "stored 0x%08x, computed 0x%08x", stored, actual);
    throw checkpoint_error(what + ": corrupt: checksum mismatch (" + detail + ")");
  }

  Reader r(bytes, end, what);
  r.seek(kHeaderBytes);
  std::vector<Tensor> tensors;
  std::set<std::string> names;
  for (uint32_t i = 0; i < count; ++i) {
    Tensor t;
    const uint16_t name_size = r.u16("name length");
    if (name_size == 0 || name_size > kMaxName) {
      throw checkpoint_error(what + ": corrupt: tensor " + std::to_string(i) +
                             " has a name length of " + std::to_string(name_size));
    }
    const uint8_t* name = r.take(name_size, "name");
    t.name.assign(reinterpret_cast<const char*>(name), name_size);
    if (!names.insert(t.name).second) {
      throw checkpoint_error(what + ": corrupt: tensor " + t.name + " appears twice");
    }
    const uint32_t dtype = r.u32("dtype");
    if (dtype != static_cast<uint32_t>(TensorDtype::f32)) {
      throw checkpoint_error(what + ": tensor " + t.name + " has dtype code " +
                             std::to_string(dtype) + ", not supported (0 = f32)");
    }
    const uint32_t rank = r.u32("rank");
    if (rank > kMaxRank) {
      throw checkpoint_error(what + ": corrupt: tensor " + t.name + " has rank " +
                             std::to_string(rank));
    }
    uint64_t elements = 1;
    for (uint32_t d = 0; d < rank; ++d) {
      const uint64_t dim = r.u64("dimension");
      // Every element takes 4 bytes of the payload, so no valid dimension exceeds payload / 4.
      if (dim > payload / 4 || (dim != 0 && elements > payload / 4 / dim)) {
        throw checkpoint_error(what + ": corrupt: tensor " + t.name +
                               " has more elements than the file holds");
      }
      elements *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const uint8_t* data = r.take(static_cast<size_t>(elements) * 4, "tensor data");
    t.values.resize(static_cast<size_t>(elements));
    for (size_t e = 0; e < t.values.size(); ++e) {
      const uint8_t* p = data + 4 * e;
      t.values[e] = std::bit_cast<float>(uint32_t(p[0]) | uint32_t(p[1]) << 8 |
                                         uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    }
    tensors.push_back(std::move(t));
  }
  if (r.position() != end) {
    throw checkpoint_error(what + ": corrupt: " + std::to_string(end - r.position()) +
                           " bytes after the last tensor");
  }
  return tensors;
}

void write_checkpoint(const std::string& name, const std::vector<Tensor>& tensors) {
  const std::vector<uint8_t> bytes = encode_checkpoint(tensors);
  porta_tools::write_whole_file<checkpoint_error>(
      name, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::vector<Tensor> read_checkpoint(const std::string& path, uint64_t max_bytes) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw checkpoint_error(path + ": a directory");
  if (!std::filesystem::is_regular_file(path, ec)) throw checkpoint_error(path + ": no such file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > max_bytes) {
    throw checkpoint_error(path + ": " + std::to_string(size) + " bytes, more than the " +
                           std::to_string(max_bytes) + " of a checkpoint of this model");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in || ec) throw checkpoint_error(path + ": cannot open");
  // The header first: a file that is no checkpoint, or not the size it announces, is refused
  // before the rest is read (a large one took its size in memory to be called the wrong magic).
  std::vector<uint8_t> bytes(std::min<uint64_t>(size, kHeaderBytes));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!in) throw checkpoint_error(path + ": read failed");
  check_header(bytes, size, path);
  bytes.resize(size);
  in.read(reinterpret_cast<char*>(bytes.data()) + kHeaderBytes,
          static_cast<std::streamsize>(size - kHeaderBytes));
  if (!in) throw checkpoint_error(path + ": read failed");
  return decode_checkpoint(bytes, path);
}

}  // namespace porta_train
