// A PostgreSQL connection's byte stream: a socket (TCP or unix) that may be upgraded
// to TLS in place after an SSLRequest, plus the read buffer that frames are
// decoded from. Used for both sides: client sessions and server
// connections.
//
// Belongs to one executor; not thread-safe. At most one read and one write
// may be outstanding at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/container/deque.hpp>

#include "net/asio.hpp"
#include "wire/framing.hpp"

namespace pgstash::net {

class pg_stream {
 public:
  // The read buffer starts at `initial_buffer` bytes and grows, doubling,
  // up to `max_buffer` as frames or bursts need; frames larger than
  // `max_buffer` are only ever streamed, never held. shrink() gives the
  // memory back while the stream is idle, so thousands of idle clients cost
  // little.
  pg_stream(stream_socket socket, std::size_t max_buffer, std::size_t initial_buffer);
  pg_stream(const pg_stream&) = delete;
  pg_stream& operator=(const pg_stream&) = delete;

  stream_socket& socket() { return socket_; }
  bool is_tls() const { return tls_ != nullptr; }
  bool is_unix_socket() const;

  // Upgrades to TLS as the server side (after answering 'S') or the client
  // side (after the server answered 'S'). Throws on handshake failure.
  // REQUIRES: nothing is buffered (a peer that sent more bytes after its
  // SSLRequest must be refused by the caller before this).
  awaitable<void> accept_tls(asio::ssl::context& ctx);
  awaitable<void> connect_tls(asio::ssl::context& ctx, const std::string& verify_host);

  // Reads more bytes into the buffer, making room first (compacting, then
  // growing). Returns 0 with `ec` set on eof or error, or with
  // message_too_large if the buffer is full at its maximum.
  awaitable<std::size_t> read_more(error_code& ec);
  // Writes all of `bytes`. Concurrent writers (the two relay directions
  // both answer a client, say) are queued first-come first-served, so
  // messages never interleave.
  awaitable<void> write(std::string_view bytes, error_code& ec);

  // Reads until one whole frame is buffered and returns it; the body view
  // stays valid until the next call that reads or consumes. A frame larger
  // than the buffer is reported as errc::message_too_large.
  awaitable<wire::decoded_frame> read_frame(wire::phase p, std::uint32_t max_message_size,
                                            error_code& ec);

  // The unconsumed buffered bytes.
  std::string_view buffered() const { return {buffer_.data() + begin_, end_ - begin_}; }
  void consume(std::size_t n) { begin_ += n; }
  // The largest frame that can be held whole.
  std::size_t capacity() const { return max_buffer_; }
  // Returns the buffer to its initial size if nothing is buffered.
  void shrink();
  // Moves unconsumed bytes to the front so reads have room.
  void compact();

  // True if bytes or EOF are waiting on an idle connection, which means it
  // was closed or sent something unasked (e.g. a FATAL on shutdown).
  bool has_unexpected_input();

  // Re-homes the socket on `ex`'s io_context (one per worker thread), so
  // that its I/O completes on the thread that now uses it. Two epoll_ctl
  // calls; nothing if it is there already. Throws if the socket cannot be
  // registered there. REQUIRES: no operation outstanding.
  void move_to(const asio::any_io_executor& ex);

  // Closes the socket at once; pending operations complete with errors.
  void close();

 private:
  stream_socket socket_;
  std::unique_ptr<asio::ssl::stream<stream_socket&>> tls_;
  std::size_t max_buffer_;
  std::size_t initial_buffer_;
  std::string buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  bool writing_ = false;
  boost::container::deque<asio::steady_timer*> write_waiters_;  // allocates only when used
};

}  // namespace pgstash::net
