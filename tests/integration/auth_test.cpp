// Access control on a running reflector: each refusal with the request itself, the
// legitimate session beside it unaffected, and no token in the logs.
#include "support/fixture.hpp"
#include "support/jwt_mint.hpp"

#include <lockstep/client/router.hpp>

#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

namespace {

std::string const secret = "integration-secret";
std::string const admin = "integration-admin-token";

config
auth_config()
{
    auto c = test_config();
    c.auth_secret = secret;
    c.admin_token = admin;
    c.max_blob_bytes = 4096;
    return c;
}

/// An accepted upgrade for `target` that JOINs and gets its SYNC.
bool
joins(std::uint16_t port, std::string const& target, std::string const& extra = "")
{
    try {
        ws_client c(port, target, extra);
        c.send_json(join_msg("probe"));
        return c.recv_action("SYNC").has_value();
    } catch (std::exception const&) {
        return false;
    }
}

/// The status of a refused WebSocket upgrade for `target`.
int
upgrade_status(std::uint16_t port, std::string const& target, std::string const& extra = "")
{
    return http_request(port, "GET", target, "",
                        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
                            extra)
        .status;
}

json
join_for(std::string const& app, std::string const& name, std::string const& user)
{
    auto j = join_msg(user);
    j["args"]["appId"] = app;
    j["args"]["name"] = app + "/" + name;
    return j;
}

}  // namespace

TEST(auth, upgrades_need_a_valid_token)
{
    running_server srv(auth_config());
    auto port = srv.port();
    auto tok = user_token(secret);
    // A legitimate client, through a t/<jwt> path, stays in its session throughout.
    ws_client good(port, "/t/" + tok + "/S1");
    good.send_json(join_msg("good"));
    ASSERT_TRUE(good.recv_action("SYNC"));

    EXPECT_EQ(upgrade_status(port, "/S1"), 401);
    EXPECT_EQ(upgrade_status(port, "/t/" + user_token("wrong-secret") + "/S1"), 401);
    EXPECT_EQ(upgrade_status(port, "/t/" + mint({{"sub", "x"}, {"exp", unix_now() - 3600}}, secret) + "/S1"), 401);
    EXPECT_EQ(upgrade_status(port, "/t/" + mint({{"sub", "x"}}, secret) + "/S1"), 401);
    EXPECT_EQ(upgrade_status(port, "/t/" + mint({{"exp", unix_now() + 60}}, "", "none") + "/S1"), 401);
    EXPECT_EQ(upgrade_status(port, "/S1", "Authorization: Bearer " + user_token("wrong-secret") + "\r\n"), 401);
    // Other carriers of a good token.
    EXPECT_TRUE(joins(port, "/S1", "Authorization: Bearer " + tok + "\r\n"));
    EXPECT_TRUE(joins(port, "/S1?token=" + tok));
    EXPECT_TRUE(joins(port, "/reflector/t/" + tok + "/S1"));

    good.send_json(send_msg("still here"));
    bool seen = false;
    for (int i = 0; i < 10 && !seen; ++i) {
        auto r = good.recv_action("RECV");
        ASSERT_TRUE(r);
        seen = (*r)["args"][2] == "still here";
    }
    EXPECT_TRUE(seen);
    EXPECT_EQ(http_request(port, "GET", "/health/live").status, 200);
}

TEST(auth, token_claims_limit_app_and_sessions)
{
    running_server srv(auth_config());
    auto port = srv.port();
    auto tok = user_token(secret, "alice", {{"app", "io.app"}, {"sessions", {"room-*"}}});
    ws_client ok(port, "/t/" + tok + "/S1");
    ok.send_json(join_for("io.app", "room-1", "alice"));
    ASSERT_TRUE(ok.recv_action("SYNC"));

    ws_client other_session(port, "/t/" + tok + "/S2");
    other_session.send_json(join_for("io.app", "lobby", "alice"));
    EXPECT_EQ(other_session.wait_close(), 4103);

    ws_client other_app(port, "/t/" + tok + "/S3");
    other_app.send_json(join_for("io.evil", "room-1", "alice"));
    EXPECT_EQ(other_app.wait_close(), 4103);

    // Joining an existing session under a name the token allows does not help: the
    // session's own name counts.
    auto wide = user_token(secret, "mallory", {{"sessions", {"room-1"}}});
    ws_client owner(port, "/t/" + user_token(secret) + "/S4");
    owner.send_json(join_for("io.app", "private", "owner"));
    ASSERT_TRUE(owner.recv_action("SYNC"));
    ws_client intruder(port, "/t/" + wide + "/S4");
    intruder.send_json(join_for("io.app", "room-1", "mallory"));
    EXPECT_EQ(intruder.wait_close(), 4103);

    ok.send_json(send_msg("e"));
    ASSERT_TRUE(ok.recv_action("RECV"));
    auto s = json::parse(http_request(port, "GET", "/sessions", "", "Authorization: Bearer " + admin + "\r\n").body);
    for (auto const& e : s)
        if (e["id"] == "S4")
            EXPECT_EQ(e["clients"], 1);
}

