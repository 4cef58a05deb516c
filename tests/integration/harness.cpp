// The integration harness, plus the doctest main of integration_tests.
//
// Why raw poll() everywhere: the point of these tests is to catch a proxy
// that misbehaves, and the commonest misbehaviour of a proxy is to go quiet.
// Every wait has a deadline, so that shows up as a failed check, not as a
// ctest timeout with no diagnosis.
#define DOCTEST_CONFIG_IMPLEMENT
#include "harness.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <cctype>
#include <random>
#include <sstream>

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pgstash::itest {

namespace {

// Failed assertions so far in this process, counted by the listener below,
// so that a pgstash_instance can tell whether its test failed while it ran.
std::atomic<int> g_failures{0};

struct failure_counter : doctest::IReporter {
  explicit failure_counter(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override { ++g_failures; }
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData& ad) override {
    if (ad.m_failed) ++g_failures;
  }
  void log_message(const doctest::MessageData& md) override {
    if (md.m_severity & (doctest::assertType::is_check | doctest::assertType::is_require))
      ++g_failures;
  }
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("failure_counter", 1, failure_counter);

int remaining_ms(clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
}

// poll() one fd for `events` until `deadline`; the revents, 0 on timeout.
short poll_fd(int fd, short events, clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return p.revents;
    if (n == 0) return 0;
    if (errno != EINTR) throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string tail_lines(const std::string& text, int n) {
  std::size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;  // a final newline ends the last line
  for (int i = 0; i < n; ++i) {
    if (pos == 0) return text;
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos + 1);
}

// "FATAL:  28P01: password ..." (PQERRORS_VERBOSE) -> "28P01".
std::string sqlstate_from_message(const std::string& message) {
  for (const char* severity : {"FATAL:  ", "ERROR:  ", "PANIC:  "}) {
    for (std::size_t at = message.find(severity); at != std::string::npos;
         at = message.find(severity, at + 1)) {
      const std::size_t code = at + std::strlen(severity);
      if (message.size() < code + 7 || message.compare(code + 5, 2, ": ") != 0) continue;
      const std::string candidate = message.substr(code, 5);
      if (std::all_of(candidate.begin(), candidate.end(),
                      [](char c) { return std::isdigit(static_cast<unsigned char>(c)) || std::isupper(static_cast<unsigned char>(c)); }))
        return candidate;
    }
  }
  return {};
}

// The "PORT PID" line pgstash_instance.sh prints, or nullopt.
std::optional<std::pair<int, pid_t>> port_and_pid(const std::string& output) {
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    long port = 0;
    long pid = 0;
    std::string rest;
    if (words >> port >> pid && !(words >> rest) && port > 0 && pid > 0)
      return std::make_pair(static_cast<int>(port), static_cast<pid_t>(pid));
  }
  return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------- environment

std::string require_env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v)
    throw std::runtime_error(std::string(name) +
                             " is not set: run the integration tests through ctest");
  return v;
}

const std::map<std::string, std::string>& cluster_env() {
  static const std::map<std::string, std::string> env = [] {
    const std::string path = require_env("PGSTASH_TEST_CLUSTER_DIR") + "/env";
    std::ifstream in(path);
    if (!in) throw std::runtime_error(path + " not found: is the postgres fixture running?");
    std::map<std::string, std::string> out;
    std::string line;
    while (std::getline(in, line)) {
      auto eq = line.find('=');
      if (eq == std::string::npos || eq == 0) continue;
      out[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return out;
  }();
  return env;
}

std::string cluster_value(const std::string& key) {
  auto it = cluster_env().find(key);
  if (it == cluster_env().end()) throw std::runtime_error("cluster env has no " + key);
  return it->second;
}

std::string cluster_server_cert() { return cluster_value("PGSTASH_PG_TMPDIR") + "/ssl/server.crt"; }
std::string cluster_server_key() { return cluster_value("PGSTASH_PG_TMPDIR") + "/ssl/server.key"; }

std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string unique_suffix() {
  static std::mt19937_64 rng(std::random_device{}() ^
                             static_cast<std::uint64_t>(clock::now().time_since_epoch().count()));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(buf, 10);
}

// ---------------------------------------------------------------- processes

command_result run_command(const std::vector<std::string>& argv, milliseconds timeout) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(out[1]);
  command_result r;
  const auto deadline = clock::now() + timeout;
  char buf[4096];
  for (;;) {
    short ev = poll_fd(out[0], POLLIN, deadline);
    if (ev == 0) {
      r.timed_out = true;
      ::kill(child, SIGKILL);
      break;
    }
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n > 0) {
      r.output.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!r.timed_out && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

temp_dir::temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/pgstash-it.XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  if (keep_ || std::getenv("PGSTASH_KEEP_WORKDIR")) {
    std::cerr << "kept " << path_ << "\n";
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string temp_dir::write_file(const std::string& name, std::string_view content) const {
  std::string path = path_ + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
  return path;
}

pgstash_instance::pgstash_instance(const std::vector<std::string>& extras)
    : failures_at_start_(g_failures.load()) {
  std::vector<std::string> argv{
      "/bin/bash", require_env("PGSTASH_SOURCE_DIR") + "/tests/lib/pgstash_instance.sh", "start",
      work_.path()};
  argv.insert(argv.end(), extras.begin(), extras.end());
  command_result r = run_command(argv, milliseconds(60000));
  auto started = port_and_pid(r.output);
  if (r.exit_code != 0 || !started) {
    work_.keep();
    throw std::runtime_error("pgstash_instance.sh start failed (exit " +
                             std::to_string(r.exit_code) + "):\n" + r.output);
  }
  port_ = started->first;
  pid_ = started->second;
}

pgstash_instance::~pgstash_instance() {
  const bool failed = g_failures.load() > failures_at_start_ || std::uncaught_exceptions() > 0;
  if (failed) {
    work_.keep();
    try {
      std::cerr << "---- pgstash log (" << workdir() << "/pgstash.log), last 60 lines ----\n"
                << tail_lines(log(), 60) << "---- end of pgstash log ----\n";
    } catch (const std::exception& e) {
      std::cerr << "cannot show the pgstash log: " << e.what() << "\n";
    }
  }
  command_result r;
  try {
    r = run_command(
        {"/bin/bash", require_env("PGSTASH_SOURCE_DIR") + "/tests/lib/pgstash_instance.sh", "stop",
         work_.path()},
        milliseconds(30000));
  } catch (const std::exception& e) {
    std::cerr << "pgstash_instance.sh stop: " << e.what() << "\n";
    return;
  }
  if (!r.output.empty()) std::cerr << r.output;
  if (r.exit_code != 0 && std::uncaught_exceptions() == 0) {
    work_.keep();
    FAIL_CHECK("pgstash_instance.sh stop failed (exit " << r.exit_code << ", sanitizer report?):\n"
                                                        << r.output);
  }
}

long pgstash_instance::rss_kb() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

bool pgstash_instance::alive() const {
  if (pid_ <= 0 || ::kill(pid_, 0) != 0) return false;
  std::string stat = read_text("/proc/" + std::to_string(pid_) + "/stat");
  auto close_paren = stat.rfind(") ");
  return close_paren != std::string::npos && close_paren + 2 < stat.size() &&
         stat[close_paren + 2] != 'Z';
}

std::string pgstash_instance::log() const { return read_text(workdir() + "/pgstash.log"); }

std::string pgstash_instance::conninfo(std::string_view extra) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) +
         " dbname=pgstash_test user=postgres sslmode=disable gssencmode=disable " +
         std::string(extra);
}

std::string direct_conninfo(std::string_view extra) {
  return "host=" + cluster_value("PGSTASH_PG_HOST") + " port=" + cluster_value("PGSTASH_PG_PORT") +
         " dbname=pgstash_test user=postgres sslmode=disable gssencmode=disable " +
         std::string(extra);
}

// ---------------------------------------------------------------- libpq

pg_conn::pg_conn(const std::string& conninfo, milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  conn_ = PQconnectStart(conninfo.c_str());
  if (!conn_) throw pg_error("", "PQconnectStart: out of memory");
  PQsetErrorVerbosity(conn_, PQERRORS_VERBOSE);
  auto fail = [this](std::string message) {
    PQfinish(conn_);
    conn_ = nullptr;
    throw pg_error(sqlstate_from_message(message), message);
  };
  if (PQstatus(conn_) == CONNECTION_BAD) fail(PQerrorMessage(conn_));
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  for (;;) {
    if (st == PGRES_POLLING_OK) break;
    if (st == PGRES_POLLING_FAILED) fail(PQerrorMessage(conn_));
    short want = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    if (poll_fd(PQsocket(conn_), want, deadline) == 0)
      fail("timed out after " + std::to_string(timeout.count()) + " ms while connecting (" +
           PQerrorMessage(conn_) + ")");
    st = PQconnectPoll(conn_);
  }
  PQsetErrorVerbosity(conn_, PQERRORS_DEFAULT);
}

pg_conn::~pg_conn() { finish(); }

void pg_conn::finish() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
}

void pg_conn::kill_socket() {
  if (!conn_) return;
  ::shutdown(PQsocket(conn_), SHUT_RDWR);
  finish();
}

pg_error pg_conn::connect_error(const std::string& conninfo, milliseconds timeout) {
  try {
    pg_conn c(conninfo, timeout);
  } catch (const pg_error& e) {
    return e;
  }
  throw std::runtime_error("connection succeeded, but it was expected to fail: " + conninfo);
}

bool pg_conn::wait_input(clock::time_point deadline) {
  if (poll_fd(PQsocket(conn_), POLLIN, deadline) == 0) return false;
  PQconsumeInput(conn_);  // a failure shows up as an error result
  return true;
}

result_ptr pg_conn::next_result(clock::time_point deadline) {
  while (PQisBusy(conn_)) {
    if (PQstatus(conn_) == CONNECTION_BAD) break;
    if (poll_fd(PQsocket(conn_), POLLIN, deadline) == 0)
      throw pg_error("", "timed out waiting for a query result");
    if (!PQconsumeInput(conn_)) break;
  }
  return result_ptr(PQgetResult(conn_));
}

std::vector<result_ptr> pg_conn::exec_all(const std::string& sql, milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  if (!PQsendQuery(conn_, sql.c_str())) throw pg_error("", PQerrorMessage(conn_));
  std::vector<result_ptr> out;
  while (result_ptr r = next_result(deadline)) {
    ExecStatusType st = PQresultStatus(r.get());
    out.push_back(std::move(r));
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
      throw pg_error("", "exec_all does not do COPY: " + sql);
  }
  return out;
}

std::string pg_conn::exec(const std::string& sql, milliseconds timeout) {
  std::vector<result_ptr> results = exec_all(sql, timeout);
  std::string value;
  for (const auto& r : results) {
    ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
      const char* msg = PQresultErrorMessage(r.get());
      throw pg_error(sqlstate_of(r.get()), msg && *msg ? msg : PQerrorMessage(conn_));
    }
    if (PQntuples(r.get()) > 0 && PQnfields(r.get()) > 0)
      value = PQgetisnull(r.get(), 0, 0) ? "<NULL>" : PQgetvalue(r.get(), 0, 0);
  }
  return value;
}

std::string sqlstate_of(const PGresult* r) {
  const char* s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return s ? s : "";
}

// ---------------------------------------------------------------- raw sockets

std::map<char, std::string> parse_error_fields(std::string_view body) {
  std::map<char, std::string> out;
  std::size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    char code = body[pos++];
    std::size_t end = body.find('\0', pos);
    if (end == std::string_view::npos) break;
    out[code] = std::string(body.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

std::string be32(std::uint32_t v) {
  std::string s(4, '\0');
  s[0] = static_cast<char>(v >> 24);
  s[1] = static_cast<char>(v >> 16);
  s[2] = static_cast<char>(v >> 8);
  s[3] = static_cast<char>(v);
  return s;
}

std::string startup_packet(const std::vector<std::pair<std::string, std::string>>& params,
                           std::uint32_t protocol) {
  std::string body = be32(protocol);
  for (const auto& [k, v] : params) {
    body += k;
    body += '\0';
    body += v;
    body += '\0';
  }
  body += '\0';
  return be32(static_cast<std::uint32_t>(body.size() + 4)) + body;
}

std::string ssl_request() { return be32(8) + be32(80877103); }

std::string frame(char tag, std::string_view body) {
  return std::string(1, tag) + be32(static_cast<std::uint32_t>(body.size() + 4)) +
         std::string(body);
}

std::string be16(std::uint16_t v) {
  return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
}
std::string cstr(std::string_view s) { return std::string(s) + '\0'; }

std::string query_frame(std::string_view sql) { return frame('Q', cstr(sql)); }
std::string parse_msg(std::string_view name, std::string_view sql) {
  return frame('P', cstr(name) + cstr(sql) + be16(0));
}
std::string bind_msg(std::string_view portal, std::string_view statement) {
  return frame('B', cstr(portal) + cstr(statement) + be16(0) + be16(0) + be16(0));
}
std::string execute_msg(std::string_view portal) { return frame('E', cstr(portal) + be32(0)); }
std::string close_msg(char what, std::string_view name) {
  return frame('C', std::string(1, what) + cstr(name));
}
std::string sync_msg() { return frame('S', ""); }

raw_conn::raw_conn(int port, milliseconds timeout) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error("socket failed");
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      int e = errno;
      ::close(fd_);
      throw std::runtime_error(std::string("connect: ") + std::strerror(e));
    }
    short ev = poll_fd(fd_, POLLOUT, clock::now() + timeout);
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (ev == 0 || err != 0) {
      ::close(fd_);
      throw std::runtime_error("connect to port " + std::to_string(port) +
                               " failed: " + (ev == 0 ? "timeout" : std::strerror(err)));
    }
  }
}

raw_conn::~raw_conn() { close(); }

void raw_conn::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool raw_conn::send(std::string_view bytes, milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      short ev = poll_fd(fd_, POLLOUT, deadline);
      if (ev == 0) return false;
      if (ev & (POLLERR | POLLHUP)) {
        closed_ = true;
        return false;
      }
      continue;
    }
    closed_ = true;
    return false;
  }
  return true;
}

