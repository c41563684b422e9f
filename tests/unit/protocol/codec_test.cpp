#include "protocol/codec.hpp"

#include "support/test_peer.hpp"

#include <lockstep/protocol/constants.hpp>

#include <gtest/gtest.h>

using namespace lockstep;

TEST(codec, parses_actions_and_raw_args)
{
    std::vector<json_scan::member> scratch;
    codec::client_frame f;
    ASSERT_EQ(codec::parse_client_frame(R"({"id":"x","action":"SEND","args":[1,0,"p",3],"tags":{"a":1}})", f, scratch),
              codec::parse_result::ok);
    EXPECT_EQ(f.act, codec::action::send);
    EXPECT_EQ(f.args, R"([1,0,"p",3])");
    EXPECT_EQ(f.tags, R"({"a":1})");
    ASSERT_EQ(codec::parse_client_frame(R"({"action":"FOO"})", f, scratch), codec::parse_result::ok);
    EXPECT_EQ(f.act, codec::action::unknown);
    EXPECT_EQ(f.action_name, "FOO");
    EXPECT_EQ(codec::parse_client_frame("[1,2]", f, scratch), codec::parse_result::not_object);
    EXPECT_EQ(codec::parse_client_frame("\"str\"", f, scratch), codec::parse_result::not_object);
    EXPECT_EQ(codec::parse_client_frame("{nope", f, scratch), codec::parse_result::not_json);
    EXPECT_EQ(codec::parse_client_frame("", f, scratch), codec::parse_result::not_json);
}

TEST(codec, split_send_args_keeps_the_tail_verbatim)
{
    std::vector<std::string_view> scratch;
    std::string_view rest;
    ASSERT_TRUE(codec::split_send_args(R"([500, 0,"enc==" ,  7 ])", rest, scratch));
    EXPECT_EQ(rest, R"("enc==" ,  7)");
    EXPECT_FALSE(codec::split_send_args("[1,0]", rest, scratch));
    EXPECT_FALSE(codec::split_send_args("{}", rest, scratch));
    EXPECT_FALSE(codec::split_send_args("", rest, scratch));
}

TEST(codec, recv_frame_bytes)
{
    auto m = codec::make_recv("S1", 522, 4294967282u, R"("payload",0)");
    std::string expected_json = R"({"id":"S1","action":"RECV","args":[522,4294967282,"payload",0]})";
    auto wire = m->wire();
    ASSERT_EQ(wire.size(), expected_json.size() + 2);
    EXPECT_EQ(static_cast<unsigned char>(wire[0]), 0x81);  // FIN + text, unmasked
    EXPECT_EQ(static_cast<unsigned char>(wire[1]), expected_json.size());
    EXPECT_EQ(wire.substr(2), expected_json);
    EXPECT_EQ(m->element(), R"([522,4294967282,"payload",0])");
}

TEST(codec, frame_header_lengths)
{
    for (std::size_t n : {0u, 125u, 126u, 65535u, 65536u, 200000u}) {
        auto m = codec::make_simple("S", "INFO", "\"" + std::string(n, 'a') + "\"");
        auto frames = test::decode_frames(m->wire());
        ASSERT_EQ(frames.size(), 1u);
        EXPECT_EQ(frames[0], R"({"id":"S","action":"INFO","args":")" + std::string(n, 'a') + "\"}");
    }
}

TEST(codec, chunk_frames_never_split_utf8)
{
    std::string text;
    for (int i = 0; i < 100; ++i)
        text += "a\xE2\x82\xAC";  // 4 bytes per step
    auto wire = chunk_frames(text, 10);
    std::string joined;
    std::size_t p = 0;
    int frames = 0;
    while (p < wire.size()) {
        std::size_t len = static_cast<unsigned char>(wire[p + 1]);
        std::string payload = wire.substr(p + 2, len);
        p += 2 + len;
        ASSERT_EQ(payload.rfind("_CHUNK", 0), 0u);
        EXPECT_EQ(payload[6], frames == 0 ? '1' : '0');
        std::string slice = payload.substr(8);
        // Each slice starts on a character boundary.
        ASSERT_FALSE(slice.empty());
        EXPECT_NE(static_cast<unsigned char>(slice[0]) & 0xC0, 0x80);
        joined += slice;
        ++frames;
        if (payload[7] == '1') {
            EXPECT_EQ(p, wire.size());
        }
    }
    EXPECT_EQ(joined, text);
    EXPECT_GT(frames, 10);
}

TEST(codec, json_string_escaping)
{
    std::string out;
    codec::append_json_string(out, std::string("a\"b\\c\n\x01\0", 8));
    EXPECT_EQ(out, R"("a\"b\\c\n\u0001\u0000")");
}

TEST(protocol, seq_before_is_wrap_aware)
{
    using protocol::seq_before;
    EXPECT_TRUE(seq_before(1, 2));
    EXPECT_FALSE(seq_before(2, 1));
    EXPECT_FALSE(seq_before(5, 5));
    EXPECT_TRUE(seq_before(0xFFFFFFFFu, 0));
    EXPECT_TRUE(seq_before(0xFFFFFFF0u, 3));
    EXPECT_FALSE(seq_before(3, 0xFFFFFFF0u));
    EXPECT_FALSE(seq_before(0, 1u << 27));  // outside the comparison window
}
