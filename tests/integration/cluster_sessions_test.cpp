// Cluster sessions (docs/durability.md, "Cluster"): reflector processes sharing one real
// redis-server, started here on free loopback ports, frozen and killed with real signals.
// The failover with the real client behind HAProxy is tests/compat/run-failover.mjs.
#include "redis/link.hpp"
#include "support/frames.hpp"
#include "support/metrics.hpp"
#include "support/process.hpp"
#include "support/redis_server.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <signal.h>

#include <thread>

using namespace lockstep;
using namespace lockstep::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::unique_ptr<reflector_process>
node(redis_server const& redis, std::vector<std::string> more = {})
{
    std::vector<std::string> args{"--redis", redis.url(), "--lease-ms", "1000", "--takeover-wait-ms", "4000"};
    args.insert(args.end(), more.begin(), more.end());
    return std::make_unique<reflector_process>(std::move(args));
}

/// True if a RECV or a SYNC's messages carry `payload`.
bool
carries(json const& m, std::string const& payload)
{
    if (m["action"] == "RECV")
        return m["args"].dump().find(payload) != std::string::npos;
    if (m["action"] == "SYNC")
        return m["args"]["messages"].dump().find(payload) != std::string::npos;
    return false;
}

/// One series of a reflector's /metrics (NaN if absent).
double
metric_of(reflector_process const& r, std::string const& name)
{
    auto m = metrics::parse(http_request(r.port(), "GET", "/metrics").body);
    auto it = m.samples.find(name);
    return it == m.samples.end() ? std::nan("") : it->second;
}

/// Frames a client sends after its reflector's close frame left, before it reads it.
constexpr int late_frames = 20;

/// Sends the late frames ("late-00", ...) without reading anything.
void
send_late(ws_client& c)
{
    for (int i = 0; i < late_frames; ++i)
        c.send_json(send_msg(fmt::format("late-{:02}", i)));
}

/// Reads the move's close (1001): nothing follows it, and the reflector ends the connection.
void
expect_move_close(ws_client& c)
{
    EXPECT_EQ(c.wait_close(3000ms), 1001);
    auto rest = c.rest_after_close();
    ASSERT_TRUE(rest) << "the reflector did not end the connection after the close handshake";
    EXPECT_EQ(rest->size(), 0u) << "bytes after the close frame (a second close?)";
}

/// How many of the late frames `sync` lacks.
int
missing_late(json const& sync)
{
    int missing = 0;
    for (int i = 0; i < late_frames; ++i)
        missing += !carries(sync, fmt::format("late-{:02}", i));
    return missing;
}

