// Test harness for the integration tier: a real pgstash in front of the real
// PostgreSQL of the `postgres` ctest fixture, driven by libpq and by raw
// sockets. Everything here waits with a deadline (poll(), never a blocking
// read), so a misbehaving pgstash fails a test instead of hanging it.
//
// Environment (set by ctest, see tests/CMakeLists.txt): PGSTASH_TEST_CLUSTER_DIR,
// PGSTASH_BIN, PGSTASH_SOURCE_DIR, PGSTASH_BUILD_DIR.
//
// Not thread-safe; one test case uses it from one thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <libpq-fe.h>

#include <sys/types.h>

namespace pgstash::itest {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Default bound on any single wait (connect, query, read) in the harness.
inline constexpr milliseconds k_default_timeout{15000};

// ---------------------------------------------------------------- environment

// $NAME, or throws naming the variable (the test is not running under ctest).
std::string require_env(const char* name);

// KEY=value lines of $PGSTASH_TEST_CLUSTER_DIR/env, read once.
const std::map<std::string, std::string>& cluster_env();
// One key of cluster_env(); throws if it is missing.
std::string cluster_value(const std::string& key);

// The PostgreSQL server certificate and key written by
// scripts/pg_test_cluster.sh (valid for 127.0.0.1 and localhost), usable as
// pgstash's listen.tls_cert_file / listen.tls_key_file.
std::string cluster_server_cert();
std::string cluster_server_key();

// `s` as a TOML basic string, quotes included.
std::string toml_string(std::string_view s);

// A short random hex string, to make table/channel names unique per test run.
std::string unique_suffix();

// ---------------------------------------------------------------- processes

struct command_result {
  int exit_code = -1;  // -1 if killed by a signal or timed out
  bool timed_out = false;
  std::string output;  // stdout and stderr, interleaved
};
// Runs argv[0] with argv (no shell), capturing both output streams; kills it
// after `timeout`.
command_result run_command(const std::vector<std::string>& argv,
                           milliseconds timeout = milliseconds(60000));

// A directory from mkdtemp, removed (with its contents) on destruction
// unless PGSTASH_KEEP_WORKDIR is set.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  // Leaves the directory in place on destruction (for post-mortems).
  void keep() { keep_ = true; }
  // Writes `content` to path()/name and returns the full path.
  std::string write_file(const std::string& name, std::string_view content) const;

 private:
  std::string path_;
  bool keep_ = false;
};

// One pgstash for one test, started by tests/lib/pgstash_instance.sh in a
// fresh workdir. Each extra is a full `section.key = value` TOML line (values
// in TOML syntax: strings quoted, see toml_string()). Throws if it does not
// start. The destructor stops it; if any doctest assertion failed while it
// was alive, it also prints the tail of its log and keeps the workdir.
class pgstash_instance {
 public:
  explicit pgstash_instance(const std::vector<std::string>& extras = {});
  ~pgstash_instance();
  pgstash_instance(const pgstash_instance&) = delete;
  pgstash_instance& operator=(const pgstash_instance&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& workdir() const { return work_.path(); }

  // VmRSS of the process in kB; -1 if it is gone.
  long rss_kb() const;
  // kill(pid, 0) succeeds and the process is not a zombie.
  bool alive() const;
  // The whole pgstash log so far.
  std::string log() const;

  // A libpq conninfo for this instance: host, port, dbname=pgstash_test,
  // user=postgres, sslmode=disable, gssencmode=disable, then `extra`
  // (later keywords override earlier ones).
  std::string conninfo(std::string_view extra = {}) const;

 private:
  temp_dir work_;
  int port_ = 0;
  pid_t pid_ = 0;
  int failures_at_start_ = 0;
};

// A conninfo straight to the test PostgreSQL (no pgstash), as `postgres`.
std::string direct_conninfo(std::string_view extra = {});

// ---------------------------------------------------------------- libpq

// An error from the server or from pgstash, or a libpq-side failure (then
// sqlstate is empty).
struct pg_error : std::runtime_error {
  pg_error(std::string sqlstate_, const std::string& message)
      : std::runtime_error(sqlstate_.empty() ? message : sqlstate_ + ": " + message),
        sqlstate(std::move(sqlstate_)) {}
  std::string sqlstate;
};

struct pgresult_deleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using result_ptr = std::unique_ptr<PGresult, pgresult_deleter>;

// RAII PGconn. Connects without blocking past `timeout` (PQconnectStartParams
// + poll), with PQERRORS_VERBOSE so that connection errors carry their
// SQLSTATE ("FATAL:  28P01: ...") and pg_error::sqlstate can be filled.
class pg_conn {
 public:
  // Throws pg_error if the connection fails or times out.
  explicit pg_conn(const std::string& conninfo, milliseconds timeout = k_default_timeout);
  ~pg_conn();
  pg_conn(const pg_conn&) = delete;
  pg_conn& operator=(const pg_conn&) = delete;
  pg_conn(pg_conn&& other) noexcept : conn_(other.conn_) { other.conn_ = nullptr; }

