// The reflector's dispatch driven with in-memory peers and a fake host: no sockets, no
// worker, a manual clock. What a WebSocket connection does with a frame is all here.
#include "reflector/dispatch.hpp"

#include "support/test_peer.hpp"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <stdexcept>

using lockstep::manual_clock;
using lockstep::membership;
using lockstep::session;
using lockstep::session_options;
using lockstep::test::test_peer;
using nlohmann::json;

namespace {

/// Keeps sessions in a map, deletes them when they expire, records what the dispatch
/// reports.
class fake_host final : public lockstep::session_host {
public:
    manual_clock clock;
    session_options opts;
    std::map<std::string, std::unique_ptr<session>> sessions;
    int touches = 0;
    std::vector<std::string> seat_reports;
    bool fail_creation = false;  // session_for() throws, like a failed allocation
    lockstep::session_counters counts;

    session*
    find_session(std::string const& id) override
    {
        auto it = sessions.find(id);
        return it == sessions.end() ? nullptr : it->second.get();
    }
    session&
    session_for(std::string const& id) override
    {
        if (fail_creation)
            throw std::runtime_error("no memory for a session");
        auto& s = sessions[id];
        if (!s)
            s = std::make_unique<session>(id, clock, opts, nullptr, &counts);
        return *s;
    }
    void
    touched(session& s) override
    {
        ++touches;
        if (s.expired())
            sessions.erase(s.id());
    }
    void
    seat_joined(std::string const& token, std::string const& name, std::string const& conn) override
    {
        seat_reports.push_back("joined " + token + " " + name + " " + conn);
    }
    void
    seat_left(std::string const& token, bool normal, std::string const& conn) override
    {
        seat_reports.push_back(std::string(normal ? "left " : "dropped ") + token + " " + conn);
    }
    lockstep::session_counters* counters() noexcept override { return &counts; }
    lockstep::dispatch_limits lim;
    std::size_t max_sessions = 0;
    lockstep::dispatch_limits const& limits() const noexcept override { return lim; }
    std::int64_t now_us() const noexcept override { return clock.now_us(); }
    bool may_create_session() noexcept override { return max_sessions == 0 || sessions.size() < max_sessions; }
    std::uint64_t
    refusals(lockstep::refusal r) const
    {
        return counts.refusals[static_cast<std::size_t>(r)].load();
    }
    /// Runs due session timers in 1 ms steps, as a worker's timers would.
    void
    run_ms(int ms)
    {
        for (int i = 0; i < ms; ++i) {
            clock.advance_ms(1);
            for (auto it = sessions.begin(); it != sessions.end();) {
                auto& s = *it->second;
                ++it;
                if (s.next_deadline_us() <= clock.now_us()) {
                    s.on_timer();
                    touched(s);
                }
            }
        }
    }
};

/// A connection as the dispatch sees it: a peer plus its membership.
struct conn {
    test_peer peer;
    membership m;
    conn(std::string name, std::string session_id, std::string token = "")
        : peer(name)
    {
        m.session_id = std::move(session_id);
        m.seat_token = std::move(token);
        m.conn_key = "refl#1:" + name;
    }
};

std::string
join_frame(std::string const& user, int tick = 50)
{
    return R"({"id":"SID","action":"JOIN","args":{"name":"app/demo","apiKey":"none","appId":"app","persistentId":"pid","version":1,"user":")" +
           user + R"(","ticks":{"tick":)" + std::to_string(tick) + R"(,"delay":0},"leaveDelay":0}})";
}

std::string
send_frame(std::string const& payload)
{
    return R"({"id":"SID","action":"SEND","args":[1,0,")" + payload + R"(",0]})";
}

struct dispatch_fixture : ::testing::Test {
    fake_host host;
    void
    frame(conn& c, std::string const& text)
    {
        lockstep::dispatch(host, c.m, c.peer, text);
    }
};

}  // namespace

