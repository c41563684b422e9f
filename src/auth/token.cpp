#include "auth/token.hpp"

#include "common/text.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <vector>

namespace lockstep::auth {
namespace {

bool
base64url_char(char c) noexcept
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

}  // namespace

bool
looks_like_jwt(std::string_view s) noexcept
{
    if (s.empty() || s.size() > max_token_bytes)
        return false;
    int dots = 0;
    std::size_t part = 0;
    for (char c : s) {
        if (c == '.') {
            if (part == 0)
                return false;
            ++dots;
            part = 0;
        } else if (base64url_char(c)) {
            ++part;
        } else {
            return false;
        }
    }
    return dots == 2 && part > 0;
}

std::string
ws_path_token(std::string_view path)
{
    auto seg = path_segments(path);
    // The last segment is the session id; a pair must end before it.
    for (std::size_t i = 0; i + 2 < seg.size(); ++i)
        if (seg[i] == "t" && looks_like_jwt(seg[i + 1]))
            return std::string(seg[i + 1]);
    return {};
}

std::string
files_path_token(std::string_view path, std::string& stripped)
{
    constexpr std::string_view prefix = "/files/t/";
    stripped.assign(path);
    if (path.substr(0, prefix.size()) != prefix)
        return {};
    auto rest = path.substr(prefix.size());
    auto slash = rest.find('/');
    if (slash == std::string_view::npos || !looks_like_jwt(rest.substr(0, slash)))
        return {};
    stripped = "/files" + std::string(rest.substr(slash));
    return std::string(rest.substr(0, slash));
}

std::string
bearer_token(std::string_view authorization)
{
    while (!authorization.empty() && authorization.front() == ' ')
        authorization.remove_prefix(1);
    if (authorization.size() < 7)
        return {};
    // The scheme is case-insensitive (RFC 9110).
    for (std::size_t i = 0; i < 6; ++i)
        if ((authorization[i] | 0x20) != "bearer"[i])
            return {};
    if (authorization[6] != ' ')
        return {};
    auto tok = authorization.substr(7);
    while (!tok.empty() && tok.front() == ' ')
        tok.remove_prefix(1);
    while (!tok.empty() && tok.back() == ' ')
        tok.remove_suffix(1);
    if (tok.empty() || tok.size() > max_token_bytes)
        return {};
    return std::string(tok);
}

std::string
query_token(std::string_view target)
{
    auto q = target.find('?');
    if (q == std::string_view::npos)
        return {};
    auto query = target.substr(q + 1);
    query = query.substr(0, query.find('#'));
    while (!query.empty()) {
        auto amp = query.find('&');
        auto param = query.substr(0, amp);
        if (param.substr(0, 6) == "token=") {
            auto v = param.substr(6);
            return v.size() > max_token_bytes ? std::string() : std::string(v);
        }
        if (amp == std::string_view::npos)
            break;
        query.remove_prefix(amp + 1);
    }
    return {};
}

std::string
redact(std::string_view target)
{
    return redact_credentials(target);
}

bool
equal_secret(std::string_view a, std::string_view b) noexcept
{
    unsigned char ha[SHA256_DIGEST_LENGTH], hb[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<unsigned char const*>(a.data()), a.size(), ha);
    SHA256(reinterpret_cast<unsigned char const*>(b.data()), b.size(), hb);
    return CRYPTO_memcmp(ha, hb, sizeof ha) == 0;
}

}  // namespace lockstep::auth
