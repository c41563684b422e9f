// libFuzzer target for credential handling: token extraction from paths, headers and
// queries, log redaction, the JWT header check and verification (libjwt), the gate.
//   scripts/fuzz.sh [seconds]   (builds with clang into build-fuzz/ and runs)
// Checks, besides "no crash, no sanitizer report":
//  - a redacted target carries no token any extractor would find;
//  - a /files token pair, when found, is removed and nothing else is;
//  - a token signed with the configured secret over claims with a future integer `exp`
//    verifies, with its `sub`; the same token with one byte of its signature changed does not.
#include "auth/access.hpp"
#include "auth/token.hpp"
#include "auth/verifier.hpp"

#include <jwt.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using namespace lockstep::auth;

std::int64_t const now = 1'900'000'000;

void
require(bool ok)
{
    if (!ok)
        std::abort();
}

std::string
sign(std::string const& claims, std::string const& secret)
{
    jwt_t* j = nullptr;
    if (jwt_new(&j) != 0)
        return {};
    std::string out;
    if (jwt_add_grants_json(j, claims.c_str()) == 0 &&
        jwt_set_alg(j, JWT_ALG_HS256, reinterpret_cast<unsigned char const*>(secret.data()),
                    static_cast<int>(secret.size())) == 0) {
        if (char* s = jwt_encode_str(j)) {
            out = s;
            free(s);
        }
    }
    jwt_free(j);
    return out;
}

}  // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    std::string_view in(reinterpret_cast<char const*>(data), size);

    // Extraction and redaction on the input as a request target.
    auto q = in.find_first_of("?#");
    auto path = in.substr(0, q);
    auto red = redact(in);
    require(ws_path_token(red.substr(0, red.find_first_of("?#"))).empty());
    auto qt = query_token(red);
    require(qt.empty() || qt == "***");
    std::string stripped;
    auto ft = files_path_token(path, stripped);
    if (!ft.empty()) {
        require(looks_like_jwt(ft));
        require(stripped.size() + ft.size() + 3 == path.size());  // "/t/<jwt>" removed
    } else {
        require(stripped == path);
    }
    (void)bearer_token(in);
    (void)looks_like_jwt(in);
    (void)equal_secret(in, "secret");

    // The gate with user and admin auth, the input as target and as Authorization.
    static gate const g([] {
        settings s;
        s.secret = "fuzz-secret";
        s.admin_token = "fuzz-admin";
        s.allowed_origins = {"https://ok.example"};
        return s;
    }());
    for (bool upgrade : {false, true}) {
        auto d = g.check({"GET", in, in, "", upgrade}, now, [](std::string const&) { return false; });
        require(d.status == 200 || d.status == 401 || d.status == 403);
        (void)g.check({"PUT", "/files/a", in, in, upgrade}, now);
    }
    std::string why;
    (void)g.check_seat_body(g.check({"POST", "/v1/rooms/r/join", in, "", false}, now), "/v1/rooms/r/join", in, why);

    // Verification of the input as a token, and of a token signed over the input as claims.
    static auto const v = verifier::from_secret("fuzz-secret");
    (void)v->verify(in, now, why);
    (void)v->verify(in, now, why, true);
    auto claims = nlohmann::json::parse(in, nullptr, false);
    if (claims.is_object() && claims.size() < 16) {
        claims["exp"] = now + 3600;
        claims.erase("nbf");
        auto tok = sign(claims.dump(), "fuzz-secret");
        if (!tok.empty()) {
            auto sub = claims.find("sub");
            auto app = claims.find("app");
            auto ses = claims.find("sessions");
            auto sc = claims.find("scope");
            bool typed = (sub == claims.end() || sub->is_string()) && (app == claims.end() || app->is_string()) &&
                         (ses == claims.end() || (ses->is_array() && std::all_of(ses->begin(), ses->end(), [](auto const& e) {
                                                      return e.is_string();
                                                  }))) &&
                         (sc == claims.end() || *sc == "reflector" || *sc == "files" || *sc == "api");
            auto gr = v->verify(tok, now, why);
            // libjwt may refuse claims it cannot round-trip (e.g. some numbers): only a
            // success is checked in detail.
            if (gr) {
                require(typed);
                require(sub == claims.end() || gr->user == sub->get<std::string>());
            }
            auto bad = tok;
            bad.back() = bad.back() == 'A' ? 'B' : 'A';
            require(!v->verify(bad, now, why) || bad == tok);
        }
    }
    return 0;
}
