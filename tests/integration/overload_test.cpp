// The overload controller in a real worker (server.cpp, worker::start_load_sampling):
// one worker thread is saturated with real fan-out (a sender that never pauses, a
// session of many members), and the controller must react as docs/operations.md says:
// write coalescing rises to --max-coalesce-us, then tick intervals are stretched
// (lockstep_tick_stretch_percent > 100, never above --max-tick-stretch); when the load
// stops both come back (coalescing 0, stretch 100). The session loses nothing on the way.
//
// The worker's busy ratio is its own thread's CPU time over wall time, so this test must
// not share the machine's cores with other tests: it is registered RUN_SERIAL.
#include "support/fixture.hpp"
#include "support/metrics.hpp"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>

#include <cstdio>
#include <random>

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

namespace {

struct load_state {
    double stretch = 0;
    double coalesce_s = 0;
};

load_state
sample(std::uint16_t port)
{
    auto r = http_request(port, "GET", "/metrics");
    if (r.status != 200)
        return {-1, -1};
    auto m = metrics::parse(r.body);
    return {m.samples["lockstep_tick_stretch_percent"], m.samples["lockstep_write_coalesce_seconds"]};
}

/// `n` SEND frames, masked as a client must, in one buffer: one send(2) carries them all.
std::string
masked_sends(int n, std::string const& payload)
{
    std::mt19937 rng{7};
    std::string out;
    for (int i = 0; i < n; ++i) {
        auto text = send_msg(payload).dump();
        out.push_back(static_cast<char>(0x81));
        if (text.size() < 126) {
            out.push_back(static_cast<char>(0x80 | text.size()));
        } else {
            out.push_back(static_cast<char>(0x80 | 126));
            out.push_back(static_cast<char>(text.size() >> 8));
            out.push_back(static_cast<char>(text.size() & 0xFF));
        }
        char mask[4];
        for (auto& m : mask)
            m = static_cast<char>(rng());
        out.append(mask, 4);
        for (std::size_t k = 0; k < text.size(); ++k)
            out.push_back(static_cast<char>(text[k] ^ mask[k % 4]));
    }
    return out;
}

/// Sends `bytes` on `fd` until `stop`; each wait for the socket is bounded (100 ms) so
/// the thread always sees `stop`. Returns the number of whole buffers sent.
std::uint64_t
pump(int fd, std::string const& bytes, std::atomic<bool> const& stop)
{
    std::uint64_t buffers = 0;
    std::size_t off = 0;
    while (!stop.load()) {
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, 100) <= 0)
            continue;
        auto n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            break;
        }
        off += static_cast<std::size_t>(n);
        if (off == bytes.size()) {
            off = 0;
            ++buffers;
        }
    }
    // Finish the frame in progress so the stream stays well formed.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (off != 0 && off < bytes.size() && std::chrono::steady_clock::now() < deadline) {
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, 100) <= 0)
            continue;
        auto n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
            off += static_cast<std::size_t>(n);
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
            break;
    }
    return buffers + (off == bytes.size() ? 1 : 0);
}

/// Reads every member's socket and throws the bytes away, until `stop`.
void
discard(std::vector<std::unique_ptr<ws_client>> const& members, std::atomic<bool> const& stop)
{
    std::vector<pollfd> fds;
    for (auto const& m : members)
        fds.push_back({m->fd(), POLLIN, 0});
    std::vector<char> buf(256 * 1024);
    while (!stop.load()) {
        if (::poll(fds.data(), fds.size(), 100) <= 0)
            continue;
        for (auto& p : fds)
            if (p.revents & POLLIN)
                (void)::recv(p.fd, buf.data(), buf.size(), MSG_DONTWAIT);
    }
}

}  // namespace

