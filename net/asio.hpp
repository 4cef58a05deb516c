// The one way pgstash includes Boost.Asio. Used as the precompiled header
// of every Asio target; Asio itself is compiled once, in asio_impl.cpp
// (BOOST_ASIO_SEPARATE_COMPILATION), to keep the per-file cost down.
//
// Boost 1.74's awaitable.hpp uses std::exchange without including
// <utility> (fixed upstream in Boost 1.80), so <utility> must come first.
#pragma once

#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace pgstash {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
// A connection over TCP or a unix socket: clients may come by either.
using stream_socket = asio::generic::stream_protocol::socket;
using error_code = boost::system::error_code;
template <typename T = void>
using awaitable = asio::awaitable<T>;
using asio::use_awaitable;

// Completion token that reports expected failures (eof, timeouts,
// cancellation) through `ec` instead of throwing.
inline auto on_error(error_code& ec) { return asio::redirect_error(use_awaitable, ec); }

}  // namespace pgstash
