// The relay's side of the result cache: when a statement may be answered
// from it (a Query, or a Bind and what follows on its portal), which server
// answers are captured for it, and which requests carry writes it must hear
// about. What a statement reads, writes and is keyed by is
// proxy/cache_client's business.
#include <algorithm>

#include "proxy/relay.hpp"
#include "wire/framing.hpp"
#include "wire/frontend.hpp"
#include "wire/message_writer.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

using wire::backend_tag;
using wire::tag_of;

namespace {

// A statement that changes the session in a way the cache key would have
// to follow: settings, or objects (temp tables) a name could then mean.
bool changes_session(const relay::analysis_ptr& analysis) {
  if (!analysis) return false;
  for (const auto& effects : analysis->statements) {
    if (!effects.settings.empty() || effects.pins != invalidation::pin_none || effects.discard_all)
      return true;
  }
  return false;
}

std::string empty_message(backend_tag tag) {
  std::string out;
  wire::write_empty(out, tag);
  return out;
}

// The length of the backend message at the start of `bytes` (which holds
// whole messages).
std::size_t message_size(std::string_view bytes) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  return 1 + ((std::size_t{b[1]} << 24) | (std::size_t{b[2]} << 16) | (std::size_t{b[3]} << 8) |
              std::size_t{b[4]});
}

// The first NUL-terminated string of a frame's body, if that much of it is
// at hand: the name a Parse or Bind starts with.
std::optional<std::string> leading_name(std::string_view head) {
  if (head.size() < 5) return std::nullopt;
  const std::string_view body = head.substr(5);
  const std::size_t end = body.find('\0');
  if (end == std::string_view::npos) return std::nullopt;
  return std::string(body.substr(0, end));
}

// Unnamed Parses a session remembers as accepted by the server.
constexpr std::size_t k_good_unnamed_parses = 8;

}  // namespace

relay::~relay() {
  if (!opts_.cache) return;
  // The server may have run, and committed, what the client never heard
  // about.
  for (const expected_response& e : queue_) cache_completed(e);
  opts_.cache->transaction_ended(false);
}

std::optional<invalidation::uncacheable> relay::cache_bypass() const {
  if (opts_.transaction_mode ? pinned() : cache_unfollowed_session_)
    return invalidation::uncacheable::unfollowed_settings;
  // In a transaction, SET LOCAL (or a SET not committed yet) holds
  // settings the key does not have.
  if (tx_status_ == 'T' && state_ && state_->has_staged())
    return invalidation::uncacheable::unfollowed_settings;
  if (!opts_.cache->session_followed()) return invalidation::uncacheable::unfollowed_settings;
  if (tx_status_ == 'T') return opts_.cache->transaction_bypass(cache_settings());
  return std::nullopt;
}

bool relay::cache_may_answer() const {
  // With nothing owed, outside a failed transaction: a hit then answers
  // exactly where the server's answer would have (never before a write of
  // this client's still in flight). Inside a transaction cache_bypass()
  // decides (never inside a snapshot older than now).
  if (tx_status_ == 'E' || !queue_.empty() || batch_started_ || skipping_ || copy_in_) return false;
  // A Query drops the unnamed statement; one the server has must go.
  return !cache_.statements.contains("");
}

bool relay::cache_may_answer_in_batch() const {
  if (tx_status_ == 'E' || skipping_ || copy_in_ || cache_.batch_executed) return false;
  // What the server still owes may only be this batch's Parse, Describe
  // and Close: none of them changes what a read sees, and if one fails,
  // the answers pgstash queued after it are dropped as the server's are.
  for (const expected_response& e : queue_) {
    if (e.what != kind::synthetic && e.what != kind::parse && e.what != kind::describe &&
        e.what != kind::close)
      return false;
  }
  return true;
}

bool relay::holds_captures() const {
  if (!cache_.capture_portals.empty()) return true;
  return std::any_of(queue_.begin(), queue_.end(),
                     [](const expected_response& e) { return e.capture != nullptr; });
}

const pool::settings_map* relay::cache_settings() const {
  return state_ ? &state_->settings() : nullptr;
}

