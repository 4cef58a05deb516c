// What a database's logical replication stream says the cache must drop:
// the decoding of the `test_decoding` output plugin's lines into committed
// transactions and the relations they changed. Pure: bytes in, facts out.
//
// Why test_decoding and not pgoutput: pgoutput sends only what a
// publication publishes, and a publication that publishes the UPDATEs and
// DELETEs of every table makes PostgreSQL refuse those statements on any
// table without a replica identity (no primary key). Following writes must
// never change which writes succeed. test_decoding ships with the server,
// needs no publication, and names each changed table in a line of text.
//
// Feed it the payload of each CopyData the walsender sends (an XLogData
// 'w' or a keepalive 'k'), with the options `include-xids` 0 and
// `skip-empty-xacts` 1. A transaction's changes count only at its COMMIT:
// an aborted one is never decoded, and one being decoded is not visible to
// any reader yet. Relations are named by their bare name (pg_class.relname),
// the generations' unit of invalidation.
//
// A logical message with prefix `k_ddl_message_prefix` (which pgstash's
// event trigger emits transactionally for every DDL command) makes its
// transaction a DDL one: the catalog answers of the database are stale and
// every result of it must go. Decoding happens once a transaction has
// committed, so such a message outside BEGIN/COMMIT (test_decoding prints
// it so when it precedes the transaction's first change) is committed too.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pgstash::invalidation {

inline constexpr std::string_view k_ddl_message_prefix = "pgstash.ddl";

struct committed_changes {
  // The end of the COMMIT record: a position safe to confirm. 0 for DDL
  // seen outside BEGIN/COMMIT (its transaction's end is not given).
  std::uint64_t end_lsn = 0;
  std::vector<std::string> relations;  // bare names, sorted, no duplicates
  bool ddl = false;                    // invalidates the whole database
};

class change_stream {
 public:
  enum class event : std::uint8_t {
    nothing,    // consumed; nothing to apply yet
    committed,  // last_commit() holds a transaction to apply
    keepalive,  // keepalive_end() and reply_requested() are set
    malformed,  // not what test_decoding sends: the stream must restart
  };
  event feed(std::string_view copy_data);

  const committed_changes& last_commit() const { return commit_; }
  // From the last keepalive: the server's WAL end, and whether it wants a
  // status update now.
  std::uint64_t keepalive_end() const { return keepalive_end_; }
  bool reply_requested() const { return reply_requested_; }
  // Between a BEGIN and its COMMIT (a position then is not safe to confirm).
  bool in_transaction() const { return in_transaction_; }

 private:
  event decode(std::uint64_t lsn, std::string_view line);

  std::vector<std::string> changed_;
  bool ddl_ = false;
  bool in_transaction_ = false;
  committed_changes commit_;
  std::uint64_t keepalive_end_ = 0;
  bool reply_requested_ = false;
};

// The bare relation names of a test_decoding change line's table list
// (`public.a, "My Schema"."T"` gives a and T), or nothing if it does not
// parse. Exposed for tests.
std::vector<std::string> relation_names(std::string_view tables, bool& ok);

// The standby status update ('r') confirming `lsn` as written, flushed and
// applied; `now_us`: microseconds since 2000-01-01, PostgreSQL's epoch.
std::string standby_status_update(std::uint64_t lsn, std::int64_t now_us, bool reply_requested);

}  // namespace pgstash::invalidation
