#include "proxy/cache_client.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include "invalidation/sql_text.hpp"
#include "invalidation/text_memo.hpp"
#include "proxy/entry_label.hpp"
#include "proxy/point_key.hpp"
#include "proxy/session_state.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

namespace {

using invalidation::uncacheable;
using wire::backend_tag;
using wire::tag_of;

// Analyses for the cache are memoized per worker thread, so no lock is
// taken and repeated text is parsed once.
std::shared_ptr<const invalidation::cache_analysis> analyzed(std::string_view sql) {
  thread_local invalidation::text_memo<invalidation::cache_analysis> memo(
      10000, &invalidation::analyze_for_cache);
  return memo.get(sql);
}

// XXH3-128 over length-prefixed fields, so that no two sequences of fields
// hash alike. The fields are gathered and hashed at once, which gives what
// XXH3's streaming state would (the same keys) at less cost per field.
class key_hasher {
 public:
  key_hasher() : bytes_(buffer()) { bytes_.clear(); }
  key_hasher(const key_hasher&) = delete;
  key_hasher& operator=(const key_hasher&) = delete;
  ~key_hasher() {
    // A large parameter is not kept hold of.
    if (bytes_.capacity() > k_kept_bytes) std::string().swap(bytes_);
  }
  void add(std::string_view field) {
    add(static_cast<std::uint64_t>(field.size()));
    bytes_.append(field);
  }
  void add(std::uint64_t number) {
    bytes_.append(reinterpret_cast<const char*>(&number), sizeof number);
  }
  cache::key digest() const {
    const XXH128_hash_t h = XXH3_128bits(bytes_.data(), bytes_.size());
    return {h.low64, h.high64};
  }

 private:
  static constexpr std::size_t k_kept_bytes = 64 * 1024;
  // One per thread, so a key is made without allocating: at most one
  // key_hasher per thread at a time.
  static std::string& buffer() {
    thread_local std::string bytes;
    return bytes;
  }
  std::string& bytes_;
};

// The elements of a search_path as SQL wrote them after SET ... TO: quoted
// literals ('$user', 'public') or bare identifiers.
std::string search_path_from_sql(std::string_view sql) {
  std::string out;
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < sql.size() && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n')) ++i;
  };
  while (i < sql.size()) {
    skip_space();
    std::string element;
    if (i < sql.size() && sql[i] == '\'') {
      for (++i; i < sql.size(); ++i) {
        if (sql[i] == '\'') {
          if (i + 1 < sql.size() && sql[i + 1] == '\'') {
            element += '\'';
            ++i;
            continue;
          }
          ++i;
          break;
        }
        element += sql[i];
      }
    } else {
      while (i < sql.size() && sql[i] != ',' && sql[i] != ' ') element += sql[i++];
    }
    skip_space();
    if (i < sql.size() && sql[i] == ',') ++i;
    if (element.empty()) continue;
    std::string quoted = "\"";
    for (char c : element) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
    out += (out.empty() ? "" : ", ") + quoted + "\"";
  }
  return out;
}

// What a catalog verdict on a relation means for the cache.
std::optional<uncacheable> reason_of(invalidation::read_facts::verdict v) {
  using verdict = invalidation::read_facts::verdict;
  switch (v) {
    case verdict::cacheable:
      return std::nullopt;
    case verdict::unknown_relation:
      return uncacheable::unknown_relation;
    case verdict::system_catalog:
      return uncacheable::system_catalog;
    case verdict::temporary:
      return uncacheable::temp_relation;
    case verdict::sequence:
      return uncacheable::sequence;
    case verdict::foreign_table:
      return uncacheable::foreign_table;
    case verdict::other_kind:
      break;
  }
  return uncacheable::unknown_relation;
}

