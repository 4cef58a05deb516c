// Finding a statement's point filter (cache_analysis::point) in its parse
// tree, for cache_analysis.cpp. Internal to the invalidation library (see
// parse_tree.hpp).
#pragma once

#include <optional>

#include "invalidation/cache_analysis.hpp"
#include "invalidation/parse_tree.hpp"

namespace pgstash::invalidation {

// `stmt` is one statement node ({"SelectStmt": {...}}); nullopt unless it
// has a shape cache_analysis::point describes.
std::optional<point_filter> find_point_filter(const json& stmt, const source_text& src);

}  // namespace pgstash::invalidation
