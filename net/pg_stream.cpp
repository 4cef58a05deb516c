#include "net/pg_stream.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "wire/errc.hpp"

namespace pgstash::net {

pg_stream::pg_stream(stream_socket socket, std::size_t max_buffer, std::size_t initial_buffer)
    : socket_(std::move(socket)),
      max_buffer_(max_buffer),
      initial_buffer_(std::min(initial_buffer, max_buffer)),
      buffer_(initial_buffer_, '\0') {
  // Set once here (write() needs it) so that Asio does not set it again.
  if (socket_.is_open()) socket_.non_blocking(true);
}

bool pg_stream::is_unix_socket() const {
  error_code ec;
  const auto local = socket_.local_endpoint(ec);
  return !ec && local.protocol().family() == AF_UNIX;
}

void pg_stream::shrink() {
  if (begin_ != end_ || buffer_.size() <= initial_buffer_) return;
  std::string(initial_buffer_, '\0').swap(buffer_);
  begin_ = end_ = 0;
}

awaitable<void> pg_stream::accept_tls(asio::ssl::context& ctx) {
  tls_ = std::make_unique<asio::ssl::stream<stream_socket&>>(socket_, ctx);
  co_await tls_->async_handshake(asio::ssl::stream_base::server, use_awaitable);
}

awaitable<void> pg_stream::connect_tls(asio::ssl::context& ctx, const std::string& verify_host) {
  tls_ = std::make_unique<asio::ssl::stream<stream_socket&>>(socket_, ctx);
  if (!verify_host.empty()) {
    tls_->set_verify_mode(asio::ssl::verify_peer);
    tls_->set_verify_callback(asio::ssl::host_name_verification(verify_host));
    // SNI only for names, as libpq does: an IP address is not a host name.
    error_code ec;
    asio::ip::make_address(verify_host, ec);
    if (ec) SSL_set_tlsext_host_name(tls_->native_handle(), verify_host.c_str());
  }
  co_await tls_->async_handshake(asio::ssl::stream_base::client, use_awaitable);
}

awaitable<std::size_t> pg_stream::read_more(error_code& ec) {
  if (end_ == buffer_.size()) {
    compact();
    if (end_ == buffer_.size()) {
      if (buffer_.size() >= max_buffer_) {
        ec = make_error_code(boost::system::errc::message_size);
        co_return 0;
      }
      buffer_.resize(std::min(buffer_.size() * 2, max_buffer_));
    }
  }
  auto space = asio::buffer(buffer_.data() + end_, buffer_.size() - end_);
  std::size_t n = tls_ ? co_await tls_->async_read_some(space, on_error(ec))
                       : co_await socket_.async_read_some(space, on_error(ec));
  end_ += n;
  co_return n;
}

awaitable<void> pg_stream::write(std::string_view bytes, error_code& ec) {
  if (writing_) {
    // Wait for our turn; the writer before us hands the stream over
    // directly (writing_ stays true), so turns are strictly first-come.
    asio::steady_timer turn(co_await asio::this_coro::executor,
                            asio::steady_timer::time_point::max());
    write_waiters_.push_back(&turn);
    error_code woken;
    co_await turn.async_wait(on_error(woken));
  }
  if (!writing_ && !tls_) {
    // Most writes fit the socket buffer: one send, without the cost of an
    // asynchronous operation and its completion hand-off. Non-blocking, so
    // a full buffer gives would_block instead of stalling the thread.
    if (!socket_.non_blocking()) socket_.non_blocking(true, ec);
    const std::size_t sent = socket_.write_some(asio::buffer(bytes.data(), bytes.size()), ec);
    if (ec == asio::error::would_block) ec.clear();
    if (ec || sent == bytes.size()) co_return;
    bytes.remove_prefix(sent);
  }
  writing_ = true;
  auto data = asio::buffer(bytes.data(), bytes.size());
  if (tls_) {
    co_await asio::async_write(*tls_, data, on_error(ec));
  } else {
    co_await asio::async_write(socket_, data, on_error(ec));
  }
  if (write_waiters_.empty()) {
    writing_ = false;
  } else {
    write_waiters_.front()->cancel();
    write_waiters_.pop_front();
  }
}

awaitable<wire::decoded_frame> pg_stream::read_frame(wire::phase p,
                                                     std::uint32_t max_message_size,
                                                     error_code& ec) {
  for (;;) {
    wire::decoded_frame f = wire::decode_frame(buffered(), p, max_message_size);
    if (f.status == wire::decode_status::message) {
      consume(f.consumed);
      co_return f;
    }
    if (f.status == wire::decode_status::error) co_return f;
    wire::decoded_frame h = wire::decode_header(buffered(), p, max_message_size);
    if (h.status == wire::decode_status::message && h.header.frame_size() > capacity()) {
      h.status = wire::decode_status::error;
      h.error = wire::errc::message_too_large;
      co_return h;
    }
    co_await read_more(ec);
    if (ec) co_return wire::decoded_frame{};
  }
}

void pg_stream::compact() {
  if (begin_ == 0) return;
  std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
  end_ -= begin_;
  begin_ = 0;
}

bool pg_stream::has_unexpected_input() {
  if (begin_ != end_) return true;
  char probe;
  ssize_t n = ::recv(socket_.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0 || n == 0) return true;
  return errno != EAGAIN && errno != EWOULDBLOCK;
}

void pg_stream::move_to(const asio::any_io_executor& ex) {
  auto& here = asio::query(socket_.get_executor(), asio::execution::context);
  if (&here == &asio::query(ex, asio::execution::context)) return;
  const auto protocol = socket_.local_endpoint().protocol();
  const stream_socket::native_handle_type fd = socket_.release();
  try {
    socket_ = stream_socket(ex, protocol, fd);
  } catch (...) {
    ::close(fd);
    throw;
  }
}

void pg_stream::close() {
  error_code ignored;
  socket_.shutdown(stream_socket::shutdown_both, ignored);
  socket_.close(ignored);
}

}  // namespace pgstash::net
