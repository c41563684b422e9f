// Access control: token extraction and redaction, JWT verification (libjwt), the gate.
#include "auth/access.hpp"
#include "auth/token.hpp"
#include "auth/verifier.hpp"

#include "support/jwt_mint.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

using namespace lockstep;
using namespace lockstep::auth;
using lockstep::test::make_key_pair;
using lockstep::test::mint;
using lockstep::test::unix_now;
using lockstep::test::user_token;
using nlohmann::json;

namespace {

std::string const sample = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln";

}  // namespace

TEST(auth_token, jwt_shape)
{
    EXPECT_TRUE(looks_like_jwt(sample));
    EXPECT_FALSE(looks_like_jwt(""));
    EXPECT_FALSE(looks_like_jwt("a.b"));
    EXPECT_FALSE(looks_like_jwt("a..c"));
    EXPECT_FALSE(looks_like_jwt(".b.c"));
    EXPECT_FALSE(looks_like_jwt("a.b."));
    EXPECT_FALSE(looks_like_jwt("a.b.c.d"));
    EXPECT_FALSE(looks_like_jwt("a.b+.c"));
    EXPECT_FALSE(looks_like_jwt(std::string(max_token_bytes, 'a') + ".b.c"));
}

TEST(auth_token, ws_path_pair_before_the_session_id)
{
    EXPECT_EQ(ws_path_token("/t/" + sample + "/sess"), sample);
    EXPECT_EQ(ws_path_token("/reflector/t/" + sample + "/v1/sess"), sample);
    // The last segment is the session id, never a token.
    EXPECT_EQ(ws_path_token("/t/" + sample), "");
    EXPECT_EQ(ws_path_token("/sess"), "");
    EXPECT_EQ(ws_path_token("/t/notajwt/sess"), "");
    EXPECT_EQ(ws_path_token(""), "");
    EXPECT_EQ(ws_path_token("/"), "");
    EXPECT_EQ(ws_path_token("//t//"), "");
}

TEST(auth_token, files_pair_is_removed_from_the_blob_path)
{
    std::string stripped;
    EXPECT_EQ(files_path_token("/files/t/" + sample + "/apps/a/b", stripped), sample);
    EXPECT_EQ(stripped, "/files/apps/a/b");
    EXPECT_EQ(files_path_token("/files/apps/t/" + sample + "/b", stripped), "");
    EXPECT_EQ(stripped, "/files/apps/t/" + sample + "/b");
    EXPECT_EQ(files_path_token("/files/t/" + sample, stripped), "");  // no blob path after it
    EXPECT_EQ(files_path_token("/files/t/x/y", stripped), "");     // a blob dir called t
    EXPECT_EQ(stripped, "/files/t/x/y");
}

TEST(auth_token, bearer_and_query)
{
    EXPECT_EQ(bearer_token("Bearer abc"), "abc");
    EXPECT_EQ(bearer_token("bearer  abc "), "abc");
    EXPECT_EQ(bearer_token("Basic abc"), "");
    EXPECT_EQ(bearer_token("Bearer"), "");
    EXPECT_EQ(bearer_token("Bearer "), "");
    EXPECT_EQ(bearer_token(""), "");
    EXPECT_EQ(query_token("/x?a=1&token=" + sample + "&b=2"), sample);
    EXPECT_EQ(query_token("/x?token=" + sample + "#frag"), sample);
    EXPECT_EQ(query_token("/x?mytoken=1"), "");
    EXPECT_EQ(query_token("/x"), "");
}

TEST(auth_token, redact_hides_every_credential)
{
    EXPECT_EQ(redact("/t/" + sample + "/sess"), "/t/***/sess");
    EXPECT_EQ(redact("/files/t/" + sample + "/a/b"), "/files/t/***/a/b");
    EXPECT_EQ(redact("/r/0123abcd/sess"), "/r/***/sess");
    EXPECT_EQ(redact("/x?a=1&token=" + sample), "/x?a=1&token=***");
    EXPECT_EQ(redact("/plain/path"), "/plain/path");
    EXPECT_EQ(redact(""), "");
    EXPECT_EQ(redact("/"), "/");
    EXPECT_EQ(redact("/files/a/t"), "/files/a/t");
}