TEST(auth, files_need_a_token_and_the_path_pair_is_not_part_of_the_blob)
{
    running_server srv(auth_config());
    auto port = srv.port();
    auto tok = user_token(secret);
    EXPECT_EQ(http_request(port, "PUT", "/files/apps/a/blob", "data").status, 401);
    EXPECT_EQ(http_request(port, "PUT", "/files/t/" + user_token("nope") + "/apps/a/blob", "data").status, 401);
    EXPECT_EQ(http_request(port, "PUT", "/files/t/" + tok + "/apps/a/blob", "data").status, 201);
    EXPECT_EQ(http_request(port, "GET", "/files/apps/a/blob").status, 401);
    auto get = http_request(port, "GET", "/files/apps/a/blob", "", "Authorization: Bearer " + tok + "\r\n");
    EXPECT_EQ(get.status, 200);
    EXPECT_EQ(get.body, "data");
    EXPECT_EQ(http_request(port, "GET", "/files/t/" + tok + "/apps/a/blob").body, "data");
    EXPECT_EQ(http_request(port, "GET", "/files/apps/a/blob?token=" + tok).body, "data");
    // The refusal comes before the body is read: a large unauthorized PUT gets 401.
    EXPECT_EQ(http_request(port, "PUT", "/files/apps/a/big", std::string(1 << 20, 'x')).status, 401);
    EXPECT_EQ(http_request(port, "OPTIONS", "/files/apps/a/blob").status, 204);
}

TEST(auth, operator_endpoints_need_the_admin_token)
{
    running_server srv(auth_config());
    auto port = srv.port();
    auto bearer = [](std::string const& t) { return "Authorization: Bearer " + t + "\r\n"; };
    EXPECT_EQ(http_request(port, "GET", "/sessions").status, 401);
    EXPECT_EQ(http_request(port, "GET", "/sessions", "", bearer(user_token(secret))).status, 403);
    EXPECT_EQ(http_request(port, "GET", "/sessions", "", bearer("wrong")).status, 403);
    EXPECT_EQ(http_request(port, "GET", "/sessions", "", bearer(admin)).status, 200);
    EXPECT_EQ(http_request(port, "GET", "/metrics").status, 401);
    EXPECT_EQ(http_request(port, "GET", "/metrics", "", bearer(admin)).status, 200);
    EXPECT_EQ(http_request(port, "GET", "/v1/reflectors", "", bearer(user_token(secret))).status, 403);
    EXPECT_EQ(http_request(port, "GET", "/v1/reflectors", "", bearer(admin)).status, 200);
    EXPECT_EQ(http_request(port, "GET", "/v1/rooms", "", bearer(user_token(secret))).status, 403);
    EXPECT_EQ(http_request(port, "GET", "/v1/rooms", "", bearer(admin)).status, 200);
    EXPECT_EQ(http_request(port, "GET", "/health/live").status, 200);
    EXPECT_EQ(http_request(port, "GET", "/health/ready").status, 200);
    // The admin API needs the token; the admin page is static and asks for it itself.
    EXPECT_EQ(http_request(port, "POST", "/admin/api/drain").status, 401);
    EXPECT_EQ(http_request(port, "POST", "/admin/api/drain", "", bearer(user_token(secret))).status, 403);
    EXPECT_EQ(http_request(port, "POST", "/admin/api/sessions/x/close").status, 401);
    EXPECT_EQ(http_request(port, "GET", "/health/ready").status, 200);  // not drained by the refusals
    EXPECT_NE(http_request(port, "GET", "/admin").status, 401);

    auto c = auth_config();
    c.metrics_open = true;
    running_server open(c);
    EXPECT_EQ(http_request(open.port(), "GET", "/metrics").status, 200);
    EXPECT_EQ(http_request(open.port(), "GET", "/sessions").status, 401);
}

TEST(auth, allowed_origins)
{
    auto c = test_config();
    c.allowed_origins = {"https://app.example"};
    running_server srv(c);
    auto port = srv.port();
    EXPECT_EQ(upgrade_status(port, "/S1", "Origin: https://evil.example\r\n"), 403);
    EXPECT_EQ(http_request(port, "PUT", "/files/a/b", "x", "Origin: https://evil.example\r\n").status, 403);
    EXPECT_TRUE(joins(port, "/S1", "Origin: https://app.example\r\n"));
    EXPECT_EQ(http_request(port, "PUT", "/files/a/b", "x", "Origin: https://app.example\r\n").status, 201);
}

