// Which rows a statement's point filter (invalidation::cache_analysis::
// point) bounds it to, for the cache's invalidation by key: the equality on
// a table's key, and the key value a look-up or a write is of. Pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "invalidation/cache_analysis.hpp"
#include "wire/frontend.hpp"

namespace pgstash::proxy {

// The key value `e` compares with: its constant, or the parameter `bind`
// gives it (of `statement`, which may be null), when that is read as an
// integer of the key's type (a parameter declared of another type, such as
// float8, may compare equal to several keys).
std::optional<std::int64_t> point_value(const invalidation::point_filter::equality& e,
                                        const wire::parse_message* statement,
                                        const wire::bind_message* bind);

// The equality of `a`'s point filter on the column `key`, if there is one
// and `=` means PostgreSQL's own under `search_path` (for `role`): it does
// unless the path lists pg_catalog after another schema, whose operators
// would then come first.
const invalidation::point_filter::equality* equality_on(const invalidation::cache_analysis& a,
                                                        std::string_view key,
                                                        const std::string& search_path,
                                                        const std::string& role);

}  // namespace pgstash::proxy
