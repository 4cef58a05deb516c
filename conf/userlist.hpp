// The auth file in PgBouncer's userlist.txt format: one user per line,
//   "user" "secret"
// where secret is a cleartext password, "md5" + 32 hex digits, or a
// "SCRAM-SHA-256$..." verifier. Lines starting with ';' or '#' and blank
// lines are ignored; a '"' inside a quoted field is written '""'.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.hpp"

namespace pgstash::conf {

using userlist = std::map<std::string, std::string>;  // user -> secret

enum class secret_kind { cleartext, md5, scram };
secret_kind kind_of_secret(std::string_view secret);

struct userlist_result {
  userlist users;  // empty whenever errors is not: a half-read auth file is never used
  std::vector<diagnostic> errors;  // every malformed line and duplicate user, in line order
};

// Reads and parses `path`; an unreadable file is one diagnostic (line 0).
userlist_result load_userlist_file(const std::string& path);
// Same, from text; `name` stands in for the file name in diagnostics.
userlist_result load_userlist_string(const std::string& text, const std::string& name);

}  // namespace pgstash::conf
