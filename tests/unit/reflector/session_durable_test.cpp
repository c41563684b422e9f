#include "reflector/session.hpp"

#include "support/test_peer.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

using lockstep::logged_event;
using lockstep::manual_clock;
using lockstep::session;
using lockstep::session_header;
using lockstep::session_options;
using lockstep::test::test_peer;
using nlohmann::json;

namespace {

std::string
join_args(std::string const& user, std::string extra = "")
{
    return R"({"name":"app/demo","apiKey":"none","appId":"app","persistentId":"pid","version":1,"user":")" + user +
           R"(","ticks":{"tick":50,"delay":0},"tove":"secret","leaveDelay":0)" + extra + "}";
}

std::string
send_args(std::string const& payload)
{
    return R"([123,0,")" + payload + R"(",7])";
}

/// The log as the journal gets it.
std::vector<logged_event>
exported_log(session const& s)
{
    std::vector<logged_event> log;
    s.each_logged_after(s.seq() - static_cast<std::uint32_t>(s.log_size()),
                        [&](std::uint32_t seq, std::string_view e) { log.push_back({seq, std::string(e)}); });
    return log;
}

/// The latest session time a peer was shown (RECV, TICK, SYNC).
std::int64_t
latest_time_seen(test_peer const& p)
{
    std::int64_t t = -1;
    for (auto const& f : p.frames) {
        auto a = f.value("action", "");
        if (a == "RECV")
            t = std::max(t, f["args"][0].get<std::int64_t>());
        else if (a == "TICK")
            t = std::max(t, f["args"].get<std::int64_t>());
        else if (a == "SYNC")
            t = std::max(t, f["args"]["time"].get<std::int64_t>());
    }
    return t;
}

struct durable : ::testing::Test {
    manual_clock clock;
    session_options opts;
    std::unique_ptr<session> s = std::make_unique<session>("SID", clock, opts);

    void
    run_ms(int ms)
    {
        lockstep::test::run_session_ms(*s, clock, ms);
    }
    /// The session as a restarted process gets it back from the journal.
    std::unique_ptr<session>
    restored(session_header const& h, std::vector<logged_event> const& log, std::int64_t resume_ms)
    {
        auto r = std::make_unique<session>("SID", clock, opts);
        EXPECT_TRUE(r->restore(h, log, resume_ms));
        return r;
    }
};

}  // namespace

TEST_F(durable, a_restored_session_continues_timeline_seq_time_and_log)
{
    test_peer a;
    ASSERT_TRUE(s->join(a, join_args("va")));
    run_ms(250);  // users event
    for (int i = 0; i < 5; ++i) {
        s->send(a, send_args("inc" + std::to_string(i)), {});
        run_ms(30);
    }
    auto h = s->header();
    auto log = exported_log(*s);
    ASSERT_EQ(log.size(), 6u);
    auto seen = latest_time_seen(a);
    auto first_sync = a.of("SYNC")[0]["args"];
    std::vector<json> received;
    for (auto const& f : a.of("RECV"))
        received.push_back(f["args"]);
    s.reset();  // the process died

    clock.advance_ms(7000);  // down for 7 s
    s = restored(h, log, seen);
    EXPECT_TRUE(s->created());
    EXPECT_EQ(s->log_size(), 6u);
    EXPECT_EQ(s->client_count(), 0u);

    test_peer b;  // the client reconnects
    ASSERT_TRUE(s->join(b, join_args("va")));
    auto sync = b.of("SYNC").at(0)["args"];
    EXPECT_EQ(sync["timeline"], first_sync["timeline"]);
    EXPECT_EQ(sync["seq"], received.back()[1]);
    EXPECT_EQ(sync["tove"], "secret");
    // Seamless-rejoin conditions (PROTOCOL.md 8.4): time not before anything seen, the
    // log covers everything the client executed, byte for byte.
    EXPECT_GE(sync["time"].get<std::int64_t>(), seen);
    EXPECT_LT(sync["time"].get<std::int64_t>(), seen + 100);  // the downtime is not added
    ASSERT_EQ(sync["messages"].size(), received.size());
    for (std::size_t i = 0; i < received.size(); ++i)
        EXPECT_EQ(sync["messages"][i], received[i]);
    auto wire = std::string(b.raw[0]->wire());
    for (auto const& e : log)
        EXPECT_NE(wire.find(e.element), std::string::npos);

    // Events go on from the next seq, time from where it was.
    run_ms(20);
    s->send(b, send_args("after"), {});
    auto recv = b.of("RECV").back()["args"];
    EXPECT_EQ(recv[1].get<std::uint32_t>(), received.back()[1].get<std::uint32_t>() + 1);
    EXPECT_GE(recv[0].get<std::int64_t>(), seen + 20);
    run_ms(60);
    ASSERT_FALSE(b.of("TICK").empty());
    EXPECT_GT(b.of("TICK").back()["args"].get<std::int64_t>(), seen);
}

