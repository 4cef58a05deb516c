#include "conf/userlist.hpp"

#include <filesystem>
#include <fstream>
#include <string>

#include <doctest/doctest.h>

#include <unistd.h>

namespace {

using namespace pgstash::conf;

userlist_result load(const std::string& text) { return load_userlist_string(text, "users.txt"); }

// The diagnostics, formatted, one per line: readable when a check fails.
std::string formatted(const userlist_result& r) {
  std::string out;
  for (const auto& e : r.errors) out += format(e) + "\n";
  return out;
}

}  // namespace

TEST_CASE("userlist: users and secrets") {
  userlist_result r = load(
      "\"alice\" \"s3cret\"\n"
      "\"bob\" \"md5a3556571e93b0d20722ba62be61e8c2d\"\n"
      "\"carol\" \"SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy\"\n");
  REQUIRE(r.errors.empty());
  CHECK(r.users == userlist{{"alice", "s3cret"},
                            {"bob", "md5a3556571e93b0d20722ba62be61e8c2d"},
                            {"carol", "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"}});
}

TEST_CASE("userlist: whitespace, comments, blank lines, CRLF, no final newline") {
  userlist_result r = load(
      "; PgBouncer-style comment\n"
      "# hash comment\n"
      "\n"
      "   \t\n"
      "  \t\"alice\"\t\t\"a b\"  \t\r\n"
      "   # indented comment\n"
      "\"bob\"\t\"x\"\n"
      "\"carol\" \"\"");
  CHECK(formatted(r) == "");
  CHECK(r.users == userlist{{"alice", "a b"}, {"bob", "x"}, {"carol", ""}});
}

TEST_CASE("userlist: a doubled quote is a quote") {
  userlist_result r = load(
      "\"we\"\"ird\" \"pa\"\"ss\"\"\"\n"
      "\"\"\"\" \";#\"\n");
  REQUIRE(r.errors.empty());
  CHECK(r.users == userlist{{"we\"ird", "pa\"ss\""}, {"\"", ";#"}});
}

TEST_CASE("userlist: malformed lines are reported with line and column") {
  CHECK(formatted(load("bob \"x\"\n")) ==
        "users.txt:1:1: expected a quoted user name (lines look like: \"user\" \"secret\")\n");
  CHECK(formatted(load("\n  \"bob\"\n")) ==
        "users.txt:2:8: missing secret (lines look like: \"user\" \"secret\")\n");
  CHECK(formatted(load("\"bob\" secret\n")) ==
        "users.txt:1:7: expected a quoted secret (lines look like: \"user\" \"secret\")\n");
  CHECK(formatted(load("\"bob\" \"secret\n")) ==
        "users.txt:1:7: unterminated secret (close it with \"; write a \" inside it as \"\")\n");
  CHECK(formatted(load("  \"bob \"x\"\n")) ==
        "users.txt:1:9: expected a quoted secret (lines look like: \"user\" \"secret\")\n");
  CHECK(formatted(load("\"b\"\"ob\n")) ==
        "users.txt:1:1: unterminated user name (close it with \"; write a \" inside it as "
        "\"\")\n");
  CHECK(formatted(load("\"bob\" \"x\" admin\n")) ==
        "users.txt:1:11: unexpected text after the secret (lines look like: \"user\" "
        "\"secret\")\n");
  CHECK(formatted(load("\"bob\" \"x\" ; trailing comments are not a thing\n")) ==
        "users.txt:1:11: unexpected text after the secret (lines look like: \"user\" "
        "\"secret\")\n");
  // With "" meaning a quote, "bob""x" is the one field bob"x.
  CHECK(formatted(load("\"bob\"\"x\"\n")) ==
        "users.txt:1:9: missing secret (lines look like: \"user\" \"secret\")\n");
  CHECK(formatted(load("\n\n \"\" \"x\"\n")) ==
        "users.txt:3:2: empty user name (lines look like: \"user\" \"secret\")\n");
}

TEST_CASE("userlist: duplicates, and every error is reported") {
  userlist_result r = load(
      "\"alice\" \"1\"\n"
      "\"bob\" \"2\"\n"
      "oops\n"
      "  \"alice\" \"3\"\n");
  CHECK(formatted(r) ==
        "users.txt:3:1: expected a quoted user name (lines look like: \"user\" \"secret\")\n"
        "users.txt:4:3: duplicate user \"alice\" (first defined on line 1)\n");
  // A partly valid file yields no users at all.
  CHECK(r.users.empty());
}

TEST_CASE("userlist: user names are case-sensitive, as in PostgreSQL") {
  userlist_result r = load("\"Alice\" \"1\"\n\"alice\" \"2\"\n");
  REQUIRE(r.errors.empty());
  CHECK(r.users.size() == 2);
}

TEST_CASE("userlist: files") {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("conf_userlist_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "userlist.txt").string();

  SUBCASE("reads the file and names it in diagnostics") {
    std::ofstream(path) << "\"alice\" \"pw\"\nbob\n";
    userlist_result r = load_userlist_file(path);
    CHECK(formatted(r) == path +
                              ":2:1: expected a quoted user name (lines look like: "
                              "\"user\" \"secret\")\n");
    std::ofstream(path) << "\"alice\" \"pw\"\n";
    r = load_userlist_file(path);
    REQUIRE(r.errors.empty());
    CHECK(r.users == userlist{{"alice", "pw"}});
  }
  SUBCASE("an unreadable file is one diagnostic without a line") {
    userlist_result r = load_userlist_file(path + ".missing");
    CHECK(formatted(r) == path + ".missing: cannot read file: No such file or directory\n");
    CHECK(r.users.empty());
  }
  fs::remove_all(dir);
}
