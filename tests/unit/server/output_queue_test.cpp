#include "server/output_queue.hpp"

#include "protocol/codec.hpp"
#include "support/test_peer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using lockstep::out_ptr;
using lockstep::output_queue;

namespace {

/// A complete text frame carrying `text`.
std::string
frame(std::string const& text)
{
    std::string f;
    lockstep::append_frame_header(f, text.size());
    return f + text;
}

/// Everything the queue would write now, as one string.
std::string
unsent(output_queue const& q)
{
    iovec iov[64];
    auto n = q.gather(iov, 64);
    std::string s;
    for (std::size_t i = 0; i < n; ++i)
        s.append(static_cast<char const*>(iov[i].iov_base), iov[i].iov_len);
    return s;
}

/// Takes up to `n` bytes as a socket would, returns them.
std::string
send(output_queue& q, std::size_t n)
{
    auto s = unsent(q).substr(0, n);
    q.consume(s.size());
    return s;
}

out_ptr
sync_message(std::size_t payload)
{
    return lockstep::codec::make_simple("S", "SYNC", "\"" + std::string(payload, 's') + "\"");
}

}  // namespace

TEST(output_queue, frames_and_shared_syncs_go_out_in_order_and_syncs_are_not_copied)
{
    output_queue q;
    auto sync = sync_message(1000);
    q.append(frame("pong"));
    q.append_shared(sync);
    q.append(frame("recv1"));
    q.append(frame("recv2"));
    std::string want = frame("pong") + std::string(sync->wire()) + frame("recv1") + frame("recv2");
    EXPECT_EQ(q.pending(), want.size());
    EXPECT_EQ(q.shared_pending(), sync->wire().size());
    iovec iov[8];
    ASSERT_EQ(q.gather(iov, 8), 3u);  // frames before, the SYNC itself, frames after
    EXPECT_EQ(iov[1].iov_base, static_cast<void const*>(sync->wire().data()));
    EXPECT_EQ(sync.use_count(), 2);  // held by the queue, not copied
    // Written in odd pieces, it comes out whole and in order.
    std::string out;
    while (q.pending() > 0)
        out += send(q, 7);
    EXPECT_EQ(out, want);
    EXPECT_EQ(q.shared_pending(), 0u);
    EXPECT_EQ(sync.use_count(), 1);  // released once written
}

TEST(output_queue, dropping_keeps_the_rest_of_a_frame_already_begun)
{
    output_queue q;
    q.append(frame("first-frame"));
    q.append(frame("second"));
    auto taken = send(q, 5);  // the socket took part of the first frame
    EXPECT_EQ(q.drop_unsent(), frame("second").size());
    EXPECT_EQ(taken + unsent(q), frame("first-frame"));

    // The same when the frame begun is a shared SYNC: the rest of it stays, nothing after.
    output_queue r;
    auto sync = sync_message(5000);
    r.append_shared(sync);
    r.append(frame("after"));
    auto head = send(r, 100);
    r.drop_unsent();
    EXPECT_EQ(head + unsent(r), std::string(sync->wire()));
    EXPECT_EQ(r.shared_pending(), sync->wire().size() - 100);
    // Nothing begun: everything goes.
    output_queue e;
    e.append(frame("x"));
    e.append_shared(sync);
    EXPECT_EQ(e.drop_unsent(), frame("x").size() + sync->wire().size());
    EXPECT_EQ(e.pending(), 0u);
    EXPECT_EQ(sync.use_count(), 2);  // only r still holds it
}

TEST(output_queue, a_long_partly_sent_buffer_is_compacted_on_frame_boundaries)
{
    output_queue q;
    std::string all;
    for (int i = 0; i < 400; ++i) {  // ~400 KB in one buffer
        auto f = frame(std::string(1000, static_cast<char>('a' + i % 26)));
        q.append(f);
        all += f;
    }
    std::string out;
    out += send(q, 150000);  // past the compaction threshold, mid-frame
    q.append(frame("tail"));
    all += frame("tail");
    out += send(q, 3);
    q.drop_unsent();  // the frame begun must still be whole
    out += unsent(q);
    // What went out is a prefix of the stream that ends on a frame boundary.
    ASSERT_LE(out.size(), all.size());
    EXPECT_EQ(out, all.substr(0, out.size()));
    auto frames = lockstep::test::decode_frames(out);
    EXPECT_EQ(frames.size(), (out.size()) / frame(std::string(1000, 'a')).size());
}
