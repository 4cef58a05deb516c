#include "wire/auth.hpp"

#include <algorithm>
#include <charconv>
#include <climits>
#include <utility>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "wire/random.hpp"

namespace pgstash::wire {
namespace {

constexpr std::string_view k_scram_prefix = "SCRAM-SHA-256$";

const unsigned char* bytes_of(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string_view as_view(const scram_key& k) {
  return {reinterpret_cast<const char*>(k.data()), k.size()};
}

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    s.push_back(k_digits[p[i] >> 4]);
    s.push_back(k_digits[p[i] & 0xf]);
  }
  return s;
}

std::string md5_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  return hex(md, len);
}

scram_key sha256(std::string_view data) {
  scram_key k{};
  EVP_Digest(data.data(), data.size(), k.data(), nullptr, EVP_sha256(), nullptr);
  return k;
}

scram_key hmac_sha256(std::string_view key, std::string_view data) {
  scram_key k{};
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), bytes_of(data), data.size(),
       k.data(), nullptr);
  return k;
}

scram_key xor_keys(const scram_key& a, const scram_key& b) {
  scram_key r{};
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = a[i] ^ b[i];
  return r;
}

// SaltedPassword := Hi(password, salt, i), PBKDF2 with HMAC-SHA-256.
scram_key salted_password(std::string_view password, std::string_view salt, int iterations) {
  scram_key salted{};
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), bytes_of(salt),
                    static_cast<int>(salt.size()), iterations, EVP_sha256(),
                    static_cast<int>(salted.size()), salted.data());
  return salted;
}