TEST(cluster_sessions, a_join_at_a_non_owner_is_forwarded_when_the_session_may_not_move_and_closes_go_both_ways)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    // Hand-offs off: a JOIN at the non-owner is always forwarded. Both name a balancer as
    // their public URL (as in a cluster behind one): forwarding must use the peer URL
    // (by default the bind address and port), not the public one.
    auto a = node(redis, {"--handoff-min-interval-ms", "0", "--public-url", "ws://balancer.invalid:1"});
    auto b = node(redis, {"--handoff-min-interval-ms", "0", "--public-url", "ws://balancer.invalid:1"});
    ASSERT_TRUE(a->up() && b->up());

    ws_client c1(a->port(), "/FWDSESSION");
    c1.send_json(join_msg("v1"));
    auto sync1 = c1.recv_action("SYNC");
    ASSERT_TRUE(sync1);

    // At b: relayed to a, the owner; same session, events both ways.
    ws_client c2(b->port(), "/FWDSESSION");
    auto t0 = std::chrono::steady_clock::now();
    c2.send_json(join_msg("v2"));
    auto sync2 = c2.recv_action("SYNC");
    ASSERT_TRUE(sync2) << "the forwarded JOIN got no SYNC";
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms) << "forwarded at once, not after --takeover-wait-ms";
    EXPECT_EQ((*sync2)["args"]["timeline"], (*sync1)["args"]["timeline"]);
    c2.send_json(send_msg("via-b"));
    auto r1 = c1.recv_action("RECV");
    ASSERT_TRUE(r1);
    EXPECT_TRUE(carries(*r1, "via-b"));
    c1.send_json(send_msg("via-a"));
    for (auto deadline = std::chrono::steady_clock::now() + 3s;;) {
        auto m = c2.recv_action("RECV", 500ms);
        ASSERT_TRUE(std::chrono::steady_clock::now() < deadline) << "via-a never reached the forwarded client";
        if (m && carries(*m, "via-a"))
            break;
    }
    EXPECT_EQ(metric_of(*b, "lockstep_connections_forwarded_total"), 1);
    EXPECT_EQ(metric_of(*a, "lockstep_connections_forwarded_total"), 0);
    EXPECT_EQ(metric_of(*a, "lockstep_session_handoffs_total"), 0);
    EXPECT_EQ(metric_of(*a, "lockstep_connections"), 2);  // c1 and b's link

    // A connection that was forwarded once is never forwarded again (no loops).
    ws_client looped(b->port(), "/FWDSESSION", "X-Lockstep-Forwarded: elsewhere\r\n");
    looped.send_json(join_msg("v3"));
    EXPECT_EQ(looped.wait_close(6000ms), 4003);
    EXPECT_EQ(metric_of(*b, "lockstep_connections_forwarded_total"), 1);

    // The client's close reaches the owner: its link there goes.
    c2.send_frame(0x8, std::string("\x03\xe8", 2));  // close 1000
    EXPECT_EQ(c2.wait_close(), 1000);
    bool gone = false;
    for (int i = 0; i < 40 && !gone; ++i, std::this_thread::sleep_for(50ms))
        gone = metric_of(*a, "lockstep_connections") == 1;
    EXPECT_TRUE(gone) << "the owner kept the forwarded client";

    // The owner's close reaches the client: a drain closes its clients with 1001.
    ws_client c4(b->port(), "/FWDSESSION");
    c4.send_json(join_msg("v4"));
    ASSERT_TRUE(c4.recv_action("SYNC"));
    a->signal(SIGTERM);
    EXPECT_EQ(c4.wait_close(), 1001);
    EXPECT_EQ(c1.wait_close(), 1001);
}

TEST(cluster_sessions, a_stale_owner_frozen_past_its_lease_shows_and_writes_nothing_after_it_resumes)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto a = node(redis);
    auto b = node(redis);
    ASSERT_TRUE(a->up() && b->up());

    ws_client c1(a->port(), "/STALESESSION");
    c1.send_json(join_msg("v1"));
    auto sync1 = c1.recv_action("SYNC");
    ASSERT_TRUE(sync1);
    for (int i = 0; i < 3; ++i)
        c1.send_json(send_msg("before-" + std::to_string(i)));
    std::uint32_t last_seq = 0;
    for (int i = 0; i < 3; ++i) {
        auto r = c1.recv_action("RECV");
        ASSERT_TRUE(r) << "event " << i << " not reflected";
        last_seq = (*r)["args"][1].get<std::uint32_t>();
    }

    a->signal(SIGSTOP);  // the owner freezes, holding the lease until it expires
    struct thaw_guard {
        reflector_process& p;
        ~thaw_guard() { p.signal(SIGCONT); }
    } thaw{*a};

    // Another reflector takes the session over once the lease expired: same timeline,
    // the seq continues, the three events come back.
    ws_client c2(b->port(), "/STALESESSION");
    auto t0 = std::chrono::steady_clock::now();
    c2.send_json(join_msg("v2"));
    auto sync2 = c2.recv_action("SYNC", 4000ms);
    ASSERT_TRUE(sync2) << "no takeover";
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2500ms);
    EXPECT_EQ((*sync2)["args"]["timeline"], (*sync1)["args"]["timeline"]);
    EXPECT_GE((*sync2)["args"]["seq"].get<std::uint32_t>(), last_seq);
    for (int i = 0; i < 3; ++i)
        EXPECT_TRUE(carries(*sync2, "before-" + std::to_string(i))) << (*sync2)["args"]["messages"].dump();
    c2.send_json(send_msg("after-takeover"));
    ASSERT_TRUE(c2.recv_action("RECV"));

    // The frozen owner wakes up with an event from its client waiting in its socket.
    c1.send_json(send_msg("stale-write"));
    a->signal(SIGCONT);
    bool saw_stale = false;
    for (auto deadline = std::chrono::steady_clock::now() + 4s; !c1.closed() && std::chrono::steady_clock::now() < deadline;)
        if (auto m = c1.recv(200ms); m && carries(*m, "stale-write"))
            saw_stale = true;
    EXPECT_FALSE(saw_stale) << "the stale owner showed an event it could not journal";
    ASSERT_TRUE(c1.closed()) << "the stale owner kept serving the session";
    EXPECT_EQ(c1.close_code(), 4003);

    // The session as the new owner has it: the takeover's event, not the stale one.
    ws_client c3(b->port(), "/STALESESSION");
    c3.send_json(join_msg("v3"));
    auto sync3 = c3.recv_action("SYNC");
    ASSERT_TRUE(sync3);
    EXPECT_TRUE(carries(*sync3, "after-takeover"));
    EXPECT_FALSE(carries(*sync3, "stale-write"));
    EXPECT_EQ((*sync3)["args"]["timeline"], (*sync1)["args"]["timeline"]);
}

