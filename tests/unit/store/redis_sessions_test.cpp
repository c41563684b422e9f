// The cluster's lease and fencing rules and the Redis session journal, against a real
// redis-server on a free loopback port (support/redis_server.hpp).
#include "store/redis_sessions.hpp"
#include "store/journal.hpp"

#include "support/redis_server.hpp"

#include <gtest/gtest.h>

#include <thread>

using namespace lockstep;
using namespace lockstep::store;
using namespace std::chrono_literals;

namespace {

session_header
header_of(std::string const& id, std::uint32_t seq, std::string snapshot_url = "")
{
    session_header h;
    h.id = id;
    h.name = "app/room";
    h.app_id = "app";
    h.timeline = "tl-1";
    h.tick_ms = 100;
    h.snapshot_url = std::move(snapshot_url);
    h.time_ms = 1234;
    h.seq = seq;
    return h;
}

std::string
element(std::uint32_t seq)
{
    return "[" + std::to_string(1000 + seq % 1000) + "," + std::to_string(seq) + ",\"e" + std::to_string(seq) + "\"]";
}

struct redis_sessions_test : ::testing::Test {
    test::redis_server server;
    redis::link link{server.url()};
    redis_sessions store{link, sessions_options{300, 60'000}};

    /// Time passes in a cluster that is up: some reflector ticks every quarter lease, as
    /// the lease keeper does, so Redis sees no silence (no outage rule).
    void
    live_cluster_waits(std::chrono::milliseconds d)
    {
        auto end = std::chrono::steady_clock::now() + d;
        while (std::chrono::steady_clock::now() < end) {
            ASSERT_TRUE(store.tick().has_value());
            std::this_thread::sleep_for(50ms);
        }
    }
};

TEST_F(redis_sessions_test, first_acquisition_gets_a_fence_from_redis_time_and_no_state)
{
    ASSERT_TRUE(server.ready());
    auto time = link.command({"TIME"});
    ASSERT_TRUE(time && time->elements.size() == 2);
    auto now_ms = std::stoull(time->elements[0].str) * 1000;
    auto a = store.acquire("s1", "refl-a");
    ASSERT_EQ(a.what, acquire_result::status::acquired);
    // Redis' time in ms, plus one: never a number an earlier owner had, also after
    // Redis lost its data.
    EXPECT_GE(a.granted.fence, now_ms);
    EXPECT_LT(a.granted.fence, now_ms + 10'000);
    EXPECT_EQ(a.granted.token, "refl-a#" + std::to_string(a.granted.fence));
    EXPECT_FALSE(a.state.has_value());
    EXPECT_FALSE(a.unreadable);
}

TEST_F(redis_sessions_test, a_held_lease_is_refused_to_others_and_names_its_holder)
{
    auto a = store.acquire("s1", "refl-a");
    ASSERT_EQ(a.what, acquire_result::status::acquired);
    auto b = store.acquire("s1", "refl-b");
    EXPECT_EQ(b.what, acquire_result::status::held);
    EXPECT_EQ(b.holder, a.granted.token);
    // Another session is independent.
    EXPECT_EQ(store.acquire("s2", "refl-b").what, acquire_result::status::acquired);
}

TEST_F(redis_sessions_test, renewal_keeps_the_lease_past_its_time)
{
    auto a = store.acquire("s1", "refl-a");
    for (int i = 0; i < 6; ++i) {  // 6 x 100 ms = twice the 300 ms lease
        std::this_thread::sleep_for(100ms);
        auto r = store.renew({{"s1", a.granted}});
        ASSERT_EQ(r.size(), 1u);
        ASSERT_EQ(r[0], redis_sessions::renew_status::ok) << "renewal " << i;
    }
    EXPECT_EQ(store.acquire("s1", "refl-b").what, acquire_result::status::held);
}

TEST_F(redis_sessions_test, an_expired_lease_goes_to_the_next_with_a_higher_fence_and_the_old_holder_cannot_renew)
{
    auto a = store.acquire("s1", "refl-a");
    live_cluster_waits(450ms);  // past the 300 ms lease
    auto b = store.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::acquired);
    EXPECT_EQ(b.granted.fence, a.granted.fence + 1);
    auto r = store.renew({{"s1", a.granted}, {"s1", b.granted}});
    EXPECT_EQ(r[0], redis_sessions::renew_status::lost);
    EXPECT_EQ(r[1], redis_sessions::renew_status::ok);
}

TEST_F(redis_sessions_test, an_expired_lease_nobody_took_is_renewed_by_its_holder)
{
    auto a = store.acquire("s1", "refl-a");
    live_cluster_waits(450ms);
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::ok);
    EXPECT_EQ(store.acquire("s1", "refl-b").what, acquire_result::status::held);
}

TEST_F(redis_sessions_test, after_a_silence_nobody_takes_over_for_a_lease_and_the_owner_renews_first)
{
    ASSERT_EQ(store.tick(), std::optional<std::int64_t>(0));
    auto a = store.acquire("s1", "refl-a");
    ASSERT_EQ(a.what, acquire_result::status::acquired);
    // Nobody reaches Redis for 450 ms (1.5 leases): here nobody calls at all, which is
    // what Redis sees when it was stopped or cut off. The lease ran out meanwhile.
    std::this_thread::sleep_for(450ms);
    auto b = store.acquire("s1", "refl-b");
    EXPECT_EQ(b.what, acquire_result::status::unavailable) << "a takeover right after an outage must wait";
    EXPECT_TRUE(b.outage);
    auto silence = store.tick();
    ASSERT_TRUE(silence.has_value());
    EXPECT_GE(*silence, 400) << "tick reports the silence being waited out";
    EXPECT_EQ(store.acquire("s2", "refl-b").what, acquire_result::status::unavailable)
        << "no session at all is taken during the outage rule, not even a new one";
    // The owner renews (its lease ran out, nobody took it: fence unchanged) and keeps it.
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::ok);
    b = store.acquire("s1", "refl-b");
    EXPECT_EQ(b.what, acquire_result::status::held);
    EXPECT_EQ(b.holder, a.granted.token);
}

TEST_F(redis_sessions_test, a_dead_owner_is_taken_over_once_the_outage_lease_has_passed)
{
    auto a = store.acquire("s1", "refl-a");
    ASSERT_EQ(a.what, acquire_result::status::acquired);
    std::this_thread::sleep_for(450ms);  // silence: the outage rule starts with the next call
    EXPECT_EQ(store.acquire("s1", "refl-b").what, acquire_result::status::unavailable);
    live_cluster_waits(400ms);  // one lease (300 ms) with ticks; refl-a never renews: dead
    auto b = store.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::acquired);
    EXPECT_EQ(b.granted.fence, a.granted.fence + 1);
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::lost);
}