void relay::consult_cache(std::string_view sql, plan& p) {
  if (!cache_may_answer()) return;
  if (auto why = cache_bypass()) {
    opts_.cache->not_served(sql, *why);
    return;
  }
  cache_client::lookup found = opts_.cache->query(sql, cache_settings());
  if (found.response) {
    p.where = route::answer_locally;
    p.cached = std::move(found.response);
    return;
  }
  p.capture = std::move(found.capture);
}

std::optional<std::string_view> relay::cache_statement(std::string_view name) const {
  if (name.empty() && cache_.deferred_parse) return *cache_.deferred_parse;
  if (opts_.transaction_mode && !name.empty()) {
    // pgstash's own record of the client's statements is the authority.
    const statement_map::statement* stmt = statements_.find(name);
    if (!stmt) return std::nullopt;
    return stmt->parse_frame;
  }
  auto it = cache_.statements.find(name);
  if (it == cache_.statements.end()) return std::nullopt;
  return it->second;
}

void relay::set_statement(const std::string& name, std::optional<std::string> parse) {
  std::optional<std::string> before;
  if (auto it = cache_.statements.find(name); it != cache_.statements.end()) before = it->second;
  auto apply = [this, name](const std::optional<std::string>& frame) {
    if (frame) {
      cache_.statements.insert_or_assign(name, *frame);
    } else {
      cache_.statements.erase(name);
    }
  };
  apply(parse);
  if (queue_.empty()) return;
  // A failed Parse of the unnamed statement leaves none on the server; a
  // named one keeps what it had.
  if (name.empty()) before.reset();
  expected_response& request = queue_.back();
  auto undo = [apply, before = std::move(before)] { apply(before); };
  if (request.undo) {
    request.undo = [first = std::move(request.undo), undo] {
      undo();
      first();
    };
  } else {
    request.undo = std::move(undo);
  }
}

void relay::forget_unnamed_statement() {
  cache_.deferred_parse.reset();
  cache_.statements.erase("");
  cache_.batch_local = true;
  cache_.batch_executed = false;
}

std::optional<relay::plan> relay::plan_bind_for_cache(std::string_view body) {
  wire::bind_message bind;
  if (wire::parse_bind(body, bind)) return std::nullopt;
  // PostgreSQL refuses to bind a named portal that exists; one pgstash
  // answered for exists only here. (Its checks before that one, a missing
  // statement and a failed transaction, are the server's to make; and
  // with requests owed, the transaction the portal lived in may be over.)
  if (!bind.portal.empty() && cache_.local_portals.contains(bind.portal) && tx_status_ != 'E' &&
      !queue_.owes_server() && cache_statement(bind.statement)) {
    plan p{opts_.transaction_mode && !server_ ? route::answer_locally : route::to_server, nullptr};
    p.fail.emplace();
    wire::write_error(*p.fail, "ERROR", "42P03",
                      "cursor \"" + std::string(bind.portal) + "\" already exists");
    return p;
  }
  if (!cache_may_answer_in_batch()) return std::nullopt;
  if (!bind.portal.empty() && cache_.portal_texts.contains(bind.portal)) return std::nullopt;
  const auto frame = cache_statement(bind.statement);
  wire::parse_message statement;
  if (!frame || wire::parse_parse(frame->substr(5), statement)) return std::nullopt;
  if (auto why = cache_bypass()) {
    opts_.cache->not_served(statement.query, *why);
    return std::nullopt;
  }
  cache_client::lookup found = opts_.cache->bind(statement, bind, cache_settings());
  if (found.response) return plan{route::answer_locally, nullptr, {}, std::move(found.response)};
  if (found.capture) return plan{route::to_server, nullptr, {}, std::nullopt, std::move(found.capture)};
  return std::nullopt;
}

relay::plan relay::failed_transaction_plan() const {
  // A portal of pgstash's own in a transaction that failed since: its rows
  // are refused as the server refuses any.
  plan p{opts_.transaction_mode && !server_ ? route::answer_locally : route::to_server, nullptr};
  p.fail.emplace();
  wire::write_error(
      *p.fail, "ERROR", "25P02",
      "current transaction is aborted, commands ignored until end of transaction block");
  return p;
}

