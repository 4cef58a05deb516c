#include "proxy/pool_rows.hpp"

#include <doctest/doctest.h>

using namespace pgstash;
using namespace pgstash::proxy;

namespace {

client_info client(std::string database, std::string user, client_state state,
                   client_kind kind = client_kind::session) {
  client_info c;
  c.database = std::move(database);
  c.user = std::move(user);
  c.state = state;
  c.kind = kind;
  return c;
}

}  // namespace

TEST_CASE("pool rows put each pool's clients beside its server connections") {
  pool::pool_snapshot snapshot;
  pool::pool_view app;
  app.key = {"app", "web"};
  app.counts[static_cast<std::size_t>(pool::server_list::idle)] = 2;
  app.counts[static_cast<std::size_t>(pool::server_list::active)] = 1;
  app.waiting = 1;
  snapshot.pools.push_back(app);

  const std::vector<client_info> clients = {
      client("app", "web", client_state::active), client("app", "web", client_state::waiting),
      client("app", "web", client_state::idle),   client("app", "web", client_state::idle),
      client("", "", client_state::login),        client("reports", "bi", client_state::idle),
      client("app", "web", client_state::active, client_kind::replication),
      client("pgstash", "web", client_state::idle, client_kind::console)};

  const auto rows = pool_rows(snapshot, clients);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].key == pool::pool_key{"app", "web"});
  CHECK(rows[0].client_count(client_state::active) == 1);
  CHECK(rows[0].client_count(client_state::waiting) == 1);
  CHECK(rows[0].client_count(client_state::idle) == 2);
  CHECK(rows[0].client_count(client_state::login) == 0);
  CHECK(rows[0].servers.count(pool::server_list::idle) == 2);
  CHECK(rows[0].servers.waiting == 1);
  // A pool with clients but no connection yet.
  CHECK(rows[1].key == pool::pool_key{"reports", "bi"});
  CHECK(rows[1].servers.key == rows[1].key);
  CHECK(rows[1].client_count(client_state::idle) == 1);
  CHECK(rows[1].servers.count(pool::server_list::idle) == 0);
}