TEST_F(dispatch_fixture, join_syncs_and_send_reflects_to_every_member_in_order)
{
    conn a("a", "SID"), b("b", "SID");
    frame(a, send_frame("early"));  // before JOIN: ignored, nothing created
    EXPECT_TRUE(host.sessions.empty());
    EXPECT_EQ(a.peer.closed, 0);

    frame(a, join_frame("alice"));
    ASSERT_EQ(a.peer.of("SYNC").size(), 1u);
    EXPECT_TRUE(a.m.join_seen);
    ASSERT_NE(a.m.joined, nullptr);
    EXPECT_EQ(a.m.joined, host.find_session("SID"));
    frame(b, join_frame("bob"));
    ASSERT_EQ(b.peer.of("SYNC").size(), 1u);

    int touches = host.touches;
    frame(a, send_frame("one"));
    frame(b, send_frame("two"));
    EXPECT_EQ(host.touches, touches + 2);  // the dispatch tells the host after each call
    for (auto* p : {&a.peer, &b.peer}) {
        std::vector<std::string> payloads;
        for (auto const& f : p->of("RECV"))
            if (f["args"][2].is_string())
                payloads.push_back(f["args"][2]);
        EXPECT_EQ(payloads, (std::vector<std::string>{"one", "two"}));
    }
    EXPECT_TRUE(host.seat_reports.empty());  // nobody came through a router seat
}

TEST_F(dispatch_fixture, bad_frames_close_4102_and_unknown_actions_are_ignored)
{
    conn a("a", "SID");
    frame(a, R"({"id":"SID","action":"FROB","args":[]})");
    EXPECT_EQ(a.peer.closed, 0);
    frame(a, "[1,2,3]");
    EXPECT_EQ(a.peer.closed, 4102);
    conn b("b", "SID");
    frame(b, "not json at all");
    EXPECT_EQ(b.peer.closed, 4102);
}

TEST_F(dispatch_fixture, only_members_act_on_a_session_strangers_are_closed_4000)
{
    conn a("a", "SID"), outsider("o", "SID"), stray("s", "OTHER");
    frame(stray, R"({"id":"OTHER","action":"TICKS","args":{"tick":100}})");
    EXPECT_EQ(stray.peer.closed, 4000);  // no session at all
    EXPECT_FALSE(host.find_session("OTHER"));

    frame(a, join_frame("alice"));
    auto& s = *host.find_session("SID");
    host.run_ms(500);  // the users event and some ticks
    a.peer.clear();
    auto seq = s.seq();
    // A socket on the session's URL that never JOINed: every session-changing action is
    // refused before it reaches the session.
    for (auto const* f : {R"({"id":"SID","action":"TICKS","args":{"tick":60000}})",
                          R"({"id":"SID","action":"SNAP","args":{"time":1,"seq":0,"hash":"h","url":"http://evil.example/snap"}})",
                          R"({"id":"SID","action":"SAVE","args":{"persistTime":1,"url":"http://evil.example/save"}})",
                          R"({"id":"SID","action":"TUTTI","args":[5,0,"vote",null,true,null,"k"]})"}) {
        conn o("o", "SID");
        frame(o, f);
        EXPECT_EQ(o.peer.closed, 4000) << f;
        EXPECT_EQ(o.peer.close_reason, "not a member of this session");
    }
    EXPECT_EQ(host.refusals(lockstep::refusal::not_member), 5u);
    // The session did not change: same tick interval, no snapshot, no tally.
    EXPECT_EQ(s.tick_ms(), 50u);
    EXPECT_EQ(s.header().snapshot_url, "");
    host.run_ms(1200);
    EXPECT_EQ(s.seq(), seq);
    EXPECT_GE(a.peer.of("TICK").size(), 20u);  // 50 ms ticks go on
    EXPECT_TRUE(a.peer.events("tally").empty());
    // A member may.
    frame(a, R"({"id":"SID","action":"TICKS","args":{"tick":100}})");
    EXPECT_EQ(a.peer.closed, 0);
    EXPECT_EQ(s.tick_ms(), 100u);
}

