// The router's HTTP API on a running reflector, and seat confirmation by a real
// WebSocket JOIN through the seat URL.
#include "support/fixture.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

namespace {

json
post(std::uint16_t port, std::string const& target, json const& body, int expect = 200)
{
    int status = 0;
    auto j = post_json(port, target, body, &status);
    EXPECT_EQ(status, expect) << target << " " << j.dump();
    return j;
}

}  // namespace

TEST(router_api, join_room_leave)
{
    running_server srv;
    auto a = post(srv.port(), "/v1/rooms/lobby/join", {{"user", "alice"}});
    EXPECT_EQ(a["room"], "lobby");
    EXPECT_EQ(a["session"], "lobby");
    EXPECT_EQ(a["shard"], 1);
    auto base = "ws://127.0.0.1:" + std::to_string(srv.port()) + "/r/";
    EXPECT_EQ(a["reflector"].get<std::string>().rfind(base, 0), 0u) << a;
    EXPECT_EQ(a["files"], "http://127.0.0.1:" + std::to_string(srv.port()) + "/files");
    EXPECT_GT(a["expires_in_ms"].get<int>(), 0);
    EXPECT_EQ(post(srv.port(), "/v1/rooms/lobby/join", {{"user", "alice"}})["reflector"], a["reflector"]);

    auto info = http_request(srv.port(), "GET", "/v1/rooms/lobby");
    ASSERT_EQ(info.status, 200);
    auto j = json::parse(info.body);
    EXPECT_EQ(j["shards"][0]["reserved"], 1);
    EXPECT_EQ(j["shards"][0]["members"], 0);
    // The listing of every room shows the same view.
    auto all = http_request(srv.port(), "GET", "/v1/rooms");
    ASSERT_EQ(all.status, 200);
    EXPECT_EQ(json::parse(all.body), json::array({j})) << all.body;
    EXPECT_EQ(http_request(srv.port(), "POST", "/v1/rooms").status, 405);

    EXPECT_EQ(post(srv.port(), "/v1/rooms/lobby/leave", {{"user", "alice"}})["freed"], true);
    j = json::parse(http_request(srv.port(), "GET", "/v1/rooms/lobby").body);
    EXPECT_EQ(j["shards"][0]["reserved"], 0);

    auto refl = json::parse(http_request(srv.port(), "GET", "/v1/reflectors").body);
    ASSERT_EQ(refl.size(), 1u);
    EXPECT_EQ(refl[0]["region"], "local");
    EXPECT_EQ(refl[0]["live"], true);
}

TEST(router_api, bad_requests_name_the_field)
{
    running_server srv;
    auto e = post(srv.port(), "/v1/rooms/lobby/join", json::object(), 400);
    EXPECT_EQ(e["field"], "user");
    e = post(srv.port(), "/v1/rooms/lobby/join", {{"user", 5}}, 400);
    EXPECT_EQ(e["field"], "user");
    e = post(srv.port(), "/v1/rooms/lobby/join", {{"user", "u"}, {"region", 1}}, 400);
    EXPECT_EQ(e["field"], "region");
    auto r = http_request(srv.port(), "POST", "/v1/rooms/lobby/join", "{not json", "");
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(json::parse(r.body)["field"], "body");
    r = http_request(srv.port(), "POST", "/v1/rooms/" + std::string(200, 'x') + "/join", R"({"user":"u"})");
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(json::parse(r.body)["field"], "room");
    EXPECT_EQ(http_request(srv.port(), "GET", "/v1/rooms/unknown").status, 404);
    EXPECT_EQ(http_request(srv.port(), "GET", "/v1/rooms/lobby/join").status, 405);
    e = post(srv.port(), "/v1/sessions/lobby/children", {{"purpose", "a/b"}}, 400);
    EXPECT_EQ(e["field"], "purpose");
}

