#include "proxy/listener.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>

#include "proxy/client_session.hpp"
#include "proxy/proxy_context.hpp"

namespace pgstash::proxy {

tcp::acceptor bind_listener(asio::io_context& ioc, const std::string& host, std::uint16_t port,
                            bool reuse_port) {
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive);
  tcp::endpoint ep = results.begin()->endpoint();
  tcp::acceptor acceptor(ioc);
  acceptor.open(ep.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  if (reuse_port)
    acceptor.set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true));
  acceptor.bind(ep);
  acceptor.listen(asio::socket_base::max_listen_connections);
  return acceptor;
}

std::string unix_socket_path(const std::string& dir, std::uint16_t port) {
  return dir + "/.s.PGSQL." + std::to_string(port);
}

unix_acceptor bind_unix_listener(asio::io_context& ioc, const std::string& path, unsigned mode) {
  const asio::local::stream_protocol::endpoint ep(path);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) throw std::runtime_error(path + " exists and is not a socket");
    asio::local::stream_protocol::socket probe(ioc);
    error_code ec;
    probe.connect(ep, ec);
    // Only a socket nobody listens on is left over; anything else (a live
    // server, one we may not reach) stays.
    if (ec != asio::error::connection_refused)
      throw std::runtime_error(path + " is in use" + (ec ? ": " + ec.message() : std::string()));
    ::unlink(path.c_str());
  }
  unix_acceptor acceptor(ioc, ep);
  if (::chmod(path.c_str(), mode) != 0)
    throw std::runtime_error("cannot set the mode of " + path + ": " + std::strerror(errno));
  return acceptor;
}

namespace {

std::string describe_peer(tcp::socket& socket) {
  error_code ec;
  auto ep = socket.remote_endpoint(ec);
  return ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
}

std::string describe_peer(asio::local::stream_protocol::socket&) { return "[local]"; }

template <typename Acceptor>
awaitable<void> accept_loop(Acceptor& acceptor, proxy_context& ctx,
                            std::vector<asio::io_context*> workers) {
  auto ex = co_await asio::this_coro::executor;
  std::size_t next = 0;
  while (acceptor.is_open()) {
    error_code ec;
    // A session lives on one worker's io_context, which one thread runs:
    // its two pumps never run at once, with no strand to pass through.
    typename Acceptor::protocol_type::socket socket(workers[next]->get_executor());
    next = (next + 1) % workers.size();
    co_await acceptor.async_accept(socket, on_error(ec));
    if (ec == asio::error::operation_aborted) break;
    if (ec) {
      // Typically out of file descriptors: back off instead of spinning.
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer pause(ex, std::chrono::milliseconds(100));
      co_await pause.async_wait(on_error(ec));
      continue;
    }
    if constexpr (std::is_same_v<Acceptor, tcp::acceptor>)
      socket.set_option(tcp::no_delay(true), ec);
    std::string peer = describe_peer(socket);
    std::make_shared<client_session>(ctx, stream_socket(std::move(socket)), std::move(peer))
        ->start();
  }
}

}  // namespace

awaitable<void> accept_clients(tcp::acceptor& acceptor, proxy_context& ctx,
                               std::vector<asio::io_context*> workers) {
  return accept_loop(acceptor, ctx, std::move(workers));
}

awaitable<void> accept_clients(unix_acceptor& acceptor, proxy_context& ctx,
                               std::vector<asio::io_context*> workers) {
  return accept_loop(acceptor, ctx, std::move(workers));
}

std::unique_ptr<asio::ssl::context> make_client_tls(const conf::listen_section& listen) {
  if (listen.tls_cert_file.empty()) return nullptr;
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  try {
    ctx->use_certificate_chain_file(listen.tls_cert_file);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot load listen.tls_cert_file " + listen.tls_cert_file + ": " + e.what());
  }
  try {
    ctx->use_private_key_file(listen.tls_key_file, asio::ssl::context::pem);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot load listen.tls_key_file " + listen.tls_key_file + ": " + e.what());
  }
  return ctx;
}

std::unique_ptr<asio::ssl::context> make_server_tls(const conf::server_section& server) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3);
  if (server.tls == conf::server_tls::verify_full) {
    try {
      if (server.tls_ca_file.empty()) {
        ctx->set_default_verify_paths();
      } else {
        ctx->load_verify_file(server.tls_ca_file);
      }
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot load server.tls_ca_file " + server.tls_ca_file + ": " + e.what());
    }
  }
  return ctx;
}

}  // namespace pgstash::proxy