// Volatile functions of PostgreSQL's that clients call in reads and that
// write no user table.
bool is_builtin_without_table_writes(std::string_view name) {
  static constexpr std::string_view names[] = {
      "random", "gen_random_uuid", "clock_timestamp", "timeofday", "nextval", "setval", "currval",
      "lastval", "pg_sleep", "set_config", "txid_current", "pg_current_xact_id", "pg_notify",
      "pg_advisory_lock", "pg_advisory_unlock", "pg_try_advisory_lock", "pg_advisory_xact_lock",
      "pg_try_advisory_xact_lock", "pg_advisory_lock_shared", "pg_advisory_unlock_shared",
      "pg_advisory_unlock_all", "pg_cancel_backend", "pg_terminate_backend", "setseed"};
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

// Reasons a [[cache.rules]] rule with action = "force" overrides: the
// functions a statement calls (the operator vouches for them, and for how
// long a result may be served). Never what the result reads or how.
bool forceable(uncacheable why) {
  return why == uncacheable::volatile_function || why == uncacheable::unknown_function ||
         why == uncacheable::time_function;
}

// A text parameter such as 'now' or 'today', which a date/time parameter
// reads as the current time. Binary parameters hold the time itself.
bool binds_current_time(const wire::bind_message& bind) {
  const auto& formats = bind.parameter_formats;
  for (std::size_t i = 0; i < bind.parameters.size(); ++i) {
    const std::int16_t format = formats.empty() ? 0 : formats.size() == 1 ? formats[0] : formats[i];
    if (format == 0 && bind.parameters[i] &&
        invalidation::parameter_names_current_time(*bind.parameters[i]))
      return true;
  }
  return false;
}

}  // namespace

void result_capture::add(char tag, std::optional<std::string_view> body) {
  if (spoiled_by_) return;
  if (!body || bytes_.size() + 5 + body->size() > limit_) {
    spoil(uncacheable::too_large);
    return;
  }
  // A second RowDescription (a portal described twice) would be sent
  // among the rows of a hit.
  if (finished_ || (tag == tag_of(backend_tag::row_description) && !bytes_.empty())) {
    spoil(uncacheable::cursor_or_utility);
    return;
  }
  const auto size = static_cast<std::uint32_t>(body->size() + 4);
  bytes_ += tag;
  for (int shift = 24; shift >= 0; shift -= 8) bytes_ += static_cast<char>((size >> shift) & 0xff);
  bytes_ += *body;
  if (tag == tag_of(backend_tag::command_complete)) finished_ = true;
}

cache_client::cache_client(result_cache& shared, identity who)
    : shared_(shared),
      who_(std::move(who)),
      startup_settings_(session_state(who_.startup).settings()),
      database_id_(invalidation::database_id(who_.database)),
      any_write_id_(invalidation::any_write_id(who_.database)),
      stream_(shared_.follow(who_.database, who_.conninfo)),
      strict_(stream_ && shared_.config().consistency == conf::cache_consistency::strict),
      // Later than anything the client sent during its login.
      arrived_(std::chrono::steady_clock::now()) {
  // Asked now, so that the answer is there by the session's first
  // transaction.
  shared_.catalog().try_isolation(who_.database, who_.conninfo, who_.user);
}

const pool::settings_map& cache_client::settings_or_startup(const pool::settings_map* settings) const {
  return settings ? *settings : startup_settings_;
}

std::string cache_client::current_role(const pool::settings_map& settings) const {
  auto it = settings.find("role");
  if (it == settings.end()) return who_.user;
  // SET ROLE's value as a literal ('admin'), as pgstash records it.
  std::string_view text = it->second.text;
  std::string role;
  if (!it->second.raw && text.size() >= 2 && text.front() == '\'' && text.back() == '\'') {
    text = text.substr(1, text.size() - 2);
    for (std::size_t i = 0; i < text.size(); ++i) {
      role += text[i];
      if (text[i] == '\'' && i + 1 < text.size() && text[i + 1] == '\'') ++i;
    }
  } else {
    role = text;
  }
  return role == "none" || role.empty() ? who_.user : role;
}