std::optional<relay::plan> relay::plan_for_cache(frontend_tag t, std::string_view frame) {
  const std::string_view body = frame.substr(5);
  const plan local{route::answer_locally, nullptr};
  // After an error in the batch the server skips to the Sync; so do the
  // answers pgstash would give.
  if (skipping_) return std::nullopt;
  switch (t) {
    case frontend_tag::parse: {
      wire::parse_message parse;
      if (wire::parse_parse(body, parse) || !parse.statement.empty()) return std::nullopt;
      // Only a text the server accepted last time: its answer to this
      // Parse is then known (unless DDL came between, when the client
      // gets the server's error at its Bind instead).
      const auto& good = cache_.good_unnamed_parses;
      if (std::find(good.begin(), good.end(), frame) == good.end() ||
          !cache_may_answer_in_batch() || cache_bypass() || !opts_.cache->cacheable(parse.query))
        return std::nullopt;
      plan p{route::answer_locally, analyze(parse.query)};
      p.defer_parse = true;
      return p;
    }
    case frontend_tag::bind:
      return plan_bind_for_cache(body);
    case frontend_tag::describe: {
      wire::describe_message d;
      if (wire::parse_describe(body, d) || d.target != 'P' || !cache_.local_portals.contains(d.name))
        return std::nullopt;
      return tx_status_ == 'E' ? failed_transaction_plan() : local;
    }
    case frontend_tag::execute: {
      wire::execute_message e;
      if (wire::parse_execute(body, e) || !cache_.local_portals.contains(e.portal)) return std::nullopt;
      return tx_status_ == 'E' ? failed_transaction_plan() : local;
    }
    case frontend_tag::close: {
      wire::close_message c;
      if (wire::parse_close(body, c) || c.target != 'P' || !cache_.local_portals.contains(c.name))
        return std::nullopt;
      return local;
    }
    case frontend_tag::sync:
      // A batch the cache answered whole: the server never saw it, and
      // nothing owed can change the transaction status it reports.
      if (batch_started_ && cache_.batch_local && !copy_in_ && !queue_.owes_server()) return local;
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

bool relay::answer_from_cache(char tag, std::string_view frame, plan& p) {
  const std::string_view body = frame.substr(5);
  if (p.fail) {
    fail_batch(*p.fail);
    return true;
  }
  if (p.defer_parse) {
    cache_.deferred_parse = std::string(frame);
    unnamed_statement_ = p.analysis;
    unnamed_deallocates_.reset();
    expect_synthetic(empty_message(backend_tag::parse_complete));
    return true;
  }
  if (p.where != route::answer_locally) return false;
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::bind: {
      if (!p.cached) return false;
      wire::bind_message bind;
      if (wire::parse_bind(body, bind)) return false;
      const std::size_t head = message_size(*p.cached);
      const std::string name(bind.portal);
      cache_.local_portals.insert_or_assign(name, local_portal{std::move(*p.cached), head});
      cache_.capture_portals.erase(name);
      cache_.portal_texts.erase(name);
      expect_synthetic(empty_message(backend_tag::bind_complete));
      return true;
    }
    case frontend_tag::describe: {
      wire::describe_message d;
      if (wire::parse_describe(body, d)) return false;
      auto it = cache_.local_portals.find(d.name);
      if (it == cache_.local_portals.end()) return false;
      expect_synthetic(std::string(it->second.row_description()));
      return true;
    }
    case frontend_tag::execute: {
      // Other frames pgstash answers (a portal running a DEALLOCATE it
      // answers) are the relay's own.
      wire::execute_message e;
      if (wire::parse_execute(body, e) || !cache_.local_portals.contains(e.portal)) return false;
      answer_execute_from_cache(e);
      return true;
    }
    case frontend_tag::close: {
      wire::close_message c;
      if (wire::parse_close(body, c) || c.target != 'P' ||
          !cache_.local_portals.erase(std::string(c.name)))
        return false;
      expect_synthetic(empty_message(backend_tag::close_complete));
      return true;
    }
    default:
      return false;
  }
}

void relay::answer_execute_from_cache(const wire::execute_message& e) {
  local_portal& portal = cache_.local_portals.find(e.portal)->second;
  // Rows up to the Execute's limit, then PortalSuspended, as the server
  // sends them; the rest for the next Execute of the portal.
  const std::string_view rows = portal.rows_left();
  std::size_t taken = 0;
  std::uint32_t count = 0;
  while (taken < rows.size() && rows[taken] == 'D' && (e.max_rows == 0 || count < e.max_rows)) {
    taken += message_size(rows.substr(taken));
    ++count;
  }
  std::string answer(rows.substr(0, taken));
  portal.sent += taken;
  if (e.max_rows != 0 && count == e.max_rows) {
    wire::write_empty(answer, backend_tag::portal_suspended);
  } else {
    // Every cacheable statement is a SELECT; the count is this Execute's.
    wire::write_command_complete(answer, "SELECT " + std::to_string(count));
  }
  expect_synthetic(std::move(answer));
}

void relay::expect_writes(cache_write_set writes) {
  if (writes.empty()) return;
  // Once the session has changed what names mean in ways pgstash does
  // not follow, a write's targets may not be the tables it looks up.
  if (cache_unfollowed_session_ && !opts_.transaction_mode)
    writes.relations = opts_.cache->opaque_writes().relations;
  queue_.back().writes = std::make_shared<const cache_write_set>(std::move(writes));
}

void relay::cache_completed(const expected_response& e) {
  if (opts_.cache && e.writes) opts_.cache->wrote(*e.writes);
}

void relay::send_deferred_parse_if_needed(char tag, std::string_view frame) {
  const std::string_view body = frame.substr(5);
  bool needed = false;
  if (tag == tag_of(frontend_tag::bind)) {
    wire::bind_message bind;
    needed = wire::parse_bind(body, bind) || bind.statement.empty();
  } else if (tag == tag_of(frontend_tag::describe)) {
    wire::describe_message d;
    needed = wire::parse_describe(body, d) || (d.target == 'S' && d.name.empty());
  }
  if (!needed) return;
  std::string parse = std::move(*cache_.deferred_parse);
  cache_.deferred_parse.reset();
  out_ += parse;
  // Its ParseComplete was given; an error is the client's.
  queue_.push(expected_response::internal(kind::parse));
  set_statement("", std::move(parse));
  cache_.batch_local = false;
}

void relay::tell_cache(char tag, std::string_view frame, const plan& p) {
  cache_client& cache = *opts_.cache;
  const std::string_view body = frame.substr(5);
  const bool sent = p.where == route::to_server;
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query: {
      // Whether answered here or there, a Query ends the batch and drops
      // the unnamed statement and portal.
      forget_unnamed_statement();
      cache_.local_portals.erase("");
      wire::query_message q;
      if (!sent || wire::parse_query(body, q)) return;
      if (!opts_.transaction_mode && changes_session(analyze(q.sql))) cache_unfollowed_session_ = true;
      expect_writes(cache.writes_of(q.sql, cache_settings()));
      return;
    }
    case frontend_tag::parse: {
      wire::parse_message parse;
      if (wire::parse_parse(body, parse)) return;
      if (!sent) {
        // Answered by pgstash (transaction mode's DEALLOCATE of a
        // protocol-level statement): the unnamed statement is that now.
        if (parse.statement.empty()) cache_.deferred_parse.reset();
        return;
      }
      cache_.batch_local = false;
      if (!opts_.transaction_mode && changes_session(analyze(parse.query)))
        cache_unfollowed_session_ = true;
      if (!parse.statement.empty()) {
        // Transaction mode keeps its own record (statement_map).
        if (!opts_.transaction_mode) set_statement(std::string(parse.statement), std::string(frame));
        return;
      }
      cache_.deferred_parse.reset();
      set_statement("", std::string(frame));
      // Held back next time only if the server accepts it now.
      auto& good = cache_.good_unnamed_parses;
      std::erase(good, frame);
      if (good.size() == k_good_unnamed_parses) good.erase(good.begin());
      good.emplace_back(frame);
      auto& request = queue_.back();
      request.undo = [this, frame = std::string(frame), first = std::move(request.undo)] {
        std::erase(cache_.good_unnamed_parses, frame);
        if (first) first();
      };
      return;
    }
    case frontend_tag::bind: {
      wire::bind_message bind;
      if (!sent || wire::parse_bind(body, bind)) return;
      cache_.batch_local = false;
      const std::string portal(bind.portal);
      cache_.local_portals.erase(portal);
      wire::parse_message statement;
      const auto frame_of = cache_statement(bind.statement);
      if (frame_of && !wire::parse_parse(frame_of->substr(5), statement)) {
        cache_.portal_texts.insert_or_assign(
            portal, cache_batch_state::portal_text{std::string(statement.query),
                                                   cache.bound_point(statement, bind)});
      } else {
        cache_.portal_texts.erase(portal);
      }
      if (p.capture) {
        cache_.capture_portals.insert_or_assign(portal, p.capture);
      } else {
        cache_.capture_portals.erase(portal);
      }
      return;
    }
    case frontend_tag::describe: {
      wire::describe_message d;
      if (!sent || wire::parse_describe(body, d)) return;
      cache_.batch_local = false;
      if (d.target != 'P') return;
      if (auto it = cache_.capture_portals.find(d.name); it != cache_.capture_portals.end())
        queue_.back().capture = it->second;
      return;
    }
    case frontend_tag::execute: {
      wire::execute_message e;
      if (!sent || wire::parse_execute(body, e)) return;
      cache_.batch_local = false;
      cache_.batch_executed = true;
      if (auto it = cache_.portal_texts.find(e.portal); it != cache_.portal_texts.end()) {
        expect_writes(cache.writes_of(it->second.sql, cache_settings(), &it->second.point));
      } else {
        expect_writes(cache.opaque_writes());
      }
      if (auto it = cache_.capture_portals.find(e.portal); it != cache_.capture_portals.end()) {
        queue_.back().capture = std::move(it->second);
        cache_.capture_portals.erase(it);
      }
      return;
    }
    case frontend_tag::close: {
      wire::close_message c;
      if (wire::parse_close(body, c)) return;
      if (sent) cache_.batch_local = false;
      if (c.target == 'S') {
        if (c.name.empty()) cache_.deferred_parse.reset();
        if (!opts_.transaction_mode || c.name.empty()) set_statement(std::string(c.name), std::nullopt);
      } else {
        cache_.portal_texts.erase(std::string(c.name));
        cache_.capture_portals.erase(std::string(c.name));
      }
      return;
    }
    case frontend_tag::sync:
      cache_.batch_local = true;
      cache_.batch_executed = false;
      // In a transaction a portal lives until it ends (on_ready_for_query).
      if (tx_status_ == 'I') cache_.local_portals.clear();
      cache_.capture_portals.clear();
      return;
    case frontend_tag::function_call:
      expect_writes(cache.opaque_writes());
      return;
    default:
      return;
  }
}

