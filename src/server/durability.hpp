// A worker's durable sessions: keeps each live session's journal current and brings
// stored sessions back (docs/durability.md). No Asio: the worker calls it at four
// points — a slot for an unknown session was made (resume), after every call into a
// session (capture), before any output reaches a socket (barrier), when a session
// leaves memory (release).
//
// @par Thread safety
// One per worker, used only on the worker's thread (the journal writer's fsync thread
// runs inside it).
#pragma once

#include "reflector/session.hpp"
#include "server/metrics.hpp"
#include "store/journal.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace lockstep {

struct durability_options {
    std::string dir;                    // <data-dir>/journal
    std::int32_t fsync_ms = 100;        // group commit period; 0 = before output is flushed
    std::uint32_t lease_ms = 1000;      // "seen" records run this far ahead of session time
    std::uint32_t seen_per_base = 3600; // after this many seen records the session is rewritten
                                        // (an idle session's journal does not grow forever)
    std::uint64_t retention_s = 30ull * 24 * 3600;  // stored sessions unused this long are deleted
    std::string files_dir;              // <data-dir>/files: blobs of expired sessions go too ("" = keep)
    std::string persist_dir;            // <data-dir>/persist: SAVE records, whose blobs always stay
    std::string wal_name = "w0";        // this worker's write-ahead log files (unique per worker)
    std::uint64_t tails_dropped_at_start = 0;  // torn WAL tails journal::recover() dropped (a metric)
};

/// The blob path (relative to the files dir) a snapshot or persisted-data URL names:
/// what follows "/files/" (and a "t/<token>/" pair), validated like a PUT path; nullopt
/// for a URL without one.
std::optional<std::string>
blob_of_url(std::string_view url);

/// Deletes the blobs that only expired sessions referenced: each expired header's
/// snapshot and persisted-data blob, and the other files of its snapshot's directory
/// when that directory is the session's own (`…/<persistentId>.<sessionId>/`). A blob
/// named in `keep` (the URLs of every session still stored and of every SAVE record)
/// or written after `older_than` stays. Returns how many files were deleted.
std::size_t
delete_expired_blobs(std::string const& files_dir, std::vector<session_header> const& expired,
                     std::vector<std::string> const& keep, std::filesystem::file_time_type older_than);

/// What of each session has been handed to a journal sink: the rules that decide, after
/// any call into a session, which records are new (shared by the file journal and the
/// cluster's Redis journal).
class capture_tracker {
public:
    /// Stages what changed since the last capture into `out`: the whole state when the
    /// session is new or has a new snapshot (compaction), else its new events and a
    /// header that changed, and a seen record (session time + `lease_ms`) when session
    /// time passed the last one. After `seen_per_base` seen records the state is
    /// rewritten, so an idle session's journal does not grow forever.
    void capture(session const& s, journal_sink& out);
    /// The session was restored from a journal that holds exactly its state and `seen_ms`.
    void restored(session const& s, std::int64_t seen_ms);
    /// The next capture writes the whole state (the stored one is unknown or broken).
    void force_base(std::string const& id) { sessions_.erase(id); }
    void forget(std::string const& id) { sessions_.erase(id); }

    std::uint32_t lease_ms = 1000;
    std::uint32_t seen_per_base = 3600;

private:
    struct journaled {
        bool based = false;             // a base with this session's state exists or is staged
        std::uint32_t seq = 0;          // last seq staged
        std::uint64_t header_version = 0;
        std::string snapshot;           // snapshot time/seq/url of the base or last header
        std::int64_t lease_ms = -1;     // latest seen record staged
        std::uint32_t seen_records = 0; // seen records since the base
    };
    void rebase(session const& s, journaled& j, journal_sink& out);

    std::unordered_map<std::string, journaled> sessions_;
};

class session_journal {
public:
    /// Throws std::system_error when the directory cannot be created (start-up only).
    session_journal(durability_options opts, worker_metrics& metrics);

    /// `s` was just made for an id not in memory: if it has a journal, restores it.
    /// A journal that cannot be read is moved aside (kept for the operator, logged) and
    /// the session starts afresh. True when the session was resumed.
    bool resume(session& s) { return apply(s, load(s.id())); }
    /// What load() read: the stored session, none (never stored), or an error.
    struct loaded {
        std::optional<journal::stored_session> stored;
        std::error_code ec;
    };
    /// Reads a stored session's journal. Safe on any thread (the disk pool): it reads
    /// only files and bumps atomic counters.
    loaded load(std::string const& id);
    /// resume() with what load() read, on the worker: restores `s` (just made for that
    /// id), or moves an unreadable journal aside.
    bool apply(session& s, loaded l);
    /// After any call into `s`: stages what changed since the last capture — the whole
    /// state when the session is new or has a new snapshot (a new segment: compaction),
    /// else its new events and a header that changed, and a seen record when session
    /// time passed the last one.
    void capture(session const& s);
    /// Writes everything staged. Call before any output is written to a socket.
    void
    barrier()
    {
        if (writer_.dirty())
            flush();
    }
    /// The session leaves memory; its journal stays. False (nothing released) while its
    /// journal cannot be written: the session must stay in memory, or what it holds
    /// that is not on disk yet would be lost.
    bool release(std::string const& id);
    /// True while the session's records cannot be written (disk full, I/O error). Its
    /// output must not be shown; it is retried at every barrier.
    bool
    failing(std::string const& id) const
    {
        return !failing_.empty() && failing_.count(id) > 0;
    }
    /// Ids of the stored sessions for which `mine` is true and `live` is false.
    std::vector<std::string> stored(std::function<bool(std::string const&)> const& mine,
                                    std::function<bool(std::string const&)> const& live) const;
    /// Deletes the journals of sessions (`mine`, not `live`, not open in the writer nor
    /// read by a JOIN lately) unused for the retention period, and the blobs only they
    /// referenced, and updates the disk-usage gauge. Returns how many were deleted. Runs
    /// on the disk pool (any thread but the worker's): it reads every stored header.
    /// A session whose records may still be in a WAL that is not yet retired waits for
    /// the next sweep (rotate() first, on the worker).
    std::size_t sweep(std::function<bool(std::string const&)> const& mine,
                      std::function<bool(std::string const&)> const& live);
    /// Starts a new write-ahead log file so the current one can be retired (the worker,
    /// before each retention sweep).
    void rotate() { writer_.rotate(); }
    /// Waits until everything written is on disk (drain).
    void sync();

private:
    void flush();
    void mirror_stats();
    /// The URLs every remaining stored session and SAVE record names.
    std::vector<std::string> referenced_urls();

    durability_options opts_;
    worker_metrics& metrics_;
    journal::writer_stats stats_;
    journal::journal_writer writer_;
    capture_tracker tracker_;
    std::unordered_set<std::string> failing_;  // sessions whose last write failed
};

}  // namespace lockstep
