#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "conf/config.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <unistd.h>

namespace {

using namespace pgstash::conf;

load_result load(const std::string& text) { return load_string(text, "t.toml"); }

// The one diagnostic `text` must produce, formatted.
std::string only_error(const std::string& text) {
  load_result r = load(text);
  CHECK_FALSE(r.cfg.has_value());
  REQUIRE(r.errors.size() == 1);
  return format(r.errors[0]);
}

// Every key, as the README documents it.
// clang-format off
const std::vector<std::string> k_all_keys = {
    "admin.host", "admin.max_connections", "admin.port", "admin.token", "admin.users",
    "auth.database", "auth.file", "auth.method", "auth.query", "auth.query_cache_ms", "auth.user",
    "cache.coalesce_wait_ms", "cache.compress_min_size", "cache.consistency", "cache.default_ttl",
    "cache.enabled", "cache.max_entry_size", "cache.max_size", "cache.path", "cache.strict_wait_ms",
    "cache.warm_database", "cache.warm_statements",
    "cache.warm_user",
    "invalidation.persistent_slot", "invalidation.replication", "invalidation.slot",
    "limits.analysis_cache_entries", "limits.client_idle_timeout_ms",
    "limits.client_login_timeout_ms", "limits.idle_transaction_timeout_ms",
    "limits.io_buffer_size", "limits.max_message_size",
    "listen.host", "listen.max_client_conn", "listen.max_replication_conn", "listen.port", "listen.reuse_port", "listen.tls_cert_file",
    "listen.tls_key_file", "listen.unix_socket_dir", "listen.unix_socket_mode",
    "log.format", "log.level", "log.slow_query_ms",
    "pool.cleanup_timeout_ms", "pool.max_db_connections", "pool.max_prepared_statements",
    "pool.min_pool_size", "pool.mode", "pool.query_wait_timeout_ms", "pool.reserve_pool_size",
    "pool.reserve_pool_timeout_ms", "pool.server_check_delay_ms", "pool.server_check_query",
    "pool.server_idle_timeout_ms", "pool.server_lifetime_ms", "pool.server_reset_query",
    "pool.size", "pool.unpooled_databases",
    "process.peer_id", "process.workers",
    "server.connect_timeout_ms", "server.host", "server.port", "server.tls", "server.tls_ca_file",
};
// clang-format on

}  // namespace

TEST_CASE("an empty file gives the documented defaults") {
  load_result r = load("");
  REQUIRE(r.errors.empty());
  REQUIRE(r.cfg.has_value());
  const config& c = *r.cfg;
  CHECK(c.listen.host == "127.0.0.1");
  CHECK(c.listen.port == 6432);
  CHECK(c.listen.max_client_conn == 1000);
  CHECK(c.listen.tls_cert_file.empty());
  CHECK(c.listen.tls_key_file.empty());
  CHECK(c.listen.unix_socket_dir == "/tmp");
  CHECK(c.listen.unix_socket_mode == "0777");
  CHECK(c.pool.unpooled_databases == std::vector<std::string>{"template0", "template1"});
  CHECK(c.server.host == "127.0.0.1");
  CHECK(c.server.port == 5432);
  CHECK(c.server.tls == server_tls::prefer);
  CHECK(c.server.tls_ca_file.empty());
  CHECK(c.server.connect_timeout_ms == 5000);
  CHECK(c.auth.method == auth_method::trust);
  CHECK(c.auth.file.empty());
  CHECK(c.pool.mode == pool_mode::transaction);
  CHECK(c.pool.size == 20);
  CHECK(c.pool.query_wait_timeout_ms == 120000);
  CHECK(c.pool.server_reset_query == "DISCARD ALL");
  CHECK(c.pool.server_lifetime_ms == 3600000);
  CHECK(c.pool.server_check_query == "select 1");
  CHECK(c.limits.client_idle_timeout_ms == 0);
  CHECK(c.process.workers == 0);
  CHECK(c.limits.max_message_size == 1073741824);
  CHECK(c.limits.io_buffer_size == 65536);
  CHECK(c.limits.client_login_timeout_ms == 60000);
  CHECK(c.log.level == "info");
  CHECK(c.databases.empty());
  CHECK(c.admin.port == 0);
  CHECK(c.admin.host == "127.0.0.1");
  CHECK(c.admin.token.empty());
  CHECK(c.admin.max_connections == 16);
}

TEST_CASE("comments and empty sections leave the defaults") {
  load_result r = load("# nothing\n[listen]\n[server] # still nothing\n");
  REQUIRE(r.errors.empty());
  CHECK(r.cfg->listen.port == 6432);
}