TEST_F(durable, snapshot_and_persisted_data_come_back)
{
    test_peer a;
    s->join(a, join_args("va"));
    run_ms(250);
    s->send(a, send_args("x"), {});
    run_ms(10);
    auto snap_seq = s->seq();
    s->snap(a, R"({"time":255.5,"seq":)" + std::to_string(snap_seq) + R"(,"hash":"h","url":"http://x/snap1"})");
    s->send(a, send_args("y"), {});
    auto h = s->header();
    EXPECT_EQ(h.snapshot_url, "http://x/snap1");
    EXPECT_EQ(h.snapshot_time, "255.5");
    EXPECT_EQ(h.snapshot_seq, snap_seq);
    auto log = exported_log(*s);
    ASSERT_EQ(log.size(), 1u);
    s.reset();

    s = restored(h, log, h.time_ms);
    test_peer b;
    s->join(b, join_args("vb"));
    auto sync = b.of("SYNC").at(0)["args"];
    EXPECT_EQ(sync["url"], "http://x/snap1");
    EXPECT_EQ(sync["snapshotTime"], 255.5);
    EXPECT_EQ(sync["snapshotSeq"], snap_seq);
    EXPECT_EQ(sync["messages"].size(), 1u);
    // An older snapshot is still refused after the restart.
    s->snap(b, R"({"time":200,"seq":1,"url":"http://x/old"})");
    EXPECT_EQ(s->header().snapshot_url, "http://x/snap1");

    // Persistent data found at creation is offered again.
    session_header p = h;
    p.snapshot_url.clear();
    p.snapshot_time.clear();
    p.persisted_url = "http://x/persist";
    auto q = std::make_unique<session>("SID", clock, opts);
    ASSERT_TRUE(q->restore(p, log, 0));
    test_peer c;
    q->join(c, join_args("vc"));
    auto qs = c.of("SYNC").at(0)["args"];
    EXPECT_EQ(qs["url"], "http://x/persist");
    EXPECT_EQ(qs["persisted"], true);
}

TEST_F(durable, header_version_moves_with_header_fields_only)
{
    test_peer a, b;
    EXPECT_EQ(s->header_version(), 0u);
    s->join(a, join_args("va"));
    auto v = s->header_version();
    EXPECT_GT(v, 0u);
    s->join(b, join_args("vb"));  // same flags
    run_ms(250);
    s->send(a, send_args("x"), {});
    EXPECT_EQ(s->header_version(), v);
    s->join(b, join_args("vb", R"(,"flags":{"rawtime":true})"));
    EXPECT_GT(s->header_version(), v);
    EXPECT_EQ(s->header().flags, R"({"rawtime":true})");
    v = s->header_version();
    s->snap(a, R"({"time":100,"seq":)" + std::to_string(s->seq()) + R"(,"url":"u"})");
    EXPECT_GT(s->header_version(), v);
    v = s->header_version();
    s->ticks(a, R"({"tick":20})");
    EXPECT_GT(s->header_version(), v);
    EXPECT_EQ(s->header().tick_ms, 20u);
}

TEST_F(durable, each_logged_after_gives_what_the_journal_has_not_seen)
{
    test_peer a;
    s->join(a, join_args("va"));
    run_ms(250);
    auto journaled = s->seq();
    std::vector<std::uint32_t> got;
    auto collect = [&](std::uint32_t seq, std::string_view e) {
        got.push_back(seq);
        EXPECT_EQ(e.front(), '[');
    };
    s->each_logged_after(journaled, collect);
    EXPECT_TRUE(got.empty());
    for (int i = 0; i < 20; ++i)  // crosses the seq wrap
        s->send(a, send_args("x"), {});
    s->each_logged_after(journaled, collect);
    ASSERT_EQ(got.size(), 20u);
    EXPECT_EQ(got.front(), journaled + 1);
    EXPECT_EQ(got.back(), s->seq());
    EXPECT_LT(got.back(), got.front());  // wrapped
    // After a snapshot trimmed what the journal had not seen, everything left comes.
    auto before = s->seq();
    s->send(a, send_args("y"), {});
    s->send(a, send_args("z"), {});
    s->snap(a, R"({"time":)" + std::to_string(s->current_time_ms()) + R"(,"seq":)" + std::to_string(before + 1) + R"(,"url":"u"})");
    got.clear();
    s->each_logged_after(journaled, collect);
    EXPECT_EQ(got, std::vector<std::uint32_t>{before + 2});
}

TEST_F(durable, restore_refuses_data_that_does_not_fit)
{
    spdlog::set_level(spdlog::level::off);
    test_peer a;
    s->join(a, join_args("va"));
    run_ms(250);
    s->send(a, send_args("x"), {});
    auto h = s->header();
    auto log = exported_log(*s);
    ASSERT_EQ(log.size(), 2u);
    auto fresh = [&] { return std::make_unique<session>("SID", clock, opts); };

    EXPECT_FALSE(s->restore(h, log, 0));  // already created
    auto bad = h;
    bad.seq += 1;  // the log does not end at the header's seq
    EXPECT_FALSE(fresh()->restore(bad, log, 0));
    bad = h;
    bad.id = "other";
    EXPECT_FALSE(fresh()->restore(bad, log, 0));
    bad = h;
    bad.flags = "[]";
    EXPECT_FALSE(fresh()->restore(bad, log, 0));
    auto gap = log;
    gap.erase(gap.begin());
    gap.insert(gap.begin(), logged_event{log[0].seq - 1, log[0].element});
    EXPECT_FALSE(fresh()->restore(h, gap, 0));
    auto spaced = log;
    spaced.back().element.insert(1, " ");  // not the bytes the session would send
    EXPECT_FALSE(fresh()->restore(h, spaced, 0));
    auto wrong_seq = log;
    wrong_seq.back().seq += 1;
    EXPECT_FALSE(fresh()->restore(h, wrong_seq, 0));

    auto r = fresh();
    EXPECT_TRUE(r->restore(h, log, 0));
    EXPECT_EQ(r->seq(), h.seq);
    spdlog::set_level(spdlog::level::info);
}

TEST_F(durable, a_restored_session_nobody_joins_lingers_then_expires)
{
    opts.linger_ms = 1000;
    test_peer a;
    s->join(a, join_args("va"));
    auto h = s->header();
    s.reset();
    s = restored(h, {}, 0);
    EXPECT_FALSE(s->expired());
    run_ms(999);
    EXPECT_FALSE(s->expired());
    run_ms(1);
    EXPECT_TRUE(s->expired());

    // A JOIN within the linger keeps it.
    s = restored(h, {}, 0);
    run_ms(500);
    test_peer b;
    s->join(b, join_args("vb"));
    run_ms(1000);
    EXPECT_FALSE(s->expired());
}
