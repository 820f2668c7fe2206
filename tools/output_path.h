// A check the tools share: an output file named on the command line must be writable before
// minutes or hours of work are spent on it.
#pragma once

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>

namespace porta_tools {

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

}  // namespace porta_tools