  // Connects expecting failure: returns the error, throws std::runtime_error
  // if the connection succeeded.
  static pg_error connect_error(const std::string& conninfo,
                                milliseconds timeout = k_default_timeout);

  PGconn* get() const { return conn_; }
  int backend_pid() const { return PQbackendPID(conn_); }
  int socket() const { return PQsocket(conn_); }

  // Runs `sql` (simple protocol, may hold several statements) and returns
  // the first column of the first row of the last result that has rows, or
  // "" if none has. A NULL value is returned as "<NULL>". Throws pg_error
  // with the SQLSTATE of the first error.
  std::string exec(const std::string& sql, milliseconds timeout = k_default_timeout);
  // Same, but returns every result (also errors) of the query, in order.
  std::vector<result_ptr> exec_all(const std::string& sql,
                                   milliseconds timeout = k_default_timeout);

  // Waits (poll + PQconsumeInput) until PQgetResult would not block, then
  // returns it (nullptr at the end of a query). Throws on timeout or a broken
  // connection.
  result_ptr next_result(clock::time_point deadline);
  // Waits up to `deadline` for input and consumes it; false on timeout.
  bool wait_input(clock::time_point deadline);
  // Drops the connection abruptly: shutdown(2) of the socket (no Terminate
  // message reaches the peer), then PQfinish.
  void kill_socket();
  // PQfinish now (sends Terminate).
  void finish();

 private:
  PGconn* conn_ = nullptr;
};

// SQLSTATE of a result, "" if none.
std::string sqlstate_of(const PGresult* r);

// ---------------------------------------------------------------- raw sockets

// A v3 protocol message as read from the wire.
struct raw_message {
  char tag = 0;
  std::string body;
};

// ErrorResponse/NoticeResponse fields: code -> value.
std::map<char, std::string> parse_error_fields(std::string_view body);

// Builders for frontend bytes.
std::string be32(std::uint32_t v);
std::string startup_packet(const std::vector<std::pair<std::string, std::string>>& params,
                           std::uint32_t protocol = 196608);
std::string ssl_request();
std::string be16(std::uint16_t v);
std::string cstr(std::string_view s);  // with its terminating NUL
std::string frame(char tag, std::string_view body);
std::string query_frame(std::string_view sql);
// Extended-protocol messages: no parameter types, formats or values.
std::string parse_msg(std::string_view name, std::string_view sql);
std::string bind_msg(std::string_view portal, std::string_view statement);
std::string execute_msg(std::string_view portal = {});
std::string close_msg(char what, std::string_view name);
std::string sync_msg();

// A plain TCP connection to 127.0.0.1:port, for sending arbitrary bytes.
class raw_conn {
 public:
  // Throws if it cannot connect within `timeout`.
  explicit raw_conn(int port, milliseconds timeout = milliseconds(5000));
  ~raw_conn();
  raw_conn(const raw_conn&) = delete;
  raw_conn& operator=(const raw_conn&) = delete;

