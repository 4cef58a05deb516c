// pgstash's configuration: one TOML file, parsed into plain structs with
// defaults. Pure (no sockets, no globals); passed down as `const config&`.
//
// Every key lives in one declarative table in config.cpp (name, type,
// member, range or allowed values, doc), kept alphabetical; defaults are the
// member initializers below. The README's reference (reference_markdown())
// and `--check-config` diagnostics come from the same rows.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pgstash::conf {

enum class auth_method { trust, md5, scram_sha_256 };
enum class pool_mode { session };
// How pgstash secures its connections to PostgreSQL (libpq's sslmode names).
enum class server_tls { disable, prefer, require, verify_full };

struct listen_section {
  // Affects behaviour.
  std::string host = "127.0.0.1";  // address to accept clients on
  std::uint16_t port = 6432;       // TCP port to accept clients on
  std::uint32_t max_client_conn = 1000;  // clients beyond this get 53300
  std::string tls_cert_file;  // PEM; with tls_key_file enables TLS for clients
  std::string tls_key_file;   // PEM private key for tls_cert_file
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
  std::string file;  // userlist: lines of "user" "secret"; required unless trust
};

struct pool_section {
  pool_mode mode = pool_mode::session;
  std::uint32_t size = 20;  // server connections per (database, user)
  std::uint32_t wait_timeout_ms = 120000;  // a client waits this long for a server connection
  std::string reset_query = "DISCARD ALL";  // run before a connection is reused
  // A server connection whose client left must be back to a clean idle
  // state (query cancelled, transaction rolled back, reset done) within
  // this, or it is closed.
  std::uint32_t cleanup_timeout_ms = 10000;
};

struct limits_section {
  // Largest protocol message accepted from a client or server, in bytes.
  // Messages are streamed, so this bounds sanity, not memory.
  std::uint32_t max_message_size = 1073741824;
  // Bytes pgstash buffers per direction of a session.
  std::uint32_t io_buffer_size = 65536;
  // A client must finish startup and authentication within this.
  std::uint32_t client_login_timeout_ms = 60000;
};

struct log_section {
  std::string level = "info";  // trace | debug | info | warn | error | off
};

// [databases]: client-visible name -> server database name. Empty means
// every name passes through unchanged; otherwise names not listed are
// refused with 3D000.
using database_map = std::map<std::string, std::string>;

struct config {
  listen_section listen;
  server_section server;
  auth_section auth;
  pool_section pool;
  limits_section limits;
  log_section log;
  database_map databases;
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

namespace detail {
// Reads the whole of `path` into `out`. On failure returns a diagnostic
// with line 0 naming the file and the OS error. Shared by the loaders in
// conf/; not meant for use elsewhere.
std::optional<diagnostic> read_text_file(const std::string& path, std::string& out);
}  // namespace detail

}  // namespace pgstash::conf