TEST(cluster_sessions, events_sent_while_redis_is_frozen_wait_for_it_and_none_is_lost)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto a = node(redis, {"--lease-ms", "4000"});
    ws_client c1(a->port(), "/FROZENREDIS"), c2(a->port(), "/FROZENREDIS");
    c1.send_json(join_msg("v1"));
    ASSERT_TRUE(c1.recv_action("SYNC"));
    c2.send_json(join_msg("v2"));
    ASSERT_TRUE(c2.recv_action("SYNC"));
    c1.send_json(send_msg("before"));
    ASSERT_TRUE(c2.recv_action("RECV"));

    redis.pause();
    struct thaw_guard {
        redis_server& r;
        ~thaw_guard() { r.resume(); }
    } thaw{redis};
    for (int i = 0; i < 5; ++i)
        c1.send_json(send_msg("frozen-" + std::to_string(i)));
    // Write before show: nothing of it reaches a client while Redis cannot have it.
    bool shown = false;
    for (auto end = std::chrono::steady_clock::now() + 1000ms; std::chrono::steady_clock::now() < end;)
        if (auto m = c2.recv(100ms); m && carries(*m, "frozen-"))
            shown = true;
    EXPECT_FALSE(shown) << "an event was shown before Redis had it";
    redis.resume();
    // Once Redis answers, all five arrive in order, and the session stayed here.
    for (int i = 0; i < 5; ++i) {
        std::optional<json> m;
        while ((m = c2.recv_action("RECV", 3000ms)) && (*m)["args"].dump().find("frozen-") == std::string::npos) {
        }
        ASSERT_TRUE(m) << "event " << i << " lost";
        EXPECT_TRUE(carries(*m, "frozen-" + std::to_string(i))) << m->dump();
    }
    EXPECT_FALSE(c1.closed());
    EXPECT_FALSE(c2.closed());
}

