// pgstash's configuration: one TOML file, parsed into plain structs with
// defaults. Pure (no sockets, no globals); passed down as `const config&`.
//
// Every key lives in one declarative table in config_keys.cpp (name, type,
// member, range or allowed values, doc), kept alphabetical; defaults are the
// member initializers below. The README's reference (reference_markdown())
// and `--check-config` diagnostics come from the same rows.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgstash::conf {

enum class auth_method { trust, md5, scram_sha_256 };
// session: a client keeps one server connection for its whole session.
// transaction: a client holds a server connection only while a transaction
// (or a statement outside one) runs.
enum class pool_mode { session, transaction };
// How pgstash secures its connections to PostgreSQL (libpq's sslmode names).
enum class server_tls { disable, prefer, require, verify_full };
// Which writes a cache hit is proven to have seen: those through this
// pgstash (others within the stream's lag), or every write acknowledged
// before the read (each hit waits for the replication stream).
enum class cache_consistency { instance, strict };

struct listen_section {
  // Affects behaviour.
  std::string host = "127.0.0.1";  // address to accept clients on
  std::uint16_t port = 6432;       // TCP port to accept clients on
  std::uint32_t max_client_conn = 1000;  // clients beyond this get 53300
  // Replication clients, counted apart from max_client_conn: each has a
  // server connection of its own, outside the pools.
  std::uint32_t max_replication_conn = 10;
  std::string tls_cert_file;  // PEM; with tls_key_file enables TLS for clients
  std::string tls_key_file;   // PEM private key for tls_cert_file
  // A unix socket .s.PGSQL.<port> in this directory accepts clients too,
  // as PostgreSQL's and PgBouncer's do by default; empty = none.
  std::string unix_socket_dir = "/tmp";
  std::string unix_socket_mode = "0777";  // octal, as chmod takes it
  // SO_REUSEPORT: several instances on one host share the port.
  bool reuse_port = false;
};

struct server_section {
  std::string host = "127.0.0.1";  // PostgreSQL host (IP address or name)
  std::uint16_t port = 5432;       // PostgreSQL port
  server_tls tls = server_tls::prefer;  // TLS mode toward PostgreSQL
  std::string tls_ca_file;  // CA bundle for verify_full; empty = system store
  std::uint32_t connect_timeout_ms = 5000;  // TCP+TLS+auth to PostgreSQL
};

struct auth_section {
  auth_method method = auth_method::trust;  // how clients prove who they are
  std::string file;  // userlist: lines of "user" "secret"; required unless trust or `user`
  // auth_query, as PgBouncer's auth_user: a client missing from `file` has
  // its secret looked up by running `query` ($1 = its name; first row's
  // second column) as `user` in `database` (empty = the client's own).
  std::string user;  // empty = no look-up
  std::string query =
      "SELECT usename, CASE WHEN valuntil < now() THEN NULL ELSE passwd END FROM pg_shadow "
      "WHERE usename = $1";
  std::string database;
  std::uint32_t query_cache_ms = 60000;  // a secret found is reused this long; 0 = never
};

struct pool_section {
  // Names follow PgBouncer's where the concept is the same; times are in ms.
  pool_mode mode = pool_mode::transaction;
  std::uint32_t size = 20;  // server connections per (database, user)
  std::uint32_t min_pool_size = 0;  // kept open per (database, user) once it was used
  std::uint32_t reserve_pool_size = 0;  // extra connections for clients that waited...
  std::uint32_t reserve_pool_timeout_ms = 5000;  // ...at least this long
  std::uint32_t max_db_connections = 0;  // per database, all users together; 0 = no limit
  std::uint32_t query_wait_timeout_ms = 120000;  // a client waits this long for a server connection
  std::uint32_t server_lifetime_ms = 3600000;  // older connections are closed when released
  std::uint32_t server_idle_timeout_ms = 600000;  // idle longer than this: closed
  std::string server_check_query = "select 1";  // run on a connection idle longer than...
  std::uint32_t server_check_delay_ms = 30000;  // ...this before it is reused
  std::string server_reset_query = "DISCARD ALL";  // session mode: run before reuse
  // A server connection whose client left must be back to a clean idle
  // state (query cancelled, transaction rolled back, reset done) within
  // this, or it is closed.
  std::uint32_t cleanup_timeout_ms = 10000;
  // Transaction mode: protocol-level prepared statements kept per server
  // connection; the least recently used beyond this are closed.
  std::uint32_t max_prepared_statements = 200;
  // Server databases whose connections are never kept in the pool: a
  // client there has its own connection, closed when it leaves. A template
  // with a connection open cannot be copied by CREATE DATABASE.
  std::vector<std::string> unpooled_databases = {"template0", "template1"};
};

