// The canonical hash of a parsed statement, for the result cache's key.
// Internal to the invalidation library (see parse_tree.hpp).
//
// Why the parse tree and not pg_query_normalize() or a deparse: the tree is
// what the server executes, so hashing it is exact by construction.
// normalize() keeps the text's whitespace, case and comments; deparsing
// needs the protobuf round trip and trusts the deparser to be injective.
// Only token locations, which change with spelling, are left out, and the
// one value libpg_query 15-4.0.0's JSON loses (Integer <= 0) is read back
// from the text.
#pragma once

#include "invalidation/parse_tree.hpp"
#include "invalidation/text_memo.hpp"

namespace pgstash::invalidation {

// XXH3-128 over `tree` (any node or list of libpg_query's JSON) without
// location members. Equal trees give equal digests, whatever whitespace,
// keyword case and comments the text had; any difference in a constant,
// name, operator or their order gives a different one.
text_digest canonical_digest(const json& tree, const source_text& src);

}  // namespace pgstash::invalidation
