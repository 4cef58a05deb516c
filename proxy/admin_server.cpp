#include "proxy/admin_server.hpp"

#include <spdlog/spdlog.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <memory>

#include "net/deadline.hpp"
#include "proxy/admin_api.hpp"

namespace pgstash::proxy {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;

constexpr std::uint32_t k_header_limit = 8 * 1024;
constexpr std::uint64_t k_body_limit = 64 * 1024;
constexpr std::chrono::milliseconds k_io_timeout{10000};

http::response<http::string_body> make_response(const admin_response& r, unsigned version,
                                                bool keep_alive) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "pgstash");
  res.set(http::field::content_type, r.content_type);
  res.set(http::field::cache_control, "no-store");
  if (r.status == 401) res.set(http::field::www_authenticate, "Bearer");
  res.keep_alive(keep_alive);
  res.body() = r.body;
  res.prepare_payload();
  return res;
}

awaitable<void> write_response(tcp::socket& socket, http::response<http::string_body>& res,
                               error_code& ec) {
  net::deadline give_up(socket.get_executor(), k_io_timeout, [&socket] {
    error_code ignored;
    socket.close(ignored);
  });
  co_await http::async_write(socket, res, on_error(ec));
}

// Holds one of the admin.max_connections slots until destroyed, however
// the connection ends.
class connection_slot {
 public:
  explicit connection_slot(std::shared_ptr<std::uint32_t> open) : open_(std::move(open)) { ++*open_; }
  ~connection_slot() { --*open_; }
  connection_slot(const connection_slot&) = delete;
  connection_slot& operator=(const connection_slot&) = delete;

 private:
  std::shared_ptr<std::uint32_t> open_;
};

// The API's answer; a 500 naming the failure if it threw, so that one bad
// request never takes the admin port down.
awaitable<admin_response> answer(admin_api& api, const admin_request& request) {
  std::string failure;
  try {
    co_return co_await api.handle(request);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  spdlog::error("admin {} {} failed: {}", request.method, request.target, failure);
  co_return admin_response{500, "text/plain", "internal error: " + failure + "\n"};
}

awaitable<void> serve_connection(tcp::socket socket, admin_api& api,
                                 std::shared_ptr<connection_slot> slot) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(k_header_limit);
    parser.body_limit(k_body_limit);
    error_code ec;
    {
      net::deadline give_up(socket.get_executor(), k_io_timeout, [&socket] {
        error_code ignored;
        socket.close(ignored);
      });
      co_await http::async_read(socket, buffer, parser, on_error(ec));
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof || !socket.is_open()) break;
    if (ec) {
      // Malformed or over a limit: say so, then close.
      const unsigned status =
          ec == http::error::body_limit || ec == http::error::header_limit ? 413 : 400;
      auto res = make_response({status, "text/plain", ec.message() + "\n"}, 11, false);
      co_await write_response(socket, res, ec);
      break;
    }
    const auto& req = parser.get();
    // Beast 1.74 speaks boost::string_view.
    auto view = [](beast::string_view v) { return std::string_view(v.data(), v.size()); };
    const admin_request request{view(req.method_string()), view(req.target()),
                                view(req[http::field::authorization]), req.body()};
    const admin_response response = co_await answer(api, request);
    auto res = make_response(response, req.version(), req.keep_alive());
    co_await write_response(socket, res, ec);
    if (ec || !res.keep_alive()) break;
  }
  error_code ignored;
  socket.shutdown(tcp::socket::shutdown_send, ignored);
  (void)slot;  // released as the coroutine ends, whichever way
}

}  // namespace

awaitable<void> serve_admin(tcp::acceptor& acceptor, admin_api& api, std::uint32_t max_connections) {
  // Only this coroutine's strand touches the count: connections run on
  // the acceptor's single-threaded io_context.
  auto open = std::make_shared<std::uint32_t>(0);
  for (;;) {
    error_code ec;
    tcp::socket socket = co_await acceptor.async_accept(on_error(ec));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Typically out of file descriptors: back off instead of spinning.
      spdlog::warn("admin accept failed: {}", ec.message());
      asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
      co_await pause.async_wait(on_error(ec));
      continue;
    }
    if (*open >= max_connections) {
      auto res = make_response({503, "text/plain", "too many admin connections\n"}, 11, false);
      asio::co_spawn(
          acceptor.get_executor(),
          [](tcp::socket s, http::response<http::string_body> r) -> awaitable<void> {
            error_code ignored;
            co_await write_response(s, r, ignored);
          }(std::move(socket), std::move(res)),
          asio::detached);
      continue;
    }
    asio::co_spawn(acceptor.get_executor(),
                   serve_connection(std::move(socket), api, std::make_shared<connection_slot>(open)),
                   [](std::exception_ptr e) {
                     if (!e) return;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       spdlog::error("admin connection failed: {}", ex.what());
                     }
                   });
  }
}

}  // namespace pgstash::proxy
