#include "proxy/point_key.hpp"

#include <algorithm>

#include "invalidation/catalog.hpp"

namespace pgstash::proxy {

namespace {

// True if `=` between integers is PostgreSQL's own under `search_path`:
// pg_catalog is searched first unless the path lists it after another
// schema, whose operators would then come first.
bool builtin_equality(const std::string& search_path, const std::string& role) {
  const auto schemas = invalidation::search_path_schemas(search_path, role);
  if (!schemas) return false;
  const auto it = std::find(schemas->begin(), schemas->end(), "pg_catalog");
  return it == schemas->end() || it == schemas->begin();
}

}  // namespace

std::optional<std::int64_t> point_value(const invalidation::point_filter::equality& e,
                                        const wire::parse_message* statement,
                                        const wire::bind_message* bind) {
  if (e.constant) return e.constant;
  if (!bind || e.parameter < 1 || static_cast<std::size_t>(e.parameter) > bind->parameters.size())
    return std::nullopt;
  const auto i = static_cast<std::size_t>(e.parameter - 1);
  const std::optional<std::string_view>& value = bind->parameters[i];
  if (!value) return std::nullopt;
  const std::uint32_t type =
      statement && i < statement->parameter_types.size() ? statement->parameter_types[i] : 0;
  constexpr std::uint32_t int8_oid = 20, int2_oid = 21, int4_oid = 23;
  if (type != 0 && type != int8_oid && type != int2_oid && type != int4_oid) return std::nullopt;
  const auto& formats = bind->parameter_formats;
  const std::int16_t format = formats.empty()       ? 0
                              : formats.size() == 1 ? formats[0]
                              : i < formats.size()  ? formats[i]
                                                    : -1;
  if (format == 0) return invalidation::integer_value(*value);
  if (format != 1 || (value->size() != 2 && value->size() != 4 && value->size() != 8))
    return std::nullopt;
  std::uint64_t bits = 0;
  for (unsigned char byte : *value) bits = bits << 8 | byte;
  // Sign-extended from the value's width.
  const unsigned unused = 64 - 8 * static_cast<unsigned>(value->size());
  return static_cast<std::int64_t>(bits << unused) >> unused;
}

const invalidation::point_filter::equality* equality_on(const invalidation::cache_analysis& a,
                                                        std::string_view key,
                                                        const std::string& search_path,
                                                        const std::string& role) {
  if (!a.point || key.empty() || !builtin_equality(search_path, role)) return nullptr;
  for (const auto& e : a.point->equalities)
    if (e.column == key) return &e;
  return nullptr;
}

}  // namespace pgstash::proxy
