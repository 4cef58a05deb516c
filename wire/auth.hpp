// Password-authentication math, both sides: md5 (PostgreSQL's
// "md5" + md5(md5(password + user) + salt)) and SCRAM-SHA-256 (RFC 5802 /
// RFC 7677 as PostgreSQL implements it, without channel binding). Uses
// OpenSSL's digests; no I/O. Nonces and salts are passed in, so tests are
// deterministic; the caller draws them from a CSPRNG.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgstash::wire {

// "md5" + hex(md5(password + user)): what pg_authid stores for md5 users.
std::string md5_password_hash(std::string_view user, std::string_view password);
// The PasswordMessage answering AuthenticationMD5Password. `stored` is
// either the cleartext password or an md5_password_hash() value.
std::string md5_salted_response(std::string_view user, std::string_view stored,
                                std::string_view salt4);

using scram_key = std::array<std::uint8_t, 32>;

// A SCRAM-SHA-256 verifier as PostgreSQL stores it:
// "SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>".
struct scram_secret {
  int iterations = 4096;
  std::string salt;  // raw bytes
  scram_key stored_key{};
  scram_key server_key{};
};
std::optional<scram_secret> parse_scram_secret(std::string_view text);
std::string format_scram_secret(const scram_secret& s);
// PBKDF2-HMAC-SHA-256 derivation from a password. The password is used as
// given (ASCII passwords are unchanged by SASLprep).
// REQUIRES: iterations > 0.
scram_secret make_scram_secret(std::string_view password, std::string_view salt, int iterations);
// A 16-byte salt that is the same for `user` at every login with the same
// `key` (HMAC-SHA-256 of the name), and unrelated across users; as
// PostgreSQL's mock salt, so that a client cannot tell a made-up salt from
// a stored one by connecting twice.
std::string stable_salt(std::string_view key, std::string_view user);
// A verifier no password matches (random keys, 4096 iterations), with
// `salt`: what an exchange runs against when there is nothing to check.
scram_secret stand_in_scram_secret(std::string_view salt);

std::string base64_encode(std::string_view raw);
std::optional<std::string> base64_decode(std::string_view text);

// The server side of one SCRAM-SHA-256 exchange. Single use: after
// handle_client_final(), whatever its outcome, it accepts no further
// client-final message.
class scram_server {
 public:
  // REQUIRES: server_nonce is non-empty printable ASCII without ','.
  scram_server(scram_secret secret, std::string server_nonce);
  // client-first-message ("n,,n=,r=<nonce>") -> server-first-message, or
  // nullopt if malformed or it asks for channel binding.
  std::optional<std::string> handle_client_first(std::string_view client_first);
  // client-final-message -> server-final-message ("v=<signature>"), or
  // nullopt if malformed, the nonce differs, or the proof is wrong.
  std::optional<std::string> handle_client_final(std::string_view client_final);
  // After a successful handle_client_final: the client's ClientKey, which
  // lets pgstash authenticate to a server holding the same verifier.
  const scram_key& client_key() const { return client_key_; }

 private:
  scram_secret secret_;
  std::string server_nonce_;
  std::string gs2_header_;  // "n,," or "y,,": what c= must encode
  std::string client_first_bare_;
  std::string server_first_;
  std::string combined_nonce_;
  scram_key client_key_{};
};

// The client side of one SCRAM-SHA-256 exchange, with either a password or
// the keys recovered by scram_server (ClientKey plus the verifier's
// ServerKey, usable when the server's salt and iterations match).
class scram_client {
 public:
  // REQUIRES: client_nonce is non-empty printable ASCII without ','.
  scram_client(std::string password, std::string client_nonce);
  scram_client(scram_key client_key, scram_key server_key, std::string client_nonce);
  std::string client_first() const;  // "n,,n=,r=<nonce>"
  // server-first-message -> client-final-message, or nullopt if malformed
  // or the server nonce does not extend ours.
  std::optional<std::string> handle_server_first(std::string_view server_first);
  // true if the server's signature proves it knows the verifier.
  bool verify_server_final(std::string_view server_final) const;

 private:
  std::optional<std::string> password_;
  scram_key client_key_{};
  scram_key server_key_{};
  std::string client_nonce_;
  std::string auth_message_;
  scram_key expected_server_signature_{};
};

}  // namespace pgstash::wire