TEST_F(redis_sessions_test, a_redis_frozen_by_sigstop_is_unreachable_then_starts_the_outage_rule)
{
    ASSERT_EQ(store.tick(), std::optional<std::int64_t>(0));
    auto a = store.acquire("s1", "refl-a");
    ASSERT_EQ(a.what, acquire_result::status::acquired);
    server.pause();  // SIGSTOP: connections stay open, nothing answers
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(store.tick(), std::nullopt);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 900ms) << "a hung Redis is one time-out, not two";
    EXPECT_FALSE(link.reachable());
    EXPECT_TRUE(link.hanging(100ms));
    t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::unavailable);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 100ms) << "within the back-off a call fails at once";
    std::this_thread::sleep_for(400ms);
    server.resume();  // SIGCONT
    // Redis' clock ran on: the lease has expired; a contender must still wait.
    auto deadline = std::chrono::steady_clock::now() + 3s;
    acquire_result b;
    do {
        std::this_thread::sleep_for(50ms);
        b = store.acquire("s1", "refl-b");
    } while (b.what == acquire_result::status::unavailable && !b.outage &&
             std::chrono::steady_clock::now() < deadline);
    EXPECT_EQ(b.what, acquire_result::status::unavailable);
    EXPECT_TRUE(b.outage);
    EXPECT_FALSE(link.hanging(100ms));
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::ok);
    EXPECT_EQ(store.acquire("s1", "refl-b").what, acquire_result::status::held);
}

