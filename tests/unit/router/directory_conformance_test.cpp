// One set of router rules, two directories: the same typed tests run against the
// in-memory directory and against the Redis (Lua) directory on a real redis-server
// started on a free loopback port. Time-driven rules (seat expiry, shard retirement,
// heartbeat expiry) are covered per implementation (router_test.cpp on a manual clock,
// the cluster integration tests on Redis time); everything else must agree here.
#include "directory/redis_directory.hpp"
#include "router/memory_directory.hpp"

#include "support/redis_server.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <set>

using namespace lockstep;
using namespace lockstep::router;
using nlohmann::json;

namespace {

options
test_options()
{
    options o;
    o.defaults.capacity = 10;
    o.defaults.overflow = 0.8;
    o.defaults.seat_ttl_ms = 60000;
    o.defaults.retire_ms = 60000;
    o.patterns.emplace_back("tiny-*", policy{2, 1.0, 60000, 60000});
    return o;
}

struct memory_impl {
    steady_clock_source clock;
    std::unique_ptr<directory> dir = std::make_unique<memory_directory>(clock, test_options(), 60000);
    bool ready() const { return true; }
};

struct redis_impl {
    test::redis_server server;
    std::unique_ptr<directory> dir =
        server.ready() ? std::make_unique<redis_directory>(server.url(), test_options(), 60000) : nullptr;
    bool ready() const { return dir != nullptr; }
};

template <class Impl>
struct directory_conformance : ::testing::Test {
    Impl impl;
    directory* d = nullptr;

    void
    SetUp() override
    {
        ASSERT_TRUE(impl.ready()) << "the directory could not be set up (redis-server did not start?)";
        d = impl.dir.get();
        d->register_reflector({"eu-1", "eu", "ws://eu1:9090", "http://eu1:9090/files", 0, false, 0, "i1"});
    }
    seat_answer
    join(std::string const& room, std::string const& user, std::string const& region = "")
    {
        api_error err;
        auto a = d->join(room, user, region, err);
        EXPECT_TRUE(a) << err.message;
        return a.value_or(seat_answer{});
    }
    static std::string
    token_of(seat_answer const& a)
    {
        return token_from_path(a.reflector.substr(a.reflector.find("/r/")) + "/SESSIONID");
    }
    json
    shard(std::string const& room, std::size_t i = 0)
    {
        auto info = d->room_info(room);
        EXPECT_TRUE(info);
        return info ? (*info)["shards"][i] : json();
    }
};

using implementations = ::testing::Types<memory_impl, redis_impl>;

struct impl_names {
    template <class T>
    static std::string
    GetName(int)
    {
        return std::is_same_v<T, memory_impl> ? "memory" : "redis";
    }
};
TYPED_TEST_SUITE(directory_conformance, implementations, impl_names);

}  // namespace

TYPED_TEST(directory_conformance, a_join_gets_a_seat_and_asking_twice_gives_the_same)
{
    auto a = this->join("lobby", "alice");
    EXPECT_EQ(a.room, "lobby");
    EXPECT_EQ(a.session, "lobby");
    EXPECT_EQ(a.shard, 1u);
    EXPECT_EQ(a.reflector.rfind("ws://eu1:9090/r/", 0), 0u);
    EXPECT_EQ(a.files, "http://eu1:9090/files");
    EXPECT_EQ(this->token_of(a).size(), 32u);
    auto again = this->join("lobby", "alice");
    EXPECT_EQ(again.session, a.session);
    EXPECT_EQ(again.reflector, a.reflector);
    EXPECT_EQ(this->shard("lobby")["reserved"], 1);
    EXPECT_FALSE(this->d->room_info("nope"));
}

TYPED_TEST(directory_conformance, overflow_shards_keep_headroom)
{
    // capacity 10, threshold 8: the 8th seat opens shard 2, seats 9-10 still fill shard 1.
    for (int i = 0; i < 8; ++i)
        EXPECT_EQ(this->join("room", "u" + std::to_string(i)).shard, 1u);
    EXPECT_EQ((*this->d->room_info("room"))["shards"].size(), 2u);
    EXPECT_EQ(this->join("room", "u8").shard, 1u);
    EXPECT_EQ(this->join("room", "u9").shard, 1u);
    auto a = this->join("room", "u10");
    EXPECT_EQ(a.shard, 2u);
    EXPECT_EQ(a.session, "room~2");
}

TYPED_TEST(directory_conformance, rooms_are_listed_by_name_with_their_shards)
{
    EXPECT_EQ(this->d->rooms(10), nlohmann::json::array());
    for (int i = 0; i < 8; ++i)
        this->join("b-room", "u" + std::to_string(i));  // the 8th opens shard 2
    this->join("a-room", "solo");
    auto list = this->d->rooms(10);
    ASSERT_EQ(list.size(), 2u) << list;
    EXPECT_EQ(list[0]["room"], "a-room");
    EXPECT_EQ(list[1]["room"], "b-room");
    EXPECT_EQ(list[1], *this->d->room_info("b-room"));  // the same view as one room's
    EXPECT_EQ(list[1]["shards"].size(), 2u);
    EXPECT_EQ(list[0]["shards"][0]["reserved"], 1);
    auto first = this->d->rooms(1);  // bounded
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(first[0]["room"], "a-room");
}

