// The session journal: each session's header and the events since its last snapshot,
// in files under the data dir, so a restarted reflector resumes every session.
//
// Layout: <dir>/<session dir>/<generation>.lsj, one directory per session (its id,
// percent-encoded), one or two segment files in it. Generation is 16 hex digits and
// grows by one each time the session's state is rewritten (creation, resume,
// compaction at a snapshot).
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
// deleted only after its successor's base is on disk, is read instead.
//
// Writing: records of one loop turn are staged in memory and written by flush(), one
// write(2) per session with new records (a new segment: one write of its whole base).
// fdatasync runs on the writer's own thread every fsync_ms (group commit), or inside
// flush() when fsync_ms is 0. A write that fails (disk full) is rolled back with
// ftruncate and kept staged for the next flush; the session is reported as failing.
//
// @par Thread safety
// scan_segment and the codec functions are pure. A journal_writer belongs to one thread
// (a worker); only its internal fsync thread runs beside it.
#pragma once

#include "reflector/journal_record.hpp"

#include <atomic>
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
#include <vector>

namespace lockstep::journal {

inline constexpr std::uint32_t format_version = 1;
inline constexpr std::string_view magic = "LSJOURNL";
inline constexpr std::size_t file_header_bytes = 16;
inline constexpr std::size_t record_header_bytes = 9;
/// A record longer than this is treated as corrupt (a SYNC-sized log entry is far less).
inline constexpr std::uint32_t max_record_bytes = 64u << 20;

enum class record_type : std::uint8_t { header = 1, event = 2, seen = 3, base = 4 };

enum class errc {
    bad_id = 1,      // session id cannot be a directory name (empty or too long)
    bad_magic,       // not a journal segment
    bad_version,     // written by another format version
    no_base,         // no segment with a complete base
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

/// The 16-byte file header of the given format version.
std::string
file_header(std::uint32_t version = format_version);

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
    std::size_t dropped_bytes = 0;     // torn/corrupt tail left out
};

// ---------------------------------------------------------------------------- writing

struct writer_options {
    std::string dir;               // the journal directory (<data-dir>/journal)
    std::int32_t fsync_ms = 100;   // group commit period; 0 = fdatasync inside flush()
    /// Called on the fsync thread (or in flush()) with each fdatasync's duration.
    std::function<void(double seconds)> on_fsync;
};

/// Counters, readable from any thread (metrics).
struct writer_stats {
    std::atomic<std::uint64_t> bytes_written{0};
    std::atomic<std::uint64_t> records_written{0};
    std::atomic<std::uint64_t> writes{0};          // write(2) calls that succeeded
    std::atomic<std::uint64_t> write_errors{0};
    std::atomic<std::uint64_t> fsyncs{0};
    std::atomic<std::uint64_t> fsync_errors{0};
    std::atomic<std::uint64_t> segments_created{0};
    std::atomic<std::uint64_t> tails_dropped{0};   // torn or corrupt tails found by load()
    std::atomic<std::uint64_t> sessions_loaded{0};
};

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
    /// are dropped are logged and counted. Does not change the files.
    std::optional<stored_session> load(std::string const& id, std::error_code& ec);

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

    /// Writes everything staged, one write per session; waits for fdatasync when
    /// fsync_ms is 0.
    flush_result flush();
    /// True while records of this session are staged (not yet written).
    bool pending(std::string const& id) const;
    /// True while any records are staged.
    bool dirty() const noexcept { return !dirty_.empty(); }

    /// The session left memory: its file is closed (after the pending fsync); the
    /// journal stays. Staged records are flushed first; if that fails, nothing is
    /// closed and they stay staged (pending() tells).
    void close(std::string const& id);
    /// Deletes a session's journal (retention). Not for a session this writer has open.
    std::error_code remove(std::string const& id);
    /// Ids of every stored session (a directory scan: for retention and /sessions).
    std::vector<std::string> stored() const;
    /// Blocks until everything written so far is fdatasynced (drain, tests).
    void sync();

    std::string const& dir() const noexcept { return opts_.dir; }

private:
    struct segment;
    struct session_file {
        std::string id;
        std::string path;                  // the session's directory
        std::uint64_t generation = 0;      // of `seg`; 0 = none yet
        std::shared_ptr<segment> seg;
        std::uint64_t seg_bytes = 0;
        std::string staged;
        std::size_t staged_records = 0;
        bool rebase = false;               // `staged` is a whole new segment
        bool queued = false;               // in dirty_
    };
    struct sync_batch {
        std::vector<std::shared_ptr<segment>> segments;
        std::vector<std::string> obsolete;  // deleted once `segments` are synced
    };

    session_file* file_of(std::string const& id);
    void mark(session_file& f, std::size_t records);
    std::error_code write_staged(session_file& f, sync_batch& batch);
    void run_sync(sync_batch& batch);
    void sync_loop();
    std::uint64_t latest_generation(std::string const& path) const;

    writer_options opts_;
    writer_stats* stats_;
    writer_stats own_stats_;
    std::unordered_map<std::string, session_file> files_;
    std::vector<std::string> dirty_;

    // Shared with the fsync thread.
    std::mutex mu_;
    std::condition_variable cv_;
    sync_batch to_sync_;
    std::uint64_t handed_ = 0, synced_ = 0;  // batches handed to / finished by the thread
    bool stop_ = false;
    bool urgent_ = false;                    // sync() waits: do not wait for the period
    std::thread syncer_;
};

}  // namespace lockstep::journal

template <>
struct std::is_error_code_enum<lockstep::journal::errc> : std::true_type {};
