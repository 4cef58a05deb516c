#include "proxy/event_log.hpp"

#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>

namespace pgstash::proxy {

namespace {

std::atomic<bool> json_lines = false;

// Marks a message whose payload is already an event's JSON fields.
constexpr char k_fields_marker = '\x1f';

std::string json_string(std::string_view s) {
  // Clients' bytes may be anything: invalid UTF-8 is replaced, not thrown on.
  return nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The %* flag of the json pattern: the message as "msg", or an event's
// fields as they are.
class message_or_fields : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    std::string out;
    if (!payload.empty() && payload.front() == k_fields_marker) {
      out = payload.substr(1);
    } else {
      out = "\"msg\":" + json_string(payload);
    }
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<message_or_fields>();
  }
};

// A text value: as it is when it is one plain word, quoted otherwise.
std::string text_value(std::string_view v) {
  const bool plain = !v.empty() && v.find_first_of(" \t\n\r\"=\\") == std::string_view::npos;
  if (plain) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

}  // namespace

void configure_logging(const conf::log_section& log) {
  spdlog::set_level(spdlog::level::from_str(log.level));
  json_lines = log.format == "json";
  if (!json_lines) {
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
    return;
  }
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<message_or_fields>('*').set_pattern(
      R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%*})");
  spdlog::set_formatter(std::move(formatter));
}

void log_event(spdlog::level::level_enum level, std::string_view event,
               const std::vector<log_field>& fields) {
  if (!spdlog::should_log(level)) return;
  std::string line;
  if (json_lines) {
    line = std::string(1, k_fields_marker) + "\"event\":" + json_string(event);
    for (const auto& f : fields)
      line += "," + json_string(f.key) + ":" + (f.number ? f.value : json_string(f.value));
  } else {
    line = event;
    for (const auto& f : fields) line += " " + std::string(f.key) + "=" + text_value(f.value);
  }
  spdlog::log(level, "{}", line);
}

}  // namespace pgstash::proxy