TEST_CASE("every key can be set") {
  load_result r = load(R"(
[listen]
host = "0.0.0.0"
port = 7432
max_client_conn = 5000
tls_cert_file = "/etc/pgstash/cert.pem"
tls_key_file = "/etc/pgstash/key.pem"

[server]
host = "db.internal"
port = 5433
tls = "verify-full"
tls_ca_file = "/etc/ssl/ca.pem"
connect_timeout_ms = 2500

[auth]
method = "scram-sha-256"
file = "/etc/pgstash/userlist.txt"

[pool]
mode = "session"
size = 50
query_wait_timeout_ms = 30000
server_reset_query = ""
min_pool_size = 2
reserve_pool_size = 3

[process]
workers = 4

[limits]
max_message_size = 2048
io_buffer_size = 8192
client_login_timeout_ms = 15000

[log]
level = "debug"

[databases]
app = "app_production"
"reports" = "warehouse"
)");
  std::string errors;
  for (const auto& e : r.errors) errors += format(e) + "\n";
  INFO(errors);
  REQUIRE(r.errors.empty());
  const config& c = *r.cfg;
  CHECK(c.listen.host == "0.0.0.0");
  CHECK(c.listen.port == 7432);
  CHECK(c.listen.max_client_conn == 5000);
  CHECK(c.listen.tls_cert_file == "/etc/pgstash/cert.pem");
  CHECK(c.listen.tls_key_file == "/etc/pgstash/key.pem");
  CHECK(c.server.host == "db.internal");
  CHECK(c.server.port == 5433);
  CHECK(c.server.tls == server_tls::verify_full);
  CHECK(c.server.tls_ca_file == "/etc/ssl/ca.pem");
  CHECK(c.server.connect_timeout_ms == 2500);
  CHECK(c.auth.method == auth_method::scram_sha_256);
  CHECK(c.auth.file == "/etc/pgstash/userlist.txt");
  CHECK(c.pool.mode == pool_mode::session);
  CHECK(c.pool.size == 50);
  CHECK(c.pool.query_wait_timeout_ms == 30000);
  CHECK(c.pool.server_reset_query.empty());
  CHECK(c.pool.min_pool_size == 2);
  CHECK(c.pool.reserve_pool_size == 3);
  CHECK(c.process.workers == 4);
  CHECK(c.limits.max_message_size == 2048);
  CHECK(c.limits.io_buffer_size == 8192);
  CHECK(c.limits.client_login_timeout_ms == 15000);
  CHECK(c.log.level == "debug");
  CHECK(c.databases == database_map{{"app", "app_production"}, {"reports", "warehouse"}});
}

TEST_CASE("each enum spelling maps to its value") {
  CHECK(load("server.tls = \"disable\"").cfg->server.tls == server_tls::disable);
  CHECK(load("server.tls = \"prefer\"").cfg->server.tls == server_tls::prefer);
  CHECK(load("server.tls = \"require\"").cfg->server.tls == server_tls::require);
  CHECK(load("server.tls = \"verify-full\"").cfg->server.tls == server_tls::verify_full);
  CHECK(load("auth.method = \"trust\"").cfg->auth.method == auth_method::trust);
  CHECK(load("auth = {method = \"md5\", file = \"u\"}").cfg->auth.method == auth_method::md5);
  for (const char* level : {"trace", "debug", "info", "warn", "error", "off"}) {
    CAPTURE(level);
    CHECK(load(std::string("[log]\nlevel = \"") + level + "\"").cfg->log.level == level);
  }
}

TEST_CASE("a TOML syntax error is reported at its position") {
  load_result r = load("[listen]\nport = \n");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].file == "t.toml");
  CHECK(r.errors[0].line == 2);
  CHECK(r.errors[0].column == 8);
  CHECK(r.errors[0].message.find("expected value") != std::string::npos);
  CHECK_FALSE(r.cfg.has_value());
}

TEST_CASE("unknown keys") {
  SUBCASE("a typo gets the nearest key") {
    load_result r = load("[listen]\n  prot = 6432\n");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].line == 2);
    CHECK(r.errors[0].column == 3);
    CHECK(r.errors[0].message == "unknown key \"listen.prot\"");
    CHECK(r.errors[0].hint == "did you mean listen.port?");
  }
  SUBCASE("a key in the wrong section points to the right one") {
    CHECK(only_error("[listen]\ntls = \"require\"\n") ==
          "t.toml:2:1: unknown key \"listen.tls\" (did you mean server.tls?)");
  }
  SUBCASE("nothing close lists the section's keys") {
    CHECK(only_error("[pool]\nflavour = 1\n") ==
          "t.toml:2:1: unknown key \"pool.flavour\" "
          "([pool] accepts cleanup_timeout_ms max_db_connections max_prepared_statements "
          "min_pool_size mode query_wait_timeout_ms reserve_pool_size reserve_pool_timeout_ms "
          "server_check_delay_ms server_check_query server_idle_timeout_ms server_lifetime_ms "
          "server_reset_query size unpooled_databases)");
  }
  SUBCASE("a key outside any section") {
    CHECK(only_error("port = 6432\n") ==
          "t.toml:1:1: unknown key \"port\" (did you mean admin.port or listen.port or server.port?)");
    CHECK(only_error("colour = 1\n") ==
          "t.toml:1:1: unknown key \"colour\" (keys belong in a section such as [listen])");
  }
  SUBCASE("a sub-table of a section is an unknown key") {
    CHECK(only_error("[listen.extra]\nx = 1\n") ==
          "t.toml:1:9: unknown key \"listen.extra\" ([listen] accepts host max_client_conn "
          "max_replication_conn "
          "port reuse_port tls_cert_file tls_key_file unix_socket_dir unix_socket_mode)");
  }
}