TEST(auth_token, equal_secret)
{
    EXPECT_TRUE(equal_secret("abc", "abc"));
    EXPECT_FALSE(equal_secret("abc", "abd"));
    EXPECT_FALSE(equal_secret("abc", "abcd"));
    EXPECT_FALSE(equal_secret("", "x"));
}

TEST(auth_verifier, hs256_claims)
{
    auto v = verifier::from_secret("s3cret");
    std::string why;
    auto tok = user_token("s3cret", "alice", {{"app", "io.app"}, {"sessions", {"room-*", "lobby"}}});
    auto g = v->verify(tok, unix_now(), why);
    ASSERT_TRUE(g) << why;
    EXPECT_EQ(g->user, "alice");
    EXPECT_EQ(g->app, "io.app");
    ASSERT_TRUE(g->sessions);
    EXPECT_EQ(g->sessions->size(), 2u);
    EXPECT_GT(g->expires, unix_now());
}

TEST(auth_verifier, refusals)
{
    auto v = verifier::from_secret("s3cret");
    std::string why;
    auto now = unix_now();
    // Wrong secret.
    EXPECT_FALSE(v->verify(user_token("other"), now, why));
    EXPECT_EQ(why, "bad signature or malformed token");
    // Expired (beyond the leeway), and no exp at all.
    EXPECT_FALSE(v->verify(mint({{"sub", "a"}, {"exp", now - leeway_s - 10}}, "s3cret"), now, why));
    EXPECT_EQ(why, "token expired");
    EXPECT_FALSE(v->verify(mint({{"sub", "a"}}, "s3cret"), now, why));
    EXPECT_EQ(why, "no integer exp claim");
    EXPECT_FALSE(v->verify(mint({{"sub", "a"}, {"exp", "tomorrow"}}, "s3cret"), now, why));
    // Not yet valid.
    EXPECT_FALSE(v->verify(mint({{"exp", now + 600}, {"nbf", now + 300}}, "s3cret"), now, why));
    EXPECT_EQ(why, "token not yet valid (nbf)");
    // Claims of the wrong type.
    EXPECT_FALSE(v->verify(mint({{"exp", now + 600}, {"sub", 7}}, "s3cret"), now, why));
    EXPECT_FALSE(v->verify(mint({{"exp", now + 600}, {"app", json::array()}}, "s3cret"), now, why));
    EXPECT_FALSE(v->verify(mint({{"exp", now + 600}, {"sessions", "x"}}, "s3cret"), now, why));
    EXPECT_FALSE(v->verify(mint({{"exp", now + 600}, {"sessions", {1}}}, "s3cret"), now, why));
    // Unsigned ("alg":"none") and garbage.
    EXPECT_FALSE(v->verify(mint({{"exp", now + 600}}, "", "none") + "x", now, why));
    EXPECT_FALSE(v->verify(mint({{"exp", now + 600}}, "", "none"), now, why));
    EXPECT_FALSE(v->verify("a.b.c", now, why));
    EXPECT_FALSE(v->verify("", now, why));
    // A tampered payload.
    auto tok = user_token("s3cret", "alice");
    auto d1 = tok.find('.'), d2 = tok.rfind('.');
    auto forged = tok.substr(0, d1 + 1) + mint({{"sub", "mallory"}, {"exp", now + 600}}, "x").substr(
                                               mint({{"sub", "mallory"}, {"exp", now + 600}}, "x").find('.') + 1);
    forged = forged.substr(0, forged.rfind('.')) + tok.substr(d2);
    EXPECT_FALSE(v->verify(forged, now, why));
}

