// The result cache's answers in the extended protocol, byte for byte as
// PostgreSQL gives them: each exchange runs straight against PostgreSQL and
// through pgstash (cache on, transaction pooling), where the reads are hits,
// and the two must answer alike.
#include <doctest/doctest.h>

#include "harness.hpp"

namespace pgstash::itest {
namespace {

// Every message up to and including the next ReadyForQuery, as "tag" or
// "E:sqlstate" for errors.
std::vector<std::string> answers(raw_conn& c) {
  std::vector<std::string> out;
  for (;;) {
    auto m = c.read_message(k_default_timeout);
    if (!m) throw std::runtime_error("no ReadyForQuery");
    if (m->tag == 'E') {
      out.push_back("E:" + parse_error_fields(m->body)['C']);
    } else if (m->tag == 'Z') {
      out.push_back(std::string("Z:") + m->body);
      return out;
    } else {
      out.push_back(std::string(1, m->tag));
    }
  }
}

std::vector<std::string> exchange(raw_conn& c, const std::string& bytes) {
  REQUIRE(c.send(bytes));
  return answers(c);
}

struct sides {
  explicit sides(int proxy_port)
      : direct(std::stoi(cluster_value("PGSTASH_PG_PORT"))), proxy(proxy_port) {
    direct.login("postgres", "pgstash_test");
    proxy.login("postgres", "pgstash_test");
  }
  // The same bytes to both; their answers must match.
  std::vector<std::string> both(const std::string& bytes) {
    const auto d = exchange(direct, bytes);
    const auto p = exchange(proxy, bytes);
    CHECK(p == d);
    return p;
  }
  raw_conn direct;
  raw_conn proxy;
};

std::string calls_of(pg_conn& direct, const std::string& fragment) {
  return direct.exec("select coalesce(sum(calls), 0) from pg_stat_statements where query like '%" +
                     fragment + "%' and query not like '%pg_stat_statements%'");
}

// A table of two rows, and a pgstash with the cache on (transaction
// pooling) in front of the test PostgreSQL; the table is dropped at the end.
struct cached_table {
  explicit cached_table(const std::string& prefix)
      : name(prefix + unique_suffix()),
        direct(direct_conninfo("dbname=pgstash_test")),
        px({"pool.mode = \"transaction\"", "pool.size = 2", "cache.enabled = true",
            "cache.path = " + toml_string(dir.path() + "/cache")}),
        s(create_then_port()) {}
  ~cached_table() {
    try {
      direct.exec("drop table " + name);
    } catch (const std::exception& e) {
      MESSAGE("cleanup: " << e.what());
    }
  }
  int create_then_port() {
    direct.exec("create table " + name + " (id int primary key, v text)");
    direct.exec("insert into " + name + " values (1, 'one'), (2, 'two')");
    return px.port();
  }

  const std::string name;
  pg_conn direct;
  temp_dir dir;
  pgstash_instance px;
  sides s;
};

TEST_CASE("cache protocol: portals pgstash bound from the cache behave as the server's") {
  cached_table t("itest_cache_portal_");
  const std::string& table = t.name;
  pg_conn& direct = t.direct;
  sides& s = t.s;
  const std::string read = "select v from " + table + " order by id";
  s.both(parse_msg("s", read) + sync_msg());
  const std::string bound = bind_msg("p", "s") + frame('D', "Pp" + std::string(1, '\0'));
  // Until the catalog has answered and the result is stored.
  for (int i = 0; i < 40; ++i) {
    s.both(bound + execute_msg("p") + sync_msg());
    sleep_for(milliseconds(25));
  }
  // The read is a hit now: only the direct side's run reaches the server.
  const std::string before = calls_of(direct, table + " order by id");
  s.both(bound + execute_msg("p") + sync_msg());
  CHECK(std::stoi(calls_of(direct, table + " order by id")) - std::stoi(before) == 1);

  // A second Bind of the named portal before the first is gone: 42P03.
  const auto twice =
      s.both(bound + execute_msg("p") + bind_msg("p", "s") + execute_msg("p") + sync_msg());
  CHECK(twice == std::vector<std::string>{"2", "T", "D", "D", "C", "E:42P03", "Z:I"});

  // In a transaction a portal outlives the Sync of its batch.
  s.both(query_frame("begin"));
  CHECK(s.both(bound + sync_msg()) == std::vector<std::string>{"2", "T", "Z:T"});
  CHECK(s.both(execute_msg("p") + sync_msg()) == std::vector<std::string>{"D", "D", "C", "Z:T"});
  CHECK(s.both(bind_msg("p", "s") + sync_msg()) == std::vector<std::string>{"E:42P03", "Z:E"});
  // In the failed transaction its rows are refused.
  CHECK(s.both(execute_msg("p") + sync_msg()) == std::vector<std::string>{"E:25P02", "Z:E"});
  CHECK(s.both(frame('D', "Pp" + std::string(1, '\0')) + sync_msg()) ==
        std::vector<std::string>{"E:25P02", "Z:E"});
  s.both(query_frame("rollback"));
  // ...and is gone with it.
  CHECK(s.both(execute_msg("p") + sync_msg()) == std::vector<std::string>{"E:34000", "Z:I"});
  // A Query drops the unnamed portal, one pgstash bound too.
  s.both(query_frame("begin"));
  CHECK(s.both(bind_msg("", "s") + sync_msg()) == std::vector<std::string>{"2", "Z:T"});
  s.both(query_frame("select 1"));
  CHECK(s.both(execute_msg("") + sync_msg()) == std::vector<std::string>{"E:34000", "Z:E"});
  s.both(query_frame("rollback"));
}

TEST_CASE("cache protocol: a partial fetch is never stored") {
  cached_table t("itest_cache_partial_");
  const std::string& table = t.name;
  pg_conn& direct = t.direct;
  sides& s = t.s;
  const std::string read = "select v from " + table + " order by id desc";
  s.both(parse_msg("s", read) + sync_msg());
  const std::string first_row = bind_msg("p", "s") + frame('D', "Pp" + std::string(1, '\0')) +
                                frame('E', cstr("p") + be32(1)) + sync_msg();
  for (int i = 0; i < 10; ++i) {
    CHECK(s.both(first_row) == std::vector<std::string>{"2", "T", "D", "s", "Z:I"});
    sleep_for(milliseconds(25));
  }
  // Both sides run every one: pgstash stored none of them.
  const std::string before = calls_of(direct, table + " order by id desc");
  for (int i = 0; i < 10; ++i) s.both(first_row);
  CHECK(std::stoi(calls_of(direct, table + " order by id desc")) - std::stoi(before) == 20);
}

}  // namespace
}  // namespace pgstash::itest