TEST_F(redis_sessions_test, when_redis_lost_its_data_the_owner_puts_its_session_back_and_nobody_takes_it_meanwhile)
{
    auto a = store.acquire("s1", "refl-a");
    ASSERT_EQ(a.what, acquire_result::status::acquired);
    ASSERT_EQ(store.append({{"s1", a.granted.fence, true, journal::header_json(header_of("s1", 5)), 5, 1500,
                             {element(4), element(5)}}})[0],
              append_status::ok);
    // Redis restarts without persistence: everything is gone.
    ASSERT_FALSE(link.command({"FLUSHALL"})->is_error());
    // This process saw Redis' clock before: the outage rule starts (-1: lost data), and a
    // takeover waits although no lease is there.
    EXPECT_EQ(store.tick(), std::optional<std::int64_t>(-1));
    redis::link other_link{server.url()};
    redis_sessions other{other_link, sessions_options{300, 60'000}};
    auto b = other.acquire("s1", "refl-b");
    EXPECT_EQ(b.what, acquire_result::status::unavailable);
    EXPECT_TRUE(b.outage);
    // The owner's next append is not refused as fenced: it is told to write everything.
    EXPECT_EQ(store.append({{"s1", a.granted.fence, false, "", 6, -1, {element(6)}}})[0], append_status::gap);
    // Its renewal takes the lease back and asks for the whole state too.
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::reseeded);
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::ok);
    ASSERT_EQ(store.append({{"s1", a.granted.fence, true, journal::header_json(header_of("s1", 6)), 6, 2500,
                             {element(4), element(5), element(6)}}})[0],
              append_status::ok);
    live_cluster_waits(400ms);  // the outage lease passes; the owner keeps renewing
    ASSERT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::ok);
    b = other.acquire("s1", "refl-b");
    EXPECT_EQ(b.what, acquire_result::status::held);
    EXPECT_EQ(b.holder, a.granted.token);
    // Once the owner is gone, the next one gets everything, under a higher fence.
    ASSERT_TRUE(store.release("s1", a.granted));
    b = other.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::acquired);
    EXPECT_GT(b.granted.fence, a.granted.fence);
    ASSERT_TRUE(b.state.has_value());
    ASSERT_EQ(b.state->events.size(), 3u);
    EXPECT_EQ(b.state->events[2].element, element(6));
}

TEST_F(redis_sessions_test, after_redis_lost_its_data_a_new_owners_fence_is_never_an_old_owners)
{
    auto a = store.acquire("s1", "refl-a");
    ASSERT_EQ(a.what, acquire_result::status::acquired);
    ASSERT_FALSE(link.command({"FLUSHALL"})->is_error());
    std::this_thread::sleep_for(5ms);
    // A reflector that never saw this Redis before takes the session (no outage rule for
    // it); the old owner, frozen meanwhile, resumes: its writes and renewals are refused.
    redis::link other_link{server.url()};
    redis_sessions other{other_link, sessions_options{300, 60'000}};
    auto b = other.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::acquired);
    EXPECT_GT(b.granted.fence, a.granted.fence);
    EXPECT_EQ(store.append({{"s1", a.granted.fence, true, journal::header_json(header_of("s1", 1)), 1, -1,
                             {element(1)}}})[0],
              append_status::fenced);
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::lost);
}

TEST_F(redis_sessions_test, a_stale_owner_cannot_append_after_a_takeover)
{
    auto a = store.acquire("s1", "refl-a");
    session_append first{"s1", a.granted.fence, true, journal::header_json(header_of("s1", 5)), 5, 1500,
                         {element(4), element(5)}};
    ASSERT_EQ(store.append({first})[0], append_status::ok);
    live_cluster_waits(450ms);
    auto b = store.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::acquired);
    // The old owner's late write is refused; the new owner's goes in.
    session_append late{"s1", a.granted.fence, false, "", 6, -1, {element(6)}};
    session_append next{"s1", b.granted.fence, false, "", 6, 2500, {element(6)}};
    auto r = store.append({late, next});
    EXPECT_EQ(r[0], append_status::fenced);
    EXPECT_EQ(r[1], append_status::ok);
    live_cluster_waits(450ms);
    auto c = store.acquire("s1", "refl-c");
    ASSERT_TRUE(c.state.has_value());
    ASSERT_EQ(c.state->events.size(), 3u);  // 4, 5 and the new owner's 6, once
    EXPECT_EQ(c.state->events[2].seq, 6u);
    EXPECT_EQ(c.state->events[2].element, element(6));
    EXPECT_EQ(c.state->seen_ms, 2500);
}

