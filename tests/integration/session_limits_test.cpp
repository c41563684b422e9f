// Hostile input on the WebSocket side of a running reflector, each sent as it is: a
// stranger acting on a session, repeated JOINs, oversized JOINs, floods. Each is refused
// with its documented code (docs/protocol.md, section 16) and counted in
// lockstep_limit_refusals_total; the reflector stays up, and a legitimate session on the
// same reflector is unaffected and loses nothing.
#include "support/fixture.hpp"
#include "support/metrics.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

namespace {

double
refusals(std::uint16_t port, std::string const& limit)
{
    auto m = metrics::parse(http_request(port, "GET", "/metrics").body);
    return m["lockstep_limit_refusals_total{limit=\"" + limit + "\"}"];
}

double
sync_in_flight(std::uint16_t port)
{
    return metrics::parse(http_request(port, "GET", "/metrics").body)["lockstep_sync_bytes_in_flight"];
}

/// A legitimate session beside the attack: two members. check() has one send `n`
/// events and asserts that both receive every one of them, in order, with every seq of
/// the session consecutive since their SYNC (nothing lost, nothing duplicated).
class witness {
public:
    explicit witness(std::uint16_t port, std::string const& path = "/LEGIT") : a_(port, path), b_(port, path)
    {
        for (auto* c : {&a_, &b_}) {
            c->send_json(join_msg(c == &a_ ? "wa" : "wb"));
            auto sync = c->recv_action("SYNC");
            if (!sync)
                throw std::runtime_error("witness: no SYNC");
            (c == &a_ ? seq_a_ : seq_b_) = (*sync)["args"]["seq"].get<std::uint32_t>();
        }
    }

    void
    check(int n, std::string const& tag)
    {
        for (int i = 0; i < n; ++i)
            a_.send_json(send_msg(tag + std::to_string(i)));
        expect_all(a_, seq_a_, n, tag);
        expect_all(b_, seq_b_, n, tag);
    }

private:
    static void
    expect_all(ws_client& c, std::uint32_t& last_seq, int n, std::string const& tag)
    {
        std::vector<std::string> got;
        while (static_cast<int>(got.size()) < n) {
            auto r = c.recv_action("RECV");
            ASSERT_TRUE(r) << "witness: missing events after " << got.size() << " of " << n;
            auto seq = (*r)["args"][1].get<std::uint32_t>();
            ASSERT_EQ(seq, last_seq + 1) << "witness: a gap or duplicate in the sequence";
            last_seq = seq;
            if ((*r)["args"][2].is_string())
                got.push_back((*r)["args"][2]);
        }
        for (int i = 0; i < n; ++i)
            EXPECT_EQ(got[static_cast<std::size_t>(i)], tag + std::to_string(i));
        EXPECT_FALSE(c.closed());
    }

    ws_client a_, b_;
    std::uint32_t seq_a_ = 0, seq_b_ = 0;
};

/// JOINs `c` as `user` and waits for its SYNC (the SYNC, or nullopt).
std::optional<json>
join(ws_client& c, std::string const& user)
{
    c.send_json(join_msg(user));
    return c.recv_action("SYNC", 10s);
}

/// Sends `frame` on a fresh socket to `path` and waits for the reflector to close it:
/// its close code (-1 if it stays open).
int
closed_with(std::uint16_t port, std::string const& path, nlohmann::json const& frame)
{
    ws_client c(port, path);
    c.send_json(frame);
    return c.wait_close();
}

json
action_msg(std::string const& action, json args)
{
    return {{"id", "ignored"}, {"action", action}, {"args", std::move(args)}};
}

}  // namespace

