// A small RAII layer over LMDB's C API, in the spirit of lmdbxx but ours:
// move-only env, txn and cursor, a txn whose destructor aborts, a commit()
// that gives up the handle first, string_view keys and values, and an
// exception that names the failing C function.
//
// Only the calls the result store makes are wrapped. Expected outcomes are
// return values (get() on an absent key is false); real failures (map full,
// I/O, reader table full) throw lmdb::error.
//
// LMDB's rules apply: a write txn belongs to the thread that began it; a
// read txn of an env opened with MDB_NOTLS may move between threads but is
// used by one at a time; values returned by get() and cursors point into
// the map and are valid only until their txn ends or is reset.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

#include <lmdb.h>

namespace pgstash::cache::lmdb {

// An LMDB call failed. what() is "<function>: <mdb_strerror(code)>".
class error : public std::runtime_error {
 public:
  error(const char* function, int code);
  int code() const { return code_; }
  bool map_full() const { return code_ == MDB_MAP_FULL; }

 private:
  int code_;
};

// Throws error(function, rc) unless rc is MDB_SUCCESS.
void check(const char* function, int rc);

class env {
 public:
  env() = default;
  // Opens (creating if needed) the environment in the existing directory
  // `dir`, files mode 0600, with room for `max_dbs` named databases.
  // `flags` are mdb_env_open's.
  static env open(const std::string& dir, std::size_t map_size, unsigned max_readers,
                  unsigned max_dbs, unsigned flags);

  env(env&& other) noexcept;
  env& operator=(env&& other) noexcept;
  env(const env&) = delete;
  env& operator=(const env&) = delete;
  // REQUIRES: every txn of this env has ended.
  ~env();

  MDB_env* handle() const { return handle_; }

 private:
  explicit env(MDB_env* handle) : handle_(handle) {}
  MDB_env* handle_ = nullptr;
};

class txn {
 public:
  txn() = default;
  // `flags`: 0 for a write txn, MDB_RDONLY for a read txn.
  static txn begin(const env& e, unsigned flags);

  txn(txn&& other) noexcept;
  txn& operator=(txn&& other) noexcept;
  txn(const txn&) = delete;
  txn& operator=(const txn&) = delete;
  ~txn();  // aborts a txn that was neither committed nor aborted

  // Ends the txn either way: on failure it is freed and error thrown.
  void commit();
  void abort() noexcept;
  // Read txns only: release the snapshot but keep the handle and its
  // reader slot, so renew() is cheap. REQUIRES: no open cursor.
  void reset() noexcept;
  void renew();

  explicit operator bool() const { return handle_ != nullptr; }
  MDB_txn* handle() const { return handle_; }

 private:
  explicit txn(MDB_txn* handle) : handle_(handle) {}
  MDB_txn* handle_ = nullptr;
};

// A named database of the environment. Plain handle: LMDB frees it with
// the env.
class dbi {
 public:
  dbi() = default;
  // REQUIRES: `t` is a write txn when `flags` has MDB_CREATE; commit it
  // before using the handle in other txns.
  static dbi open(const txn& t, const char* name, unsigned flags);

  // Sets `value` to the value stored under `key`; false if there is none.
  bool get(const txn& t, std::string_view key, std::string_view& value) const;
  // Stores `size` uninitialized bytes under `key` (replacing any value)
  // and returns where to write them, valid until the next write in `t`.
  char* reserve(const txn& t, std::string_view key, std::size_t size) const;
  // Deletes `key`; false if it was absent.
  bool del(const txn& t, std::string_view key) const;
  // Deletes every key; the database stays open.
  void clear(const txn& t) const;

  MDB_dbi handle() const { return handle_; }

 private:
  explicit dbi(MDB_dbi handle) : handle_(handle) {}
  MDB_dbi handle_ = 0;
};

class cursor {
 public:
  // REQUIRES: `t` outlives the cursor (close it before reset or commit).
  static cursor open(const txn& t, const dbi& d);

  cursor(cursor&& other) noexcept;
  cursor& operator=(cursor&&) = delete;
  cursor(const cursor&) = delete;
  cursor& operator=(const cursor&) = delete;
  ~cursor();

  // mdb_cursor_get: `key` is read for MDB_SET_RANGE and set to the entry
  // found, with `value`; false when there is none (end of the database).
  bool get(std::string_view& key, std::string_view& value, MDB_cursor_op op);

 private:
  explicit cursor(MDB_cursor* handle) : handle_(handle) {}
  MDB_cursor* handle_ = nullptr;
};

}  // namespace pgstash::cache::lmdb
