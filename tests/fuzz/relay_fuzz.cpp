// libFuzzer target for the session's pure core: proxy/relay with its
// response queue and statement map, in transaction mode. The input is a
// script of steps: client frames from a small vocabulary that makes names
// collide and reaches every rewrite (named and unnamed statements, DEALLOCATE
// and PREPARE through both protocols, pipelines, Sync), server answers of any
// kind in any order (the fuzzer plays a confused or hostile server), and
// moves to another server connection. Findings: a crash, a sanitizer
// report, or a broken invariant: every byte for the server or for the
// client is a sequence of well-formed frames, and an idle relay owes nothing.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "pool/server_state.hpp"
#include "proxy/relay.hpp"
#include "wire/framing.hpp"
#include "wire/message_writer.hpp"
#include "wire/tags.hpp"

using namespace pgstash;

namespace {

void check_frames(std::string_view bytes) {
  while (!bytes.empty()) {
    const auto h = wire::decode_header(bytes, wire::phase::normal, 1u << 30);
    if (h.status != wire::decode_status::message || h.header.frame_size() > bytes.size())
      __builtin_trap();
    bytes.remove_prefix(h.header.frame_size());
  }
}

class script {
 public:
  explicit script(std::string_view in) : in_(in) {}
  bool done() const { return in_.empty(); }
  std::uint8_t byte() {
    if (in_.empty()) return 0;
    const auto b = static_cast<std::uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return b;
  }
  template <std::size_t N>
  const char* pick(const char* const (&choices)[N]) {
    return choices[byte() % N];
  }

 private:
  std::string_view in_;
};

const char* const k_names[] = {"", "s1", "s2", "_pg3_0"};
const char* const k_portals[] = {"", "p1"};
const char* const k_sql[] = {
    "select 1",         "select $1",     "select aaaa",           "DEALLOCATE s1",
    "DEALLOCATE _pg3_0", "DEALLOCATE ALL", "PREPARE p AS SELECT 1", "EXECUTE p",
    "DEALLOCATE p",     "SET a.b = 1",   "BEGIN",                 "COMMIT",
    "DISCARD ALL",      "select 1; select 2"};
const char* const k_command_tags[] = {"SELECT 1", "PREPARE", "DEALLOCATE", "SET", "BEGIN", "COMMIT",
                                      "ROLLBACK", "DISCARD ALL", ""};

std::string client_frame(script& s) {
  std::string out;
  switch (s.byte() % 9) {
    case 0: wire::write_parse(out, s.pick(k_names), s.pick(k_sql)); break;
    case 1: wire::write_bind(out, s.pick(k_portals), s.pick(k_names)); break;
    case 2: wire::write_describe(out, s.byte() % 2 ? 'S' : 'P', s.pick(k_names)); break;
    case 3: wire::write_execute(out, s.pick(k_portals), s.byte() % 3); break;
    case 4: wire::write_close(out, s.byte() % 2 ? 'S' : 'P', s.pick(k_names)); break;
    case 5: wire::write_sync(out); break;
    case 6: wire::write_query(out, s.pick(k_sql)); break;
    case 7: wire::write_frame(out, 'H', {}); break;
    default: wire::write_frame(out, 'd', "copy data"); break;
  }
  return out;
}

void server_frame(script& s, proxy::relay& r) {
  using wire::backend_tag;
  std::string body;
  backend_tag tag;
  switch (s.byte() % 12) {
    case 0: tag = backend_tag::parse_complete; break;
    case 1: tag = backend_tag::bind_complete; break;
    case 2: tag = backend_tag::close_complete; break;
    case 3: tag = backend_tag::no_data; break;
    case 4: tag = backend_tag::row_description; break;
    case 5: tag = backend_tag::data_row; break;
    case 6: tag = backend_tag::portal_suspended; break;
    case 7: tag = backend_tag::empty_query_response; break;
    case 8:
      tag = backend_tag::command_complete;
      body = std::string(s.pick(k_command_tags)) + '\0';
      break;
    case 9: {
      tag = backend_tag::error_response;
      std::string e;
      wire::write_error(e, "ERROR", s.byte() % 2 ? "0A000" : "42703",
                        "cached plan must not change result type");
      body = e.substr(5);
      break;
    }
    case 10:
      tag = backend_tag::ready_for_query;
      body = std::string(1, "ITE"[s.byte() % 3]);
      break;
    default: tag = backend_tag::copy_in_response; break;
  }
  r.on_server_frame(static_cast<char>(tag), body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  script s(std::string_view(reinterpret_cast<const char*>(data), size));
  proxy::relay::options options;
  options.transaction_mode = true;
  options.replay_limit = 256;
  proxy::relay r(options, {{"application_name", "fuzz"}});
  pool::server_state servers[2] = {pool::server_state(3), pool::server_state(3)};
  std::string client_bytes;
  while (!s.done()) {
    const std::uint8_t step = s.byte() % 8;
    if (step < 4) {
      const std::string frame = client_frame(s);
      proxy::relay::plan p = r.plan_frame(frame[0], frame);
      if (p.where == proxy::relay::route::to_server && !r.attached()) {
        r.attach(servers[s.byte() % 2]);
        r.settings_sql();
      }
      r.on_client_frame(frame[0], frame, p);
    } else if (step < 7) {
      if (r.attached()) server_frame(s, r);
    } else if (r.attached() && r.idle()) {
      r.detach();
    }
    check_frames(r.to_server());
    r.to_server().clear();
    const std::string replay = r.take_replay();
    check_frames(replay);
    r.take_synthetic(client_bytes);
    check_frames(client_bytes);
    client_bytes.clear();
    if (r.idle() && r.owed()) __builtin_trap();
  }
  return 0;
}
