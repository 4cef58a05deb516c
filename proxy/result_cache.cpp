#include "proxy/result_cache.hpp"

#include <algorithm>
#include <chrono>
#include <optional>

#include <spdlog/spdlog.h>

namespace pgstash::proxy {

result_cache::result_cache(const conf::cache_section& cfg) : cfg_(cfg), rules_(cfg.rules) {}

std::int64_t result_cache::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::unique_ptr<result_cache> result_cache::open(const conf::cache_section& cfg,
                                                 const conf::invalidation_section& followed,
                                                 std::string& error) {
  std::unique_ptr<result_cache> shared(new result_cache(cfg));
  cache::store_options options;
  options.path = cfg.path;
  options.max_size = cfg.max_size;
  options.max_entry_size = cfg.max_entry_size;
  options.compress_min_size = cfg.compress_min_size;
  // Entries outlive a restart only where a persistent slot can replay what
  // was written meanwhile.
  options.keep_entries = followed.replication && followed.persistent_slot;
  invalidation::generations& generations = shared->generations_;
  std::optional<invalidation::slot_persistence> persistence;
  if (options.keep_entries) persistence.emplace();
  shared->store_ = cache::result_store::open(
      options,
      [&generations](std::span<const cache::dependency> deps) {
        return generations.still_current(deps);
      },
      [](std::string_view failure) {
        spdlog::error("result cache: {}; statements pass through uncached meanwhile", failure);
      },
      error,
      [&](std::string_view saved) {
        const auto checkpoint = invalidation::decode_checkpoint(saved);
        if (!checkpoint || !generations.restore(checkpoint->generations)) return false;
        persistence->restored = checkpoint->databases;
        for (const auto& d : checkpoint->databases) shared->kept_databases_.push_back(d.database);
        return true;
      });
  if (!shared->store_) return nullptr;
  if (persistence) {
    const cache::store_stats kept = shared->store_->stats();
    if (kept.entries > 0)
      spdlog::info(
          "result cache: kept {} entries of the earlier run; each database's are served "
          "once its stream has replayed what was written since",
          kept.entries);
    persistence->save = [store = shared->store_.get()](std::string checkpoint,
                                                       std::function<void(bool)> done) {
      store->save_checkpoint(std::move(checkpoint), std::move(done));
    };
  }
  if (followed.replication) {
    invalidation::catalog_service& catalog = shared->catalog_;
    const bool strict = cfg.consistency == conf::cache_consistency::strict;
    shared->listener_ = std::make_unique<invalidation::replication_listener>(
        invalidation::replication_options{.slot = followed.slot,
                                          // Strict promises what no TTL can bound.
                                          .serve_unfollowed = cfg.default_ttl > 0 && !strict,
                                          .strict = strict},
        generations, [&catalog](const std::string& database) { catalog.forget(database); },
        std::move(persistence));
  }
  return shared;
}

std::shared_ptr<const invalidation::stream_status> result_cache::follow(
    const std::string& database, const std::string& conninfo) {
  return listener_ ? listener_->follow(database, conninfo) : nullptr;
}

std::optional<std::string> result_cache::stream_conninfo() const {
  return listener_ ? listener_->conninfo() : std::nullopt;
}

std::vector<std::pair<std::string, std::shared_ptr<const invalidation::stream_status>>>
result_cache::streams() const {
  if (!listener_) return {};
  return listener_->streams();
}

void result_cache::invalidate_table(const std::string& database, std::string_view table) {
  const std::uint64_t ids[] = {invalidation::relation_id(database, table),
                               invalidation::any_write_id(database)};
  generations_.bump(ids);
  checkpoint();
}

void result_cache::invalidate_database(const std::string& database) {
  bump_database(database);
  checkpoint();
}

void result_cache::invalidate_all(const std::vector<std::string>& databases) {
  // The bumps make every result unservable now; erasing frees the space.
  for (const auto& database : databases) bump_database(database);
  store_->erase_all();
  checkpoint();
}

std::vector<std::string> result_cache::databases(std::vector<std::string> seen) const {
  for (const auto& kept : kept_databases_) {
    if (std::find(seen.begin(), seen.end(), kept) == seen.end()) seen.push_back(kept);
  }
  return seen;
}

void result_cache::bump_database(const std::string& database) {
  const std::uint64_t id = invalidation::database_id(database);
  generations_.bump({&id, 1});
}

void result_cache::checkpoint() {
  // Without a checkpoint holding what was just invalidated, the next run
  // must not keep any entry.
  if (listener_ && !listener_->checkpoint_now()) store_->discard_at_next_open();
}

void result_cache::count_uncacheable(invalidation::uncacheable why) {
  const auto index = static_cast<std::size_t>(why);
  if (index < k_reasons) uncacheable_[index].fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t result_cache::uncacheable(invalidation::uncacheable why) const {
  const auto index = static_cast<std::size_t>(why);
  return index < k_reasons ? uncacheable_[index].load(std::memory_order_relaxed) : 0;
}

}  // namespace pgstash::proxy
