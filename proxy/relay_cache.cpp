// The relay's side of the result cache: when a statement may be answered
// from it (a Query, or a Bind and what follows on its portal), which server
// answers are captured for it, and which frames carry writes it must hear
// about. What a statement reads, writes and is keyed by is
// proxy/cache_client's business.
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

}  // namespace

relay::~relay() {
  // The server may have committed what the client never heard about.
  if (opts_.cache) opts_.cache->transaction_ended(false);
}

bool relay::cache_session_followed() const {
  return opts_.transaction_mode ? !pinned() : !cache_unfollowed_session_;
}

bool relay::cache_may_answer() const {
  // Outside a transaction, with nothing owed: a hit then answers exactly
  // where the server's answer would have (never before a write of this
  // client's still in flight, never inside a snapshot older than now).
  if (tx_status_ != 'I' || !queue_.empty() || batch_started_ || skipping_ || copy_in_) return false;
  return cache_session_followed();
}

bool relay::cache_may_answer_in_batch() const {
  if (tx_status_ != 'I' || skipping_ || copy_in_ || cache_.batch_executed) return false;
  // What the server still owes may only be this batch's Parse, Describe
  // and Close: none of them changes what a read sees, and if one fails,
  // the answers pgstash queued after it are dropped as the server's are.
  for (const expected_response& e : queue_) {
    if (e.what != kind::synthetic && e.what != kind::parse && e.what != kind::describe &&
        e.what != kind::close)
      return false;
  }
  return cache_session_followed();
}

const pool::settings_map* relay::cache_settings() const {
  return state_ ? &state_->settings() : nullptr;
}

void relay::consult_cache(std::string_view sql, plan& p) {
  if (!cache_may_answer()) return;
  cache_client::lookup found = opts_.cache->query(sql, cache_settings());
  if (found.response) {
    p.where = route::answer_locally;
    p.cached = std::move(found.response);
    return;
  }
  p.capture = std::move(found.capture);
}

std::optional<std::string_view> relay::cache_statement_text(std::string_view name) const {
  if (name.empty() && cache_.deferred_parse) {
    wire::parse_message parse;
    if (!wire::parse_parse(std::string_view(*cache_.deferred_parse).substr(5), parse))
      return parse.query;
  }
  if (opts_.transaction_mode && !name.empty()) {
    // pgstash's own record of the client's statements is the authority.
    const statement_map::statement* stmt = statements_.find(name);
    wire::parse_message parse;
    if (stmt && !wire::parse_parse(std::string_view(stmt->parse_frame).substr(5), parse))
      return parse.query;
    return std::nullopt;
  }
  auto it = cache_.statement_texts.find(name);
  if (it == cache_.statement_texts.end()) return std::nullopt;
  return it->second;
}

