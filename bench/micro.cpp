// Microbenchmarks of the hot path: codec, sequencer, fan-out.
#include "protocol/codec.hpp"
#include "protocol/json_scan.hpp"
#include "reflector/dispatch.hpp"
#include "reflector/session.hpp"
#include "store/journal.hpp"

#include <lockstep/version.hpp>

#include <benchmark/benchmark.h>

#include <malloc.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <vector>

using namespace lockstep;

namespace {

std::string
send_frame(std::size_t payload)
{
    return R"({"id":"eld2kQmjrGRe0f0Wklqh7CHlwF6snuSY9bHD5o8TEac","action":"SEND","args":[500,0,")" +
           std::string(payload, 'A') + R"(",3]})";
}

// Parse a client SEND frame: validate the whole frame, find action and args, split args.
void
bm_parse_send(benchmark::State& st)
{
    auto frame = send_frame(static_cast<std::size_t>(st.range(0)));
    std::vector<json_scan::member> members;
    std::vector<std::string_view> elems;
    for (auto _ : st) {
        codec::client_frame f;
        auto r = codec::parse_client_frame(frame, f, members);
        std::string_view rest;
        bool ok = codec::split_send_args(f.args, rest, elems);
        benchmark::DoNotOptimize(r);
        benchmark::DoNotOptimize(ok);
        benchmark::DoNotOptimize(rest);
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * frame.size()));
}
BENCHMARK(bm_parse_send)->Arg(120)->Arg(1024)->Arg(16384);

// Build one RECV frame (header + JSON) from the opaque payload.
void
bm_make_recv(benchmark::State& st)
{
    std::string rest = "\"" + std::string(static_cast<std::size_t>(st.range(0)), 'A') + "\",3";
    std::uint32_t seq = 0;
    for (auto _ : st) {
        auto m = codec::make_recv("eld2kQmjrGRe0f0Wklqh7CHlwF6snuSY9bHD5o8TEac", 12345, ++seq, rest);
        benchmark::DoNotOptimize(m);
    }
}
BENCHMARK(bm_make_recv)->Arg(120)->Arg(1024);

class null_peer final : public peer {
public:
    void deliver(out_ptr const& m) override { last = m; ++n; }
    bool backlogged() const noexcept override { return false; }
    void close(protocol::close_code, std::string_view) override {}
    std::string const& tag() const noexcept override { return tag_; }
    out_ptr last;
    std::uint64_t n = 0;

private:
    std::string tag_ = "null";
};

// One SEND through a session to N clients: parse-free part of the hot path (stamp,
// encode once, log, queue to every client).
void
bm_session_fanout(benchmark::State& st)
{
    spdlog::set_level(spdlog::level::warn);
    manual_clock clock;
    session_options opts;
    opts.log_max = 1u << 30;
    opts.requ_threshold = 1u << 30;
    session s("SESSION-ID-0123456789", clock, opts);
    std::vector<std::unique_ptr<null_peer>> peers;
    for (int i = 0; i < st.range(0); ++i) {
        peers.push_back(std::make_unique<null_peer>());
        s.join(*peers.back(), R"({"version":1,"apiKey":"x","user":"v)" + std::to_string(i) + R"(","ticks":{"tick":50}})");
    }
    std::string args = R"([0,0,")" + std::string(120, 'A') + R"(",3])";
    std::int64_t i = 0;
    for (auto _ : st) {
        s.send(*peers[0], args, {});
        // Keep the log from growing without bound: a snapshot every 10k events.
        if (++i % 10000 == 0)
            s.snap(*peers[0], R"({"time":)" + std::to_string(s.current_time_ms()) + R"(,"seq":)" +
                                  std::to_string(s.seq()) + R"(,"url":"u"})");
        clock.advance_us(1);
    }
    st.counters["deliveries/s"] = benchmark::Counter(static_cast<double>(st.iterations() * st.range(0)), benchmark::Counter::kIsRate);
}
BENCHMARK(bm_session_fanout)->Arg(1)->Arg(20)->Arg(50)->Arg(200);

