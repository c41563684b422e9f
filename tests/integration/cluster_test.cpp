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
#include <poll.h>
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
cluster_node(std::string const& redis, std::string const& region, std::uint16_t port = 0,
             std::vector<std::string> more = {})
{
    std::vector<std::string> args{"--redis", redis, "--region", region, "--heartbeat-ttl-ms", "1000"};
    args.insert(args.end(), more.begin(), more.end());
    return std::make_unique<reflector_process>(std::move(args), port);
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

/// Confirmed seats of a room's first shard, once they are `n` (bounded: 5 s), as seen
/// through `port`. Seat reports are asynchronous (the directory thread sends them), so a
/// reflector other than the one the client joined may not see them at once.
int
wait_members(std::uint16_t port, std::string const& room, int n)
{
    int members = -1;
    for (int i = 0; i < 100; ++i) {
        auto r = http_request(port, "GET", "/v1/rooms/" + room);
        auto j = json::parse(r.body, nullptr, false);
        members = r.status == 200 && j.contains("shards") ? j["shards"][0]["members"].get<int>() : -1;
        if (members == n)
            break;
        std::this_thread::sleep_for(50ms);
    }
    return members;
}

json
post(std::uint16_t port, std::string const& target, json const& body)
{
    auto r = http_request(port, "POST", target, body.dump());
    return json::parse(r.body, nullptr, false);
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
    EXPECT_EQ(wait_members(a->port(), "r1", 1), 1);
    b->kill();  // the us reflector dies (SIGKILL: no goodbye)
    // Its heartbeat expires (the TTL of cluster_node): polled, bounded by 5 s.
    int live = -1;
    for (int i = 0; i < 100 && live != 1; ++i) {
        std::this_thread::sleep_for(50ms);
        auto refl = json::parse(http_request(a->port(), "GET", "/v1/reflectors").body, nullptr, false);
        live = 0;
        for (auto const& r : refl)
            live += r.value("live", false);
    }
    EXPECT_EQ(live, 1);
    for (int i = 0; i < 5; ++i) {
        auto j = post_json(a->port(), "/v1/rooms/after" + std::to_string(i) + "/join", {{"user", "y"}, {"region", "us"}});
        EXPECT_EQ(j["reflector"].get<std::string>().rfind("ws://127.0.0.1:" + std::to_string(a->port()) + "/r/", 0),
                  0u)
            << j;
    }
    // Its connections died with it: x's seat is held for a reconnect, not forever.
    auto room = json::parse(http_request(a->port(), "GET", "/v1/rooms/r1").body);
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

TEST(cluster, redis_with_a_password_and_a_database_number)
{
    std::string const password = "p@ss:w/rd";
    redis_server redis(password);
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    auto base = "127.0.0.1:" + std::to_string(redis.port());
    auto with = [](std::string url) {
        auto c = test_config();
        c.redis = std::move(url);
        return c;
    };
    // Without the password, or with a wrong one, the reflector does not start, and the
    // error names neither.
    for (auto const& url : {"redis://" + base, "redis://:wrong@" + base}) {
        try {
            server s(with(url));
            ADD_FAILURE() << "started without the right password: " << url;
        } catch (std::exception const& e) {
            EXPECT_NE(std::string(e.what()).find("AUTH"), std::string::npos) << e.what();  // NOAUTH, AUTH failed
            EXPECT_EQ(std::string(e.what()).find("wrong"), std::string::npos) << e.what();
        }
    }
    EXPECT_THROW(server(with("redis://:x@" + base + "/notanumber")), std::runtime_error);
    EXPECT_THROW(server(with("redis://:%zz@" + base)), std::runtime_error);
    // Percent-encoded password, database 3: the router's state lands in db 3.
    // With access control on, the seat check (seat_live) also goes through Redis.
    auto c = with("redis://:p%40ss%3Aw%2Frd@" + base + "/3");
    c.admin_token = "adm";
    c.auth_secret = "k";
    running_server srv(c);
    auto r = http_request(srv.port(), "POST", "/v1/rooms/lobby/join", R"({"user":"alice"})",
                          "Content-Type: application/json\r\nAuthorization: Bearer adm\r\n");
    ASSERT_EQ(r.status, 200) << r.body;
    auto url = nlohmann::json::parse(r.body)["reflector"].get<std::string>();
    {
        ws_client seated(srv.port(), url.substr(url.find("/r/")) + "/LOBBYHASH");
        auto j = join_msg("alice");
        j["args"]["name"] = "it/lobby";
        seated.send_json(j);
        EXPECT_TRUE(seated.recv_action("SYNC"));
    }
    EXPECT_THROW(ws_client(srv.port(), "/r/00000000000000000000000000000000/LOBBYHASH"), std::runtime_error);
    auto count_keys = [&](int db) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(redis.port());
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        std::string out;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            auto cmd = "AUTH \"" + password + "\"\r\nSELECT " + std::to_string(db) + "\r\nDBSIZE\r\n";
            ::send(fd, cmd.data(), cmd.size(), MSG_NOSIGNAL);
            char buf[256];
            auto deadline = std::chrono::steady_clock::now() + 2s;
            while (std::count(out.begin(), out.end(), '\n') < 3 && std::chrono::steady_clock::now() < deadline) {
                pollfd p{fd, POLLIN, 0};
                if (::poll(&p, 1, 200) > 0) {
                    auto n = ::recv(fd, buf, sizeof buf, 0);
                    if (n <= 0)
                        break;
                    out.append(buf, static_cast<std::size_t>(n));
                }
            }
        }
        ::close(fd);
        auto colon = out.rfind(':');
        return colon == std::string::npos ? -1 : std::atoi(out.c_str() + colon + 1);
    };
    EXPECT_GT(count_keys(3), 0);
    EXPECT_EQ(count_keys(0), 0);
}

