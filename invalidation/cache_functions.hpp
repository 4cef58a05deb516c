// Which functions, types and constants make a read's result depend on more
// than the tables it reads and the settings in the cache key. Internal to
// the invalidation library (see parse_tree.hpp).
//
// Matched by name whatever the schema (a user's own now() is refused too),
// and by prefix for families (pg_advisory_*, lo_*, dblink*): a false
// positive costs a cache miss, a false negative a stale result. Volatility
// of everything else is the catalog's to check.
#pragma once

#include <cstddef>
#include <string_view>

#include "invalidation/parse_tree.hpp"

namespace pgstash::invalidation {

enum class function_kind {
  other,    // for the catalog to judge
  time,     // the current time: now(), statement_timestamp(), age(x), ...
  session,  // this session or server: pg_backend_pid(), nextval(), random(), locks, ...
  remote,   // dblink*(): may write through another connection
  setting,  // set_config()
};
function_kind classify_function(std::string_view name, std::size_t arg_count);

// A SQLValueFunction op ("SVFOP_CURRENT_DATE") that reads the clock: every
// one but the user, role, catalog and schema ones.
bool is_time_value_function(std::string_view op);

// A string constant that date/time input would read as the current time
// ('now', 'today', 'tomorrow', 'yesterday', alone or with a time). Matched
// on words, whatever the constant's type turns out to be.
bool names_current_time(std::string_view literal);

// A type whose input looks names up in the system catalogs ('t'::regclass).
bool is_catalog_lookup_type(std::string_view type_name);

// Whether a set_config() call may change the transaction isolation: its
// first argument is not a constant naming another setting.
bool set_config_leaves_read_committed(const json& call, const source_text& src);

}  // namespace pgstash::invalidation
