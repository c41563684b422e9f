// The reflector over real loopback sockets, driven with hand-written JSON frames.
#include "support/fixture.hpp"

#include <gtest/gtest.h>

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

namespace {

/// Joins and waits for SYNC and the client's own users event.
json
join(ws_client& c, std::string const& user, int tick = 50, int leave_delay = 300)
{
    c.send_json(join_msg(user, tick, leave_delay));
    auto sync = c.recv_action("SYNC");
    if (!sync)
        throw std::runtime_error("no SYNC");
    return *sync;
}

std::optional<json>
next_recv(ws_client& c, std::chrono::milliseconds t = 3000ms)
{
    return c.recv_action("RECV", t);
}

std::optional<json>
next_event(ws_client& c, std::string const& payload, std::chrono::milliseconds t = 3000ms)
{
    auto deadline = std::chrono::steady_clock::now() + t;
    while (std::chrono::steady_clock::now() < deadline) {
        auto r = next_recv(c, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
        if (!r)
            return std::nullopt;
        if ((*r)["args"][2] == payload)
            return r;
    }
    return std::nullopt;
}

}  // namespace

TEST(reflector, join_sync_send_recv_in_one_order)
{
    running_server srv;
    ws_client a(srv.port(), "/S1");
    ws_client b(srv.port(), "/reflector/S1");  // box layout: same session
    auto sa = join(a, "va");
    EXPECT_EQ(sa["id"], "S1");
    EXPECT_EQ(sa["args"]["seq"], 0xFFFFFFF0u);
    EXPECT_LT(sa["args"]["time"].get<int>(), 100);
    auto sb = join(b, "vb");
    EXPECT_EQ(sb["args"]["timeline"], sa["args"]["timeline"]);
    // The joins are announced in users events (batched for 200 ms: one event when both
    // joins fall in one batch, two on a slow machine), in the same order to both.
    json joined = json::array();
    std::uint32_t expect = 0xFFFFFFF1u;
    while (joined.size() < 2) {
        auto ua = next_recv(a);
        ASSERT_TRUE(ua);
        EXPECT_EQ((*ua)["args"][1].get<std::uint32_t>(), expect++);
        ASSERT_EQ((*ua)["args"][2]["what"], "users");
        for (auto const& v : (*ua)["args"][2]["joined"])
            joined.push_back(v);
        if (joined.size() < 2 && joined == json::array({"va"}))
            continue;  // b joined after a's batch went out: b sees only the second event
        auto ub = next_recv(b);
        ASSERT_TRUE(ub);
        EXPECT_EQ(*ua, *ub);
    }
    EXPECT_EQ(joined, json::array({"va", "vb"}));
    for (int i = 0; i < 50; ++i)
        (i % 2 ? a : b).send_json(send_msg("m" + std::to_string(i)));
    for (int i = 0; i < 50; ++i) {
        auto ra = next_recv(a);
        auto rb = next_recv(b);
        ASSERT_TRUE(ra && rb);
        EXPECT_EQ(*ra, *rb);
        EXPECT_EQ((*ra)["args"][1].get<std::uint32_t>(), expect++);
        EXPECT_EQ((*ra)["args"][3], 5);  // sender's trailing element kept
    }
}

TEST(reflector, ticks_arrive_at_the_requested_interval)
{
    // The ticks' session times, not the wall clock of the test: a session's time runs at
    // the real clock's rate, so 20 ticks at 50 ms span at least ~950 ms of session time
    // however slow the machine is. An upper bound is only a sanity check: the overload
    // control may stretch intervals by up to --max-tick-stretch (400%, so 5x) on a
    // saturated CI machine, and nothing stretches them further.
    running_server srv;
    for (int tick : {50, 100}) {
        ws_client a(srv.port(), "/T" + std::to_string(tick));
        join(a, "va", tick);
        std::vector<std::int64_t> times;
        while (times.size() < 20) {
            auto m = a.recv_action("TICK", 30s);  // bounded: ~20 intervals needed
            ASSERT_TRUE(m) << "no TICK within 30 s after " << times.size();
            times.push_back((*m)["args"].get<std::int64_t>());
            if (times.size() > 1) {
                EXPECT_GT(times.back(), times[times.size() - 2]) << "session time went back";
            }
        }
        auto span = times.back() - times.front();
        EXPECT_GE(span, 19 * tick * 9 / 10) << "ticks faster than requested (" << tick << " ms)";
        EXPECT_LE(span, 19 * tick * 6) << "ticks far slower than requested (" << tick << " ms)";
    }
}

TEST(reflector, empty_session_id_closes_4100)
{
    running_server srv;
    ws_client a(srv.port(), "/reflector/");
    EXPECT_EQ(a.wait_close(), 4100);
}

TEST(reflector, bad_frames_close_only_the_sender)
{
    auto cfg = test_config();
    cfg.max_frame_bytes = 4096;
    running_server srv(cfg);
    ws_client good(srv.port(), "/B1");
    join(good, "good");
    next_recv(good);  // own users event

    struct bad_case {
        char const* name;
        std::function<void(ws_client&)> send;
        int code;
    };
    std::vector<bad_case> cases = {
        {"not json", [](ws_client& c) { c.send_text("{not json"); }, 4102},
        {"not an object", [](ws_client& c) { c.send_text("[1,2,3]"); }, 4102},
        {"binary frame", [](ws_client& c) { c.send_frame(0x2, R"({"action":"PULSE"})"); }, 1003},
        {"frame too big", [](ws_client& c) { c.send_text(R"({"action":"LOG","args":")" + std::string(10000, 'x') + "\"}"); }, 1009},
        {"invalid utf-8", [](ws_client& c) { c.send_text("{\"action\":\"LOG\",\"args\":\"\xC3\x28\"}"); }, 1007},
        {"malformed SEND", [](ws_client& c) { c.send_text(R"({"action":"SEND","args":{"x":1}})"); }, 4102},
        {"JOIN without version", [](ws_client& c) { c.send_text(R"({"action":"JOIN","args":{"apiKey":"none"}})"); }, 4100},
        {"JOIN with null args", [](ws_client& c) { c.send_text(R"({"action":"JOIN","args":null})"); }, 4100},
        {"JOIN without apiKey", [](ws_client& c) { c.send_text(R"({"action":"JOIN","args":{"version":1}})"); }, 4103},
    };
    for (auto& bc : cases) {
        ws_client bad(srv.port(), "/B1");
        if (std::string(bc.name) == "malformed SEND")
            join(bad, "bad");
        bc.send(bad);
        EXPECT_EQ(bad.wait_close(), bc.code) << bc.name;
    }
    // The good client is unaffected and events still flow.
    good.send_json(send_msg("still here"));
    EXPECT_TRUE(next_event(good, "still here"));
}

