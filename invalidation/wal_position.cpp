#include "invalidation/wal_position.hpp"

#include <charconv>
#include <utility>

#include <libpq-fe.h>

#include "invalidation/wal_barrier.hpp"

namespace pgstash::invalidation {

namespace {

constexpr const char* k_poll =
    "SELECT pg_catalog.pg_current_wal_insert_lsn(), pg_catalog.current_setting('wal_block_size')";
// Committed with synchronous_commit = local (the connection's setting).
constexpr const char* k_flush =
    "SELECT pg_catalog.pg_logical_emit_message(true, 'pgstash.flush', '')";

std::string error_of(PGconn* c, const PGresult* r) {
  std::string why = r ? PQresultErrorMessage(r) : "";
  if (why.empty() && c) why = PQerrorMessage(c);
  if (auto nl = why.find('\n'); nl != std::string::npos) why.resize(nl);
  return why.empty() ? "the server closed the connection" : why;
}

}  // namespace

void wal_position::result_deleter::operator()(PGresult* r) const { PQclear(r); }
using result = std::unique_ptr<PGresult, wal_position::result_deleter>;

wal_position::wal_position(std::string conninfo) : conninfo_(std::move(conninfo)) {}

wal_position::~wal_position() { drop(); }

void wal_position::drop() {
  answer_.reset();
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  in_flight_ = query::none;
}

int wal_position::socket() const { return conn_ && busy() ? PQsocket(conn_) : -1; }

bool wal_position::send(query what, const char* sql, std::string& error) {
  if (!conn_) {
    // No timeout of the server's may end it while it waits for hits.
    const char* const keywords[] = {"connect_timeout", "application_name", "options", "dbname",
                                    nullptr};
    const char* const values[] = {
        "2", "pgstash wal position",
        "-c idle_session_timeout=0 -c statement_timeout=0 -c synchronous_commit=local",
        conninfo_.c_str(), nullptr};
    conn_ = PQconnectdbParams(keywords, values, 1);
    if (PQstatus(conn_) != CONNECTION_OK || PQsetnonblocking(conn_, 1) != 0) {
      error = error_of(conn_, nullptr);
      drop();
      return false;
    }
  }
  if (!PQsendQuery(conn_, sql) || PQflush(conn_) < 0) {
    error = error_of(conn_, nullptr);
    drop();
    return false;
  }
  in_flight_ = what;
  return true;
}

bool wal_position::send_poll(std::string& error) { return send(query::poll, k_poll, error); }

bool wal_position::send_flush(std::string& error) {
  return !flush_refused_ && send(query::flush, k_flush, error);
}

wal_position::outcome wal_position::read(std::uint64_t& position, std::string& error) {
  if (!busy()) return outcome::waiting;
  if (!PQconsumeInput(conn_) || PQflush(conn_) < 0) {
    error = error_of(conn_, nullptr);
    drop();
    return outcome::failed;
  }
  // Every result of the query, then its end, without blocking.
  result answer;
  while (!PQisBusy(conn_)) {
    result r(PQgetResult(conn_));
    if (!r) {
      const query done = std::exchange(in_flight_, query::none);
      const bool rows = answer_ && PQresultStatus(answer_.get()) == PGRES_TUPLES_OK &&
                        PQntuples(answer_.get()) == 1;
      answer = std::move(answer_);
      if (done == query::flush) {
        if (!rows) {
          // Without the privilege: hits wait for the WAL writer, or go to
          // the server after cache.strict_wait_ms.
          flush_refused_ = true;
          error = error_of(conn_, answer.get());
        }
        return outcome::flushed;
      }
      const auto lsn = rows ? parse_lsn(PQgetvalue(answer.get(), 0, 0)) : std::nullopt;
      std::uint32_t block_size = 0;
      const char* bs = rows ? PQgetvalue(answer.get(), 0, 1) : "";
      std::from_chars(bs, bs + std::char_traits<char>::length(bs), block_size);
      if (!lsn) {
        error = error_of(conn_, answer.get());
        drop();
        return outcome::failed;
      }
      position = last_record_end(*lsn, block_size);
      return outcome::polled;
    }
    if (!answer_) answer_ = std::move(r);
  }
  return outcome::waiting;
}

}  // namespace pgstash::invalidation
