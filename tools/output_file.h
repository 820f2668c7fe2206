// How the tools write their output files (checkpoints, predictions, reports): whole or not at
// all, through links to the file they name, with the checks that can be made before the work.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace porta_tools {

// What write_whole_file adds to a name for the file it writes first.
inline constexpr std::string_view kPartialSuffix = ".partial.XXXXXX";

// Where a file named path is written: an absolute path with every link followed, the last one
// too where what it names does not exist yet (std::filesystem::weakly_canonical stops there,
// and a rename would then replace the link). A loop of links is an error.
inline std::filesystem::path output_target(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path at = fs::absolute(path);
  for (int hops = 0;; ++hops) {
    std::error_code ec;
    if (!fs::is_symlink(fs::symlink_status(at, ec))) break;
    if (hops == 40) throw std::runtime_error(path + ": too many levels of links");
    const fs::path target = fs::read_symlink(at, ec);
    if (ec) throw std::runtime_error(path + ": " + ec.message());
    at = target.is_absolute() ? target : at.parent_path() / target;
  }
  std::error_code ec;
  fs::path resolved = fs::weakly_canonical(at, ec);
  return ec ? at.lexically_normal() : resolved;
}

// Writes bytes to path whole or not at all: into a new file beside the one path names (through
// links), on disk (fsync), then renamed over it, so that a failure or a crash leaves the old
// file or the new one, never a part. Throws Error with a message naming path; where only the
// rename fails, the written file is kept (it may hold hours of work) and named.
template <typename Error = std::runtime_error>
void write_whole_file(const std::string& path, std::string_view bytes) {
  const std::string target = output_target(path).string();
  // A new name (mkostemp), so that no file already there is overwritten but the target itself.
  std::string temporary = target + std::string(kPartialSuffix);
  const int fd = ::mkostemp(temporary.data(), O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot create a file beside it: " + std::strerror(errno));
  ::fchmod(fd, 0644);  // mkostemp's 0600 would hide it from the other users
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  const int write_error = written == bytes.size() ? 0 : errno;
  const bool synced = written == bytes.size() && ::fsync(fd) == 0;
  if (::close(fd) != 0 || !synced) {
    std::remove(temporary.c_str());
    throw Error(path + ": write failed" +
                (write_error ? std::string(": ") + std::strerror(write_error) : std::string()));
  }
  std::error_code ec;
  std::filesystem::rename(temporary, target, ec);
  if (ec) {
    throw Error(path + ": cannot replace it (" + ec.message() + "); what was written is kept in " +
                temporary);
  }
}

}  // namespace porta_tools