bool cache_client::starts_read_committed(const pool::settings_map& settings) {
  if (auto it = settings.find("default_transaction_isolation"); it != settings.end()) {
    std::string level = invalidation::ascii_lower(it->second.text);
    std::erase_if(level, [](char c) { return c == '\'' || c == '"'; });
    return level == "read committed" || level == "read uncommitted";
  }
  const auto level = shared_.catalog().try_isolation(who_.database, who_.conninfo, who_.user);
  // A level seen once stays: the session's server connections may have
  // started at it.
  if (level && *level != invalidation::default_isolation::read_committed)
    left_read_committed_ = true;
  return level == invalidation::default_isolation::read_committed && !left_read_committed_;
}

std::optional<uncacheable> cache_client::transaction_bypass(const pool::settings_map* settings) {
  if (transaction_wrote_) return uncacheable::in_writing_transaction;
  if (left_read_committed_ || !starts_read_committed(settings_or_startup(settings)))
    return uncacheable::isolation_level;
  return std::nullopt;
}

void cache_client::not_served(std::string_view sql, uncacheable why) {
  if (analyzed(sql)->reason != uncacheable::none) return;
  shared_.count_uncacheable(why);
  spdlog::debug("not cached ({}): {:.200}", invalidation::to_string(why), sql);
}

std::string cache_client::search_path(const pool::settings_map& settings) const {
  auto it = settings.find("search_path");
  if (it == settings.end()) return "\"$user\", public";
  return it->second.raw ? it->second.text : search_path_from_sql(it->second.text);
}

cache::key cache_client::key_of(const invalidation::cache_analysis& a,
                                const pool::settings_map& settings,
                                const wire::parse_message* statement,
                                const wire::bind_message* bind) const {
  key_hasher h;
  h.add(who_.database);
  h.add(who_.user);
  h.add(settings.size());
  for (const auto& [name, value] : settings) {
    h.add(name);
    h.add(value.raw ? 1 : 0);
    h.add(value.text);
  }
  h.add(a.canonical_low);
  h.add(a.canonical_high);
  // The simple and the extended protocol answer alike only in text format,
  // and a Describe decides what the extended one sends: never shared.
  h.add(bind ? 'E' : 'Q');
  if (statement) {
    // The types a Parse gives its parameters decide how their values read.
    h.add(statement->parameter_types.size());
    for (std::uint32_t oid : statement->parameter_types) h.add(oid);
  }
  if (bind) {
    h.add(bind->parameter_formats.size());
    for (std::int16_t f : bind->parameter_formats) h.add(static_cast<std::uint64_t>(f));
    h.add(bind->parameters.size());
    for (const auto& value : bind->parameters) {
      h.add(value ? 1 : 0);
      if (value) h.add(*value);
    }
    h.add(bind->result_formats.size());
    for (std::int16_t f : bind->result_formats) h.add(static_cast<std::uint64_t>(f));
  }
  return h.digest();
}

