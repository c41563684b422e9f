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
        j->barrier();       // what the worker does before any socket write
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
    j->sync();
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
    j->sync();
    auto big = fs::file_size(segments().at(0));
    EXPECT_GT(big, 50u * 200);
    s.snap(a, R"({"time":)" + std::to_string(s.current_time_ms()) + R"(,"seq":)" + std::to_string(s.seq() - 1) + R"(,"url":"http://x/snap"})");
    j->capture(s);
    j->sync();
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

TEST_F(journal_fixture, the_disk_bytes_gauge_counts_the_segment_files_and_the_write_ahead_log)
{
    auto j = journal();
    session s("W", clock, opts, nullptr, &metrics);
    test_peer a;
    s.join(a, join_args("va"));
    j->capture(s);
    j->sync();
    auto all = [](std::string const&) { return true; };
    auto none = [](std::string const&) { return false; };
    EXPECT_EQ(j->sweep(all, none), 0u);
    std::uint64_t segments = 0, wal = 0;
    for (auto const& e : fs::recursive_directory_iterator(dir))
        if (e.is_regular_file())
            (e.path().parent_path().filename() == ".wal" ? wal : segments) += e.file_size();
    ASSERT_GT(wal, 0u) << "the session's records are in the write-ahead log";
    ASSERT_GT(segments, 0u);
    EXPECT_EQ(metrics.journal_disk_bytes.load(), static_cast<std::int64_t>(segments + wal));
}

TEST_F(journal_fixture, retention_deletes_only_unused_stored_sessions)
{
    auto j = journal();
    for (auto id : {"old", "recent", "live-old"}) {
        session s(id, clock, opts, nullptr, &metrics);
        test_peer a;
        s.join(a, join_args("va"));
        j->capture(s);
        j->sync();
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
    // Their records are still in the current write-ahead log: a replay after a crash
    // would bring them back, so nothing is deleted until that log is retired.
    EXPECT_EQ(j->sweep(all, live), 0u);
    EXPECT_TRUE(fs::exists(dir / "old"));
    j->rotate();  // what the worker does before each sweep
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
        j.sync();
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

// Retention also deletes the blobs only expired sessions referenced: the expired session's
// snapshot (and its older snapshots in its own directory) and persisted data, but not a
// blob a retained session's header or a SAVE record names, nor one written since.
TEST_F(journal_fixture, retention_deletes_the_blobs_only_expired_sessions_referenced)
{
    auto files = dir / "files";
    auto persist = dir / "persist";
    auto put = [&](std::string const& rel) {
        fs::create_directories((files / rel).parent_path());
        std::ofstream(files / rel) << "blob " << rel;
    };
    auto stored = [&](std::string const& id, std::string const& snap, std::string const& persisted) {
        lockstep::session_header h;
        h.id = id;
        h.timeline = "t-" + id;
        h.tick_ms = 50;
        h.snapshot_url = snap.empty() ? "" : "http://127.0.0.1:9090/files/" + snap;
        h.snapshot_time = "0";
        h.persisted_url = persisted.empty() ? "" : "http://127.0.0.1:9090/files/t/tok/" + persisted;
        auto bytes = lockstep::journal::file_header();
        lockstep::journal::append_header(bytes, h);
        lockstep::journal::append_base(bytes);
        fs::create_directories(dir / "journal" / id);
        std::ofstream(dir / "journal" / id / "0000000000000001.lsj", std::ios::binary) << bytes;
    };
    std::string const gone_dir = "apps/app/snap/v1/pid.gone/", kept_dir = "apps/app/snap/v1/pid.kept/";
    put(gone_dir + "0000001000_5.a");   // the expired session's current snapshot
    put(gone_dir + "0000000500_2.b");   // an older one of it, named by no header
    put(gone_dir + "0000002000_9.new"); // written after it expired: stays
    put(kept_dir + "0000001000_5.c");   // the retained session's snapshot
    put("apps/app/pid/save/shared");    // persisted data both name
    put("apps/app/pid/save/only-gone"); // persisted data only the expired one names
    put("apps/app/pid/save/saved");     // what a SAVE record names (the expired one too)
    put("apps/other/unrelated");        // nobody's
    stored("gone", gone_dir + "0000001000_5.a", "apps/app/pid/save/only-gone");
    stored("gone2", "", "apps/app/pid/save/saved");
    stored("kept", kept_dir + "0000001000_5.c", "apps/app/pid/save/shared");
    stored("gone3", "", "apps/app/pid/save/shared");
    fs::create_directories(persist);
    std::ofstream(persist / "x.json") << R"({"appId":"app","key":"[\"app\",\"pid\"]","persistentId":"pid",)"
                                      << R"("url":"http://127.0.0.1:9090/files/apps/app/pid/save/saved"})";
    auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
    for (auto const& e : fs::recursive_directory_iterator(files))
        if (e.is_regular_file() && e.path().filename() != "0000002000_9.new")
            fs::last_write_time(e.path(), old);
    for (auto id : {"gone", "gone2", "gone3"})
        for (auto const& e : fs::directory_iterator(dir / "journal" / id))
            fs::last_write_time(e.path(), old);

    durability_options o;
    o.dir = (dir / "journal").string();
    o.fsync_ms = 0;
    o.retention_s = 3600;
    o.files_dir = files.string();
    o.persist_dir = persist.string();
    session_journal j(o, metrics);
    EXPECT_EQ(j.sweep([](std::string const&) { return true; }, [](std::string const&) { return false; }), 3u);

    EXPECT_FALSE(fs::exists(files / (gone_dir + "0000001000_5.a")));
    EXPECT_FALSE(fs::exists(files / (gone_dir + "0000000500_2.b")));
    EXPECT_FALSE(fs::exists(files / "apps/app/pid/save/only-gone"));
    EXPECT_TRUE(fs::exists(files / (gone_dir + "0000002000_9.new")));
    EXPECT_TRUE(fs::exists(files / (kept_dir + "0000001000_5.c")));
    EXPECT_TRUE(fs::exists(files / "apps/app/pid/save/shared"));
    EXPECT_TRUE(fs::exists(files / "apps/app/pid/save/saved"));
    EXPECT_TRUE(fs::exists(files / "apps/other/unrelated"));
    EXPECT_TRUE(fs::exists(dir / "journal" / "kept"));
}

TEST(blob_of_url, names_the_path_after_files_and_refuses_the_rest)
{
    EXPECT_EQ(lockstep::blob_of_url("http://h:9/files/apps/a/snap/x.y/1_2.h"), "apps/a/snap/x.y/1_2.h");
    EXPECT_EQ(lockstep::blob_of_url("https://h/p/files/t/jwt/apps/a/s%20p?x=1"), "apps/a/s p");
    EXPECT_FALSE(lockstep::blob_of_url("").has_value());
    EXPECT_FALSE(lockstep::blob_of_url("http://h/other/apps/a").has_value());
    EXPECT_FALSE(lockstep::blob_of_url("http://h/files/apps/../../etc/passwd").has_value());
}