void relay::cache_on_streamed(char tag, std::string_view head) {
  // Too large to read: what it runs, writes or names is not known.
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query:
      forget_unnamed_statement();
      expect_writes(opts_.cache->opaque_writes());
      return;
    case frontend_tag::parse: {
      cache_.batch_local = false;
      const auto name = leading_name(head);
      if (!name || name->empty()) {
        cache_.deferred_parse.reset();
        cache_.good_unnamed_parses.clear();
        cache_.statements.erase("");
      } else {
        cache_.statements.erase(*name);
      }
      return;
    }
    case frontend_tag::bind: {
      cache_.batch_local = false;
      if (const auto portal = leading_name(head)) {
        cache_.portal_texts.erase(*portal);
        cache_.capture_portals.erase(*portal);
        cache_.local_portals.erase(*portal);
      } else {
        cache_.portal_texts.clear();
        cache_.capture_portals.clear();
        cache_.local_portals.clear();
      }
      return;
    }
    default:
      cache_.batch_local = false;
      return;
  }
}

void relay::cache_on_server_frame(char tag, std::optional<std::string_view> body) {
  result_capture& capture = *queue_.front().capture;
  const bool was_spoiled = capture.spoiled_by().has_value();
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::row_description:
    case backend_tag::data_row:
      capture.add(tag, body);
      break;
    case backend_tag::command_complete:
      capture.add(tag, body);
      if (capture.complete()) opts_.cache->store(capture);
      break;
    case backend_tag::parameter_status:
    case backend_tag::ready_for_query:
      return;
    case backend_tag::portal_suspended:
      capture.spoil(invalidation::uncacheable::partial_fetch);
      break;
    default:
      // A notice, an error, COPY, an empty query: never stored.
      capture.spoil(invalidation::uncacheable::notice_or_error);
      break;
  }
  if (!was_spoiled && capture.spoiled_by())
    opts_.cache->shared().count_uncacheable(*capture.spoiled_by());
  if (capture.spoiled_by()) capture.release_claim();
}

}  // namespace pgstash::proxy
