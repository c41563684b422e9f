#include "client/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zlib.h>

#include <cstring>
#include <memory>
#include <stdexcept>

namespace lockstep::client::detail {

namespace {

constexpr std::size_t iv_bytes = 16;
constexpr std::size_t mac_bytes = 32;
constexpr std::string_view binary_magic = "CRQ1";

std::string
hmac(key256 const& key, std::string_view data)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<unsigned char const*>(data.data()), data.size(), md, &len);
    return std::string(reinterpret_cast<char*>(md), len);
}

std::string
random_bytes(std::size_t n)
{
    std::string out(n, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
        throw std::runtime_error("RAND_bytes failed");
    return out;
}

struct cipher_ctx_free {
    void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

// AES-256-CBC with PKCS#7 padding; nullopt on a padding error (decrypt).
std::optional<std::string>
aes_cbc(key256 const& key, std::string_view iv, std::string_view in, bool encrypt)
{
    std::unique_ptr<EVP_CIPHER_CTX, cipher_ctx_free> ctx(EVP_CIPHER_CTX_new());
    if (!ctx)
        return std::nullopt;
    auto ivp = reinterpret_cast<unsigned char const*>(iv.data());
    if (EVP_CipherInit_ex(ctx.get(), EVP_aes_256_cbc(), nullptr, key.data(), ivp, encrypt ? 1 : 0) != 1)
        return std::nullopt;
    std::string out(in.size() + 32, '\0');
    int n1 = 0, n2 = 0;
    auto o = reinterpret_cast<unsigned char*>(out.data());
    if (EVP_CipherUpdate(ctx.get(), o, &n1, reinterpret_cast<unsigned char const*>(in.data()),
                         static_cast<int>(in.size())) != 1)
        return std::nullopt;
    if (EVP_CipherFinal_ex(ctx.get(), o + n1, &n2) != 1)
        return std::nullopt;
    out.resize(static_cast<std::size_t>(n1 + n2));
    return out;
}

}  // namespace

std::string
sha256_b64url(std::string_view data)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<unsigned char const*>(data.data()), data.size(), md);
    std::string b = base64(std::string_view(reinterpret_cast<char*>(md), sizeof md));
    for (auto& c : b) {
        if (c == '+')
            c = '-';
        else if (c == '/')
            c = '_';
    }
    while (!b.empty() && b.back() == '=')
        b.pop_back();
    return b;
}

std::string
base64(std::string_view data)
{
    std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<unsigned char const*>(data.data()), static_cast<int>(data.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::optional<std::string>
unbase64(std::string_view text)
{
    if (text.size() % 4 != 0)
        return std::nullopt;
    std::string out(3 * text.size() / 4 + 1, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<unsigned char const*>(text.data()), static_cast<int>(text.size()));
    if (n < 0)
        return std::nullopt;
    // EVP_DecodeBlock keeps the bytes that padding stands for; drop them.
    std::size_t pad = 0;
    if (!text.empty() && text.back() == '=')
        pad = (text.size() >= 2 && text[text.size() - 2] == '=') ? 2 : 1;
    out.resize(static_cast<std::size_t>(n) - pad);
    return out;
}

key256
derive_key(std::string_view password)
{
    key256 key{};
    unsigned char const salt[1] = {0};
    PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt, 0, 1, EVP_sha1(),
                      static_cast<int>(key.size()), key.data());
    return key;
}

namespace {

struct sealed {
    std::string iv, mac, ciphertext;
};

sealed
seal(key256 const& key, std::string_view plaintext)
{
    sealed s{random_bytes(iv_bytes), hmac(key, plaintext), {}};
    auto ct = aes_cbc(key, s.iv, plaintext, true);
    if (!ct)
        throw std::runtime_error("AES encryption failed");
    s.ciphertext = std::move(*ct);
    return s;
}

// The plaintext if the HMAC matches.
std::optional<std::string>
open_sealed(key256 const& key, std::string_view iv, std::string_view mac, std::string_view ciphertext)
{
    auto pt = aes_cbc(key, iv, ciphertext, false);
    if (!pt || mac.size() != mac_bytes)
        return std::nullopt;
    auto expect = hmac(key, *pt);
    if (CRYPTO_memcmp(expect.data(), mac.data(), mac_bytes) != 0)
        return std::nullopt;
    return pt;
}

}  // namespace

std::string
encrypt_text(key256 const& key, std::string_view plaintext)
{
    auto s = seal(key, plaintext);
    return base64(s.iv) + base64(s.mac) + base64(s.ciphertext);
}

std::optional<std::string>
decrypt_text(key256 const& key, std::string_view text)
{
    // base64 of 16 bytes is 24 characters, of 32 bytes 44.
    if (text.size() < 24 + 44 + 4)
        return std::nullopt;
    auto iv = unbase64(text.substr(0, 24));
    auto mac = unbase64(text.substr(24, 44));
    auto ct = unbase64(text.substr(68));
    if (!iv || !mac || !ct || iv->size() != iv_bytes)
        return std::nullopt;
    return open_sealed(key, *iv, *mac, *ct);
}

std::string
encrypt_binary(key256 const& key, std::string_view plaintext)
{
    auto s = seal(key, plaintext);
    return std::string(binary_magic) + s.iv + s.mac + s.ciphertext;
}

bool
is_encrypted_binary(std::string_view data)
{
    return data.substr(0, binary_magic.size()) == binary_magic;
}

std::optional<std::string>
decrypt_binary(key256 const& key, std::string_view data)
{
    std::size_t head = binary_magic.size() + iv_bytes + mac_bytes;
    if (!is_encrypted_binary(data) || data.size() < head)
        return std::nullopt;
    auto iv = data.substr(binary_magic.size(), iv_bytes);
    auto mac = data.substr(binary_magic.size() + iv_bytes, mac_bytes);
    return open_sealed(key, iv, mac, data.substr(head));
}

std::string
gzip(std::string_view data)
{
    z_stream zs{};
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        throw std::runtime_error("deflateInit2 failed");
    std::string out(deflateBound(&zs, static_cast<uLong>(data.size())) + 32, '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    zs.avail_in = static_cast<uInt>(data.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    int rc = deflate(&zs, Z_FINISH);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    if (rc != Z_STREAM_END)
        throw std::runtime_error("gzip failed");
    return out;
}

std::optional<std::string>
gunzip(std::string_view data, std::size_t max_bytes)
{
    z_stream zs{};
    if (inflateInit2(&zs, 15 + 16) != Z_OK)
        return std::nullopt;
    std::string out;
    char buf[16384];
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    zs.avail_in = static_cast<uInt>(data.size());
    int rc = Z_OK;
    while (rc == Z_OK) {
        zs.next_out = reinterpret_cast<Bytef*>(buf);
        zs.avail_out = sizeof buf;
        rc = inflate(&zs, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END)
            break;
        out.append(buf, sizeof buf - zs.avail_out);
        if (out.size() > max_bytes) {
            rc = Z_MEM_ERROR;
            break;
        }
        if (rc == Z_OK && zs.avail_in == 0 && zs.avail_out != 0) {
            rc = Z_DATA_ERROR;  // truncated stream
            break;
        }
    }
    inflateEnd(&zs);
    if (rc != Z_STREAM_END)
        return std::nullopt;
    return out;
}

std::string
random_base36(std::size_t n)
{
    static char const digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    std::string bytes = random_bytes(n);
    std::string out(n, '0');
    for (std::size_t i = 0; i < n; ++i)
        out[i] = digits[static_cast<unsigned char>(bytes[i]) % 36];
    return out;
}

}  // namespace lockstep::client::detail
