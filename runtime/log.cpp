#include "log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <array>
#include <utility>

namespace porta {

spdlog::logger& log() {
  // Never destroyed, like the runtime that logs through it: a call at exit (porta_shutdown from
  // an atexit handler or a static object's destructor) may log after exit-time destructors ran.
  static spdlog::logger* const logger = [] {
    auto* created =
        new spdlog::logger("porta", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    created->set_pattern("[porta %l] %v");
    created->set_level(spdlog::level::warn);
    return created;
  }();
  return *logger;
}

std::optional<porta_log_level_t> parse_log_level(std::string_view text) {
  static constexpr std::array<std::pair<std::string_view, porta_log_level_t>, 6> kNames{{
      {"off", PORTA_LOG_OFF},
      {"error", PORTA_LOG_ERROR},
      {"warn", PORTA_LOG_WARN},
      {"info", PORTA_LOG_INFO},
      {"debug", PORTA_LOG_DEBUG},
      {"trace", PORTA_LOG_TRACE},
  }};
  for (const auto& [name, level] : kNames) {
    if (name == text) return level;
  }
  return std::nullopt;
}

void set_log_level(porta_log_level_t level) {
  // porta_log_level_t follows spdlog's order, trace (0) to off (6 in spdlog, 5 here).
  log().set_level(level == PORTA_LOG_OFF ? spdlog::level::off
                                         : static_cast<spdlog::level::level_enum>(level));
}

}  // namespace porta
