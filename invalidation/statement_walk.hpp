// The walk over one statement's parse tree that finds what it reads, calls
// and writes, for cache_analysis.cpp. Internal to the invalidation library
// (see parse_tree.hpp).
//
// Generic on purpose: any RangeVar that is not a write target or a WITH
// item is a read, and any FuncCall a call, whatever clause holds it. A
// clause PostgreSQL adds later is then still walked, and what is missed can
// only be a reason to refuse, never a read left out. Iterative, as
// expressions nest deeply; it carries the WITH names in scope.
#pragma once

#include <bitset>
#include <cstddef>
#include <string_view>
#include <utility>
#include <vector>

#include "invalidation/cache_analysis.hpp"
#include "invalidation/parse_tree.hpp"

namespace pgstash::invalidation {

// INSERT, UPDATE, DELETE, MERGE, by node type ("InsertStmt").
bool is_dml(std::string_view node_type);
void add_unique(std::vector<object_name>& names, object_name n);
// The last two components of a qualified name (a catalog name is dropped).
object_name qualified(const std::vector<std::string_view>& names, const source_text& src);
// A RangeVar's fields, wrapped ({"RangeVar": {...}}) or not; else null.
const json* as_range_var(const json& node);

class statement_walk {
 public:
  statement_walk(cache_analysis& out, const source_text& src) : out_(out), src_(src) {}

  // Walks `node` (a statement or any part of one). Adds to out's reads,
  // functions and writes (DML targets, SELECT INTO), sets the flags a
  // function call implies (write_calls_functions; invalidates_database for
  // dblink; leaves_read_committed for set_config), and notes the reasons
  // found for a read.
  void walk(const json& node);
  // A relation written: named in out.writes, never counted as a read.
  void add_write(const json* range_var);

  // Forgets the reasons found and relations read so far (one per SELECT).
  void restart() {
    found_.reset();
    read_any_ = false;
  }
  bool found(uncacheable r) const { return found_[static_cast<std::size_t>(r)]; }
  // A relation (not a WITH item) was read since restart().
  bool read_any() const { return read_any_; }

 private:
  static constexpr std::size_t k_no_scope = static_cast<std::size_t>(-1);
  // The WITH names visible at a point: a scope's own, then its parent's.
  struct scope {
    std::size_t parent = k_no_scope;
    std::vector<std::string_view> ctes;  // as in the tree, not decoded
  };
  using work = std::vector<std::pair<const json*, std::size_t>>;  // node, its scope

  void note(uncacheable r) { found_.set(static_cast<std::size_t>(r)); }
  bool is_cte(std::size_t s, std::string_view name) const;
  std::size_t enter_with(const json& with, std::size_t parent, work& stack);
  void on_range_var(const json& rv, std::size_t s);
  void on_func_call(const json& call);

  cache_analysis& out_;
  const source_text& src_;
  std::vector<scope> scopes_;
  std::vector<const json*> targets_;  // RangeVars written, not read
  std::bitset<uncacheable_count> found_;
  bool read_any_ = false;
};

}  // namespace pgstash::invalidation