TEST(session_limits, a_stranger_cannot_stop_ticks_or_plant_a_snapshot)
{
    running_server srv;
    auto port = srv.port();
    ws_client member(port, "/VICTIM");
    member.send_json(join_msg("m", 50));
    ASSERT_TRUE(member.recv_action("SYNC"));
    witness legit(port);

    // The attack: a socket on the victim's URL that never JOINed.
    std::vector<json> attacks = {
        action_msg("TICKS", {{"tick", 60000}}),
        action_msg("SNAP", {{"time", 9e15}, {"seq", 4294967281u}, {"hash", "h"}, {"url", "http://evil.example/snap"}}),
        action_msg("SAVE", {{"persistTime", 1}, {"url", "http://evil.example/save"}}),
        action_msg("TUTTI", json::array({5, 0, "vote", nullptr, true, nullptr, "k"})),
    };
    for (auto const& attack : attacks) {
        EXPECT_EQ(closed_with(port, "/VICTIM", attack), 4000) << attack.dump();
    }
    EXPECT_GE(refusals(port, "not_member"), 4);

    // The victim's ticks go on at 50 ms, and a late joiner is not sent to the attacker.
    auto t0 = member.recv_action("TICK");
    ASSERT_TRUE(t0);
    int ticks = 0;
    auto until = std::chrono::steady_clock::now() + 500ms;
    while (std::chrono::steady_clock::now() < until)
        if (member.recv_action("TICK", 200ms))
            ++ticks;
    EXPECT_GE(ticks, 5);
    ws_client late(port, "/VICTIM");
    late.send_json(join_msg("late"));
    auto sync = late.recv_action("SYNC");
    ASSERT_TRUE(sync);
    EXPECT_EQ((*sync)["args"]["url"], "");

    // A member's SNAP from the future is ignored too (counted), and the member stays.
    member.send_json(attacks[1]);
    member.send_json(action_msg("PING", 1));
    ASSERT_TRUE(member.recv_action("PONG"));
    EXPECT_FALSE(member.closed());
    EXPECT_GE(refusals(port, "snapshot"), 1);
    legit.check(20, "after-stranger-");
}

TEST(session_limits, repeated_joins_queue_one_sync)
{
    auto cfg = test_config();
    cfg.max_message_rate = 0;  // the writer builds the log at full speed
    running_server srv(cfg);
    auto port = srv.port();
    witness legit(port);
    // A session with a log of about 2 MB.
    ws_client writer(port, "/BIG");
    ASSERT_TRUE(join(writer, "w"));
    std::string payload(2000, 'p');
    for (int i = 0; i < 1000; ++i)
        writer.send_json(send_msg(payload));
    for (int got = 0; got < 1000;) {  // all reflected (the users event comes too)
        auto r = writer.recv_action("RECV");
        ASSERT_TRUE(r);
        got += (*r)["args"][2].is_string() ? 1 : 0;
    }
    ws_client probe(port, "/BIG");
    probe.send_json(join_msg("probe"));
    auto first = probe.recv_action("SYNC", 10s);
    ASSERT_TRUE(first);
    ASSERT_GE((*first)["args"]["messages"].size(), 1000u);

    // One socket that never reads repeats its JOIN 300 times.
    ws_client greedy(port, "/BIG");
    std::string join = join_msg("greedy").dump();
    for (int i = 0; i < 300; ++i)
        greedy.send_text(join);
    for (int i = 0; i < 100 && refusals(port, "repeated_join") < 299; ++i)
        std::this_thread::sleep_for(20ms);
    EXPECT_EQ(refusals(port, "repeated_join"), 299);
    // What is queued for it is one SYNC (its own socket buffer may hold part of it).
    auto m = metrics::parse(http_request(port, "GET", "/metrics").body);
    EXPECT_LT(m["lockstep_outbound_queue_bytes"], 8e6);  // 300 SYNCs would be 600 MB
    // Now it reads: exactly one SYNC.
    ASSERT_TRUE(greedy.recv_action("SYNC", 10s));
    EXPECT_FALSE(greedy.recv_action("SYNC", 500ms));
    EXPECT_FALSE(greedy.closed());
    legit.check(20, "after-joins-");
}

TEST(session_limits, oversized_joins_and_session_ids_are_refused)
{
    running_server srv;
    auto port = srv.port();
    witness legit(port);

    EXPECT_EQ(closed_with(port, "/S1", join_msg(std::string(1u << 20, 'u'))), 4102);  // a 1 MiB user

    EXPECT_EQ(closed_with(port, "/" + std::string(5000, 'i'), join_msg("u")), 4100);  // a 5,000-character session id

    EXPECT_EQ(closed_with(port, "/bad%22id\"x", join_msg("u")), 4100);  // a quote is not a URL path character

    auto long_name = join_msg("u");
    long_name["args"]["name"] = std::string(5000, 'n');
    EXPECT_EQ(closed_with(port, "/S1", long_name), 4102);

    EXPECT_EQ(refusals(port, "join_args"), 2);
    EXPECT_EQ(refusals(port, "session_id"), 2);
    // None of them left a session behind; a real JOIN on S1 gets a fresh one.
    ws_client ok(port, "/S1");
    ok.send_json(join_msg("ok"));
    auto sync = ok.recv_action("SYNC");
    ASSERT_TRUE(sync);
    EXPECT_TRUE((*sync)["args"]["messages"].empty());
    legit.check(20, "after-joins-");
}

