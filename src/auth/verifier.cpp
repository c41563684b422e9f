#include "auth/verifier.hpp"

#include "auth/token.hpp"

#include <jwt.h>
#include <nlohmann/json.hpp>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>

namespace lockstep::auth {
namespace {

struct jwt_deleter {
    void operator()(jwt_t* j) const noexcept { jwt_free(j); }
};
using jwt_ptr = std::unique_ptr<jwt_t, jwt_deleter>;

bool
alg_fits(verifier::kind k, jwt_alg_t alg) noexcept
{
    switch (k) {
    case verifier::kind::hmac:
        return alg == JWT_ALG_HS256 || alg == JWT_ALG_HS384 || alg == JWT_ALG_HS512;
    case verifier::kind::rsa:
        return alg == JWT_ALG_RS256 || alg == JWT_ALG_RS384 || alg == JWT_ALG_RS512;
    case verifier::kind::ec:
        return alg == JWT_ALG_ES256 || alg == JWT_ALG_ES384 || alg == JWT_ALG_ES512;
    }
    return false;
}

/// The `alg` of the token's header, read without trusting anything else in it.
std::string
header_alg(std::string_view token)
{
    auto dot = token.find('.');
    if (dot == std::string_view::npos)
        return {};
    auto part = std::string(token.substr(0, dot));
    // base64url -> base64 with padding, then OpenSSL's decoder.
    for (auto& c : part)
        c = c == '-' ? '+' : (c == '_' ? '/' : c);
    while (part.size() % 4)
        part.push_back('=');
    std::string raw(part.size(), '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(raw.data()),
                            reinterpret_cast<unsigned char const*>(part.data()), static_cast<int>(part.size()));
    if (n < 0)
        return {};
    raw.resize(static_cast<std::size_t>(n));
    while (!raw.empty() && raw.back() == '\0')
        raw.pop_back();
    auto h = nlohmann::json::parse(raw, nullptr, false);
    if (!h.is_object())
        return {};
    auto a = h.find("alg");
    return a != h.end() && a->is_string() ? a->get<std::string>() : std::string();
}

}  // namespace

std::unique_ptr<verifier>
verifier::from_secret(std::string secret)
{
    if (secret.empty())
        throw std::runtime_error("--auth-secret is empty");
    return std::unique_ptr<verifier>(new verifier(kind::hmac, std::move(secret)));
}

std::unique_ptr<verifier>
verifier::from_public_key_pem(std::string pem)
{
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                                  &BIO_free);
    if (!bio)
        throw std::runtime_error("cannot read the public key");
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr),
                                                            &EVP_PKEY_free);
    if (!key)
        throw std::runtime_error("--auth-public-key is not a PEM public key (-----BEGIN PUBLIC KEY-----)");
    switch (EVP_PKEY_get_base_id(key.get())) {
    case EVP_PKEY_RSA:
        return std::unique_ptr<verifier>(new verifier(kind::rsa, std::move(pem)));
    case EVP_PKEY_EC:
        return std::unique_ptr<verifier>(new verifier(kind::ec, std::move(pem)));
    default:
        throw std::runtime_error("--auth-public-key must be an RSA or EC (P-256/384/521) key");
    }
}

std::optional<grant>
verifier::verify(std::string_view token, std::int64_t now_s, std::string& why, bool allow_expired) const
{
    if (!looks_like_jwt(token)) {
        why = "not a JWT";
        return std::nullopt;
    }
    // The header's algorithm must belong to the configured key before the library
    // sees the token: libjwt verifies with whatever algorithm the header names.
    auto alg = header_alg(token);
    if (alg.empty() || !alg_fits(kind_, jwt_str_alg(alg.c_str()))) {
        why = "algorithm not allowed for the configured key";
        return std::nullopt;
    }
    std::string z(token);
    jwt_t* raw = nullptr;
    int rc = jwt_decode(&raw, z.c_str(), reinterpret_cast<unsigned char const*>(key_.data()),
                        static_cast<int>(key_.size()));
    jwt_ptr j(raw);
    if (rc != 0 || !j) {
        why = "bad signature or malformed token";
        return std::nullopt;
    }
    if (!alg_fits(kind_, jwt_get_alg(j.get()))) {
        why = "algorithm not allowed for the configured key";
        return std::nullopt;
    }
    // Claims: parsed from the verified payload as JSON, so types are checked exactly.
    std::unique_ptr<char, decltype(&free)> body(jwt_get_grants_json(j.get(), nullptr), &free);
    auto claims = body ? nlohmann::json::parse(body.get(), nullptr, false) : nlohmann::json();
    if (!claims.is_object()) {
        why = "claims are not a JSON object";
        return std::nullopt;
    }
    grant g;
    auto exp = claims.find("exp");
    if (exp == claims.end() || !exp->is_number_integer()) {
        why = "no integer exp claim";
        return std::nullopt;
    }
    g.expires = exp->get<std::int64_t>();
    if (g.expires + leeway_s < now_s) {
        if (!allow_expired) {
            why = "token expired";
            return std::nullopt;
        }
        g.expired = true;
    }
    if (auto nbf = claims.find("nbf"); nbf != claims.end()) {
        if (!nbf->is_number_integer() || nbf->get<std::int64_t>() - leeway_s > now_s) {
            why = "token not yet valid (nbf)";
            return std::nullopt;
        }
    }
    if (auto sub = claims.find("sub"); sub != claims.end()) {
        if (!sub->is_string()) {
            why = "sub is not a string";
            return std::nullopt;
        }
        g.user = sub->get<std::string>();
    }
    if (auto app = claims.find("app"); app != claims.end()) {
        if (!app->is_string()) {
            why = "app is not a string";
            return std::nullopt;
        }
        g.app = app->get<std::string>();
    }
    if (auto s = claims.find("sessions"); s != claims.end()) {
        if (!s->is_array() || !std::all_of(s->begin(), s->end(), [](auto const& e) { return e.is_string(); })) {
            why = "sessions is not an array of strings";
            return std::nullopt;
        }
        g.sessions = s->get<std::vector<std::string>>();
    }
    if (auto sc = claims.find("scope"); sc != claims.end()) {
        if (!sc->is_string() || (*sc != "reflector" && *sc != "files" && *sc != "api")) {
            why = "scope must be \"reflector\", \"files\" or \"api\"";
            return std::nullopt;
        }
        g.scope = sc->get<std::string>();
    }
    return g;
}

bool
pattern_match(std::string_view pattern, std::string_view value) noexcept
{
    if (!pattern.empty() && pattern.back() == '*') {
        pattern.remove_suffix(1);
        return value.substr(0, pattern.size()) == pattern;
    }
    return pattern == value;
}

bool
allows_session(grant const& g, std::string_view app_id, std::string_view name, std::string& why)
{
    if (!g.app && !g.sessions)
        return true;
    std::string_view session = name;
    if (auto slash = name.find('/'); slash != std::string_view::npos) {
        // The Multisynq client's name is "<appId>/<name>": the prefix must be the appId.
        if (!app_id.empty() && name.substr(0, slash) != app_id) {
            why = "session name does not start with its appId";
            return false;
        }
        session = name.substr(slash + 1);
    }
    if (g.app && !pattern_match(*g.app, app_id)) {
        why = "token is not for this appId";
        return false;
    }
    if (g.sessions && std::none_of(g.sessions->begin(), g.sessions->end(),
                                   [&](std::string const& p) { return pattern_match(p, session); })) {
        why = "token is not for this session";
        return false;
    }
    return true;
}

}  // namespace lockstep::auth
