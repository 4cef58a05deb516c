#include "proxy/prometheus_text.hpp"

#include <charconv>
#include <cmath>
#include <system_error>

#include "proxy/utf8.hpp"

namespace pgstash::proxy {

namespace {

// Help text escapes backslash and newline; label values also the quote.
// The format is UTF-8: a byte that is not (a client's database name may be
// anything) becomes U+FFFD rather than spoiling the whole scrape.
void append_escaped(std::string& out, std::string_view s, bool quote) {
  for (char c : valid_utf8(s)) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

}  // namespace

void prometheus_text::family(std::string_view name, kind k, std::string_view help) {
  static constexpr std::string_view k_types[] = {"counter", "gauge", "histogram"};
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  append_escaped(out_, help, false);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += k_types[static_cast<int>(k)];
  out_ += '\n';
}

void prometheus_text::sample(std::string_view name, labels l, double value) {
  out_ += name;
  write_labels(l);
  out_ += ' ';
  write_number(value);
  out_ += '\n';
}

void prometheus_text::sample(std::string_view name, labels l, std::uint64_t value) {
  out_ += name;
  write_labels(l);
  out_ += ' ';
  out_ += std::to_string(value);
  out_ += '\n';
}

void prometheus_text::histogram(std::string_view name, labels l, std::span<const double> bounds,
                                std::span<const std::uint64_t> counts, double sum) {
  const std::string bucket = std::string(name) + "_bucket";
  std::uint64_t cumulative = 0;
  char le[32];
  for (std::size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += counts[i];
    std::string_view bound = "+Inf";
    if (i < bounds.size()) {
      auto end = std::to_chars(le, le + sizeof le, bounds[i], std::chars_format::fixed).ptr;
      bound = std::string_view(le, static_cast<std::size_t>(end - le));
    }
    out_ += bucket;
    write_labels(l, "le", bound);
    out_ += ' ';
    out_ += std::to_string(cumulative);
    out_ += '\n';
  }
  sample(std::string(name) + "_sum", l, sum);
  sample(std::string(name) + "_count", l, cumulative);
}

void prometheus_text::write_labels(labels l, std::string_view extra_name,
                                   std::string_view extra_value) {
  if (l.size() == 0 && extra_name.empty()) return;
  out_ += '{';
  bool first = true;
  auto one = [&](std::string_view n, std::string_view v) {
    if (!first) out_ += ',';
    first = false;
    out_ += n;
    out_ += "=\"";
    append_escaped(out_, v, true);
    out_ += '"';
  };
  for (const auto& [n, v] : l) one(n, v);
  if (!extra_name.empty()) one(extra_name, extra_value);
  out_ += '}';
}

void prometheus_text::write_number(double value) {
  if (std::isnan(value)) {
    out_ += "NaN";
    return;
  }
  if (std::isinf(value)) {
    out_ += value > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;
  out_.append(buf, end);
}

}  // namespace pgstash::proxy
