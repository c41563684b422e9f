// Cluster mode: three lockstep-reflector processes sharing one real redis-server, all
// started here on free loopback ports and killed at the end.
#include "support/fixture.hpp"
#include "support/net_util.hpp"
#include "support/process.hpp"
#include "support/redis_server.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

namespace {

/// A lockstep-reflector process in cluster mode on `redis`.
std::unique_ptr<reflector_process>
cluster_node(std::string const& redis, std::string const& region, std::uint16_t port = 0)
{
    return std::make_unique<reflector_process>(
        std::vector<std::string>{"--redis", redis, "--region", region, "--heartbeat-ttl-ms", "1000"}, port);
}

bool
wait_reflectors(std::uint16_t port, std::size_t n)
{
    for (int i = 0; i < 100; ++i) {
        if (json::parse(http_request(port, "GET", "/v1/reflectors").body).size() == n)
            return true;
        std::this_thread::sleep_for(20ms);
    }
    return false;
}


}  // namespace

TEST(cluster, three_reflectors_share_rooms_and_seats_through_redis)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    std::vector<std::unique_ptr<reflector_process>> nodes;
    for (auto region : {"eu", "us", "eu"})
        nodes.push_back(cluster_node(redis.url(), region));
    // All three registered and live.
    ASSERT_TRUE(wait_reflectors(nodes[0]->port(), 3));

    constexpr int threads = 6, per = 100;  // 600 users, joins spread over all three APIs
    std::mutex mu;
    std::map<std::string, int> per_session;
    std::map<std::string, std::string> seat_of;
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < per; ++i) {
                auto user = "u" + std::to_string(t) + "-" + std::to_string(i);
                auto j = post_json(nodes[static_cast<std::size_t>((t + i) % 3)]->port(), "/v1/rooms/crowd/join",
                              {{"user", user}});
                if (!j.is_object() || !j.contains("session")) {
                    ++failures;
                    continue;
                }
                std::lock_guard lock(mu);
                ++per_session[j["session"].get<std::string>()];
                seat_of[user] = j["reflector"].get<std::string>();
            }
        });
    for (auto& t : ts)
        t.join();
    EXPECT_EQ(failures.load(), 0);
    ASSERT_EQ(seat_of.size(), 600u);
    std::set<std::string> distinct;
    for (auto const& [u, s] : seat_of)
        distinct.insert(s);
    EXPECT_EQ(distinct.size(), 600u);  // never the same seat twice
    for (auto const& [s, n] : per_session)
        EXPECT_LE(n, 50) << s;
    // Any reflector answers the same: same seat for the same user, same room view.
    for (std::size_t k = 0; k < 3; ++k) {
        auto again = post_json(nodes[k]->port(), "/v1/rooms/crowd/join", {{"user", "u0-0"}});
        EXPECT_EQ(again["reflector"], seat_of["u0-0"]);
    }
    auto view0 = json::parse(http_request(nodes[0]->port(), "GET", "/v1/rooms/crowd").body);
    auto view2 = json::parse(http_request(nodes[2]->port(), "GET", "/v1/rooms/crowd").body);
    EXPECT_EQ(view0["shards"], view2["shards"]);
    EXPECT_EQ(view0["shards"].size(), 13u);  // 12 full shards + headroom
    std::set<std::string> names;
    for (auto const& sh : view0["shards"])
        EXPECT_TRUE(names.insert(sh["session"].get<std::string>()).second);
    // A child created on one reflector is listed by another.
    post_json(nodes[1]->port(), "/v1/sessions/crowd/children", {{"purpose", "chat"}});
    auto kids = json::parse(http_request(nodes[2]->port(), "GET", "/v1/sessions/crowd/children").body);
    ASSERT_EQ(kids["children"].size(), 1u);
    EXPECT_EQ(kids["children"][0]["session"], "crowd/chat");
}

