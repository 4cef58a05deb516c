#include "proxy/config_reload.hpp"

#include <mutex>

#include <spdlog/spdlog.h>

#include "conf/userlist.hpp"
#include "proxy/proxy_context.hpp"

namespace pgstash::proxy {

namespace {

std::string listed(const std::vector<conf::setting_change>& changes) {
  std::string out;
  for (const auto& c : changes)
    out += (out.empty() ? "" : ", ") + c.key + " " + c.from + " -> " + c.to;
  return out;
}

void log_outcome(const std::string& path, const reload_outcome& r) {
  if (!r.ok()) {
    for (const auto& d : r.errors)
      spdlog::error("reload refused, the running config is kept: {}", conf::format(d));
    return;
  }
  if (r.applied.empty() && r.need_restart.empty()) {
    spdlog::info("config reloaded from {}: no setting changed", path);
    return;
  }
  if (!r.applied.empty())
    spdlog::info("config reloaded from {}: applied {}", path, listed(r.applied));
  if (!r.need_restart.empty())
    spdlog::warn("config reloaded from {}: changed, but in force only after a restart: {}", path,
                 listed(r.need_restart));
}

}  // namespace

reload_outcome reload_config(proxy_context& ctx) {
  static std::mutex one_at_a_time;
  std::lock_guard lock(one_at_a_time);
  reload_outcome out;
  conf::load_result loaded = conf::load_file(ctx.config_path);
  if (!loaded.cfg) {
    out.errors = std::move(loaded.errors);
    log_outcome(ctx.config_path, out);
    return out;
  }
  const auto running = ctx.cfg.get();
  // auth.file itself needs a restart; the file it names is read again.
  conf::userlist users;
  if (!running->auth.file.empty()) {
    conf::userlist_result read = conf::load_userlist_file(running->auth.file);
    if (!read.errors.empty()) {
      out.errors = std::move(read.errors);
      log_outcome(ctx.config_path, out);
      return out;
    }
    users = std::move(read.users);
  }
  conf::reload_plan plan = conf::plan_reload(*running, *loaded.cfg);
  const std::string level = plan.next.log.level;
  ctx.cfg.replace(std::move(plan.next));
  ctx.users.replace(std::move(users));
  // auth.query, auth.user or the roles behind them may have changed.
  ctx.auth_query.clear();
  spdlog::set_level(spdlog::level::from_str(level));
  ctx.pool.reconfigured();
  out.applied = std::move(plan.applied);
  out.need_restart = std::move(plan.need_restart);
  log_outcome(ctx.config_path, out);
  return out;
}

}  // namespace pgstash::proxy
