// Exclusive use of a cache directory by one store, for the store's
// lifetime: an flock() on a file in it. A store discards and rewrites the
// directory's LMDB files when it opens, and LMDB forbids opening one
// environment twice in a process, so a second store (or a second pgstash)
// pointed at the same directory must fail to open rather than share it.
#pragma once

#include <string>

namespace pgstash::cache {

class directory_lock {
 public:
  directory_lock() = default;
  // Creates `file` if needed and locks it. Throws std::runtime_error with
  // a one-line message if it cannot, or if another holder has it.
  static directory_lock acquire(const std::string& file);

  directory_lock(directory_lock&& other) noexcept;
  directory_lock& operator=(directory_lock&& other) noexcept;
  directory_lock(const directory_lock&) = delete;
  directory_lock& operator=(const directory_lock&) = delete;
  ~directory_lock();  // releases the lock

 private:
  explicit directory_lock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace pgstash::cache
