// What every client session on one executor shares: the configuration,
// the auth file, the server pool, TLS contexts, the cancel-key registry
// and the client count. Lives as long as the listener; sessions hold a
// reference.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>

#include "conf/config.hpp"
#include "conf/userlist.hpp"
#include "pool/asio.hpp"
#include "pool/server_pool.hpp"

namespace pgstash::proxy {

class client_session;

struct proxy_context {
  proxy_context(asio::any_io_executor ex, const conf::config& config, conf::userlist userlist,
                std::unique_ptr<asio::ssl::context> client_tls,
                std::unique_ptr<asio::ssl::context> server_tls)
      : cfg(config),
        users(std::move(userlist)),
        client_tls(std::move(client_tls)),
        server_tls(std::move(server_tls)),
        pool(std::move(ex), cfg, *this->server_tls) {}

  const conf::config& cfg;
  const conf::userlist users;
  // Null when listen.tls_cert_file is unset: SSLRequest is answered 'N'.
  std::unique_ptr<asio::ssl::context> client_tls;
  std::unique_ptr<asio::ssl::context> server_tls;
  pool::server_pool pool;
  // (process id, secret key) pgstash gave a client -> that client.
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::weak_ptr<client_session>> cancel_keys;
  std::uint32_t clients = 0;
  std::uint64_t next_client_id = 1;
};

// Builds the TLS contexts from config. Throws std::runtime_error naming
// the file that could not be loaded.
std::unique_ptr<asio::ssl::context> make_client_tls(const conf::listen_section& listen);
std::unique_ptr<asio::ssl::context> make_server_tls(const conf::server_section& server);

}  // namespace pgstash::proxy