  // Sends all of `bytes` (one write where the kernel allows); false if the
  // peer has closed or `timeout` passes first.
  bool send(std::string_view bytes, milliseconds timeout = milliseconds(5000));
  // Reads whatever is available, waiting up to `timeout` for the first
  // byte; "" on timeout or close (see closed()).
  std::string read_some(milliseconds timeout);
  // Reads one message; nullopt on timeout or close.
  std::optional<raw_message> read_message(milliseconds timeout);
  // Reads exactly n bytes; nullopt on timeout or close.
  std::optional<std::string> read_exact(std::size_t n, milliseconds timeout);
  // Reads and discards until the peer closes; true if it closed within
  // `timeout`.
  bool wait_closed(milliseconds timeout);
  // True once a read saw EOF or a connection error.
  bool closed() const { return closed_; }
  // Reads messages until ReadyForQuery; returns them all (the last is 'Z').
  // Throws if an ErrorResponse, an authentication request other than OK, a
  // timeout or a close comes first.
  std::vector<raw_message> read_until_ready(milliseconds timeout = k_default_timeout);
  // Sends a StartupMessage for user/database (trust auth) and reads until
  // ReadyForQuery, as read_until_ready().
  void login(const std::string& user, const std::string& database);
  void close();
  int fd() const { return fd_; }

 private:
  // One recv() after waiting up to `timeout`, bypassing pending_.
  std::string recv_some(milliseconds timeout);

  int fd_ = -1;
  bool closed_ = false;
  std::string pending_;  // read but not yet returned by read_message/read_exact
};

// The outcome of a raw exchange pgstash must refuse: the first message it
// sent (if any) and whether the connection was closed.
struct refusal {
  std::optional<raw_message> first;  // nullopt: nothing was sent
  bool closed = false;
  std::string sqlstate() const;  // of `first` if it is an ErrorResponse
};
// Reads what pgstash answers on `c` until it closes the connection (or
// `timeout` passes), keeping the first message.
refusal read_refusal(raw_conn& c, milliseconds timeout = milliseconds(5000));

// A TCP port on 127.0.0.1 with nothing listening (bound once, then closed).
int closed_port();

// Sleeps (EINTR-safe).
void sleep_for(milliseconds d);

// A socket listening on a free loopback port (backlog 16); its port in `port`.
int listen_loopback(int& port);

// A TCP relay on a free loopback port to 127.0.0.1:`target_port` that holds
// each new connection for `delay` before connecting it through: a server
// that is slow to take connections (cancel requests included).
class slow_relay {
 public:
  slow_relay(int target_port, milliseconds delay);
  ~slow_relay();
  slow_relay(const slow_relay&) = delete;
  slow_relay& operator=(const slow_relay&) = delete;
  int port() const { return port_; }
  int connections() const { return connections_.load(); }

 private:
  void accept_loop();
  void relay(int client_fd);

  int target_port_;
  milliseconds delay_;
  int listen_fd_ = -1;
  int port_ = 0;
  int stop_pipe_[2] = {-1, -1};  // readable once the relay is stopping
  std::atomic<int> connections_{0};
  std::thread acceptor_;
  std::vector<std::thread> relays_;  // one per connection, added by acceptor_ only
};

// Polls `pred` every 20 ms until it is true or `timeout` passes; returns the
// last value.
template <typename Pred>
bool eventually(Pred pred, milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (clock::now() >= deadline) return false;
    sleep_for(milliseconds(20));
  }
}

// Seconds since `t0`, as a double, for messages and bounds.
inline double seconds_since(clock::time_point t0) {
  return std::chrono::duration<double>(clock::now() - t0).count();
}

}  // namespace pgstash::itest