TEST(cluster_sessions, a_drained_owner_releases_its_sessions_for_an_immediate_takeover)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto a = node(redis, {"--drain-timeout-ms", "2000"});
    auto b = node(redis);
    ws_client c1(a->port(), "/DRAINSESSION");
    c1.send_json(join_msg("v1"));
    auto sync1 = c1.recv_action("SYNC");
    ASSERT_TRUE(sync1);
    c1.send_json(send_msg("kept"));
    ASSERT_TRUE(c1.recv_action("RECV"));
    a->signal(SIGTERM);
    EXPECT_EQ(c1.wait_close(3000ms), 1001);
    ws_client c2(b->port(), "/DRAINSESSION");
    auto t0 = std::chrono::steady_clock::now();
    c2.send_json(join_msg("v2"));
    auto sync2 = c2.recv_action("SYNC", 3000ms);
    ASSERT_TRUE(sync2);
    // Released, not expired: no lease time to wait out.
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
    EXPECT_EQ((*sync2)["args"]["timeline"], (*sync1)["args"]["timeline"]);
    EXPECT_TRUE(carries(*sync2, "kept"));
}

TEST(cluster_sessions, every_frame_a_client_sent_before_it_read_the_moves_close_reaches_the_session)
{
    // A drain closes the clients first (1001). What a client sent after that close frame
    // left, but before it read it, still belongs in the session: the reflector reads on
    // until the client's close reply. (Beast's own close handshake kept only the first of
    // those frames and discarded the rest.)
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto a = node(redis, {"--drain-timeout-ms", "3000"});
    auto b = node(redis);
    ASSERT_TRUE(a->up() && b->up());
    ws_client c1(a->port(), "/LATESESSION");
    c1.send_json(join_msg("v1"));
    ASSERT_TRUE(c1.recv_action("SYNC"));
    c1.send_json(send_msg("before"));
    ASSERT_TRUE(c1.recv_action("RECV"));
    a->signal(SIGTERM);
    std::this_thread::sleep_for(300ms);  // the close frame is on its way; c1 does not read it yet
    send_late(c1);
    expect_move_close(c1);

    ws_client c2(b->port(), "/LATESESSION");
    c2.send_json(join_msg("v2"));
    auto sync2 = c2.recv_action("SYNC", 5000ms);
    ASSERT_TRUE(sync2);
    EXPECT_TRUE(carries(*sync2, "before"));
    EXPECT_EQ(missing_late(*sync2), 0) << "of " << late_frames << " frames sent before the close was read";
}

TEST(cluster_sessions, a_forwarded_clients_frames_that_crossed_the_owners_move_reach_the_session)
{
    // Forwarded (b relays c2 to the owner a), then a drains. Two hops for the close: a
    // tells b with a move notice and reads on; b closes c2 for the move, relays what c2
    // sent until its close reply, then closes the link. None of c2's late frames is lost.
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto a = node(redis, {"--handoff-min-interval-ms", "0", "--drain-timeout-ms", "3000"});
    auto b = node(redis, {"--handoff-min-interval-ms", "0"});
    ASSERT_TRUE(a->up() && b->up());
    ws_client c1(a->port(), "/LATEFWD");
    c1.send_json(join_msg("v1"));
    ASSERT_TRUE(c1.recv_action("SYNC"));
    ws_client c2(b->port(), "/LATEFWD");
    c2.send_json(join_msg("v2"));
    ASSERT_TRUE(c2.recv_action("SYNC"));
    c2.send_json(send_msg("before"));
    auto r = c1.recv_action("RECV");
    ASSERT_TRUE(r && carries(*r, "before"));
    ASSERT_TRUE(c2.recv_action("RECV"));
    a->signal(SIGTERM);
    std::this_thread::sleep_for(300ms);  // the move has reached b and c2's close is on its way
    send_late(c2);
    expect_move_close(c2);
    EXPECT_EQ(c1.wait_close(3000ms), 1001);

    // Until a has written the session and released it, b forwards a JOIN to a, which
    // refuses it (draining): 4003, and the client tries again, as the real one does.
    std::optional<json> sync3;
    for (auto deadline = std::chrono::steady_clock::now() + 5s; !sync3 && std::chrono::steady_clock::now() < deadline;) {
        ws_client c3(b->port(), "/LATEFWD");
        c3.send_json(join_msg("v3"));
        sync3 = c3.recv_action("SYNC", 2000ms);
        if (!sync3)
            std::this_thread::sleep_for(100ms);
    }
    ASSERT_TRUE(sync3);
    EXPECT_TRUE(carries(*sync3, "before"));
    EXPECT_EQ(missing_late(*sync3), 0) << "of " << late_frames << " frames c2 sent before it read the close";
}