std::string raw_conn::read_some(milliseconds timeout) {
  if (!pending_.empty()) return std::exchange(pending_, {});
  return recv_some(timeout);
}

std::string raw_conn::recv_some(milliseconds timeout) {
  if (closed_) return {};
  short ev = poll_fd(fd_, POLLIN, clock::now() + timeout);
  if (ev == 0) return {};
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) return std::string(buf, static_cast<std::size_t>(n));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return {};
    closed_ = true;  // EOF or ECONNRESET
    return {};
  }
}

std::optional<std::string> raw_conn::read_exact(std::size_t n, milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  while (pending_.size() < n) {
    if (closed_) return std::nullopt;
    std::string more = recv_some(milliseconds(remaining_ms(deadline)));
    if (more.empty()) {
      if (closed_ || clock::now() >= deadline) return std::nullopt;
      continue;
    }
    pending_ += more;
  }
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

std::optional<raw_message> raw_conn::read_message(milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  auto header = read_exact(5, timeout);
  if (!header) return std::nullopt;
  const auto* h = reinterpret_cast<const unsigned char*>(header->data());
  std::uint32_t len = (std::uint32_t{h[1]} << 24) | (std::uint32_t{h[2]} << 16) |
                      (std::uint32_t{h[3]} << 8) | std::uint32_t{h[4]};
  if (len < 4 || len > (64u << 20))
    throw std::runtime_error("pgstash sent a message with tag '" + std::string(1, (*header)[0]) +
                             "' and bad length " + std::to_string(len));
  auto body = read_exact(len - 4, milliseconds(remaining_ms(deadline)));
  if (!body) return std::nullopt;
  return raw_message{(*header)[0], std::move(*body)};
}

bool raw_conn::wait_closed(milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  pending_.clear();
  while (!closed_) {
    if (clock::now() >= deadline) return false;
    recv_some(milliseconds(remaining_ms(deadline)));
  }
  return true;
}

std::vector<raw_message> raw_conn::read_until_ready(milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  std::vector<raw_message> out;
  for (;;) {
    auto m = read_message(milliseconds(remaining_ms(deadline)));
    if (!m)
      throw std::runtime_error(closed_ ? "connection closed before ReadyForQuery"
                                       : "timed out waiting for ReadyForQuery");
    if (m->tag == 'E') {
      auto f = parse_error_fields(m->body);
      throw std::runtime_error("ErrorResponse " + f['C'] + ": " + f['M']);
    }
    if (m->tag == 'R' && (m->body.size() < 4 || m->body.substr(0, 4) != be32(0)))
      throw std::runtime_error("unexpected authentication request (trust expected)");
    out.push_back(std::move(*m));
    if (out.back().tag == 'Z') return out;
  }
}

void raw_conn::login(const std::string& user, const std::string& database) {
  if (!send(startup_packet({{"user", user}, {"database", database}})))
    throw std::runtime_error("could not send the startup packet");
  read_until_ready();
}

std::string refusal::sqlstate() const {
  if (!first || first->tag != 'E') return {};
  return parse_error_fields(first->body)['C'];
}

refusal read_refusal(raw_conn& c, milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  refusal r;
  r.first = c.read_message(timeout);
  r.closed = c.wait_closed(milliseconds(remaining_ms(deadline)));
  return r;
}

void sleep_for(milliseconds d) {
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(d.count() / 1000);
  ts.tv_nsec = static_cast<long>(d.count() % 1000) * 1000 * 1000;
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int listen_loopback(int& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, 16) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error(std::string("listen on loopback: ") + std::strerror(errno));
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port = ntohs(addr.sin_port);
  return fd;
}

slow_relay::slow_relay(int target_port, milliseconds delay)
    : target_port_(target_port), delay_(delay) {
  listen_fd_ = listen_loopback(port_);
  if (::pipe2(stop_pipe_, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  acceptor_ = std::thread([this] { accept_loop(); });
}

slow_relay::~slow_relay() {
  ::close(stop_pipe_[1]);  // wakes every poll below
  acceptor_.join();        // after which nothing adds to relays_
  for (std::thread& t : relays_) t.join();
  ::close(stop_pipe_[0]);
  ::close(listen_fd_);
}

void slow_relay::accept_loop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) return;
    if (p[1].revents != 0) return;
    if (p[0].revents == 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    ++connections_;
    relays_.emplace_back([this, fd] { relay(fd); });
  }
}

void slow_relay::relay(int client_fd) {
  pollfd wait_stop{stop_pipe_[0], POLLIN, 0};
  int server_fd = -1;
  if (::poll(&wait_stop, 1, static_cast<int>(delay_.count())) == 0) {
    server_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(target_port_));
    if (::connect(server_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(server_fd);
      server_fd = -1;
    }
  }
  char buf[16384];
  while (server_fd >= 0) {
    pollfd p[3] = {{client_fd, POLLIN, 0}, {server_fd, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    if (::poll(p, 3, -1) < 0 && errno != EINTR) break;
    if (p[2].revents != 0) break;
    bool open = true;
    for (int from = 0; from < 2 && open; ++from) {
      if (p[from].revents == 0) continue;
      const ssize_t n = ::recv(p[from].fd, buf, sizeof buf, 0);
      open = n > 0 && ::send(p[1 - from].fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) == n;
    }
    if (!open) break;
  }
  if (server_fd >= 0) ::close(server_fd);
  ::close(client_fd);
}

int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("bind failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace pgstash::itest

int main(int argc, char** argv) {
  // Writes to a socket pgstash closed must fail with EPIPE, not kill the tests.
  ::signal(SIGPIPE, SIG_IGN);
  doctest::Context context(argc, argv);
  return context.run();
}
