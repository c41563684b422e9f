// Microbenchmarks of the hot path: codec, sequencer, fan-out.
#include "protocol/codec.hpp"
#include "protocol/json_scan.hpp"
#include "reflector/session.hpp"

#include <lockstep/version.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
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
            s.snap(*peers[0], R"({"time":)" + std::to_string(i) + R"(,"seq":)" + std::to_string(s.seq()) + R"(,"url":"u"})");
        clock.advance_us(1);
    }
    st.counters["deliveries/s"] = benchmark::Counter(static_cast<double>(st.iterations() * st.range(0)), benchmark::Counter::kIsRate);
}
BENCHMARK(bm_session_fanout)->Arg(1)->Arg(20)->Arg(50)->Arg(200);

void
bm_validate_json(benchmark::State& st)
{
    auto frame = send_frame(1024);
    for (auto _ : st)
        benchmark::DoNotOptimize(json_scan::validate(frame));
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * frame.size()));
}
BENCHMARK(bm_validate_json);

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