TEST(cluster_sessions, a_client_posing_as_a_forwarding_reflector_holds_up_no_move_and_no_other_session)
{
    // A client sends the forwarding headers itself: at the drain it gets the move notice
    // instead of a close and never answers. The drain's move still completes (its
    // clients get a second), and another session's frames that crossed the close arrive.
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto a = node(redis, {"--drain-timeout-ms", "3000"});
    auto b = node(redis);
    ASSERT_TRUE(a->up() && b->up());
    ws_client poser(a->port(), "/POSER", "X-Lockstep-Forwarded: x\r\nX-Lockstep-Move-Notice: 1\r\n");
    poser.send_json(join_msg("p"));
    ASSERT_TRUE(poser.recv_action("SYNC"));
    poser.send_json(send_msg("poser-before"));
    ASSERT_TRUE(poser.recv_action("RECV"));
    ws_client honest(a->port(), "/HONEST");
    honest.send_json(join_msg("h"));
    ASSERT_TRUE(honest.recv_action("SYNC"));
    a->signal(SIGTERM);
    std::this_thread::sleep_for(300ms);
    send_late(honest);
    expect_move_close(honest);
    auto notice = poser.recv_text(3000ms);
    ASSERT_TRUE(notice);
    EXPECT_EQ(notice->rfind("_LOCKSTEP_MOVE 1001 ", 0), 0u) << *notice;
    // Both sessions are released and taken over at b, each with its events.
    for (auto const* id : {"/HONEST", "/POSER"}) {
        ws_client c(b->port(), id);
        c.send_json(join_msg("v2"));
        auto sync = c.recv_action("SYNC", 5000ms);
        ASSERT_TRUE(sync) << id;
        if (std::string(id) == "/HONEST")
            EXPECT_EQ(missing_late(*sync), 0);
        else
            EXPECT_TRUE(carries(*sync, "poser-before"));
    }
    EXPECT_EQ(a->wait_exit(5000ms), std::optional<int>(0)) << "the drain ended, the poser's socket notwithstanding";
}

TEST(cluster_sessions, a_forwarded_clients_last_frames_before_it_leaves_reach_the_session)
{
    // c2 (forwarded by b) sends its last SENDs and its close while the owner a is frozen,
    // so b's link to a is backed up (more than the sockets between them hold) when c2's
    // close arrives: the link still writes every frame to a before it closes.
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    // A lease that outlasts the freeze (the sends take seconds under the sanitizers).
    auto a = std::make_unique<reflector_process>(
        std::vector<std::string>{"--redis", redis.url(), "--lease-ms", "15000", "--handoff-min-interval-ms", "0"});
    auto b = node(redis, {"--handoff-min-interval-ms", "0"});
    ASSERT_TRUE(a->up() && b->up());
    ws_client c1(a->port(), "/LASTFWD");
    c1.send_json(join_msg("v1"));
    ASSERT_TRUE(c1.recv_action("SYNC"));
    ws_client c2(b->port(), "/LASTFWD");
    c2.send_json(join_msg("v2"));
    ASSERT_TRUE(c2.recv_action("SYNC"));
    constexpr int last = 5;  // 7.5 MB in all: under --max-queue-bytes (8 MB), over what the sockets take
    a->signal(SIGSTOP);
    for (int i = 0; i < last; ++i)
        c2.send_json(send_msg(fmt::format("last-{:02}-", i) + std::string(1'500'000, 'x')));
    c2.send_frame(0x8, std::string("\x03\xe8", 2));  // 1000: a normal leave
    std::this_thread::sleep_for(200ms);  // b has read the close
    a->signal(SIGCONT);
    int seen = 0;
    for (auto deadline = std::chrono::steady_clock::now() + 10s; seen < last && std::chrono::steady_clock::now() < deadline;)
        if (auto m = c1.recv_action("RECV", 500ms); m && carries(*m, fmt::format("last-{:02}-", seen)))
            ++seen;
    EXPECT_EQ(seen, last) << "RECVs of c2's last SENDs at c1, in order\nA:\n" << a->log();
    EXPECT_TRUE(b->running());
}