TEST_F(redis_sessions_test, the_stored_state_comes_back_whole_and_a_snapshot_rebase_trims_it)
{
    auto a = store.acquire("s1", "refl-a");
    std::vector<std::string> events;
    for (std::uint32_t q = 1; q <= 10; ++q)
        events.push_back(element(q));
    ASSERT_EQ(store.append({{"s1", a.granted.fence, true, journal::header_json(header_of("s1", 10)), 10, 1800, events}})[0],
              append_status::ok);
    ASSERT_EQ(store.append({{"s1", a.granted.fence, false, "", 12, 1900, {element(11), element(12)}}})[0],
              append_status::ok);
    // Events that do not continue the stored seq are refused as a gap.
    EXPECT_EQ(store.append({{"s1", a.granted.fence, false, "", 15, -1, {element(15)}}})[0], append_status::gap);
    // A snapshot at seq 11: the rebase keeps only what follows it.
    ASSERT_EQ(store.append({{"s1", a.granted.fence, true,
                             journal::header_json(header_of("s1", 12, "http://files/snap-11")), 12, -1, {element(12)}}})[0],
              append_status::ok);
    ASSERT_TRUE(store.release("s1", a.granted));
    auto b = store.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::acquired);
    ASSERT_TRUE(b.state.has_value());
    EXPECT_EQ(b.state->header.seq, 12u);
    EXPECT_EQ(b.state->header.timeline, "tl-1");
    EXPECT_EQ(b.state->header.snapshot_url, "http://files/snap-11");
    EXPECT_EQ(b.state->seen_ms, 1900);
    ASSERT_EQ(b.state->events.size(), 1u);
    EXPECT_EQ(b.state->events[0].seq, 12u);
}

TEST_F(redis_sessions_test, release_only_by_the_holder)
{
    auto a = store.acquire("s1", "refl-a");
    lease forged{"refl-b#1", 1};
    EXPECT_FALSE(store.release("s1", forged));
    EXPECT_EQ(store.acquire("s1", "refl-b").what, acquire_result::status::held);
    EXPECT_TRUE(store.release("s1", a.granted));
    EXPECT_EQ(store.acquire("s1", "refl-b").what, acquire_result::status::acquired);
}

TEST_F(redis_sessions_test, unreachable_redis_is_reported_not_mistaken_for_a_refusal)
{
    auto a = store.acquire("s1", "refl-a");
    server.stop();
    EXPECT_EQ(store.acquire("s2", "refl-a").what, acquire_result::status::unavailable);
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::unavailable);
    EXPECT_EQ(store.append({{"s1", a.granted.fence, false, "", 1, -1, {}}})[0], append_status::unavailable);
    EXPECT_FALSE(link.reachable());
}

TEST_F(redis_sessions_test, blobs_round_trip_and_expire)
{
    std::string bytes("CRQ1\0\x01binary", 12);
    ASSERT_TRUE(store.put_blob("apps/a/snap/x", bytes, 1));
    bool reachable = false;
    auto got = store.get_blob("apps/a/snap/x", reachable);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, bytes);
    EXPECT_TRUE(reachable);
    EXPECT_FALSE(store.get_blob("apps/a/snap/other", reachable).has_value());
    EXPECT_TRUE(reachable);
    std::this_thread::sleep_for(1200ms);
    EXPECT_FALSE(store.get_blob("apps/a/snap/x", reachable).has_value());
}

TEST_F(redis_sessions_test, an_owners_header_keeps_its_blobs_for_the_retention_and_a_fenced_one_does_not)
{
    // Blobs are stored for a short time here; the store's retention is 60 s.
    ASSERT_TRUE(store.put_blob("apps/a/s1/snap", "S", 2));
    ASSERT_TRUE(store.put_blob("apps/a/s1/saved", "P", 2));
    ASSERT_TRUE(store.put_blob("apps/a/s1/stale", "X", 2));
    auto pttl = [&](std::string const& path) {
        auto r = link.command({"PTTL", "ls:blob:" + path});
        return r ? r->integer : -100;
    };
    auto a = store.acquire("s1", "refl-a");
    session_append base{"s1", a.granted.fence, true, journal::header_json(header_of("s1", 5)), 5, 1500, {element(5)}};
    base.blobs = {"apps/a/s1/snap", "apps/a/s1/saved"};
    ASSERT_EQ(store.append({base})[0], append_status::ok);
    EXPECT_GT(pttl("apps/a/s1/snap"), 50'000) << "a blob the owner's header names lives as long as the session";
    EXPECT_GT(pttl("apps/a/s1/saved"), 50'000);
    // A stale writer (its fence is not the session's) renews nothing.
    live_cluster_waits(450ms);
    auto b = store.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::acquired);
    session_append late{"s1", a.granted.fence, false, journal::header_json(header_of("s1", 6)), 6, -1, {element(6)}};
    late.blobs = {"apps/a/s1/stale"};
    EXPECT_EQ(store.append({late})[0], append_status::fenced);
    auto left = pttl("apps/a/s1/stale");
    EXPECT_GT(left, 0);
    EXPECT_LE(left, 2000) << "a fenced append must not keep a blob alive";
}

TEST_F(redis_sessions_test, calls_go_by_evalsha_and_survive_a_flushed_script_cache)
{
    auto a = store.acquire("s1", "refl-a");
    ASSERT_EQ(a.what, acquire_result::status::acquired);
    // Redis forgets the script (a restart or failover does the same): every kind of call
    // still works, the refused ones run again after SCRIPT LOAD, in order.
    ASSERT_EQ(link.command({"SCRIPT", "FLUSH"})->is_error(), false);
    auto r = store.append({{"s1", a.granted.fence, true, journal::header_json(header_of("s1", 1)), 1, -1, {element(1)}},
                           {"s1", a.granted.fence, false, "", 2, 50, {element(2)}}});
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0], append_status::ok);
    EXPECT_EQ(r[1], append_status::ok);
    ASSERT_EQ(link.command({"SCRIPT", "FLUSH"})->is_error(), false);
    EXPECT_EQ(store.renew({{"s1", a.granted}})[0], redis_sessions::renew_status::ok);
    ASSERT_EQ(link.command({"SCRIPT", "FLUSH"})->is_error(), false);
    EXPECT_TRUE(store.release("s1", a.granted));
    auto b = store.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::acquired);
    ASSERT_TRUE(b.state.has_value());
    EXPECT_EQ(b.state->header.seq, 2u);
    EXPECT_EQ(b.state->events.size(), 2u);
    EXPECT_EQ(b.state->seen_ms, 50);
    // The script is sent once per Redis, not with every call: EVAL never ran.
    auto stats = link.command({"INFO", "commandstats"});
    ASSERT_TRUE(stats.has_value());
    EXPECT_EQ(stats->str.find("cmdstat_eval:"), std::string::npos) << stats->str;
    EXPECT_NE(stats->str.find("cmdstat_evalsha:"), std::string::npos) << stats->str;
}