TEST(session_limits, a_flood_over_the_message_rate_is_closed_4005)
{
    auto cfg = test_config();
    cfg.max_message_rate = 100;
    cfg.max_message_burst = 200;
    running_server srv(cfg);
    auto port = srv.port();
    witness legit(port);
    ws_client flood(port, "/LEGIT");  // a member of the legitimate session itself
    ASSERT_TRUE(join(flood, "flood"));
    for (int i = 0; i < 1000; ++i)
        flood.send_json({{"action", "PING"}, {"args", i}});
    EXPECT_EQ(flood.wait_close(), 4005);
    EXPECT_GE(refusals(port, "message_rate"), 1);
    // Its leave comes as a users event; the witness sees every seq and all its events.
    legit.check(50, "after-flood-");
    // A client at 50 frames/s for 2 s (the real client's default is 20) is not limited.
    ws_client steady(port, "/LEGIT");
    ASSERT_TRUE(join(steady, "steady"));
    for (int i = 0; i < 100; ++i) {
        steady.send_json({{"action", "PULSE"}});
        std::this_thread::sleep_for(20ms);
    }
    steady.send_json({{"action", "PING"}, {"args", "alive"}});
    EXPECT_TRUE(steady.recv_action("PONG"));
    EXPECT_FALSE(steady.closed());
}

TEST(session_limits, max_sessions_and_clients_per_session)
{
    auto cfg = test_config();
    cfg.max_sessions = 2;
    cfg.max_clients_per_session = 3;
    running_server srv(cfg);
    auto port = srv.port();
    witness legit(port);  // session 1, two members
    ws_client a(port, "/S1");
    ASSERT_TRUE(join(a, "a"));  // session 2
    EXPECT_EQ(closed_with(port, "/S2", join_msg("o")), 4006);
    EXPECT_EQ(refusals(port, "sessions"), 1);

    ws_client third(port, "/LEGIT");  // the third member of session 1
    ASSERT_TRUE(join(third, "third"));
    EXPECT_EQ(closed_with(port, "/LEGIT", join_msg("fourth")), 4007);
    EXPECT_EQ(refusals(port, "clients_per_session"), 1);
    legit.check(20, "after-limits-");
}

namespace {

/// Fills session `path` with `n` events of `bytes` payload through one member, and waits
/// until they and the member's users event are all reflected. Returns the member.
std::unique_ptr<ws_client>
fill(std::uint16_t port, std::string const& path, int n, std::size_t bytes, int tick = 10000)
{
    auto w = std::make_unique<ws_client>(port, path);
    w->send_json(join_msg("writer", tick));
    if (!w->recv_action("SYNC", 10s))
        return nullptr;
    std::string payload(bytes, 'p');
    for (int i = 0; i < n; ++i)
        w->send_json(send_msg(payload));
    bool joined = false;  // the users event that announces the writer is in the log too
    for (int got = 0; got < n || !joined;) {
        auto r = w->recv_action("RECV", 10s);
        if (!r)
            return nullptr;
        got += (*r)["args"][2].is_string() ? 1 : 0;
        joined = joined || (*r)["args"][2].is_object();
    }
    return w;
}

}  // namespace

TEST(session_limits, sync_bytes_in_flight_are_bounded_and_joiners_share_one_sync)
{
    auto cfg = test_config();
    cfg.max_message_rate = 0;  // the writers build their logs at full speed
    cfg.max_sync_bytes = 1u << 20;
    running_server srv(cfg);
    auto port = srv.port();
    witness legit(port);

    // A session whose SYNC (1.2 MB) cannot fit the budget: its joiner is refused.
    auto big = fill(port, "/BIG", 2000, 600);
    ASSERT_TRUE(big);
    EXPECT_EQ(closed_with(port, "/BIG", join_msg("late")), 4008);
    EXPECT_EQ(refusals(port, "sync_bytes"), 1);

    // 100 sockets that never read JOIN a session with a 600 KB log at once (no users
    // event, no tick in between): 60 MB if each had its own SYNC; they share one, so all
    // of them fit a 1 MB budget.
    auto mid = fill(port, "/MID", 1000, 600);
    ASSERT_TRUE(mid);
    std::vector<std::unique_ptr<ws_client>> greedy;
    auto quiet = join_msg("");  // no user: not active, so no users event changes the log
    for (int i = 0; i < 100; ++i) {
        greedy.push_back(std::make_unique<ws_client>(port, "/MID"));
        greedy.back()->send_json(quiet);
    }
    EXPECT_LE(sync_in_flight(port), 1u << 20);
    for (auto& g : greedy) {
        auto sync = g->recv_action("SYNC", 10s);
        ASSERT_TRUE(sync);
        EXPECT_EQ((*sync)["args"]["messages"].size(), 1001u);  // the writer's users event and 1000 events
    }
    EXPECT_EQ(refusals(port, "sync_bytes"), 1);  // none of them was refused
    greedy.clear();
    for (int i = 0; i < 100 && sync_in_flight(port) > 0; ++i)
        std::this_thread::sleep_for(20ms);
    EXPECT_EQ(sync_in_flight(port), 0);
    legit.check(20, "after-syncs-");
}