// No Redis call on an event loop: with its only worker thread and Redis frozen
// (SIGSTOP) for 3 s, a reflector keeps ticking on time, syncs a brand-new session and a
// client that comes through a router seat at once, and confirms that seat once Redis
// is back.
TEST(cluster, a_frozen_redis_does_not_stall_the_event_loop)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    // The router's calls on their own thread. Sessions here are not journaled to Redis
    // (--journal-sync none): with the default, output waits for Redis by design
    // (cluster_sessions_test covers that).
    auto a = cluster_node(redis.url(), "eu", 0, {"--journal-sync", "none"});
    ASSERT_TRUE(wait_reflectors(a->port(), 1));
    auto seat = post(a->port(), "/v1/rooms/stall/join", {{"user", "s"}});
    ASSERT_TRUE(seat.contains("reflector")) << seat;
    auto seat_url = seat["reflector"].get<std::string>();

    ws_client ticker(a->port(), "/TICKSESSION");
    ticker.send_json(join_msg("vt", 50));
    ASSERT_TRUE(ticker.recv_action("SYNC"));
    ASSERT_TRUE(ticker.recv_action("TICK", 1000ms));

    using clock = std::chrono::steady_clock;
    auto const freeze = 3000ms;
    redis.pause();
    auto frozen_at = clock::now();
    struct cont_guard {  // Redis thaws even if an assertion below fails
        redis_server& r;
        ~cont_guard() { r.resume(); }
    } thaw{redis};

    // Ticks of the 50 ms session, timed on arrival, on their own thread.
    std::atomic<long> max_gap_ms{0};
    std::atomic<int> ticks{0};
    std::thread watch([&] {
        auto last = clock::now();
        while (clock::now() - frozen_at < freeze) {
            auto m = ticker.recv(300ms);
            auto now = clock::now();
            if (m && (*m)["action"] == "TICK") {
                ++ticks;
                auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(now - last).count();
                max_gap_ms = std::max<long>(max_gap_ms, gap);
                last = now;
            } else if (!m) {
                max_gap_ms = std::max<long>(
                    max_gap_ms, std::chrono::duration_cast<std::chrono::milliseconds>(now - last).count());
            }
        }
    });

    std::this_thread::sleep_for(400ms);  // Redis is frozen; the heartbeat is stuck on it by now
    {
        ws_client fresh(a->port(), "/BRANDNEWSESSION");
        auto t0 = clock::now();
        fresh.send_json(join_msg("vf", 100));
        EXPECT_TRUE(fresh.recv_action("SYNC", 1000ms)) << "a new session got no SYNC within 1 s";
        EXPECT_LT(clock::now() - t0, 1000ms);
    }
    ws_client seated(a->port(), seat_url.substr(seat_url.find("/r/")) + "/SEATSESSION");
    {
        auto j = join_msg("vs", 100);
        j["args"]["name"] = "com.example/stall";
        auto t0 = clock::now();
        seated.send_json(j);
        EXPECT_TRUE(seated.recv_action("SYNC", 1000ms)) << "a seated client got no SYNC within 1 s";
        EXPECT_LT(clock::now() - t0, 1000ms);
    }
    watch.join();
    redis.resume();
    EXPECT_LE(max_gap_ms.load(), 250) << "ticks stalled while Redis was frozen";
    EXPECT_GE(ticks.load(), 30);  // ~60 due in 3 s

    // Redis is back: the seat taken meanwhile is confirmed (bounded: 5 s).
    EXPECT_EQ(wait_members(a->port(), "stall", 1), 1) << "the seat was not confirmed after Redis came back";
}