TEST(reflector, unknown_actions_are_ignored)
{
    running_server srv;
    ws_client a(srv.port(), "/U1");
    a.send_text(R"({"action":"FROBNICATE","args":1})");
    a.send_text(R"({"action":"PING","args":{"n":7}})");
    auto pong = a.recv_action("PONG");
    ASSERT_TRUE(pong);
    EXPECT_FALSE(pong->contains("id"));
    EXPECT_EQ((*pong)["args"]["n"], 7);
    a.send_text(R"({"action":"PULSE"})");
    a.send_text(R"({"action":"LOG","args":"hello"})");
    join(a, "va");
}

TEST(reflector, control_messages_for_unknown_session_close_4000)
{
    running_server srv;
    for (auto action : {"TUTTI", "SNAP", "SAVE", "TICKS"}) {
        ws_client a(srv.port(), "/NOPE");
        a.send_json({{"action", action}, {"args", json::array({1, 0, "x"})}});
        EXPECT_EQ(a.wait_close(), 4000) << action;
    }
}

TEST(reflector, socket_without_join_is_closed_4121)
{
    auto cfg = test_config();
    cfg.join_timeout_ms = 300;
    running_server srv(cfg);
    ws_client a(srv.port(), "/J1");
    EXPECT_EQ(a.wait_close(2000ms), 4121);
    ws_client b(srv.port(), "/J1");
    join(b, "vb");
    // A joined client is not timed out.
    EXPECT_FALSE(b.recv_action("NEVER", 600ms));
    EXPECT_FALSE(b.closed());
}

