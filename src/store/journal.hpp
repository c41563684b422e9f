// The session journal: each session's header and the events since its last snapshot,
// in files under the data dir, so a restarted reflector resumes every session.
//
// Layout: <dir>/<session dir>/<generation>.lsj, one directory per session (its id,
// percent-encoded), one or two segment files in it. Generation is 16 hex digits and
// grows by one each time the session's state is rewritten (creation, resume,
// compaction at a snapshot). Beside them, <dir>/.wal/<writer>-<generation>.lsw: each
// writer's (worker's) write-ahead log (a name encode_id never makes, so never a session).
//
// Segment file (all integers little-endian):
//
//     file header  "LSJOURNL" | u32 format version | u32 crc32c(previous 12 bytes)
//     record*      u32 n | u32 crc32c(n, type, payload) | u8 type | payload (n bytes)
//
// Record types:
//
//     1 header  the session_header as a JSON object (format_version 1 field names)
//     2 event   u32 seq | the log element `[time,seq,...]`, the same bytes clients got
//     3 seen    i64 session time: no client has been shown a later time
//     4 base    empty: everything before it is the segment's complete base
//
// A segment starts with its base: header, the log's events (ending at the header's
// seq), base. After that come appends: events, seen records and new headers (last
// header wins; a header with a new snapshot drops the events up to its seq, as the
// session does at SNAP, so a snapshot is correct before any compaction). Events
// continue the seq by exactly one; an appended header repeats the current seq.
//
// Reading stops at the first record that is incomplete (torn), fails its checksum, or
// does not fit the rules above: that tail is dropped and reported, never applied. A
// segment whose base is incomplete is not used; the previous generation, which is
// deleted only after its successor's base is durable, is read instead.
//
// Write-ahead log file (format wal_format_version; little-endian):
//
//     file header  "LSJWALOG" | u32 wal format version | u32 crc32c(previous 12 bytes)
//     entry*       u32 n | u32 crc32c(n, body) | body (n bytes)
//     body         u8 kind (1 append, 2 base) | u64 generation | u64 offset |
//                  u16 id length | session id | segment bytes
//
// An entry says "these bytes belong at `offset` of segment `generation` of session `id`"
// (a base entry: they are the whole new segment). Applying an entry twice changes
// nothing, so replay needs no record of what was applied.
//
// Writing: records of one loop turn are staged in memory per session; flush() frames
// every session's staged bytes as WAL entries and writes them with ONE write(2) to the
// writer's WAL (fdatasync of that one file inside flush() when fsync_ms is 0). The
// writer's catch-up thread then copies the same bytes into the segment files (one
// pwrite per session per catch-up round, every catch_up_ms), fdatasyncs the WAL every
// fsync_ms (group commit), and deletes a WAL file once it has been rotated out
// (rotate_bytes) and every segment it touched is fdatasynced. A write that fails (disk
// full) is rolled back with ftruncate and everything stays staged for the next flush.
// load() first waits for the catch-up of everything written before it was called, so a
// session resumed right after it left memory sees all its records. recover() (start-up,
// before any writer) replays every WAL left by a crash into the segment files.
//
// @par Thread safety
// scan_segment, scan_wal and the codec functions are pure. A journal_writer belongs to
// one thread (a worker); load(), remove(), stored(), in_use() and sync() may be called
// from any thread (the disk pool). Its catch-up thread runs beside it.
#pragma once

#include "reflector/journal_record.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace lockstep::journal {

inline constexpr std::uint32_t format_version = 1;
inline constexpr std::string_view magic = "LSJOURNL";
inline constexpr std::size_t file_header_bytes = 16;
inline constexpr std::size_t record_header_bytes = 9;
/// A record longer than this is treated as corrupt (a SYNC-sized log entry is far less).
inline constexpr std::uint32_t max_record_bytes = 64u << 20;
inline constexpr std::uint32_t wal_format_version = 1;
inline constexpr std::string_view wal_magic = "LSJWALOG";
inline constexpr std::size_t wal_entry_header_bytes = 8;  // u32 n | u32 crc
inline constexpr std::size_t wal_body_fixed_bytes = 19;   // kind | generation | offset | id length
/// A WAL entry longer than this is treated as corrupt (one session's records of one turn).
inline constexpr std::uint32_t max_wal_entry_bytes = 1u << 30;

enum class record_type : std::uint8_t { header = 1, event = 2, seen = 3, base = 4 };