TEST(router_api, children)
{
    running_server srv;
    auto c = post(srv.port(), "/v1/sessions/lobby/children", {{"purpose", "chat"}}, 201);
    EXPECT_EQ(c["session"], "lobby/chat");
    auto list = json::parse(http_request(srv.port(), "GET", "/v1/sessions/lobby/children").body);
    ASSERT_EQ(list["children"].size(), 1u);
    EXPECT_EQ(list["children"][0]["purpose"], "chat");
}

TEST(router_api, a_real_join_through_the_seat_url_confirms_the_seat)
{
    running_server srv;
    auto a = post(srv.port(), "/v1/rooms/game/join", {{"user", "alice"}});
    auto url = a["reflector"].get<std::string>();
    auto path = url.substr(url.find("/r/")) + "/SESSIONHASH";
    {
        ws_client c(srv.port(), path);
        auto j = join_msg("view1");
        j["args"]["name"] = "com.example/game";  // appId/session, as the JS client sends
        c.send_json(j);
        ASSERT_TRUE(c.recv_action("SYNC"));
        auto info = json::parse(http_request(srv.port(), "GET", "/v1/rooms/game").body);
        EXPECT_EQ(info["shards"][0]["members"], 1);
        EXPECT_EQ(info["shards"][0]["reserved"], 0);
        c.drop();
    }
    // The connection is gone: the seat waits for a reconnect (reserved again).
    for (int i = 0; i < 50; ++i) {
        auto info = json::parse(http_request(srv.port(), "GET", "/v1/rooms/game").body);
        if (info["shards"][0]["reserved"] == 1)
            break;
        std::this_thread::sleep_for(20ms);
    }
    auto info = json::parse(http_request(srv.port(), "GET", "/v1/rooms/game").body);
    EXPECT_EQ(info["shards"][0]["members"], 0);
    EXPECT_EQ(info["shards"][0]["reserved"], 1);
    // The reconnect takes the seat again; a normal leave (close 1000) frees it.
    {
        ws_client c(srv.port(), path);
        auto j = join_msg("view1");
        j["args"]["name"] = "com.example/game";
        c.send_json(j);
        ASSERT_TRUE(c.recv_action("SYNC"));
        EXPECT_EQ(json::parse(http_request(srv.port(), "GET", "/v1/rooms/game").body)["shards"][0]["members"], 1);
        c.send_frame(0x8, std::string("\x03\xE8", 2));  // close 1000
        c.wait_close();
    }
    for (int i = 0; i < 50; ++i) {
        info = json::parse(http_request(srv.port(), "GET", "/v1/rooms/game").body);
        if (info["shards"][0]["reserved"] == 0 && info["shards"][0]["members"] == 0)
            break;
        std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(info["shards"][0]["members"], 0);
    EXPECT_EQ(info["shards"][0]["reserved"], 0);
}

TEST(router_api, concurrent_http_joins_fill_shards_without_overflowing)
{
    running_server srv;
    constexpr int threads = 8, per = 50;  // 400 users over HTTP, capacity 50
    std::vector<std::thread> ts;
    std::mutex mu;
    std::map<std::string, int> per_session;
    std::set<std::string> seats;
    std::atomic<int> failures{0};
    for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < per; ++i) {
                auto r = http_request(srv.port(), "POST", "/v1/rooms/crowd/join",
                                      json{{"user", "u" + std::to_string(t) + "-" + std::to_string(i)}}.dump());
                auto j = json::parse(r.body, nullptr, false);
                if (r.status != 200 || !j.is_object()) {
                    ++failures;
                    continue;
                }
                std::lock_guard lock(mu);
                ++per_session[j["session"].get<std::string>()];
                seats.insert(j["reflector"].get<std::string>());
            }
        });
    for (auto& t : ts)
        t.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(seats.size(), static_cast<std::size_t>(threads * per));
    for (auto const& [s, n] : per_session)
        EXPECT_LE(n, 50) << s;
    auto info = json::parse(http_request(srv.port(), "GET", "/v1/rooms/crowd").body);
    EXPECT_EQ(info["shards"].size(), 9u);  // 8 full shards + headroom
}