TEST(reflector, slow_consumer_is_closed_below_4100_and_nothing_is_lost_for_others)
{
    auto cfg = test_config();
    cfg.max_queue_bytes = 256 * 1024;
    cfg.max_message_rate = 0;  // the fast client sends as fast as the reflector echoes
    running_server srv(cfg);
    ws_client fast(srv.port(), "/Q1");
    ws_client slow(srv.port(), "/Q1");
    join(fast, "fast");
    join(slow, "slow");
    // The slow client does not read until the end: kernel buffers fill, then the
    // reflector's queue.
    std::string payload(60 * 1024, 'p');
    int const n = 300;  // 18 MB in all: far over kernel buffers + the queue limit
    std::uint32_t last = 0;
    int got = 0;
    for (int i = 0; i < n; ++i) {
        fast.send_json(send_msg(payload + std::to_string(i)));
        // The fast client keeps up (reads as it goes).
        while (auto r = fast.recv_action("RECV", got <= i ? 2000ms : 1ms)) {
            auto seq = (*r)["args"][1].get<std::uint32_t>();
            if (got && (*r)["args"][2].is_string()) {
                EXPECT_EQ(seq, last + 1);
            }
            last = seq;
            if ((*r)["args"][2].is_string())
                ++got;
            if (got > i)
                break;
        }
    }
    EXPECT_EQ(got, n);
    // The slow client now reads: what it got is gap-free, then a close it will
    // reconnect after (code below 4100).
    std::optional<std::uint32_t> prev;
    int code = -1;
    for (int i = 0; i < 1000 && code < 0; ++i) {
        auto m = slow.recv(3000ms);
        if (!m) {
            code = slow.close_code();
            break;
        }
        if ((*m)["action"] == "RECV") {
            auto seq = (*m)["args"][1].get<std::uint32_t>();
            if (prev) {
                EXPECT_EQ(seq, *prev + 1);
            }
            prev = seq;
        }
    }
    EXPECT_EQ(code, 1013);
    EXPECT_LT(code, 4100);
}

TEST(reflector, dropped_client_rejoins_the_same_timeline)
{
    running_server srv;
    ws_client a(srv.port(), "/R1");
    auto s1 = join(a, "va", 50, 500);
    ws_client b(srv.port(), "/R1");
    join(b, "vb", 50, 500);
    ASSERT_TRUE(next_recv(a));  // users: joined va, vb
    a.send_json(send_msg("before"));
    ASSERT_TRUE(next_event(b, "before"));
    b.drop();
    ws_client b2(srv.port(), "/R1");
    auto s2 = join(b2, "vb", 50, 500);
    EXPECT_EQ(s2["args"]["timeline"], s1["args"]["timeline"]);
    // The log covers b's past, so a seamless rejoin is possible.
    bool found = false;
    for (auto const& m : s2["args"]["messages"])
        found = found || m[2] == "before";
    EXPECT_TRUE(found);
    // The old connection's leave comes after leaveDelay: joined twice, then left once.
    auto u = next_recv(a);
    ASSERT_TRUE(u);
    auto ev = (*u)["args"][2];
    while (ev.is_string() || ev.value("what", "") != "users" || !ev.contains("joined") || ev["joined"] != json::array({"vb"})) {
        u = next_recv(a);
        ASSERT_TRUE(u);
        ev = (*u)["args"][2];
    }
    EXPECT_EQ(ev["active"], 3);
    u = next_recv(a, 2000ms);
    ASSERT_TRUE(u);
    EXPECT_EQ((*u)["args"][2]["left"], json::array({"vb"}));
    EXPECT_EQ((*u)["args"][2]["active"], 2);
}

TEST(reflector, sessions_are_isolated_across_workers)
{
    running_server srv;
    std::vector<std::unique_ptr<ws_client>> clients;
    for (int i = 0; i < 8; ++i) {
        clients.push_back(std::make_unique<ws_client>(srv.port(), "/iso" + std::to_string(i)));
        join(*clients.back(), "v" + std::to_string(i));
    }
    for (int i = 0; i < 8; ++i)
        clients[i]->send_json(send_msg("only-" + std::to_string(i)));
    for (int i = 0; i < 8; ++i) {
        // Each session has its own sequence: before its own event a client sees at most
        // its own users event (if the 200 ms batch went out first), nothing of the others.
        std::uint32_t expect = 0xFFFFFFF1u;
        for (;;) {
            auto r = next_recv(*clients[i]);
            ASSERT_TRUE(r) << "session " << i;
            EXPECT_EQ((*r)["args"][1].get<std::uint32_t>(), expect++);
            auto const& payload = (*r)["args"][2];
            if (payload.is_object()) {
                EXPECT_EQ(payload["what"], "users");
                EXPECT_EQ(payload["joined"], json::array({"v" + std::to_string(i)}));
                continue;
            }
            EXPECT_EQ(payload, "only-" + std::to_string(i));
            break;
        }
    }
}

