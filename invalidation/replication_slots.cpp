#include "invalidation/replication_slots.hpp"

#include <algorithm>
#include <memory>
#include <stdexcept>

#include "invalidation/libpq_handles.hpp"

namespace pgstash::invalidation {

namespace {

using pq::connection;
using pq::result;

std::string message_of(const char* message) {
  const std::string s = pq::first_line(message);
  return s.empty() ? "the server closed the connection" : s;
}

connection connect(const std::string& conninfo) {
  // Bounded: the admin request waiting for it gives up with the server.
  const char* const keywords[] = {
      "connect_timeout",  "application_name", "keepalives", "keepalives_idle",
      "tcp_user_timeout", "options",          "dbname",     nullptr};
  const char* const values[] = {
      "5",    "pgstash slots", "1", "5", "10000", "-c statement_timeout=10000", conninfo.c_str(),
      nullptr};
  connection c(PQconnectdbParams(keywords, values, 1));
  if (PQstatus(c.get()) != CONNECTION_OK)
    throw std::runtime_error(message_of(PQerrorMessage(c.get())));
  return c;
}

// One row per slot: name, database, active, temporary, confirmed position,
// WAL retained.
constexpr const char* k_query =
    "SELECT slot_name, coalesce(database, ''), active, temporary, "
    "coalesce(confirmed_flush_lsn::text, ''), "
    "coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::bigint "
    "FROM pg_catalog.pg_replication_slots "
    "WHERE slot_type = 'logical' AND plugin = 'test_decoding'";

result run(PGconn* c, const char* sql, int params, const char* const* values, ExecStatusType want) {
  result r(PQexecParams(c, sql, params, nullptr, values, nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != want) throw std::runtime_error(message_of(PQerrorMessage(c)));
  return r;
}

}  // namespace

bool named_by(std::string_view slot, std::string_view prefix) {
  if (!slot.starts_with(prefix) || slot.size() < prefix.size() + 2 || slot[prefix.size()] != '_')
    return false;
  const std::string_view oid = slot.substr(prefix.size() + 1);
  return std::all_of(oid.begin(), oid.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

std::vector<replication_slot> list_slots(const std::string& conninfo) {
  connection c = connect(conninfo);
  result r = run(c.get(), (std::string(k_query) + " ORDER BY slot_name").c_str(), 0, nullptr,
                 PGRES_TUPLES_OK);
  std::vector<replication_slot> out;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    const auto field = [&](int column) { return std::string(PQgetvalue(r.get(), i, column)); };
    out.push_back(
        {field(0), field(1), field(2) == "t", field(3) == "t", field(4), std::stoll(field(5))});
  }
  return out;
}

drop_outcome drop_slot(const std::string& conninfo, const std::string& name) {
  connection c = connect(conninfo);
  const char* const values[] = {name.c_str()};
  result found = run(c.get(),
                     "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 "
                     "AND slot_type = 'logical' AND plugin = 'test_decoding'",
                     1, values, PGRES_TUPLES_OK);
  if (PQntuples(found.get()) == 0) return drop_outcome::not_found;
  if (std::string(PQgetvalue(found.get(), 0, 0)) == "t") return drop_outcome::active;
  result dropped(PQexecParams(c.get(), "SELECT pg_catalog.pg_drop_replication_slot($1)", 1, nullptr,
                              values, nullptr, nullptr, 0));
  if (PQresultStatus(dropped.get()) == PGRES_TUPLES_OK) return drop_outcome::dropped;
  // A consumer that came back in between: the server refuses to drop it.
  const char* state = PQresultErrorField(dropped.get(), PG_DIAG_SQLSTATE);
  if (state && std::string(state) == "55006") return drop_outcome::active;
  if (state && std::string(state) == "42704") return drop_outcome::not_found;
  throw std::runtime_error(message_of(PQerrorMessage(c.get())));
}

}  // namespace pgstash::invalidation
