// The decoding of test_decoding's lines, as PostgreSQL 15 sends them with
// include-xids 0 and skip-empty-xacts 1 (lines copied from a real stream),
// wrapped in XLogData.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "invalidation/change_stream.hpp"

using namespace pgstash::invalidation;

namespace {

void put(std::string& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
}

std::string xlog(std::string_view line, std::uint64_t lsn = 0x100) {
  std::string w = "w";
  put(w, lsn);
  put(w, 0x9999);
  put(w, 0);
  return w + std::string(line);
}

using names = std::vector<std::string>;

}  // namespace

TEST_CASE("a transaction's changes count at its COMMIT, by bare relation name") {
  change_stream s;
  CHECK(s.feed(xlog("BEGIN")) == change_stream::event::nothing);
  CHECK(s.in_transaction());
  CHECK(s.feed(xlog("table public.orders: INSERT: id[integer]:1 note[text]:'a: UPDATE: b'")) ==
        change_stream::event::nothing);
  CHECK(s.feed(xlog("table public.accounts: UPDATE: id[integer]:2")) == change_stream::event::nothing);
  CHECK(s.feed(xlog("table audit.accounts: DELETE: (no-tuple-data)")) == change_stream::event::nothing);
  CHECK(s.feed(xlog("COMMIT", 0x1E1B398)) == change_stream::event::committed);
  CHECK_FALSE(s.in_transaction());
  const committed_changes& c = s.last_commit();
  CHECK(c.end_lsn == 0x1E1B398);
  CHECK(c.relations == names{"accounts", "orders"});
  CHECK_FALSE(c.ddl);

  // The next transaction starts clean.
  s.feed(xlog("BEGIN"));
  s.feed(xlog("table public.t: INSERT: a[integer]:1"));
  REQUIRE(s.feed(xlog("COMMIT", 0x2000)) == change_stream::event::committed);
  CHECK(s.last_commit().relations == names{"t"});
}

TEST_CASE("table names as quote_identifier prints them, TRUNCATE's list included") {
  bool ok = false;
  CHECK(relation_names("public.nopk, public.\"My.Ta:ble\": TRUNCATE: (no-flags)", ok) ==
        names{"nopk", "My.Ta:ble"});
  CHECK(ok);
  CHECK(relation_names("\"Sch\"\"ema\".\"a \"\"b\"\"\": INSERT: x", ok) == names{"a \"b\""});
  CHECK(ok);
  CHECK(relation_names("s.t: UPDATE: x", ok) == names{"t"});
  CHECK(ok);
  for (std::string_view bad : {"", "t: INSERT:", "s.t", "s.t: MERGE:", "s.\"t: INSERT:", ".t: INSERT:",
                               "s.t, : DELETE:"}) {
    INFO(std::string(bad));
    relation_names(bad, ok);
    CHECK_FALSE(ok);
  }
}

TEST_CASE("the DDL message makes its transaction invalidate the database") {
  change_stream s;
  s.feed(xlog("BEGIN"));
  s.feed(xlog("table public.nopk: INSERT: a[integer]:5"));
  CHECK(s.feed(xlog("message: transactional: 1 prefix: pgstash.ddl, sz: 11 content:ALTER TABLE")) ==
        change_stream::event::nothing);
  REQUIRE(s.feed(xlog("COMMIT", 0x30)) == change_stream::event::committed);
  CHECK(s.last_commit().ddl);
  CHECK(s.last_commit().relations == names{"nopk"});

  // Before a transaction's first change, test_decoding prints the message
  // outside BEGIN/COMMIT: it is decoded after its commit, so it applies now.
  REQUIRE(s.feed(xlog("message: transactional: 1 prefix: pgstash.ddl, sz: 4 content:DROP",
                      0x40)) == change_stream::event::committed);
  CHECK(s.last_commit().ddl);
  CHECK(s.last_commit().end_lsn == 0);
  CHECK(s.last_commit().relations.empty());

  // Somebody else's messages, and a prefix that only starts like ours.
  s.feed(xlog("BEGIN"));
  CHECK(s.feed(xlog("message: transactional: 1 prefix: app, sz: 0 content:")) ==
        change_stream::event::nothing);
  CHECK(s.feed(xlog("message: transactional: 1 prefix: pgstash.ddlx, sz: 0 content:")) ==
        change_stream::event::nothing);
  REQUIRE(s.feed(xlog("COMMIT")) == change_stream::event::committed);
  CHECK_FALSE(s.last_commit().ddl);
  CHECK(s.feed(xlog("message: transactional: 0 prefix: app, sz: 1 content:x")) ==
        change_stream::event::nothing);
}

TEST_CASE("keepalives give the server's WAL end and whether a reply is due") {
  change_stream s;
  std::string k = "k";
  put(k, 0xABCDEF);
  put(k, 0);
  k += '\1';
  REQUIRE(s.feed(k) == change_stream::event::keepalive);
  CHECK(s.keepalive_end() == 0xABCDEF);
  CHECK(s.reply_requested());
  CHECK(s.feed(k.substr(0, 10)) == change_stream::event::malformed);
}

TEST_CASE("what test_decoding never sends is malformed, never a silent skip") {
  change_stream s;
  CHECK(s.feed("") == change_stream::event::malformed);
  CHECK(s.feed("w") == change_stream::event::malformed);
  CHECK(s.feed(xlog("BEGIN 731")) == change_stream::event::malformed);  // include-xids left on
  CHECK(s.feed(xlog("something else")) == change_stream::event::malformed);
  CHECK(s.feed(xlog("message: transactional: 1")) == change_stream::event::malformed);
  // A change or a COMMIT outside a transaction; a BEGIN inside one.
  CHECK(s.feed(xlog("table public.t: INSERT: a[integer]:1")) == change_stream::event::malformed);
  CHECK(s.feed(xlog("COMMIT")) == change_stream::event::malformed);
  s.feed(xlog("BEGIN"));
  CHECK(s.feed(xlog("BEGIN")) == change_stream::event::malformed);
  CHECK(s.feed(xlog("table t: INSERT: a[integer]:1")) == change_stream::event::malformed);
}

TEST_CASE("a standby status update confirms one position as written, flushed and applied") {
  const std::string r = standby_status_update(0x0000001600000010ull, 5, true);
  REQUIRE(r.size() == 34);
  CHECK(r[0] == 'r');
  CHECK(r.substr(1, 8) == std::string("\0\0\0\x16\0\0\0\x10", 8));
  CHECK(r.substr(9, 8) == r.substr(1, 8));
  CHECK(r.substr(17, 8) == r.substr(1, 8));
  CHECK(r[33] == 1);
}
