// Frame reading and _CHUNK joining (src/protocol/ws_frame.hpp): the code the SDK uses to
// put a reflector message over 1,000,000 bytes back together, checked against frames the
// reflector's own encoder (chunk_frames) produced.
#include "protocol/frame.hpp"
#include "protocol/ws_frame.hpp"

#include <lockstep/protocol/constants.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

using lockstep::protocol::chunk_assembler;
using lockstep::protocol::frame_view;
using lockstep::protocol::parse_frame;

namespace {

/// The text payloads of concatenated server frames.
std::vector<std::string>
texts_of(std::string_view wire)
{
    std::vector<std::string> out;
    frame_view f;
    while (auto used = parse_frame(wire, f)) {
        out.emplace_back(f.payload);
        wire.remove_prefix(used);
    }
    EXPECT_TRUE(wire.empty()) << wire.size() << " bytes left that are not a whole frame";
    return out;
}

/// A JSON-ish message of `n` bytes with multi-byte UTF-8 characters throughout, so the
/// encoder must move split points off continuation bytes.
std::string
message_of(std::size_t n)
{
    std::string s = "{\"t\":\"";
    while (s.size() + 4 < n)
        s += (s.size() % 7 == 0) ? "\xE2\x82\xAC" : "a";  // U+20AC
    s += "\"}";
    return s;
}

}  // namespace

TEST(WsFrame, ParsesEveryLengthFormAndWaitsForWholeFrames)
{
    for (std::size_t n : {0, 1, 125, 126, 127, 65535, 65536, 70000}) {
        std::string payload(n, 'x');
        std::string wire;
        lockstep::append_frame_header(wire, n);
        wire += payload;
        for (std::size_t cut = 0; cut < wire.size(); cut += std::max<std::size_t>(1, wire.size() / 7)) {
            frame_view f;
            EXPECT_EQ(parse_frame(std::string_view(wire).substr(0, cut), f), 0u) << n << " cut at " << cut;
        }
        frame_view f;
        ASSERT_EQ(parse_frame(wire, f), wire.size()) << n;
        EXPECT_TRUE(f.fin);
        EXPECT_EQ(f.opcode, 1);
        EXPECT_FALSE(f.masked);
        EXPECT_EQ(f.payload, payload);
    }
}

TEST(WsFrame, UnmasksClientFrames)
{
    std::string wire = {static_cast<char>(0x81), static_cast<char>(0x85), 1, 2, 3, 4};
    std::string text = "hello";
    for (std::size_t i = 0; i < text.size(); ++i)
        wire.push_back(static_cast<char>(text[i] ^ (1 + i % 4)));
    std::string buffer = wire + "trailing";  // the view points into it
    frame_view f;
    ASSERT_EQ(parse_frame(buffer, f), wire.size());
    EXPECT_TRUE(f.masked);
    EXPECT_EQ(lockstep::protocol::unmasked_payload(f), "hello");
    EXPECT_EQ(lockstep::protocol::close_code_of(std::string("\x10\x05", 2)), 4101);
    EXPECT_EQ(lockstep::protocol::close_code_of(""), 1005);
}

TEST(ChunkAssembler, JoinsWhatTheReflectorSplitsAtEverySize)
{
    // Sizes around the chunk size and its multiples, with small chunks to keep it quick.
    for (std::size_t chunk : {std::size_t{16}, std::size_t{17}, std::size_t{64}}) {
        for (std::size_t n : {chunk - 1, chunk, chunk + 1, 2 * chunk, 3 * chunk + 5, std::size_t{1000}}) {
            auto msg = message_of(n);
            auto parts = texts_of(lockstep::chunk_frames(msg, chunk));
            ASSERT_GE(parts.size(), msg.size() > chunk ? 2u : 1u);
            chunk_assembler a;
            std::string_view out;
            for (std::size_t i = 0; i + 1 < parts.size(); ++i)
                ASSERT_EQ(a.feed(parts[i], out), chunk_assembler::status::partial) << n << "/" << chunk;
            ASSERT_EQ(a.feed(parts.back(), out), chunk_assembler::status::complete);
            EXPECT_EQ(out, msg) << n << "/" << chunk;
            EXPECT_FALSE(a.in_progress());
        }
    }
}