TEST_F(redis_sessions_test, a_wanted_session_moves_at_most_once_per_interval_and_only_from_its_holder)
{
    auto a = store.acquire("s1", "refl-a");
    ASSERT_EQ(a.what, acquire_result::status::acquired);
    // refl-b got a JOIN for it: it finds the holder in the lease and asks.
    auto b = store.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::held);
    EXPECT_EQ(holder_of(b.holder), "refl-a");
    ASSERT_TRUE(store.want(holder_of(b.holder), "s1"));
    ASSERT_TRUE(store.want("refl-a", "s1"));  // asked twice: wanted once
    EXPECT_EQ(store.wanted("refl-b", 10), std::vector<std::string>{});
    EXPECT_EQ(store.wanted("refl-a", 10), std::vector<std::string>{"s1"});
    EXPECT_EQ(store.wanted("refl-a", 10), std::vector<std::string>{});  // taken out
    // Only the holder may hand it off, and then not again within the interval.
    lease forged{"refl-b#1", 1};
    EXPECT_EQ(store.may_hand_off("s1", forged, 800), handoff_status::not_held);
    EXPECT_FALSE(store.recently_moved("s1"));
    EXPECT_EQ(store.may_hand_off("s1", a.granted, 800), handoff_status::allowed);
    EXPECT_TRUE(store.recently_moved("s1"));  // a JOIN elsewhere is forwarded meanwhile
    ASSERT_TRUE(store.release("s1", a.granted));
    b = store.acquire("s1", "refl-b");
    ASSERT_EQ(b.what, acquire_result::status::acquired);
    EXPECT_EQ(store.may_hand_off("s1", b.granted, 800), handoff_status::refused);
    EXPECT_EQ(store.may_hand_off("s1", a.granted, 800), handoff_status::not_held);  // the old holder
    // After the interval it may move again; with interval 0 never.
    std::this_thread::sleep_for(900ms);
    EXPECT_EQ(store.renew({{"s1", b.granted}})[0], redis_sessions::renew_status::ok);
    EXPECT_EQ(store.may_hand_off("s1", b.granted, 0), handoff_status::refused);
    EXPECT_EQ(store.may_hand_off("s1", b.granted, 800), handoff_status::allowed);
    EXPECT_EQ(store.may_hand_off("s1", b.granted, 800), handoff_status::refused);
    // A want set of a holder that never reads it expires (four leases: 1.2 s here).
    ASSERT_TRUE(store.want("refl-gone", "s9"));
    auto ttl = link.command({"PTTL", "ls:want:refl-gone"});
    ASSERT_TRUE(ttl.has_value());
    EXPECT_GT(ttl->integer, 0);
    EXPECT_LE(ttl->integer, 1200);
}

}  // namespace