TEST_F(dispatch_fixture, a_second_join_on_a_joined_connection_queues_no_second_sync)
{
    host.lim.message_rate = 0;  // 300 frames at one instant (the rate has its own test)
    conn a("a", "SID"), b("b", "SID");
    frame(a, join_frame("alice"));
    for (int i = 0; i < 300; ++i)
        frame(a, join_frame("alice"));
    EXPECT_EQ(a.peer.of("SYNC").size(), 1u);
    EXPECT_EQ(a.peer.closed, 0);
    EXPECT_EQ(host.refusals(lockstep::refusal::repeated_join), 300u);
    EXPECT_EQ(host.find_session("SID")->client_count(), 1u);
    // Another connection still joins and the session still reflects.
    frame(b, join_frame("bob"));
    EXPECT_EQ(b.peer.of("SYNC").size(), 1u);
    frame(a, send_frame("x"));
    EXPECT_EQ(b.peer.of("RECV").size(), 1u);
}

TEST_F(dispatch_fixture, a_snap_must_fit_the_session_time_seq_and_url_length)
{
    host.opts.max_url_bytes = 100;
    conn a("a", "SID");
    frame(a, join_frame("alice"));
    host.run_ms(1000);  // the users event (seq 0xFFFFFFF1) and session time ~1000
    for (int i = 0; i < 3; ++i)
        frame(a, send_frame("e" + std::to_string(i)));
    auto& s = *host.find_session("SID");
    ASSERT_EQ(s.seq(), 0xFFFFFFF4u);
    ASSERT_EQ(s.log_size(), 4u);
    auto snap = [&](std::string const& time, std::string const& seq, std::string const& url) {
        frame(a, R"({"id":"SID","action":"SNAP","args":{"time":)" + time + R"(,"seq":)" + seq +
                     R"(,"hash":"h","url":")" + url + R"("}})");
    };
    snap("9e15", "4294967283", "http://evil.example/snap");        // far in the future
    snap("2000", "4294967283", "http://evil.example/snap");        // a second ahead
    snap("900", "4294967285", "http://x/snap");                    // after the current seq
    snap("900", "5", "http://x/snap");                             // wrapped past it
    snap("900", "1e300", "http://x/snap");                         // not a uint32
    snap("900", "4294967283.5", "http://x/snap");                  // not an integer
    snap("-1", "4294967283", "http://x/snap");                     // negative time
    snap("900", "4294967283", "http://x/" + std::string(100, 'u'));  // URL too long
    EXPECT_EQ(host.refusals(lockstep::refusal::snapshot), 8u);
    EXPECT_EQ(a.peer.closed, 0);  // ignored, not closed: the member stays
    EXPECT_EQ(s.header().snapshot_url, "");
    EXPECT_EQ(s.log_size(), 4u);

    snap("900", "4294967283", "http://x/snap");  // a snapshot of the first three events
    EXPECT_EQ(s.header().snapshot_url, "http://x/snap");
    EXPECT_EQ(s.log_size(), 1u);
    conn late("late", "SID");
    frame(late, join_frame("late"));
    auto sync = late.peer.of("SYNC").at(0)["args"];
    EXPECT_EQ(sync["url"], "http://x/snap");
    EXPECT_EQ(sync["messages"].size(), 1u);
}

TEST_F(dispatch_fixture, a_save_with_an_overlong_url_is_ignored)
{
    host.opts.max_url_bytes = 100;
    conn a("a", "SID");
    frame(a, join_frame("alice"));
    frame(a, R"({"id":"SID","action":"SAVE","args":{"persistTime":1,"url":"http://x/)" + std::string(100, 's') +
                 R"("}})");
    EXPECT_EQ(a.peer.closed, 0);
    EXPECT_EQ(host.refusals(lockstep::refusal::url), 1u);
}

