#include "store/journal.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/resource.h>

namespace j = lockstep::journal;
namespace fs = std::filesystem;
using lockstep::logged_event;
using lockstep::session_header;

namespace {

constexpr std::uint32_t first_seq = 0xFFFFFFF0u;

session_header
make_header(std::string id = "S1", std::uint32_t seq = first_seq)
{
    session_header h;
    h.id = std::move(id);
    h.name = "app/demo";
    h.app_id = "io.app";
    h.persistent_id = "pid";
    h.timeline = "abcdefghijk";
    h.tick_ms = 50;
    h.delay_ms = 10;
    h.scale = 1.5;
    h.tove = R"("secret")";
    h.flags = R"({"rawtime":true})";
    h.persisted_url = "http://x/persist";
    h.time_ms = 100;
    h.seq = seq;
    return h;
}

std::string
element(std::int64_t time, std::uint32_t seq, std::string payload = "\"inc\"")
{
    return "[" + std::to_string(time) + "," + std::to_string(seq) + "," + payload + ",0]";
}

/// A segment: base with the header and `base_events` events, then `appended` events.
struct built {
    std::string bytes;
    std::vector<std::size_t> record_starts;  // offsets of every record
};

built
build_segment(int base_events, int appended, std::string id = "S1")
{
    built b;
    b.bytes = j::file_header();
    auto rec = [&b](auto&& fn) {
        b.record_starts.push_back(b.bytes.size());
        fn(b.bytes);
    };
    rec([&](std::string& o) { j::append_header(o, make_header(id, first_seq + base_events)); });
    std::uint32_t seq = first_seq;
    for (int i = 0; i < base_events + appended; ++i) {
        if (i == base_events)
            rec([](std::string& o) { j::append_base(o); });
        ++seq;
        rec([&](std::string& o) { j::append_event(o, seq, element(200 + i, seq)); });
    }
    if (appended == 0)
        rec([](std::string& o) { j::append_base(o); });
    return b;
}

struct temp_dir {
    fs::path path;
    temp_dir()
    {
        path = fs::temp_directory_path() /
               ("lockstep-journal-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(path);
    }
    ~temp_dir() { fs::remove_all(path); }
};

/// The session segment files (.lsj) under `dir`, not the write-ahead logs.
std::vector<fs::path>
segment_files(fs::path const& dir)
{
    std::vector<fs::path> out;
    if (fs::exists(dir))
        for (auto const& e : fs::recursive_directory_iterator(dir))
            if (e.is_regular_file() && e.path().extension() == ".lsj")
                out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

/// Writes a session's base (header + log) and flushes.
void
write_base(j::journal_writer& w, session_header const& h, std::vector<logged_event> const& log)
{
    w.begin_base(h);
    for (auto const& e : log)
        w.event(h.id, e.seq, e.element);
    w.end_base(h.id);
}

/// The write-ahead log files under `dir`.
std::vector<fs::path>
wal_files(fs::path const& dir)
{
    std::vector<fs::path> out;
    if (fs::exists(dir / ".wal"))
        for (auto const& e : fs::directory_iterator(dir / ".wal"))
            out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

struct quiet_logs : ::testing::Test {
    void SetUp() override { spdlog::set_level(spdlog::level::off); }
    void TearDown() override { spdlog::set_level(spdlog::level::info); }
};

}  // namespace

TEST(journal_codec, crc32c_matches_the_standard_check_value)
{
    EXPECT_EQ(j::crc32c("123456789"), 0xE3069283u);
    EXPECT_EQ(j::crc32c(""), 0u);
    // Continuation equals one pass.
    EXPECT_EQ(j::crc32c("6789", j::crc32c("12345")), j::crc32c("123456789"));
    // RFC 3720 (iSCSI) vectors: 32 bytes, so the 8-byte hardware path is checked too.
    std::string ascending;
    for (int i = 0; i < 32; ++i)
        ascending.push_back(static_cast<char>(i));
    EXPECT_EQ(j::crc32c(std::string(32, '\0')), 0x8A9136AAu);
    EXPECT_EQ(j::crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
    EXPECT_EQ(j::crc32c(ascending), 0x46DD794Eu);
    // Split anywhere (unaligned, odd lengths), continued: the same.
    for (std::size_t cut = 0; cut <= ascending.size(); ++cut)
        EXPECT_EQ(j::crc32c(std::string_view(ascending).substr(cut),
                            j::crc32c(std::string_view(ascending).substr(0, cut))),
                  0x46DD794Eu)
            << cut;
}

TEST(journal_codec, ids_encode_to_safe_names_and_back)
{
    for (std::string id : {"abc123", "a/b", "..", "x y%z", "\xff\x01", "Ab_-9"}) {
        auto name = j::encode_id(id);
        ASSERT_FALSE(name.empty()) << id;
        EXPECT_EQ(name.find('/'), std::string::npos);
        EXPECT_EQ(name.find('.'), std::string::npos);
        EXPECT_EQ(j::decode_id(name).value_or("?"), id);
    }
    EXPECT_EQ(j::encode_id("a/b"), "a%2Fb");
    EXPECT_TRUE(j::encode_id("").empty());
    EXPECT_TRUE(j::encode_id(std::string(201, 'a')).empty());
    EXPECT_TRUE(j::encode_id(std::string(67, '/')).empty());  // 201 bytes once encoded
    for (std::string bad : {"", "%", "%2", "%2f", "%41", "a.b", "%zz"})
        EXPECT_FALSE(j::decode_id(bad)) << bad;
}

TEST(journal_codec, header_round_trips_and_rejects_bad_fields)
{
    auto h = make_header();
    h.snapshot_url = "http://x/snap";
    h.snapshot_time = "1234.5";
    h.snapshot_seq = 7;
    auto back = j::parse_header_json(j::header_json(h));
    ASSERT_TRUE(back);
    EXPECT_EQ(j::header_json(*back), j::header_json(h));
    EXPECT_EQ(back->tove, R"("secret")");
    EXPECT_EQ(back->scale, 1.5);
    EXPECT_EQ(back->seq, first_seq);

    auto text = j::header_json(h);
    auto with = [&](std::string const& from, std::string const& to) {
        auto t = text;
        auto at = t.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        return t.replace(at, from.size(), to);
    };
    EXPECT_FALSE(j::parse_header_json(with(R"("tove":"\"secret\"")", R"("tove":"{bad")")));
    EXPECT_FALSE(j::parse_header_json(with(R"("flags":"{\"rawtime\":true}")", R"("flags":"[]")")));
    EXPECT_FALSE(j::parse_header_json(with(R"("snapshotTime":"1234.5")", R"("snapshotTime":"\"x\"")")));
    EXPECT_FALSE(j::parse_header_json(with(R"("tick":50)", R"("tick":0)")));
    EXPECT_FALSE(j::parse_header_json(with(R"("seq":4294967280)", R"("seq":4294967296)")));
    EXPECT_FALSE(j::parse_header_json(with(R"("timeline":"abcdefghijk",)", "")));
    EXPECT_FALSE(j::parse_header_json("[1]"));
    EXPECT_FALSE(j::parse_header_json("{"));
}

TEST(journal_scan, round_trip_of_base_and_appends)
{
    auto b = build_segment(3, 2);
    std::string seen;
    j::append_seen(seen, 5000);
    b.bytes += seen;
    auto s = j::scan_segment(b.bytes);
    ASSERT_EQ(s.status, j::scan_status::ok);
    EXPECT_EQ(s.tail, j::tail_problem::none);
    EXPECT_EQ(s.valid_bytes, b.bytes.size());
    EXPECT_EQ(s.dropped_bytes, 0u);
    EXPECT_EQ(j::header_json(s.header), j::header_json(make_header("S1", first_seq + 3)));
    ASSERT_EQ(s.events.size(), 5u);
    for (std::uint32_t i = 0; i < 5; ++i) {
        EXPECT_EQ(s.events[i].seq, first_seq + 1 + i);
        EXPECT_EQ(s.events[i].element, element(200 + i, first_seq + 1 + i));
    }
    EXPECT_EQ(s.seq, first_seq + 5);
    EXPECT_EQ(s.seen_ms, 5000);
}

TEST(journal_scan, seq_wraps_and_a_snapshot_header_trims_the_log)
{
    // 20 events from 0xFFFFFFF1 wrap through 0; a snapshot at seq 2 keeps 3..4.
    auto b = build_segment(0, 20);
    auto h = make_header("S1", 4);
    h.snapshot_url = "http://x/snap";
    h.snapshot_time = "215";
    h.snapshot_seq = 2;
    h.time_ms = 230;
    j::append_header(b.bytes, h);
    auto s = j::scan_segment(b.bytes);
    ASSERT_EQ(s.status, j::scan_status::ok);
    ASSERT_EQ(s.events.size(), 2u);
    EXPECT_EQ(s.events[0].seq, 3u);
    EXPECT_EQ(s.events[1].seq, 4u);
    EXPECT_EQ(s.header.snapshot_url, "http://x/snap");
    EXPECT_EQ(s.seen_ms, 230);
}

TEST(journal_scan, torn_tail_at_every_byte_of_the_last_record_is_dropped)
{
    auto b = build_segment(2, 3);
    auto last = b.record_starts.back();
    for (std::size_t cut = last; cut < b.bytes.size(); ++cut) {
        auto s = j::scan_segment(std::string_view(b.bytes).substr(0, cut));
        ASSERT_EQ(s.status, j::scan_status::ok) << cut;
        EXPECT_EQ(s.tail, cut == last ? j::tail_problem::none : j::tail_problem::torn) << cut;
        EXPECT_EQ(s.valid_bytes, last) << cut;
        EXPECT_EQ(s.dropped_bytes, cut - last) << cut;
        ASSERT_EQ(s.events.size(), 4u) << cut;  // the torn fifth event never appears
        EXPECT_EQ(s.seq, first_seq + 4) << cut;
    }
}

TEST(journal_scan, a_segment_torn_inside_its_base_has_no_base)
{
    auto b = build_segment(2, 0);
    for (std::size_t cut = 1; cut < b.bytes.size(); ++cut) {
        auto s = j::scan_segment(std::string_view(b.bytes).substr(0, cut));
        EXPECT_EQ(s.status, j::scan_status::no_base) << cut;
    }
    EXPECT_EQ(j::scan_segment(b.bytes).status, j::scan_status::ok);
    EXPECT_EQ(j::scan_segment("").status, j::scan_status::empty);
}

TEST(journal_scan, a_corrupt_checksum_drops_that_record_and_everything_after)
{
    auto b = build_segment(1, 4);
    // Flip one payload bit in the third appended event (record index: header, e, base, e, e, e...).
    auto third = b.record_starts[5];
    auto bad = b.bytes;
    bad[third + j::record_header_bytes + 6] ^= 0x01;
    auto s = j::scan_segment(bad);
    ASSERT_EQ(s.status, j::scan_status::ok);
    EXPECT_EQ(s.tail, j::tail_problem::checksum);
    EXPECT_EQ(s.valid_bytes, third);
    EXPECT_EQ(s.events.size(), 3u);  // base event + two appended
    // A corrupt length is caught too (by the checksum or the length limit).
    bad = b.bytes;
    bad[third] ^= 0x04;
    s = j::scan_segment(bad);
    EXPECT_NE(s.tail, j::tail_problem::none);
    EXPECT_EQ(s.valid_bytes, third);
    bad = b.bytes;
    bad[third + 3] = '\x7f';
    s = j::scan_segment(bad);
    EXPECT_EQ(s.tail, j::tail_problem::invalid);
    EXPECT_EQ(s.events.size(), 3u);
}

TEST(journal_scan, records_that_break_the_rules_are_not_applied)
{
    auto base = build_segment(1, 0).bytes;
    struct bad_case {
        char const* what;
        std::function<void(std::string&)> add;
    };
    std::vector<bad_case> cases = {
        {"seq gap", [](std::string& o) { j::append_event(o, first_seq + 3, element(1, first_seq + 3)); }},
        {"element seq differs", [](std::string& o) { j::append_event(o, first_seq + 2, element(1, first_seq + 9)); }},
        {"element not JSON", [](std::string& o) { j::append_event(o, first_seq + 2, "[1,4294967282,\"x\",]"); }},
        {"element not an array", [](std::string& o) { j::append_event(o, first_seq + 2, "{\"a\":1}"); }},
        {"negative time", [](std::string& o) { j::append_event(o, first_seq + 2, element(-5, first_seq + 2)); }},
        {"header of another session", [](std::string& o) { j::append_header(o, make_header("S2", first_seq + 1)); }},
        {"header seq behind", [](std::string& o) { j::append_header(o, make_header("S1", first_seq)); }},
        {"second base", [](std::string& o) { j::append_base(o); }},
        {"unknown type", [](std::string& o) { j::append_record(o, static_cast<j::record_type>(9), "x"); }},
        {"seen of 4 bytes", [](std::string& o) { j::append_record(o, j::record_type::seen, "abcd"); }},
    };
    for (auto const& c : cases) {
        auto bytes = base;
        c.add(bytes);
        j::append_event(bytes, first_seq + 2, element(1, first_seq + 2));  // a good record after
        auto s = j::scan_segment(bytes);
        EXPECT_EQ(s.status, j::scan_status::ok) << c.what;
        EXPECT_EQ(s.tail, j::tail_problem::invalid) << c.what;
        EXPECT_EQ(s.valid_bytes, base.size()) << c.what;
        EXPECT_EQ(s.events.size(), 1u) << c.what;
        EXPECT_FALSE(s.tail_detail.empty()) << c.what;
    }
    // The base itself: its log ends at its header's seq and starts after its snapshot.
    auto bytes = j::file_header();
    j::append_header(bytes, make_header("S1", first_seq + 2));
    j::append_event(bytes, first_seq + 1, element(1, first_seq + 1));
    j::append_base(bytes);
    auto s = j::scan_segment(bytes);
    EXPECT_EQ(s.status, j::scan_status::no_base);
    EXPECT_EQ(s.tail, j::tail_problem::invalid);
    auto snap = make_header("S1", first_seq + 2);
    snap.snapshot_url = "u";
    snap.snapshot_time = "1";
    snap.snapshot_seq = first_seq + 1;
    // A snapshot trims once, when it is new (as the session does): a header repeating
    // it keeps events logged after it, even those a client's odd snapshot seq covers.
    bytes = j::file_header();
    j::append_header(bytes, snap);
    j::append_event(bytes, first_seq + 1, element(1, first_seq + 1));
    j::append_event(bytes, first_seq + 2, element(1, first_seq + 2));
    j::append_base(bytes);
    snap.seq = first_seq + 3;
    snap.snapshot_seq = first_seq + 9;
    j::append_event(bytes, first_seq + 3, element(2, first_seq + 3));
    s = j::scan_segment(bytes);
    EXPECT_EQ(s.status, j::scan_status::ok);
    EXPECT_EQ(s.events.size(), 3u);
    j::append_header(bytes, snap);  // new snapshot "at" seq +9: drops all three
    j::append_event(bytes, first_seq + 4, element(3, first_seq + 4));
    snap.seq = first_seq + 4;
    j::append_header(bytes, snap);  // same snapshot again: keeps +4
    s = j::scan_segment(bytes);
    EXPECT_EQ(s.tail, j::tail_problem::none);
    ASSERT_EQ(s.events.size(), 1u);
    EXPECT_EQ(s.events[0].seq, first_seq + 4);
    bytes = j::file_header();
    j::append_header(bytes, snap);
    j::append_header(bytes, snap);
    EXPECT_EQ(j::scan_segment(bytes).tail, j::tail_problem::invalid);
    // A segment must start with a header.
    bytes = j::file_header();
    j::append_event(bytes, first_seq + 1, element(1, first_seq + 1));
    EXPECT_EQ(j::scan_segment(bytes).status, j::scan_status::no_base);
}

TEST(journal_scan, version_mismatch_and_foreign_files_are_refused)
{
    auto b = build_segment(1, 1).bytes;
    auto other = j::file_header(2) + b.substr(j::file_header_bytes);
    auto s = j::scan_segment(other);
    EXPECT_EQ(s.status, j::scan_status::bad_version);
    EXPECT_EQ(s.version, 2u);
    EXPECT_TRUE(s.events.empty());
    auto foreign = b;
    foreign[0] = 'X';
    EXPECT_EQ(j::scan_segment(foreign).status, j::scan_status::bad_magic);
    auto bad_crc = b;
    bad_crc[13] ^= 1;
    EXPECT_EQ(j::scan_segment(bad_crc).status, j::scan_status::bad_magic);
}

struct journal_writer_test : quiet_logs {};

TEST_F(journal_writer_test, writes_one_call_per_flush_and_loads_back)
{
    temp_dir d;
    j::writer_stats stats;
    {
        j::journal_writer w({d.path.string(), 0, {}}, &stats);
        auto a = make_header("A"), b = make_header("B/x");
        write_base(w, a, {});
        write_base(w, b, {});
        auto r = w.flush();
        EXPECT_EQ(r.writes, 1u);
        EXPECT_TRUE(r.failed.empty());
        // One turn: three events in A, one in B, a seen record: still one write.
        for (std::uint32_t i = 1; i <= 3; ++i)
            w.event("A", first_seq + i, element(100 + i, first_seq + i));
        w.event("B/x", first_seq + 1, element(150, first_seq + 1));
        w.seen("A", 900);
        EXPECT_TRUE(w.pending("A"));
        auto writes_before = stats.writes.load();
        r = w.flush();
        EXPECT_EQ(r.writes, 1u);
        EXPECT_EQ(stats.writes.load() - writes_before, 1u);
        EXPECT_FALSE(w.pending("A"));
        EXPECT_EQ(w.flush().writes, 0u);  // nothing staged: no write
        EXPECT_GT(stats.fsyncs.load(), 0u);  // fsync_ms 0: synced inside flush
        w.sync();                             // the segment files caught up
        EXPECT_GT(stats.catch_up_writes.load(), 0u);
        auto ids = w.stored();
        std::sort(ids.begin(), ids.end());
        EXPECT_EQ(ids, (std::vector<std::string>{"A", "B/x"}));
    }
    // Another writer (a restarted process) reads them.
    j::journal_writer w({d.path.string(), 0, {}}, &stats);
    std::error_code ec;
    auto a = w.load("A", ec);
    ASSERT_TRUE(a) << ec.message();
    EXPECT_EQ(a->header.timeline, "abcdefghijk");
    EXPECT_EQ(a->header.seq, first_seq + 3);
    ASSERT_EQ(a->events.size(), 3u);
    EXPECT_EQ(a->events[2].element, element(103, first_seq + 3));
    EXPECT_EQ(a->resume_time_ms, 900);
    EXPECT_EQ(a->generation, 1u);
    auto b = w.load("B/x", ec);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->events.size(), 1u);
    EXPECT_FALSE(w.load("unknown", ec));
    EXPECT_FALSE(ec);
    EXPECT_EQ(stats.sessions_loaded.load(), 2u);
}

TEST_F(journal_writer_test, compaction_replaces_the_segment_and_the_size_follows_the_log)
{
    temp_dir d;
    j::journal_writer w({d.path.string(), 0, {}});
    auto h = make_header("C");
    write_base(w, h, {});
    w.flush();
    std::vector<logged_event> log;
    for (std::uint32_t i = 1; i <= 60; ++i) {
        log.push_back({first_seq + i, element(i, first_seq + i, "\"" + std::string(100, 'p') + "\"")});
        w.event("C", log.back().seq, log.back().element);
        w.flush();
    }
    w.sync();
    auto files = segment_files(d.path);
    ASSERT_EQ(files.size(), 1u);
    auto big = fs::file_size(files[0]);
    EXPECT_GT(big, 60u * 100);
    // A snapshot at the 58th event: the session rewrites its state into generation 2.
    h.snapshot_url = "http://x/snap";
    h.snapshot_time = "58";
    h.snapshot_seq = log[57].seq;
    h.seq = log.back().seq;
    log.erase(log.begin(), log.begin() + 58);
    write_base(w, h, log);
    w.flush();
    w.sync();
    files = segment_files(d.path);
    ASSERT_EQ(files.size(), 1u);  // the old generation is gone
    EXPECT_EQ(files[0].filename(), "0000000000000002.lsj");
    EXPECT_LT(fs::file_size(files[0]), 1000u);
    // Appends continue in the new generation.
    w.event("C", h.seq + 1, element(201, h.seq + 1));
    w.flush();
    std::error_code ec;
    auto s = w.load("C", ec);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->generation, 2u);
    ASSERT_EQ(s->events.size(), 3u);
    EXPECT_EQ(s->events[0].seq, h.snapshot_seq + 1);
    EXPECT_EQ(s->events[2].seq, h.seq + 1);
    EXPECT_EQ(s->header.snapshot_url, "http://x/snap");
}

TEST_F(journal_writer_test, a_new_segment_with_a_torn_base_falls_back_to_the_previous_one)
{
    temp_dir d;
    {
        j::journal_writer w({d.path.string(), 0, {}});
        write_base(w, make_header("F", first_seq + 1), {{first_seq + 1, element(5, first_seq + 1)}});
        w.flush();
    }
    // A crash while generation 2's base was being written: only part of it is there.
    auto full = build_segment(3, 0, "F").bytes;
    auto dir = d.path / j::encode_id("F");
    {
        std::ofstream out(dir / "0000000000000002.lsj", std::ios::binary);
        out << full.substr(0, full.size() - 3);
    }
    j::writer_stats stats;
    j::journal_writer w({d.path.string(), 0, {}}, &stats);
    std::error_code ec;
    auto s = w.load("F", ec);
    ASSERT_TRUE(s) << ec.message();
    EXPECT_EQ(s->generation, 1u);
    EXPECT_EQ(s->events.size(), 1u);
    EXPECT_EQ(stats.tails_dropped.load(), 1u);
    EXPECT_EQ(s->newest_generation, 2u);
    // Resuming writes generation 3 (no file is rewritten) and removes both older ones.
    w.resumed("F", s->newest_generation);
    write_base(w, s->header, s->events);
    w.flush();
    w.sync();
    auto files = segment_files(d.path);
    ASSERT_EQ(files.size(), 1u);
    EXPECT_EQ(files[0].filename(), "0000000000000003.lsj");
}

TEST_F(journal_writer_test, load_drops_a_torn_tail_and_refuses_other_versions)
{
    temp_dir d;
    j::journal_writer w({d.path.string(), 0, {}});
    write_base(w, make_header("T"), {});
    w.event("T", first_seq + 1, element(5, first_seq + 1));
    w.event("T", first_seq + 2, element(6, first_seq + 2));
    w.flush();
    w.sync();
    auto file = segment_files(d.path).at(0);
    fs::resize_file(file, fs::file_size(file) - 1);
    std::error_code ec;
    auto s = w.load("T", ec);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->events.size(), 1u);
    EXPECT_GT(s->dropped_bytes, 0u);

    auto v2 = d.path / j::encode_id("V");
    fs::create_directories(v2);
    {
        std::ofstream out(v2 / "0000000000000001.lsj", std::ios::binary);
        out << j::file_header(2) << "whatever";
    }
    EXPECT_FALSE(w.load("V", ec));
    EXPECT_EQ(ec, j::errc::bad_version);

    // A segment copied from another session is not taken for this one.
    auto other = d.path / j::encode_id("W");
    fs::create_directories(other);
    fs::copy_file(file, other / "0000000000000001.lsj");
    EXPECT_FALSE(w.load("W", ec));
    EXPECT_EQ(ec, j::errc::no_base);
}

TEST_F(journal_writer_test, group_commit_fsyncs_off_the_calling_thread)
{
    temp_dir d;
    j::writer_stats stats;
    std::atomic<int> observed{0};
    std::thread::id caller = std::this_thread::get_id();
    std::atomic<bool> on_caller{false};
    {
        j::journal_writer w({d.path.string(), 20, [&](double secs) {
                                 observed.fetch_add(1);
                                 if (std::this_thread::get_id() == caller)
                                     on_caller = true;
                                 EXPECT_GE(secs, 0.0);
                             }},
                            &stats);
        write_base(w, make_header("G"), {});
        w.flush();
        EXPECT_EQ(stats.writes.load(), 1u);
        w.sync();
        EXPECT_GE(stats.fsyncs.load(), 1u);
        EXPECT_GE(observed.load(), 1);
        w.event("G", first_seq + 1, element(5, first_seq + 1));
        w.flush();
    }  // the destructor syncs what is left
    EXPECT_GE(stats.fsyncs.load(), 2u);
    EXPECT_FALSE(on_caller.load());
}

TEST_F(journal_writer_test, a_failed_write_is_rolled_back_kept_and_retried)
{
    temp_dir d;
    j::writer_stats stats;
    j::journal_writer w({d.path.string(), 0, {}}, &stats);
    write_base(w, make_header("D"), {});
    w.flush();
    w.sync();
    auto file = wal_files(d.path).at(0);  // the one write goes to the write-ahead log
    auto size = fs::file_size(file);

    // A file-size limit a few bytes past the end: the next write is partial, then EFBIG.
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit old_limit{};
    ::getrlimit(RLIMIT_FSIZE, &old_limit);
    rlimit small = old_limit;
    small.rlim_cur = size + 20;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    w.event("D", first_seq + 1, element(5, first_seq + 1, "\"" + std::string(100, 'x') + "\""));
    auto r = w.flush();
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);

    EXPECT_EQ(r.failed, std::vector<std::string>{"D"});
    EXPECT_TRUE(r.error);
    EXPECT_EQ(stats.write_errors.load(), 1u);
    EXPECT_EQ(fs::file_size(file), size);  // the partial record was cut off
    EXPECT_TRUE(w.pending("D"));
    // Space again: the same records go out with the next flush, followed by new ones.
    w.event("D", first_seq + 2, element(6, first_seq + 2));
    r = w.flush();
    EXPECT_TRUE(r.failed.empty());
    std::error_code ec;
    auto s = w.load("D", ec);
    ASSERT_TRUE(s);
    ASSERT_EQ(s->events.size(), 2u);
    EXPECT_EQ(s->events[1].seq, first_seq + 2);
    EXPECT_EQ(s->dropped_bytes, 0u);
}

TEST_F(journal_writer_test, close_keeps_the_journal_and_remove_deletes_it)
{
    temp_dir d;
    j::journal_writer w({d.path.string(), 0, {}});
    write_base(w, make_header("R"), {});
    w.event("R", first_seq + 1, element(5, first_seq + 1));
    w.close("R");  // flushes what was staged
    std::error_code ec;
    auto s = w.load("R", ec);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->events.size(), 1u);
    // Its records are still in the current write-ahead log: not deleted until that is
    // retired (a replay would bring the session back).
    EXPECT_EQ(w.remove("R"), std::errc::device_or_resource_busy);
    w.rotate();
    EXPECT_FALSE(w.remove("R"));
    EXPECT_FALSE(w.load("R", ec));
    EXPECT_TRUE(w.stored().empty());
    // Appends without a base are refused, not written.
    w.event("Z", first_seq + 1, element(5, first_seq + 1));
    auto r = w.flush();
    EXPECT_EQ(r.error, j::errc::no_base);
    EXPECT_FALSE(w.pending("Z"));
}

// ---------------------------------------------------------------------------- write-ahead log

namespace {

/// A WAL file: header and one entry per (id, generation, offset, data).
std::string
build_wal(std::vector<j::wal_entry> const& entries, std::vector<std::size_t>* starts = nullptr)
{
    auto out = j::file_header(j::wal_format_version, j::wal_magic);
    for (auto const& e : entries) {
        if (starts)
            starts->push_back(out.size());
        j::append_wal_entry(out, e);
    }
    return out;
}

}  // namespace

TEST(journal_wal, entries_round_trip_and_a_torn_tail_at_every_byte_is_dropped)
{
    auto base = build_segment(2, 0, "A").bytes;
    std::string more;
    j::append_event(more, first_seq + 3, element(300, first_seq + 3));
    std::vector<std::size_t> starts;
    auto wal = build_wal({{j::wal_kind::base, "A", 1, 0, base},
                          {j::wal_kind::append, "A", 1, base.size(), more},
                          {j::wal_kind::append, "B/x", 7, 16, "tail bytes"}},
                         &starts);
    auto s = j::scan_wal(wal);
    ASSERT_EQ(s.status, j::scan_status::ok);
    EXPECT_EQ(s.tail, j::tail_problem::none);
    ASSERT_EQ(s.entries.size(), 3u);
    EXPECT_EQ(s.entries[0].kind, j::wal_kind::base);
    EXPECT_EQ(s.entries[0].data, base);
    EXPECT_EQ(s.entries[1].offset, base.size());
    EXPECT_EQ(s.entries[2].id, "B/x");
    EXPECT_EQ(s.entries[2].generation, 7u);
    EXPECT_EQ(s.entries[2].data, "tail bytes");
    for (auto cut = starts[2] + 1; cut < wal.size(); ++cut) {
        auto t = j::scan_wal(std::string_view(wal).substr(0, cut));
        ASSERT_EQ(t.entries.size(), 2u) << "cut at " << cut;
        EXPECT_EQ(t.tail, j::tail_problem::torn);
        EXPECT_EQ(t.valid_bytes, starts[2]);
        EXPECT_EQ(t.valid_bytes + t.dropped_bytes, cut);
    }
    // A flipped bit anywhere in the second entry: it and everything after are dropped.
    for (auto at = starts[1]; at < starts[2]; ++at) {
        auto bad = wal;
        bad[at] = static_cast<char>(bad[at] ^ 0x10);
        auto t = j::scan_wal(bad);
        ASSERT_EQ(t.entries.size(), 1u) << "flip at " << at;
        EXPECT_NE(t.tail, j::tail_problem::none);
    }
    EXPECT_EQ(j::scan_wal(j::file_header(2, j::wal_magic)).status, j::scan_status::bad_version);
    EXPECT_EQ(j::scan_wal(base).status, j::scan_status::bad_magic);  // a segment is not a WAL
    // Checksummed but meaningless: generation 0, a base that is not a segment, no id.
    for (auto const& e : {j::wal_entry{j::wal_kind::append, "A", 0, 16, "x"},
                          j::wal_entry{j::wal_kind::base, "A", 1, 0, "not a segment"},
                          j::wal_entry{j::wal_kind::append, "", 1, 16, "x"},
                          j::wal_entry{j::wal_kind::append, "A", 1, 3, "x"}}) {
        auto t = j::scan_wal(build_wal({e}));
        EXPECT_TRUE(t.entries.empty());
        EXPECT_EQ(t.tail, j::tail_problem::invalid);
    }
}

TEST_F(journal_writer_test, many_sessions_in_one_turn_are_one_write)
{
    temp_dir d;
    j::writer_stats stats;
    j::journal_writer w({d.path.string(), 100, {}}, &stats);
    constexpr int n = 300;
    for (int i = 0; i < n; ++i)
        write_base(w, make_header("S" + std::to_string(i)), {});
    EXPECT_EQ(w.flush().writes, 1u);
    for (int turn = 1; turn <= 3; ++turn) {
        for (int i = 0; i < n; ++i)
            w.event("S" + std::to_string(i), first_seq + turn, element(100 + turn, first_seq + turn));
        auto before = stats.writes.load();
        auto r = w.flush();
        EXPECT_EQ(r.writes, 1u);
        EXPECT_EQ(stats.writes.load() - before, 1u);  // 300 sessions, one write(2)
    }
    EXPECT_EQ(stats.writes.load(), 4u);
    w.sync();
    // The catch-up thread wrote the segments: at most one write per session per turn.
    EXPECT_GE(stats.catch_up_writes.load(), static_cast<std::uint64_t>(n));
    EXPECT_LE(stats.catch_up_writes.load(), static_cast<std::uint64_t>(4 * n));
    std::error_code ec;
    for (int i = 0; i < n; i += 37) {
        auto s = w.load("S" + std::to_string(i), ec);
        ASSERT_TRUE(s) << i;
        ASSERT_EQ(s->events.size(), 3u);
        EXPECT_EQ(s->events[2].element, element(103, first_seq + 3));
    }
}

TEST_F(journal_writer_test, a_crash_between_the_wal_write_and_the_catch_up_loses_nothing)
{
    temp_dir d;
    j::writer_options o{d.path.string(), 0, {}};
    o.catch_up_ms = 3'600'000;  // the catch-up thread does not run on its own
    std::string wal_path;
    {
        j::journal_writer w(o);
        write_base(w, make_header("K1"), {});
        write_base(w, make_header("K2"), {});
        w.flush();
        w.sync();  // K1 and K2 have segments
        for (std::uint32_t i = 1; i <= 4; ++i) {
            w.event("K1", first_seq + i, element(10 + i, first_seq + i));
            w.flush();
        }
        write_base(w, make_header("K3", first_seq + 1), {{first_seq + 1, element(5, first_seq + 1)}});
        w.event("K2", first_seq + 1, element(7, first_seq + 1));
        w.flush();
        w.crash_for_test();  // killed: the last records are in the WAL only
        wal_path = wal_files(d.path).at(0).string();
    }
    EXPECT_EQ(segment_files(d.path).size(), 2u);  // K3's segment was never written
    {
        j::journal_writer w(o);
        std::error_code ec;
        auto k1 = w.load("K1", ec);
        ASSERT_TRUE(k1);
        EXPECT_TRUE(k1->events.empty());  // without the replay, K1's events are missing
    }
    // Start-up replays the WAL (a torn last entry, as a machine crash leaves, is dropped).
    {
        std::ofstream(wal_path, std::ios::binary | std::ios::app) << std::string("\x20\x00\x00", 3);
    }
    j::writer_stats stats;
    auto r = j::recover(d.path.string(), &stats);
    EXPECT_EQ(r.files, 1u);  // the crashed writer's (the clean one retired its own)
    EXPECT_EQ(r.tails_dropped, 1u);
    EXPECT_EQ(r.entries, 8u);  // one per session per flush
    EXPECT_TRUE(wal_files(d.path).empty());
    {
        j::journal_writer w(o);
        std::error_code ec;
        auto k1 = w.load("K1", ec);
        ASSERT_TRUE(k1);
        ASSERT_EQ(k1->events.size(), 4u);
        EXPECT_EQ(k1->events[3].element, element(14, first_seq + 4));
        auto k2 = w.load("K2", ec);
        ASSERT_TRUE(k2);
        EXPECT_EQ(k2->events.size(), 1u);
        auto k3 = w.load("K3", ec);
        ASSERT_TRUE(k3);
        EXPECT_EQ(k3->events.size(), 1u);
        EXPECT_EQ(k3->dropped_bytes, 0u);
    }
    // The clean shutdown left nothing to replay.
    EXPECT_EQ(j::recover(d.path.string()).files, 0u);
}

TEST_F(journal_writer_test, replay_of_entries_already_caught_up_is_idempotent)
{
    temp_dir d;
    j::writer_options o{d.path.string(), 0, {}};
    o.catch_up_ms = 3'600'000;
    std::string before;
    {
        j::journal_writer w(o);
        write_base(w, make_header("I"), {});
        for (std::uint32_t i = 1; i <= 5; ++i) {
            w.event("I", first_seq + i, element(i, first_seq + i));
            w.flush();
        }
        w.sync();  // everything caught up ...
        std::ifstream in(segment_files(d.path).at(0), std::ios::binary);
        before.assign(std::istreambuf_iterator<char>(in), {});
        w.crash_for_test();  // ... but the WAL was not retired
    }
    ASSERT_EQ(wal_files(d.path).size(), 1u);
    auto r = j::recover(d.path.string());
    EXPECT_EQ(r.entries, 5u);  // one per flush
    std::ifstream in(segment_files(d.path).at(0), std::ios::binary);
    std::string after(std::istreambuf_iterator<char>(in), {});
    EXPECT_EQ(after, before);
}

TEST_F(journal_writer_test, a_session_loaded_right_after_close_sees_records_only_in_the_wal)
{
    temp_dir d;
    j::writer_options o{d.path.string(), 100, {}};
    o.catch_up_ms = 3'600'000;  // only a waiter makes the catch-up run
    j::journal_writer w(o);
    write_base(w, make_header("L"), {});
    w.event("L", first_seq + 1, element(9, first_seq + 1));
    w.close("L");
    EXPECT_TRUE(segment_files(d.path).empty());  // not caught up yet
    std::error_code ec;
    auto s = w.load("L", ec);  // waits for the catch-up of what was written before
    ASSERT_TRUE(s) << ec.message();
    ASSERT_EQ(s->events.size(), 1u);
}

TEST_F(journal_writer_test, rotated_wal_files_are_retired_once_caught_up)
{
    temp_dir d;
    j::writer_stats stats;
    j::writer_options o{d.path.string(), 0, {}};
    o.rotate_bytes = 2000;
    {
        j::journal_writer w(o, &stats);
        write_base(w, make_header("W"), {});
        w.flush();
        for (std::uint32_t i = 1; i <= 200; ++i) {
            w.event("W", first_seq + i, element(i, first_seq + i, "\"" + std::string(50, 'r') + "\""));
            w.flush();
        }
        w.sync();
        EXPECT_GT(stats.wal_rotations.load(), 5u);
        EXPECT_EQ(stats.wal_retired.load(), stats.wal_rotations.load());
        EXPECT_EQ(wal_files(d.path).size(), 1u);  // only the current one
        EXPECT_LT(fs::file_size(wal_files(d.path).at(0)), 2000u + 200u);
        std::error_code ec;
        auto s = w.load("W", ec);
        ASSERT_TRUE(s);
        EXPECT_EQ(s->events.size(), 200u);
    }
    EXPECT_TRUE(wal_files(d.path).empty());  // a clean shutdown leaves nothing to replay
    EXPECT_EQ(j::recover(d.path.string()).files, 0u);
}