// One SEND frame through the dispatch (parse, membership, rate limit, stamp, fan-out to
// 20 members), with the per-connection limits on (Arg 1) and off (Arg 0): what the
// membership check and the token bucket add per message.
class bench_host final : public session_host {
public:
    manual_clock clock;
    session_options opts;
    dispatch_limits lim;
    std::unique_ptr<session> s;
    session* find_session(std::string const&) override { return s.get(); }
    session&
    session_for(std::string const& id) override
    {
        if (!s)
            s = std::make_unique<session>(id, clock, opts);
        return *s;
    }
    void touched(session&) override {}
    void seat_joined(std::string const&, std::string const&, std::string const&) override {}
    void seat_left(std::string const&, bool, std::string const&) override {}
    dispatch_limits const& limits() const noexcept override { return lim; }
    std::int64_t now_us() const noexcept override { return clock.now_us(); }
};

void
bm_dispatch_send(benchmark::State& st)
{
    spdlog::set_level(spdlog::level::warn);
    bench_host host;
    host.opts.log_max = 1u << 30;
    host.opts.requ_threshold = 1u << 30;
    if (st.range(0) == 0) {
        host.lim.message_rate = 0;
        host.lim.max_join_bytes = 0;
        host.lim.max_clients_per_session = 0;
    } else {
        host.lim.message_rate = 1000000000;  // on, never refusing: the check is what is measured
        host.lim.message_burst = 1000000000;
    }
    std::vector<std::unique_ptr<null_peer>> peers(20);
    std::vector<membership> members(20);
    for (std::size_t i = 0; i < peers.size(); ++i) {
        peers[i] = std::make_unique<null_peer>();
        members[i].session_id = "eld2kQmjrGRe0f0Wklqh7CHlwF6snuSY9bHD5o8TEac";
        dispatch(host, members[i], *peers[i],
                 R"({"action":"JOIN","args":{"version":1,"apiKey":"x","user":"v)" + std::to_string(i) +
                     R"(","ticks":{"tick":50}}})");
    }
    auto frame = send_frame(120);
    std::int64_t i = 0;
    for (auto _ : st) {
        dispatch(host, members[0], *peers[0], frame);
        if (++i % 10000 == 0)
            host.s->snap(*peers[0], R"({"time":)" + std::to_string(host.s->current_time_ms()) + R"(,"seq":)" +
                                        std::to_string(host.s->seq()) + R"(,"url":"u"})");
        host.clock.advance_us(1);
    }
}
BENCHMARK(bm_dispatch_send)->Arg(0)->Arg(1);

// Heap bytes per logged event (docs/operations.md, "Memory per logged event"): a session
// with a 43-character id logs 10,000 events whose RECV is about 200 bytes on the wire.
void
bm_log_memory(benchmark::State& st)
{
    spdlog::set_level(spdlog::level::warn);
    constexpr int events = 10000;
    double per_event = 0, wire = 0;
    for (auto _ : st) {
        manual_clock clock;
        session_options opts;
        auto s = std::make_unique<session>("eld2kQmjrGRe0f0Wklqh7CHlwF6snuSY9bHD5o8TEac", clock, opts);
        null_peer p;
        s->join(p, R"({"version":1,"apiKey":"x","ticks":{"tick":50}})");  // no user: no RECV kept by the peer
        std::string args = R"([0,0,")" + std::string(static_cast<std::size_t>(st.range(0)), 'A') + R"(",3])";
        s->send(p, args, {});
        auto before = mallinfo2().uordblks;
        for (int i = 0; i < events; ++i)
            s->send(p, args, {});
        auto after = mallinfo2().uordblks;
        per_event = static_cast<double>(after - before) / events;
        wire = static_cast<double>(s->log_bytes()) / static_cast<double>(s->log_size()) + 69;  // + id, envelope, header
        benchmark::DoNotOptimize(s);
    }
    st.counters["heap_bytes/event"] = per_event;
    st.counters["wire_bytes/event"] = wire;
}
BENCHMARK(bm_log_memory)->Arg(110)->Iterations(1);

void
bm_validate_json(benchmark::State& st)
{
    auto frame = send_frame(1024);
    for (auto _ : st)
        benchmark::DoNotOptimize(json_scan::validate(frame));
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * frame.size()));
}
BENCHMARK(bm_validate_json);