struct limits_section {
  // Largest protocol message accepted from a client or server, in bytes.
  // Messages are streamed, so this bounds sanity, not memory.
  std::uint32_t max_message_size = 1073741824;
  // Bytes pgstash buffers per direction of a session.
  std::uint32_t io_buffer_size = 65536;
  // A client must finish startup and authentication within this.
  std::uint32_t client_login_timeout_ms = 60000;
  // A client silent for this long is disconnected; 0 = never.
  std::uint32_t client_idle_timeout_ms = 0;
  // A client silent for this long inside a transaction is disconnected
  // (its transaction rolled back); 0 = never.
  std::uint32_t idle_transaction_timeout_ms = 0;
  // Statement analyses memoized per worker thread (by text hash).
  std::uint32_t analysis_cache_entries = 10000;
};

// An exception to the result cache's defaults ([[cache.rules]]): results
// that read `table` (through views too), or whose statement text is like
// `statement`, or both, are never cached, cached for `ttl` seconds, or
// cached even though they call functions pgstash would not trust (force).
// The first rule that matches applies.
struct cache_rule {
  enum class action : std::uint8_t { never, cache, force };
  std::string table;      // a relation's name; a schema before it is ignored; empty = any
  std::string statement;  // an ILIKE pattern (%, _, \) on the statement's text; empty = any
  action what = action::cache;
  std::optional<std::uint32_t> ttl;  // seconds, 0 = until invalidated; default_ttl if unset
};

// The result cache. Off by default: until writes that bypass pgstash are
// followed from PostgreSQL's replication stream, only default_ttl bounds
// how long such a write can go unseen, and that is the operator's call.
struct cache_section {
  bool enabled = false;
  std::string path = "pgstash-cache";  // LMDB environment directory
  std::uint64_t max_size = 256ull << 20;  // bytes of cached responses
  std::uint64_t max_entry_size = 1u << 20;  // larger responses are never cached
  std::uint32_t default_ttl = 60;  // seconds an entry may be served; 0 = no expiry
  std::uint64_t compress_min_size = 4096;  // bytes; larger entries are zstd-compressed
  // A miss of a key another client is fetching waits for that result this
  // long at most before it goes to the server itself; 0 = never waits.
  std::uint32_t coalesce_wait_ms = 5000;
  cache_consistency consistency = cache_consistency::instance;
  // Strict: a hit the stream has not proven within this long goes to the
  // server instead.
  std::uint32_t strict_wait_ms = 1000;
  // Run through pgstash as warm_user in warm_database at start and after
  // every global invalidation, so that the first clients get hits.
  std::vector<std::string> warm_statements;
  std::string warm_database;
  std::string warm_user;
  std::vector<cache_rule> rules;
};

// Writes that bypass pgstash, followed from PostgreSQL's logical
// replication stream. Off by default: it holds a walsender and a slot per
// database and installs an event trigger, which is the operator's call.
struct invalidation_section {
  bool replication = false;
  std::string slot = "pgstash";  // per database: <slot>_<database oid>
  // The slots outlive pgstash, and the cache its restarts (checkpoints).
  bool persistent_slot = false;
};