TEST(session_limits, the_log_is_bounded_in_bytes_and_the_session_stays_consistent)
{
    auto cfg = test_config();
    cfg.max_message_rate = 0;
    cfg.log_max_bytes = 200000;  // 2 KB counts as one of --log-max's 100 events
    cfg.log_max = 100;
    cfg.log_requ_threshold = 60;
    running_server srv(cfg);
    auto port = srv.port();
    witness legit(port);
    ws_client a(port, "/LOG"), b(port, "/LOG");
    ASSERT_TRUE(join(a, "a"));
    ASSERT_TRUE(join(b, "b"));
    std::string payload(20000, 'q');  // 20 KB events: ten fill the log
    for (int i = 0; i < 15; ++i)
        a.send_json(send_msg(payload + std::to_string(i)));
    a.send_json(action_msg("PING", "done"));
    // Both members saw the same events: the first ten, then refusals (INFO), no gaps.
    std::vector<std::string> seen_a, seen_b;
    int infos = 0;
    for (auto* c : {&a, &b}) {
        auto& seen = c == &a ? seen_a : seen_b;
        auto until = std::chrono::steady_clock::now() + (c == &a ? 10s : 2s);  // bounded: b gets TICKs
        while (std::chrono::steady_clock::now() < until && (c == &a || seen.size() < seen_a.size())) {
            auto f = c->recv(1000ms);
            if (!f || (*f)["action"] == "PONG")
                break;  // a's PING came after all its SENDs
            infos += (*f)["action"] == "INFO" && c == &a &&
                     (*f)["args"]["msg"].get<std::string>().find("Cannot buffer") != std::string::npos;
            if ((*f)["action"] == "RECV" && (*f)["args"][2].is_string())
                seen.push_back((*f)["args"][2].get<std::string>().substr(20000));
        }
    }
    EXPECT_EQ(infos, 5);  // one SNAPSHOT_NEEDED per refused event
    EXPECT_EQ(seen_a, seen_b);
    EXPECT_EQ(seen_a.size(), 10u);
    auto m = metrics::parse(http_request(port, "GET", "/metrics").body);
    EXPECT_GE(m["lockstep_refused_total"], 5);
    // A late joiner gets the same ten.
    ws_client late(port, "/LOG");
    auto sync = join(late, "late");
    ASSERT_TRUE(sync);
    int events = 0;
    for (auto const& e : (*sync)["args"]["messages"])
        events += e[2].is_string();
    EXPECT_EQ(events, 10);
    legit.check(20, "after-log-");
}

TEST(session_limits, a_joiner_that_does_not_read_its_sync_is_closed_and_gives_the_budget_back)
{
    auto cfg = test_config();
    cfg.max_message_rate = 0;
    cfg.sync_timeout_ms = 500;
    running_server srv(cfg);
    auto port = srv.port();
    witness legit(port);
    // A SYNC of 8 MB: more than the kernel buffers of a reader that takes 4 KB.
    auto big = fill(port, "/HOLD", 500, 16000);
    ASSERT_TRUE(big);
    ws_client greedy(port, "/HOLD");
    int small = 4096;
    ASSERT_EQ(::setsockopt(greedy.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    greedy.send_json(join_msg("greedy"));  // and it keeps sending, but never reads
    bool held = false;
    for (int i = 0; i < 20 && !held; ++i) {
        held = sync_in_flight(port) > 1e6;
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(held);
    bool dropped = false;  // sending keeps it no longer than the timeout
    for (int i = 0; i < 20 && !dropped; ++i) {
        try {
            greedy.send_json({{"action", "PULSE"}});
        } catch (std::exception const&) {
            dropped = true;
        }
        std::this_thread::sleep_for(100ms);
    }
    for (int i = 0; i < 100 && sync_in_flight(port) > 0; ++i)
        std::this_thread::sleep_for(20ms);
    EXPECT_EQ(sync_in_flight(port), 0);
    EXPECT_EQ(refusals(port, "sync_timeout"), 1);
    // Dropped: what it can still read ends without a close frame.
    std::optional<json> f;
    do
        f = greedy.recv(2000ms);
    while (f);
    EXPECT_TRUE(greedy.closed());
    legit.check(20, "after-hold-");
}
