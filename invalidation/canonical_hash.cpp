#include "invalidation/canonical_hash.hpp"

#include <string>
#include <vector>

namespace pgstash::invalidation {
namespace {

// Token positions in the text: the only members whose value changes with
// whitespace and comments.
bool is_location(std::string_view key) {
  return key == "location" || key == "stmt_location" || key == "stmt_len";
}

// The serialization is prefix-free (every value starts with a type byte,
// strings carry their length), so distinct trees never meet in one byte
// string.
void put_string(std::string& out, std::string_view s) {
  out += 's';
  out += std::to_string(s.size());
  out += ':';
  out += s;
}

void put_integer(std::string& out, std::string_view decimal) {
  out += 'i';
  out += decimal;
  out += ';';
}

void put_scalar(std::string& out, const json& v) {
  if (v.is_string()) {
    put_string(out, v.get_ref<const std::string&>());
  } else if (v.is_number_integer()) {
    put_integer(out, std::to_string(v.get<std::int64_t>()));
  } else if (v.is_boolean()) {
    out += v.get<bool>() ? 'T' : 'F';
  } else if (v.is_null()) {
    out += 'N';
  } else {
    // Floats do not occur in a raw parse tree; dump() is exact enough to
    // tell any two apart if they ever do.
    out += 'f';
    out += v.dump();
    out += ';';
  }
}

}  // namespace

text_digest canonical_digest(const json& tree, const source_text& src) {
  std::string out;
  out.reserve(1024);
  // A value the JSON lost and the text could not give back: hash the whole
  // text as well, which can only split entries, never merge them.
  bool lossy = false;

  // Iterative: expressions nest deeply.
  struct frame {
    const json* node;
    json::const_iterator next;
  };
  std::vector<frame> stack;
  auto open = [&](const json& v) {
    if (v.is_object() || v.is_array()) {
      out += v.is_object() ? '{' : '[';
      stack.push_back({&v, v.cbegin()});
    } else {
      put_scalar(out, v);
    }
  };
  open(tree);
  while (!stack.empty()) {
    frame& f = stack.back();
    if (f.next == f.node->cend()) {
      out += f.node->is_object() ? '}' : ']';
      stack.pop_back();
      continue;
    }
    const json* parent = f.node;
    const auto it = f.next++;
    if (parent->is_object()) {
      const std::string& key = it.key();
      if (is_location(key)) continue;
      put_string(out, key);
      // An A_Const's {"ival": {}} is any integer <= 0.
      if (key == "ival" && it->is_object() && !member(*it, "ival")) {
        if (const auto value = integer_sql(*parent, *it, src)) {
          put_integer(out, *value);
        } else {
          lossy = true;
          open(*it);
        }
        continue;
      }
      // A bare Integer node outside an A_Const has no location to read.
      if (key == "Integer" && it->is_object() && it->empty()) lossy = true;
    }
    open(*it);  // may reallocate the stack: `f` is not used after this
  }
  if (lossy) {
    out += '\0';
    out += src.original();
  }
  return digest_of(out);
}

}  // namespace pgstash::invalidation