TEST(auth, router_seats_admit_their_holder)
{
    running_server srv(auth_config());
    auto port = srv.port();
    auto post = [&](std::string const& target, json const& body, std::string const& token) {
        return http_request(port, "POST", target, body.dump(),
                            "Content-Type: application/json\r\nAuthorization: Bearer " + token + "\r\n");
    };
    EXPECT_EQ(http_request(port, "POST", "/v1/rooms/game/join", R"({"user":"alice"})").status, 401);
    // A user's token reserves only that user's seat.
    EXPECT_EQ(post("/v1/rooms/game/join", {{"user", "bob"}}, user_token(secret, "alice")).status, 403);
    EXPECT_EQ(post("/v1/rooms/game/leave", {{"user", "bob"}}, user_token(secret, "alice")).status, 403);
    auto seat = post("/v1/rooms/game/join", {{"user", "alice"}}, user_token(secret, "alice"));
    ASSERT_EQ(seat.status, 200) << seat.body;
    auto url = json::parse(seat.body)["reflector"].get<std::string>();
    auto path = url.substr(url.find("/r/")) + "/GAMEHASH";
    // No second token: the seat URL is the credential, for the seat's session only.
    {
        ws_client wrong(port, path);
        wrong.send_json(join_for("com.example", "other-room", "alice"));
        EXPECT_EQ(wrong.wait_close(), 4103);
    }
    ws_client c(port, path);
    c.send_json(join_for("com.example", "game", "alice"));
    ASSERT_TRUE(c.recv_action("SYNC"));
    // A made-up seat is no credential.
    EXPECT_EQ(upgrade_status(port, "/r/0123456789abcdef0123456789abcdef/GAMEHASH"), 401);
}

TEST(auth, tokens_never_reach_the_logs)
{
    std::ostringstream out;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    auto previous = spdlog::default_logger();
    {
        running_server srv(auth_config());
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
        spdlog::set_level(spdlog::level::debug);
        auto port = srv.port();
        auto good = user_token(secret);
        auto bad = user_token("wrong");
        EXPECT_EQ(upgrade_status(port, "/t/" + bad + "/S1"), 401);
        EXPECT_EQ(upgrade_status(port, "/S1?token=" + bad), 401);
        EXPECT_EQ(http_request(port, "PUT", "/files/t/" + bad + "/a", "x").status, 401);
        EXPECT_EQ(http_request(port, "PUT", "/files/t/" + good + "/a", std::string(8192, 'x')).status, 413);
        EXPECT_EQ(http_request(port, "PUT", "/files/t/" + good + "/../x", "x").status, 400);
        ws_client c(port, "/t/" + good + "/S1");
        c.send_json(join_msg("x"));
        ASSERT_TRUE(c.recv_action("SYNC"));
        // A SAVE names a blob URL that carries the client's files token.
        c.send_json({{"id", "x"},
                     {"action", "SAVE"},
                     {"args", {{"url", "http://127.0.0.1/files/t/" + good + "/apps/it/saved"}}}});
        for (int i = 0; i < 100 && out.str().find("saved:") == std::string::npos; ++i)
            std::this_thread::sleep_for(10ms);
        spdlog::set_default_logger(previous);
        EXPECT_NE(out.str().find("/files/t/***/apps/it/saved"), std::string::npos) << out.str();
        auto text = out.str();
        EXPECT_NE(text.find("refused 401"), std::string::npos) << text;
        for (auto const& t : {good, bad}) {
            EXPECT_EQ(text.find(t), std::string::npos) << text;
            EXPECT_EQ(text.find(t.substr(t.rfind('.') + 1)), std::string::npos) << "signature in the log";
        }
    }
    spdlog::set_default_logger(previous);
    spdlog::set_level(spdlog::level::warn);
}

TEST(auth, sdk_router_helper_with_a_token_url)
{
    running_server srv(auth_config());
    auto base = "http://127.0.0.1:" + std::to_string(srv.port());
    std::error_code ec;
    client::reserve_seat(base, "lobby", "alice", ec);
    EXPECT_TRUE(ec);  // 401 without a token
    ec.clear();
    auto seat = client::reserve_seat(base + "/t/" + user_token(secret, "alice"), "lobby", "alice", ec);
    ASSERT_FALSE(ec);
    EXPECT_EQ(seat.session, "lobby");
    EXPECT_NE(seat.reflector.find("/r/"), std::string::npos);
    // The token names alice: no seat for bob with it.
    client::reserve_seat(base + "/t/" + user_token(secret, "alice"), "lobby", "bob", ec);
    EXPECT_TRUE(ec);
}
