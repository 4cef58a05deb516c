#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "pool/connection_lists.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <random>
#include <vector>

namespace pgstash::pool {
namespace {

using enum server_list;
using std::chrono::seconds;
using time_point = connection_lists::time_point;

const time_point t0{};

constexpr server_list all_lists[] = {connecting, idle, active, testing, closing};

// Every list's size, plus the total, against what `expected` says each id is on.
void check_sizes(const connection_lists& lists, const std::map<std::uint64_t, server_list>& expected) {
  std::size_t on[k_server_lists] = {};
  for (const auto& [id, l] : expected) ++on[static_cast<std::size_t>(l)];
  for (server_list l : all_lists) CHECK(lists.size(l) == on[static_cast<std::size_t>(l)]);
  CHECK(lists.size() == expected.size());
  for (const auto& [id, l] : expected) {
    const server_record* r = lists.find(id);
    REQUIRE(r != nullptr);
    CHECK(r->list == l);
  }
}

TEST_CASE("a new connection starts on connecting") {
  connection_lists lists;
  server_details* d = lists.add(7, t0 + seconds(1));
  REQUIRE(d != nullptr);
  const server_record* r = lists.find(7);
  REQUIRE(r != nullptr);
  CHECK(r->id == 7);
  CHECK(r->list == connecting);
  CHECK(r->since == t0 + seconds(1));
  CHECK(r->opened == t0 + seconds(1));
  check_sizes(lists, {{7, connecting}});
}

TEST_CASE("an id already on a list cannot be added again") {
  connection_lists lists;
  REQUIRE(lists.add(1, t0));
  REQUIRE(lists.move(1, connecting, idle, t0));
  CHECK(lists.add(1, t0) == nullptr);
  check_sizes(lists, {{1, idle}});
}

TEST_CASE("a connection's life: each move changes its list, its since, and the sizes") {
  connection_lists lists;
  lists.add(1, t0);
  lists.add(2, t0);

  server_details* d = lists.move(1, connecting, active, t0 + seconds(1));
  REQUIRE(d != nullptr);
  d->process_id = 4242;
  d->client_id = 9;
  d->tls = true;
  check_sizes(lists, {{1, active}, {2, connecting}});
  CHECK(lists.find(1)->since == t0 + seconds(1));
  CHECK(lists.find(1)->opened == t0);

  REQUIRE(lists.move(1, active, idle, t0 + seconds(2)));
  check_sizes(lists, {{1, idle}, {2, connecting}});
  CHECK(lists.find(1)->since == t0 + seconds(2));
  // Idle, it belongs to no client; what was learnt about the server stays.
  CHECK(lists.find(1)->details.client_id == 0);
  CHECK(lists.find(1)->details.process_id == 4242);
  CHECK(lists.find(1)->details.tls);

  REQUIRE(lists.move(1, idle, testing, t0 + seconds(3)));
  REQUIRE(lists.move(1, testing, active, t0 + seconds(4)));
  REQUIRE(lists.move(1, active, closing, t0 + seconds(5)));
  check_sizes(lists, {{1, closing}, {2, connecting}});
  CHECK(lists.erase(1, closing));
  CHECK(lists.find(1) == nullptr);

  // A connect that fails leaves connecting straight away.
  CHECK(lists.erase(2, connecting));
  check_sizes(lists, {});
}

TEST_CASE("only the drawn transitions are allowed") {
  const std::map<server_list, std::vector<server_list>> drawn = {
      {connecting, {active, idle}},
      {idle, {testing, closing}},
      {testing, {active, closing}},
      {active, {idle, closing}},
      {closing, {}},
  };
  for (server_list from : all_lists) {
    for (server_list to : all_lists) {
      const auto& targets = drawn.at(from);
      const bool expected = std::find(targets.begin(), targets.end(), to) != targets.end();
      CAPTURE(to_string(from));
      CAPTURE(to_string(to));
      CHECK(connection_lists::allowed(from, to) == expected);
    }
  }
}

TEST_CASE("a refused move changes nothing") {
  connection_lists lists;
  lists.add(1, t0);
  lists.move(1, connecting, active, t0 + seconds(1));

  SUBCASE("not on the list the caller believes") {
    CHECK(lists.move(1, idle, testing, t0 + seconds(2)) == nullptr);
  }
  SUBCASE("not an allowed transition") {
    CHECK(lists.move(1, active, testing, t0 + seconds(2)) == nullptr);
    CHECK(lists.move(1, active, active, t0 + seconds(2)) == nullptr);
    CHECK(lists.move(1, active, connecting, t0 + seconds(2)) == nullptr);
  }
  SUBCASE("unknown id") {
    CHECK(lists.move(2, active, idle, t0 + seconds(2)) == nullptr);
  }
  check_sizes(lists, {{1, active}});
  CHECK(lists.find(1)->since == t0 + seconds(1));
}

TEST_CASE("only a connecting or closing connection can be forgotten, and only from its own list") {
  connection_lists lists;
  lists.add(1, t0);
  lists.add(2, t0);
  lists.move(2, connecting, idle, t0);
  CHECK_FALSE(lists.erase(2, idle));      // open: must go through closing
  CHECK_FALSE(lists.erase(2, closing));   // not on closing
  CHECK_FALSE(lists.erase(1, closing));   // on connecting
  CHECK_FALSE(lists.erase(3, connecting));
  check_sizes(lists, {{1, connecting}, {2, idle}});
  lists.move(2, idle, closing, t0);
  CHECK(lists.erase(2, closing));
  CHECK(lists.erase(1, connecting));
  CHECK_FALSE(lists.erase(1, connecting));  // already gone
  check_sizes(lists, {});
}

TEST_CASE("copy_to gives the lists in order, each oldest first") {
  connection_lists lists;
  for (std::uint64_t id = 1; id <= 5; ++id) lists.add(id, t0);
  lists.move(4, connecting, idle, t0);
  lists.move(2, connecting, idle, t0);
  lists.move(3, connecting, active, t0);
  lists.move(1, connecting, active, t0);
  lists.move(1, active, idle, t0);
  std::vector<server_record> out;
  lists.copy_to(out);
  std::vector<std::uint64_t> ids;
  std::vector<server_list> on;
  for (const auto& r : out) {
    ids.push_back(r.id);
    on.push_back(r.list);
  }
  CHECK(ids == std::vector<std::uint64_t>{5, 4, 2, 1, 3});
  CHECK(on == std::vector<server_list>{connecting, idle, idle, idle, active});
}

TEST_CASE("moved lists keep their records reachable") {
  connection_lists a;
  a.add(1, t0);
  a.move(1, connecting, idle, t0);
  connection_lists b = std::move(a);
  REQUIRE(b.move(1, idle, testing, t0));
  check_sizes(b, {{1, testing}});
}

// Random operations, legal and not, against a plain map of id -> list: the
// sizes must always be the map's counts, whatever is tried.
TEST_CASE("sizes never drift from the records") {
  std::mt19937 rng(20240611);
  connection_lists lists;
  std::map<std::uint64_t, server_list> model;
  std::uint64_t next_id = 1;
  int done[3] = {};  // successful adds, moves, erases
  auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  for (int step = 0; step < 20000; ++step) {
    const time_point now = t0 + seconds(step);
    // Mostly ids that exist, sometimes one that never did.
    std::uint64_t id = next_id;
    if (!model.empty() && pick(10) != 0) id = std::next(model.begin(), pick(model.size()))->first;
    const server_list from = all_lists[pick(k_server_lists)];
    const server_list to = all_lists[pick(k_server_lists)];
    const auto known = model.find(id);
    const bool on_from = known != model.end() && known->second == from;
    switch (pick(3)) {
      case 0: {
        const bool added = lists.add(id, now) != nullptr;
        CHECK(added == (known == model.end()));
        if (added) model[id] = connecting, ++done[0];
        if (id == next_id) ++next_id;
        break;
      }
      case 1: {
        const bool moved = lists.move(id, from, to, now) != nullptr;
        CHECK(moved == (on_from && connection_lists::allowed(from, to)));
        if (moved) model[id] = to, ++done[1];
        break;
      }
      default: {
        const bool erased = lists.erase(id, from);
        CHECK(erased == (on_from && (from == connecting || from == closing)));
        if (erased) model.erase(id), ++done[2];
        break;
      }
    }
    if (step % 97 == 0) check_sizes(lists, model);
  }
  check_sizes(lists, model);
  std::vector<server_record> out;
  lists.copy_to(out);
  CHECK(out.size() == model.size());
  // The walk really went places.
  CHECK(done[0] > 200);
  CHECK(done[1] > 200);
  CHECK(done[2] > 100);
}

}  // namespace
}  // namespace pgstash::pool
