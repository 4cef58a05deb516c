// pgstash: a PostgreSQL wire-protocol proxy. See k_help for the options.
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "conf/config.hpp"
#include "conf/userlist.hpp"
#include "net/asio.hpp"
#include "proxy/admin_api.hpp"
#include "proxy/admin_server.hpp"
#include "proxy/config_reload.hpp"
#include "proxy/event_log.hpp"
#include "proxy/listener.hpp"
#include "proxy/proxy_context.hpp"

namespace {

constexpr const char* k_usage =
    "usage: pgstash --config FILE\n"
    "       pgstash --check-config FILE\n"
    "       pgstash --version | --help\n";

constexpr const char* k_help =
    "pgstash: a PostgreSQL connection pooler and result cache. Clients connect to it as to\n"
    "PostgreSQL; it pools their server connections and answers repeated reads from a cache\n"
    "that writes invalidate.\n"
    "\n"
    "  --config FILE        run with the TOML config FILE (the README lists every key)\n"
    "  --check-config FILE  check FILE and the auth file it names, print every problem\n"
    "                       with its line, and exit: 0 if valid, 1 if not\n"
    "  --version            print the version and exit\n"
    "  --help               print this and exit\n"
    "\n"
    "Environment: PGSTASH_ADMIN_TOKEN is the admin port's token when admin.token is empty.\n"
    "Signals: SIGHUP reloads FILE (and the auth file): the keys the README marks \"applied\"\n"
    "take effect without dropping a client, other changes are logged as needing a restart,\n"
    "and a file with problems changes nothing. SIGINT and SIGTERM stop at once (open\n"
    "transactions are rolled back by PostgreSQL).\n";

struct loaded {
  pgstash::conf::config cfg;
  pgstash::conf::userlist users;
};

// Loads the config and its auth file, printing every problem; nullopt if
// there were any.
std::optional<loaded> load(const std::string& path) {
  auto result = pgstash::conf::load_file(path);
  for (const auto& d : result.errors) std::cerr << pgstash::conf::format(d) << "\n";
  if (!result.cfg) return std::nullopt;
  loaded out{std::move(*result.cfg), {}};
  if (!out.cfg.auth.file.empty()) {
    auto users = pgstash::conf::load_userlist_file(out.cfg.auth.file);
    for (const auto& d : users.errors) std::cerr << pgstash::conf::format(d) << "\n";
    if (!users.errors.empty()) return std::nullopt;
    out.users = std::move(users.users);
  }
  return out;
}

// Each client and server connection is a file descriptor; the default soft
// limit (often 1024) would cap clients far below listen.max_client_conn.
void raise_open_file_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == lim.rlim_max) return;
  lim.rlim_cur = lim.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) spdlog::warn("could not raise the open file limit");
}

// Closes idle server connections past their time and keeps min_pool_size
// connections open, once a second.
pgstash::awaitable<void> maintain_pools(pgstash::pool::server_pool& pool) {
  auto ex = co_await pgstash::asio::this_coro::executor;
  pgstash::asio::steady_timer tick(ex);
  for (;;) {
    tick.expires_after(std::chrono::seconds(1));
    co_await tick.async_wait(pgstash::use_awaitable);
    pool.maintain(ex);
  }
}

// How the cache warmer reaches this pgstash: its listener, as
// cache.warm_user, with the auth file's password when it holds one in clear.
std::vector<std::pair<std::string, std::string>> warming_connection(
    const pgstash::conf::config& cfg, const pgstash::conf::userlist& users) {
  const std::string& host = cfg.listen.host;
  const bool any = host == "0.0.0.0" || host == "::" || host == "*";
  std::vector<std::pair<std::string, std::string>> out = {
      {"host", any ? "127.0.0.1" : host},
      {"port", std::to_string(cfg.listen.port)},
      {"dbname", cfg.cache.warm_database},
      {"user", cfg.cache.warm_user},
      {"connect_timeout", "10"},
      {"sslmode", "disable"}};
  if (auto it = users.find(cfg.cache.warm_user); it != users.end()) {
    if (pgstash::conf::kind_of_secret(it->second) == pgstash::conf::secret_kind::cleartext)
      out.emplace_back("password", it->second);
  }
  return out;
}

// Reloads the config on each SIGHUP.
pgstash::awaitable<void> reload_on_sighup(pgstash::asio::signal_set& hangup,
                                          pgstash::proxy::proxy_context& ctx) {
  for (;;) {
    co_await hangup.async_wait(pgstash::use_awaitable);
    spdlog::info("signal {}: reloading {}", SIGHUP, ctx.config_path);
    pgstash::proxy::reload_config(ctx);
  }
}