bool equal_ct(const scram_key& a, const scram_key& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::optional<scram_key> decode_key(std::string_view b64) {
  const auto raw = base64_decode(b64);
  if (!raw || raw->size() != scram_key{}.size()) return std::nullopt;
  scram_key k{};
  std::copy(raw->begin(), raw->end(), k.begin());
  return k;
}

// A positive decimal int with nothing around it.
std::optional<int> parse_iterations(std::string_view s) {
  int v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
}

// Cuts `s` at the first `sep`: returns the head, leaves the tail in `s`
// (or empties it when `sep` is absent).
std::string_view split_off(std::string_view& s, char sep) {
  const auto at = s.find(sep);
  const auto head = s.substr(0, at);
  s = at == std::string_view::npos ? std::string_view{} : s.substr(at + 1);
  return head;
}

// The value of a SCRAM attribute "<name>=<value>", or nullopt.
std::optional<std::string_view> attr(std::string_view field, char name) {
  if (field.size() < 2 || field[0] != name || field[1] != '=') return std::nullopt;
  return field.substr(2);
}

// RFC 5802's "printable" minus ',': what a nonce may contain.
bool valid_nonce(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

// Extensions are "<letter>=<value>"; PostgreSQL ignores them, so do we.
bool valid_extensions(std::string_view rest) {
  while (!rest.empty()) {
    const auto field = split_off(rest, ',');
    if (field.size() < 2 || field[1] != '=') return false;
  }
  return true;
}

}  // namespace

std::string md5_password_hash(std::string_view user, std::string_view password) {
  std::string in(password);
  in.append(user);
  return "md5" + md5_hex(in);
}

std::string md5_salted_response(std::string_view user, std::string_view stored,
                                std::string_view salt4) {
  // A stored md5 hash already is md5(password + user); strip its prefix.
  const bool hashed = stored.size() == 35 && stored.substr(0, 3) == "md5" &&
                      stored.find_first_not_of("0123456789abcdef", 3) == std::string_view::npos;
  std::string in =
      hashed ? std::string(stored.substr(3)) : md5_password_hash(user, stored).substr(3);
  in.append(salt4);
  return "md5" + md5_hex(in);
}

std::optional<scram_secret> parse_scram_secret(std::string_view text) {
  if (text.substr(0, k_scram_prefix.size()) != k_scram_prefix) return std::nullopt;
  text.remove_prefix(k_scram_prefix.size());
  const auto iterations = parse_iterations(split_off(text, ':'));
  const auto salt = base64_decode(split_off(text, '$'));
  const auto stored_key = decode_key(split_off(text, ':'));
  const auto server_key = decode_key(text);
  if (!iterations || !salt || salt->empty() || !stored_key || !server_key) return std::nullopt;
  return scram_secret{*iterations, *salt, *stored_key, *server_key};
}

std::string format_scram_secret(const scram_secret& s) {
  return std::string(k_scram_prefix) + std::to_string(s.iterations) + ":" + base64_encode(s.salt) +
         "$" + base64_encode(as_view(s.stored_key)) + ":" + base64_encode(as_view(s.server_key));
}

scram_secret make_scram_secret(std::string_view password, std::string_view salt, int iterations) {
  auto salted = salted_password(password, salt, iterations);
  const auto client_key = hmac_sha256(as_view(salted), "Client Key");
  scram_secret s;
  s.iterations = iterations;
  s.salt = std::string(salt);
  s.stored_key = sha256(as_view(client_key));
  s.server_key = hmac_sha256(as_view(salted), "Server Key");
  OPENSSL_cleanse(salted.data(), salted.size());
  return s;
}

std::string stable_salt(std::string_view key, std::string_view user) {
  const scram_key mac = hmac_sha256(key, user);
  return std::string(reinterpret_cast<const char*>(mac.data()), 16);
}

scram_secret stand_in_scram_secret(std::string_view salt) {
  scram_secret s;
  s.salt = std::string(salt);
  const std::string keys = random_bytes(2 * s.stored_key.size());
  std::copy_n(keys.begin(), s.stored_key.size(), s.stored_key.begin());
  std::copy_n(keys.begin() + s.stored_key.size(), s.server_key.size(), s.server_key.begin());
  return s;
}

std::string base64_encode(std::string_view raw) {
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');  // EVP_EncodeBlock adds a NUL
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes_of(raw),
                                static_cast<int>(raw.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  // EVP_DecodeBlock skips surrounding whitespace and counts padding as
  // zero bytes; validate the canonical form first, then drop the padding.
  if (text.size() % 4 != 0 || text.size() > INT_MAX) return std::nullopt;
  std::size_t padding = 0;
  if (!text.empty() && text.back() == '=') ++padding;
  if (text.size() >= 2 && text[text.size() - 2] == '=') ++padding;
  const auto body = text.substr(0, text.size() - padding);
  const bool alphabet_only =
      body.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") ==
      std::string_view::npos;
  if (!alphabet_only) return std::nullopt;  // also catches '=' before the end
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes_of(text),
                                static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

// --- scram_server ----------------------------------------------------------

scram_server::scram_server(scram_secret secret, std::string server_nonce)
    : secret_(std::move(secret)), server_nonce_(std::move(server_nonce)) {}

std::optional<std::string> scram_server::handle_client_first(std::string_view client_first) {
  // GS2 header: "n,," (no channel binding) or "y,," (client could bind but
  // thinks we can't, true since we never offer SCRAM-SHA-256-PLUS). "p="
  // asks for binding, and an authzid ("n,a=...,") PostgreSQL refuses too.
  const auto gs2 = client_first.substr(0, 3);
  if (gs2 != "n,," && gs2 != "y,,") return std::nullopt;
  std::string_view bare = client_first.substr(3);

  // client-first-message-bare: "n=<user>,r=<nonce>[,extensions]". The
  // user name is whatever the startup packet said, so n= is ignored.
  std::string_view rest = bare;
  const auto user = attr(split_off(rest, ','), 'n');
  const auto nonce = attr(split_off(rest, ','), 'r');
  if (!user || !nonce || !valid_nonce(*nonce) || !valid_extensions(rest)) return std::nullopt;

  gs2_header_ = std::string(gs2);
  client_first_bare_ = std::string(bare);
  combined_nonce_ = std::string(*nonce) + server_nonce_;
  server_first_ = "r=" + combined_nonce_ + ",s=" + base64_encode(secret_.salt) +
                  ",i=" + std::to_string(secret_.iterations);
  return server_first_;
}

std::optional<std::string> scram_server::handle_client_final(std::string_view client_final) {
  if (server_first_.empty()) return std::nullopt;  // no client-first yet
  // One attempt per exchange, so a client cannot try proof after proof.
  const std::string server_first = std::exchange(server_first_, {});

  // "c=<b64 gs2 header>,r=<nonce>[,extensions],p=<b64 proof>"; the proof
  // is last, and the AuthMessage covers everything before it.
  const auto proof_at = client_final.rfind(",p=");
  if (proof_at == std::string_view::npos) return std::nullopt;
  const auto without_proof = client_final.substr(0, proof_at);
  const auto proof = decode_key(client_final.substr(proof_at + 3));

  std::string_view rest = without_proof;
  const auto binding = attr(split_off(rest, ','), 'c');
  const auto nonce = attr(split_off(rest, ','), 'r');
  if (!proof || !binding || !nonce || !valid_extensions(rest)) return std::nullopt;
  if (*binding != base64_encode(gs2_header_) || *nonce != combined_nonce_) return std::nullopt;

  const std::string auth_message =
      client_first_bare_ + "," + server_first + "," + std::string(without_proof);
  // The proof is ClientKey XOR HMAC(StoredKey, AuthMessage); recover
  // ClientKey and check it hashes to the StoredKey we hold.
  const auto client_signature = hmac_sha256(as_view(secret_.stored_key), auth_message);
  const auto client_key = xor_keys(*proof, client_signature);
  if (!equal_ct(sha256(as_view(client_key)), secret_.stored_key)) return std::nullopt;

  client_key_ = client_key;
  const auto server_signature = hmac_sha256(as_view(secret_.server_key), auth_message);
  return "v=" + base64_encode(as_view(server_signature));
}

// --- scram_client ----------------------------------------------------------

scram_client::scram_client(std::string password, std::string client_nonce)
    : password_(std::move(password)), client_nonce_(std::move(client_nonce)) {}

scram_client::scram_client(scram_key client_key, scram_key server_key, std::string client_nonce)
    : client_key_(client_key), server_key_(server_key), client_nonce_(std::move(client_nonce)) {}

std::string scram_client::client_first() const { return "n,,n=,r=" + client_nonce_; }

std::optional<std::string> scram_client::handle_server_first(std::string_view server_first) {
  // "r=<client nonce><server nonce>,s=<b64 salt>,i=<iterations>[,ext]".
  std::string_view rest = server_first;
  const auto nonce = attr(split_off(rest, ','), 'r');
  const auto salt_b64 = attr(split_off(rest, ','), 's');
  const auto iterations_text = attr(split_off(rest, ','), 'i');
  if (!nonce || !salt_b64 || !iterations_text || !valid_extensions(rest)) return std::nullopt;
  // The server must extend our nonce, or a replayed exchange could pass.
  if (nonce->size() <= client_nonce_.size() ||
      nonce->substr(0, client_nonce_.size()) != client_nonce_ || !valid_nonce(*nonce)) {
    return std::nullopt;
  }
  const auto salt = base64_decode(*salt_b64);
  const auto iterations = parse_iterations(*iterations_text);
  if (!salt || salt->empty() || !iterations) return std::nullopt;

  if (password_) {
    auto salted = salted_password(*password_, *salt, *iterations);
    client_key_ = hmac_sha256(as_view(salted), "Client Key");
    server_key_ = hmac_sha256(as_view(salted), "Server Key");
    OPENSSL_cleanse(salted.data(), salted.size());
  }
  const std::string without_proof = "c=biws,r=" + std::string(*nonce);
  auth_message_ = client_first().substr(3) + "," + std::string(server_first) + "," + without_proof;
  const auto stored_key = sha256(as_view(client_key_));
  const auto proof = xor_keys(client_key_, hmac_sha256(as_view(stored_key), auth_message_));
  expected_server_signature_ = hmac_sha256(as_view(server_key_), auth_message_);
  return without_proof + ",p=" + base64_encode(as_view(proof));
}

bool scram_client::verify_server_final(std::string_view server_final) const {
  if (auth_message_.empty()) return false;  // no server-first yet
  // "v=<b64 ServerSignature>[,ext]"; "e=<error>" fails here too.
  std::string_view rest = server_final;
  const auto verifier = attr(split_off(rest, ','), 'v');
  if (!verifier || !valid_extensions(rest)) return false;
  const auto signature = decode_key(*verifier);
  return signature && equal_ct(*signature, expected_server_signature_);
}

}  // namespace pgstash::wire
