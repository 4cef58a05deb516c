// What the stream's and the slots' libpq code share: owning handles for a
// connection and a result, and the first line of a server message.
#pragma once

#include <memory>
#include <string>

#include <libpq-fe.h>

namespace pgstash::invalidation::pq {

struct result_deleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using result = std::unique_ptr<PGresult, result_deleter>;
struct conn_deleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using connection = std::unique_ptr<PGconn, conn_deleter>;

// Its first line: libpq's messages end in a newline, the server's may add
// DETAIL and HINT lines.
inline std::string first_line(const char* message) {
  std::string s = message ? message : "";
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

}  // namespace pgstash::invalidation::pq
