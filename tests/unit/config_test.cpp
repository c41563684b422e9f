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