// ---- the session journal (docs/durability.md) ----

/// A journal dir with `sessions` stored sessions of `events` events (120-byte payloads),
/// written as segment files directly (no fsync: only the reading is measured).
std::string
stored_journal(std::string const& name, int sessions, int events)
{
    auto dir = std::filesystem::temp_directory_path() / ("lockstep-bench-journal-" + name);
    std::filesystem::remove_all(dir);
    manual_clock clock;
    session_options opts;
    for (int k = 0; k < sessions; ++k) {
        session s("S" + std::to_string(k), clock, opts);
        null_peer p;
        s.join(p, R"({"version":1,"apiKey":"x","user":"u","ticks":{"tick":50}})");
        auto send = "[0,0,\"" + std::string(120, 'x') + "\",3]";
        for (int i = 0; i < events; ++i)
            s.send(p, send, {});
        auto h = s.header();
        auto bytes = journal::file_header();
        journal::append_header(bytes, h);
        s.each_logged_after(h.seq - static_cast<std::uint32_t>(s.log_size()),
                            [&](std::uint32_t q, std::string_view e) { journal::append_event(bytes, q, e); });
        journal::append_base(bytes);
        auto sdir = dir / journal::encode_id(h.id);
        std::filesystem::create_directories(sdir);
        std::ofstream(sdir / "0000000000000001.lsj", std::ios::binary) << bytes;
    }
    return dir.string();
}

// Resume of one session with a 10,000-event journal: read, check, rebuild every RECV.
void
bm_journal_resume(benchmark::State& st)
{
    spdlog::set_level(spdlog::level::warn);
    auto dir = stored_journal("resume", 1, static_cast<int>(st.range(0)));
    journal::journal_writer w({dir, 1000, {}});
    manual_clock clock;
    session_options opts;
    for (auto _ : st) {
        std::error_code ec;
        auto stored = w.load("S0", ec);
        session s("S0", clock, opts);
        if (!stored || !s.restore(stored->header, stored->events, stored->resume_time_ms))
            st.SkipWithError("resume failed");
        benchmark::DoNotOptimize(s.log_size());
    }
    std::filesystem::remove_all(dir);
}
BENCHMARK(bm_journal_resume)->Arg(10000);

// Start-up with N stored sessions: the journal opens without reading them (and the
// first JOIN reads only its own).
void
bm_journal_startup(benchmark::State& st)
{
    spdlog::set_level(spdlog::level::warn);
    auto dir = stored_journal("startup" + std::to_string(st.range(0)), static_cast<int>(st.range(0)), 2);
    for (auto _ : st) {
        journal::journal_writer w({dir, 1000, {}});
        std::error_code ec;
        benchmark::DoNotOptimize(w.load("S0", ec));
    }
    std::filesystem::remove_all(dir);
}
BENCHMARK(bm_journal_startup)->Arg(10)->Arg(10000);

// One loop turn's journal write for a session: stage an event, write it (fsync elsewhere).
void
bm_journal_append(benchmark::State& st)
{
    auto dir = (std::filesystem::temp_directory_path() / "lockstep-bench-journal-append").string();
    std::filesystem::remove_all(dir);
    {
        journal::journal_writer w({dir, 1000, {}});
        session_header h;
        h.id = "A";
        h.timeline = "t";
        h.tick_ms = 50;
        w.begin_base(h);
        w.end_base("A");
        w.flush();
        auto element = "[100,1,\"" + std::string(120, 'x') + "\",3]";
        std::uint32_t seq = 0;
        for (auto _ : st) {
            w.event("A", ++seq, element);
            benchmark::DoNotOptimize(w.flush());
        }
    }
    std::filesystem::remove_all(dir);
}
BENCHMARK(bm_journal_append);

}  // namespace

int
main(int argc, char** argv)
{
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--version") {
            std::printf("lockstep-microbench %s\n", lockstep::version);
            return 0;
        }
        if (a == "--help")  // Google Benchmark's own help follows
            std::puts("lockstep-microbench: microbenchmarks of the codec and session logic\n"
                      "  --version  print the version and exit\n");
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 2;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
