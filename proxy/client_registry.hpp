// Every client connection pgstash holds, as the admin port lists them:
// who it is, where from, and what it is doing now. A session registers its
// record when it is accepted and removes it when it ends; between the two
// it updates its state as it goes.
//
// A client's state, as PgBouncer's SHOW CLIENTS tells it:
//   login    startup and authentication under way
//   idle     logged in, holding no server connection
//   waiting  waiting for the pool to give it a server connection
//   active   holding a server connection (in session mode, all along)
//
// Thread-safe: each session writes its own record from its thread; the
// admin port reads every record from another.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace pgstash::proxy {

enum class client_state : std::uint8_t { login, idle, waiting, active };
std::string_view to_string(client_state s);

// What a client came for: pooled sessions, a replication connection (its
// own server connection), or the admin console (none at all).
enum class client_kind : std::uint8_t { session, replication, console };
std::string_view to_string(client_kind k);

// One client as it was when read.
struct client_info {
  std::uint64_t id = 0;
  std::string peer;  // address:port, or "unix"
  std::string database, user, application_name;  // empty until logged in
  bool tls = false;
  client_kind kind = client_kind::session;
  client_state state = client_state::login;
  std::chrono::system_clock::time_point connected;
  std::chrono::steady_clock::time_point state_since;
  std::uint64_t server_id = 0;  // the server connection it holds; 0 when none
};

class client_record {
 public:
  client_record(std::uint64_t id, std::string peer);
  std::uint64_t id() const { return id_; }

  // Logged in as `user` on `database`.
  void logged_in(std::string database, std::string user, std::string application_name, bool tls,
                 client_kind kind);
  // Now in `state`; `server_id` is the connection it holds (0 when none).
  void set_state(client_state state, std::uint64_t server_id = 0);
  client_info read() const;

 private:
  const std::uint64_t id_;
  mutable std::mutex mu_;
  client_info info_;
};

class client_registry {
 public:
  void add(const std::shared_ptr<client_record>& record);
  void remove(std::uint64_t id);
  // Every client, by id (the order they connected in).
  std::vector<client_info> list() const;

 private:
  mutable std::mutex mu_;
  std::map<std::uint64_t, std::weak_ptr<client_record>> records_;
};

}  // namespace pgstash::proxy
