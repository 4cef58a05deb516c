// A memo of catalog answers in front of one worker thread that asks the
// server, so that a client session never waits on a catalog look-up.
//
// try_*() returns the memoized answer, or nullopt after queuing the look-up
// (once: a look-up already queued or running for the same question is not
// queued again); the caller treats nullopt as its conservative case (not
// cacheable, invalidate the database) and a later call has the answer. The
// worker keeps one `catalog` (one control connection) per database, made with
// the conninfo of the first call that needed it.
//
// Answers are keyed by (kind, database, search_path, user, schema, name);
// for a schema-qualified name search_path and user do not matter and are not
// part of the key. How long an answer is trusted:
// - Until forget(database), which the caller must call on any DDL it sees in
//   that database. A look-up under way when forget() is called is discarded
//   when it completes (a per-database epoch).
// - A conservative answer (unknown relation, unknown write, unknown function:
//   also what every question gets while the server is unreachable) is asked
//   again after 1 s; any other after 60 s, which bounds how long DDL that
//   bypasses pgstash goes unnoticed. Meanwhile the old answer is still
//   returned: a refresh replaces it, it never leaves a gap.
// - At most max_entries answers are kept (and at most that many look-ups
//   queued); the least recently used goes first.
//
// Thread-safe: try_*, forget and drain may be called from any thread. The
// lock is held only to read or update the memo and queue, never during I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "invalidation/catalog.hpp"
#include "invalidation/object_name.hpp"

namespace pgstash::invalidation {

class catalog_service {
 public:
  explicit catalog_service(std::size_t max_entries = 100000);
  // Joins the worker (after the look-up it is running, if any; queued ones
  // are dropped).
  ~catalog_service();
  catalog_service(const catalog_service&) = delete;
  catalog_service& operator=(const catalog_service&) = delete;

  std::optional<read_facts> try_read(const std::string& database, const std::string& conninfo,
                                     std::string_view search_path, std::string_view user,
                                     const object_name& relation);
  std::optional<write_facts> try_write(const std::string& database, const std::string& conninfo,
                                       std::string_view search_path, std::string_view user,
                                       const object_name& relation);
  std::optional<function_verdict> try_function(const std::string& database,
                                               const std::string& conninfo,
                                               std::string_view search_path,
                                               std::string_view user,
                                               const object_name& function);
  // The isolation level transactions of the login role `user` start at.
  std::optional<default_isolation> try_isolation(const std::string& database,
                                                 const std::string& conninfo,
                                                 std::string_view user);

  // DDL was seen in `database`: its memoized answers are dropped, and look-ups
  // under way for it are discarded when they complete.
  void forget(const std::string& database);

  // Changes whenever a memoized answer changes or is dropped (forget, a
  // refresh with a different answer, eviction): what a caller derived from
  // try_*() answers stays what they would give while this stays the same.
  // A caller that keeps such a derivation must still call try_*() again
  // now and then (within a second or so), since a call is what starts the
  // refresh of an old answer.
  std::uint64_t answers_version() const;

  // For tests: blocks until no look-up is queued or running.
  void drain();

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace pgstash::invalidation