TEST(auth_verifier, public_keys_and_algorithm_confusion)
{
    auto now = unix_now();
    std::string why;
    for (auto [type, alg] : {std::pair{"RSA", "RS256"}, std::pair{"EC", "ES256"}}) {
        auto kp = make_key_pair(type);
        auto v = verifier::from_public_key_pem(kp.public_pem);
        auto tok = mint({{"sub", "bob"}, {"exp", now + 600}}, kp.private_pem, alg);
        auto g = v->verify(tok, now, why);
        ASSERT_TRUE(g) << type << ": " << why;
        EXPECT_EQ(g->user, "bob");
        // Another key pair's token is refused.
        auto other = make_key_pair(type);
        EXPECT_FALSE(v->verify(mint({{"exp", now + 600}}, other.private_pem, alg), now, why));
        // The classic confusion: HS256 with the public key as the HMAC secret.
        EXPECT_FALSE(v->verify(mint({{"exp", now + 600}}, kp.public_pem, "HS256"), now, why));
        EXPECT_EQ(why, "algorithm not allowed for the configured key");
    }
    // An RSA token against an EC key: wrong family.
    auto ec = make_key_pair("EC");
    auto rsa = make_key_pair("RSA");
    EXPECT_FALSE(verifier::from_public_key_pem(ec.public_pem)->verify(
        mint({{"exp", now + 600}}, rsa.private_pem, "RS256"), now, why));
    EXPECT_THROW(verifier::from_public_key_pem("not a key"), std::runtime_error);
    EXPECT_THROW(verifier::from_public_key_pem(rsa.private_pem), std::runtime_error);
    EXPECT_THROW(verifier::from_secret(""), std::runtime_error);
    // A secret verifier refuses RS256 tokens.
    EXPECT_FALSE(verifier::from_secret("s")->verify(mint({{"exp", now + 600}}, rsa.private_pem, "RS256"), now, why));
}

TEST(auth_verifier, session_claims)
{
    grant g;
    std::string why;
    EXPECT_TRUE(allows_session(g, "any", "any/thing", why));
    g.app = "io.app";
    EXPECT_TRUE(allows_session(g, "io.app", "io.app/room", why));
    EXPECT_FALSE(allows_session(g, "io.other", "io.other/room", why));
    EXPECT_EQ(why, "token is not for this appId");
    // The name's appId prefix must be the JOIN's appId.
    EXPECT_FALSE(allows_session(g, "io.app", "io.other/room", why));
    g.app = "io.*";
    EXPECT_TRUE(allows_session(g, "io.other", "io.other/room", why));
    g.sessions = std::vector<std::string>{"room-*", "lobby"};
    EXPECT_TRUE(allows_session(g, "io.app", "io.app/room-7", why));
    EXPECT_TRUE(allows_session(g, "io.app", "io.app/lobby", why));
    EXPECT_FALSE(allows_session(g, "io.app", "io.app/lobby2", why));
    EXPECT_EQ(why, "token is not for this session");
    EXPECT_FALSE(allows_session(g, "io.app", "io.app/", why));
    EXPECT_TRUE(pattern_match("*", ""));
    EXPECT_FALSE(pattern_match("", "x"));
}

