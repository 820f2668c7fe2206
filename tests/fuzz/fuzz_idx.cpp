// The IDX reader on arbitrary files, plain or gzip: it either throws data_error or returns an
// array of exactly the announced size.
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "idx.h"

namespace {

// A file of this process's own, rewritten for every input.
const std::string& scratch_path() {
  static const std::string path = [] {
    char name[] = "/tmp/porta-fuzz-idx-XXXXXX";
    const int fd = mkstemp(name);
    if (fd < 0) std::abort();
    close(fd);
    return std::string(name);
  }();
  return path;
}

// The bytes the header announces, read the way read_idx reads it (through zlib); 0 when the
// header is incomplete.
uint64_t announced_bytes(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) return 0;
  uint8_t header[4 + 4 * 255];
  const int got = gzread(file, header, sizeof header);
  gzclose(file);
  if (got < 4) return 0;
  const int rank = header[3];
  if (got < 4 + 4 * rank) return 0;
  uint64_t total = 1;
  for (int d = 0; d < rank; ++d) {
    const uint8_t* p = header + 4 + 4 * d;
    const uint64_t dim = uint64_t(p[0]) << 24 | uint64_t(p[1]) << 16 | uint64_t(p[2]) << 8 | p[3];
    if (dim != 0 && total > (uint64_t(1) << 40) / dim) return uint64_t(1) << 40;
    total *= dim;
  }
  return total;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = scratch_path();
  FILE* file = std::fopen(path.c_str(), "wb");
  if (!file) std::abort();
  if (size && std::fwrite(data, 1, size, file) != size) std::abort();
  std::fclose(file);
  // read_idx sizes its buffer from the header before reading the data: a header announcing more
  // than the fuzzer's memory limit allows is left out here, so that limit watches the parser.
  if (announced_bytes(path) > (uint64_t(64) << 20)) return 0;
  const uint32_t rank = size > 3 ? data[3] : 1;
  try {
    const porta_train::IdxArray array = porta_train::read_idx(path, rank);
    uint64_t total = 1;
    for (uint32_t dim : array.dims) total *= dim;
    if (array.dims.size() != rank || array.data.size() != total) std::abort();
  } catch (const porta_train::data_error&) {
  }
  return 0;
}
