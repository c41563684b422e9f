#include "server/config.hpp"

#include <gtest/gtest.h>

#include <vector>

using namespace lockstep;

namespace {
std::optional<config>
parse(std::vector<char const*> args, std::string& msg, bool& help)
{
    args.insert(args.begin(), "lockstep-reflector");
    return parse_config(static_cast<int>(args.size()), args.data(), msg, help);
}
}  // namespace

TEST(config, defaults)
{
    std::string msg;
    bool help;
    auto c = parse({}, msg, help);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->bind, "127.0.0.1");
    EXPECT_EQ(c->port, 9090);
    EXPECT_GE(c->threads, 1u);
    EXPECT_EQ(c->public_url, "ws://127.0.0.1:9090");
}

TEST(config, flags_and_errors)
{
    std::string msg;
    bool help;
    auto c = parse({"--port", "1234", "--threads=2", "--log-format", "json", "--max-queue-bytes", "1000"}, msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->port, 1234);
    EXPECT_EQ(c->threads, 2u);
    EXPECT_EQ(c->log_format, "json");
    EXPECT_EQ(c->max_queue_bytes, 1000u);
    EXPECT_FALSE(parse({"--port", "70000"}, msg, help));
    EXPECT_FALSE(parse({"--bogus"}, msg, help));
    EXPECT_NE(msg.find("--bogus"), std::string::npos);
    EXPECT_FALSE(parse({"--log-format", "xml"}, msg, help));
    EXPECT_FALSE(parse({"--port"}, msg, help));
    EXPECT_FALSE(parse({"--help"}, msg, help));
    EXPECT_TRUE(help);
    EXPECT_NE(msg.find("--max-frame-bytes"), std::string::npos);
}

TEST(config, overload_and_polling_flags)
{
    std::string msg;
    bool help;
    auto d = parse({}, msg, help);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->max_tick_stretch_pct, 400u);  // ticks thin out under overload by default
    EXPECT_EQ(d->busy_poll_us, 0u);            // and workers sleep at once
    auto c = parse({"--max-tick-stretch", "100", "--busy-poll-us=500"}, msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->max_tick_stretch_pct, 100u);
    EXPECT_EQ(c->busy_poll_us, 500u);
    EXPECT_FALSE(parse({"--busy-poll-us", "soon"}, msg, help));
    EXPECT_NE(msg.find("--busy-poll-us"), std::string::npos);
    EXPECT_FALSE(parse({"--max-tick-stretch", "-5"}, msg, help));
}