TEST_CASE("cache rules: read in order, rendered, and refused when wrong") {
  load_result r = load(
      "[[cache.rules]]\ntable = \"public.secrets\"\naction = \"never\"\n"
      "[[cache.rules]]\nstatement = \"select % from prices%\"\nttl = 5\n"
      "[[cache.rules]]\nstatement = \"select report(%\"\naction = \"force\"\nttl = 0\n");
  REQUIRE(r.cfg.has_value());
  const auto& rules = r.cfg->cache.rules;
  REQUIRE(rules.size() == 3);
  CHECK(rules[0].table == "public.secrets");
  CHECK(rules[0].what == cache_rule::action::never);
  CHECK_FALSE(rules[0].ttl);
  CHECK(rules[1].statement == "select % from prices%");
  CHECK(rules[1].what == cache_rule::action::cache);
  CHECK(rules[1].ttl == 5u);
  CHECK(rules[2].what == cache_rule::action::force);
  CHECK(rules[2].ttl == 0u);
  const auto settings = current_settings(*r.cfg);
  auto it = std::ranges::find(settings, std::string("cache.rules"),
                              &std::pair<std::string, std::string>::first);
  REQUIRE(it != settings.end());
  CHECK(it->second ==
        "[{table = \"public.secrets\", action = \"never\"}, {statement = \"select % from "
        "prices%\", action = \"cache\", ttl = 5}, {statement = \"select report(%\", action = "
        "\"force\", ttl = 0}]");

  struct bad_case {
    const char* text;
    const char* message;
  };
  for (const bad_case& c : {
           bad_case{"[cache]\nrules = 3\n", "cache.rules must be an array of tables"},
           bad_case{"[[cache.rules]]\naction = \"never\"\n",
                    "a cache rule needs table or statement"},
           bad_case{"[[cache.rules]]\ntable = \"t\"\naction = \"sometimes\"\n",
                    "invalid cache.rules.action \"sometimes\""},
           bad_case{"[[cache.rules]]\ntable = \"t\"\nttl = -1\n",
                    "cache.rules.ttl must be an integer from 0 to 31536000"},
           bad_case{"[[cache.rules]]\ntable = \"t\"\naction = \"never\"\nttl = 5\n",
                    "a cache rule with action = \"never\" has no ttl"},
           bad_case{"[[cache.rules]]\ntabel = \"t\"\n", "unknown key \"cache.rules.tabel\""},
           bad_case{"[[cache.rules]]\ntable = \"\"\n",
                    "cache.rules.table must be a non-empty string"},
       }) {
    CAPTURE(c.text);
    load_result bad = load(c.text);
    CHECK_FALSE(bad.cfg.has_value());
    REQUIRE_FALSE(bad.errors.empty());
    CHECK(bad.errors[0].message == c.message);
    CHECK(bad.errors[0].line > 0);
  }
}

TEST_CASE("unknown sections") {
  CHECK(only_error("[lisen]\nport = 1\n") ==
        "t.toml:1:2: unknown section [lisen] (did you mean [listen]?)");
  CHECK(only_error("\n[metrics]\n") ==
        "t.toml:2:2: unknown section [metrics] (sections are [admin] [auth] [cache] [databases] "
        "[invalidation] [limits] "
        "[listen] [log] [peers] [pool] [process] [server])");
}

TEST_CASE("a section written as a value") {
  CHECK(only_error("listen = 5\n") ==
        "t.toml:1:10: listen must be a table, not an integer (start the section with [listen])");
}

TEST_CASE("wrong types") {
  CHECK(only_error("[listen]\nport = \"6432\"\n") ==
        "t.toml:2:8: listen.port must be an integer, not a string (e.g. port = 6432)");
  CHECK(only_error("[pool]\nsize = 2.5\n") ==
        "t.toml:2:8: pool.size must be an integer, not a float (e.g. size = 20)");
  CHECK(only_error("[server]\nhost = 10\n") ==
        "t.toml:2:8: server.host must be a string, not an integer (e.g. host = \"127.0.0.1\")");
  CHECK(only_error("[listen]\ntls_cert_file = true\n") ==
        "t.toml:2:17: listen.tls_cert_file must be a string, not a boolean "
        "(e.g. tls_cert_file = \"...\")");
  CHECK(only_error("[server]\ntls = [\"require\"]\n") ==
        "t.toml:2:7: server.tls must be a string, not an array "
        "(expected one of \"disable\", \"prefer\", \"require\", \"verify-full\")");
  CHECK(only_error("[listen.port]\n") ==
        "t.toml:1:1: listen.port must be an integer, not a table (e.g. port = 6432)");
  CHECK(only_error("[cache]\nenabled = \"yes\"\n") ==
        "t.toml:2:11: cache.enabled must be true or false, not a string (e.g. enabled = false)");
}

