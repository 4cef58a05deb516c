// The admin port's HTTP/1.1 transport (Boost.Beast): accepts connections
// on admin.host:admin.port and answers each request with admin_api.
// Requests are bounded (8 KiB of headers, 64 KiB of body, 10 s to arrive);
// connections beyond admin.max_connections get 503 and are closed; a
// request the API fails on gets 500.
#pragma once

#include <cstdint>

#include "net/asio.hpp"

namespace pgstash::proxy {

class admin_api;

// Accepts until the acceptor is closed. REQUIRES: `acceptor` and `api`
// outlive the returned coroutine.
awaitable<void> serve_admin(tcp::acceptor& acceptor, admin_api& api, std::uint32_t max_connections);

}  // namespace pgstash::proxy
