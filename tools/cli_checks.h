// Checks the tools share on their command lines: integers read as written, and output files
// that can be written before minutes or hours of work are spent on them (output_file.h).
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "output_file.h"

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

// After kDecimal, for an option held in an int64_t: a value past its largest is refused here,
// where CLI11's conversion would fail with a message about the option's count.
inline const CLI::Validator kAtMostInt64(
    [](std::string& text) -> std::string {
      uint64_t value = 0;
      std::from_chars(text.data(), text.data() + text.size(), value);
      if (value > uint64_t(INT64_MAX))
        return text + " is too large (at most " + std::to_string(INT64_MAX) + ")";
      return "";
    },
    "INT64");

// Throws CLI::ValidationError for option unless the file path names (if not empty) can be
// written as write_whole_file writes it, before minutes or hours of work are spent on it: the
// file it resolves to (links followed, output_target) is a regular file or new, in an existing
// directory this user may write, not another user's in a sticky directory (/tmp), where the
// rename would be refused at the end, and with a name short enough for the file written beside
// it first.
inline void check_output(const std::string& option, const std::string& path) {
  if (path.empty()) return;
  std::filesystem::path file;
  try {
    file = output_target(path);
  } catch (const std::exception& e) {
    throw CLI::ValidationError(option, e.what());
  }
  const std::filesystem::path dir = file.parent_path();
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw CLI::ValidationError(option, "the directory of " + file.string() + " does not exist");
  if (access(dir.c_str(), W_OK | X_OK) != 0)
    throw CLI::ValidationError(option, "the directory of " + file.string() + " is not writable");
  const long name_max = pathconf(dir.c_str(), _PC_NAME_MAX);
  if (name_max > 0 &&
      file.filename().string().size() + kPartialSuffix.size() > static_cast<size_t>(name_max))
    throw CLI::ValidationError(option, "the name of " + file.string() + " is too long to write " +
                                           "beside it first (at most " +
                                           std::to_string(name_max - kPartialSuffix.size()) +
                                           " bytes)");
  struct stat file_stat = {}, dir_stat = {};
  if (::stat(file.c_str(), &file_stat) != 0) return;  // a new file
  if (S_ISDIR(file_stat.st_mode)) throw CLI::ValidationError(option, path + " is a directory");
  if (!S_ISREG(file_stat.st_mode))
    throw CLI::ValidationError(option, path + " is not a regular file");
  if (access(file.c_str(), W_OK) != 0)
    throw CLI::ValidationError(option, path + " is not writable");
  const uid_t user = geteuid();
  if (::stat(dir.c_str(), &dir_stat) == 0 && (dir_stat.st_mode & S_ISVTX) && user != 0 &&
      user != file_stat.st_uid && user != dir_stat.st_uid)
    throw CLI::ValidationError(option, file.string() +
                                           " belongs to another user in a sticky directory, "
                                           "which keeps it from being replaced");
}

// Throws CLI::ValidationError for option unless path and other (neither empty) name different
// files, however they are spelled: relative or absolute, through links (new files included), or
// as two hard links of one file.
inline void check_apart(const std::string& option, const std::string& path,
                        const std::string& other_option, const std::string& other) {
  if (path.empty() || other.empty()) return;
  bool same = path == other;
  try {
    const std::filesystem::path a = output_target(path), b = output_target(other);
    std::error_code ec;
    same = same || a == b || std::filesystem::equivalent(a, b, ec);
  } catch (const std::exception&) {
    // A loop of links: check_output reports it.
  }
  if (same) throw CLI::ValidationError(option, "names the same file as " + other_option);
}

// Whether everything printed to standard output reached it; if not, says so on standard error.
// A tool's result on stdout that was never written (a full disk, a closed pipe) is a failure.
inline bool stdout_written(const char* tool) {
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return true;
  std::fprintf(stderr, "%s: cannot write to standard output: %s\n", tool, std::strerror(errno));
  return false;
}

}  // namespace porta_tools