TEST_CASE("a boolean key takes true and false") {
  load_result on = load("[cache]\nenabled = true\n");
  REQUIRE(on.cfg);
  CHECK(on.cfg->cache.enabled);
  load_result off = load("[cache]\nenabled = false\n");
  REQUIRE(off.cfg);
  CHECK_FALSE(off.cfg->cache.enabled);
  CHECK(reference_markdown().find("| `cache.enabled` | boolean | `false` |") != std::string::npos);
}

TEST_CASE("a list key takes a list of non-empty strings") {
  load_result set = load("[pool]\nunpooled_databases = [\"a\", \"b c\"]\n");
  REQUIRE(set.cfg);
  CHECK(set.cfg->pool.unpooled_databases == std::vector<std::string>{"a", "b c"});
  load_result none = load("[pool]\nunpooled_databases = []\n");
  REQUIRE(none.cfg);
  CHECK(none.cfg->pool.unpooled_databases.empty());
  load_result scalar = load("[pool]\nunpooled_databases = \"template1\"\n");
  REQUIRE(scalar.errors.size() == 1);
  CHECK(scalar.errors[0].message == "pool.unpooled_databases must be a list of strings, not a string");
  load_result mixed = load("[pool]\nunpooled_databases = [\"a\", 3]\n");
  REQUIRE(mixed.errors.size() == 1);
  CHECK(mixed.errors[0].message == "pool.unpooled_databases must hold only non-empty strings");
  CHECK(mixed.errors[0].column == 28);
  CHECK(reference_markdown().find(
            "| `pool.unpooled_databases` | list of strings | `[\"template0\", \"template1\"]` |") !=
        std::string::npos);
}

TEST_CASE("the unix socket's mode is an octal file mode") {
  CHECK(load("listen.unix_socket_mode = \"0660\"").cfg->listen.unix_socket_mode == "0660");
  CHECK(parse_file_mode("0660") == 0660u);
  CHECK(parse_file_mode("777") == 0777u);
  CHECK(!parse_file_mode("0789"));
  CHECK(!parse_file_mode("rwx"));
  CHECK(!parse_file_mode("07777"));
  load_result bad = load("[listen]\nunix_socket_mode = \"rw\"\n");
  REQUIRE(bad.errors.size() == 1);
  CHECK(bad.errors[0].line == 2);
  CHECK(bad.errors[0].message == "listen.unix_socket_mode \"rw\" is not an octal file mode");
}

TEST_CASE("ranges: bounds are accepted, one past them is not") {
  struct range {
    const char* section;
    const char* key;
    long long min;
    long long max;
  };
  const range ranges[] = {
      {"listen", "port", 1, 65535},
      {"listen", "max_client_conn", 1, 1000000},
      {"server", "port", 1, 65535},
      {"server", "connect_timeout_ms", 1, 86400000},
      {"pool", "size", 1, 10000},
      {"pool", "query_wait_timeout_ms", 1, 86400000},
      {"pool", "min_pool_size", 0, 10000},
      {"process", "workers", 0, 256},
      {"limits", "max_message_size", 1024, 1073741824},
      {"limits", "io_buffer_size", 4096, 16777216},
      {"limits", "client_login_timeout_ms", 1, 86400000},
  };
  for (const auto& r : ranges) {
    const std::string head = std::string("[") + r.section + "]\n" + r.key + " = ";
    const std::string name = std::string(r.section) + "." + r.key;
    CAPTURE(name);
    CHECK(load(head + std::to_string(r.min)).errors.empty());
    CHECK(load(head + std::to_string(r.max)).errors.empty());
    for (long long bad : {r.min - 1, r.max + 1}) {
      load_result res = load(head + std::to_string(bad));
      REQUIRE(res.errors.size() == 1);
      CHECK(res.errors[0].line == 2);
      CHECK(res.errors[0].column == static_cast<int>(std::string(r.key).size()) + 4);
      CHECK(res.errors[0].message == name + " must be between " + std::to_string(r.min) + " and " +
                                         std::to_string(r.max) + ", not " + std::to_string(bad));
      CHECK(res.errors[0].hint.rfind("the default is ", 0) == 0);
    }
  }
  CHECK(only_error("[listen]\nport = 70000\n") ==
        "t.toml:2:8: listen.port must be between 1 and 65535, not 70000 (the default is 6432)");
}

TEST_CASE("hosts must not be empty") {
  CHECK(only_error("[server]\nhost = \"\"\n") ==
        "t.toml:2:8: server.host must not be empty (the default is \"127.0.0.1\")");
  CHECK(only_error("[listen]\nhost = \"\"\n") ==
        "t.toml:2:8: listen.host must not be empty (the default is \"127.0.0.1\")");
}

