#include "server/durability.hpp"

#include "support/test_peer.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>

using lockstep::durability_options;
using lockstep::manual_clock;
using lockstep::session;
using lockstep::session_journal;
using lockstep::session_options;
using lockstep::worker_metrics;
using lockstep::test::test_peer;
namespace fs = std::filesystem;

namespace {

std::string
join_args(std::string const& user)
{
    return R"({"name":"app/demo","apiKey":"none","appId":"app","persistentId":"pid","version":1,"user":")" + user +
           R"(","ticks":{"tick":50,"delay":0},"leaveDelay":0})";
}

struct journal_fixture : ::testing::Test {
    fs::path dir = fs::temp_directory_path() /
                   ("lockstep-durability-" + std::to_string(::getpid()) + "-" +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    manual_clock clock;
    session_options opts;
    worker_metrics metrics;

    void SetUp() override
    {
        fs::remove_all(dir);
        spdlog::set_level(spdlog::level::warn);
    }
    void TearDown() override
    {
        fs::remove_all(dir);
        spdlog::set_level(spdlog::level::info);
    }
    std::unique_ptr<session_journal>
    journal()
    {
        durability_options o;
        o.dir = dir.string();
        o.fsync_ms = 0;
        o.retention_s = 3600;
        return std::make_unique<session_journal>(o, metrics);
    }
    /// Runs due timers for `ms` like the worker does, capturing after each call.
    void
    run_ms(session& s, session_journal& j, int ms)
    {
        lockstep::test::run_session_ms(s, clock, ms, [&j](session& t) { j.capture(t); });
    }
    std::vector<fs::path>
    segments() const
    {
        std::vector<fs::path> out;
        for (auto const& e : fs::recursive_directory_iterator(dir))
            if (e.path().extension() == ".lsj")
                out.push_back(e.path());
        return out;
    }
};

}  // namespace

TEST_F(journal_fixture, what_a_client_saw_comes_back_in_a_new_process)
{
    std::int64_t last_tick = 0;
    std::string timeline;
    std::uint32_t seq = 0;
    {
        auto j = journal();
        session s("S", clock, opts, nullptr, &metrics);
        EXPECT_FALSE(j->resume(s));  // nothing stored: a new session
        test_peer a;
        s.join(a, join_args("va"));
        j->capture(s);
        run_ms(s, *j, 250);
        for (int i = 0; i < 5; ++i) {
            s.send(a, R"([1,0,"inc",0])", {});
            j->capture(s);
        }
        run_ms(s, *j, 1700);  // ticks run past the first seen lease
        j->barrier();          // what the worker does before any socket write
        last_tick = a.of("TICK").back()["args"].get<std::int64_t>();
        timeline = s.timeline();
        seq = s.seq();
    }  // the process dies: nothing else is written
    auto j = journal();
    session r("S", clock, opts, nullptr, &metrics);
    ASSERT_TRUE(j->resume(r));
    EXPECT_EQ(r.timeline(), timeline);
    EXPECT_EQ(r.seq(), seq);
    EXPECT_EQ(r.log_size(), 6u);  // users event + 5
    EXPECT_GE(r.time_ms(), last_tick);
    EXPECT_LE(r.time_ms(), last_tick + 1000 + 50);  // the seen lease runs at most 1 s ahead
    EXPECT_EQ(metrics.sessions_resumed.load(), 1u);
    // Resuming staged a new generation; once written, the old one is gone.
    j->barrier();
    EXPECT_GT(metrics.journal_bytes.load(), 0u);
    auto files = segments();
    ASSERT_EQ(files.size(), 1u);
    EXPECT_EQ(files[0].filename(), "0000000000000002.lsj");
}