enum class errc {
    bad_id = 1,      // session id cannot be a directory name (empty or too long)
    bad_magic,       // not a journal segment
    bad_version,     // written by another format version
    no_base,         // no segment with a complete base
    gap,             // a WAL entry starts past the end of its segment
};
std::error_category const&
error_category() noexcept;
inline std::error_code
make_error_code(errc e) noexcept
{
    return {static_cast<int>(e), error_category()};
}

// ---------------------------------------------------------------------------- codec

/// CRC-32C (Castagnoli), continuing from `crc` (0 to start).
std::uint32_t
crc32c(std::string_view data, std::uint32_t crc = 0) noexcept;

/// The 16-byte file header of the given format version (and magic: segment or WAL).
std::string
file_header(std::uint32_t version = format_version, std::string_view file_magic = magic);

/// Appends one framed record to `out`.
void
append_record(std::string& out, record_type type, std::string_view payload);
void
append_header(std::string& out, session_header const& h);
void
append_event(std::string& out, std::uint32_t seq, std::string_view element);
void
append_seen(std::string& out, std::int64_t time_ms);
void
append_base(std::string& out);

/// The header record's JSON, and back (nullopt when a field is missing or mistyped).
std::string
header_json(session_header const& h);
std::optional<session_header>
parse_header_json(std::string_view text);

/// Directory name for a session id: bytes outside [A-Za-z0-9_-] percent-encoded.
/// Empty for an id that is empty or whose name would exceed 200 bytes.
std::string
encode_id(std::string_view id);
/// Inverse of encode_id; nullopt for a name encode_id cannot produce.
std::optional<std::string>
decode_id(std::string_view name);

// ---------------------------------------------------------------------------- reading

enum class scan_status { ok, empty, bad_magic, bad_version, no_base };
enum class tail_problem { none, torn, checksum, invalid };
char const*
to_string(tail_problem p) noexcept;

/// One segment's contents as far as they are intact.
struct segment_scan {
    scan_status status = scan_status::empty;
    std::uint32_t version = 0;           // the file's format version (when magic matched)
    tail_problem tail = tail_problem::none;
    std::string tail_detail;             // what was wrong (for the log)
    std::size_t valid_bytes = 0;         // prefix that was applied
    std::size_t dropped_bytes = 0;       // size - valid_bytes
    bool has_header = false;
    session_header header;               // the last header record
    std::vector<logged_event> events;    // the log since the snapshot, in seq order
    std::uint32_t seq = 0;               // last seq (header or event)
    std::int64_t seen_ms = 0;            // latest session time any record shows
};

/// Parses a segment file's bytes. Never throws; any input is safe.
segment_scan
scan_segment(std::string_view bytes);

/// A stored session, ready to be resumed.
struct stored_session {
    session_header header;             // header.seq is the last seq
    std::vector<logged_event> events;  // since the snapshot
    std::int64_t resume_time_ms = 0;   // no client was shown a later session time
    std::string file;                  // the segment it came from
    std::uint64_t generation = 0;
    std::uint64_t newest_generation = 0;  // highest in its directory: a new base goes above it
    std::size_t dropped_bytes = 0;     // torn/corrupt tail left out
};

// ---------------------------------------------------------------------------- write-ahead log

enum class wal_kind : std::uint8_t { append = 1, base = 2 };

/// One WAL entry: `data` belongs at `offset` of segment `generation` of session `id`.
/// The views point into the bytes it was read from (or built from).
struct wal_entry {
    wal_kind kind = wal_kind::append;
    std::string_view id;
    std::uint64_t generation = 0;
    std::uint64_t offset = 0;
    std::string_view data;
};

/// Appends one framed entry to `out`.
void
append_wal_entry(std::string& out, wal_entry const& e);

/// A WAL file's intact entries.
struct wal_scan {
    scan_status status = scan_status::empty;  // ok once the file header is valid
    std::uint32_t version = 0;
    tail_problem tail = tail_problem::none;
    std::string tail_detail;
    std::size_t valid_bytes = 0;
    std::size_t dropped_bytes = 0;
    std::vector<wal_entry> entries;           // views into the scanned bytes
};

/// Parses a WAL file's bytes; stops at the first torn, corrupt or invalid entry. Never
/// throws; any input is safe.
wal_scan
scan_wal(std::string_view bytes);

