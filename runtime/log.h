// Porta's log: spdlog, header-only and private to libporta, writing to stderr.
#pragma once

#include <porta/porta_plugin.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <string_view>

namespace porta {

spdlog::logger& log();

// "off", "error", "warn", "info", "debug", "trace"; nullopt for anything else.
std::optional<porta_log_level_t> parse_log_level(std::string_view text);
inline constexpr const char* kLogLevels = "off, error, warn, info, debug, trace";
void set_log_level(porta_log_level_t level);

}  // namespace porta
