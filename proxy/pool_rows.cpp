#include "proxy/pool_rows.hpp"

#include <map>

namespace pgstash::proxy {

std::vector<pool_row> pool_rows(const pool::pool_snapshot& snapshot,
                                const std::vector<client_info>& clients) {
  std::map<pool::pool_key, pool_row> rows;
  for (const auto& view : snapshot.pools) {
    pool_row& row = rows[view.key];
    row.key = view.key;
    row.servers = view;
  }
  for (const auto& c : clients) {
    if (c.state == client_state::login || c.kind != client_kind::session) continue;
    const pool::pool_key key{c.database, c.user};
    pool_row& row = rows[key];
    row.key = key;
    row.servers.key = key;
    ++row.clients[static_cast<std::size_t>(c.state)];
  }
  std::vector<pool_row> out;
  out.reserve(rows.size());
  for (auto& [key, row] : rows) out.push_back(std::move(row));
  return out;
}

}  // namespace pgstash::proxy