TEST(auth_gate, scopes)
{
    settings s;
    s.secret = "s3cret";
    s.admin_token = "adm1n";
    gate g(s);
    auto now = unix_now();
    auto tok = user_token("s3cret");
    auto check = [&](std::string_view method, std::string const& target, std::string const& authz = "",
                     bool upgrade = false) { return g.check({method, target, authz, "", upgrade}, now); };
    EXPECT_EQ(check("GET", "/health/live").status, 200);
    EXPECT_EQ(check("GET", "/health/ready").status, 200);
    EXPECT_EQ(check("OPTIONS", "/files/a").status, 200);
    EXPECT_EQ(check("GET", "/sessions").status, 401);
    EXPECT_EQ(check("GET", "/sessions", "Bearer " + tok).status, 403);  // a user token is not admin
    EXPECT_TRUE(check("GET", "/sessions", "Bearer adm1n").admin);
    EXPECT_EQ(check("GET", "/metrics").status, 401);
    EXPECT_EQ(check("GET", "/v1/reflectors", "Bearer " + tok).status, 403);
    EXPECT_EQ(check("GET", "/files/a/b").status, 401);
    EXPECT_EQ(check("GET", "/files/a/b", "Bearer " + tok).status, 200);
    EXPECT_EQ(check("GET", "/files/a/b", "Bearer adm1n").status, 200);
    EXPECT_EQ(check("GET", "/files/a/b?token=" + tok).status, 200);
    auto d = check("PUT", "/files/t/" + tok + "/a/b?x=1");
    EXPECT_EQ(d.status, 200);
    EXPECT_EQ(d.target, "/files/a/b?x=1");
    EXPECT_EQ(d.user->user, "alice");
    EXPECT_EQ(check("POST", "/v1/rooms/r/join").status, 401);
    // A base URL with a token pair (the SDK's router URL "https://host/t/<jwt>").
    d = check("POST", "/t/" + tok + "/v1/rooms/r/join?x");
    EXPECT_EQ(d.status, 200);
    EXPECT_EQ(d.target, "/v1/rooms/r/join?x");
    EXPECT_EQ(check("GET", "/t/" + tok + "/sessions").status, 401);  // a user token is no admin token
    EXPECT_EQ(check("GET", "/t/" + user_token("bad") + "/files/a").status, 401);
    EXPECT_EQ(check("POST", "/v1/rooms/r/join", "Bearer " + tok).status, 200);
    EXPECT_EQ(check("GET", "/s1", "", true).status, 401);
    EXPECT_EQ(check("GET", "/t/" + tok + "/s1", "", true).status, 200);
    EXPECT_EQ(check("GET", "/t/" + user_token("wrong") + "/s1", "", true).status, 401);
    // A live router seat admits an upgrade without a token; a dead one does not.
    auto seat = [&](bool live) {
        return g.check({"GET", "/r/abc/s1", "", "", true}, now, [live](std::string const& p) {
            EXPECT_EQ(p, "/r/abc/s1");
            return live;
        });
    };
    EXPECT_EQ(seat(true).status, 200);
    EXPECT_TRUE(seat(true).via_seat);
    EXPECT_EQ(seat(false).status, 401);

    settings open_metrics = s;
    open_metrics.metrics_open = true;
    EXPECT_EQ(gate(open_metrics).check({"GET", "/metrics", "", "", false}, now).status, 200);
    // User auth without an admin token closes the admin routes.
    settings no_admin;
    no_admin.secret = "s3cret";
    EXPECT_EQ(gate(no_admin).check({"GET", "/sessions", "", "", false}, now).status, 403);
    // Nothing configured: everything open, and the files pair is still removed.
    gate open{settings{}};
    EXPECT_EQ(open.check({"GET", "/sessions", "", "", false}, now).status, 200);
    EXPECT_EQ(open.check({"GET", "/s1", "", "", true}, now).status, 200);
    EXPECT_EQ(open.check({"GET", "/files/t/" + tok + "/a", "", "", false}, now).target, "/files/a");
}

TEST(auth_gate, origins_and_seat_bodies)
{
    settings s;
    s.allowed_origins = {"https://app.example"};
    gate g(s);
    auto now = unix_now();
    EXPECT_EQ(g.check({"GET", "/s1", "", "https://app.example", true}, now).status, 200);
    EXPECT_EQ(g.check({"GET", "/s1", "", "https://evil.example", true}, now).status, 403);
    EXPECT_EQ(g.check({"PUT", "/files/a", "", "https://evil.example", false}, now).status, 403);
    EXPECT_EQ(g.check({"PUT", "/files/a", "", "", false}, now).status, 200);  // not a browser

    settings u;
    u.secret = "k";
    gate ug(u);
    auto d = ug.check({"POST", "/v1/rooms/r/join", "Bearer " + user_token("k", "alice"), "", false}, now);
    ASSERT_EQ(d.status, 200);
    std::string why;
    EXPECT_EQ(ug.check_seat_body(d, "/v1/rooms/r/join", R"({"user":"alice"})", why), 0);
    EXPECT_EQ(ug.check_seat_body(d, "/v1/rooms/r/join", R"({"user":"bob"})", why), 403);
    EXPECT_EQ(ug.check_seat_body(d, "/v1/rooms/r/leave", R"({"user":"bob"})", why), 403);
    EXPECT_EQ(ug.check_seat_body(d, "/v1/rooms/r", R"({"user":"bob"})", why), 0);
    EXPECT_EQ(ug.check_seat_body(d, "/v1/rooms/r/join", "not json", why), 0);
}

