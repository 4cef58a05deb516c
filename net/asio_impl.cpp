// Compiles Boost.Asio and its SSL support once for the whole program.
#include <utility>

#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