TEST_CASE("bad enum values list the allowed ones") {
  CHECK(only_error("[server]\ntls = \"bogus\"\n") ==
        "t.toml:2:7: invalid server.tls \"bogus\" "
        "(expected one of \"disable\", \"prefer\", \"require\", \"verify-full\")");
  CHECK(only_error("[server]\ntls = \"verify_full\"\n") ==
        "t.toml:2:7: invalid server.tls \"verify_full\" (did you mean \"verify-full\"?)");
  CHECK(only_error("[auth]\nmethod = \"password\"\n") ==
        "t.toml:2:10: invalid auth.method \"password\" "
        "(expected one of \"trust\", \"md5\", \"scram-sha-256\")");
  CHECK(only_error("[log]\nlevel = \"verbose\"\n") ==
        "t.toml:2:9: invalid log.level \"verbose\" "
        "(expected one of \"trace\", \"debug\", \"info\", \"warn\", \"error\", \"off\")");
  CHECK(only_error("[log]\nlevel = \"INFO\"\n") ==
        "t.toml:2:9: invalid log.level \"INFO\" "
        "(expected one of \"trace\", \"debug\", \"info\", \"warn\", \"error\", \"off\")");
}

TEST_CASE("pool modes that are not implemented yet say so") {
  CHECK(only_error("[pool]\nmode = \"statement\"\n") ==
        "t.toml:2:8: pool.mode \"statement\" is not supported yet (supported: \"session\", "
        "\"transaction\")");
}

