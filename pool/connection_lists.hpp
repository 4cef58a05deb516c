// The lists one pool keeps its server connections on, PgBouncer's way: a
// connection's state is the list it is on. Every connection the pool opened
// is on exactly one list from the moment it starts connecting until its
// socket is closed, and moving between lists is the only way to change
// state, so counts are list sizes and cannot drift from the records.
//
//   connecting -> active    opened for a client that asked
//   connecting -> idle      opened as a spare (pool.min_pool_size)
//   idle       -> testing   taken for a client: peeked, maybe checked
//   testing    -> active    fit: handed to the client
//   active     -> idle      released clean
//   idle, testing, active -> closing   socket being closed
//   connecting, closing   -> gone      connect failed / socket closed
//
// Records only: the connections themselves are owned elsewhere (the pool's
// idle list, or the session that leased one).
//
// Pure: no I/O, no clock of its own, no locking; the pool guards it with
// its mutex.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pgstash::pool {

enum class server_list : std::uint8_t { connecting, idle, active, testing, closing };
inline constexpr std::size_t k_server_lists = 5;

// The list's name, as the admin port shows it.
constexpr std::string_view to_string(server_list l) {
  constexpr std::string_view names[k_server_lists] = {"connecting", "idle", "active", "testing",
                                                      "closing"};
  return names[static_cast<std::size_t>(l)];
}

// What the pool learns about a connection along the way; the owner of the
// lists may change these freely.
struct server_details {
  std::uint32_t process_id = 0;  // the backend's pid (pg_stat_activity.pid), once logged in
  std::uint64_t client_id = 0;   // the client it is leased to or tested for; 0 when idle
  bool tls = false;
};

struct server_record {
  using time_point = std::chrono::steady_clock::time_point;
  std::uint64_t id = 0;
  server_list list = server_list::connecting;
  time_point since{};   // when it joined `list`
  time_point opened{};  // when it started connecting
  server_details details;
};

class connection_lists {
 public:
  using time_point = server_record::time_point;

  connection_lists() = default;
  // Copying would copy the index's iterators into the source's lists.
  connection_lists(const connection_lists&) = delete;
  connection_lists& operator=(const connection_lists&) = delete;
  connection_lists(connection_lists&&) = default;
  connection_lists& operator=(connection_lists&&) = default;

  // True for the transitions drawn at the top of this file.
  static constexpr bool allowed(server_list from, server_list to);

  // Puts a new connection on connecting. Returns its details, or nullptr
  // (and changes nothing) if `id` is already on a list.
  server_details* add(std::uint64_t id, time_point now);
  // Moves `id` from `from` to `to`. Returns its details, or nullptr (and
  // changes nothing) unless `id` is on `from` and the move is allowed().
  // Going idle clears details.client_id.
  server_details* move(std::uint64_t id, server_list from, server_list to, time_point now);
  // Forgets `id`. Returns false (and changes nothing) unless it is on
  // `from` and `from` is connecting or closing.
  bool erase(std::uint64_t id, server_list from);

  // `id`'s record, or nullptr. Valid until `id` is erased.
  const server_record* find(std::uint64_t id) const;
  std::size_t size(server_list l) const { return lists_[static_cast<std::size_t>(l)].size(); }
  // Connections on any list: the slots this pool holds.
  std::size_t size() const { return index_.size(); }
  // Appends every record to `out`, list by list in the order of
  // server_list, each in the order its connections joined it.
  void copy_to(std::vector<server_record>& out) const;

 private:
  using list_type = std::list<server_record>;
  list_type& at(server_list l) { return lists_[static_cast<std::size_t>(l)]; }

  std::array<list_type, k_server_lists> lists_;
  // Moving between lists splices, so these iterators stay valid.
  std::unordered_map<std::uint64_t, list_type::iterator> index_;
};

// Implementation.

constexpr bool connection_lists::allowed(server_list from, server_list to) {
  using enum server_list;
  switch (from) {
    case connecting: return to == active || to == idle;
    case idle: return to == testing || to == closing;
    case testing: return to == active || to == closing;
    case active: return to == idle || to == closing;
    case closing: return false;
  }
  return false;
}

inline server_details* connection_lists::add(std::uint64_t id, time_point now) {
  if (index_.count(id) != 0) return nullptr;
  list_type& to = at(server_list::connecting);
  auto it = to.insert(to.end(), server_record{id, server_list::connecting, now, now, {}});
  index_.emplace(id, it);
  return &it->details;
}

inline server_details* connection_lists::move(std::uint64_t id, server_list from, server_list to,
                                              time_point now) {
  auto found = index_.find(id);
  if (found == index_.end() || found->second->list != from || !allowed(from, to)) return nullptr;
  auto it = found->second;
  at(to).splice(at(to).end(), at(from), it);
  it->list = to;
  it->since = now;
  if (to == server_list::idle) it->details.client_id = 0;
  return &it->details;
}

inline bool connection_lists::erase(std::uint64_t id, server_list from) {
  if (from != server_list::connecting && from != server_list::closing) return false;
  auto found = index_.find(id);
  if (found == index_.end() || found->second->list != from) return false;
  at(from).erase(found->second);
  index_.erase(found);
  return true;
}

inline const server_record* connection_lists::find(std::uint64_t id) const {
  auto found = index_.find(id);
  return found == index_.end() ? nullptr : &*found->second;
}

inline void connection_lists::copy_to(std::vector<server_record>& out) const {
  for (const list_type& l : lists_) out.insert(out.end(), l.begin(), l.end());
}

}  // namespace pgstash::pool
