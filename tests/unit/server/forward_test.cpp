// The registered URLs forwarding between hand-offs can reach (server/forward.hpp).
#include "server/forward.hpp"

#include <gtest/gtest.h>

using namespace lockstep;

TEST(forward, parse_ws_url_takes_host_and_port_of_plain_websocket_urls_only)
{
    std::string host, port;
    ASSERT_TRUE(parse_ws_url("ws://127.0.0.1:9090", host, port));
    EXPECT_EQ(host, "127.0.0.1");
    EXPECT_EQ(port, "9090");
    ASSERT_TRUE(parse_ws_url("ws://refl-2.internal/some/path", host, port));
    EXPECT_EQ(host, "refl-2.internal");
    EXPECT_EQ(port, "80");
    ASSERT_TRUE(parse_ws_url("ws://[::1]:7000/", host, port));
    EXPECT_EQ(host, "::1");
    EXPECT_EQ(port, "7000");
    for (auto bad : {"wss://127.0.0.1:9090", "http://127.0.0.1:9090", "ws://", "ws://:9090", "ws://h:", "ws://h:90x",
                     "ws://[::1", "ws://[::1]x", "", "ws://0.0.0.0:9090", "ws://[::]:9090"})
        EXPECT_FALSE(parse_ws_url(bad, host, port)) << bad;
}

TEST(move_notice, round_trips_its_code_and_reason)
{
    std::uint16_t code = 0;
    std::string reason;
    ASSERT_TRUE(parse_move_notice(move_notice(1001, "reflector draining"), code, reason));
    EXPECT_EQ(code, 1001);
    EXPECT_EQ(reason, "reflector draining");
    ASSERT_TRUE(parse_move_notice(move_notice(4003, ""), code, reason));
    EXPECT_EQ(code, 4003);
    EXPECT_EQ(reason, "");
    ASSERT_TRUE(parse_move_notice(move_notice(1001, std::string(300, 'r')), code, reason));
    EXPECT_EQ(reason.size(), 120u);  // as long as a close frame's reason may be
}

TEST(move_notice, anything_else_is_an_ordinary_message)
{
    std::uint16_t code = 7;
    std::string reason = "kept";
    for (std::string_view text :
         {"", "[1,2]", "{\"action\":\"RECV\"}", "_LOCKSTEP_MOVE", "_LOCKSTEP_MOVE ", "_LOCKSTEP_MOVE 100",
          "_LOCKSTEP_MOVE 1001", "_LOCKSTEP_MOVE 10x1 why", "_LOCKSTEP_MOVE -001 why", "_LOCKSTEP_MOVE 1001x",
          "_lockstep_move 1001 why", " _LOCKSTEP_MOVE 1001 why", "_CHUNK10_LOCKSTEP_MOVE 1001 why"}) {
        EXPECT_FALSE(parse_move_notice(text, code, reason)) << text;
        EXPECT_EQ(code, 7) << text;
        EXPECT_EQ(reason, "kept") << text;
    }
}