std::optional<uncacheable> cache_client::ask_catalog(read_plan& plan) {
  invalidation::catalog_service& catalog = shared_.catalog();
  // Relations first: a rule may force a statement whose functions are not
  // trusted, and its dependencies must then be complete.
  for (const auto& relation : plan.analysis->reads) {
    auto facts =
        catalog.try_read(who_.database, who_.conninfo, plan.search_path, plan.role, relation);
    if (!facts) return uncacheable::unknown_relation;
    if (auto why = reason_of(facts->what)) return why;
    // Written elsewhere, it would never be invalidated.
    if (stream_ && facts->unlogged) return uncacheable::unlogged_relation;
    if (plan.analysis->reads.size() == 1 && facts->depends_on.size() == 1)
      plan.key = equality_on(*plan.analysis, facts->point_key, plan.search_path, plan.role);
    for (auto& name : facts->depends_on) {
      const std::uint64_t id = invalidation::relation_id(who_.database, name);
      if (plan.key) plan.keyed_relation = id;
      plan.ids.push_back(plan.key ? invalidation::table_wide_id(id) : id);
      plan.names.push_back(std::move(name));
    }
  }
  std::sort(plan.names.begin(), plan.names.end());
  plan.names.erase(std::unique(plan.names.begin(), plan.names.end()), plan.names.end());
  std::sort(plan.ids.begin(), plan.ids.end());
  plan.ids.erase(std::unique(plan.ids.begin(), plan.ids.end()), plan.ids.end());
  for (const auto& function : plan.analysis->functions) {
    auto verdict =
        catalog.try_function(who_.database, who_.conninfo, plan.search_path, plan.role, function);
    if (!verdict || *verdict == invalidation::function_verdict::unknown)
      return uncacheable::unknown_function;
    if (*verdict != invalidation::function_verdict::cacheable)
      return uncacheable::volatile_function;
  }
  return std::nullopt;
}

std::optional<uncacheable> cache_client::dependencies(const analysis_ptr& a,
                                                      const pool::settings_map& settings,
                                                      std::vector<std::uint64_t>& ids,
                                                      std::vector<std::string>* names,
                                                      const wire::parse_message* statement,
                                                      const wire::bind_message* bind) {
  invalidation::catalog_service& catalog = shared_.catalog();
  // Read before the answers: a change after it is seen at the next look-up.
  const std::uint64_t version = catalog.answers_version();
  // Steady: a wall clock set back must not keep a plan (and so the
  // catalog's refresh, which a look-up starts) waiting.
  const auto now = std::chrono::steady_clock::now();
  std::string path = search_path(settings);
  std::string role = current_role(settings);
  auto use = [&](const read_plan& plan) -> std::optional<uncacheable> {
    ids.insert(ids.end(), plan.ids.begin(), plan.ids.end());
    if (plan.key) {
      // A key value that cannot be read makes it a read of the whole table.
      const auto value = point_value(*plan.key, statement, bind);
      ids.push_back(value ? invalidation::row_key_id(plan.keyed_relation, plan.key->column, *value)
                          : plan.keyed_relation);
    }
    if (names) names->insert(names->end(), plan.names.begin(), plan.names.end());
    return std::nullopt;
  };
  read_plan* same = nullptr;  // this statement's, path's and role's, if kept
  for (read_plan& plan : read_plans_) {
    if (plan.analysis != a || plan.search_path != path || plan.role != role) continue;
    if (plan.answers_version == version && now < plan.until) return use(plan);
    same = &plan;
  }
  read_plan plan{
      a, std::move(path), std::move(role), version, now + k_read_plan_life, {}, {}, nullptr, 0};
  const std::optional<uncacheable> why = ask_catalog(plan);
  if (why) {
    // Partial, but what a rule matching by table needs.
    use(plan);
    return why;
  }
  if (!same && read_plans_.size() < k_read_plans) same = &read_plans_.emplace_back();
  if (!same) same = &read_plans_[next_read_plan_++ % k_read_plans];
  *same = std::move(plan);
  return use(*same);
}

bool cache_client::cacheable(std::string_view sql) const {
  return analyzed(sql)->reason == uncacheable::none;
}

cache_client::lookup cache_client::query(std::string_view sql, const pool::settings_map* settings) {
  return find(sql, nullptr, nullptr, settings);
}

cache_client::lookup cache_client::bind(const wire::parse_message& statement,
                                        const wire::bind_message& bind,
                                        const pool::settings_map* settings) {
  return find(statement.query, &statement, &bind, settings);
}

