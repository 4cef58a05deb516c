#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "cache/result_store.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "test_support.hpp"

using namespace pgstash::cache;
using namespace pgstash::cache::test;

TEST_CASE("store: a small response round-trips byte for byte") {
  store_fixture f;
  const std::string response(
      "T\0\0\0\x06\0\0D\0\0\0\x04"
      "abc",
      16);
  f.store->put(key_of(1), response, f.deps_on({1, 2}), 1000, 0, "SELECT * FROM t");
  f.store->flush();

  std::string out = "prefix:";
  REQUIRE(f.store->get(key_of(1), 1001, out));
  CHECK(out == "prefix:" + response);  // appended

  const store_stats s = f.store->stats();
  CHECK(s.entries == 1);
  CHECK(s.stores == 1);
  CHECK(s.hits == 1);
  CHECK(s.misses == 0);
  CHECK(s.failures == 0);
  CHECK(s.bytes > response.size());  // metadata counts too
  CHECK(s.map_size > 0);
  CHECK(s.map_used > 0);
  CHECK(s.map_used <= s.map_size);

  const auto entries = f.store->list(10);
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].k == key_of(1));
  CHECK(entries[0].size == s.bytes);
  CHECK(entries[0].hits == 1);
  CHECK(entries[0].created_ms == 1000);
  CHECK(entries[0].expires_ms == 0);
  CHECK(entries[0].last_use_ms == 1001);
  CHECK(entries[0].deps == std::vector<dependency>{{1, 0}, {2, 0}});
  CHECK(entries[0].label == "SELECT * FROM t");
}

TEST_CASE("store: a put's callback runs once a get finds the entry, or once it is refused") {
  store_fixture f;
  std::mutex m;
  std::condition_variable cv;
  bool applied = false;
  bool found_then = false;
  f.store->put(key_of(1), "D\0\0\0\x04", f.deps_on({1}), 1000, 0, "SELECT 1", [&] {
    std::string out;
    const bool found = f.store->get(key_of(1), 1001, out);
    std::lock_guard lock(m);
    found_then = found;
    applied = true;
    cv.notify_all();
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return applied; });
  }
  CHECK(found_then);

  // Too large: refused at once, on the caller's thread.
  bool refused = false;
  f.store->put(key_of(2), std::string((1u << 20) + 1, 'x'), f.deps_on({1}), 1000, 0, "",
               [&] { refused = true; });
  CHECK(refused);
}

