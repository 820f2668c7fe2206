// Helpers shared by porta-train's tests: scratch directories, generated IDX files and image sets,
// running the porta-train program, and skipping a test with a reason.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "idx.h"

namespace train_test {

// A fresh directory, removed with everything in it when the object goes.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The bytes of an IDX file of unsigned bytes with these dimensions and data.
std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data);
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);
void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_file(const std::string& path);

// count 28x28 images that a small CNN learns in a few steps: class c is a bright 7x7 square at
// one of ten places (a 3 x 4 grid less two cells), on noise.
porta_train::ImageSet synthetic_set(int64_t count, uint64_t seed);
// Writes a set as <split>-images-idx3-ubyte.gz and <split>-labels-idx1-ubyte.gz in dir.
void write_split(const std::string& dir, const std::string& split,
                 const porta_train::ImageSet& set);

struct Run {
  int status = -1;  // exit status (-1 if it did not exit normally)
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs porta-train with args (each quoted for the shell) and NAME=VALUE environment settings.
Run run_porta_train(const std::vector<std::string>& args,
                    const std::vector<std::string>& environment = {});

// Marks the running test as skipped with a reason: main exits 77 (CTest's skip code) when no
// test failed and one was skipped. Callers return right after.
void skip(const std::string& reason);

}  // namespace train_test
