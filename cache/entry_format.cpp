#include "cache/entry_format.hpp"

#include <cstring>

namespace pgstash::cache {

namespace {

constexpr std::uint8_t k_format = 1;
constexpr std::uint8_t k_flag_compressed = 1;
constexpr std::size_t k_header_size = 32;
constexpr std::size_t k_dep_size = 16;

template <typename T>
char* put(char* out, T v) {
  std::memcpy(out, &v, sizeof v);
  return out + sizeof v;
}

template <typename T>
T read_at(const char* in, std::size_t offset) {
  T v;
  std::memcpy(&v, in + offset, sizeof v);
  return v;
}

}  // namespace

key_bytes encode_key(const key& k) {
  key_bytes b;
  put(put(b.data(), k.low), k.high);
  return b;
}

key decode_key(std::string_view bytes) {
  return {read_at<std::uint64_t>(bytes.data(), 0), read_at<std::uint64_t>(bytes.data(), 8)};
}

void entry_view::copy_deps(dependency* out) const {
  for (std::size_t i = 0; i < dep_count; ++i) {
    out[i].relation = read_at<std::uint64_t>(dep_bytes.data(), i * k_dep_size);
    out[i].generation = read_at<std::uint64_t>(dep_bytes.data(), i * k_dep_size + 8);
  }
}

std::vector<dependency> entry_view::deps() const {
  std::vector<dependency> out(dep_count);
  copy_deps(out.data());
  return out;
}

std::size_t encoded_size(std::size_t dep_count, std::size_t label_size, std::size_t body_size) {
  return k_header_size + dep_count * k_dep_size + label_size + body_size;
}

void encode_entry(const entry_header& header, std::span<const dependency> deps,
                  std::string_view label, std::string_view body, char* out) {
  out = put(out, k_format);
  out = put(out, header.compressed ? k_flag_compressed : std::uint8_t{0});
  out = put(out, static_cast<std::uint16_t>(label.size()));
  out = put(out, static_cast<std::uint32_t>(deps.size()));
  out = put(out, header.created_ms);
  out = put(out, header.expires_ms);
  out = put(out, header.response_size);
  for (const dependency& d : deps) out = put(put(out, d.relation), d.generation);
  if (!label.empty())
    out = static_cast<char*>(std::memcpy(out, label.data(), label.size())) + label.size();
  if (!body.empty()) std::memcpy(out, body.data(), body.size());
}

std::optional<entry_view> decode_entry(std::string_view value) {
  if (value.size() < k_header_size) return std::nullopt;
  const char* in = value.data();
  if (read_at<std::uint8_t>(in, 0) != k_format) return std::nullopt;
  entry_view e;
  e.header.compressed = (read_at<std::uint8_t>(in, 1) & k_flag_compressed) != 0;
  const std::size_t label_size = read_at<std::uint16_t>(in, 2);
  e.dep_count = read_at<std::uint32_t>(in, 4);
  e.header.created_ms = read_at<std::int64_t>(in, 8);
  e.header.expires_ms = read_at<std::int64_t>(in, 16);
  e.header.response_size = read_at<std::uint64_t>(in, 24);

  // Sizes are checked one by one, so a corrupt count cannot overflow.
  std::string_view rest = value.substr(k_header_size);
  if (e.dep_count > rest.size() / k_dep_size) return std::nullopt;
  e.dep_bytes = rest.substr(0, e.dep_count * k_dep_size);
  rest.remove_prefix(e.dep_bytes.size());
  if (label_size > rest.size()) return std::nullopt;
  e.label = rest.substr(0, label_size);
  e.body = rest.substr(label_size);
  if (!e.header.compressed && e.body.size() != e.header.response_size) return std::nullopt;
  return e;
}

std::string encode_checkpoint(const checkpoint_view& c) {
  std::string out(sizeof c.size + 1, '\0');
  std::memcpy(out.data(), &c.size, sizeof c.size);
  out[sizeof c.size] = c.compressed ? 1 : 0;
  out.append(c.body);
  return out;
}

std::optional<checkpoint_view> decode_checkpoint(std::string_view value) {
  checkpoint_view c;
  if (value.size() < sizeof c.size + 1) return std::nullopt;
  std::memcpy(&c.size, value.data(), sizeof c.size);
  const auto flags = static_cast<unsigned char>(value[sizeof c.size]);
  if (flags > 1) return std::nullopt;
  c.compressed = flags == 1;
  c.body = value.substr(sizeof c.size + 1);
  if (!c.compressed && c.body.size() != c.size) return std::nullopt;
  return c;
}

}  // namespace pgstash::cache
