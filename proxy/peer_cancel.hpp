// Cancel keys among peer instances (process.peer_id, [peers]), as
// PgBouncer's peering does: several pgstash instances behind SO_REUSEPORT
// or a TCP balancer, where a client's CancelRequest arrives on a new
// connection that may reach another instance than the one running its
// query. Each instance puts its peer id in the top byte of every cancel
// key's secret it hands out; an instance that does not know a key forwards
// the request to the peer the key names. Pure.
#pragma once

#include <cstdint>

namespace pgstash::proxy {

// The secret of a cancel key handed out by peer `peer_id` (0: no peering,
// all 32 bits random).
constexpr std::uint32_t cancel_secret(std::uint32_t random, std::uint32_t peer_id) {
  return peer_id == 0 ? random : (peer_id << 24) | (random & 0x00ff'ffffu);
}

// The peer that handed out a key with this secret (meaningful only among
// peers).
constexpr std::uint32_t peer_of_cancel_secret(std::uint32_t secret) { return secret >> 24; }

}  // namespace pgstash::proxy
