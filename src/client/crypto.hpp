// Hashes, end-to-end encryption and compression for the client SDK (OpenSSL, zlib).
//
// Formats (compatible with the Croquet/Multisynq client, docs/sdk.md "Encryption"):
//  * key = PBKDF2-HMAC-SHA1(password, empty salt, 1 iteration, 32 bytes)
//  * text: base64(IV 16 bytes) + base64(HMAC-SHA256(key, plaintext)) + base64(AES-256-CBC)
//  * binary (snapshots): "CRQ1" + IV (16) + HMAC-SHA256 (32) + AES-256-CBC ciphertext
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace lockstep::client::detail {

std::string sha256_b64url(std::string_view data);
std::string base64(std::string_view data);
std::optional<std::string> unbase64(std::string_view text);

using key256 = std::array<unsigned char, 32>;
key256 derive_key(std::string_view password);

std::string encrypt_text(key256 const& key, std::string_view plaintext);
/// nullopt when malformed or when the HMAC does not match (wrong key or forged).
std::optional<std::string> decrypt_text(key256 const& key, std::string_view text);

std::string encrypt_binary(key256 const& key, std::string_view plaintext);
std::optional<std::string> decrypt_binary(key256 const& key, std::string_view data);
bool is_encrypted_binary(std::string_view data);

std::string gzip(std::string_view data);
std::optional<std::string> gunzip(std::string_view data, std::size_t max_bytes);

/// `n` random characters from [0-9a-z] (view ids; not for model code).
std::string random_base36(std::size_t n);

}  // namespace lockstep::client::detail
