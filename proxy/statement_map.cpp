#include "proxy/statement_map.hpp"

#include <xxhash.h>

#include <chrono>
#include <cstdio>

#include "wire/message_writer.hpp"

namespace pgstash::proxy {

std::string server_statement_name(const wire::parse_message& parse) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  XXH3_128bits_update(state, parse.query.data(), parse.query.size());
  for (std::uint32_t oid : parse.parameter_types) XXH3_128bits_update(state, &oid, sizeof oid);
  XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  char name[48];
  std::snprintf(name, sizeof name, "pgstash_%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return name;
}

std::uint64_t statement_map::now() {
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

const statement_map::statement& statement_map::define(const wire::parse_message& parse,
                                                      analysis_ptr analysis, std::uint64_t now) {
  statement stmt{server_statement_name(parse), {}, std::move(analysis), now};
  wire::write_parse(stmt.parse_frame, stmt.server_name, parse.query, parse.parameter_types);
  auto [it, inserted] = statements_.insert_or_assign(std::string(parse.statement), std::move(stmt));
  (void)inserted;
  return it->second;
}

const statement_map::statement* statement_map::find(std::string_view client_name) const {
  auto it = statements_.find(client_name);
  return it == statements_.end() ? nullptr : &it->second;
}

bool statement_map::erase(std::string_view client_name) {
  auto it = statements_.find(client_name);
  if (it == statements_.end()) return false;
  statements_.erase(it);
  return true;
}

void statement_map::restore(const std::string& client_name, std::optional<statement> previous) {
  if (previous) {
    statements_.insert_or_assign(client_name, std::move(*previous));
  } else {
    statements_.erase(client_name);
  }
}

bool statement_map::statement::ends_failed_transaction() const {
  return analysis && analysis->statements.size() == 1 &&
         invalidation::exits_failed_transaction(analysis->statements[0].transaction);
}

bool statement_map::statement::rows_fixed_at_parse() const {
  return analysis && analysis->statements.size() == 1 &&
         !analysis->statements[0].execute_name.empty();
}

bool statement_map::prepared_on(const statement& stmt, const pool::statement_lru& server) {
  const std::optional<std::uint64_t> there = server.version(stmt.server_name);
  return there && *there >= stmt.parsed_at;
}

statement_map::preparation statement_map::prepare_on(const statement& stmt,
                                                     pool::statement_lru& server,
                                                     std::uint64_t now) {
  preparation p;
  if (prepared_on(stmt, server)) {
    server.touch(stmt.server_name);
    return p;
  }
  p.parse = true;
  p.evicted = server.insert(stmt.server_name, now);
  return p;
}

}  // namespace pgstash::proxy