void relay::set_statement_text(const std::string& name, std::optional<std::string> text) {
  std::optional<std::string> before;
  if (auto it = cache_.statement_texts.find(name); it != cache_.statement_texts.end())
    before = it->second;
  auto apply = [this, name](const std::optional<std::string>& t) {
    if (t) {
      cache_.statement_texts.insert_or_assign(name, *t);
    } else {
      cache_.statement_texts.erase(name);
    }
  };
  apply(text);
  if (queue_.empty()) return;
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

std::optional<relay::plan> relay::plan_bind_for_cache(std::string_view body) {
  wire::bind_message bind;
  if (wire::parse_bind(body, bind) || !cache_may_answer_in_batch()) return std::nullopt;
  const auto text = cache_statement_text(bind.statement);
  if (!text) return std::nullopt;
  cache_client::lookup found = opts_.cache->bind(*text, bind, cache_settings());
  if (found.response) return plan{route::answer_locally, nullptr, {}, std::move(found.response)};
  if (found.capture) return plan{route::to_server, nullptr, {}, std::nullopt, std::move(found.capture)};
  return std::nullopt;
}

std::optional<relay::plan> relay::plan_for_cache(frontend_tag t, std::string_view frame) {
  const std::string_view body = frame.substr(5);
  const plan local{route::answer_locally, nullptr};
  switch (t) {
    case frontend_tag::parse: {
      wire::parse_message parse;
      if (wire::parse_parse(body, parse) || !parse.statement.empty()) return std::nullopt;
      // Only a text the server accepted last time: its answer to this
      // Parse is then known (unless DDL came between, when the client
      // gets the server's error at its Bind instead).
      if (frame != cache_.last_good_unnamed_parse || !cache_may_answer_in_batch() ||
          !opts_.cache->cacheable(parse.query))
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
      return local;
    }
    case frontend_tag::execute: {
      wire::execute_message e;
      if (wire::parse_execute(body, e) || !cache_.local_portals.contains(e.portal)) return std::nullopt;
      return local;
    }
    case frontend_tag::close: {
      wire::close_message c;
      if (wire::parse_close(body, c) || c.target != 'P' || !cache_.local_portals.contains(c.name))
        return std::nullopt;
      return local;
    }
    case frontend_tag::sync:
      // A batch the cache answered whole: the server never saw it.
      if (batch_started_ && cache_.batch_local && !skipping_ && !copy_in_) return local;
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

bool relay::answer_from_cache(char tag, std::string_view frame, const plan& p) {
  const std::string_view body = frame.substr(5);
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
      const std::string portal(bind.portal);
      cache_.local_portals.insert_or_assign(portal, *p.cached);
      cache_.capture_portals.erase(portal);
      cache_.portal_texts.erase(portal);
      expect_synthetic(empty_message(backend_tag::bind_complete));
      return true;
    }
    case frontend_tag::describe: {
      wire::describe_message d;
      if (wire::parse_describe(body, d)) return false;
      auto it = cache_.local_portals.find(d.name);
      if (it == cache_.local_portals.end()) return false;
      const std::string& rows = it->second;
      expect_synthetic(rows.starts_with('T') ? rows.substr(0, message_size(rows))
                                             : empty_message(backend_tag::no_data));
      return true;
    }
    case frontend_tag::execute: {
      wire::execute_message e;
      if (wire::parse_execute(body, e)) return false;
      auto it = cache_.local_portals.find(e.portal);
      if (it == cache_.local_portals.end()) return false;
      std::string_view rest = it->second;
      if (rest.starts_with('T')) rest.remove_prefix(message_size(rest));
      // Rows up to the Execute's limit, then PortalSuspended, as the server
      // would; the rest stays for the next Execute.
      std::size_t taken = 0;
      std::uint32_t rows = 0;
      while (taken < rest.size() && rest[taken] == 'D' && (e.max_rows == 0 || rows < e.max_rows)) {
        taken += message_size(rest.substr(taken));
        ++rows;
      }
      std::string answer(rest.substr(0, taken));
      if (taken < rest.size() && rest[taken] == 'D') {
        wire::write_empty(answer, backend_tag::portal_suspended);
        it->second = std::string(rest.substr(taken));
      } else {
        answer += rest.substr(taken);
        cache_.local_portals.erase(it);
      }
      expect_synthetic(std::move(answer));
      return true;
    }
    case frontend_tag::close: {
      wire::close_message c;
      if (wire::parse_close(body, c) || c.target != 'P' || !cache_.local_portals.erase(std::string(c.name)))
        return false;
      expect_synthetic(empty_message(backend_tag::close_complete));
      return true;
    }
    default:
      return false;
  }
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
  wire::parse_message message;
  if (wire::parse_parse(std::string_view(parse).substr(5), message)) return;
  out_ += parse;
  // Its ParseComplete was given; an error is the client's.
  queue_.push(expected_response::internal(kind::parse));
  set_statement_text("", std::string(message.query));
  cache_.batch_local = false;
}

void relay::tell_cache(char tag, std::string_view frame, const plan& p) {
  cache_client& cache = *opts_.cache;
  const std::string_view body = frame.substr(5);
  const bool sent = p.where == route::to_server;
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query: {
      wire::query_message q;
      if (!sent || wire::parse_query(body, q)) return;
      if (!opts_.transaction_mode && changes_session(analyze(q.sql))) cache_unfollowed_session_ = true;
      cache.sent(q.sql, cache_settings());
      // A simple Query replaces the unnamed statement, and ends a batch.
      cache_.deferred_parse.reset();
      cache_.statement_texts.erase("");
      cache_.batch_local = true;
      cache_.batch_executed = false;
      return;
    }
    case frontend_tag::parse: {
      wire::parse_message parse;
      if (!sent || wire::parse_parse(body, parse)) return;
      cache_.batch_local = false;
      if (!opts_.transaction_mode && changes_session(analyze(parse.query)))
        cache_unfollowed_session_ = true;
      if (!parse.statement.empty()) {
        // Transaction mode keeps its own record (statement_map).
        if (!opts_.transaction_mode) set_statement_text(std::string(parse.statement), std::string(parse.query));
        return;
      }
      cache_.deferred_parse.reset();
      set_statement_text("", std::string(parse.query));
      // Undone with the text if the server refuses the Parse.
      std::string before = cache_.last_good_unnamed_parse;
      cache_.last_good_unnamed_parse = std::string(frame);
      auto& request = queue_.back();
      request.undo = [this, first = std::move(request.undo), before = std::move(before)] {
        cache_.last_good_unnamed_parse = before;
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
      if (auto text = cache_statement_text(bind.statement)) {
        cache_.portal_texts.insert_or_assign(portal, std::string(*text));
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
        cache.sent(it->second, cache_settings());
      } else {
        cache.sent_opaque();
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
        if (!opts_.transaction_mode || c.name.empty()) set_statement_text(std::string(c.name), std::nullopt);
      } else {
        cache_.portal_texts.erase(std::string(c.name));
        cache_.capture_portals.erase(std::string(c.name));
      }
      return;
    }
    case frontend_tag::sync:
      cache_.batch_local = true;
      cache_.batch_executed = false;
      cache_.local_portals.clear();
      cache_.capture_portals.clear();
      return;
    case frontend_tag::function_call:
      cache.sent_opaque();
      return;
    default:
      return;
  }
}

bool relay::capturing() const {
  return !queue_.empty() && queue_.front().capture && !queue_.front().capture->spoiled();
}

void relay::cache_on_server_frame(char tag, std::optional<std::string_view> body) {
  result_capture& capture = *queue_.front().capture;
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::row_description:
    case backend_tag::data_row:
      capture.add(tag, body);
      return;
    case backend_tag::command_complete:
      capture.add(tag, body);
      if (capture.complete()) opts_.cache->store(capture);
      return;
    case backend_tag::parameter_status:
    case backend_tag::ready_for_query:
      return;
    default:
      // A notice, an error, COPY, an empty query, a partial fetch: never
      // stored.
      capture.spoil();
      return;
  }
}

}  // namespace pgstash::proxy