TEST(reflector, busy_polling_workers_reflect_tick_and_stop)
{
    auto cfg = test_config();
    cfg.busy_poll_us = 1000;
    {
        running_server srv(cfg);
        ws_client a(srv.port(), "/BP1");
        ws_client b(srv.port(), "/BP1");
        join(a, "va", 20);
        join(b, "vb", 20);
        a.send_json(send_msg("polled"));
        ASSERT_TRUE(next_event(a, "polled"));
        ASSERT_TRUE(next_event(b, "polled"));
        // Ticks keep coming from a polling worker's timers.
        EXPECT_TRUE(b.recv_action("TICK", 2000ms));
    }  // and the server stops (the polling loop sees the io_context stop)
}

TEST(reflector, save_starts_the_next_fresh_session_from_persisted_data)
{
    auto cfg = test_config();
    cfg.session_linger_ms = 100;
    running_server srv(cfg);
    std::string url = "http://127.0.0.1/files/apps/it/pid/save/h1";
    {
        ws_client a(srv.port(), "/P1");
        join(a, "va", 50, 0);
        a.send_json({{"action", "SAVE"}, {"args", {{"persistTime", 10}, {"url", url}, {"dissident", nullptr}}}});
        a.send_text(R"({"action":"PING","args":1})");
        ASSERT_TRUE(a.recv_action("PONG"));
    }
    // Once P1 is gone (leave + linger), a new session of the same app starts from the
    // saved data. Each probe is a new session id, so no probe sees a session it made.
    json sync;
    auto deadline = std::chrono::steady_clock::now() + 30s;
    for (int n = 2; std::chrono::steady_clock::now() < deadline; ++n) {
        ws_client b(srv.port(), "/P" + std::to_string(n));
        sync = join(b, "vb");
        if (sync["args"].value("url", "") == url)
            break;
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(sync["args"]["url"], url);
    EXPECT_EQ(sync["args"]["persisted"], true);
    EXPECT_EQ(sync["args"]["seq"], 0xFFFFFFF0u);
}

TEST(reflector, drain_asks_clients_to_reconnect_and_stops)
{
    running_server srv;
    ws_client a(srv.port(), "/D1");
    join(a, "va");
    EXPECT_EQ(http_request(srv.port(), "GET", "/health/ready").status, 200);
    srv.get().drain();
    // Until the last client is gone: not ready, and no new WebSocket sessions.
    EXPECT_EQ(http_request(srv.port(), "GET", "/health/ready").status, 503);
    EXPECT_EQ(http_request(srv.port(), "GET", "/health/live").status, 200);
    // A new WebSocket upgrade is answered, not dropped: 503 {"error":"draining"}.
    auto upgrade = http_request(srv.port(), "GET", "/D1", "",
                                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    EXPECT_EQ(upgrade.status, 503);
    EXPECT_EQ(json::parse(upgrade.body, nullptr, false).value("error", ""), "draining") << upgrade.body;
    EXPECT_EQ(a.wait_close(), 1001);
    EXPECT_TRUE(srv.wait_stopped(10s));
}

TEST(reflector, sync_larger_than_the_queue_limit_still_reaches_a_late_joiner)
{
    auto cfg = test_config();
    cfg.max_queue_bytes = 64 * 1024;
    cfg.max_message_rate = 0;  // the log is built at full speed
    running_server srv(cfg);
    ws_client a(srv.port(), "/L1");
    join(a, "va");
    std::string payload(2000, 'q');
    for (int i = 0; i < 200; ++i) {  // ~400 KB of log, 6x the queue limit
        a.send_json(send_msg(payload));
        ASSERT_TRUE(a.recv_action("RECV"));
    }
    ws_client late(srv.port(), "/L1");
    auto sync = join(late, "late");
    EXPECT_GE(sync["args"]["messages"].size(), 200u);
    // And it goes on receiving events afterwards.
    a.send_json(send_msg("after"));
    EXPECT_TRUE(next_event(late, "after"));
    EXPECT_FALSE(late.closed());
}
