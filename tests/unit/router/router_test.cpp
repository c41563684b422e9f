#include "router/memory_directory.hpp"

#include <gtest/gtest.h>

#include <set>
#include <thread>

using namespace lockstep;
using namespace lockstep::router;
using nlohmann::json;

namespace {

struct router_fixture : ::testing::Test {
    manual_clock clock;
    options opts;
    std::unique_ptr<router::memory_directory> r;
    void
    make(std::uint32_t capacity = 10, double overflow = 0.8)
    {
        opts.defaults.capacity = capacity;
        opts.defaults.overflow = overflow;
        opts.defaults.seat_ttl_ms = 1000;
        opts.defaults.retire_ms = 5000;
        r = std::make_unique<router::memory_directory>(clock, opts, 10000);
        r->register_reflector({"eu-1", "eu", "ws://eu1:9090", "http://eu1:9090/files", 0, false, 0});
    }
    void SetUp() override { make(); }
    seat_answer
    join(std::string const& room, std::string const& user, std::string const& region = "")
    {
        api_error err;
        auto a = r->join(room, user, region, err);
        EXPECT_TRUE(a) << err.message;
        return a.value_or(seat_answer{});
    }
    std::string
    token_of(seat_answer const& a)
    {
        return router::token_from_path(a.reflector.substr(a.reflector.find("/r/")) + "/SESSIONID");
    }
};

}  // namespace

TEST_F(router_fixture, a_join_gets_a_seat_and_asking_twice_gives_the_same)
{
    auto a = join("lobby", "alice");
    EXPECT_EQ(a.room, "lobby");
    EXPECT_EQ(a.session, "lobby");
    EXPECT_EQ(a.shard, 1u);
    EXPECT_EQ(a.reflector.rfind("ws://eu1:9090/r/", 0), 0u);
    EXPECT_EQ(a.files, "http://eu1:9090/files");
    EXPECT_EQ(a.expires_in_ms, 1000);
    auto again = join("lobby", "alice");
    EXPECT_EQ(again.session, a.session);
    EXPECT_EQ(again.reflector, a.reflector);
    auto info = r->room_info("lobby").value();
    EXPECT_EQ(info["shards"][0]["reserved"], 1);
    EXPECT_FALSE(r->room_info("nope"));
}

TEST_F(router_fixture, overflow_shards_keep_headroom)
{
    // capacity 10, threshold 8: the 8th seat opens shard 2, seats 9-10 still fill shard 1.
    for (int i = 0; i < 7; ++i)
        EXPECT_EQ(join("room", "u" + std::to_string(i)).shard, 1u);
    EXPECT_EQ(r->room_info("room").value()["shards"].size(), 1u);
    EXPECT_EQ(join("room", "u7").shard, 1u);
    EXPECT_EQ(r->room_info("room").value()["shards"].size(), 2u);
    EXPECT_EQ(join("room", "u8").shard, 1u);
    EXPECT_EQ(join("room", "u9").shard, 1u);
    auto a = join("room", "u10");
    EXPECT_EQ(a.shard, 2u);
    EXPECT_EQ(a.session, "room~2");
}

TEST_F(router_fixture, seats_expire_unless_confirmed_and_leave_frees)
{
    auto a = join("r", "alice");
    auto b = join("r", "bob");
    r->member_joined(token_of(a), "com.example.app/r", "c1");  // alice really joined
    r->member_joined(token_of(b), "com.example.app/other", "c1");  // wrong session: not confirmed
    clock.advance_ms(1001);
    auto info = r->room_info("r").value();
    EXPECT_EQ(info["shards"][0]["members"], 1);
    EXPECT_EQ(info["shards"][0]["reserved"], 0);  // bob's seat expired
    // Alice's connection drops: her seat is held for a reconnect, then freed.
    r->member_left(token_of(a), false, "c1");
    info = r->room_info("r").value();
    EXPECT_EQ(info["shards"][0]["reserved"], 1);
    r->member_joined(token_of(a), "com.example.app/r", "c1");
    clock.advance_ms(5000);
    EXPECT_EQ(r->room_info("r").value()["shards"][0]["members"], 1);
    EXPECT_TRUE(r->leave("r", "alice"));
    EXPECT_FALSE(r->leave("r", "alice"));
    EXPECT_EQ(r->room_info("r").value()["shards"][0]["members"], 0);
    // A normal leave (close 1000) frees the seat at once.
    auto c = join("r", "carol");
    r->member_joined(token_of(c), "app/r", "c1");
    r->member_joined(token_of(c), "app/r", "c1");  // a repeated report counts once
    r->member_left(token_of(c), true, "c1");
    info = r->room_info("r").value();
    EXPECT_EQ(info["shards"][0]["members"], 0);
    EXPECT_EQ(info["shards"][0]["reserved"], 0);
}

TEST_F(router_fixture, empty_overflow_shards_retire_after_grace)
{
    for (int i = 0; i < 11; ++i)
        join("g", "u" + std::to_string(i));
    ASSERT_EQ(r->room_info("g").value()["shards"].size(), 2u);
    for (int i = 0; i < 11; ++i)
        r->leave("g", "u" + std::to_string(i));
    clock.advance_ms(4999);
    EXPECT_EQ(r->room_info("g").value()["shards"].size(), 2u);
    clock.advance_ms(2);
    EXPECT_EQ(r->room_info("g").value()["shards"].size(), 1u);  // the first shard stays
}

