#include "invalidation/stream_checkpoint.hpp"

#include <cstring>

namespace pgstash::invalidation {

namespace {

constexpr std::string_view k_magic = "pgstash stream checkpoint 2\n";

void put_u64(std::string& out, std::uint64_t v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_text(std::string& out, std::string_view s) {
  put_u64(out, s.size());
  out.append(s);
}

// Reads fields off the front of the bytes; any read past the end fails
// every later one.
class reader {
 public:
  explicit reader(std::string_view bytes) : rest_(bytes) {}
  bool u64(std::uint64_t& v) {
    if (rest_.size() < sizeof v) return ok_ = false;
    std::memcpy(&v, rest_.data(), sizeof v);
    rest_.remove_prefix(sizeof v);
    return ok_;
  }
  bool text(std::string& s) {
    std::uint64_t n = 0;
    if (!u64(n) || n > rest_.size()) return ok_ = false;
    s.assign(rest_.substr(0, n));
    rest_.remove_prefix(n);
    return ok_;
  }
  bool prefix(std::string_view p) {
    if (!rest_.starts_with(p)) return ok_ = false;
    rest_.remove_prefix(p.size());
    return ok_;
  }
  std::size_t left() const { return rest_.size(); }

 private:
  std::string_view rest_;
  bool ok_ = true;
};

}  // namespace

std::string encode(const stream_checkpoint& checkpoint) {
  std::string out(k_magic);
  put_u64(out, checkpoint.databases.size());
  for (const followed_database& d : checkpoint.databases) {
    put_text(out, d.database);
    put_text(out, d.slot);
    put_text(out, d.system_id);
    put_u64(out, d.applied_lsn);
    put_text(out, d.ddl_trigger);
  }
  put_u64(out, checkpoint.generations.size());
  for (std::uint64_t g : checkpoint.generations) put_u64(out, g);
  return out;
}

std::optional<stream_checkpoint> decode_checkpoint(std::string_view bytes) {
  reader in(bytes);
  stream_checkpoint c;
  std::uint64_t count = 0;
  if (!in.prefix(k_magic) || !in.u64(count)) return std::nullopt;
  for (std::uint64_t i = 0; i < count; ++i) {
    followed_database d;
    if (!in.text(d.database) || !in.text(d.slot) || !in.text(d.system_id) ||
        !in.u64(d.applied_lsn) || !in.text(d.ddl_trigger))
      return std::nullopt;
    c.databases.push_back(std::move(d));
  }
  if (!in.u64(count) || count != in.left() / sizeof(std::uint64_t) ||
      in.left() % sizeof(std::uint64_t) != 0)
    return std::nullopt;
  c.generations.resize(count);
  for (std::uint64_t& g : c.generations) in.u64(g);
  return c;
}

}  // namespace pgstash::invalidation
