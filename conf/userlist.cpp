// Parser for PgBouncer's userlist.txt, line by line. Columns are 1-based
// byte offsets, like the TOML diagnostics, so an editor can jump to them.
#include "conf/userlist.hpp"

#include <optional>
#include <string_view>

namespace pgstash::conf {
namespace {

constexpr std::string_view k_form = "lines look like: \"user\" \"secret\"";

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// A cursor over one line; problems go to `errors`, tagged with this line
// and the cursor's column.
class line_parser {
 public:
  line_parser(std::string_view line, const std::string& name, int line_no,
              std::vector<diagnostic>& errors)
      : line_(line), name_(name), line_no_(line_no), errors_(errors) {}

  // A quoted field starting at the next non-blank, or nullopt after
  // reporting. `what` names the field in messages.
  std::optional<std::string> field(std::string_view what) {
    skip_blanks();
    if (pos_ == line_.size() || line_[pos_] != '"') {
      report(pos_ == line_.size() ? "missing " + std::string(what)
                                  : "expected a quoted " + std::string(what),
             std::string(k_form));
      return std::nullopt;
    }
    const std::size_t open = pos_++;
    std::string value;
    while (pos_ < line_.size()) {
      char c = line_[pos_++];
      if (c != '"') {
        value += c;
      } else if (pos_ < line_.size() && line_[pos_] == '"') {
        value += '"';  // "" is an escaped quote
        ++pos_;
      } else {
        return value;
      }
    }
    pos_ = open;
    report("unterminated " + std::string(what), "close it with \"; write a \" inside it as \"\"");
    return std::nullopt;
  }

  // True if only blanks remain; otherwise reports the first stray byte.
  bool at_end() {
    skip_blanks();
    if (pos_ == line_.size()) return true;
    report("unexpected text after the secret", std::string(k_form));
    return false;
  }

  void skip_blanks() {
    while (pos_ < line_.size() && is_blank(line_[pos_])) ++pos_;
  }
  // 1-based column of the next byte.
  int column() const { return static_cast<int>(pos_) + 1; }
  void report(std::string message, std::string hint) {
    errors_.push_back({name_, line_no_, column(), std::move(message), std::move(hint)});
  }

 private:
  std::string_view line_;
  const std::string& name_;
  int line_no_;
  std::vector<diagnostic>& errors_;
  std::size_t pos_ = 0;
};

}  // namespace

userlist_result load_userlist_string(const std::string& text, const std::string& name) {
  userlist_result result;
  std::map<std::string, int> first_line;  // user -> line that defined it
  std::string_view rest = text;
  for (int line_no = 1; !rest.empty(); ++line_no) {
    std::size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);

    line_parser p(line, name, line_no, result.errors);
    p.skip_blanks();
    int user_column = p.column();
    if (user_column > static_cast<int>(line.size())) continue;  // blank
    if (char c = line[user_column - 1]; c == ';' || c == '#') continue;

    auto user = p.field("user name");
    if (!user) continue;
    auto secret = p.field("secret");
    if (!secret || !p.at_end()) continue;
    if (user->empty()) {
      result.errors.push_back({name, line_no, user_column, "empty user name", std::string(k_form)});
      continue;
    }
    auto [it, added] = first_line.emplace(*user, line_no);
    if (!added) {
      result.errors.push_back({name, line_no, user_column, "duplicate user \"" + *user + "\"",
                               "first defined on line " + std::to_string(it->second)});
      continue;
    }
    result.users.emplace(std::move(*user), std::move(*secret));
  }
  if (!result.errors.empty()) result.users.clear();
  return result;
}

userlist_result load_userlist_file(const std::string& path) {
  userlist_result result;
  std::string text;
  if (auto error = detail::read_text_file(path, text)) {
    result.errors.push_back(std::move(*error));
    return result;
  }
  return load_userlist_string(text, path);
}

secret_kind kind_of_secret(std::string_view secret) {
  if (secret.starts_with("SCRAM-SHA-256$")) return secret_kind::scram;
  if (secret.size() == 35 && secret.starts_with("md5")) return secret_kind::md5;
  return secret_kind::cleartext;
}

}  // namespace pgstash::conf
