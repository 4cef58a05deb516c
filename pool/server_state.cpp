#include "pool/server_state.hpp"

namespace pgstash::pool {

std::optional<std::uint64_t> statement_lru::version(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return std::nullopt;
  return it->second.version;
}

void statement_lru::touch(const std::string& name) {
  order_.splice(order_.begin(), order_, index_.at(name).position);
}

std::optional<std::string> statement_lru::insert(const std::string& name, std::uint64_t version) {
  if (auto it = index_.find(name); it != index_.end()) {
    it->second.version = version;
    touch(name);
    return std::nullopt;
  }
  std::optional<std::string> evicted;
  if (index_.size() >= capacity_ && !order_.empty()) {
    evicted = order_.back();
    index_.erase(order_.back());
    order_.pop_back();
  }
  order_.push_front(name);
  index_[name] = {order_.begin(), version};
  return evicted;
}

void statement_lru::erase(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) return;
  order_.erase(it->second.position);
  index_.erase(it);
}

void statement_lru::clear() {
  order_.clear();
  index_.clear();
}

}  // namespace pgstash::pool
