#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "rng.h"
#include "train_test.h"

namespace train_test {

std::string g_skip_reason;  // read by main

ScratchDir::ScratchDir() {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          ("porta-train-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims,
                               const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out{0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(d >> shift));
  }
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + path);
  const int written = bytes.empty() ? 0 : gzwrite(f, bytes.data(), unsigned(bytes.size()));
  gzclose(f);
  if (written != int(bytes.size())) throw std::runtime_error("gzwrite failed on " + path);
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

porta_train::ImageSet synthetic_set(int64_t count, uint64_t seed) {
  porta_train::Rng rng(seed);
  porta_train::ImageSet set;
  set.count = count, set.rows = 28, set.cols = 28;
  set.pixels.resize(size_t(count) * 784);
  set.labels.resize(size_t(count));
  for (int64_t i = 0; i < count; ++i) {
    const int label = int(rng.below(10));
    set.labels[size_t(i)] = uint8_t(label);
    uint8_t* image = &set.pixels[size_t(i) * 784];
    for (int p = 0; p < 784; ++p) image[p] = uint8_t(rng.below(80));
    const int cell = label < 5 ? label : label + 1;  // cells 0-4 and 6-10 of a 3 x 4 grid
    const int top = 1 + (cell / 4) * 9 + int(rng.below(3)), left = 1 + (cell % 4) * 7;
    for (int r = 0; r < 6; ++r) {
      for (int c = 0; c < 6; ++c) image[(top + r) * 28 + left + c] = uint8_t(180 + rng.below(76));
    }
  }
  return set;
}

void write_split(const std::string& dir, const std::string& split,
                 const porta_train::ImageSet& set) {
  write_gzip(dir + "/" + split + "-images-idx3-ubyte.gz",
             idx_bytes({uint32_t(set.count), 28, 28}, set.pixels));
  write_gzip(dir + "/" + split + "-labels-idx1-ubyte.gz",
             idx_bytes({uint32_t(set.count)}, set.labels));
}

namespace {
std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}
}  // namespace

Run run_porta_train(const std::vector<std::string>& args,
                    const std::vector<std::string>& environment) {
  ScratchDir scratch;
  const std::string err_path = scratch.file("stderr");
  std::string command = "env";
  // append() rather than " " + s: GCC 12 warns falsely (-Wrestrict) on the latter.
  for (const std::string& e : environment) command.append(" ").append(quote(e));
  command.append(" ").append(quote(PORTA_TRAIN_EXE));
  for (const std::string& a : args) command.append(" ").append(quote(a));
  command.append(" 2>").append(quote(err_path));
  Run run;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("popen failed for " + command);
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) run.out.append(buffer, n);
  const int status = pclose(pipe);
  run.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  const std::vector<uint8_t> err = read_file(err_path);
  run.err.assign(err.begin(), err.end());
  UNSCOPED_INFO("$ " << command << "\nexit status " << run.status << "\nstdout: " << run.out
                     << "\nstderr: " << run.err);
  return run;
}

void skip(const std::string& reason) {
  g_skip_reason = reason;
  WARN("SKIPPED: " << reason);
}

}  // namespace train_test
