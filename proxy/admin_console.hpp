// The admin console's answers (proxy/console_command lists the commands):
// PgBouncer's SHOW tables, with its column names where the concept is the
// same, so that scripts and dashboards written for PgBouncer's console
// read pgstash's too.
//
// Differences a PgBouncer user would notice: SHOW STATS' averages are over
// the whole run, not the last stats period; columns of concepts pgstash has
// no counterpart for (cancel requests in flight, prepared statement counts)
// are left out; the cache's commands are pgstash's own.
#pragma once

#include <string>
#include <string_view>

#include "net/asio.hpp"

namespace pgstash::proxy {

struct proxy_context;

// The answer to one simple Query sent to the console: a result set (or
// for INVALIDATE a CommandComplete), or an ErrorResponse (severity ERROR,
// the session goes on); no ReadyForQuery. PAUSE completes once the
// database's server connections are closed (or after 60 s, with a notice).
awaitable<std::string> console_answer(proxy_context& ctx, std::string_view sql);

}  // namespace pgstash::proxy