int run(loaded config, const std::string& config_path) {
  using namespace pgstash;
  // What takes effect only at start: a reload never changes these.
  const conf::config cfg = config.cfg;
  proxy::configure_logging(cfg.log);
  raise_open_file_limit();

  const unsigned workers =
      cfg.process.workers > 0 ? cfg.process.workers : std::max(1u, std::thread::hardware_concurrency());
  // One io_context per worker thread. The first also runs the listener,
  // signals and pool maintenance.
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<asio::io_context*> worker_contexts;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> keep_running;
  for (unsigned i = 0; i < workers; ++i) {
    contexts.push_back(std::make_unique<asio::io_context>(1));
    worker_contexts.push_back(contexts.back().get());
    keep_running.push_back(asio::make_work_guard(*contexts.back()));
  }
  asio::io_context& ioc = *contexts.front();
  proxy::proxy_context ctx(cfg, std::move(config.users), proxy::make_client_tls(cfg.listen),
                           proxy::make_server_tls(cfg.server));
  ctx.config_path = config_path;
  if (cfg.cache.enabled) {
    std::string error;
    ctx.cache = proxy::result_cache::open(cfg.cache, cfg.invalidation, error);
    // A cache that cannot open never fails a query: pgstash runs without it.
    if (!ctx.cache) spdlog::error("result cache off: {}", error);
    // For the test suite's stale-read checker, to show that it can fail.
    if (ctx.cache && std::getenv("PGSTASH_TEST_DISABLE_INVALIDATION")) {
      ctx.cache->generations().disable_bumps_for_testing();
      spdlog::warn("PGSTASH_TEST_DISABLE_INVALIDATION is set: writes do not invalidate the cache");
    }
  }
  tcp::acceptor acceptor =
      proxy::bind_listener(ioc, cfg.listen.host, cfg.listen.port, cfg.listen.reuse_port);
  if (ctx.cache && !cfg.cache.warm_statements.empty())
    ctx.warmer = std::make_unique<proxy::cache_warmer>(warming_connection(cfg, *ctx.users.get()),
                                                       cfg.cache.warm_statements, *ctx.cache);
  std::optional<tcp::acceptor> admin_acceptor;
  std::optional<proxy::admin_api> admin;
  if (cfg.admin.port != 0) {
    std::string token = cfg.admin.token;
    if (const char* from_env = std::getenv("PGSTASH_ADMIN_TOKEN"); token.empty() && from_env)
      token = from_env;
    if (token.empty())
      throw std::runtime_error(
          "admin.port is set but there is no admin token: set admin.token or PGSTASH_ADMIN_TOKEN");
    admin_acceptor.emplace(proxy::bind_listener(ioc, cfg.admin.host, cfg.admin.port));
    admin.emplace(ctx, std::move(token));
    spdlog::info("admin API on http://{}:{}/", cfg.admin.host, cfg.admin.port);
  }
  std::optional<proxy::unix_acceptor> unix_acceptor;
  std::string unix_path;
  if (!cfg.listen.unix_socket_dir.empty()) {
    unix_path = proxy::unix_socket_path(cfg.listen.unix_socket_dir, cfg.listen.port);
    unix_acceptor.emplace(proxy::bind_unix_listener(
        ioc, unix_path, *conf::parse_file_mode(cfg.listen.unix_socket_mode)));
  }
  spdlog::info("pgstash listening on {}:{}{}, server {}:{}, {} pooling, pool.size {}, {} workers, "
               "result cache {}",
               cfg.listen.host, cfg.listen.port, unix_path.empty() ? "" : " and " + unix_path,
               cfg.server.host, cfg.server.port,
               cfg.pool.mode == conf::pool_mode::transaction ? "transaction" : "session",
               cfg.pool.size, workers, ctx.cache ? "on at " + cfg.cache.path : std::string("off"));

  // Immediate shutdown, as PgBouncer's SIGTERM: every connection drops, and
  // PostgreSQL rolls back what its clients had open. Exiting at once avoids
  // tearing down sessions that are mid-flight one by one.
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  asio::signal_set hangup(ioc, SIGHUP);
  signals.async_wait([unix_path, &ctx](const error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("signal {}: shutting down", signo);
    // The cache's entries are kept for the next run only as far as a
    // checkpoint proves them.
    if (ctx.cache) ctx.cache->checkpoint();
    if (!unix_path.empty()) ::unlink(unix_path.c_str());
    spdlog::shutdown();
    std::_Exit(0);
  });
  asio::co_spawn(ioc, proxy::accept_clients(acceptor, ctx, worker_contexts), asio::detached);
  if (unix_acceptor)
    asio::co_spawn(ioc, proxy::accept_clients(*unix_acceptor, ctx, worker_contexts), asio::detached);
  asio::co_spawn(ioc, maintain_pools(ctx.pool), asio::detached);
  asio::co_spawn(ioc, reload_on_sighup(hangup, ctx), asio::detached);
  if (admin_acceptor)
    asio::co_spawn(ioc, proxy::serve_admin(*admin_acceptor, *admin, cfg.admin.max_connections),
                   asio::detached);

  std::vector<std::thread> threads;
  for (unsigned i = 1; i < workers; ++i) threads.emplace_back([&contexts, i] { contexts[i]->run(); });
  ioc.run();
  for (auto& t : threads) t.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::cout << "pgstash " << PGSTASH_VERSION << "\n";
    return 0;
  }
  if (argc == 2 && std::strcmp(argv[1], "--help") == 0) {
    std::cout << k_usage << "\n" << k_help;
    return 0;
  }
  if (argc != 3 || (std::strcmp(argv[1], "--config") != 0 && std::strcmp(argv[1], "--check-config") != 0)) {
    std::cerr << k_usage;
    return 2;
  }
  auto config = load(argv[2]);
  if (!config) return 1;
  if (std::strcmp(argv[1], "--check-config") == 0) {
    std::cout << argv[2] << ": OK\n";
    return 0;
  }
  try {
    return run(std::move(*config), argv[2]);
  } catch (const std::exception& e) {
    std::cerr << "pgstash: " << e.what() << "\n";
    return 1;
  }
}
