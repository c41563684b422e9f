// What docs/operations.md promises operators, checked on real processes: exit statuses,
// a drain as clients, load balancers and the router see it (real signals), and a Redis
// outage in cluster mode (a real redis-server stopped and started again).
#include "support/frames.hpp"
#include "support/metrics.hpp"
#include "support/process.hpp"
#include "support/redis_server.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace lockstep::test;
using nlohmann::json;

namespace {

// Bounds that only cut off a stuck test (a start-up, a drain or a reconnect that never
// ends); each awaited event takes well under a second on an idle machine.
constexpr auto stuck = 60s;

/// Runs the reflector binary with `args` to its exit; the status, or -1 if it ran on.
int
exit_status(std::vector<std::string> args, std::string* err = nullptr)
{
    auto dir = scratch_dir("exit");
    args.insert(args.begin(), LOCKSTEP_REFLECTOR_BIN);
    pid_t pid = spawn(args, dir / "out", dir / "err");
    auto st = wait_exit(pid, stuck);
    if (!st) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
    if (err)
        *err = read_text(dir / "err") + read_text(dir / "out");
    std::error_code ec;
    fs::remove_all(dir, ec);
    return st.value_or(-1);
}

/// Polls until `done()` or the bound; true if done.
template <class F>
bool
eventually(F done)
{
    auto deadline = std::chrono::steady_clock::now() + stuck;
    while (std::chrono::steady_clock::now() < deadline) {
        if (done())
            return true;
        std::this_thread::sleep_for(20ms);
    }
    return false;
}

std::vector<std::string>
cluster_flags(redis_server const& redis, std::string const& region)
{
    return {"--redis", redis.url(), "--region", region, "--heartbeat-ttl-ms", "1000"};
}

}  // namespace

TEST(operations, exit_status_2_for_bad_flags_1_when_it_cannot_start_0_for_help)
{
    std::string err;
    EXPECT_EQ(exit_status({"--no-such-flag"}, &err), 2);
    EXPECT_NE(err.find("--no-such-flag"), std::string::npos) << err;
    EXPECT_EQ(exit_status({"--port", "ninety"}), 2);
    EXPECT_EQ(exit_status({"--help"}), 0);

    // A port someone else holds.
    int holder = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::listen(holder, 1), 0);
    socklen_t len = sizeof a;
    ::getsockname(holder, reinterpret_cast<sockaddr*>(&a), &len);
    auto taken = std::to_string(ntohs(a.sin_port));
    auto dir = scratch_dir("exit-data");
    EXPECT_EQ(exit_status({"--bind", "127.0.0.1", "--port", taken, "--data-dir", dir.string()}, &err), 1);
    EXPECT_NE(err.find("critical"), std::string::npos) << err;
    ::close(holder);

    // A Redis that is not there (nothing listens on a fresh free port).
    EXPECT_EQ(exit_status({"--bind", "127.0.0.1", "--port", "0", "--data-dir", dir.string(), "--redis",
                           "redis://127.0.0.1:" + std::to_string(free_port())}),
              1);
    std::error_code ec;
    fs::remove_all(dir, ec);
}

TEST(operations, a_drain_as_clients_balancers_and_the_router_see_it)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto flags = cluster_flags(redis, "eu");
    flags.insert(flags.end(), {"--drain-timeout-ms", "5000"});
    reflector_process r(flags);
    ASSERT_TRUE(r.up());
    ws_client stubborn(r.port(), "/drain1");  // never answers the 1001 close: the drain must time out
    stubborn.send_json(join_msg("stubborn"));
    ASSERT_TRUE(stubborn.recv_action("SYNC", 10s));
    EXPECT_EQ(http_request(r.port(), "POST", "/v1/rooms/lobby/join", R"({"user":"u1"})").status, 200);

    auto t0 = std::chrono::steady_clock::now();
    r.signal(SIGTERM);
    ASSERT_TRUE(eventually([&] { return http_request(r.port(), "GET", "/health/ready").status == 503; }));
    EXPECT_EQ(http_request(r.port(), "GET", "/health/ready").body, "draining\n");
    EXPECT_EQ(http_request(r.port(), "GET", "/health/live").status, 200);
    // The router lists it as draining and places nobody there.
    ASSERT_TRUE(eventually([&] {
        auto list = json::parse(http_request(r.port(), "GET", "/v1/reflectors").body, nullptr, false);
        return list.is_array() && list.size() == 1 && list[0].value("draining", false);
    }));
    auto join = http_request(r.port(), "POST", "/v1/rooms/lobby/join", R"({"user":"u2"})");
    EXPECT_EQ(join.status, 503) << join.body;
    EXPECT_EQ(json::parse(join.body, nullptr, false).value("error", ""), "this reflector is draining") << join.body;
    // A new WebSocket is refused with an answer.
    auto upgrade = http_request(r.port(), "GET", "/drain2", "",
                                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    EXPECT_EQ(upgrade.status, 503);
    EXPECT_EQ(json::parse(upgrade.body, nullptr, false).value("error", ""), "draining");

    // The stubborn client keeps the process up until --drain-timeout-ms, then it exits 0.
    auto status = r.wait_exit(stuck);
    auto took = std::chrono::steady_clock::now() - t0;
    ASSERT_TRUE(status) << "still running " << stuck.count() << " s after SIGTERM";
    EXPECT_EQ(*status, 0) << r.log();
    EXPECT_GE(took, 4900ms) << "exited before the drain timeout with a client still open";
    EXPECT_NE(r.log().find("drain timeout: 1 connections still open"), std::string::npos) << r.log();
}