// ---------------------------------------------------------------------------- writing

struct writer_options {
    std::string dir;               // the journal directory (<data-dir>/journal)
    std::int32_t fsync_ms = 100;   // group commit period; 0 = fdatasync inside flush()
    /// Called on the catch-up thread (or in flush()) with each WAL fdatasync's duration.
    std::function<void(double seconds)> on_fsync;
    std::string wal_name = "w0";   // this writer's WAL files: <dir>/.wal/<wal_name>-<gen>.lsw
    std::uint64_t rotate_bytes = 8u << 20;  // a WAL this big is replaced (bounds replay at start-up)
    std::int32_t catch_up_ms = 10;          // how often the segment files are brought up to date
};

/// Counters, readable from any thread (metrics).
struct writer_stats {
    std::atomic<std::uint64_t> bytes_written{0};
    std::atomic<std::uint64_t> records_written{0};
    std::atomic<std::uint64_t> writes{0};          // write(2) calls to the WAL that succeeded (one per flush)
    std::atomic<std::uint64_t> write_errors{0};
    std::atomic<std::uint64_t> fsyncs{0};
    std::atomic<std::uint64_t> fsync_errors{0};
    std::atomic<std::uint64_t> segments_created{0};
    std::atomic<std::uint64_t> tails_dropped{0};   // torn or corrupt tails found by load()
    std::atomic<std::uint64_t> sessions_loaded{0};
    std::atomic<std::uint64_t> catch_up_writes{0};  // segment writes by the catch-up thread (off the loop)
    std::atomic<std::uint64_t> catch_up_errors{0};
    std::atomic<std::uint64_t> wal_rotations{0};
    std::atomic<std::uint64_t> wal_retired{0};      // WAL files deleted after their catch-up
    std::atomic<std::uint64_t> wal_replayed{0};     // WAL entries applied by recover()
};

/// What recover() found.
struct recover_result {
    std::size_t files = 0;     // WAL files replayed (and deleted)
    std::size_t entries = 0;   // entries applied
    std::size_t skipped = 0;   // entries for segments that are gone (a removed session)
    std::size_t bytes = 0;     // WAL bytes read
    std::size_t tails_dropped = 0;
};

/// Start-up, before any writer on `dir` exists: applies every WAL file left in
/// <dir>/.wal (a crash) to the segment files, fdatasyncs them and deletes the WAL files.
/// Its cost follows the WAL sizes (bounded by rotate_bytes per writer), not the number of
/// stored sessions. Throws std::system_error when a segment cannot be written or a WAL
/// has another format version (nothing is deleted then).
recover_result
recover(std::string const& dir, writer_stats* stats = nullptr);



struct flush_result {
    std::size_t writes = 0;              // write(2) calls made
    std::vector<std::string> failed;     // sessions whose records stay staged
    std::error_code error;               // the first failure
};

class journal_writer final : public journal_sink {
public:
    /// Creates `opts.dir`; throws std::system_error when it cannot (start-up only).
    journal_writer(writer_options opts, writer_stats* stats = nullptr);
    ~journal_writer();
    journal_writer(journal_writer const&) = delete;
    journal_writer& operator=(journal_writer const&) = delete;

    /// Reads a stored session: nullopt with `ec` clear when there is none. Tails that
    /// are dropped are logged and counted. Does not change the files. Waits until the
    /// segment files hold everything written before the call (catch-up). Any thread.
    std::optional<stored_session> load(std::string const& id, std::error_code& ec);
    /// load() for a look only (retention, /sessions): does not count as the session being
    /// resumed (in_use).
    std::optional<stored_session> read(std::string const& id, std::error_code& ec);
    /// A session was resumed; `generation` is its stored_session::newest_generation. Its
    /// next base gets a newer generation, so no file a crash may still need is rewritten.
    void resumed(std::string const& id, std::uint64_t generation);

    // ---- staging (nothing touches the disk until flush) ----

    /// Starts a new segment with the session's whole state (creation, resume,
    /// compaction): begin_base, event() for each log entry, end_base. Records staged
    /// before for the same session are superseded and dropped.
    void begin_base(session_header const& h) override;
    void end_base(std::string const& id) override;
    /// Appends to the session's current (or staged) segment.
    void header(session_header const& h) override;
    void event(std::string const& id, std::uint32_t seq, std::string_view element) override;
    void seen(std::string const& id, std::int64_t time_ms) override;

