// Strict consistency's control connection to one database (libpq,
// nonblocking, driven by the replication stream's thread): polls the
// position up to which the stream must have applied the WAL
// (pg_current_wal_insert_lsn()), and makes the server flush its WAL when a
// polled position stays out of the stream's reach. The stream reads only
// flushed WAL, and PostgreSQL's WAL writer leaves a partial page of records
// that commit nothing (an open transaction's writes, pruning) unflushed
// until something commits.
//
// One query at a time. A connection that fails is dropped and made again
// by the next query; the stream itself carries on.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

namespace pgstash::invalidation {

class wal_position {
 public:
  struct result_deleter {
    void operator()(PGresult* r) const;
  };
  explicit wal_position(std::string conninfo);
  ~wal_position();
  wal_position(const wal_position&) = delete;
  wal_position& operator=(const wal_position&) = delete;

  // The socket to wait on while a query is in flight; -1 otherwise.
  int socket() const;
  bool busy() const { return in_flight_ != query::none; }

  // Sends a poll (connecting first if needed). False, with `error`, if it
  // cannot.
  bool send_poll(std::string& error);
  // Sends a flush: an empty logical message in a transaction committed
  // with synchronous_commit = local, whose commit flushes all WAL before
  // it. False if it cannot, or once the server has refused it (no
  // privilege): then said once in `error`.
  bool send_flush(std::string& error);

  enum class outcome : std::uint8_t { waiting, polled, flushed, failed };
  // Reads what has arrived: `polled` sets `position` (the end of the last
  // record before the insert position), `failed` sets `error` (the
  // connection is dropped).
  outcome read(std::uint64_t& position, std::string& error);

 private:
  enum class query : std::uint8_t { none, poll, flush };
  bool send(query what, const char* sql, std::string& error);
  void drop();

  const std::string conninfo_;
  PGconn* conn_ = nullptr;
  std::unique_ptr<PGresult, result_deleter> answer_;  // the query's first result
  query in_flight_ = query::none;
  bool flush_refused_ = false;
};

}  // namespace pgstash::invalidation
