#include "proxy/prometheus_text.hpp"

#include <array>
#include <cstdint>
#include <limits>

#include <doctest/doctest.h>

using pgstash::proxy::prometheus_text;

TEST_CASE("a family's help and type lines come before its samples") {
  prometheus_text t;
  t.family("pgstash_queries_total", prometheus_text::kind::counter, "Queries answered.");
  t.sample("pgstash_queries_total", {{"database", "app"}, {"user", "web"}}, std::uint64_t{42});
  t.family("pgstash_up", prometheus_text::kind::gauge, "Always 1.");
  t.sample("pgstash_up", {}, 1.0);
  CHECK(t.text() ==
        "# HELP pgstash_queries_total Queries answered.\n"
        "# TYPE pgstash_queries_total counter\n"
        "pgstash_queries_total{database=\"app\",user=\"web\"} 42\n"
        "# HELP pgstash_up Always 1.\n"
        "# TYPE pgstash_up gauge\n"
        "pgstash_up 1\n");
}

TEST_CASE("label values and help text are escaped") {
  prometheus_text t;
  t.family("m", prometheus_text::kind::gauge, "back\\slash\nnew \"line\"");
  t.sample("m", {{"database", "a\"b\\c\nd"}}, 0.0);
  CHECK(t.text() ==
        "# HELP m back\\\\slash\\nnew \"line\"\n"
        "# TYPE m gauge\n"
        "m{database=\"a\\\"b\\\\c\\nd\"} 0\n");
}

TEST_CASE("a label value that is not UTF-8 gets U+FFFD, valid characters stay") {
  prometheus_text t;
  t.sample("m", {{"database", "caf\xc3\xa9 \xff\xc3 \xed\xa0\x80"}}, 1.0);
  CHECK(t.text() == "m{database=\"caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"} 1\n");
}

TEST_CASE("numbers are written exactly, and the special values as the format spells them") {
  prometheus_text t;
  t.sample("a", {}, 0.000125);
  t.sample("b", {}, std::uint64_t{18446744073709551615u});
  t.sample("c", {}, std::numeric_limits<double>::infinity());
  t.sample("d", {}, -std::numeric_limits<double>::infinity());
  t.sample("e", {}, std::numeric_limits<double>::quiet_NaN());
  CHECK(t.text() == "a 0.000125\nb 18446744073709551615\nc +Inf\nd -Inf\ne NaN\n");
}

TEST_CASE("a histogram's buckets are cumulative and end at +Inf") {
  prometheus_text t;
  const std::array<double, 3> bounds = {0.0001, 0.01, 0.1};
  const std::array<std::uint64_t, 4> counts = {5, 0, 2, 1};
  t.histogram("lat_seconds", {{"database", "x"}}, bounds, counts, 0.5);
  CHECK(t.text() ==
        "lat_seconds_bucket{database=\"x\",le=\"0.0001\"} 5\n"
        "lat_seconds_bucket{database=\"x\",le=\"0.01\"} 5\n"
        "lat_seconds_bucket{database=\"x\",le=\"0.1\"} 7\n"
        "lat_seconds_bucket{database=\"x\",le=\"+Inf\"} 8\n"
        "lat_seconds_sum{database=\"x\"} 0.5\n"
        "lat_seconds_count{database=\"x\"} 8\n");
}
