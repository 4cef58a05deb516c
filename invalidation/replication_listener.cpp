#include "invalidation/replication_listener.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include "invalidation/change_stream.hpp"
#include "invalidation/libpq_handles.hpp"
#include "invalidation/replication_slots.hpp"
#include "invalidation/wal_position.hpp"
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace pgstash::invalidation {

using namespace std::chrono_literals;

namespace {

constexpr auto k_retry_down = 1s;
constexpr auto k_retry_unavailable = 30s;
constexpr auto k_poll = 100ms;  // how soon a stop is noticed
constexpr auto k_slow_command = 5s;
// A status update every interval, each asking for an answer: well inside
// wal_sender_timeout (60 s by default), after which the server would end a
// silent stream; and a stream the server has not answered for the
// deadline is taken for dead (hits stop), however healthy the socket looks.
constexpr auto k_status_interval = 2s;
constexpr std::chrono::seconds k_reply_deadline = 6s;
// Strict consistency: a polled position the stream has not reached this
// long after the poll makes the server flush its WAL (at most this often).
constexpr auto k_flush_grace = 20ms;
// Persistent slots: how often a checkpoint is saved when the streams have
// applied something since the last one.
constexpr auto k_checkpoint_interval = 1s;

// Installed per database: every DDL command's transaction carries a logical
// message, which the stream delivers with that transaction.
constexpr const char* k_ddl_function =
    "CREATE OR REPLACE FUNCTION public.pgstash_ddl_message() RETURNS event_trigger "
    "LANGUAGE plpgsql SET search_path = pg_catalog AS $$ BEGIN "
    "PERFORM pg_catalog.pg_logical_emit_message(true, 'pgstash.ddl', tg_tag); END $$";
constexpr const char* k_ddl_trigger =
    "CREATE EVENT TRIGGER pgstash_ddl ON ddl_command_end "
    "EXECUTE FUNCTION public.pgstash_ddl_message()";

// An eventfd that wakes the stream's thread when a hit wants a poll. Shared
// with the waker the stream's status keeps, which may outlive the stream.
struct wake_fd {
  wake_fd() : fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~wake_fd() {
    if (fd >= 0) ::close(fd);
  }
  wake_fd(const wake_fd&) = delete;
  wake_fd& operator=(const wake_fd&) = delete;
  void signal() const {
    if (fd >= 0) ::eventfd_write(fd, 1);
  }
  void drain() const {
    eventfd_t ignored;
    if (fd >= 0) ::eventfd_read(fd, &ignored);
  }
  const int fd;
};

using pq::connection;
using pq::first_line;
using pq::result;

std::string error_of(PGconn* c, const PGresult* r) {
  std::string why = r ? first_line(PQresultErrorMessage(r)) : "";
  if (why.empty()) why = first_line(PQerrorMessage(c));
  return why.empty() ? "the server closed the connection" : why;
}

std::int64_t postgres_clock_us() {
  // PostgreSQL's epoch is 2000-01-01, 946684800 s after the Unix one.
  const auto since_unix = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return since_unix.count() - 946'684'800'000'000;
}

// What a stream that records its progress in checkpoints learns of their
// saving: the position up to which the slot may be confirmed. One per
// incarnation of the stream's proof, so that a late answer for an earlier
// one changes nothing.
struct slot_progress {
  std::atomic<std::uint64_t> saved = 0;
  // A restored position was saved: the slot may be confirmed up to it.
  static std::shared_ptr<slot_progress> at(const std::optional<followed_database>& restored) {
    auto p = std::make_shared<slot_progress>();
    if (restored) p->saved = restored->applied_lsn;
    return p;
  }
  void raise(std::uint64_t lsn) {
    std::uint64_t seen = saved.load();
    while (lsn > seen && !saved.compare_exchange_weak(seen, lsn)) {
    }
  }
};

}  // namespace

// One database's stream and the thread that runs it.
class database_stream {
 public:
  // `persistence` null: temporary slots. `restored`: what the checkpoint
  // the generations came from says of this database.
  database_stream(std::string database, std::string conninfo, const replication_options& options,
                  generations& generations, const replication_listener::ddl_callback& ddl_seen,
                  const slot_persistence* persistence, std::optional<followed_database> restored)
      : database_(std::move(database)),
        conninfo_(std::move(conninfo)),
        options_(options),
        generations_(generations),
        ddl_seen_(ddl_seen),
        persistence_(persistence),
        known_(std::move(restored)),
        progress_(slot_progress::at(known_)),
        poll_wanted_(std::make_shared<wake_fd>()),
        status_(std::make_shared<stream_status>([wake = poll_wanted_] { wake->signal(); })),
        thread_([this] { run(); }) {}

  ~database_stream() {
    stop();
    thread_.join();
  }

  // Asks the thread to end; it notices within k_poll.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
  }

  std::shared_ptr<const stream_status> status() const { return status_; }
  const std::string& conninfo() const { return conninfo_; }

  // Persistent slots: what a checkpoint says of this database (nullopt
  // before anything is known), and where to report that it was saved.
  // Read the position before the generations are snapshotted.
  std::optional<std::pair<followed_database, std::shared_ptr<slot_progress>>> record() {
    std::lock_guard lock(record_mutex_);
    if (!known_) return std::nullopt;
    followed_database r = *known_;
    r.applied_lsn = std::max(r.applied_lsn, applied_.load());
    return std::pair{std::move(r), progress_};
  }

 private:
  // Why a stream ended: the server may be back in a second, or cannot
  // stream for us until someone changes its configuration.
  struct ended {
    bool unavailable;
    std::string why;
  };

  void run() {
    while (!stopping()) {
      const ended e = stream_once();
      if (stopping()) break;
      const bool changed = e.why != last_logged_;
      last_logged_ = e.why;
      if (changed && e.unavailable) {
        spdlog::warn(
            "cache invalidation: writes that bypass pgstash in database \"{}\" cannot be "
            "followed ({}); {}",
            database_, e.why,
            options_.serve_unfollowed ? "cached results are served for at most cache.default_ttl"
            : options_.strict
                ? "strict consistency serves no cached results of it meanwhile"
                : "no cached results are served for it, since cache.default_ttl = 0 would not "
                  "bound them");
      } else if (changed) {
        spdlog::warn(
            "cache invalidation: replication stream of database \"{}\" is down ({}); no cached "
            "results are served for it until it is back",
            database_, e.why);
      }
      if (e.unavailable && options_.serve_unfollowed) {
        // Results cached while it was followed could miss what it would
        // have caught from now on: from here only the TTL bounds them.
        bump_database();
        set_state(stream_state::unavailable);
      } else {
        set_state(stream_state::connecting);
      }
      // Hits waiting for its proof go to the server.
      status_->barrier().reset();
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, e.unavailable ? k_retry_unavailable : k_retry_down,
                     [this] { return stopping_; });
    }
  }

  bool stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

  void set_state(stream_state s) { status_->state_.store(s, std::memory_order_release); }

  // Waits for `c`'s socket to be readable (or writable), at most k_poll;
  // false on a poll error.
  static bool wait_socket(PGconn* c, short events) {
    pollfd p{PQsocket(c), events, 0};
    return ::poll(&p, 1, static_cast<int>(k_poll.count())) >= 0 || errno == EINTR;
  }

  // wait_socket(), also woken by the answer of a position poll in flight
  // and by a hit that wants a poll.
  bool wait_stream(PGconn* c, short events, int position_socket,
                   std::chrono::milliseconds timeout = k_poll) {
    pollfd p[] = {
        {PQsocket(c), events, 0}, {poll_wanted_->fd, POLLIN, 0}, {position_socket, POLLIN, 0}};
    const bool ok = ::poll(p, 3, static_cast<int>(timeout.count())) >= 0 || errno == EINTR;
    if (p[1].revents & POLLIN) poll_wanted_->drain();
    return ok;
  }

  // Runs one command without blocking the thread for good: a stop is
  // noticed while waiting, and a slow answer (a slot waits for the
  // transactions that have written) is said once. Null if stopped or failed
  // to send.
  result exec(PGconn* c, const std::string& sql) {
    if (!PQsendQuery(c, sql.c_str())) return nullptr;
    const auto sent = std::chrono::steady_clock::now();
    bool said = false;
    while (PQisBusy(c)) {
      if (stopping() || !wait_socket(c, POLLIN) || !PQconsumeInput(c)) return nullptr;
      if (!said && std::chrono::steady_clock::now() - sent > k_slow_command) {
        said = true;
        spdlog::warn("cache invalidation: database \"{}\": still waiting for `{:.60}` (a slot waits "
                     "for the transactions open on the server that have written)",
                     database_, sql);
      }
    }
    result last(PQgetResult(c));
    // A command has one result; read to the end so the connection is ready
    // again (a COPY BOTH result ends the loop: it is the stream).
    while (last && PQresultStatus(last.get()) != PGRES_COPY_BOTH) {
      result more(PQgetResult(c));
      if (!more) break;
      last = std::move(more);
    }
    return last;
  }

  ended stream_once() {
    // Keepalives and a user timeout: a peer that vanished without a word
    // is noticed by the kernel too, not only by our reply deadline.
    const char* const keywords[] = {"connect_timeout",  "application_name", "keepalives",
                                    "keepalives_idle",  "keepalives_interval",
                                    "keepalives_count", "tcp_user_timeout", "dbname",
                                    "replication",      nullptr};
    const char* const values[] = {"5", "pgstash invalidation", "1", "5", "2", "3", "10000",
                                  conninfo_.c_str(), "database", nullptr};
    connection conn(PQconnectdbParams(keywords, values, 1));
    if (PQstatus(conn.get()) != CONNECTION_OK) {
      // The server refusing a replication connection it would accept as a
      // normal one is configuration (pg_hba.conf, the REPLICATION
      // attribute), not an outage.
      const std::string why = first_line(PQerrorMessage(conn.get()));
      const char* const normal_keywords[] = {"connect_timeout", "dbname", nullptr};
      const char* const normal_values[] = {"5", conninfo_.c_str(), nullptr};
      connection probe(PQconnectdbParams(normal_keywords, normal_values, 1));
      const bool refused = PQstatus(probe.get()) == CONNECTION_OK &&
                           why.find("max_wal_senders") == std::string::npos;
      return {refused, why};
    }
    return set_up_and_stream(conn.get());
  }

  std::string identifier(PGconn* c, const std::string& s) {
    char* q = PQescapeIdentifier(c, s.c_str(), s.size());
    std::string out = q ? q : "\"\"";
    PQfreemem(q);
    return out;
  }

  // The DDL event trigger's identity (its oid and xmin: a drop, a
  // re-creation or an ALTER changes them), once it is there and enabled
  // ALWAYS (sessions with session_replication_role = replica skip the
  // others): installed if it is not, if we may; says once when we may not.
  // Empty: no trigger.
  std::string ensure_ddl_trigger(PGconn* c) {
    constexpr const char* k_identity =
        "SELECT oid::text || '/' || xmin::text FROM pg_catalog.pg_event_trigger "
        "WHERE evtname = 'pgstash_ddl' AND evtenabled = 'A'";
    const auto identity = [&]() -> std::string {
      result r = exec(c, k_identity);
      if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) return "";
      return PQgetvalue(r.get(), 0, 0);
    };
    if (std::string present = identity(); !present.empty()) return present;
    const char* const steps[] = {
        "BEGIN", k_ddl_function, "DROP EVENT TRIGGER IF EXISTS pgstash_ddl", k_ddl_trigger,
        "ALTER EVENT TRIGGER pgstash_ddl ENABLE ALWAYS"};
    std::string why;
    for (const char* step : steps) {
      result done = exec(c, step);
      if (!done || PQresultStatus(done.get()) != PGRES_COMMAND_OK) {
        why = error_of(c, done.get());
        break;
      }
    }
    result end = exec(c, why.empty() ? "COMMIT" : "ROLLBACK");
    if (why.empty()) {
      spdlog::info("cache invalidation: installed event trigger pgstash_ddl in database \"{}\"",
                   database_);
      return identity();
    }
    if (!ddl_warned_) {
      ddl_warned_ = true;
      spdlog::warn(
          "cache invalidation: could not install event trigger pgstash_ddl in database \"{}\" "
          "({}); DDL made elsewhere is seen only through cache.default_ttl",
          database_, why);
    }
    return "";
  }

  ended set_up_and_stream(PGconn* c) {
    result oid = exec(c, "SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()");
    if (!oid || PQresultStatus(oid.get()) != PGRES_TUPLES_OK || PQntuples(oid.get()) != 1)
      return {false, error_of(c, oid.get())};
    report_abandoned_slots();
    const std::string ddl_trigger = ensure_ddl_trigger(c);
    if (ddl_trigger.empty() && options_.strict)
      return {true,
              "strict consistency needs event trigger pgstash_ddl, or DDL made elsewhere "
              "would go unseen (a superuser lets pgstash install it)"};

    const std::string slot = options_.slot + "_" + PQgetvalue(oid.get(), 0, 0);
    // Where the stream must have got to before hits are served (0: at
    // once), and up to where the generations hold what it replays.
    std::uint64_t catch_up_to = 0, already_applied = 0;
    if (persistence_) {
      if (auto e = resume_or_create_slot(c, slot, ddl_trigger, catch_up_to, already_applied))
        return *e;
    } else {
      result made = exec(c, "CREATE_REPLICATION_SLOT " + identifier(c, slot) +
                                " TEMPORARY LOGICAL test_decoding NOEXPORT_SNAPSHOT");
      if (auto e = slot_not_made(c, slot, made.get())) return *e;
      // From here on every commit reaches us; before it, some may not have.
      ddl_seen_(database_);
      bump_database();
    }

    std::optional<wal_position> position;
    if (options_.strict) position.emplace(conninfo_);

    result started = exec(c, "START_REPLICATION SLOT " + identifier(c, slot) +
                                 " LOGICAL 0/0 (\"include-xids\" '0', \"skip-empty-xacts\" '1')");
    if (!started || PQresultStatus(started.get()) != PGRES_COPY_BOTH)
      return {false, error_of(c, started.get())};
    started.reset();
    if (PQsetnonblocking(c, 1) != 0) return {false, error_of(c, nullptr)};
    if (catch_up_to == 0) set_state(stream_state::following);
    spdlog::info("cache invalidation: following database \"{}\" (slot {}{})", database_, slot,
                 catch_up_to ? ", replaying from its position" : "");
    last_logged_.clear();
    return follow(c, position ? &*position : nullptr, catch_up_to, already_applied);
  }

  // Says once per slot of another pgstash (another invalidation.slot)
  // that nothing consumes: if its instance is gone for good, the WAL it
  // holds only grows.
  void report_abandoned_slots() {
    std::vector<replication_slot> slots;
    try {
      slots = list_slots(conninfo_);
    } catch (const std::runtime_error&) {
      return;  // the stream's own connection will say what is wrong
    }
    for (const replication_slot& s : slots) {
      if (s.active || s.temporary || named_by(s.name, options_.slot) ||
          !reported_slots_.insert(s.name).second)
        continue;
      spdlog::warn(
          "cache invalidation: replication slot {} (database \"{}\") has no consumer and holds "
          "{} MB of WAL on the server; if the pgstash that made it is gone, drop it (admin port: "
          "DELETE /api/slots/{})",
          s.name, s.database, s.retained_bytes >> 20, s.name);
    }
  }

  // Why a slot was not made, if it was not.
  std::optional<ended> slot_not_made(PGconn* c, const std::string& slot, const PGresult* made) {
    if (made && PQresultStatus(made) == PGRES_TUPLES_OK) return std::nullopt;
    const char* state = made ? PQresultErrorField(made, PG_DIAG_SQLSTATE) : nullptr;
    const std::string code = state ? state : "";
    // No privilege, or wal_level below logical: nothing a retry in a
    // second changes. Anything else (the name still held by our own
    // previous connection, or by another pgstash with the same
    // invalidation.slot; no free slot) is waited out without hits.
    const bool config = code == "42501" || code == "55000";
    return ended{config, "slot " + slot + ": " + error_of(c, made)};
  }

  // Persistent slots: takes up the slot where it stands if it is the one
  // this database's results were proven against and the DDL trigger
  // `ddl_trigger` is the one that was there then, to tell of DDL made
  // meanwhile (one installed or altered since did not see it all); else
  // invalidates them, and makes the slot if it is missing or lost. A slot
  // taken up is replayed before hits are served (`catch_up_to`), and the
  // commits the generations already hold are not applied again
  // (`already_applied`).
  std::optional<ended> resume_or_create_slot(PGconn* c, const std::string& slot,
                                             const std::string& ddl_trigger,
                                             std::uint64_t& catch_up_to,
                                             std::uint64_t& already_applied) {
    result system = exec(c, "IDENTIFY_SYSTEM");
    if (!system || PQresultStatus(system.get()) != PGRES_TUPLES_OK || PQntuples(system.get()) != 1)
      return ended{false, error_of(c, system.get())};
    // The timeline too: a promoted standby keeps the system identifier and
    // reuses the positions past the point it forked at.
    const std::string system_id =
        std::string(PQgetvalue(system.get(), 0, 0)) + "/" + PQgetvalue(system.get(), 0, 1);
    result found = exec(c,
                        "SELECT slot_type, database = current_database(), plugin, active, "
                        "confirmed_flush_lsn, wal_status FROM pg_catalog.pg_replication_slots "
                        "WHERE slot_name = " +
                            quoted(c, slot));
    if (!found || PQresultStatus(found.get()) != PGRES_TUPLES_OK)
      return ended{false, error_of(c, found.get())};
    std::uint64_t start = 0;
    bool existed = PQntuples(found.get()) == 1;
    bool proven = false;
    if (existed) {
      const auto field = [&](int column) {
        return std::string(PQgetvalue(found.get(), 0, column));
      };
      if (field(0) != "logical" || field(1) != "t" || field(2) != "test_decoding")
        return ended{true,
                     "slot " + slot + " exists and is not a test_decoding slot of this database"};
      if (field(3) == "t") return ended{false, "slot " + slot + " is in use by another connection"};
      if (field(5) == "lost") {
        // The server removed WAL it needed (max_slot_wal_keep_size): it can
        // stream nothing any more.
        spdlog::warn("cache invalidation: slot {} lost the WAL it needed; dropping it", slot);
        result dropped = exec(c, "DROP_REPLICATION_SLOT " + identifier(c, slot));
        if (!dropped || PQresultStatus(dropped.get()) != PGRES_COMMAND_OK)
          return ended{false, "slot " + slot + ": " + error_of(c, dropped.get())};
        existed = false;
      } else {
        const std::optional<std::uint64_t> confirmed = parse_lsn(field(4));
        if (!confirmed) return ended{false, "slot " + slot + " has no position"};
        start = *confirmed;
        std::lock_guard lock(record_mutex_);
        already_applied = known_ ? std::max(known_->applied_lsn, applied_.load()) : 0;
        proven = !ddl_trigger.empty() && known_ && known_->slot == slot &&
                 known_->system_id == system_id && known_->ddl_trigger == ddl_trigger &&
                 start <= already_applied;
      }
    }
    if (!existed) {
      result made = exec(c, "CREATE_REPLICATION_SLOT " + identifier(c, slot) +
                                " LOGICAL test_decoding NOEXPORT_SNAPSHOT");
      if (auto e = slot_not_made(c, slot, made.get())) return e;
      const std::optional<std::uint64_t> consistent = parse_lsn(PQgetvalue(made.get(), 0, 1));
      if (!consistent) return ended{false, "slot " + slot + ": no consistent point"};
      start = *consistent;
    }
    if (!proven) {
      already_applied = 0;
      // Anything committed before the slot's position may have been missed.
      ddl_seen_(database_);
      bump_database();
      std::lock_guard lock(record_mutex_);
      known_ = followed_database{database_, slot, system_id, start, ddl_trigger};
      applied_ = start;
      progress_ = std::make_shared<slot_progress>();
    }
    // A new slot starts at the server's position; one taken up, proven or
    // not, first replays what was written since it was confirmed, and a
    // write made elsewhere meanwhile is seen only once that is done.
    if (!existed) return std::nullopt;
    // A logical message of ours, flushed: every commit acknowledged before
    // it is in the WAL before it, and applied once the stream passes it.
    result marked =
        exec(c,
             "SET synchronous_commit = local; SELECT pg_catalog.pg_logical_emit_message("
             "true, 'pgstash.flush', '')");
    const std::optional<std::uint64_t> mark =
        marked && PQresultStatus(marked.get()) == PGRES_TUPLES_OK
            ? parse_lsn(PQgetvalue(marked.get(), 0, 0))
            : std::nullopt;
    if (!mark || *mark == 0)
      return ended{false, "cannot mark the stream's position: " + error_of(c, marked.get())};
    catch_up_to = *mark;
    return std::nullopt;
  }

  std::string quoted(PGconn* c, const std::string& s) {
    char* q = PQescapeLiteral(c, s.c_str(), s.size());
    std::string out = q ? q : "''";
    PQfreemem(q);
    return out;
  }

  std::shared_ptr<slot_progress> current_progress() {
    std::lock_guard lock(record_mutex_);
    return progress_;
  }

  void bump_database() {
    const std::uint64_t id = database_id(database_);
    generations_.bump({&id, 1});
  }

  void apply(const committed_changes& commit) {
    // The catalog's answers go before the bump, as for DDL through pgstash.
    if (commit.ddl) ddl_seen_(database_);
    std::vector<std::uint64_t> ids;
    ids.reserve(commit.relations.size() + 1);
    for (const auto& name : commit.relations) ids.push_back(relation_id(database_, name));
    if (commit.ddl) ids.push_back(database_id(database_));
    if (!ids.empty()) ids.push_back(any_write_id(database_));
    generations_.bump(ids);
  }

  // Queues a status update confirming `lsn`, asking the server to answer
  // (its keepalive proves the connection alive). Nonblocking: a peer that
  // stops reading leaves it queued, and the reply deadline ends the stream.
  bool send_status(PGconn* c, std::uint64_t lsn) {
    // A persistent slot is confirmed no further than a saved checkpoint's
    // position: a restart replays what comes after it.
    if (persistence_) lsn = std::min(lsn, current_progress()->saved.load());
    confirmed_sent_ = std::max(confirmed_sent_, lsn);
    const std::string update = standby_status_update(lsn, postgres_clock_us(), true);
    return PQputCopyData(c, update.data(), static_cast<int>(update.size())) == 1 &&
           PQflush(c) >= 0;
  }

  // Strict consistency: takes the answer of the position query in flight,
  // if it has come; sends a poll if a hit wants one, or a flush if a polled
  // position stays out of the stream's reach. A polled position the stream
  // has not passed makes it ask the server where it stands.
  std::optional<ended> strict_step(PGconn* c, wal_position& position, std::uint64_t confirmable) {
    wal_barrier& barrier = status_->barrier();
    std::uint64_t polled = 0;
    std::string error;
    switch (position.read(polled, error)) {
      case wal_position::outcome::polled:
        barrier.polled(polled);
        if (barrier.behind_since() && !send_status(c, confirmable))
          return ended{false, error_of(c, nullptr)};
        break;
      case wal_position::outcome::flushed:
        if (!error.empty())
          spdlog::warn(
              "cache invalidation: database \"{}\": cannot make the server flush its WAL "
              "({}); strict hits may wait for PostgreSQL's WAL writer",
              database_, error);
        break;
      case wal_position::outcome::failed:
        strict_failed(error);
        break;
      case wal_position::outcome::waiting:
        break;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!position.busy()) {
      const auto behind = barrier.behind_since();
      if (barrier.poll_due()) {
        barrier.poll_sent(now);
        status_->strict_polls_.fetch_add(1, std::memory_order_relaxed);
        if (!position.send_poll(error)) strict_failed(error);
      } else if (behind && now - *behind > k_flush_grace && now - last_flush_ > k_flush_grace) {
        last_flush_ = now;
        if (position.send_flush(error))
          status_->strict_flushes_.fetch_add(1, std::memory_order_relaxed);
        else if (!error.empty())
          strict_failed(error);
      }
    }
    barrier.expire(now);
    return std::nullopt;
  }

  // How long the stream's thread may wait before strict_step() has work:
  // a flush is due once a polled position has been out of reach for
  // k_flush_grace.
  std::chrono::milliseconds strict_wait(std::chrono::steady_clock::time_point now) const {
    const auto behind = status_->barrier().behind_since();
    if (!behind) return k_poll;
    const auto due = std::max(*behind, last_flush_) + k_flush_grace;
    return std::clamp(std::chrono::ceil<std::chrono::milliseconds>(due - now), 1ms,
                      std::chrono::milliseconds(k_poll));
  }

  // The position connection failed: the hits waiting go to the server; the
  // next poll connects again.
  void strict_failed(const std::string& why) {
    spdlog::warn("cache invalidation: database \"{}\": WAL position connection: {}", database_,
                 why);
    status_->barrier().reset();
  }

  // Publishes what the stream has applied: to hits waiting for strict
  // proof, to checkpoints, and (once it reaches `catch_up_to`) as
  // following.
  void applied(std::uint64_t confirmable, std::uint64_t catch_up_to) {
    status_->barrier().applied(confirmable);
    if (persistence_) {
      std::uint64_t seen = applied_.load();
      while (confirmable > seen && !applied_.compare_exchange_weak(seen, confirmable)) {
      }
    }
    if (catch_up_to != 0 && confirmable >= catch_up_to &&
        status_->state() != stream_state::following) {
      set_state(stream_state::following);
      spdlog::info(
          "cache invalidation: database \"{}\" replayed what was written while it was "
          "not followed; its cached results are served again",
          database_);
    }
  }

  // Commits that end at or before `already_applied` are replayed from a
  // slot confirmed behind what the generations hold: not applied again,
  // which would only drop results captured after them.
  ended follow(PGconn* c, wal_position* position, std::uint64_t catch_up_to,
               std::uint64_t already_applied) {
    change_stream decoder;
    std::uint64_t confirmable = 0;
    confirmed_sent_ = 0;
    auto now = std::chrono::steady_clock::now();
    auto last_status = now, last_heard = now;
    while (!stopping()) {
      char* buf = nullptr;
      const int n = PQgetCopyData(c, &buf, 1);
      if (n > 0) {
        last_heard = std::chrono::steady_clock::now();
        status_->last_heard_.store(last_heard.time_since_epoch().count(), std::memory_order_relaxed);
        const auto ev = decoder.feed({buf, static_cast<std::size_t>(n)});
        PQfreemem(buf);
        if (ev == change_stream::event::malformed) return {false, "unexpected message in the stream"};
        if (ev == change_stream::event::committed) {
          const committed_changes& commit = decoder.last_commit();
          // (A DDL message whose transaction's end is not given is applied
          // again: an invalidation too many, never one too few.)
          if (commit.end_lsn == 0 || commit.end_lsn > already_applied) apply(commit);
          status_->commits_.fetch_add(1, std::memory_order_relaxed);
          confirmable = std::max(confirmable, decoder.last_commit().end_lsn);
          applied(confirmable, catch_up_to);
        } else if (ev == change_stream::event::keepalive) {
          // Outside a transaction's changes the server's position is
          // passed: every commit before it has been sent and applied.
          if (!decoder.in_transaction()) confirmable = std::max(confirmable, decoder.keepalive_end());
          applied(confirmable, catch_up_to);
          if (decoder.reply_requested()) {
            if (!send_status(c, confirmable)) return {false, error_of(c, nullptr)};
            last_status = std::chrono::steady_clock::now();
          }
        }
        continue;
      }
      if (n == -1) {
        result r(PQgetResult(c));
        return {false, error_of(c, r.get())};
      }
      if (n == -2) return {false, error_of(c, nullptr)};
      now = std::chrono::steady_clock::now();
      if (now - last_heard > k_reply_deadline)
        return {false, "no message from the server for " +
                           std::to_string(k_reply_deadline.count()) + " s"};
      // A checkpoint saved since lets the slot move on now: a restart then
      // replays less.
      const bool newly_saved = persistence_ && current_progress()->saved.load() > confirmed_sent_ &&
                               confirmable > confirmed_sent_;
      if (now - last_status >= k_status_interval || newly_saved) {
        if (!send_status(c, confirmable)) return {false, error_of(c, nullptr)};
        last_status = now;
      }
      if (position) {
        if (auto e = strict_step(c, *position, confirmable)) return *e;
      }
      const bool unsent = PQflush(c) == 1;
      if (!wait_stream(c, unsent ? POLLIN | POLLOUT : POLLIN, position ? position->socket() : -1,
                       position ? strict_wait(now) : k_poll))
        return {false, "poll failed"};
      if (PQconsumeInput(c) == 0) return {false, error_of(c, nullptr)};
    }
    return {false, "stopping"};
  }

  const std::string database_;
  const std::string conninfo_;
  const replication_options& options_;
  generations& generations_;
  const replication_listener::ddl_callback& ddl_seen_;
  const slot_persistence* const persistence_;
  std::mutex record_mutex_;
  std::optional<followed_database> known_;   // what this database's results are proven against
  std::shared_ptr<slot_progress> progress_;  // of known_
  std::atomic<std::uint64_t> applied_ = 0;   // by the stream, since known_ was set
  const std::shared_ptr<wake_fd> poll_wanted_;
  std::shared_ptr<stream_status> status_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::string last_logged_;
  bool ddl_warned_ = false;
  std::set<std::string> reported_slots_;
  std::uint64_t confirmed_sent_ = 0;  // the furthest position a status update confirmed
  std::chrono::steady_clock::time_point last_flush_{};
  std::thread thread_;  // last: starts once everything above is built
};

