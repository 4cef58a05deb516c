#include "proxy/client_registry.hpp"

#include <utility>

namespace pgstash::proxy {

std::string_view to_string(client_state s) {
  static constexpr std::string_view k_names[] = {"login", "idle", "waiting", "active"};
  return k_names[static_cast<std::size_t>(s)];
}

std::string_view to_string(client_kind k) {
  static constexpr std::string_view k_names[] = {"session", "replication", "console"};
  return k_names[static_cast<std::size_t>(k)];
}

client_record::client_record(std::uint64_t id, std::string peer) : id_(id) {
  info_.id = id;
  info_.peer = std::move(peer);
  info_.connected = std::chrono::system_clock::now();
  info_.state_since = std::chrono::steady_clock::now();
}

void client_record::logged_in(std::string database, std::string user,
                              std::string application_name, bool tls, client_kind kind) {
  std::lock_guard lock(mu_);
  info_.database = std::move(database);
  info_.user = std::move(user);
  info_.application_name = std::move(application_name);
  info_.tls = tls;
  info_.kind = kind;
}

void client_record::set_state(client_state state, std::uint64_t server_id) {
  std::lock_guard lock(mu_);
  if (info_.state != state) info_.state_since = std::chrono::steady_clock::now();
  info_.state = state;
  info_.server_id = server_id;
}

client_info client_record::read() const {
  std::lock_guard lock(mu_);
  return info_;
}

void client_registry::add(const std::shared_ptr<client_record>& record) {
  std::lock_guard lock(mu_);
  records_[record->id()] = record;
}

void client_registry::remove(std::uint64_t id) {
  std::lock_guard lock(mu_);
  records_.erase(id);
}

std::vector<client_info> client_registry::list() const {
  std::vector<std::shared_ptr<client_record>> live;
  {
    std::lock_guard lock(mu_);
    live.reserve(records_.size());
    for (const auto& [id, weak] : records_)
      if (auto r = weak.lock()) live.push_back(std::move(r));
  }
  std::vector<client_info> out;
  out.reserve(live.size());
  for (const auto& r : live) out.push_back(r->read());
  return out;
}

}  // namespace pgstash::proxy