TEST(cluster_sessions, a_redis_that_lost_its_data_gets_each_session_back_from_its_owner)
{
    // Redis restarts without persistence (FLUSHALL: the same empty Redis) mid-session. The
    // owner writes its session back, so a takeover after the owner's kill -9 still has
    // every event, before and after the loss.
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto a = node(redis);
    auto b = node(redis);
    ASSERT_TRUE(a->up() && b->up());
    ws_client c1(a->port(), "/LOSTDATA");
    c1.send_json(join_msg("v1"));
    ASSERT_TRUE(c1.recv_action("SYNC"));
    auto play = [&](std::string const& prefix) {
        for (int i = 0; i < 5; ++i) {
            c1.send_json(send_msg(prefix + std::to_string(i)));
            auto r = c1.recv_action("RECV", 5000ms);
            ASSERT_TRUE(r && carries(*r, prefix + std::to_string(i))) << prefix << i;
        }
    };
    play("before-");
    redis::link admin(redis.url());
    auto flushed = admin.command({"FLUSHALL"});
    ASSERT_TRUE(flushed && !flushed->is_error());
    play("after-");
    // The owner noticed (its renewal or its next append) and wrote the whole state back.
    bool back = false;
    for (int i = 0; i < 100 && !back; ++i, std::this_thread::sleep_for(50ms)) {
        auto seq = admin.command({"HGET", "ls:s:{LOSTDATA}:h", "seq"});
        back = seq && !seq->is_error() && !seq->str.empty() && metric_of(*a, "lockstep_sessions") == 1;
    }
    ASSERT_TRUE(back) << "the session was not written back to Redis";
    std::this_thread::sleep_for(300ms);  // its last append and a renewal
    EXPECT_NE(a->log().find("lost its data"), std::string::npos) << a->log();
    a->kill();

    ws_client c2(b->port(), "/LOSTDATA");
    c2.send_json(join_msg("v2"));
    auto sync = c2.recv_action("SYNC", 8000ms);
    ASSERT_TRUE(sync) << b->log();
    for (auto const* prefix : {"before-", "after-"})
        for (int i = 0; i < 5; ++i)
            EXPECT_TRUE(carries(*sync, prefix + std::to_string(i))) << prefix << i;
}

TEST(cluster_sessions, a_blob_uploaded_through_one_reflector_is_read_through_another_after_it_died)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto a = node(redis);
    auto b = node(redis);
    std::string bytes("CRQ1\x00\x01 snapshot bytes", 20);
    auto put = http_request(a->port(), "PUT", "/files/apps/it/snap/abc/0000005200_7.hash", bytes,
                            "Content-Type: application/octet-stream\r\n");
    ASSERT_EQ(put.status, 201);
    a->kill();
    auto got = http_request(b->port(), "GET", "/files/apps/it/snap/abc/0000005200_7.hash");
    EXPECT_EQ(got.status, 200);
    EXPECT_EQ(got.body, bytes);
    EXPECT_EQ(http_request(b->port(), "HEAD", "/files/apps/it/snap/abc/0000005200_7.hash").status, 200);
    EXPECT_EQ(http_request(b->port(), "GET", "/files/apps/it/snap/abc/other").status, 404);
}