struct replication_listener::state {
  state(replication_options options_in, generations& gens_in, ddl_callback ddl_seen_in,
        std::optional<slot_persistence> persistence_in)
      : options(std::move(options_in)),
        gens(gens_in),
        ddl_seen(std::move(ddl_seen_in)),
        persistence(std::move(persistence_in)) {}

  // Saves a checkpoint if the streams applied something since the last one
  // (or `always`, or the last failed); with `wait`, returns once it is
  // saved or failed, and whether it was saved.
  bool checkpoint(bool always, bool wait) {
    std::unique_lock building(checkpoint_mutex);  // saved in the order built
    stream_checkpoint c;
    std::vector<std::pair<std::shared_ptr<slot_progress>, std::uint64_t>> progress;
    {
      std::lock_guard lock(mutex);
      for (const followed_database& d : persistence->restored) {
        if (!streams.contains(d.database)) c.databases.push_back(d);
      }
      for (const auto& [database, stream] : streams) {
        if (auto r = stream->record()) {
          progress.emplace_back(r->second, r->first.applied_lsn);
          c.databases.push_back(std::move(r->first));
        }
      }
    }
    if (!always && c.databases == last_saved && !*last_failed) return true;
    last_saved = c.databases;
    // After the positions: it holds every bump they count.
    c.generations = gens.snapshot();
    auto saved = std::make_shared<std::promise<bool>>();
    std::future<bool> done = saved->get_future();
    // (The store may answer after the listener is gone: its last save.)
    persistence->save(encode(c),
                      [failed = last_failed, progress = std::move(progress), saved](bool ok) {
                        if (ok) {
                          for (const auto& [p, lsn] : progress) p->raise(lsn);
                        }
                        *failed = !ok;
                        saved->set_value(ok);
                      });
    building.unlock();
    return !wait || done.get();
  }

