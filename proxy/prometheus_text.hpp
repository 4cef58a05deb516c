// Prometheus' text exposition format (version 0.0.4), written one metric
// family at a time: a family's # HELP and # TYPE lines, then its samples.
// Label values and help text are escaped as the format requires; numbers
// are written in their shortest exact form.
//
// Callers keep each family's samples together and its name unique; names
// follow Prometheus' conventions (`pgstash_` prefix, the unit in the name,
// `_total` on counters), which promtool checks in the tests.
//
// Pure: builds a string.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace pgstash::proxy {

class prometheus_text {
 public:
  enum class kind : std::uint8_t { counter, gauge, histogram };
  using labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

  // Starts the family `name` (its samples follow).
  void family(std::string_view name, kind k, std::string_view help);
  void sample(std::string_view name, labels l, double value);
  // Counts are written as integers, exact beyond a double's 2^53.
  void sample(std::string_view name, labels l, std::uint64_t value);
  // One histogram: `counts[i]` observations fell in (bounds[i-1], bounds[i]],
  // and counts[bounds.size()] above the last bound. Written as cumulative
  // `_bucket` samples up to le="+Inf", then `_sum` and `_count`.
  // REQUIRES: counts.size() == bounds.size() + 1, bounds ascending.
  void histogram(std::string_view name, labels l, std::span<const double> bounds,
                 std::span<const std::uint64_t> counts, double sum);

  const std::string& text() const { return out_; }

 private:
  void write_labels(labels l, std::string_view extra_name = {}, std::string_view extra_value = {});
  void write_number(double value);

  std::string out_;
};

}  // namespace pgstash::proxy
