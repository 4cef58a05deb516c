#include "pool/server_state.hpp"

namespace pgstash::pool {

void statement_lru::touch(const std::string& name) {
  auto it = index_.at(name);
  order_.splice(order_.begin(), order_, it);
}

std::optional<std::string> statement_lru::insert(const std::string& name) {
  if (contains(name)) {
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
  index_[name] = order_.begin();
  return evicted;
}

void statement_lru::erase(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) return;
  order_.erase(it->second);
  index_.erase(it);
}

void statement_lru::clear() {
  order_.clear();
  index_.clear();
}

}  // namespace pgstash::pool
