// Shared by the cache tests: a temporary directory, a store opened in it
// with a generation table the tests bump, and small helpers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cache/result_store.hpp"
#include <stdlib.h>

namespace pgstash::cache::test {

// A fresh directory under /tmp, removed with its contents at the end.
class temp_dir {
 public:
  temp_dir() {
    char name[] = "/tmp/pgstash-cache-test-XXXXXX";
    if (!::mkdtemp(name)) throw std::runtime_error("mkdtemp failed");
    path_ = name;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline key key_of(std::uint64_t n) { return {n * 0x9e3779b97f4a7c15ull + 1, ~n}; }

inline std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// A result set shaped text: compresses well.
inline std::string repetitive(std::size_t n) {
  std::string s;
  while (s.size() < n) s += "D row " + std::to_string(s.size() % 977) + " | padded text value  |\n";
  s.resize(n);
  return s;
}

// Polls `done` until it holds or a few seconds pass.
template <typename F>
bool eventually(F done) {
  for (int i = 0; i < 500; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// A store in a temp dir whose validity check compares dependencies with a
// table of generations, as the proxy's does.
struct store_fixture {
  static constexpr std::size_t k_relations = 8;

  temp_dir dir;
  std::atomic<std::uint64_t> generations[k_relations] = {};
  std::mutex reports_mutex;
  std::vector<std::string> reports;
  std::unique_ptr<result_store> store;

  explicit store_fixture(store_options options = {}) {
    options.path = dir.path() + "/cache";
    std::string error;
    store = open(options, error);
    if (!store) throw std::runtime_error("open failed: " + error);
  }

  std::unique_ptr<result_store> open(const store_options& options, std::string& error,
                                     const restore_check& restore = {}) {
    return result_store::open(
        options,
        [this](std::span<const dependency> deps) {
          for (const dependency& d : deps) {
            if (generations[d.relation % k_relations].load() != d.generation) return false;
          }
          return true;
        },
        [this](std::string_view message) {
          std::lock_guard lock(reports_mutex);
          reports.emplace_back(message);
        },
        error, restore);
  }

  std::vector<std::string> reported() {
    std::lock_guard lock(reports_mutex);
    return reports;
  }

  // Dependencies on `relations` at their current generations.
  std::vector<dependency> deps_on(std::initializer_list<std::uint64_t> relations) {
    std::vector<dependency> deps;
    for (std::uint64_t r : relations) deps.push_back({r, generations[r].load()});
    return deps;
  }
};

}  // namespace pgstash::cache::test
