// pgstash's log: spdlog, set up from [log], plus events: connection
// events, errors and slow statements written as one line each with named
// fields, so that a log pipeline can read them without patterns.
//
//   text:  ... info login client=10.0.0.7:51234 database=app user=web tls=false
//   json:  {"time":"2026-12-03T08:05:06.123Z","level":"info","event":"login",
//           "client":"10.0.0.7:51234","database":"app","user":"web","tls":false}
//
// In json format every other line is {"time":...,"level":...,"msg":...}.
// Fields never hold passwords or parameter values: callers pass what may
// be shown at the level they log at.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "conf/config.hpp"

namespace pgstash::proxy {

// Applies log.level and log.format to spdlog's default logger.
void configure_logging(const conf::log_section& log);

struct log_field {
  // `number`: the value is written unquoted in json (counts, durations,
  // booleans). REQUIRES then: it is one.
  log_field(std::string_view k, std::string v, bool is_number = false)
      : key(k), value(std::move(v)), number(is_number) {}
  std::string_view key;
  std::string value;
  bool number;
};

void log_event(spdlog::level::level_enum level, std::string_view event,
               const std::vector<log_field>& fields);

}  // namespace pgstash::proxy