TEST(ChunkAssembler, AMessageOverTheThresholdRoundTrips)
{
    auto msg = message_of(lockstep::protocol::chunk_threshold * 2 + 12345);
    auto parts = texts_of(lockstep::chunk_frames(msg, lockstep::protocol::chunk_threshold));
    ASSERT_EQ(parts.size(), 3u);
    chunk_assembler a;
    std::string_view out;
    EXPECT_EQ(a.feed(parts[0], out), chunk_assembler::status::partial);
    EXPECT_EQ(a.feed(parts[1], out), chunk_assembler::status::partial);
    ASSERT_EQ(a.feed(parts[2], out), chunk_assembler::status::complete);
    EXPECT_EQ(out.size(), msg.size());
    EXPECT_TRUE(out == msg);
}

TEST(ChunkAssembler, OtherMessagesPassThroughBetweenChunks)
{
    auto msg = message_of(100);
    auto parts = texts_of(lockstep::chunk_frames(msg, 30));
    ASSERT_GE(parts.size(), 3u);
    chunk_assembler a;
    std::string_view out;
    std::vector<std::string> got;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        std::string tick = R"({"action":"TICK","args":)" + std::to_string(i) + "}";
        ASSERT_EQ(a.feed(tick, out), chunk_assembler::status::complete);
        got.emplace_back(out);
        auto st = a.feed(parts[i], out);
        if (st == chunk_assembler::status::complete)
            got.emplace_back(out);
    }
    ASSERT_EQ(got.size(), parts.size() + 1);
    EXPECT_EQ(got.back(), msg);
    EXPECT_EQ(got[1], R"({"action":"TICK","args":1})");
}

TEST(ChunkAssembler, MalformedChunksAreRefusedAndDropThePartialMessage)
{
    std::string_view out;
    {
        chunk_assembler a;
        EXPECT_EQ(a.feed("_CHUNK1", out), chunk_assembler::status::malformed);  // no flags
        EXPECT_EQ(a.feed("_CHUNK", out), chunk_assembler::status::malformed);
        EXPECT_EQ(a.feed("_CHUNKx1abc", out), chunk_assembler::status::malformed);
        EXPECT_EQ(a.feed("_CHUNK12abc", out), chunk_assembler::status::malformed);
    }
    {
        chunk_assembler a;  // a continuation with no first chunk
        EXPECT_EQ(a.feed("_CHUNK01tail", out), chunk_assembler::status::malformed);
        EXPECT_EQ(a.feed("_CHUNK00mid", out), chunk_assembler::status::malformed);
    }
    {
        chunk_assembler a;  // a malformed chunk in the middle drops what came before
        EXPECT_EQ(a.feed("_CHUNK10[1,", out), chunk_assembler::status::partial);
        EXPECT_EQ(a.feed("_CHUNK0", out), chunk_assembler::status::malformed);
        EXPECT_FALSE(a.in_progress());
        EXPECT_EQ(a.feed("_CHUNK012]", out), chunk_assembler::status::malformed);
        EXPECT_EQ(a.feed("_CHUNK10[3,", out), chunk_assembler::status::partial);
        ASSERT_EQ(a.feed("_CHUNK014]", out), chunk_assembler::status::complete);
        EXPECT_EQ(out, "[3,4]");
    }
    {
        chunk_assembler a(8);  // over the size bound
        EXPECT_EQ(a.feed("_CHUNK1012345", out), chunk_assembler::status::partial);
        EXPECT_EQ(a.feed("_CHUNK016789", out), chunk_assembler::status::malformed);
        EXPECT_FALSE(a.in_progress());
    }
    {
        chunk_assembler a;  // a new first chunk replaces an unfinished message
        EXPECT_EQ(a.feed("_CHUNK10old", out), chunk_assembler::status::partial);
        ASSERT_EQ(a.feed("_CHUNK11new", out), chunk_assembler::status::complete);
        EXPECT_EQ(out, "new");
    }
}

TEST(CloseFrame, IsAnUnmaskedCloseWithItsCodeAndAReasonCutTo123Bytes)
{
    frame_view f;
    auto frame = lockstep::close_frame(1001, "session moved to another reflector");
    ASSERT_EQ(parse_frame(frame, f), frame.size());
    EXPECT_TRUE(f.fin);
    EXPECT_EQ(f.opcode, 0x8);
    EXPECT_FALSE(f.masked);
    EXPECT_EQ(lockstep::protocol::close_code_of(f.payload), 1001);
    EXPECT_EQ(f.payload.substr(2), "session moved to another reflector");

    auto long_one = lockstep::close_frame(4003, std::string(300, 'x'));
    ASSERT_EQ(parse_frame(long_one, f), long_one.size());
    EXPECT_EQ(f.payload.size(), 125u);  // the most a control frame may carry
    EXPECT_EQ(lockstep::protocol::close_code_of(f.payload), 4003);
}