TEST(auth_gate, key_file)
{
    auto kp = make_key_pair("EC");
    auto path = std::string(::testing::TempDir()) + "lockstep-auth-key.pem";
    std::ofstream(path) << kp.public_pem;
    settings s;
    s.public_key_file = path;
    gate g(s);
    EXPECT_TRUE(g.user_auth());
    auto tok = mint({{"sub", "c"}, {"exp", unix_now() + 60}}, kp.private_pem, "ES256");
    EXPECT_EQ(g.check({"GET", "/t/" + tok + "/s", "", "", true}, unix_now()).status, 200);
    std::remove(path.c_str());
    settings missing;
    missing.public_key_file = path;
    EXPECT_THROW(gate{missing}, std::runtime_error);
    settings both;
    both.secret = "x";
    both.public_key_file = path;
    EXPECT_THROW(gate{both}, std::runtime_error);
}

TEST(auth_gate, join_names)
{
    std::string app, name;
    join_names(R"({"appId":"io.app","name":"io.app/r","user":{"x":1}})", app, name);
    EXPECT_EQ(app, "io.app");
    EXPECT_EQ(name, "io.app/r");
    join_names(R"({"appId":5})", app, name);
    EXPECT_EQ(app, "");
    join_names("[", app, name);
    EXPECT_EQ(name, "");
}

TEST(auth_gate, scopes_app_files_and_read_grace)
{
    settings s;
    s.secret = "k";
    gate g(s);
    auto now = unix_now();
    auto files_tok = mint({{"exp", now + 60}, {"scope", "files"}, {"app", "io.app"}}, "k");
    auto chk = [&](std::string_view m, std::string const& target, bool up = false) {
        return g.check({m, target, "", "", up}, now).status;
    };
    EXPECT_EQ(chk("PUT", "/files/t/" + files_tok + "/apps/io.app/snap/x"), 200);
    EXPECT_EQ(chk("PUT", "/files/t/" + files_tok + "/apps/io.other/snap/x"), 403);
    EXPECT_EQ(chk("PUT", "/files/t/" + files_tok + "/elsewhere/x"), 403);
    EXPECT_EQ(chk("GET", "/t/" + files_tok + "/S1", true), 403);  // not a reflector token
    EXPECT_EQ(chk("GET", "/v1/rooms/r?token=" + files_tok), 403);
    auto ws_tok = mint({{"exp", now + 60}, {"scope", "reflector"}}, "k");
    EXPECT_EQ(chk("GET", "/t/" + ws_tok + "/S1", true), 200);
    EXPECT_EQ(chk("GET", "/files/t/" + ws_tok + "/apps/a/x"), 403);
    EXPECT_EQ(chk("GET", "/t/" + mint({{"exp", now + 60}, {"scope", "all"}}, "k") + "/S1", true), 401);
    // An expired path token still reads blobs (URLs handed out in SYNC), nothing else.
    auto old = mint({{"exp", now - 86400}, {"scope", "files"}}, "k");
    EXPECT_EQ(chk("GET", "/files/t/" + old + "/apps/a/x"), 200);
    EXPECT_EQ(chk("HEAD", "/files/t/" + old + "/apps/a/x"), 200);
    EXPECT_EQ(chk("PUT", "/files/t/" + old + "/apps/a/x"), 401);
    EXPECT_EQ(chk("GET", "/files/apps/a/x?token=" + old), 401);
    EXPECT_EQ(chk("GET", "/t/" + old + "/S1", true), 401);
    // ... but it must still be signed with the key.
    EXPECT_EQ(chk("GET", "/files/t/" + mint({{"exp", now - 86400}}, "other") + "/apps/a/x"), 401);
}