TEST_F(dispatch_fixture, session_ids_are_1_to_128_url_segment_characters)
{
    EXPECT_TRUE(lockstep::valid_session_id("eld2kQmjrGRe0f0Wklqh7CHlwF6snuSY9bHD5o8TEac"));
    EXPECT_TRUE(lockstep::valid_session_id(std::string(128, 'a')));
    EXPECT_TRUE(lockstep::valid_session_id("room-1.x~y_z%20!$&'()*+,;=:@"));
    EXPECT_FALSE(lockstep::valid_session_id(""));
    EXPECT_FALSE(lockstep::valid_session_id(std::string(129, 'a')));
    for (char const* bad : {"a b", "a\"b", "a/b", "a<b", "a\\b", "\xc3\xa9t\xc3\xa9", "a\x01"})
        EXPECT_FALSE(lockstep::valid_session_id(bad)) << bad;

    conn a("a", std::string(5000, 'x'));
    frame(a, join_frame("alice"));
    EXPECT_EQ(a.peer.closed, 4100);
    EXPECT_EQ(a.peer.close_reason, "bad session id");
    EXPECT_TRUE(host.sessions.empty());  // nothing was created for it
    EXPECT_EQ(host.refusals(lockstep::refusal::session_id), 1u);
}

TEST_F(dispatch_fixture, oversized_join_args_and_names_close_4102_and_leave_no_session)
{
    conn big("big", "SID");
    frame(big, join_frame(std::string(1u << 20, 'u')));  // a 1 MiB user
    EXPECT_EQ(big.peer.closed, 4102);
    EXPECT_EQ(big.peer.close_reason, "JOIN too large");
    EXPECT_TRUE(host.sessions.empty());
    EXPECT_TRUE(big.peer.frames.empty());

    conn named("named", "SID");
    auto long_name = join_frame("alice");
    long_name.replace(long_name.find("app/demo"), 8, std::string(2000, 'n'));
    frame(named, long_name);
    EXPECT_EQ(named.peer.closed, 4102);
    EXPECT_TRUE(host.sessions.empty());  // created by nothing: touched() removed the slot
    EXPECT_EQ(host.refusals(lockstep::refusal::join_args), 2u);

    conn ok("ok", "SID");  // just under the limit: accepted
    host.lim.max_join_bytes = join_frame(std::string(1000, 'u')).size();
    frame(ok, join_frame(std::string(1000, 'u')));
    EXPECT_EQ(ok.peer.closed, 0);
    EXPECT_EQ(ok.peer.of("SYNC").size(), 1u);
}

TEST_F(dispatch_fixture, a_connection_over_the_message_rate_is_closed_4005)
{
    host.lim.message_rate = 100;
    host.lim.message_burst = 200;
    conn flood("flood", "SID"), steady("steady", "SID");
    frame(flood, join_frame("f"));
    frame(steady, join_frame("s"));
    for (int i = 0; i < 199; ++i)  // with the JOIN: the whole burst at one instant
        frame(flood, R"({"action":"PULSE"})");
    EXPECT_EQ(flood.peer.closed, 0);
    frame(flood, R"({"action":"PULSE"})");
    EXPECT_EQ(flood.peer.closed, 4005);
    EXPECT_EQ(flood.peer.close_reason, "too many messages");
    EXPECT_EQ(host.refusals(lockstep::refusal::message_rate), 1u);
    // 100 frames/s for 20 s, one every 10 ms, never runs dry.
    for (int i = 0; i < 2000; ++i) {
        host.clock.advance_ms(10);
        frame(steady, send_frame("e"));
    }
    EXPECT_EQ(steady.peer.closed, 0);
    EXPECT_EQ(host.refusals(lockstep::refusal::message_rate), 1u);
}

