// Accepts client connections on listen.host:listen.port and on the unix
// socket in listen.unix_socket_dir, and starts a client_session for each.
#pragma once

#include <string>
#include <vector>

#include "net/asio.hpp"

namespace pgstash::proxy {

struct proxy_context;

using unix_acceptor = asio::local::stream_protocol::acceptor;

// Bind now; throw std::system_error if the address is taken.
tcp::acceptor bind_listener(asio::io_context& ioc, const std::string& host, std::uint16_t port,
                            bool reuse_port = false);
// The socket `dir`/.s.PGSQL.<port>, as PostgreSQL names it, with file mode
// `mode`. A socket file left by a process that is gone is replaced; one
// that still accepts connections is an error (std::runtime_error).
unix_acceptor bind_unix_listener(asio::io_context& ioc, const std::string& path, unsigned mode);
// The path of the unix socket for `port` in `dir`.
std::string unix_socket_path(const std::string& dir, std::uint16_t port);

// Accept until the acceptor is closed. Sessions go to the `workers` (one
// io_context per thread) in turn. REQUIRES: `ctx` and `acceptor` outlive
// the returned coroutine.
awaitable<void> accept_clients(tcp::acceptor& acceptor, proxy_context& ctx,
                               std::vector<asio::io_context*> workers);
awaitable<void> accept_clients(unix_acceptor& acceptor, proxy_context& ctx,
                               std::vector<asio::io_context*> workers);

}  // namespace pgstash::proxy
