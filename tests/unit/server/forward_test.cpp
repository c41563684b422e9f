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