TEST(operations, a_drain_waits_for_an_upload_in_progress)
{
    reflector_process r({"--drain-timeout-ms", "20000"});
    ASSERT_TRUE(r.up());
    // A snapshot upload is half sent when SIGTERM arrives; the rest follows 1 s later.
    std::string const blob(64 * 1024, 's');
    tcp_connection up(r.port());
    ASSERT_TRUE(up.send("PUT /files/apps/drain/late.snap HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                        std::to_string(blob.size()) + "\r\nConnection: close\r\n\r\n" + blob.substr(0, 1000)));
    ASSERT_TRUE(eventually([&] {
        return metrics::parse(http_request(r.port(), "GET", "/metrics").body)["lockstep_uploads_in_progress"] == 1;
    }));
    r.signal(SIGTERM);
    ASSERT_TRUE(eventually([&] { return http_request(r.port(), "GET", "/health/ready").status == 503; }));
    std::this_thread::sleep_for(1s);
    EXPECT_FALSE(r.wait_exit(0ms)) << "exited with an upload in progress";
    ASSERT_TRUE(up.send(blob.substr(1000)));
    auto const& answer = up.read_until("\r\n\r\n");
    EXPECT_EQ(answer.rfind("HTTP/1.1 201", 0), 0u) << answer;
    // Then it exits at once (no WebSocket client, nothing else in flight), and the blob is there.
    auto status = r.wait_exit(stuck);
    ASSERT_TRUE(status);
    EXPECT_EQ(*status, 0) << r.log();
    std::size_t stored = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(r.data(), ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec))
        if (it->path().filename() == "late.snap")
            stored = fs::file_size(it->path());
    EXPECT_EQ(stored, blob.size());
}

TEST(operations, a_second_signal_stops_a_drain_at_once)
{
    reflector_process r({"--drain-timeout-ms", "120000"});
    ASSERT_TRUE(r.up());
    ws_client stubborn(r.port(), "/sig1");
    stubborn.send_json(join_msg("stubborn"));
    ASSERT_TRUE(stubborn.recv_action("SYNC", 10s));
    r.signal(SIGTERM);
    ASSERT_TRUE(eventually([&] { return http_request(r.port(), "GET", "/health/ready").status == 503; }));
    r.signal(SIGINT);
    // Far below the 120 s drain timeout: only the second signal can end it this soon.
    auto status = r.wait_exit(stuck);
    ASSERT_TRUE(status) << "a second signal did not stop the drain";
    EXPECT_EQ(*status, 0) << r.log();
}

TEST(operations, a_redis_outage_answers_503_with_a_field_sessions_go_on_and_it_recovers)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    // Sessions kept on this reflector (--journal-sync none) run on without Redis. With the
    // default, their output waits for Redis instead (cluster_sessions_test).
    auto flags = cluster_flags(redis, "eu");
    flags.insert(flags.end(), {"--journal-sync", "none"});
    reflector_process r(flags);
    ASSERT_TRUE(r.up());
    ASSERT_EQ(http_request(r.port(), "POST", "/v1/rooms/lobby/join", R"({"user":"u1"})").status, 200);
    ws_client a(r.port(), "/out1"), b(r.port(), "/out1");
    a.send_json(join_msg("a"));
    b.send_json(join_msg("b"));
    ASSERT_TRUE(a.recv_action("SYNC", 10s));
    ASSERT_TRUE(b.recv_action("SYNC", 10s));

    redis.stop();
    for (auto [method, target] : {std::pair{"POST", "/v1/rooms/lobby/join"}, std::pair{"GET", "/v1/reflectors"},
                                  std::pair{"GET", "/v1/rooms/lobby"}}) {
        auto res = http_request(r.port(), method, target, method == std::string("POST") ? R"({"user":"u2"})" : "");
        EXPECT_EQ(res.status, 503) << method << " " << target << ": " << res.body;
        auto j = json::parse(res.body, nullptr, false);
        EXPECT_EQ(j.value("error", ""), "router state (Redis) unavailable") << res.body;
        EXPECT_FALSE(j.value("field", "").empty()) << res.body;
    }
    // Sessions do not need Redis: events still go round.
    a.send_json({{"action", "SEND"}, {"args", {0, 0, "during the outage", 1}}});
    bool got = false;
    for (int i = 0; i < 50 && !got; ++i) {
        auto m = b.recv_action("RECV", 10s);
        ASSERT_TRUE(m) << "no RECV while Redis is down";
        got = (*m)["args"][2] == "during the outage";
    }
    EXPECT_TRUE(got);
    EXPECT_EQ(http_request(r.port(), "GET", "/health/ready").status, 200);

    redis.start();  // same port, empty: the reflector reconnects and re-registers
    ASSERT_TRUE(redis.ready());
    EXPECT_TRUE(eventually([&] {
        return http_request(r.port(), "POST", "/v1/rooms/lobby/join", R"({"user":"u3"})").status == 200;
    })) << "the /v1 API did not recover after Redis came back";
}