TEST_F(dispatch_fixture, max_sessions_and_clients_per_session_close_4006_and_4007)
{
    host.max_sessions = 1;
    host.lim.max_clients_per_session = 2;
    conn a("a", "S1"), b("b", "S1"), c("c", "S1"), other("o", "S2");
    frame(a, join_frame("a"));
    frame(other, join_frame("o"));
    EXPECT_EQ(other.peer.closed, 4006);
    EXPECT_FALSE(host.find_session("S2"));
    frame(b, join_frame("b"));
    EXPECT_EQ(b.peer.closed, 0);
    frame(c, join_frame("c"));
    EXPECT_EQ(c.peer.closed, 4007);
    EXPECT_EQ(c.peer.close_reason, "session full");
    EXPECT_EQ(host.find_session("S1")->client_count(), 2u);
    EXPECT_EQ(host.refusals(lockstep::refusal::sessions), 1u);
    EXPECT_EQ(host.refusals(lockstep::refusal::clients_per_session), 1u);
    // A member leaves: its place is free again.
    lockstep::hang_up(host, a.m, a.peer, true);
    conn d("d", "S1");
    frame(d, join_frame("d"));
    EXPECT_EQ(d.peer.closed, 0);
    EXPECT_EQ(d.peer.of("SYNC").size(), 1u);
}

TEST_F(dispatch_fixture, ping_answers_pong_with_or_without_a_session)
{
    conn a("a", "SID");
    frame(a, R"({"id":"SID","action":"PING","args":{"x":1}})");
    ASSERT_EQ(a.peer.of("PONG").size(), 1u);
    EXPECT_EQ(a.peer.of("PONG")[0]["args"]["x"], 1);
    EXPECT_TRUE(host.sessions.empty());
}

TEST_F(dispatch_fixture, a_seated_join_reports_once_and_hang_up_reports_the_leave)
{
    conn a("a", "SID", "tok123");
    frame(a, join_frame("alice"));
    frame(a, join_frame("alice"));  // a second JOIN on the same connection: one report
    ASSERT_EQ(host.seat_reports.size(), 1u);
    EXPECT_EQ(host.seat_reports[0], "joined tok123 app/demo refl#1:a");

    lockstep::hang_up(host, a.m, a.peer, false);
    lockstep::hang_up(host, a.m, a.peer, false);  // idempotent
    ASSERT_EQ(host.seat_reports.size(), 2u);
    EXPECT_EQ(host.seat_reports[1], "dropped tok123 refl#1:a");
    EXPECT_EQ(a.m.joined, nullptr);

    conn b("b", "SID", "tok456");
    frame(b, join_frame("bob"));
    lockstep::hang_up(host, b.m, b.peer, true);
    EXPECT_EQ(host.seat_reports.back(), "left tok456 refl#1:b");
}

TEST_F(dispatch_fixture, a_failed_join_reports_no_seat_and_leaves_no_session)
{
    conn a("a", "SID", "tok");
    frame(a, R"({"id":"SID","action":"JOIN","args":"not an object"})");
    EXPECT_NE(a.peer.closed, 0);
    EXPECT_TRUE(a.m.join_seen);
    EXPECT_EQ(a.m.joined, nullptr);
    EXPECT_TRUE(host.seat_reports.empty());
    EXPECT_TRUE(host.sessions.empty());  // touched() saw it expired and deleted it
}

TEST_F(dispatch_fixture, the_session_is_deleted_after_the_last_member_hangs_up_and_linger_passes)
{
    host.opts.linger_ms = 100;
    conn a("a", "SID");
    frame(a, join_frame("alice"));
    ASSERT_TRUE(host.find_session("SID"));
    lockstep::hang_up(host, a.m, a.peer, true);
    host.run_ms(50);
    EXPECT_TRUE(host.find_session("SID"));
    host.run_ms(200);
    EXPECT_FALSE(host.find_session("SID"));
}

TEST_F(dispatch_fixture, nothing_thrown_escapes_the_dispatch_the_peer_is_closed_1011)
{
    host.fail_creation = true;
    conn a("a", "SID");
    EXPECT_NO_THROW(frame(a, join_frame("alice")));
    EXPECT_EQ(a.peer.closed, 1011);
    EXPECT_EQ(a.m.joined, nullptr);
    // Other connections and sessions are untouched.
    host.fail_creation = false;
    conn b("b", "SID");
    frame(b, join_frame("bob"));
    EXPECT_EQ(b.peer.closed, 0);
    EXPECT_EQ(b.peer.of("SYNC").size(), 1u);
}