TEST_F(router_fixture, concurrent_joins_never_overfill_or_duplicate)
{
    make(50, 0.8);
    constexpr int threads = 8, per = 125;  // 1,000 users
    std::vector<std::thread> ts;
    std::vector<std::vector<seat_answer>> got(threads);
    for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < per; ++i) {
                api_error err;
                auto a = r->join("big", "user-" + std::to_string(t) + "-" + std::to_string(i), "", err);
                if (a)
                    got[t].push_back(*a);
                // Some ask twice: same seat.
                if (i % 10 == 0) {
                    auto again = r->join("big", "user-" + std::to_string(t) + "-" + std::to_string(i), "", err);
                    if (a && again)
                        EXPECT_EQ(again->session, a->session);
                }
            }
        });
    for (auto& t : ts)
        t.join();
    std::map<std::string, int> per_session;
    std::set<std::string> tokens;
    int total = 0;
    for (auto const& v : got)
        for (auto const& a : v) {
            ++per_session[a.session];
            tokens.insert(a.reflector);
            ++total;
        }
    EXPECT_EQ(total, threads * per);
    EXPECT_EQ(tokens.size(), static_cast<std::size_t>(total));  // one distinct seat each
    for (auto const& [s, n] : per_session)
        EXPECT_LE(n, 50) << s;
    auto info = r->room_info("big").value();
    std::set<std::string> names;
    int seats = 0;
    for (auto const& sh : info["shards"]) {
        EXPECT_TRUE(names.insert(sh["session"].get<std::string>()).second) << "duplicate shard";
        EXPECT_LE(sh["reserved"].get<int>(), 50);
        seats += sh["reserved"].get<int>();
    }
    EXPECT_EQ(seats, 1000);
    EXPECT_EQ(info["shards"].size(), 21u);  // 20 full shards + 1 of headroom
    // Reservations expire when nobody joins.
    clock.advance_ms(1001);
    EXPECT_EQ(r->room_info("big").value()["shards"][0]["reserved"], 0);
}

TEST_F(router_fixture, placement_by_region_load_and_heartbeat)
{
    r->register_reflector({"us-1", "us", "ws://us1:9090", "http://us1:9090/files", 5, false, 0});
    r->register_reflector({"us-2", "us", "ws://us2:9090", "http://us2:9090/files", 2, false, 0});
    EXPECT_EQ(join("a", "x", "us").reflector.rfind("ws://us2:9090/r/", 0), 0u);  // least loaded in region
    EXPECT_EQ(join("b", "x", "eu").reflector.rfind("ws://eu1:9090/r/", 0), 0u);
    EXPECT_EQ(join("c", "x", "asia").reflector.rfind("ws://eu1:9090/r/", 0), 0u);  // any region: least loaded
    // Heartbeats expire: only us-1 keeps beating.
    clock.advance_ms(11000);
    r->register_reflector({"us-1", "us", "ws://us1:9090", "http://us1:9090/files", 5, false, 0});
    EXPECT_EQ(join("d", "x", "us").reflector.rfind("ws://us1:9090/r/", 0), 0u);
    EXPECT_EQ(join("e", "x", "eu").reflector.rfind("ws://us1:9090/r/", 0), 0u);
    // A draining reflector gets nothing new, and its shards move on their next join.
    r->register_reflector({"us-3", "us", "ws://us3:9090", "http://us3:9090/files", 0, true, 0});
    EXPECT_EQ(join("f", "x", "us").reflector.rfind("ws://us1:9090/r/", 0), 0u);
    auto list = r->reflectors();
    EXPECT_EQ(list.size(), 4u);
    int live = 0;
    for (auto const& x : list)
        live += x["live"].get<bool>();
    EXPECT_EQ(live, 2);  // us-1 and the draining us-3
}

TEST_F(router_fixture, children_are_named_under_their_parent)
{
    api_error err;
    auto c = r->create_child("lobby", "chat", "", err).value();
    EXPECT_EQ(c["session"], "lobby/chat");
    EXPECT_EQ(c["parent"], "lobby");
    auto again = r->create_child("lobby", "chat", "", err).value();
    EXPECT_EQ(again["session"], "lobby/chat");
    r->create_child("lobby", "game", "", err);
    auto list = r->children("lobby");
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[1]["session"], "lobby/game");
    EXPECT_TRUE(r->children("none").empty());
}

TEST(router_paths, seat_tokens_travel_in_the_path)
{
    EXPECT_EQ(router::seat_url("ws://h:1/", "tok"), "ws://h:1/r/tok");
    EXPECT_EQ(router::token_from_path("/r/tok/SESSION"), "tok");
    EXPECT_EQ(router::token_from_path("/prefix/r/tok/SESSION?x=1"), "tok");
    EXPECT_EQ(router::token_from_path("/reflector/SESSION"), "");
    EXPECT_EQ(router::token_from_path("/SESSION"), "");
    EXPECT_EQ(router::token_from_path("/r/SESSION"), "");
}