  void run_checkpoints() {
    std::unique_lock lock(checkpoint_stop_mutex);
    while (!checkpoint_wake.wait_for(lock, k_checkpoint_interval, [&] { return stopping; })) {
      lock.unlock();
      checkpoint(false, false);
      lock.lock();
    }
  }

  replication_options options;
  generations& gens;
  ddl_callback ddl_seen;
  const std::optional<slot_persistence> persistence;
  mutable std::mutex mutex;
  std::map<std::string, std::unique_ptr<database_stream>> streams;

  std::mutex checkpoint_mutex;
  std::vector<followed_database> last_saved;
  const std::shared_ptr<std::atomic<bool>> last_failed = std::make_shared<std::atomic<bool>>(false);
  std::mutex checkpoint_stop_mutex;
  std::condition_variable checkpoint_wake;
  bool stopping = false;
  std::thread checkpointer;  // started once the listener is built
};

replication_listener::replication_listener(replication_options options, generations& generations,
                                           ddl_callback ddl_seen,
                                           std::optional<slot_persistence> persistence)
    : state_(std::make_unique<state>(std::move(options), generations, std::move(ddl_seen),
                                     std::move(persistence))) {
  if (state_->persistence)
    state_->checkpointer = std::thread([s = state_.get()] { s->run_checkpoints(); });
}