TEST_CASE("durations and sizes may be written with a unit") {
  const load_result r = load(
      "[pool]\nquery_wait_timeout_ms = \"30s\"\nserver_lifetime_ms = \"2h\"\n"
      "server_idle_timeout_ms = \"10 min\"\ncleanup_timeout_ms = \"250ms\"\n"
      "[limits]\nclient_idle_timeout_ms = \"1d\"\nio_buffer_size = \"64KiB\"\n"
      "[cache]\nmax_size = \"512MiB\"\nmax_entry_size = \"2MiB\"\ndefault_ttl = \"10min\"\n");
  REQUIRE(r.errors.empty());
  const config& c = *r.cfg;
  CHECK(c.pool.query_wait_timeout_ms == 30'000);
  CHECK(c.pool.server_lifetime_ms == 7'200'000);
  CHECK(c.pool.server_idle_timeout_ms == 600'000);
  CHECK(c.pool.cleanup_timeout_ms == 250);
  CHECK(c.limits.client_idle_timeout_ms == 86'400'000);
  CHECK(c.limits.io_buffer_size == 65'536);
  CHECK(c.cache.max_size == 536'870'912);
  CHECK(c.cache.max_entry_size == 2'097'152);
  CHECK(c.cache.default_ttl == 600);
  // The plain numbers still work.
  const load_result plain = load("[pool]\nquery_wait_timeout_ms = 1500\n");
  REQUIRE(plain.cfg.has_value());
  CHECK(plain.cfg->pool.query_wait_timeout_ms == 1500);
}

TEST_CASE("a quantity with a wrong unit, a fraction or out of range is refused with its line") {
  CHECK(only_error("[pool]\nquery_wait_timeout_ms = \"30 parsecs\"\n") ==
        "t.toml:2:25: pool.query_wait_timeout_ms: unknown unit \"parsecs\" (use ms, s, min, h, d) "
        "(e.g. query_wait_timeout_ms = \"30s\")");
  CHECK(only_error("[cache]\nmax_size = \"1GB\"\n") ==
        "t.toml:2:12: cache.max_size: unknown unit \"GB\" (use B, KiB, MiB, GiB, TiB) "
        "(e.g. max_size = \"512MiB\")");
  CHECK(only_error("[pool]\nquery_wait_timeout_ms = \"1.5s\"\n")
            .find("expected a whole number and a unit") != std::string::npos);
  CHECK(only_error("[pool]\nquery_wait_timeout_ms = \"30\"\n")
            .find("expected a whole number and a unit") != std::string::npos);
  CHECK(only_error("[cache]\ndefault_ttl = \"1500ms\"\n").find("not a whole number of seconds") !=
        std::string::npos);
  CHECK(only_error("[pool]\nquery_wait_timeout_ms = \"2d\"\n")
            .find("must be between 1 and 86400000, not 172800000") != std::string::npos);
  CHECK(
      only_error("[pool]\nquery_wait_timeout_ms = \"99999999999999999999s\"\n").find("too large") !=
      std::string::npos);
  // A key that counts nothing takes only a number.
  CHECK(only_error("[pool]\nsize = \"20s\"\n").find("pool.size must be an integer, not a string") !=
        std::string::npos);
}

TEST_CASE("auth.file is required unless auth.method is trust or auth.user is set") {
  CHECK(only_error("[auth]\nmethod = \"md5\"\n") ==
        "t.toml:2:10: auth.file is required when auth.method is \"md5\" "
        "(set file = \"/path/to/userlist.txt\" under [auth], or user = \"...\" to look secrets up "
        "with auth.query)");
  CHECK(only_error("[auth]\nfile = \"\"\nmethod = \"scram-sha-256\"\n") ==
        "t.toml:3:10: auth.file is required when auth.method is \"scram-sha-256\" "
        "(set file = \"/path/to/userlist.txt\" under [auth], or user = \"...\" to look secrets up "
        "with auth.query)");
  CHECK(load("[auth]\nmethod = \"md5\"\nfile = \"users.txt\"\n").errors.empty());
  CHECK(load("[auth]\nmethod = \"trust\"\n").errors.empty());
  // auth.user looks secrets up instead: it may stand without a file, but not under trust.
  CHECK(load("[auth]\nmethod = \"md5\"\nuser = \"pgstash_auth\"\n").errors.empty());
  CHECK(only_error("[auth]\nuser = \"pgstash_auth\"\n") ==
        "t.toml:2:8: auth.user is never used when auth.method is \"trust\" "
        "(set method = \"scram-sha-256\" or \"md5\" under [auth], or remove user)");
}

TEST_CASE("client TLS needs both the certificate and the key") {
  CHECK(only_error("[listen]\ntls_cert_file = \"c.pem\"\n") ==
        "t.toml:2:17: listen.tls_cert_file is set without listen.tls_key_file "
        "(set both to enable TLS for clients, or neither)");
  CHECK(only_error("[listen]\nport = 1\ntls_key_file = \"k.pem\"\n") ==
        "t.toml:3:16: listen.tls_key_file is set without listen.tls_cert_file "
        "(set both to enable TLS for clients, or neither)");
  CHECK(load("[listen]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n").errors.empty());
}

TEST_CASE("strict cache consistency needs the replication stream") {
  CHECK(only_error("[cache]\nenabled = true\nconsistency = \"strict\"\n") ==
        "t.toml:3:15: cache.consistency \"strict\" needs invalidation.replication = true "
        "(set replication = true under [invalidation] (wal_level = logical on the server), or "
        "consistency = \"instance\")");
  const load_result strict = load(
      "[cache]\nenabled = true\nconsistency = \"strict\"\nstrict_wait_ms = 250\n"
      "[invalidation]\nreplication = true\n");
  REQUIRE(strict.errors.empty());
  CHECK(strict.cfg->cache.consistency == cache_consistency::strict);
  CHECK(strict.cfg->cache.strict_wait_ms == 250);
  CHECK(load("").cfg->cache.consistency == cache_consistency::instance);
  CHECK(only_error("[invalidation]\npersistent_slot = true\n") ==
        "t.toml:2:19: invalidation.persistent_slot needs invalidation.replication = true (set "
        "replication = true under [invalidation] as well)");
  const load_result persistent =
      load("[invalidation]\nreplication = true\npersistent_slot = true\n");
  REQUIRE(persistent.errors.empty());
  CHECK(persistent.cfg->invalidation.persistent_slot);
  CHECK_FALSE(load("").cfg->invalidation.persistent_slot);
}

TEST_CASE("[peers]: ids and addresses, and this instance's own id") {
  const load_result r = load(
      "[process]\npeer_id = 2\n[listen]\nreuse_port = true\n"
      "[peers]\n1 = \"10.0.0.1:6432\"\n2 = \"10.0.0.2:6433\"\n255 = \"db-proxy.internal:7000\"\n");
  REQUIRE(r.errors.empty());
  CHECK(r.cfg->process.peer_id == 2);
  CHECK(r.cfg->listen.reuse_port);
  CHECK(r.cfg->peers == peer_map{{1, {"10.0.0.1", 6432}},
                                 {2, {"10.0.0.2", 6433}},
                                 {255, {"db-proxy.internal", 7000}}});
  CHECK(only_error("[process]\npeer_id = 1\n[peers]\n0 = \"a:1\"\n") ==
        "t.toml:4:1: peer id \"0\" is not a number from 1 to 255 "
        "(write <peer_id> = \"host:port\", e.g. 2 = \"10.0.0.2:6432\")");
  CHECK(only_error("[process]\npeer_id = 1\n[peers]\n2 = \"10.0.0.2\"\n") ==
        "t.toml:4:5: peers.2 must be \"host:port\" "
        "(the address peer 2 accepts clients on, e.g. \"10.0.0.2:6432\")");
  CHECK(only_error("[process]\npeer_id = 1\n[peers]\n2 = \"h:70000\"\n") ==
        "t.toml:4:5: peers.2 must be \"host:port\" "
        "(the address peer 2 accepts clients on, e.g. \"10.0.0.2:6432\")");
  CHECK(only_error("[peers]\n2 = \"h:1\"\n") ==
        "t.toml:2:1: [peers] is set without process.peer_id "
        "(give this instance its own number, e.g. peer_id = 1 under [process])");
}

TEST_CASE("the admin port must not be the client port") {
  CHECK(only_error("[admin]\nport = 6432\n") ==
        "t.toml:2:8: admin.port is listen.port (6432) "
        "(give the admin port a port of its own, e.g. port = 6433)");
  CHECK(load("[admin]\nport = 6433\n").errors.empty());
}

TEST_CASE("current_settings lists every key's value, the token masked") {
  load_result r = load("[admin]\nport = 6433\ntoken = \"s3cret-token\"\n"
                       "[pool]\nsize = 7\n[databases]\napp = \"app_db\"\n");
  REQUIRE(r.cfg.has_value());
  const auto settings = current_settings(*r.cfg);
  REQUIRE(settings.size() == k_all_keys.size() + 2);
  for (std::size_t i = 0; i < k_all_keys.size(); ++i) CHECK(settings[i].first == k_all_keys[i]);
  auto value = [&](const std::string& name) {
    auto it = std::ranges::find(settings, name, &std::pair<std::string, std::string>::first);
    REQUIRE(it != settings.end());
    return it->second;
  };
  CHECK(value("admin.port") == "6433");
  CHECK(value("admin.token") == "\"********\"");
  CHECK(value("pool.size") == "7");
  CHECK(value("pool.mode") == "\"transaction\"");
  CHECK(value("databases.\"app\"") == "\"app_db\"");
  for (const auto& [name, text] : settings) CHECK(text.find("s3cret") == std::string::npos);
  // An unset token is shown as unset, not as a mask.
  CHECK(current_settings(config{})[3].second == "\"\"");
}

TEST_CASE("every problem is reported, in file order") {
  load_result r = load(R"([server]
port = 0
tls = "sometimes"
[listen]
prot = 1
[auth]
method = "md5"
[bogus]
[pool]
size = "big"
mode = "statement"
)");
  CHECK_FALSE(r.cfg.has_value());
  std::string got;
  for (const auto& e : r.errors) got += format(e) + "\n";
  CHECK(got ==
        "t.toml:2:8: server.port must be between 1 and 65535, not 0 (the default is 5432)\n"
        "t.toml:3:7: invalid server.tls \"sometimes\" (expected one of \"disable\", "
        "\"prefer\", \"require\", \"verify-full\")\n"
        "t.toml:5:1: unknown key \"listen.prot\" (did you mean listen.port?)\n"
        "t.toml:7:10: auth.file is required when auth.method is \"md5\" "
        "(set file = \"/path/to/userlist.txt\" under [auth], or user = \"...\" to look secrets up "
        "with auth.query)\n"
        "t.toml:8:2: unknown section [bogus] (sections are [admin] [auth] [cache] [databases] "
        "[invalidation] [limits] "
        "[listen] [log] [peers] [pool] [process] [server])\n"
        "t.toml:10:8: pool.size must be an integer, not a string (e.g. size = 20)\n"
        "t.toml:11:8: pool.mode \"statement\" is not supported yet (supported: \"session\", "
        "\"transaction\")\n");
}

TEST_CASE("[databases] maps client names to server databases") {
  SUBCASE("names, quoted names and non-ASCII") {
    load_result r =
        load("[databases]\napp = \"app_db\"\n\"my.app\" = \"x\"\n\"café\" = \"cafe\"\n");
    REQUIRE(r.errors.empty());
    CHECK(r.cfg->databases == database_map{{"app", "app_db"}, {"my.app", "x"}, {"café", "cafe"}});
  }
  SUBCASE("an empty name") {
    CHECK(only_error("[databases]\n\"\" = \"db\"\n") ==
          "t.toml:2:1: database name must not be empty "
          "(write \"client_name\" = \"server_database\")");
  }
  SUBCASE("a value that is not a string") {
    CHECK(only_error("[databases]\napp = 5\n") ==
          "t.toml:2:7: databases.\"app\" must be a string, not an integer "
          "(write \"client_name\" = \"server_database\")");
  }
  SUBCASE("an unquoted dotted name") {
    CHECK(only_error("[databases]\nmy.app = \"x\"\n") ==
          "t.toml:2:1: databases.\"my\" must be a string, not a table "
          "(quote names that contain dots: \"a.b\" = \"server_database\")");
  }
  SUBCASE("an empty server database") {
    CHECK(only_error("[databases]\napp = \"\"\n") ==
          "t.toml:2:7: databases.\"app\" must not be empty "
          "(give the server database name, e.g. \"app\")");
  }
  SUBCASE("[databases] written as a value") {
    CHECK(only_error("databases = 1\n") ==
          "t.toml:1:13: databases must be a table, not an integer "
          "(start the section with [databases])");
  }
}

TEST_CASE("format") {
  diagnostic d{"pgstash.toml", 3, 7, "listen.port must be an integer", "e.g. port = 6432"};
  CHECK(format(d) == "pgstash.toml:3:7: listen.port must be an integer (e.g. port = 6432)");
  d.hint.clear();
  CHECK(format(d) == "pgstash.toml:3:7: listen.port must be an integer");
  d.column = 0;
  CHECK(format(d) == "pgstash.toml:3: listen.port must be an integer");
  d.line = 0;
  d.hint = "check the path";
  CHECK(format(d) == "pgstash.toml: listen.port must be an integer (check the path)");
}

TEST_CASE("load_file") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("conf_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);

  SUBCASE("reads the file and names it in diagnostics") {
    const std::string path = (dir / "pgstash.toml").string();
    std::ofstream(path) << "[listen]\nport = 7000\nhots = \"x\"\n";
    load_result r = load_file(path);
    REQUIRE(r.errors.size() == 1);
    CHECK(format(r.errors[0]) == path +
                                     ":3:1: unknown key \"listen.hots\" "
                                     "(did you mean listen.host?)");
    std::ofstream(path) << "[listen]\nport = 7000\n";
    r = load_file(path);
    REQUIRE(r.cfg.has_value());
    CHECK(r.cfg->listen.port == 7000);
  }
  SUBCASE("a missing file is one diagnostic without a line") {
    const std::string path = (dir / "missing.toml").string();
    load_result r = load_file(path);
    CHECK_FALSE(r.cfg.has_value());
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].line == 0);
    CHECK(format(r.errors[0]) == path + ": cannot read file: No such file or directory");
  }
  SUBCASE("a directory is not readable as a file") {
    load_result r = load_file(dir.string());
    REQUIRE(r.errors.size() == 1);
    CHECK(format(r.errors[0]) == dir.string() + ": cannot read file: Is a directory");
  }
  fs::remove_all(dir);
}

TEST_CASE("reference_markdown documents every key from the table") {
  const std::string md = reference_markdown();
  CHECK(md.rfind("| key | type | default | on reload | description |\n|---|---|---|---|---|\n",
                 0) == 0);
  for (const auto& key : k_all_keys) {
    CAPTURE(key);
    CHECK(md.find("| `" + key + "` |") != std::string::npos);
  }
  CHECK(md.find("| `databases.<name>` |") != std::string::npos);
  CHECK(md.find("| `peers.<id>` |") != std::string::npos);
  CHECK(md.find("| `cache.rules` |") != std::string::npos);
  // One header, one rule, one row per key, one each for [[cache.rules]], [databases], [peers].
  CHECK(std::count(md.begin(), md.end(), '\n') == static_cast<long>(k_all_keys.size()) + 5);
  CHECK(md.find("| `listen.port` | integer, 1 to 65535 | `6432` | restart |") != std::string::npos);
  CHECK(md.find("| `pool.server_reset_query` | string | `\"DISCARD ALL\"` | applied |") !=
        std::string::npos);
  CHECK(md.find("| `pool.query_wait_timeout_ms` | integer ms, 1 to 86400000, or a duration "
                "(`\"30s\"`) | `120000` | applied |") != std::string::npos);
  CHECK(md.find("| `cache.max_size` | integer bytes, 1048576 to 1099511627776, or a size "
                "(`\"512MiB\"`) | `268435456` | restart |") != std::string::npos);
  CHECK(
      md.find("| `server.tls` | `disable`, `prefer`, `require`, `verify-full` | `\"prefer\"` |") !=
      std::string::npos);
  CHECK(
      md.find("| `pool.mode` | `session`, `transaction` (not yet: `statement`) | `\"transaction\"` |") !=
      std::string::npos);
  CHECK(
      md.find("| `log.level` | `trace`, `debug`, `info`, `warn`, `error`, `off` | `\"info\"` |") !=
      std::string::npos);
}

TEST_CASE("pgstash.example.toml is valid and shows every key") {
  load_result r = load_file(PGSTASH_EXAMPLE_CONFIG);
  CHECK(r.errors.empty());
  std::ifstream in(PGSTASH_EXAMPLE_CONFIG);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& key : k_all_keys) {
    CAPTURE(key);
    const std::string section = "\n[" + key.substr(0, key.find('.')) + "]\n";
    const std::string name = key.substr(key.find('.') + 1);
    const std::size_t at = text.find(section);
    REQUIRE(at != std::string::npos);
    const std::size_t end = text.find("\n[", at + 1);
    const std::string body = text.substr(at, end == std::string::npos ? end : end - at);
    CHECK((body.find("\n" + name + " = ") != std::string::npos ||
           body.find("\n# " + name + " = ") != std::string::npos));
  }
}

TEST_CASE("the README's config reference is the one the key table renders") {
  std::ifstream in(PGSTASH_README);
  REQUIRE(in);
  const std::string readme((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string md = reference_markdown();
  INFO("paste this into README.md's Reference section:\n" << md);
  CHECK(readme.find(md) != std::string::npos);
}
