// The SDK's safety nets, each made to fire: a replica that diverges is reported, a
// snapshot that is corrupt or sealed with another key ends the join with the matching
// error, a close code >= 4100 ends the session without a reconnect, a restarted
// reflector makes every replica rebuild (on_rebuild), and reconnect attempts back off.
// Real lockstep-reflector processes on loopback, except where a reflector would have to
// misbehave on purpose (support/scripted_server.hpp).
#include <lockstep/client/session.hpp>
#include "support/frames.hpp"
#include "support/process.hpp"
#include "support/scripted_server.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace lc = lockstep::client;
using lockstep::test::reflector_process;

namespace {

// Bounds below are far above what the awaited event needs on an idle machine (tens of
// milliseconds to a second of model time): they only cut off a test that is stuck, on a
// busy 2-core CI machine running under ASan.
constexpr auto stuck = 60s;

// Deterministic per process, not per replica: every replica in this process draws from
// one counter, so two replicas given the same events end in different states. The kind
// of bug (a global, a clock, an address) the vote exists to catch.
std::atomic<int> shared_counter{0};

class unstable final : public lc::model {
public:
    void init(json const&) override { subscribe("u", "bump", &unstable::bump); }
    void bump(json const&) { value_ += ++shared_counter; }
    void save(json& s) const override { s["value"] = value_; }
    void load(json const& s) override { value_ = s.at("value").get<int>(); }

private:
    int value_ = 0;
};

class tally final : public lc::model {
public:
    void init(json const&) override { subscribe("t", "add", &tally::add); }
    void add(json const& v) { sum_ += v.get<int>(); }
    void save(json& s) const override { s["sum"] = sum_; }
    void load(json const& s) override { sum_ = s.at("sum").get<int>(); }
    int sum() const { return sum_; }

private:
    int sum_ = 0;
};

lc::model_registry const&
models()
{
    static lc::model_registry r = [] {
        lc::model_registry m;
        m.add<unstable>("unstable").method("bump", &unstable::bump);
        m.add<tally>("tally").method("add", &tally::add);
        return m;
    }();
    return r;
}

lc::join_options
options(std::string const& reflector, std::string const& name, std::string const& root)
{
    lc::join_options o;
    o.reflector = reflector;
    o.app_id = "io.lockstep.safety";
    o.session_name = name;
    o.models = &models();
    o.root_model = root;
    o.join_timeout = 30s;
    return o;
}

std::unique_ptr<lc::session>
join_ok(lc::join_options const& o)
{
    std::error_code ec;
    auto s = lc::session::join(o, ec);
    EXPECT_TRUE(s) << o.session_name << ": " << ec.message();
    return s;
}

/// Waits until the reflector hands a late joiner a snapshot URL for session `id` (the
/// SNAP was taken): a raw JOIN whose SYNC names it. Returns the URL, empty if it never did.
std::string
wait_snapshot_url(std::uint16_t port, std::string const& id)
{
    auto deadline = std::chrono::steady_clock::now() + stuck;
    while (std::chrono::steady_clock::now() < deadline) {
        lockstep::test::ws_client probe(port, "/" + id);
        probe.send_json(lockstep::test::join_msg("probe"));
        if (auto sync = probe.recv_action("SYNC", 10s)) {
            auto url = (*sync)["args"].value("url", "");
            if (!url.empty())
                return url;
        }
        std::this_thread::sleep_for(100ms);  // the uploader's SNAP is on its way
    }
    return {};
}

/// Steps `s` until it has uploaded a snapshot and the reflector knows it.
std::string
snapshot_of(lc::session& s, std::uint16_t port)
{
    EXPECT_TRUE(s.run_until([&] { return s.stats().snapshots_uploaded >= 1; }, stuck)) << s.error().message();
    return wait_snapshot_url(port, s.id());
}

std::vector<fs::path>
snapshot_files(fs::path const& data, std::string const& id)
{
    std::vector<fs::path> out;
    for (auto const& e : fs::recursive_directory_iterator(data))
        if (e.is_regular_file() && e.path().extension() == ".snap" && e.path().parent_path().filename() == id)
            out.push_back(e.path());
    return out;
}

std::string
read_bytes(fs::path const& p)
{
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void
write_bytes(fs::path const& p, std::string const& bytes)
{
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

TEST(SdkSafety, ReplicasThatDivergeAreReported)
{
    reflector_process r;
    ASSERT_TRUE(r.up());
    std::vector<lc::divergence> seen;
    auto o = options(r.ws(), "diverge", "unstable");
    o.files = r.files();
    o.snapshot_interval_ms = 500;
    o.on_divergence = [&](lc::divergence const& d) { seen.push_back(d); };
    auto a = join_ok(o);
    auto b = join_ok(o);
    ASSERT_TRUE(a && b);
    a->publish("u", "bump");
    // The next snapshot vote compares the two replicas' state hashes: they differ, so the
    // one outvoted (a tie goes to the smaller hash) reports a divergence.
    auto deadline = std::chrono::steady_clock::now() + stuck;
    while (seen.empty() && std::chrono::steady_clock::now() < deadline) {
        ASSERT_TRUE(a->wait_step(10ms)) << a->error().message();
        ASSERT_TRUE(b->wait_step(10ms)) << b->error().message();
    }
    ASSERT_FALSE(seen.empty()) << "no divergence reported within the bound";
    EXPECT_GE(a->stats().divergences + b->stats().divergences, 1u);
    EXPECT_EQ(a->stats().divergences + b->stats().divergences, seen.size());
    EXPECT_NE(a->state_hash(), b->state_hash());
    auto const& d = seen.front();
    EXPECT_EQ(d.what, "snapshot vote");
    EXPECT_NE(d.local_hash, d.majority_hash);
    EXPECT_FALSE(d.local_hash.empty());
}

TEST(SdkSafety, CorruptSnapshotEndsTheJoinWithSnapshotUnavailable)
{
    reflector_process r;
    ASSERT_TRUE(r.up());
    auto o = options(r.ws(), "corrupt", "tally");
    o.files = r.files();
    o.snapshot_interval_ms = 500;
    auto first = join_ok(o);
    ASSERT_TRUE(first);
    first->publish("t", "add", 5);
    ASSERT_FALSE(snapshot_of(*first, r.port()).empty());
    // `first` is no longer stepped, so it takes no further snapshot.
    auto files = snapshot_files(r.data(), first->id());
    ASSERT_FALSE(files.empty());
    for (auto const& f : files)
        write_bytes(f, "not a snapshot: flipped bits on disk");

    std::error_code ec;
    auto late = lc::session::join(o, ec);
    EXPECT_FALSE(late);
    EXPECT_EQ(ec, lc::errc::snapshot_unavailable) << ec.message();
}

TEST(SdkSafety, SnapshotSealedWithAnotherKeyEndsTheJoinWithDecryptFailed)
{
    reflector_process r;
    ASSERT_TRUE(r.up());
    auto mine = options(r.ws(), "sealed", "tally");
    mine.files = r.files();
    mine.snapshot_interval_ms = 500;
    mine.password = "the right password";
    auto other = mine;
    other.session_name = "sealed-elsewhere";
    other.password = "another password";

    auto a = join_ok(mine);
    auto b = join_ok(other);
    ASSERT_TRUE(a && b);
    a->publish("t", "add", 1);
    b->publish("t", "add", 2);
    ASSERT_FALSE(snapshot_of(*a, r.port()).empty());
    ASSERT_FALSE(snapshot_of(*b, r.port()).empty());
    auto mine_files = snapshot_files(r.data(), a->id());
    auto other_files = snapshot_files(r.data(), b->id());
    ASSERT_FALSE(mine_files.empty());
    ASSERT_FALSE(other_files.empty());
    // A well-formed snapshot, sealed with the other session's key, where ours should be.
    auto foreign = read_bytes(other_files.front());
    ASSERT_FALSE(foreign.empty());
    for (auto const& f : mine_files)
        write_bytes(f, foreign);

    std::error_code ec;
    auto late = lc::session::join(mine, ec);
    EXPECT_FALSE(late);
    EXPECT_EQ(ec, lc::errc::decrypt_failed) << ec.message();
}

TEST(SdkSafety, CloseCodeFrom4100EndsTheSessionWithoutReconnecting)
{
    auto o = options("", "rejected", "tally");
    o.view_id = "view1";
    auto id = lc::session::session_id_for(o);
    // Connection 0: a reflector that syncs the client, then (when the test says so)
    // closes with 4101. Any later connection would be a reconnect; it is only counted.
    lockstep::test::scripted_server srv([&](lockstep::test::scripted_server& s, int fd, int index) {
        if (index != 0 || !s.accept_websocket(fd))
            return;
        auto join = json::parse(s.read_text(fd), nullptr, false);
        if (!join.is_object() || join.value("action", "") != "JOIN")
            return;
        s.send_text(fd, json{{"id", id},
                             {"action", "SYNC"},
                             {"args",
                              {{"url", ""},
                               {"messages", json::array()},
                               {"time", 0},
                               {"seq", 4294967280u},
                               {"reflector", "scripted"},
                               {"timeline", "t1"},
                               {"flags", json::object()}}}}
                            .dump());
        s.send_text(fd, json{{"id", id},
                             {"action", "RECV"},
                             {"args", {10, 4294967281u, {{"what", "users"}, {"active", 1}, {"total", 1}, {"joined", {"view1"}}}}}}
                            .dump());
        s.hold();
        s.send_close(fd, 4101, "bad appId");
        s.wait_close_reply(fd, 10s);
    });
    o.reflector = "ws://127.0.0.1:" + std::to_string(srv.port());
    auto sess = join_ok(o);
    ASSERT_TRUE(sess);
    EXPECT_TRUE(sess->connected());
    srv.release();
    EXPECT_TRUE(sess->run_until([&] { return static_cast<bool>(sess->error()); }, stuck));
    EXPECT_FALSE(sess->step());
    EXPECT_EQ(sess->error(), lc::errc::rejected) << sess->error().message();
    EXPECT_FALSE(sess->connected());
    // A reconnect after a close below 4100 is immediate (the first retry has no delay),
    // so a second connection would arrive within milliseconds; 1 s without one is a no.
    std::this_thread::sleep_for(1s);
    EXPECT_EQ(srv.connections(), 1u);
}

TEST(SdkSafety, ReconnectAttemptsBackOff)
{
    reflector_process r;
    ASSERT_TRUE(r.up());
    auto s = join_ok(options(r.ws(), "backoff", "tally"));
    ASSERT_TRUE(s);
    r.kill();
    // The reflector's port now answers every connection by closing it: each attempt fails
    // after the TCP handshake, and the client must wait longer and longer in between.
    lockstep::test::scripted_server refuse([](auto&, int, int) {}, r.port());
    auto deadline = std::chrono::steady_clock::now() + stuck;
    while (refuse.connections() < 5 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    auto at = refuse.arrivals();
    ASSERT_GE(at.size(), 5u) << "the client stopped retrying";
    std::vector<long long> gaps;
    for (std::size_t i = 1; i < at.size(); ++i)
        gaps.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(at[i] - at[i - 1]).count());
    // Retry n waits a random 50-100% of 250 ms << n (docs/sdk.md): never under 125 ms
    // after the first, and three retries later at least 4x longer than before (2x here,
    // leaving room for connect latency).
    for (auto g : gaps)
        EXPECT_GE(g, 110) << "retries too close together";
    EXPECT_GE(gaps[3], 2 * gaps[0]) << gaps[0] << " ms then " << gaps[3] << " ms";
    EXPECT_TRUE(s->step());  // still trying: a network failure is not the end
}

TEST(SdkSafety, ARestartedReflectorMakesTheReplicaRebuild)
{
    // A reflector that lost the session (no journal; with one it resumes the session
    // and the replica rejoins seamlessly, see Sdk.ReflectorRestartKeeps...).
    reflector_process r({"--journal", "none"});
    ASSERT_TRUE(r.up());
    int rebuilt = 0;
    auto o = options(r.ws(), "rebuild", "tally");
    o.on_rebuild = [&] { ++rebuilt; };
    auto s = join_ok(o);
    ASSERT_TRUE(s);
    s->publish("t", "add", 7);
    ASSERT_TRUE(s->run_until([&] { return s->root_as<tally>().sum() == 7; }, stuck));
    r.kill();
    r.start();  // same port, empty memory: the session starts over on a new timeline
    ASSERT_TRUE(r.up());
    EXPECT_TRUE(s->run_until([&] { return rebuilt > 0; }, stuck)) << s->error().message();
    EXPECT_EQ(rebuilt, 1);
    EXPECT_EQ(s->stats().rebuilds, 1u);
    EXPECT_EQ(s->stats().seamless_rejoins, 0u);
    // The rebuilt replica is the new session's: the old events are gone.
    EXPECT_EQ(s->root_as<tally>().sum(), 0);
    s->publish("t", "add", 3);
    EXPECT_TRUE(s->run_until([&] { return s->root_as<tally>().sum() == 3; }, stuck));
}
