#include "invalidation/catalog_service.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>

namespace pgstash::invalidation {

namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto k_refresh_conservative = 1s;
constexpr auto k_refresh_known = 60s;

enum class kind : char { read = 'r', write = 'w', function = 'f', isolation = 'i' };

using answer = std::variant<read_facts, write_facts, function_verdict, default_isolation>;

bool conservative(const answer& a) {
  if (const auto* r = std::get_if<read_facts>(&a))
    return r->what == read_facts::verdict::unknown_relation;
  if (const auto* w = std::get_if<write_facts>(&a)) return !w->known;
  if (const auto* i = std::get_if<default_isolation>(&a)) return *i == default_isolation::unknown;
  return std::get<function_verdict>(a) == function_verdict::unknown;
}

struct job {
  kind what;
  std::string key;
  std::string database;
  std::string conninfo;
  std::string search_path;
  std::string user;
  object_name name;
  std::uint64_t epoch;
};

struct entry {
  answer value;
  std::uint64_t epoch;
  clock::time_point refresh_at;
  std::list<std::string>::iterator lru_pos;
};

}  // namespace

struct catalog_service::state {
  explicit state(std::size_t max) : max_entries(std::max<std::size_t>(max, 1)) {}

  std::optional<answer> lookup(kind what, const std::string& database, const std::string& conninfo,
                               std::string_view search_path, std::string_view user,
                               const object_name& name);
  void run();
  answer ask(const job& j);
  void bump_version() { version.fetch_add(1, std::memory_order_release); }

  const std::size_t max_entries;

  std::mutex mutex;
  std::condition_variable wake;  // the worker: a job was queued, or stop
  std::condition_variable idle;  // drain(): the queue ran empty
  std::deque<job> queue;
  // Keys queued or running, with the epoch they were queued in: a key queued
  // before forget() does not stop the same question from being queued again.
  std::unordered_map<std::string, std::uint64_t> pending;
  std::unordered_map<std::string, entry> entries;
  std::list<std::string> lru;  // keys of `entries`, most recently used first
  std::unordered_map<std::string, std::uint64_t> epochs;  // by database; absent = 0
  std::atomic<std::uint64_t> version{0};                  // answers_version()
  bool busy = false;  // the worker is running a look-up
  bool stop = false;

  // Only the worker thread touches these.
  std::unordered_map<std::string, std::unique_ptr<catalog>> catalogs;

  std::thread worker;  // last: starts after everything above exists
};

std::optional<answer> catalog_service::state::lookup(kind what, const std::string& database,
                                                     const std::string& conninfo,
                                                     std::string_view search_path,
                                                     std::string_view user,
                                                     const object_name& name) {
  // A qualified name means the same whatever the path and the role.
  const bool qualified = !name.schema.empty();
  const std::string_view path_part = qualified ? std::string_view{} : search_path;
  const std::string_view user_part = qualified ? std::string_view{} : user;
  // NUL-separated: no component of a name, path or database contains NUL
  // (catalog::exec refuses such names anyway).
  std::string key;
  key.reserve(8 + database.size() + path_part.size() + user_part.size() + name.schema.size() +
              name.name.size());
  key += static_cast<char>(what);
  for (std::string_view part : {std::string_view(database), path_part, user_part,
                                std::string_view(name.schema), std::string_view(name.name)}) {
    key += '\0';
    key += part;
  }

  const auto now = clock::now();
  std::lock_guard lock(mutex);
  const std::uint64_t epoch = epochs.contains(database) ? epochs[database] : 0;
  std::optional<answer> found;
  bool ask_again = true;
  if (auto it = entries.find(key); it != entries.end()) {
    if (it->second.epoch != epoch) {  // from before a forget()
      lru.erase(it->second.lru_pos);
      entries.erase(it);
    } else {
      lru.splice(lru.begin(), lru, it->second.lru_pos);
      found = it->second.value;
      ask_again = now >= it->second.refresh_at;
    }
  }
  if (ask_again && queue.size() < max_entries) {
    auto [p, fresh] = pending.try_emplace(key, epoch);
    if (fresh || p->second != epoch) {
      p->second = epoch;
      queue.push_back(job{what, std::move(key), database, conninfo, std::string(search_path),
                          std::string(user), name, epoch});
      wake.notify_one();
    }
  }
  return found;
}

