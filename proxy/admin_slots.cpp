// The admin API's view of the server's replication slots (GET /api/slots,
// DELETE /api/slots/<name>): libpq calls, run off the admin's io thread.
#include "invalidation/replication_slots.hpp"
#include "proxy/admin_api.hpp"
#include "proxy/admin_json.hpp"
#include "proxy/proxy_context.hpp"
#include <nlohmann/json.hpp>

namespace pgstash::proxy {

using nlohmann::json;

namespace {

// Runs `work` on `pool` and comes back to the caller's executor; the
// server's one-line message if it threw.
// (A coroutine spawned there: awaiting a post() would resume on the
// caller's executor, not the pool.)
template <typename Work>
awaitable<std::string> off_thread(asio::thread_pool& pool, Work work) {
  co_return co_await asio::co_spawn(
      pool.get_executor(),
      [&work]() -> awaitable<std::string> {
        try {
          work();
        } catch (const std::exception& e) {
          co_return e.what();
        }
        co_return std::string();
      },
      use_awaitable);
}

constexpr std::string_view k_no_stream =
    "no replication stream has started yet (a database's starts with its first cached client)";

}  // namespace

awaitable<admin_response> admin_api::slots() {
  const auto conninfo = ctx_.cache ? ctx_.cache->stream_conninfo() : std::nullopt;
  if (!conninfo) co_return admin_error(503, k_no_stream);
  const std::string own = ctx_.cfg.get()->invalidation.slot;
  std::vector<invalidation::replication_slot> slots;
  const std::string error =
      co_await off_thread(blocking_, [&] { slots = invalidation::list_slots(*conninfo); });
  if (!error.empty()) co_return admin_error(502, "cannot list the server's slots: " + error);
  json rows = json::array();
  for (const auto& s : slots) {
    rows.push_back({{"name", s.name},
                    {"database", s.database},
                    {"active", s.active},
                    {"temporary", s.temporary},
                    {"confirmed_flush_lsn", s.confirmed_lsn},
                    {"retained_bytes", s.retained_bytes},
                    {"this_instance", invalidation::named_by(s.name, own)}});
  }
  co_return json_response({{"slots", rows}});
}

awaitable<admin_response> admin_api::drop_slot(std::string name) {
  const auto conninfo = ctx_.cache ? ctx_.cache->stream_conninfo() : std::nullopt;
  if (!conninfo) co_return admin_error(503, k_no_stream);
  invalidation::drop_outcome outcome{};
  const std::string error =
      co_await off_thread(blocking_, [&] { outcome = invalidation::drop_slot(*conninfo, name); });
  if (!error.empty()) co_return admin_error(502, "cannot drop slot " + name + ": " + error);
  switch (outcome) {
    case invalidation::drop_outcome::not_found:
      co_return admin_error(404, "no test_decoding replication slot is named " + name);
    case invalidation::drop_outcome::active:
      co_return admin_error(409, "slot " + name + " is in use: a consumer is connected to it");
    case invalidation::drop_outcome::dropped:
      break;
  }
  co_return json_response({{"dropped", name}});
}

}  // namespace pgstash::proxy
