// The Redis directory on a real redis-server whose keys hold what lockstep did not write
// there (another program's keys, a hand edit, an older version): every operation answers
// an error or an empty result, none throws, and the keys lockstep owns keep working.
#include "directory/redis_directory.hpp"
#include "redis/link.hpp"

#include "support/redis_server.hpp"

#include <gtest/gtest.h>

using namespace lockstep;
using namespace lockstep::router;

namespace {

struct foreign_state : ::testing::Test {
    test::redis_server server;
    std::unique_ptr<redis::link> raw;
    std::unique_ptr<redis_directory> dir;

    void
    SetUp() override
    {
        ASSERT_TRUE(server.ready()) << "redis-server did not start";
        raw = std::make_unique<redis::link>(server.url());
        options o;
        o.defaults.capacity = 4;
        dir = std::make_unique<redis_directory>(server.url(), o, 60000);
        dir->register_reflector({"eu-1", "eu", "ws://eu1:9090", "http://eu1:9090/files", 0, false, 0, "i1"});
    }
    void
    put(redis::command_args const& cmd)
    {
        auto r = raw->command(cmd);
        ASSERT_TRUE(r && r->type != redis::value::kind::error) << cmd[0] << " " << cmd[1];
    }
};

}  // namespace

TEST_F(foreign_state, a_room_key_that_is_not_json_or_has_the_wrong_type_is_an_error_not_a_crash)
{
    put({"SET", "ls:room:garbled", "{not json"});
    put({"SET", "ls:room:shapeless", R"({"pol":"x","next":"y","shards":"z"})"});
    put({"HSET", "ls:room:wrongtype", "a", "b"});  // WRONGTYPE for GET
    for (char const* room : {"garbled", "shapeless", "wrongtype"}) {
        api_error err;
        std::optional<seat_answer> a;
        EXPECT_NO_THROW(a = dir->join(room, "u1", "", err)) << room;
        EXPECT_FALSE(a) << room;
        EXPECT_GE(err.status, 500) << room;
        EXPECT_NO_THROW(dir->leave(room, "u1")) << room;
        EXPECT_NO_THROW(dir->room_info(room)) << room;
    }
    // The rooms lockstep wrote keep working next to them.
    api_error err;
    auto ok = dir->join("fine", "u1", "", err);
    ASSERT_TRUE(ok) << err.message;
    EXPECT_EQ(ok->room, "fine");
}

TEST_F(foreign_state, seat_answers_with_fields_of_the_wrong_type_are_refused)
{
    // A room record whose values have other types than the script writes: the script
    // may pass them through; the C++ side must not throw on them.
    put({"SET", "ls:room:typed",
         R"({"pol":{"cap":4,"over":0.8,"ttl":60000,"retire":60000},"next":"1","shards":[{"session":7,"refl":[],"seats":{}}]})"});
    api_error err;
    std::optional<seat_answer> a;
    EXPECT_NO_THROW(a = dir->join("typed", "u1", "", err));
    if (!a) {
        EXPECT_GE(err.status, 400);
    }
    std::optional<nlohmann::json> info;
    EXPECT_NO_THROW(info = dir->room_info("typed"));
}

TEST_F(foreign_state, listings_over_foreign_keys_are_empty_or_partial_not_a_crash)
{
    put({"SET", "ls:rooms", "not a set"});
    put({"HSET", "ls:refl", "bogus", "{not json"});
    put({"SET", "ls:children:p", "not a hash"});
    nlohmann::json rooms, refl, kids;
    EXPECT_NO_THROW(rooms = dir->rooms(10));
    EXPECT_TRUE(rooms.is_array());
    EXPECT_NO_THROW(refl = dir->reflectors());
    EXPECT_TRUE(refl.is_array());
    EXPECT_NO_THROW(kids = dir->children("p"));
    EXPECT_TRUE(kids.is_array());
    api_error err;
    std::optional<nlohmann::json> child;
    EXPECT_NO_THROW(child = dir->create_child("p", "chat", "", err));
    EXPECT_FALSE(child);
    EXPECT_GE(err.status, 500);
    EXPECT_NO_THROW(dir->seat_live("no-such-token"));
    EXPECT_NO_THROW(dir->member_joined("no-such-token", "S", "c1"));
}

TEST_F(foreign_state, a_seat_token_record_that_is_not_json_is_an_error_not_a_crash)
{
    put({"SET", "ls:tok:tok1", "]["});
    put({"HSET", "ls:tok:tok2", "room", "r"});
    for (char const* tok : {"tok1", "tok2"}) {
        EXPECT_NO_THROW(EXPECT_FALSE(dir->seat_live(tok))) << tok;
        EXPECT_NO_THROW(EXPECT_FALSE(dir->member_joined(tok, "S", "c1"))) << tok;
        EXPECT_NO_THROW(dir->member_left(tok, true, "c1")) << tok;
    }
}
