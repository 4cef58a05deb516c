// PgBouncer's PAUSE, for the admin API and the console: the pool stops
// handing out server connections for a database (or all) and closes them
// as their clients give them back; the pause is complete once none is
// open. RESUME is server_pool::resume().
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "net/asio.hpp"

namespace pgstash::proxy {

struct proxy_context;

struct pause_outcome {
  bool drained = false;  // no server connection left
  std::size_t open = 0;  // server connections still open when it returned
};

// Pauses `database` (nullopt: all) and waits until its server connections
// are closed, or `limit` passes (it stays paused), or a RESUME comes.
awaitable<pause_outcome> pause_and_drain(proxy_context& ctx, std::optional<std::string> database,
                                         std::chrono::milliseconds limit);

}  // namespace pgstash::proxy
