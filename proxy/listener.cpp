#include "proxy/listener.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>

#include "proxy/client_session.hpp"
#include "proxy/proxy_context.hpp"

namespace pgstash::proxy {

tcp::acceptor bind_listener(asio::io_context& ioc, const std::string& host, std::uint16_t port) {
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive);
  tcp::endpoint ep = results.begin()->endpoint();
  tcp::acceptor acceptor(ioc);
  acceptor.open(ep.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(ep);
  acceptor.listen(asio::socket_base::max_listen_connections);
  return acceptor;
}

awaitable<void> accept_clients(tcp::acceptor& acceptor, proxy_context& ctx,
                               std::vector<asio::io_context*> workers) {
  auto ex = co_await asio::this_coro::executor;
  std::size_t next = 0;
  while (acceptor.is_open()) {
    error_code ec;
    // A session lives on one worker's io_context, which one thread runs:
    // its two pumps never run at once, with no strand to pass through.
    tcp::socket socket(workers[next]->get_executor());
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
    std::make_shared<client_session>(ctx, std::move(socket))->start();
  }
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