TEST(overload, a_saturated_worker_coalesces_then_stretches_ticks_and_recovers_when_the_load_ends)
{
    auto c = test_config();
    c.threads = 1;                       // one real worker: all the load lands on it
    c.max_coalesce_us = 2000;            // reached after two busy samples (1 ms per 100 ms)
    c.max_tick_stretch_pct = 300;
    c.max_message_rate = 1'000'000;      // the sender is the load, not a flood to refuse
    c.max_message_burst = 1'000'000;
    c.max_queue_bytes = 256u << 20;      // members that fall behind are not closed (1013)
    c.log_max = 10'000'000;              // no snapshots here: the log must not refuse the sender
    c.log_max_bytes = 0;
    running_server srv(c);

    auto idle = sample(srv.port());
    ASSERT_EQ(idle.stretch, 100) << "an idle worker must not stretch ticks";
    ASSERT_EQ(idle.coalesce_s, 0) << "an idle worker must not coalesce writes";

    // The loaded session: 60 members; each event is written to all of them.
    constexpr int members_n = 60;
    std::vector<std::unique_ptr<ws_client>> members;
    for (int i = 0; i < members_n; ++i) {
        members.push_back(std::make_unique<ws_client>(srv.port(), "/LOAD"));
        members.back()->send_json(join_msg("m" + std::to_string(i)));
        ASSERT_TRUE(members.back()->recv_action("SYNC", 10s)) << "member " << i << " got no SYNC";
    }
    ws_client sender(srv.port(), "/LOAD");
    sender.send_json(join_msg("sender"));
    ASSERT_TRUE(sender.recv_action("SYNC", 10s));

    std::atomic<bool> stop{false};
    std::thread reader([&] { discard(members, stop); });
    std::uint64_t sent_buffers = 0;
    auto const batch = masked_sends(200, std::string(200, 'x'));
    std::thread writer([&] { sent_buffers = pump(sender.fd(), batch, stop); });

    // Bounded generously: the controller needs about 0.2 s of saturation to reach the
    // coalescing maximum and 0.1 s more per stretch step; a busy CI machine under ASan
    // gets 30 s.
    double peak_stretch = 0, peak_coalesce = 0;
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
        auto s = sample(srv.port());
        peak_stretch = std::max(peak_stretch, s.stretch);
        peak_coalesce = std::max(peak_coalesce, s.coalesce_s);
        if (peak_stretch > 100)
            break;
        std::this_thread::sleep_for(100ms);
    }
    stop = true;
    writer.join();
    reader.join();
    EXPECT_GT(sent_buffers, 0u);
    std::printf("overload: peak stretch %.0f %%, peak coalescing %.4f s, %llu buffers of 200 events sent\n",
                peak_stretch, peak_coalesce, static_cast<unsigned long long>(sent_buffers));
    EXPECT_DOUBLE_EQ(peak_coalesce, 0.002) << "coalescing must reach --max-coalesce-us before ticks are stretched";
    EXPECT_GT(peak_stretch, 100) << "a saturated worker must stretch its ticks";
    EXPECT_LE(peak_stretch, 300) << "never beyond --max-tick-stretch";

    // The load is gone: the controller gives the stretch and the coalescing back.
    load_state after{};
    deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
        after = sample(srv.port());
        if (after.stretch == 100 && after.coalesce_s == 0)
            break;
        std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(after.stretch, 100) << "ticks must return to their requested interval";
    EXPECT_EQ(after.coalesce_s, 0) << "an idle worker writes at once again";

    // The session kept working through it: a new member joins and receives every event
    // after its SYNC, seq by seq with no gap, up to a marker sent after the load.
    ws_client late(srv.port(), "/LOAD");
    late.send_json(join_msg("late"));
    auto sync = late.recv_action("SYNC", 20s);
    ASSERT_TRUE(sync);
    auto last = (*sync)["args"]["seq"].get<std::uint32_t>();
    sender.send_json(send_msg("after-the-load"));
    bool marker = false;
    auto until = std::chrono::steady_clock::now() + 30s;
    while (!marker && std::chrono::steady_clock::now() < until) {
        auto got = late.recv_action("RECV", 20s);
        ASSERT_TRUE(got) << "the session stopped reflecting after the overload (last seq " << last << ")";
        auto seq = (*got)["args"][1].get<std::uint32_t>();
        ASSERT_EQ(seq, last + 1) << "a gap or a duplicate in the session's sequence";
        last = seq;
        marker = (*got)["args"][2] == "after-the-load";
    }
    EXPECT_TRUE(marker) << "the marker sent after the load never arrived";
}