cache_client::lookup cache_client::find(std::string_view sql, const wire::parse_message* statement,
                                        const wire::bind_message* bind,
                                        const pool::settings_map* settings) {
  unproven_.reset();
  const auto a = analyzed(sql);
  const pool::settings_map& s = settings_or_startup(settings);
  // The database's generation first, before the catalog's answers are
  // read: DDL bumps it after dropping those answers, so a result whose
  // relations came from answers older than the DDL is never stored.
  std::vector<cache::dependency> deps;
  shared_.generations().capture({&database_id_, 1}, deps);
  std::vector<std::uint64_t> ids;
  std::vector<std::string> tables;
  const cache_rules& rules = shared_.rules();
  std::optional<uncacheable> why;
  if (a->reason != uncacheable::none) why = a->reason;
  if (!why || (!rules.empty() && forceable(*why))) {
    const auto found = dependencies(a, s, ids, rules.empty() ? nullptr : &tables, statement, bind);
    if (found && (!why || !forceable(*found))) why = found;
  }
  if (!why && bind && binds_current_time(*bind)) why = uncacheable::time_function;
  const conf::cache_rule* rule = rules.empty() ? nullptr : rules.find(sql, tables);
  if (rule && rule->what == conf::cache_rule::action::never) {
    why = uncacheable::rule_or_config;
  } else if (why && rule && rule->what == conf::cache_rule::action::force && forceable(*why)) {
    why.reset();
    // Its functions may read tables it does not name: any write may
    // change its result.
    ids.push_back(any_write_id_);
  }
  if (why) {
    shared_.count_uncacheable(*why);
    spdlog::debug("not cached ({}): {:.200}", invalidation::to_string(*why), sql);
    return {};
  }
  const cache::key key = key_of(*a, s, statement, bind);
  lookup out;
  std::string response;
  // While the stream is down a write elsewhere may be unseen: no hits, but
  // results are still stored (the reconnection invalidates them all if one
  // was missed).
  bool serving = !stream_ || stream_->serving();
  // Strict: a hit waits for the stream's proof, once; unproven after the
  // wait, the read goes to the server.
  const bool unproven = serving && strict_ && !stream_->barrier().passed(arrived_);
  if (unproven && stream_waited_) {
    serving = false;
    shared_.count_unproven();
  }
  if (serving && shared_.store().get(key, result_cache::now_ms(), response)) {
    if (unproven) {
      unproven_ = unproven_hit{&stream_->barrier(), arrived_};
      return {};
    }
    shared_.count_hit();
    out.response = std::move(response);
    return out;
  }
  shared_.count_miss();
  // For the admin listing; asked again rather than on every hit.
  entry_label label{who_.database, {}, std::string(sql.substr(0, k_statement_bytes))};
  std::vector<std::uint64_t> unused;
  dependencies(a, s, unused, &label.tables);
  // Before the query is sent: a write committed after this makes the
  // result unstorable (or, once stored, unservable).
  shared_.generations().capture(ids, deps);
  const std::uint32_t ttl = rule && rule->ttl ? *rule->ttl : shared_.config().default_ttl;
  out.capture = std::make_shared<result_capture>(
      key, std::move(deps), shared_.config().max_entry_size, encode(label), bind != nullptr, ttl);
  if (shared_.config().coalesce_wait_ms > 0) {
    out.capture->claim_ = shared_.in_flight().try_claim(key);
    out.capture->fetched_elsewhere_ = !out.capture->claim_;
  }
  return out;
}

bool cache_client::functions_may_write(const invalidation::cache_analysis& a,
                                       const pool::settings_map& settings) {
  const std::string path = search_path(settings);
  const std::string role = current_role(settings);
  bool may = false;
  for (const auto& function : a.functions) {
    // PostgreSQL's own volatile functions write no table the cache reads
    // and change no setting (set_config() is followed as a setting).
    if ((function.schema.empty() || function.schema == "pg_catalog") &&
        is_builtin_without_table_writes(function.name))
      continue;
    auto verdict =
        shared_.catalog().try_function(who_.database, who_.conninfo, path, role, function);
    if (!verdict) {
      // Judged once the catalog answers, before this session is served.
      suspect_functions_.emplace_back(function, path, role);
      may = true;
    } else if (*verdict == invalidation::function_verdict::may_write ||
               *verdict == invalidation::function_verdict::unknown) {
      // It may write, and may change a setting (set_config) unseen.
      session_changed_ = true;
      may = true;
    }
  }
  return may;
}

