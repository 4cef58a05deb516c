#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "cache/result_store.hpp"
#include "test_support.hpp"
#include <sys/stat.h>
#include <unistd.h>

using namespace pgstash::cache;
using namespace pgstash::cache::test;

namespace {

std::unique_ptr<result_store> open_at(const std::string& path, std::string& error) {
  store_options options;
  options.path = path;
  return result_store::open(options, nullptr, nullptr, error);
}

}  // namespace

TEST_CASE("store: open fails with a clear message where it cannot write") {
  temp_dir dir;
  const std::string file = dir.path() + "/a-file";
  std::ofstream(file) << "not a directory";

  std::string error;
  CHECK_FALSE(open_at(file + "/cache", error));  // a file where a directory must be
  INFO(error);
  CHECK(error.find(file + "/cache") != std::string::npos);
  CHECK(error.find('\n') == std::string::npos);

  error.clear();
  CHECK_FALSE(open_at(file, error));                         // the path is a file
  CHECK(error.find("ot a directory") != std::string::npos);  // ours or strerror's

  error.clear();
  CHECK_FALSE(open_at("", error));
  CHECK_FALSE(error.empty());

  // Permissions do not stop root.
  if (::geteuid() != 0) {
    const std::string locked = dir.path() + "/locked";
    REQUIRE(::mkdir(locked.c_str(), 0500) == 0);
    error.clear();
    CHECK_FALSE(open_at(locked, error));
    CHECK(error.find(locked) != std::string::npos);
  }
}

TEST_CASE("store: a directory it creates is private to its owner") {
  temp_dir dir;
  std::string error;
  const auto store = open_at(dir.path() + "/a/b", error);
  REQUIRE(store);
  struct stat st {};
  REQUIRE(::stat((dir.path() + "/a/b").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
}

TEST_CASE("store: a full map drops writes, reports once, and the store keeps working") {
  store_options options;
  options.max_size = 64 << 20;  // the budget would allow far more...
  options.map_size = 1 << 20;   // ...than the map holds
  options.compress_min_size = 1 << 30;
  store_fixture f(options);
  const std::size_t entry = 32 << 10;

  std::vector<std::string> values;
  for (std::uint64_t i = 0; i < 100; ++i) values.push_back(random_bytes(entry, i));

  std::string out;
  for (std::uint64_t i = 0; i < 100; ++i) {
    f.store->put(key_of(i), values[i], {}, static_cast<std::int64_t>(i), 0, "");
    f.store->flush();  // a txn each
    // Whatever the store holds, it serves.
    for (const auto& e : f.store->list(1'000)) {
      out.clear();
      CHECK(f.store->get(e.k, static_cast<std::int64_t>(i), out));
      CHECK(out == values.at(~e.k.high));  // key_of(n).high is ~n
    }
  }

  const store_stats s = f.store->stats();
  CHECK(s.failures >= 1);
  CHECK(s.stores > 20);  // not only the ones before the map filled
  CHECK(s.evictions > 0);
  const auto reports = f.reported();
  REQUIRE(reports.size() == 1);
  INFO(reports[0]);
  CHECK(reports[0].find("full") != std::string::npos);

  // A new entry still goes in and comes out.
  f.store->put(key_of(1'000), "after", {}, 1'000, 0, "");
  f.store->flush();
  out.clear();
  CHECK(f.store->get(key_of(1'000), 1'000, out));
  CHECK(out == "after");
}