TEST_F(journal_fixture, a_snapshot_compacts_and_release_keeps_the_journal)
{
    auto j = journal();
    session s("S", clock, opts, nullptr, &metrics);
    test_peer a;
    s.join(a, join_args("va"));
    j->capture(s);
    run_ms(s, *j, 250);
    for (int i = 0; i < 50; ++i) {
        s.send(a, R"([1,0,")" + std::string(200, 'p') + R"(",0])", {});
        j->capture(s);
    }
    j->barrier();
    auto big = fs::file_size(segments().at(0));
    EXPECT_GT(big, 50u * 200);
    s.snap(a, R"({"time":)" + std::to_string(s.current_time_ms()) + R"(,"seq":)" + std::to_string(s.seq() - 1) + R"(,"url":"http://x/snap"})");
    j->capture(s);
    j->barrier();
    auto files = segments();
    ASSERT_EQ(files.size(), 1u);
    EXPECT_LT(fs::file_size(files[0]), 1000u);

    EXPECT_TRUE(j->release("S"));
    auto none = [](std::string const&) { return false; };
    auto all = [](std::string const&) { return true; };
    EXPECT_EQ(j->stored(all, none), std::vector<std::string>{"S"});
    session r("S", clock, opts, nullptr, &metrics);
    ASSERT_TRUE(j->resume(r));
    EXPECT_EQ(r.log_size(), 1u);
    EXPECT_EQ(r.header().snapshot_url, "http://x/snap");
}

TEST_F(journal_fixture, retention_deletes_only_unused_stored_sessions)
{
    auto j = journal();
    for (auto id : {"old", "recent", "live-old"}) {
        session s(id, clock, opts, nullptr, &metrics);
        test_peer a;
        s.join(a, join_args("va"));
        j->capture(s);
        j->barrier();
        j->release(id);
    }
    auto age = [&](std::string const& id) {
        for (auto const& e : fs::directory_iterator(dir / id))
            fs::last_write_time(e.path(), fs::file_time_type::clock::now() - std::chrono::hours(2));
    };
    age("old");
    age("live-old");
    auto all = [](std::string const&) { return true; };
    auto live = [](std::string const& id) { return id == "live-old"; };
    EXPECT_EQ(j->sweep(all, live), 1u);
    EXPECT_FALSE(fs::exists(dir / "old"));
    EXPECT_TRUE(fs::exists(dir / "recent"));
    EXPECT_TRUE(fs::exists(dir / "live-old"));
    EXPECT_GT(metrics.journal_disk_bytes.load(), 0);
    // Another worker's sessions are not this one's to delete.
    age("recent");
    EXPECT_EQ(j->sweep([](std::string const&) { return false; }, live), 0u);
    EXPECT_TRUE(fs::exists(dir / "recent"));
}

TEST_F(journal_fixture, an_unreadable_journal_is_moved_aside_and_the_session_starts_afresh)
{
    fs::create_directories(dir / "S");
    {
        std::ofstream out(dir / "S" / "0000000000000001.lsj", std::ios::binary);
        out << lockstep::journal::file_header(99) << "future";
    }
    auto j = journal();
    session s("S", clock, opts, nullptr, &metrics);
    EXPECT_FALSE(j->resume(s));
    EXPECT_FALSE(s.created());
    EXPECT_FALSE(fs::exists(dir / "S"));
    bool aside = false;
    for (auto const& e : fs::directory_iterator(dir))
        aside = aside || e.path().filename().string().rfind("S.unreadable-", 0) == 0;
    EXPECT_TRUE(aside);
}

TEST_F(journal_fixture, an_idle_sessions_journal_does_not_grow_forever)
{
    durability_options o;
    o.dir = dir.string();
    o.fsync_ms = 0;
    o.seen_per_base = 5;
    session_journal j(o, metrics);
    session s("S", clock, opts, nullptr, &metrics);
    test_peer a;
    s.join(a, join_args("va"));
    j.capture(s);
    std::uintmax_t largest = 0;
    for (int second = 0; second < 30; ++second) {  // ticks only, no events, no snapshot
        run_ms(s, j, 1000);
        j.barrier();
        for (auto const& f : segments())
            largest = std::max(largest, fs::file_size(f));
    }
    auto files = segments();
    ASSERT_EQ(files.size(), 1u);
    EXPECT_GT(files[0].filename().string(), "0000000000000003.lsj");  // rewritten several times
    EXPECT_LT(largest, 1000u);
    // And what it says is still right.
    auto last_tick = a.of("TICK").back()["args"].get<std::int64_t>();
    session r("S", clock, opts, nullptr, &metrics);
    session_journal j2(o, metrics);
    ASSERT_TRUE(j2.resume(r));
    EXPECT_GE(r.time_ms(), last_tick);
}