// The admin port: HTTP (health, readiness, Prometheus metrics, a JSON API)
// on its own address. Off unless a port is set; every request but /health
// must carry the token (PGSTASH_ADMIN_TOKEN in the environment stands in
// for an empty `token`).
struct admin_section {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0 = no admin port
  std::string token;
  std::uint32_t max_connections = 16;  // admin HTTP connections at once
  // Users who may log in to the admin console (database "pgstash").
  std::vector<std::string> users;
};

struct process_section {
  // Threads running client sessions; 0 = one per CPU core.
  std::uint32_t workers = 0;
  // This instance's number among its [peers], carried in every cancel key
  // it hands out; 0 = no peering.
  std::uint32_t peer_id = 0;
};

struct log_section {
  std::string level = "info";  // trace | debug | info | warn | error | off
  std::string format = "text";  // text | json (one JSON object per line)
  // Requests slower than this are logged with their statement; 0 = none.
  std::uint32_t slow_query_ms = 0;
};

// [databases]: client-visible name -> server database name. Empty means
// every name passes through unchanged; otherwise names not listed are
// refused with 3D000.
using database_map = std::map<std::string, std::string>;

// The other pgstash instances a client may reach (behind SO_REUSEPORT or a
// TCP balancer), by peer id: a cancel request carrying another's id is
// forwarded there.
struct peer_address {
  std::string host;
  std::uint16_t port = 0;
  bool operator==(const peer_address&) const = default;
};
using peer_map = std::map<std::uint32_t, peer_address>;
// Peer ids fit the top byte of a cancel key's secret.
inline constexpr std::uint32_t k_max_peer_id = 255;

struct config {
  admin_section admin;
  listen_section listen;
  server_section server;
  auth_section auth;
  pool_section pool;
  limits_section limits;
  cache_section cache;
  invalidation_section invalidation;
  process_section process;
  log_section log;
  database_map databases;
  peer_map peers;
};

// One problem found in a file, with where it is and, when there is one, a
// hint on how to fix it.
struct diagnostic {
  std::string file;
  int line = 0;    // 1-based; 0 when the problem is not tied to a line
  int column = 0;  // 1-based; 0 when unknown
  std::string message;
  std::string hint;
};
// An octal file mode such as "0777" or "660"; nullopt if it is not one.
std::optional<unsigned> parse_file_mode(std::string_view text);

// "file:line:column: message (hint)"; ":column" is left out when column is
// 0, " (hint)" when hint is empty, and ":line:column" when line is 0.
std::string format(const diagnostic& d);

struct load_result {
  std::optional<config> cfg;  // set iff errors is empty
  std::vector<diagnostic> errors;
};

// Parses and validates. Unknown keys and sections, wrong types, out-of-range
// and unknown values, and inconsistent combinations are all reported (every
// one, sorted by position), each with a hint. A TOML syntax error stops the
// parse, so it is reported alone. Keys not in the file keep the defaults
// above.
load_result load_file(const std::string& path);
// Same, from text; `name` stands in for the file name in diagnostics.
load_result load_string(const std::string& text, const std::string& name);

// The key table as a Markdown table (key, type, default, description), one
// row per key plus [databases]; rendered from the same rows the parser
// uses, so the README's reference cannot drift from the code.
std::string reference_markdown();

// Every key with its value in `cfg`, written as in the file, in key order;
// secrets (admin.token) read "********" when set. For the admin port.
std::vector<std::pair<std::string, std::string>> current_settings(const config& cfg);

// True if a reload applies `key` ("section.key") to the running process;
// false if a change needs a restart (and for unknown keys).
bool applies_on_reload(std::string_view key);

namespace detail {
// Reads the whole of `path` into `out`. On failure returns a diagnostic
// with line 0 naming the file and the OS error. Shared by the loaders in
// conf/; not meant for use elsewhere.
std::optional<diagnostic> read_text_file(const std::string& path, std::string& out);
}  // namespace detail

}  // namespace pgstash::conf
