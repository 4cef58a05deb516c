#include "cache/lmdb_env.hpp"

#include <utility>

namespace pgstash::cache::lmdb {

namespace {

MDB_val to_val(std::string_view s) { return {s.size(), const_cast<char*>(s.data())}; }

std::string_view to_view(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

}  // namespace

error::error(const char* function, int code)
    : std::runtime_error(std::string(function) + ": " + mdb_strerror(code)), code_(code) {}

void check(const char* function, int rc) {
  if (rc != MDB_SUCCESS) throw error(function, rc);
}

env env::open(const std::string& dir, std::size_t map_size, unsigned max_readers, unsigned max_dbs,
              unsigned flags) {
  MDB_env* raw = nullptr;
  check("mdb_env_create", mdb_env_create(&raw));
  env e(raw);  // closes `raw` if a step below throws
  check("mdb_env_set_mapsize", mdb_env_set_mapsize(raw, map_size));
  check("mdb_env_set_maxreaders", mdb_env_set_maxreaders(raw, max_readers));
  check("mdb_env_set_maxdbs", mdb_env_set_maxdbs(raw, max_dbs));
  check("mdb_env_open", mdb_env_open(raw, dir.c_str(), flags, 0600));
  return e;
}

env::env(env&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}

env& env::operator=(env&& other) noexcept {
  if (this != &other) {
    if (handle_) mdb_env_close(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

env::~env() {
  if (handle_) mdb_env_close(handle_);
}

txn txn::begin(const env& e, unsigned flags) {
  MDB_txn* raw = nullptr;
  check("mdb_txn_begin", mdb_txn_begin(e.handle(), nullptr, flags, &raw));
  return txn(raw);
}

txn::txn(txn&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}

txn& txn::operator=(txn&& other) noexcept {
  if (this != &other) {
    abort();
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

txn::~txn() { abort(); }

void txn::commit() {
  // mdb_txn_commit frees the txn even when it fails.
  check("mdb_txn_commit", mdb_txn_commit(std::exchange(handle_, nullptr)));
}

void txn::abort() noexcept {
  if (handle_) mdb_txn_abort(std::exchange(handle_, nullptr));
}

void txn::reset() noexcept { mdb_txn_reset(handle_); }

void txn::renew() { check("mdb_txn_renew", mdb_txn_renew(handle_)); }

dbi dbi::open(const txn& t, const char* name, unsigned flags) {
  MDB_dbi raw = 0;
  check("mdb_dbi_open", mdb_dbi_open(t.handle(), name, flags, &raw));
  return dbi(raw);
}

bool dbi::get(const txn& t, std::string_view key, std::string_view& value) const {
  MDB_val k = to_val(key);
  MDB_val v{};
  const int rc = mdb_get(t.handle(), handle_, &k, &v);
  if (rc == MDB_NOTFOUND) return false;
  check("mdb_get", rc);
  value = to_view(v);
  return true;
}

char* dbi::reserve(const txn& t, std::string_view key, std::size_t size) const {
  MDB_val k = to_val(key);
  MDB_val v{size, nullptr};
  check("mdb_put", mdb_put(t.handle(), handle_, &k, &v, MDB_RESERVE));
  return static_cast<char*>(v.mv_data);
}

bool dbi::del(const txn& t, std::string_view key) const {
  MDB_val k = to_val(key);
  const int rc = mdb_del(t.handle(), handle_, &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  check("mdb_del", rc);
  return true;
}

void dbi::clear(const txn& t) const { check("mdb_drop", mdb_drop(t.handle(), handle_, 0)); }

cursor cursor::open(const txn& t, const dbi& d) {
  MDB_cursor* raw = nullptr;
  check("mdb_cursor_open", mdb_cursor_open(t.handle(), d.handle(), &raw));
  return cursor(raw);
}

cursor::cursor(cursor&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}

cursor::~cursor() {
  if (handle_) mdb_cursor_close(handle_);
}

bool cursor::get(std::string_view& key, std::string_view& value, MDB_cursor_op op) {
  MDB_val k = to_val(key);
  MDB_val v{};
  const int rc = mdb_cursor_get(handle_, &k, &v, op);
  if (rc == MDB_NOTFOUND) return false;
  check("mdb_cursor_get", rc);
  key = to_view(k);
  value = to_view(v);
  return true;
}

}  // namespace pgstash::cache::lmdb
