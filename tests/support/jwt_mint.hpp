// Test helpers that mint JWTs the way an app's backend would, with libjwt, and make
// throwaway RSA/EC key pairs with OpenSSL.
#pragma once

#include <jwt.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

namespace lockstep::test {

inline std::int64_t
unix_now()
{
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/// Signs `claims` with `alg` ("HS256", "RS256", "ES256", "none") and `key` (secret or
/// PEM private key).
inline std::string
mint(nlohmann::json const& claims, std::string const& key, char const* alg = "HS256")
{
    jwt_t* j = nullptr;
    if (jwt_new(&j) != 0)
        throw std::runtime_error("jwt_new");
    std::unique_ptr<jwt_t, decltype(&jwt_free)> owner(j, &jwt_free);
    if (jwt_add_grants_json(j, claims.dump().c_str()) != 0)
        throw std::runtime_error("jwt_add_grants_json");
    auto a = jwt_str_alg(alg);
    int rc = a == JWT_ALG_NONE ? jwt_set_alg(j, a, nullptr, 0)
                               : jwt_set_alg(j, a, reinterpret_cast<unsigned char const*>(key.data()),
                                             static_cast<int>(key.size()));
    if (rc != 0)
        throw std::runtime_error("jwt_set_alg");
    std::unique_ptr<char, decltype(&free)> s(jwt_encode_str(j), &free);
    if (!s)
        throw std::runtime_error("jwt_encode_str");
    return s.get();
}

/// A user token for `sub`, valid for an hour, with extra claims merged in.
inline std::string
user_token(std::string const& secret, std::string const& sub = "alice", nlohmann::json extra = nlohmann::json::object())
{
    nlohmann::json c = {{"sub", sub}, {"exp", unix_now() + 3600}};
    c.update(extra);
    return mint(c, secret);
}

struct key_pair {
    std::string private_pem, public_pem;
};

/// A fresh RSA-2048 ("RSA") or P-256 ("EC") key pair in PEM.
inline key_pair
make_key_pair(char const* type)
{
    EVP_PKEY* k = std::string(type) == "RSA" ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{2048})
                                             : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    if (!k)
        throw std::runtime_error("keygen");
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(k, &EVP_PKEY_free);
    auto pem = [](auto write) {
        std::unique_ptr<BIO, decltype(&BIO_free)> b(BIO_new(BIO_s_mem()), &BIO_free);
        write(b.get());
        char* p = nullptr;
        long n = BIO_get_mem_data(b.get(), &p);
        return std::string(p, static_cast<std::size_t>(n));
    };
    key_pair kp;
    kp.private_pem = pem([&](BIO* b) { PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr); });
    kp.public_pem = pem([&](BIO* b) { PEM_write_bio_PUBKEY(b, key.get()); });
    return kp;
}

}  // namespace lockstep::test
