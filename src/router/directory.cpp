#include "router/directory.hpp"

#include <fnmatch.h>
#include <openssl/rand.h>

#include <random>

namespace lockstep::router {

using nlohmann::json;

json
seat_answer::to_json() const
{
    return {{"room", room},           {"session", session}, {"shard", shard},
            {"reflector", reflector}, {"files", files},     {"expires_in_ms", expires_in_ms}};
}

policy
policy_for(options const& opts, std::string const& room)
{
    for (auto const& [pattern, pol] : opts.patterns)
        if (fnmatch(pattern.c_str(), room.c_str(), 0) == 0)
            return pol;
    return opts.defaults;
}

std::string
random_token()
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        std::random_device rd;
        for (auto& b : raw)
            b = static_cast<unsigned char>(rd());
    }
    static char const digits[] = "0123456789abcdef";
    std::string t;
    for (unsigned char b : raw) {
        t.push_back(digits[b >> 4]);
        t.push_back(digits[b & 0xF]);
    }
    return t;
}

std::string
seat_url(std::string const& reflector_url, std::string const& token)
{
    auto base = reflector_url;
    while (!base.empty() && base.back() == '/')
        base.pop_back();
    return base + "/r/" + token;
}

std::string
token_from_path(std::string_view path)
{
    path = path.substr(0, path.find_first_of("?#"));
    // .../r/<token>/<sessionId>
    auto last = path.rfind('/');
    if (last == std::string_view::npos || last == 0)
        return {};
    auto prev = path.rfind('/', last - 1);
    if (prev == std::string_view::npos || prev < 2)
        return {};
    if (path.substr(prev - 2, 3) != "/r/")
        return {};
    return std::string(path.substr(prev + 1, last - prev - 1));
}

}  // namespace lockstep::router