bool cache_client::forced(std::string_view sql, const analysis_ptr& a,
                          const pool::settings_map& settings) {
  const cache_rules& rules = shared_.rules();
  if (rules.empty() || !a->read_only || a->reason == uncacheable::several_statements) return false;
  std::vector<std::uint64_t> ids;
  std::vector<std::string> tables;
  dependencies(a, settings, ids, &tables);
  const conf::cache_rule* rule = rules.find(sql, tables);
  return rule && rule->what == conf::cache_rule::action::force;
}

bool cache_client::session_followed() {
  if (session_changed_) return false;
  while (!suspect_functions_.empty()) {
    const auto& [function, path, role] = suspect_functions_.back();
    auto verdict =
        shared_.catalog().try_function(who_.database, who_.conninfo, path, role, function);
    if (!verdict) return false;
    if (*verdict == invalidation::function_verdict::may_write ||
        *verdict == invalidation::function_verdict::unknown) {
      session_changed_ = true;
      suspect_functions_.clear();
      return false;
    }
    suspect_functions_.pop_back();
  }
  return true;
}

cache_client::point_values cache_client::bound_point(const wire::parse_message& statement,
                                                     const wire::bind_message& bind) const {
  point_values out;
  const auto a = analyzed(statement.query);
  if (!a->point) return out;
  for (const auto& e : a->point->equalities) out.push_back(point_value(e, &statement, &bind));
  return out;
}

cache_client::write_set cache_client::writes_of(std::string_view sql,
                                                const pool::settings_map* settings,
                                                const point_values* bound) {
  const auto a = analyzed(sql);
  write_set out;
  // PostgreSQL 15 runs none of a text it cannot parse; a newer server may
  // parse what this parser cannot.
  if (a->reason == uncacheable::parse_error) return opaque_writes();
  const pool::settings_map& s = settings_or_startup(settings);
  // A forced read's functions are vouched for by the operator: they write
  // nothing and change no setting.
  const bool functions_write = !forced(sql, a, s) && functions_may_write(*a, s);
  if (a->read_only && !functions_write) {
    // SET LOCAL is in no key: the transaction's reads after it are not
    // served.
    out.ends_transaction_hits = a->changes_settings;
    resolution_unsettled_ = resolution_unsettled_ || a->changes_resolution;
    out.leaves_read_committed = a->leaves_read_committed;
    return out;
  }
  if (a->read_only || a->invalidates_database || functions_write || a->truncate_cascade ||
      a->writes.empty()) {
    out = opaque_writes();
    resolution_unsettled_ = true;
    out.ddl = a->invalidates_database;
    out.leaves_read_committed = a->leaves_read_committed;
    // DO, CALL, EXECUTE run code that may change settings unseen.
    if (a->runs_code) session_changed_ = true;
    return out;
  }
  out.ends_transaction_hits = true;
  out.leaves_read_committed = a->leaves_read_committed;
  // Its names may stand for other tables than under `s`.
  if (resolution_unsettled_) {
    out.relations.push_back(database_id_);
    return out;
  }
  const std::string path = search_path(s);
  const std::string role = current_role(s);
  invalidation::catalog_service& catalog = shared_.catalog();
  // Read before the answers: a change after it makes the rows' write
  // table-wide at commit.
  const std::uint64_t version = catalog.answers_version();
  for (const auto& target : a->writes) {
    auto facts = catalog.try_write(who_.database, who_.conninfo, path, role, target);
    if (!facts || !facts->known || facts->has_triggers_or_rules) {
      out.relations.push_back(database_id_);
      continue;
    }
    // Only the rows of one key of the target change.
    const auto* key =
        a->writes.size() == 1 ? equality_on(*a, facts->point_key, path, role) : nullptr;
    std::optional<std::int64_t> value;
    if (key) {
      const auto at = static_cast<std::size_t>(key - a->point->equalities.data());
      value = key->constant                 ? key->constant
              : bound && at < bound->size() ? (*bound)[at]
                                            : std::nullopt;
    }
    for (const auto& name : facts->affected) {
      const std::uint64_t id = invalidation::relation_id(who_.database, name);
      if (value && name == target.name) {
        out.rows.push_back(id);
        out.rows.push_back(invalidation::row_key_id(id, key->column, *value));
        out.rows_version = version;
      } else {
        out.relations.push_back(id);
      }
    }
  }
  return out;
}

