// What every client session shares: the configuration, the auth file, the
// server pool, TLS contexts, the cancel-key registry, the clients and
// their counters.
// Lives as long as the listener; sessions hold a reference. Sessions run on
// several threads: the mutable parts here are guarded or atomic.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "conf/config.hpp"
#include "conf/live.hpp"
#include "conf/userlist.hpp"
#include "net/asio.hpp"
#include "pool/server_pool.hpp"
#include "proxy/auth_query.hpp"
#include "proxy/cache_warmer.hpp"
#include "proxy/client_registry.hpp"
#include "proxy/result_cache.hpp"
#include "proxy/slow_requests.hpp"
#include "proxy/traffic_stats.hpp"

namespace pgstash::proxy {

class client_session;

struct proxy_context {
  proxy_context(conf::config config, conf::userlist userlist,
                std::unique_ptr<asio::ssl::context> client_tls,
                std::unique_ptr<asio::ssl::context> server_tls)
      : cfg(std::move(config)),
        users(std::move(userlist)),
        client_tls(std::move(client_tls)),
        server_tls(std::move(server_tls)),
        pool(cfg, *this->server_tls) {}

  // Both replaced by a reload (proxy/config_reload) of config_path.
  conf::live<conf::config> cfg;
  conf::live<conf::userlist> users;
  std::string config_path;  // set before the first client
  // Secrets of clients missing from `users`, when auth.user is set.
  proxy::auth_query auth_query;
  // Null when listen.tls_cert_file is unset: SSLRequest is answered 'N'.
  std::unique_ptr<asio::ssl::context> client_tls;
  std::unique_ptr<asio::ssl::context> server_tls;
  pool::server_pool pool;
  // Null when cache.enabled is off, or its store could not be opened.
  std::unique_ptr<result_cache> cache;
  // Null without cache.warm_statements. After `cache`: stops before it.
  std::unique_ptr<cache_warmer> warmer;

  // (process id, secret key) pgstash gave a client -> that client.
  using cancel_key = std::pair<std::uint32_t, std::uint32_t>;
  void register_cancel_key(cancel_key key, const std::shared_ptr<client_session>& session) {
    std::lock_guard lock(cancel_mu_);
    cancel_keys_[key] = session;
  }
  void unregister_cancel_key(cancel_key key) {
    std::lock_guard lock(cancel_mu_);
    cancel_keys_.erase(key);
  }
  std::shared_ptr<client_session> find_cancel_key(cancel_key key) {
    std::lock_guard lock(cancel_mu_);
    auto it = cancel_keys_.find(key);
    return it == cancel_keys_.end() ? nullptr : it->second.lock();
  }

  // Every client, and every pool's traffic, for the admin port.
  client_registry registry;
  traffic_stats traffic;
  slow_requests slow{100};

  std::atomic<std::uint32_t> clients = 0;  // replication clients included
  std::atomic<std::uint32_t> replication_clients = 0;
  std::atomic<std::uint64_t> next_client_id = 1;

 private:
  std::mutex cancel_mu_;
  std::map<cancel_key, std::weak_ptr<client_session>> cancel_keys_;
};

// Builds the TLS contexts from config. Throws std::runtime_error naming
// the file that could not be loaded.
std::unique_ptr<asio::ssl::context> make_client_tls(const conf::listen_section& listen);
std::unique_ptr<asio::ssl::context> make_server_tls(const conf::server_section& server);

}  // namespace pgstash::proxy
