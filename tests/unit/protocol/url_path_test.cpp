// Percent-decoding and path segments (src/protocol/url_path.hpp), used by /v1/... and
// /files/... (the fuzz target tests/fuzz/paths_fuzz.cpp compares them with a reference).
#include "protocol/url_path.hpp"

#include <gtest/gtest.h>

using lockstep::url_path::percent_decode;
using lockstep::url_path::split_segments;

TEST(UrlPath, PercentDecoding)
{
    EXPECT_EQ(percent_decode("a%2Fb%2fc"), "a/b/c");
    EXPECT_EQ(percent_decode("%00"), std::string(1, '\0'));
    EXPECT_EQ(percent_decode("a+b%20c"), "a+b c");  // '+' is not a space in a path
    EXPECT_EQ(percent_decode(""), "");
    for (auto bad : {"%", "%4", "a%4", "%zz", "%4g", "%%41"})
        EXPECT_FALSE(percent_decode(bad)) << bad;
}

TEST(UrlPath, Segments)
{
    std::vector<std::string> s;
    ASSERT_TRUE(split_segments("rooms/lobby%20one/join", s));
    EXPECT_EQ(s, (std::vector<std::string>{"rooms", "lobby one", "join"}));
    s.clear();
    ASSERT_TRUE(split_segments("rooms/", s));
    EXPECT_EQ(s, (std::vector<std::string>{"rooms"}));
    s.clear();
    ASSERT_TRUE(split_segments("a//b", s));
    EXPECT_EQ(s, (std::vector<std::string>{"a", "", "b"}));
    s.clear();
    ASSERT_TRUE(split_segments("", s));
    EXPECT_TRUE(s.empty());
    s.clear();
    EXPECT_FALSE(split_segments("rooms/%zz", s));
}
