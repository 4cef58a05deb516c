#include "invalidation/change_stream.hpp"

#include <algorithm>
#include <optional>

namespace pgstash::invalidation {

namespace {

// Big-endian fields read off the front of a message; any read past its end
// marks the reader failed instead of throwing.
class reader {
 public:
  explicit reader(std::string_view data) : data_(data) {}

  std::uint64_t uint(std::size_t bytes) {
    if (data_.size() < bytes) return fail();
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(data_[i]);
    data_.remove_prefix(bytes);
    return v;
  }
  bool ok() const { return ok_; }

 private:
  std::uint64_t fail() {
    ok_ = false;
    data_ = {};
    return 0;
  }
  std::string_view data_;
  bool ok_ = true;
};

// One identifier as quote_identifier() prints it: bare, or in double quotes
// with inner quotes doubled. Consumed from the front of `in`.
std::optional<std::string> identifier(std::string_view& in) {
  std::string out;
  if (in.starts_with('"')) {
    for (std::size_t i = 1; i < in.size(); ++i) {
      if (in[i] != '"') {
        out += in[i];
      } else if (i + 1 < in.size() && in[i + 1] == '"') {
        out += '"';
        ++i;
      } else {
        in.remove_prefix(i + 1);
        return out;
      }
    }
    return std::nullopt;
  }
  const auto end = in.find_first_of(".,: ");
  if (end == 0 || end == std::string_view::npos) return std::nullopt;
  out = in.substr(0, end);
  in.remove_prefix(end);
  return out;
}

}  // namespace

std::vector<std::string> relation_names(std::string_view tables, bool& ok) {
  std::vector<std::string> names;
  ok = false;
  for (;;) {
    if (!identifier(tables) || !tables.starts_with('.')) return {};
    tables.remove_prefix(1);
    auto name = identifier(tables);
    if (!name) return {};
    names.push_back(std::move(*name));
    if (tables.starts_with(", ")) {
      tables.remove_prefix(2);
      continue;
    }
    for (std::string_view action : {": INSERT:", ": UPDATE:", ": DELETE:", ": TRUNCATE:"}) {
      if (tables.starts_with(action)) {
        ok = true;
        return names;
      }
    }
    return {};
  }
}

change_stream::event change_stream::feed(std::string_view copy_data) {
  reader r(copy_data);
  const char kind = static_cast<char>(r.uint(1));
  if (kind == 'k') {
    keepalive_end_ = r.uint(8);
    r.uint(8);  // server clock
    reply_requested_ = r.uint(1) != 0;
    return r.ok() ? event::keepalive : event::malformed;
  }
  if (kind != 'w') return event::malformed;
  // For a COMMIT line, where the record ends.
  const std::uint64_t start = r.uint(8);
  r.uint(8);  // server's WAL end
  r.uint(8);  // server clock
  if (!r.ok()) return event::malformed;
  return decode(start, copy_data.substr(25));
}

change_stream::event change_stream::decode(std::uint64_t lsn, std::string_view line) {
  constexpr std::string_view k_table = "table ";
  constexpr std::string_view k_message = "message: transactional: ";
  if (line == "BEGIN") {
    if (in_transaction_) return event::malformed;
    in_transaction_ = true;
    changed_.clear();
    ddl_ = false;
    return event::nothing;
  }
  if (line == "COMMIT") {
    if (!in_transaction_) return event::malformed;
    in_transaction_ = false;
    std::sort(changed_.begin(), changed_.end());
    changed_.erase(std::unique(changed_.begin(), changed_.end()), changed_.end());
    commit_.end_lsn = lsn;
    commit_.relations = std::move(changed_);
    changed_.clear();
    commit_.ddl = ddl_;
    return event::committed;
  }
  if (line.starts_with(k_table)) {
    if (!in_transaction_) return event::malformed;
    bool ok = false;
    auto names = relation_names(line.substr(k_table.size()), ok);
    if (!ok) return event::malformed;
    // A statement changing many rows repeats its table line after line.
    for (auto& name : names)
      if (changed_.empty() || changed_.back() != name) changed_.push_back(std::move(name));
    return event::nothing;
  }
  if (line.starts_with(k_message)) {
    // "message: transactional: 1 prefix: <prefix>, sz: <n> content:<bytes>"
    std::string_view rest = line.substr(k_message.size());
    constexpr std::string_view k_prefix = " prefix: ";
    if (rest.size() < 1 + k_prefix.size() || rest.substr(1, k_prefix.size()) != k_prefix)
      return event::malformed;
    rest.remove_prefix(1 + k_prefix.size());
    if (!rest.starts_with(k_ddl_message_prefix) ||
        !rest.substr(k_ddl_message_prefix.size()).starts_with(", sz: "))
      return event::nothing;  // somebody else's message
    if (in_transaction_) {
      ddl_ = true;
      return event::nothing;
    }
    commit_ = committed_changes{};
    commit_.ddl = true;
    return event::committed;
  }
  return event::malformed;
}

std::string standby_status_update(std::uint64_t lsn, std::int64_t now_us, bool reply_requested) {
  std::string out;
  out.reserve(34);
  out += 'r';
  auto put = [&out](std::uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
  };
  put(lsn);  // written
  put(lsn);  // flushed: what the slot may release
  put(lsn);  // applied
  put(static_cast<std::uint64_t>(now_us));
  out += static_cast<char>(reply_requested ? 1 : 0);
  return out;
}

}  // namespace pgstash::invalidation
