// Accepts client connections on listen.host:listen.port and starts a
// client_session for each.
#pragma once

#include <vector>

#include "net/asio.hpp"

namespace pgstash::proxy {

struct proxy_context;

// Binds now (throws std::system_error if the address is taken), then
// accepts until the acceptor is closed. REQUIRES: `ctx` and `acceptor`
// outlive the returned coroutine.
tcp::acceptor bind_listener(asio::io_context& ioc, const std::string& host, std::uint16_t port);
// Sessions go to the `workers` (one io_context per thread) in turn.
awaitable<void> accept_clients(tcp::acceptor& acceptor, proxy_context& ctx,
                               std::vector<asio::io_context*> workers);

}  // namespace pgstash::proxy
