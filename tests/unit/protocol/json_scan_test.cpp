#include "protocol/json_scan.hpp"

#include <gtest/gtest.h>

using namespace lockstep::json_scan;

TEST(json_scan, accepts_valid_values)
{
    for (auto s : {R"({})", R"( {"a":1} )", R"({"a":[1,2.5e-3,-0,true,false,null,"x\"y\\u00e9\n"],"b":{"c":{}}})",
                   R"([])", R"("s")", "0", "-12.5E+3", "null"})
        EXPECT_TRUE(validate(s)) << s;
}

TEST(json_scan, rejects_invalid_values)
{
    for (auto s : {"", "{", "}", R"({"a":})", R"({"a":1,})", R"([1,])", R"({a:1})", "01", "1.", "-", ".5", "tru",
                   R"("unterminated)", "\"bad \\x escape\"", "\"raw\ncontrol\"", R"({"a":1} x)", R"({"a":1}{})",
                   R"("\u12g4")", "[1 2]"})
        EXPECT_FALSE(validate(s)) << s;
}

TEST(json_scan, depth_is_bounded)
{
    std::string deep(max_depth + 5, '[');
    deep += std::string(max_depth + 5, ']');
    EXPECT_FALSE(validate(deep));
    std::string ok(10, '[');
    ok += std::string(10, ']');
    EXPECT_TRUE(validate(ok));
}

TEST(json_scan, object_members_point_into_the_input)
{
    std::string text = R"({"action":"SEND", "args" : [1, 0, "p", {"k":[2]}], "tags":null})";
    std::vector<member> m;
    ASSERT_TRUE(scan_object(text, m));
    ASSERT_EQ(m.size(), 3u);
    EXPECT_EQ(m[0].key, "action");
    EXPECT_EQ(m[0].value, "\"SEND\"");
    EXPECT_EQ(m[1].key, "args");
    EXPECT_EQ(m[1].value, R"([1, 0, "p", {"k":[2]}])");
    EXPECT_EQ(m[2].key, "tags");
    EXPECT_EQ(m[2].value, "null");
    // The views point into the input: the payload is never copied.
    EXPECT_EQ(m[1].value.data(), text.data() + text.find('['));
    std::string_view s;
    EXPECT_TRUE(simple_string(m[0].value, s));
    EXPECT_EQ(s, "SEND");
    EXPECT_FALSE(simple_string(R"("a\"b")", s));
    EXPECT_FALSE(scan_object("[1]", m));
}

TEST(json_scan, array_elements)
{
    std::vector<std::string_view> e;
    ASSERT_TRUE(scan_array(R"([ 1 ,"two",[3],{"4":4} ])", e));
    ASSERT_EQ(e.size(), 4u);
    EXPECT_EQ(e[0], "1");
    EXPECT_EQ(e[1], "\"two\"");
    EXPECT_EQ(e[2], "[3]");
    EXPECT_EQ(e[3], R"({"4":4})");
}