answer catalog_service::state::ask(const job& j) {
  auto& cat = catalogs[j.database];
  if (!cat) cat = std::make_unique<catalog>(j.conninfo);
  switch (j.what) {
    case kind::read:
      return cat->read(j.search_path, j.user, j.name);
    case kind::write:
      return cat->write(j.search_path, j.user, j.name);
    case kind::function:
      return cat->function(j.search_path, j.user, j.name);
    case kind::isolation:
      return cat->isolation(j.user);
  }
  return function_verdict::unknown;  // not reached
}

void catalog_service::state::run() {
  std::unique_lock lock(mutex);
  for (;;) {
    wake.wait(lock, [&] { return stop || !queue.empty(); });
    if (stop) return;
    job j = std::move(queue.front());
    queue.pop_front();
    auto current = [&] { return (epochs.contains(j.database) ? epochs[j.database] : 0) == j.epoch; };
    if (!current()) {  // forgotten while queued: nobody wants this answer
      if (auto p = pending.find(j.key); p != pending.end() && p->second == j.epoch)
        pending.erase(p);
      if (queue.empty()) idle.notify_all();
      continue;
    }
    busy = true;
    lock.unlock();
    answer a = ask(j);  // blocking I/O, without the lock
    const auto refresh_at =
        clock::now() + (conservative(a) ? k_refresh_conservative : k_refresh_known);
    lock.lock();
    busy = false;
    if (auto p = pending.find(j.key); p != pending.end() && p->second == j.epoch) pending.erase(p);
    if (current()) {
      if (auto it = entries.find(j.key); it != entries.end()) {
        if (it->second.value != a || it->second.epoch != j.epoch) bump_version();
        it->second.value = std::move(a);
        it->second.epoch = j.epoch;
        it->second.refresh_at = refresh_at;
      } else {
        if (entries.size() >= max_entries) {
          bump_version();
          entries.erase(lru.back());
          lru.pop_back();
        }
        lru.push_front(j.key);
        entries.emplace(std::move(j.key), entry{std::move(a), j.epoch, refresh_at, lru.begin()});
      }
    }
    if (queue.empty()) idle.notify_all();
  }
}

catalog_service::catalog_service(std::size_t max_entries)
    : state_(std::make_unique<state>(max_entries)) {
  state_->worker = std::thread([s = state_.get()] { s->run(); });
}

catalog_service::~catalog_service() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stop = true;
  }
  state_->wake.notify_one();
  state_->worker.join();
}

std::optional<read_facts> catalog_service::try_read(const std::string& database,
                                                    const std::string& conninfo,
                                                    std::string_view search_path,
                                                    std::string_view user,
                                                    const object_name& relation) {
  auto a = state_->lookup(kind::read, database, conninfo, search_path, user, relation);
  if (!a) return std::nullopt;
  return std::get<read_facts>(std::move(*a));
}

std::optional<write_facts> catalog_service::try_write(const std::string& database,
                                                      const std::string& conninfo,
                                                      std::string_view search_path,
                                                      std::string_view user,
                                                      const object_name& relation) {
  auto a = state_->lookup(kind::write, database, conninfo, search_path, user, relation);
  if (!a) return std::nullopt;
  return std::get<write_facts>(std::move(*a));
}

std::optional<function_verdict> catalog_service::try_function(const std::string& database,
                                                              const std::string& conninfo,
                                                              std::string_view search_path,
                                                              std::string_view user,
                                                              const object_name& function) {
  auto a = state_->lookup(kind::function, database, conninfo, search_path, user, function);
  if (!a) return std::nullopt;
  return std::get<function_verdict>(*a);
}

std::optional<default_isolation> catalog_service::try_isolation(const std::string& database,
                                                                const std::string& conninfo,
                                                                std::string_view user) {
  auto a = state_->lookup(kind::isolation, database, conninfo, {}, user, object_name{});
  if (!a) return std::nullopt;
  return std::get<default_isolation>(*a);
}

void catalog_service::forget(const std::string& database) {
  std::lock_guard lock(state_->mutex);
  // Entries of older epochs are dropped lazily, when next looked up or when
  // they reach the end of the LRU list: forget() stays O(1).
  ++state_->epochs[database];
  state_->bump_version();
}

std::uint64_t catalog_service::answers_version() const {
  return state_->version.load(std::memory_order_acquire);
}

void catalog_service::drain() {
  std::unique_lock lock(state_->mutex);
  state_->idle.wait(lock, [&] { return state_->queue.empty() && !state_->busy; });
}

}  // namespace pgstash::invalidation