TEST_CASE("store: large responses are compressed and round-trip byte for byte") {
  store_fixture f;
  const std::string text = repetitive(200'000);
  const std::string noise = random_bytes(50'000, 7);  // does not compress: stored as it is
  f.store->put(key_of(1), text, {}, 0, 0, "q1");
  f.store->put(key_of(2), noise, {}, 0, 0, "q2");
  f.store->flush();

  std::string out;
  REQUIRE(f.store->get(key_of(1), 1, out));
  CHECK(out == text);
  out.clear();
  REQUIRE(f.store->get(key_of(2), 1, out));
  CHECK(out == noise);

  const auto entries = f.store->list(10);
  REQUIRE(entries.size() == 2);
  for (const auto& e : entries) {
    if (e.k == key_of(1)) CHECK(e.size < text.size() / 4);
    if (e.k == key_of(2)) CHECK(e.size > noise.size());
  }
}

TEST_CASE("store: an absent key is a miss and leaves the output alone") {
  store_fixture f;
  f.store->put(key_of(1), "x", {}, 0, 0, "");
  f.store->flush();
  std::string out = "unchanged";
  CHECK_FALSE(f.store->get(key_of(2), 0, out));
  CHECK_FALSE(f.store->get(key{key_of(1).low, 0}, 0, out));  // half a key matching is not a match
  CHECK(out == "unchanged");
  CHECK(f.store->stats().misses == 2);
  CHECK(f.store->stats().hits == 0);
}

TEST_CASE("store: a put replaces the entry under the same key") {
  store_fixture f;
  f.store->put(key_of(1), std::string(3000, 'a'), {}, 0, 0, "");
  f.store->put(key_of(1), "b", {}, 1, 0, "");
  f.store->flush();
  std::string out;
  REQUIRE(f.store->get(key_of(1), 2, out));
  CHECK(out == "b");
  CHECK(f.store->stats().entries == 1);
  CHECK(f.store->stats().bytes < 100);
  CHECK(f.store->stats().stores == 2);
}

TEST_CASE("store: entries expire at created + ttl, and the writer removes them") {
  store_options options;
  options.reclaim_interval_ms = 10;
  store_fixture f(options);
  f.store->put(key_of(1), "short", {}, 10'000, 1'000, "");
  f.store->put(key_of(2), "forever", {}, 10'000, 0, "");
  f.store->flush();

  std::string out;
  CHECK(f.store->get(key_of(1), 10'999, out));
  CHECK_FALSE(f.store->get(key_of(1), 11'000, out));
  CHECK(f.store->get(key_of(2), 1'000'000'000, out));
  CHECK(f.store->list(10).size() == 2);  // invisible is not yet gone

  // The writer's clock is the latest now_ms callers passed (10^9 here).
  CHECK(eventually([&] { return f.store->stats().expirations == 1; }));
  CHECK(f.store->stats().entries == 1);
  const auto entries = f.store->list(10);
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].k == key_of(2));
}

TEST_CASE("store: an entry whose dependencies moved on is a miss, then removed") {
  store_options options;
  options.reclaim_interval_ms = 10;
  store_fixture f(options);
  f.store->put(key_of(1), "reads 1 and 2", f.deps_on({1, 2}), 0, 0, "");
  f.store->put(key_of(2), "reads 3", f.deps_on({3}), 0, 0, "");
  f.store->flush();

  std::string out;
  CHECK(f.store->get(key_of(1), 1, out));
  ++f.generations[2];  // a write to relation 2
  CHECK_FALSE(f.store->get(key_of(1), 2, out));
  CHECK(f.store->get(key_of(2), 3, out));

  CHECK(eventually([&] { return f.store->stats().invalidations == 1; }));
  CHECK(f.store->stats().entries == 1);
  CHECK(f.store->list(10).at(0).k == key_of(2));
}

TEST_CASE("store: a result whose dependencies moved on before it was written is not stored") {
  store_fixture f;
  const auto deps = f.deps_on({1});  // captured when the query was sent
  ++f.generations[1];                // a write committed before the result arrived
  f.store->put(key_of(1), "stale", deps, 0, 0, "");
  f.store->put(key_of(2), "fresh", f.deps_on({1}), 0, 0, "");
  f.store->flush();
  std::string out;
  CHECK_FALSE(f.store->get(key_of(1), 1, out));
  CHECK(f.store->get(key_of(2), 1, out));
  CHECK(f.store->stats().rejected == 1);
  CHECK(f.store->stats().stores == 1);
  CHECK(f.store->stats().entries == 1);
}

TEST_CASE("store: responses over max_entry_size are rejected") {
  store_options options;
  options.max_entry_size = 1000;
  store_fixture f(options);
  f.store->put(key_of(1), std::string(1001, 'x'), {}, 0, 0, "");
  f.store->put(key_of(2), std::string(1000, 'x'), {}, 0, 0, "");
  f.store->put(key_of(3), "negative ttl", {}, 0, -1, "");
  f.store->flush();
  std::string out;
  CHECK_FALSE(f.store->get(key_of(1), 0, out));
  CHECK(f.store->get(key_of(2), 0, out));
  CHECK_FALSE(f.store->get(key_of(3), 0, out));
  CHECK(f.store->stats().rejected == 2);
  CHECK(f.store->stats().entries == 1);
}

TEST_CASE("store: labels are cut to about 200 bytes, not inside a character") {
  store_fixture f;
  std::string label = "SELECT '";
  while (label.size() < 1000) label += "é";  // 2 bytes each, starting at an even offset
  label.insert(0, 1, ' ');                   // now they start at odd offsets
  f.store->put(key_of(1), "r", {}, 0, 0, label);
  f.store->flush();
  const std::string stored = f.store->list(1).at(0).label;
  CHECK(stored.size() <= 200);
  CHECK(stored.size() >= 190);
  CHECK(label.compare(0, stored.size(), stored) == 0);
  CHECK((static_cast<unsigned char>(label[stored.size()]) & 0xc0) != 0x80);
}

TEST_CASE("store: erase_all removes what was queued before it, not after") {
  store_fixture f;
  for (std::uint64_t i = 0; i < 10; ++i) f.store->put(key_of(i), "v", {}, 0, 0, "");
  f.store->flush();
  f.store->put(key_of(10), "queued before", {}, 0, 0, "");
  f.store->erase_all();
  f.store->put(key_of(11), "queued after", {}, 0, 0, "");
  f.store->flush();
  std::string out;
  for (std::uint64_t i = 0; i <= 10; ++i) CHECK_FALSE(f.store->get(key_of(i), 0, out));
  CHECK(f.store->get(key_of(11), 0, out));
  CHECK(f.store->stats().entries == 1);
  CHECK(f.store->stats().invalidations == 11);
}

TEST_CASE("store: erase removes the entries named, in queue order, and counts those it found") {
  store_fixture f;
  for (std::uint64_t i = 0; i < 4; ++i) f.store->put(key_of(i), "v", {}, 0, 0, "");
  f.store->flush();
  f.store->put(key_of(4), "queued before", {}, 0, 0, "");
  f.store->erase({key_of(1), key_of(4), key_of(99)});
  f.store->put(key_of(1), "queued after", {}, 0, 0, "");
  f.store->flush();
  std::string out;
  CHECK(f.store->get(key_of(0), 0, out));
  CHECK(f.store->get(key_of(1), 0, out));  // stored again after the erase
  CHECK(out.ends_with("queued after"));
  CHECK(f.store->get(key_of(2), 0, out));
  CHECK_FALSE(f.store->get(key_of(4), 0, out));
  CHECK(f.store->stats().entries == 4);
  CHECK(f.store->stats().invalidations == 2);  // key 99 was never stored
}

TEST_CASE("store: beyond the budget, least recently used entries are evicted") {
  store_options options;
  options.max_size = 1 << 20;
  options.compress_min_size = 1 << 30;  // sizes stay exact
  store_fixture f(options);
  const std::size_t entry = 8 << 10;
  const std::uint64_t count = 10 * options.max_size / entry;  // 10x the budget

  f.store->put(key_of(0), random_bytes(entry, 0), {}, 0, 0, "hot");
  f.store->flush();
  std::string out;
  for (std::uint64_t i = 1; i <= count; ++i) {
    f.store->put(key_of(i), random_bytes(entry, i), {}, static_cast<std::int64_t>(i), 0, "");
    out.clear();
    CHECK(f.store->get(key_of(0), static_cast<std::int64_t>(i), out));  // keeps it recent
    if (i % 64 == 0) {
      f.store->flush();
      CHECK(f.store->stats().bytes <= options.max_size);
    }
  }
  f.store->flush();

  const store_stats s = f.store->stats();
  CHECK(s.failures == 0);
  CHECK(s.stores == count + 1);
  CHECK(s.bytes <= options.max_size);
  CHECK(s.bytes > options.max_size / 2);
  CHECK(s.evictions == count + 1 - s.entries);
  CHECK(s.entries == f.store->list(10'000).size());
  out.clear();
  CHECK(f.store->get(key_of(0), static_cast<std::int64_t>(count + 1), out));
  CHECK(out == random_bytes(entry, 0));

  // Sampled LRU: the survivors are mostly the latest entries.
  std::uint64_t old_survivors = 0;
  for (std::uint64_t i = 1; i <= count / 2; ++i) {
    if (f.store->get(key_of(i), static_cast<std::int64_t>(count + 2), out)) ++old_survivors;
  }
  CHECK(old_survivors < s.entries / 4);
}

TEST_CASE("store: reopening discards the entries of the earlier run") {
  store_fixture f;
  store_options options;
  options.path = f.dir.path() + "/cache";
  f.store->put(key_of(1), "from the first run", {}, 0, 0, "");
  f.store->flush();
  std::string out;
  REQUIRE(f.store->get(key_of(1), 0, out));

  // One store per directory at a time.
  std::string error;
  CHECK_FALSE(f.open(options, error));
  CHECK(error.find("in use") != std::string::npos);
  CHECK(error.find(options.path) != std::string::npos);

  f.store.reset();
  f.store = f.open(options, error);
  REQUIRE(f.store);
  CHECK_FALSE(f.store->get(key_of(1), 0, out));
  CHECK(f.store->stats().entries == 0);
  CHECK(f.store->list(10).empty());
  f.store->put(key_of(1), "second run", {}, 0, 0, "");
  f.store->flush();
  out.clear();
  CHECK(f.store->get(key_of(1), 0, out));
  CHECK(out == "second run");
}

namespace {

// Saves `checkpoint` and waits until the writer says whether it committed.
bool save(result_store& store, std::string checkpoint) {
  std::atomic<int> outcome = -1;
  store.save_checkpoint(std::move(checkpoint), [&](bool saved) { outcome = saved ? 1 : 0; });
  store.flush();
  return outcome == 1;
}

}  // namespace

TEST_CASE("store: kept entries are those the restored checkpoint proves still valid") {
  store_options options;
  options.keep_entries = true;
  store_fixture f(options);
  options.path = f.dir.path() + "/cache";
  f.store->put(key_of(1), "reads relation 1", f.deps_on({1}), 0, 0, "one");
  f.store->put(key_of(2), std::string(10000, 'x'), f.deps_on({2}), 0, 0, "two");
  REQUIRE(save(*f.store, std::string(5000, 'g') + "checkpoint 1"));
  REQUIRE(save(*f.store, std::string(5000, 'g') + "checkpoint 2"));  // replaces the first
  f.store.reset();

  std::string handed;
  const auto restore = [&](std::string_view checkpoint) {
    handed = checkpoint;
    f.generations[2] += 1;  // what the checkpoint says was written since
    return true;
  };
  std::string error;
  f.store = f.open(options, error, restore);
  REQUIRE(f.store);
  CHECK(handed == std::string(5000, 'g') + "checkpoint 2");
  std::string out;
  CHECK(f.store->get(key_of(1), 0, out));
  CHECK(out == "reads relation 1");
  CHECK_FALSE(f.store->get(key_of(2), 0, out));
  const store_stats stats = f.store->stats();
  CHECK(stats.entries == 1);
  CHECK(stats.invalidations == 1);
  REQUIRE(f.store->list(10).size() == 1);
  CHECK(f.store->list(10)[0].label == "one");
}

TEST_CASE("store: without the checkpoint's consent, or from another boot, entries are discarded") {
  store_options options;
  options.keep_entries = true;
  store_fixture f(options);
  options.path = f.dir.path() + "/cache";
  const auto fill = [&] {
    f.store->put(key_of(1), "earlier run", {}, 0, 0, "");
    f.store->flush();
    f.store.reset();
  };
  std::string error;
  std::string out;
  int restores = 0;

  SUBCASE("the checkpoint cannot prove them") {
    fill();
    f.store = f.open(options, error, [&](std::string_view checkpoint) {
      ++restores;
      CHECK(checkpoint.empty());  // none was saved
      return false;
    });
    CHECK(restores == 1);
  }
  SUBCASE("the machine restarted since: the files may be torn") {
    fill();
    {
      std::ofstream boot(options.path + "/boot", std::ios::trunc);
      boot << "pgstash cache format 1, boot of another day\n";
    }
    f.store = f.open(options, error, [&](std::string_view) { return ++restores, true; });
    CHECK(restores == 0);
  }
  SUBCASE("a checkpoint they needed could not be saved") {
    f.store->put(key_of(1), "earlier run", {}, 0, 0, "");
    REQUIRE(save(*f.store, "proof"));
    f.store->discard_at_next_open();
    f.store.reset();
    f.store = f.open(options, error, [&](std::string_view) { return ++restores, true; });
    CHECK(restores == 0);
  }
  SUBCASE("keep_entries is off") {
    fill();
    options.keep_entries = false;
    f.store = f.open(options, error, [&](std::string_view) { return ++restores, true; });
    CHECK(restores == 0);
  }
  REQUIRE(f.store);
  CHECK_FALSE(f.store->get(key_of(1), 0, out));
  CHECK(f.store->stats().entries == 0);
  // And what it stores now is kept by the next run.
  f.store->put(key_of(3), "this run", {}, 0, 0, "");
  REQUIRE(save(*f.store, "proof"));
  f.store.reset();
  options.keep_entries = true;
  f.store =
      f.open(options, error, [](std::string_view checkpoint) { return checkpoint == "proof"; });
  REQUIRE(f.store);
  CHECK(f.store->get(key_of(3), 0, out));
}

TEST_CASE("store: readers on four threads while the writer stores and evicts") {
  store_options options;
  options.max_size = 512 << 10;  // holds about half the keys: eviction runs too
  options.compress_min_size = 2048;
  store_fixture f(options);
  constexpr std::uint64_t keys = 64;
  // Each key always holds the same bytes, so any hit can be checked.
  const auto value_of = [](std::uint64_t i) {
    return i % 2 ? repetitive(1000 + i * 200) : random_bytes(1000 + i * 200, i);
  };
  std::vector<std::string> values;
  for (std::uint64_t i = 0; i < keys; ++i) values.push_back(value_of(i));

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> hits{0}, wrong{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      std::string out;
      for (std::uint64_t n = t; !stop.load(); ++n) {
        const std::uint64_t i = (n * 7) % keys;
        out.clear();
        if (f.store->get(key_of(i), static_cast<std::int64_t>(n), out)) {
          ++hits;
          if (out != values[i]) ++wrong;
        }
      }
    });
  }
  for (int round = 0; round < 20; ++round) {
    for (std::uint64_t i = 0; i < keys; ++i) {
      f.store->put(key_of(i), values[i], {}, round, 0, "");
    }
    if (round % 5 == 2) f.store->erase_all();
    f.store->flush();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  stop = true;
  for (auto& t : readers) t.join();

  CHECK(wrong == 0);
  CHECK(hits > 0);
  CHECK(f.store->stats().failures == 0);
  CHECK(f.store->stats().bytes <= options.max_size);
}