TEST(cluster, a_dead_reflector_gets_no_placements_after_its_heartbeat_expires)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    auto a = cluster_node(redis.url(), "eu");
    auto b = cluster_node(redis.url(), "us");
    ASSERT_TRUE(wait_reflectors(a->port(), 2));
    auto b_url = "ws://127.0.0.1:" + std::to_string(b->port()) + "/r/";
    auto first = post_json(a->port(), "/v1/rooms/r1/join", {{"user", "x"}, {"region", "us"}});
    auto seat_url = first["reflector"].get<std::string>();
    ASSERT_EQ(seat_url.rfind(b_url, 0), 0u);
    // x really joins on b: the seat is confirmed, as any reflector reports.
    ws_client c(b->port(), seat_url.substr(seat_url.find("/r/")) + "/SESSIONHASH");
    auto j = join_msg("vx");
    j["args"]["name"] = "com.example/r1";
    c.send_json(j);
    ASSERT_TRUE(c.recv_action("SYNC"));
    auto room = json::parse(http_request(a->port(), "GET", "/v1/rooms/r1").body);
    EXPECT_EQ(room["shards"][0]["members"], 1);
    b->kill();  // the us reflector dies (SIGKILL: no goodbye)
    std::this_thread::sleep_for(1500ms);
    auto refl = json::parse(http_request(a->port(), "GET", "/v1/reflectors").body);
    int live = 0;
    for (auto const& r : refl)
        live += r["live"].get<bool>();
    EXPECT_EQ(live, 1);
    for (int i = 0; i < 5; ++i) {
        auto j = post_json(a->port(), "/v1/rooms/after" + std::to_string(i) + "/join", {{"user", "y"}, {"region", "us"}});
        EXPECT_EQ(j["reflector"].get<std::string>().rfind("ws://127.0.0.1:" + std::to_string(a->port()) + "/r/", 0),
                  0u)
            << j;
    }
    // Its connections died with it: x's seat is held for a reconnect, not forever.
    room = json::parse(http_request(a->port(), "GET", "/v1/rooms/r1").body);
    EXPECT_EQ(room["shards"][0]["members"], 0);
    EXPECT_EQ(room["shards"][0]["reserved"], 1);
    // The existing shard moves to a live reflector too.
    auto again = post_json(a->port(), "/v1/rooms/r1/join", {{"user", "x"}});
    EXPECT_EQ(again["reflector"].get<std::string>().rfind("ws://127.0.0.1:" + std::to_string(a->port()), 0), 0u);
}

TEST(cluster, a_restarted_reflector_does_not_keep_its_old_connections)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    auto a = cluster_node(redis.url(), "eu");
    ASSERT_TRUE(wait_reflectors(a->port(), 1));
    auto seat = post_json(a->port(), "/v1/rooms/rr/join", {{"user", "x"}})["reflector"].get<std::string>();
    {
        ws_client c(a->port(), seat.substr(seat.find("/r/")) + "/SESSIONHASH");
        auto j = join_msg("vx");
        j["args"]["name"] = "com.example/rr";
        c.send_json(j);
        ASSERT_TRUE(c.recv_action("SYNC"));
        EXPECT_EQ(json::parse(http_request(a->port(), "GET", "/v1/rooms/rr").body)["shards"][0]["members"], 1);
        auto port = a->port();
        a->kill();  // crash, then the same reflector (same id and port) comes back at once
        a = cluster_node(redis.url(), "eu", port);
    }
    // Well within the heartbeat TTL: the old process's connection no longer counts.
    for (int i = 0; i < 50; ++i) {
        auto room = json::parse(http_request(a->port(), "GET", "/v1/rooms/rr").body);
        if (room.is_object() && room["shards"][0]["members"] == 0)
            break;
        std::this_thread::sleep_for(20ms);
    }
    auto room = json::parse(http_request(a->port(), "GET", "/v1/rooms/rr").body);
    EXPECT_EQ(room["shards"][0]["members"], 0);
    EXPECT_EQ(room["shards"][0]["reserved"], 1);
}