TYPED_TEST(directory_conformance, room_policies_apply_by_pattern)
{
    // tiny-*: capacity 2, overflow 1.0
    EXPECT_EQ(this->join("tiny-1", "a").shard, 1u);
    EXPECT_EQ(this->join("tiny-1", "b").shard, 1u);
    EXPECT_EQ(this->join("tiny-1", "c").shard, 2u);
}

TYPED_TEST(directory_conformance, membership_confirms_holds_and_frees_seats)
{
    auto a = this->join("r", "alice");
    auto b = this->join("r", "bob");
    EXPECT_TRUE(this->d->member_joined(this->token_of(a), "com.example.app/r", "eu-1#i1:1"));   // alice really joined
    EXPECT_FALSE(this->d->member_joined(this->token_of(b), "com.example.app/other", "eu-1#i1:2"));  // wrong session
    EXPECT_FALSE(this->d->member_joined("00000000000000000000000000000000", "app/r", "eu-1#i1:3"));  // no such seat
    EXPECT_EQ(this->shard("r")["members"], 1);
    EXPECT_EQ(this->shard("r")["reserved"], 1);  // bob's, until it expires
    // A drop puts alice's seat back to reserved for a reconnect...
    this->d->member_left(this->token_of(a), false, "eu-1#i1:1");
    EXPECT_EQ(this->shard("r")["members"], 0);
    EXPECT_EQ(this->shard("r")["reserved"], 2);
    // ...which takes it again; a repeated report counts once.
    EXPECT_TRUE(this->d->member_joined(this->token_of(a), "app/r", "eu-1#i1:4"));
    EXPECT_TRUE(this->d->member_joined(this->token_of(a), "app/r", "eu-1#i1:4"));
    EXPECT_EQ(this->shard("r")["members"], 1);
    // A normal leave (close 1000) frees the seat at once.
    this->d->member_left(this->token_of(a), true, "eu-1#i1:4");
    EXPECT_EQ(this->shard("r")["members"], 0);
    EXPECT_EQ(this->shard("r")["reserved"], 1);
    // An explicit leave frees a seat, once.
    EXPECT_TRUE(this->d->leave("r", "bob"));
    EXPECT_FALSE(this->d->leave("r", "bob"));
    EXPECT_EQ(this->shard("r")["reserved"], 0);
}

TYPED_TEST(directory_conformance, placement_by_region_and_load_skips_draining_reflectors)
{
    this->d->register_reflector({"us-1", "us", "ws://us1:9090", "http://us1:9090/files", 5, false, 0, "i2"});
    this->d->register_reflector({"us-2", "us", "ws://us2:9090", "http://us2:9090/files", 2, false, 0, "i3"});
    this->d->register_reflector({"us-3", "us", "ws://us3:9090", "http://us3:9090/files", 0, true, 0, "i4"});
    EXPECT_EQ(this->join("a", "x", "us").reflector.rfind("ws://us2:9090/r/", 0), 0u);  // least loaded, not draining
    EXPECT_EQ(this->join("b", "x", "eu").reflector.rfind("ws://eu1:9090/r/", 0), 0u);
    EXPECT_EQ(this->join("c", "x", "asia").reflector.rfind("ws://eu1:9090/r/", 0), 0u);  // any region: least loaded
    auto list = this->d->reflectors();
    ASSERT_EQ(list.size(), 4u);
    std::set<std::string> ids;
    for (auto const& r : list) {
        ids.insert(r["id"].template get<std::string>());
        EXPECT_TRUE(r["live"].template get<bool>());
        EXPECT_EQ(r["draining"].template get<bool>(), r["id"] == "us-3");
    }
    EXPECT_EQ(ids, (std::set<std::string>{"eu-1", "us-1", "us-2", "us-3"}));
}

TYPED_TEST(directory_conformance, children_are_named_under_their_parent)
{
    api_error err;
    auto c = this->d->create_child("lobby", "chat", "", err).value();
    EXPECT_EQ(c["session"], "lobby/chat");
    EXPECT_EQ(c["parent"], "lobby");
    auto again = this->d->create_child("lobby", "chat", "", err).value();
    EXPECT_EQ(again["session"], "lobby/chat");
    this->d->create_child("lobby", "game", "", err);
    auto list = this->d->children("lobby");
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0]["session"], "lobby/chat");
    EXPECT_EQ(list[1]["session"], "lobby/game");
    EXPECT_TRUE(this->d->children("none").empty());
    EXPECT_TRUE(this->d->available());
}
