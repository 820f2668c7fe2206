// The IDX reader on arbitrary files, plain or gzip: it either throws data_error or returns an
// array of exactly the announced size.
#include <unistd.h>

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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = scratch_path();
  FILE* file = std::fopen(path.c_str(), "wb");
  if (!file) std::abort();
  if (size && std::fwrite(data, 1, size, file) != size) std::abort();
  std::fclose(file);
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