replication_listener::~replication_listener() {
  if (state_->checkpointer.joinable()) {
    {
      std::lock_guard lock(state_->checkpoint_stop_mutex);
      state_->stopping = true;
    }
    state_->checkpoint_wake.notify_all();
    state_->checkpointer.join();
  }
  {
    std::lock_guard lock(state_->mutex);
    // All asked first, so that they end together.
    for (auto& [database, stream] : state_->streams) stream->stop();
  }
  // What they applied is kept for the next run (the store saves it before
  // it closes).
  if (state_->persistence) state_->checkpoint(false, false);
  std::lock_guard lock(state_->mutex);
  state_->streams.clear();
}

std::shared_ptr<const stream_status> replication_listener::follow(const std::string& database,
                                                                  const std::string& conninfo) {
  std::lock_guard lock(state_->mutex);
  auto& stream = state_->streams[database];
  if (!stream) {
    std::optional<followed_database> restored;
    const slot_persistence* persistence = state_->persistence ? &*state_->persistence : nullptr;
    if (persistence) {
      for (const followed_database& d : persistence->restored) {
        if (d.database == database) restored = d;
      }
    }
    stream = std::make_unique<database_stream>(database, conninfo, state_->options, state_->gens,
                                               state_->ddl_seen, persistence, std::move(restored));
  }
  return stream->status();
}

std::optional<std::string> replication_listener::conninfo() const {
  std::lock_guard lock(state_->mutex);
  if (state_->streams.empty()) return std::nullopt;
  return state_->streams.begin()->second->conninfo();
}

bool replication_listener::checkpoint_now() {
  return !state_->persistence || state_->checkpoint(true, true);
}

std::vector<std::pair<std::string, std::shared_ptr<const stream_status>>>
replication_listener::streams() const {
  std::lock_guard lock(state_->mutex);
  std::vector<std::pair<std::string, std::shared_ptr<const stream_status>>> out;
  for (const auto& [database, stream] : state_->streams) out.emplace_back(database, stream->status());
  return out;
}

}  // namespace pgstash::invalidation
