// Checks the tools share on their command lines: integers read as written, and output files
// that can be written before minutes or hours of work are spent on them.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <string>

namespace porta_tools {

// An integer option's value in decimal digits, within uint64_t. CLI11 converts integers in base
// 0, so 010 would be 8 and 0x10 16, and an unsigned option would wrap -1 to its largest value:
// leading zeros are dropped here, and anything but digits refused. Range checks follow it.
inline const CLI::Validator kDecimal(
    [](std::string& text) -> std::string {
      if (text.empty() ||
          !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return "'" + text + "' is not a whole number in decimal digits";
      }
      uint64_t value = 0;
      if (std::from_chars(text.data(), text.data() + text.size(), value).ec != std::errc()) {
        return text + " is too large";
      }
      text = std::to_string(value);
      return "";
    },
    "DECIMAL");

// Throws CLI::ValidationError for option unless path (if not empty) can be written: its
// directory exists and is writable, and the file, if it exists, is a writable file.
inline void check_writable(const std::string& option, const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path file(path);
  const std::filesystem::path dir = file.has_parent_path() ? file.parent_path() : ".";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw CLI::ValidationError(option, "the directory of " + path + " does not exist");
  if (access(dir.c_str(), W_OK) != 0 ||
      (std::filesystem::exists(file, ec) && access(file.c_str(), W_OK) != 0))
    throw CLI::ValidationError(option, path + " is not writable");
  if (std::filesystem::is_directory(file, ec))
    throw CLI::ValidationError(option, path + " is a directory");
}

// check_writable for a file that is written beside itself and renamed over the old one, through
// links: the file the path resolves to must be a regular file (not a device or a pipe that the
// rename would replace), in a directory this user may write, and not another user's in a
// sticky directory (/tmp), where the rename would be refused at the end.
inline void check_replaceable(const std::string& option, const std::string& path) {
  check_writable(option, path);
  if (path.empty()) return;
  std::error_code ec;
  const std::filesystem::path file = std::filesystem::weakly_canonical(path, ec);
  if (ec) throw CLI::ValidationError(option, path + ": " + ec.message());
  const std::filesystem::path dir = file.parent_path();
  if (access(dir.c_str(), W_OK | X_OK) != 0)
    throw CLI::ValidationError(option, "the directory of " + file.string() + " is not writable");
  struct stat file_stat = {}, dir_stat = {};
  if (::stat(file.c_str(), &file_stat) != 0) return;  // a new file
  if (!S_ISREG(file_stat.st_mode))
    throw CLI::ValidationError(option, path + " is not a regular file");
  const uid_t user = geteuid();
  if (::stat(dir.c_str(), &dir_stat) == 0 && (dir_stat.st_mode & S_ISVTX) && user != 0 &&
      user != file_stat.st_uid && user != dir_stat.st_uid)
    throw CLI::ValidationError(option, file.string() +
                                           " belongs to another user in a sticky directory, "
                                           "which keeps it from being replaced");
}

// Throws CLI::ValidationError for option unless path and other (neither empty) name different
// files, however they are spelled.
inline void check_apart(const std::string& option, const std::string& path,
                        const std::string& other_option, const std::string& other) {
  if (path.empty() || other.empty()) return;
  std::error_code ec;
  const std::filesystem::path a = std::filesystem::weakly_canonical(path, ec);
  const std::filesystem::path b = std::filesystem::weakly_canonical(other, ec);
  if (path == other || (!ec && a == b))
    throw CLI::ValidationError(option, "names the same file as " + other_option);
}

}  // namespace porta_tools