cache_client::write_set cache_client::opaque_writes() const {
  // What it ran is not known: it may also have changed the isolation level.
  write_set out;
  out.relations = {database_id_};
  out.ends_transaction_hits = true;
  out.leaves_read_committed = true;
  return out;
}

void cache_client::wrote(const write_set& writes) {
  pending_writes_.insert(pending_writes_.end(), writes.relations.begin(), writes.relations.end());
  if (!writes.rows.empty()) {
    if (pending_rows_.empty() || writes.rows_version < pending_rows_version_)
      pending_rows_version_ = writes.rows_version;
    pending_rows_.insert(pending_rows_.end(), writes.rows.begin(), writes.rows.end());
  }
  pending_ddl_ = pending_ddl_ || writes.ddl;
  transaction_wrote_ = transaction_wrote_ || writes.ends_transaction_hits;
  left_read_committed_ = left_read_committed_ || writes.leaves_read_committed;
}

void cache_client::transaction_committed(const write_set* also) {
  if (also) wrote(*also);
  // Answers older than the DDL go before the bump: a reader whose capture
  // follows the bump must not read them.
  if (pending_ddl_) shared_.catalog().forget(who_.database);
  if (pending_writes_.empty() && pending_rows_.empty()) return;
  // The key a write's rows were found by may not be the one reads are
  // keyed by now.
  if (!pending_rows_.empty() && shared_.catalog().answers_version() != pending_rows_version_) {
    pending_writes_.insert(pending_writes_.end(), pending_rows_.begin(), pending_rows_.end());
    pending_rows_.clear();
  }
  pending_writes_.push_back(any_write_id_);
  for (auto* ids : {&pending_writes_, &pending_rows_}) {
    std::sort(ids->begin(), ids->end());
    ids->erase(std::unique(ids->begin(), ids->end()), ids->end());
  }
  shared_.generations().bump(pending_writes_);
  shared_.generations().bump_rows(pending_rows_);
}

void cache_client::transaction_ended(bool rolled_back) {
  if (!rolled_back) transaction_committed();
  // DDL changes what names resolve to, even rolled back halfway (what the
  // catalog answered meanwhile may be of the uncommitted state).
  if (pending_ddl_) shared_.catalog().forget(who_.database);
  pending_writes_.clear();
  pending_rows_.clear();
  pending_ddl_ = false;
  resolution_unsettled_ = false;
  transaction_wrote_ = false;
}

void cache_client::store(result_capture& capture) {
  if (!capture.complete()) return;
  // Who waits for this result looks again once a look-up would find it.
  std::shared_ptr<in_flight_results::claim> claim = std::move(capture.claim_);
  if (!shared_.generations().still_current(capture.deps_)) return;
  std::function<void()> applied;
  if (claim) applied = [claim] { claim->release(); };
  const std::int64_t ttl_ms = static_cast<std::int64_t>(capture.ttl_seconds_) * 1000;
  shared_.store().put(capture.key_, capture.bytes_, capture.deps_, result_cache::now_ms(), ttl_ms,
                      capture.label_, std::move(applied));
}

}  // namespace pgstash::proxy
