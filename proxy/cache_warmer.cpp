#include "proxy/cache_warmer.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <vector>

#include "proxy/result_cache.hpp"

namespace pgstash::proxy {

namespace {

// Runs of one statement at most: the first stores it (once the catalog
// has answered for its tables), a later one is a hit.
constexpr int k_attempts = 10;
constexpr int k_attempt_gap_ms = 100;

struct conn_closer {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct result_clearer {
  void operator()(PGresult* r) const { PQclear(r); }
};

std::string one_line(const char* message) {
  std::string s = message ? message : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

}  // namespace

cache_warmer::cache_warmer(std::vector<std::pair<std::string, std::string>> connection,
                           std::vector<std::string> statements, result_cache& cache)
    : connection_(std::move(connection)),
      statements_(std::move(statements)),
      cache_(cache),
      thread_([this] { run(); }) {}

cache_warmer::~cache_warmer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void cache_warmer::request() {
  {
    std::lock_guard lock(mu_);
    due_ = true;
  }
  wake_.notify_all();
}

bool cache_warmer::pause(int ms) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stopping_; });
  return !stopping_;
}

void cache_warmer::run() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [this] { return due_ || stopping_; });
      if (stopping_) return;
      due_ = false;
    }
    warm_once();
  }
}

void cache_warmer::warm_once() {
  const auto started = std::chrono::steady_clock::now();
  std::vector<const char*> keywords, values;
  for (const auto& [keyword, value] : connection_) {
    keywords.push_back(keyword.c_str());
    values.push_back(value.c_str());
  }
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  std::unique_ptr<PGconn, conn_closer> conn(PQconnectdbParams(keywords.data(), values.data(), 0));
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    spdlog::warn("cache warming: cannot connect to pgstash itself: {}",
                 one_line(PQerrorMessage(conn.get())));
    return;
  }
  std::size_t warmed = 0;
  for (std::size_t i = 0; i < statements_.size(); ++i) {
    bool hit = false;
    for (int attempt = 0; attempt < k_attempts && !hit; ++attempt) {
      if (attempt > 0 && !pause(k_attempt_gap_ms)) return;
      const std::uint64_t hits_before = cache_.hits();
      std::unique_ptr<PGresult, result_clearer> r(PQexec(conn.get(), statements_[i].c_str()));
      const ExecStatusType status = PQresultStatus(r.get());
      if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
        spdlog::warn("cache warming: statement {} failed: {}", i + 1,
                     one_line(PQresultErrorMessage(r.get())));
        break;
      }
      // Another client's hit may count here too: warming is best effort.
      hit = cache_.hits() > hits_before;
    }
    if (hit) ++warmed;
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - started)
                      .count();
  spdlog::info("cache warming: {} of {} statements answered from the cache ({} ms)", warmed,
               statements_.size(), ms);
}

}  // namespace pgstash::proxy
