// Session state in Redis for a cluster (docs/durability.md, "Cluster"): who owns a
// session (a lease with a fencing number) and its journal (header, events since the
// snapshot, the latest session time shown), written only by the current owner, so any
// reflector can take a session over when its owner dies. Also the blobs every
// reflector must be able to read.
//
// Every call blocks on Redis (short time-outs): the server makes them only on its
// directory thread, never on an event loop.
//
// @par Thread safety
// Like redis::link: any thread, serialised by the link.
#pragma once

#include "redis/link.hpp"
#include "reflector/journal_record.hpp"

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lockstep::store {

/// A held lease: the token names the holder and the fencing number.
struct lease {
    std::string token;        // "<holder>#<fence>"
    std::uint64_t fence = 0;  // grows by one at every acquisition; the first is Redis' time (ms)
};

/// A session as its last owner journaled it.
struct cluster_state {
    session_header header;             // header.seq is the last seq written
    std::vector<logged_event> events;  // since the snapshot
    std::int64_t seen_ms = 0;          // no client was shown a later session time
};

struct acquire_result {
    enum class status { acquired, held, unavailable } what = status::unavailable;
    lease granted;                     // acquired
    std::string holder;                // held: the current holder's token
    std::optional<cluster_state> state; // acquired: the stored session, if any
    bool unreadable = false;           // acquired, but the stored state does not parse
    bool outage = false;               // unavailable: Redis was silent for everyone, takeovers wait a lease
};

/// One session's records of one loop turn.
struct session_append {
    std::string id;
    std::uint64_t fence = 0;
    bool rebase = false;               // the whole state: replaces the stored one
    std::string header_json;           // empty: unchanged
    std::uint32_t seq = 0;             // last seq after this append (with a base, a header or events)
    std::int64_t seen_ms = -1;         // -1: unchanged
    std::vector<std::string> events;   // log elements, continuing the stored seq
    /// Blobs the header names (snapshot, persisted data): their time to live is set to the
    /// retention again when the append is written, so a blob lives as long as a session
    /// that still needs it (sent with each header, i.e. at every snapshot and rebase).
    std::vector<std::string> blobs = {};
};

enum class append_status { ok, fenced, gap, unavailable };

/// May the holder hand a session off to the reflector that wants it (PROTOCOL.md 8,
/// docs/operations.md "Clusters")? refused: it moved less than the minimum interval ago
/// (or hand-offs are off); not_held: the lease is not this holder's any more.
enum class handoff_status { allowed, refused, not_held, unavailable };

struct sessions_options {
    std::uint32_t lease_ms = 2000;
    std::uint64_t retention_ms = 30ull * 24 * 3600 * 1000;  // keys expire after this long unused
};

class redis_sessions {
public:
    redis_sessions(redis::link& link, sessions_options opts);

    /// Takes the session's lease if nobody holds it, and reads its stored state.
    acquire_result acquire(std::string const& id, std::string const& holder);
    /// `reseeded`: Redis had lost the session (restarted empty); the lease is the
    /// holder's again, and the holder must write its whole state.
    enum class renew_status { ok, lost, unavailable, reseeded };
    /// Extends each lease (one round trip for all). Results in the same order.
    std::vector<renew_status> renew(std::vector<std::pair<std::string, lease>> const& leases);
    /// Every reflector's heartbeat in Redis, each quarter of the lease: keeps Redis' clock
    /// of the cluster, from which it tells an outage (nobody reached it for half a lease)
    /// and then lets no session be taken over for one lease; so it does when the clock
    /// this process saw before is gone (Redis lost its data). Returns the silence (ms)
    /// being waited out (0: none; -1: Redis lost its data), or nullopt when Redis cannot
    /// be reached.
    std::optional<std::int64_t> tick();
    /// Gives the lease up (only if still held by `l`). False if not held or unreachable.
    bool release(std::string const& id, lease const& l);
    /// Writes every session's records in one round trip; each is refused unless its
    /// fence is the session's current one. Results in the same order. The blobs of the
    /// appends written get the retention as their time to live (a second round trip,
    /// only when some append names blobs).
    std::vector<append_status> append(std::vector<session_append> const& batch);

    /// Hand-off on JOIN. A reflector that got a JOIN for a session `holder` holds asks
    /// for it: the id goes into the holder's want set (expires after four leases unless
    /// asked again). False when Redis is unreachable.
    bool want(std::string const& holder, std::string const& id);
    /// True while `id` may not be handed off again (it moved within the interval).
    bool recently_moved(std::string const& id);
    /// Takes up to `max` ids out of this holder's want set.
    std::vector<std::string> wanted(std::string const& holder, std::size_t max);
    /// Atomically: still held by `l`, and not handed off within `min_interval_ms`
    /// (0: never); if so, no further hand-off of it for that interval.
    handoff_status may_hand_off(std::string const& id, lease const& l, std::uint32_t min_interval_ms);

    /// Blobs, for every reflector: stored for `ttl_s` seconds since the last write.
    bool put_blob(std::string const& path, std::string_view bytes, std::uint64_t ttl_s);
    /// nullopt: not there or unreachable (`reachable` tells which).
    std::optional<std::string> get_blob(std::string const& path, bool& reachable);

    sessions_options const& options() const noexcept { return opts_; }

private:
    /// EVALSHA of the script with the session's five keys, the cluster clock and outage keys, and `op`.
    redis::command_args script_args(std::string const (&keys)[7], char const* op) const;
    /// Runs script calls in one round trip; calls refused with NOSCRIPT (a restarted or
    /// flushed Redis) are run again, in order, after SCRIPT LOAD.
    std::optional<std::vector<redis::value>> run_scripts(std::vector<redis::command_args> const& cmds);

    redis::link& link_;
    sessions_options opts_;
    std::string sha_;  // the script's SHA-1, hex
    std::atomic<bool> seen_clock_{false};  // a tick or acquire of this process reached Redis
};

/// The Redis key names of a session (tests read them).
std::string session_key(std::string const& id, char const* what);
/// The holder part of a lease token ("<holder>#<fence>").
std::string holder_of(std::string const& token);

}  // namespace lockstep::store
