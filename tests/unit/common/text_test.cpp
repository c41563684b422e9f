// valid_utf8: the gate in front of every name that reaches a JSON document.
#include "common/text.hpp"

#include <gtest/gtest.h>

using lockstep::valid_utf8;
using namespace std::string_literals;

TEST(text, accepts_well_formed_utf8)
{
    EXPECT_TRUE(valid_utf8(""));
    EXPECT_TRUE(valid_utf8("plain ascii /~"));
    EXPECT_TRUE(valid_utf8("\xC3\xA9t\xC3\xA9"));            // 2-byte
    EXPECT_TRUE(valid_utf8("\xE2\x82\xAC"));                 // U+20AC, 3-byte
    EXPECT_TRUE(valid_utf8("\xEF\xBF\xBF"));                 // U+FFFF
    EXPECT_TRUE(valid_utf8("\xF0\x9F\x98\x80"));             // U+1F600, 4-byte
    EXPECT_TRUE(valid_utf8("\xF4\x8F\xBF\xBF"));             // U+10FFFF, the last code point
    EXPECT_TRUE(valid_utf8("a\0b"s));                        // NUL is UTF-8 (callers refuse it)
}

TEST(text, refuses_every_kind_of_malformed_utf8)
{
    for (auto const& bad : {"\xFF"s, "\xFE"s, "\x80"s, "a\xBF"s,  // stray bytes
                            "\xC0\xAF"s, "\xC1\xBF"s,             // overlong 2-byte
                            "\xE0\x80\xAF"s, "\xE0\x9F\xBF"s,     // overlong 3-byte
                            "\xF0\x80\x80\xAF"s, "\xF0\x8F\xBF\xBF"s,  // overlong 4-byte
                            "\xED\xA0\x80"s, "\xED\xBF\xBF"s,     // UTF-16 surrogates
                            "\xF4\x90\x80\x80"s, "\xF5\x80\x80\x80"s,  // above U+10FFFF
                            "\xC3"s, "\xE2\x82"s, "\xF0\x9F\x98"s,     // truncated at the end
                            "\xC3("s, "\xE2\x28\xA1"s, "\xF0\x9F\x28\x80"s})  // bad continuation
        EXPECT_FALSE(valid_utf8(bad)) << testing::PrintToString(bad);
}

TEST(text, safe_dump_never_throws)
{
    nlohmann::json j{{"id", "\xFF\xFE"}};
    EXPECT_THROW((void)j.dump(), nlohmann::json::type_error);
    EXPECT_EQ(lockstep::safe_dump(j), "{\"id\":\"\xEF\xBF\xBD\xEF\xBF\xBD\"}");
}