TEST(cluster_sessions, a_snapshot_keeps_its_blob_in_redis_as_long_as_the_session)
{
    // A blob lives --session-retention after its upload; a session that names it in a
    // snapshot renews that, so a session in use never loses its snapshot to expiry.
    redis_server redis;
    ASSERT_TRUE(redis.ready());
    auto a = node(redis, {"--session-retention", "1000", "--session-linger-ms", "500"});
    redis::link peek(redis.url());
    auto pttl = [&] {
        auto r = peek.command({"PTTL", "ls:blob:apps/it/snap/ret/0000000100_1.hash"});
        return r ? r->integer : -100;
    };
    auto put = http_request(a->port(), "PUT", "/files/apps/it/snap/ret/0000000100_1.hash", "snapshot",
                            "Content-Type: application/octet-stream\r\n");
    ASSERT_EQ(put.status, 201);
    std::this_thread::sleep_for(2500ms);
    auto before = pttl();
    ASSERT_GT(before, 0);
    ASSERT_LT(before, 998'000) << "the upload's time to live is the retention";

    ws_client c(a->port(), "/RETAINED");
    c.send_json(join_msg("v1"));
    ASSERT_TRUE(c.recv_action("SYNC"));
    c.send_json(send_msg("state"));
    auto ev = c.recv_action("RECV");
    ASSERT_TRUE(ev);
    c.send_json({{"id", "x"},
                 {"action", "SNAP"},
                 {"args",
                  {{"time", (*ev)["args"][0]},
                   {"seq", (*ev)["args"][1]},
                   {"hash", "h"},
                   {"url", a->files() + "/apps/it/snap/ret/0000000100_1.hash"}}}});
    std::int64_t after = before;
    for (int i = 0; i < 100 && after <= before + 2000; ++i) {  // bounded: 5 s
        std::this_thread::sleep_for(50ms);
        after = pttl();
    }
    EXPECT_GT(after, 998'000) << "the snapshot's blob was not given the retention again";

    // The session leaves memory (its last client gone, linger over): its last append
    // gives the blob the retention once more, with the session's own keys.
    std::this_thread::sleep_for(2500ms);
    before = pttl();
    ASSERT_LT(before, 998'000);
    c.drop();
    after = before;
    for (int i = 0; i < 200 && after <= before + 2000; ++i) {  // bounded: 10 s (linger 500 ms)
        std::this_thread::sleep_for(50ms);
        after = pttl();
    }
    EXPECT_GT(after, 998'000) << "the session left memory without renewing its snapshot's blob";
    auto keys = peek.command({"PTTL", "ls:s:{RETAINED}:h"});
    ASSERT_TRUE(keys);
    EXPECT_GT(keys->integer, 998'000) << "the session's own keys have the retention too";
}

}  // namespace

TEST(cluster_sessions, health_redis_answers_whether_this_reflector_reaches_redis)
{
    // Peers ask it during a Redis outage (docs/durability.md, "Redis outages").
    redis_server redis;
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    auto a = node(redis);
    auto r = http_request(a->port(), "GET", "/health/redis");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, "redis reachable\n");
    EXPECT_EQ(http_request(a->port(), "POST", "/health/redis").status, 405);
    redis.pause();  // SIGSTOP: calls hang; the lease keeper ticks every quarter lease (250 ms)
    struct cont_guard {
        redis_server& r;
        ~cont_guard() { r.resume(); }
    } thaw{redis};
    auto until = [&](int status, std::chrono::milliseconds bound) {
        auto end = std::chrono::steady_clock::now() + bound;
        while (std::chrono::steady_clock::now() < end) {
            if (http_request(a->port(), "GET", "/health/redis").status == status)
                return true;
            std::this_thread::sleep_for(50ms);
        }
        return false;
    };
    EXPECT_TRUE(until(503, 3000ms)) << "still 'reachable' with Redis stopped";
    redis.resume();
    EXPECT_TRUE(until(200, 5000ms)) << "still 'unreachable' after Redis came back";
    // A reflector without --redis has no such state.
    reflector_process standalone;
    EXPECT_EQ(http_request(standalone.port(), "GET", "/health/redis").status, 404);
}