    /// Writes everything staged with one write(2) to the WAL; waits for its fdatasync
    /// when fsync_ms is 0. On failure every staged session is reported and kept.
    flush_result flush();
    /// True while records of this session are staged (not yet written), or written to
    /// the WAL but not yet to its segment because that failed (retried).
    bool pending(std::string const& id) const;
    /// True while any records are staged.
    bool dirty() const noexcept { return !dirty_.empty(); }

    /// The session left memory: its file is closed (after the pending fsync); the
    /// journal stays. Staged records are flushed first; if that fails, nothing is
    /// closed and they stay staged (pending() tells).
    void close(std::string const& id);
    /// Deletes a session's journal (retention). Busy while this writer has it open, or
    /// while a WAL not yet retired holds records of it (a replay would bring them back).
    /// Any thread.
    std::error_code remove(std::string const& id);
    /// True while the session is open in this writer, its catch-up failed, or load()
    /// read it in the last 10 minutes (a JOIN is resuming it). Any thread.
    bool in_use(std::string const& id);
    /// Ids of every stored session (a directory scan: for retention and /sessions).
    std::vector<std::string> stored() const;
    /// Bytes in this writer's WAL files on disk (a directory scan). Any thread.
    std::uint64_t wal_bytes() const;
    /// Blocks until everything written so far is in the segment files and the WAL is
    /// fdatasynced (drain, tests). Any thread.
    void sync();
    /// Starts a new WAL file if the current one holds anything; the catch-up thread
    /// deletes the old one once its records are in fdatasynced segments. Writer's thread.
    void rotate();
    /// Tests: stops as a killed process would (no flush, no catch-up, WAL left behind).
    void crash_for_test();

    std::string const& dir() const noexcept { return opts_.dir; }

private:
    struct wal_file;
    struct op;
    struct session_file {
        std::string id;
        std::uint64_t generation = 0;      // of its current segment; 0 = none yet
        std::uint64_t seg_bytes = 0;       // that segment's size once caught up
        std::string staged;
        std::size_t staged_records = 0;
        bool rebase = false;               // `staged` is a whole new segment
        bool queued = false;               // in dirty_
        std::uint64_t wal = 0;             // generation of the WAL file of its last entry
    };

    session_file* file_of(std::string const& id);
    void mark(session_file& f, std::size_t records);
    std::shared_ptr<wal_file> open_wal();
    void hand(op o);
    /// Waits until the catch-up thread applied everything handed so far (`whole_round`:
    /// and finished that round's syncs and WAL retirements).
    void wait_applied(std::unique_lock<std::mutex>& lk, bool whole_round);
    void catch_up_loop();
    void process(std::vector<op>& ops);
    void retire(std::shared_ptr<wal_file> const& wal);
    void sync_wal(wal_file& wal);

    writer_options opts_;
    writer_stats* stats_;
    writer_stats own_stats_;
    std::string wal_dir_;
    std::unordered_map<std::string, session_file> files_;
    std::vector<std::string> dirty_;
    std::shared_ptr<wal_file> wal_;          // the current WAL (writer's thread)
    std::uint64_t wal_generation_ = 0;

    // Shared with the catch-up thread (under mu_).
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<op> queue_;
    std::uint64_t handed_ = 0, applied_ = 0, finished_ = 0, synced_ = 0;  // ops handed / applied /
                                                                          // round done / covered by a WAL sync
    bool stop_ = false, crashed_ = false;
    bool urgent_ = false;                    // someone waits: do not wait for the period
    bool sync_wanted_ = false;               // sync() waits for a WAL fdatasync
    std::shared_ptr<wal_file> wal_now_;      // the current WAL, for the thread's fdatasync
    std::unordered_set<std::string> open_;   // sessions with a session_file
    std::unordered_set<std::string> behind_; // catch-up failed; retried
    std::unordered_map<std::string, std::uint64_t> last_wal_;  // closed sessions: WAL of their last entry
    std::uint64_t retired_below_ = 0;        // every WAL file of a lower generation is retired
    std::unordered_map<std::string, std::chrono::steady_clock::time_point> loaded_;

    struct catch_up_state;                   // the catch-up thread's own
    std::unique_ptr<catch_up_state> cu_;
    std::thread thread_;
};

}  // namespace lockstep::journal

template <>
struct std::is_error_code_enum<lockstep::journal::errc> : std::true_type {};
