// A possibly schema-qualified SQL name, as the parser spells it: already
// case-folded (unquoted identifiers lower-cased, quoted ones exact), not SQL.
// An empty `schema` means the name was written unqualified.
#pragma once

#include <string>

namespace pgstash::invalidation {

struct object_name {
  std::string schema;
  std::string name;
  bool operator==(const object_name&) const = default;
};

}  // namespace pgstash::invalidation
