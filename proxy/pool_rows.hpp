// One row per pool, as SHOW POOLS and the admin port report it: the
// pool's server connections by state (from the pool's snapshot) beside its
// clients by state (from the client registry). A pool appears when either
// side has something of it. Clients still logging in belong to no pool yet.
//
// Pure.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "pool/server_pool.hpp"
#include "proxy/client_registry.hpp"

namespace pgstash::proxy {

inline constexpr std::size_t k_client_states = 4;

struct pool_row {
  pool::pool_key key;
  std::array<std::uint32_t, k_client_states> clients{};  // by client_state
  pool::pool_view servers;  // empty lists when the pool has no connection yet
  std::uint32_t client_count(client_state s) const { return clients[static_cast<std::size_t>(s)]; }
};

// By key. Replication and console clients are left out: they hold no
// pooled connection.
std::vector<pool_row> pool_rows(const pool::pool_snapshot& snapshot,
                                const std::vector<client_info>& clients);

}  // namespace pgstash::proxy
