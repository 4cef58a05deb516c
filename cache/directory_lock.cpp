#include "cache/directory_lock.hpp"

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace pgstash::cache {

directory_lock directory_lock::acquire(const std::string& file) {
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + file + ": " + std::strerror(errno));
  directory_lock lock(fd);
  // flock, not fcntl locks: those belong to the process, so a second store
  // in this process would not see the first one's.
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      throw std::runtime_error("the directory is in use by another cache (" + file + " is locked)");
    }
    throw std::runtime_error("cannot lock " + file + ": " + std::strerror(errno));
  }
  return lock;
}

directory_lock::directory_lock(directory_lock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

directory_lock& directory_lock::operator=(directory_lock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

directory_lock::~directory_lock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace pgstash::cache
