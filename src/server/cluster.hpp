// Cluster sessions (docs/durability.md, "Cluster"): each session has one owner, the
// reflector holding its lease in Redis; the owner journals the session to Redis and
// shows no output before Redis has what it reports (write before show); a reflector
// that receives a JOIN for a session nobody holds takes it over from Redis.
//
// Two halves: `cluster_sessions` per worker (its thread only: owned sessions, staged
// records, batches, connections waiting for a batch) and `lease_keeper` on the
// directory thread (the Redis calls: acquire with retries, renew every quarter of the
// lease, append, release). They talk only through directory_thread::run() and
// worker::defer(); no event loop ever waits on Redis.
#pragma once

#include "common/unique_function.hpp"
#include "reflector/journal_record.hpp"
#include "server/durability.hpp"
#include "store/redis_sessions.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace lockstep {

struct worker;
struct server_state;
class flushable;

/// The directory thread's side: which leases this process holds, renewal, and every
/// Redis call of the cluster session state.
///
/// @par Thread safety
/// Only on the directory thread (created before the workers run, then used there),
/// except redis_unreachable() (any thread) and the outage watchdog's own thread, which
/// shares only what is under `watch_mu_`.
class lease_keeper {
public:
    lease_keeper(server_state& st, std::unique_ptr<redis::link> link, store::sessions_options opts);
    ~lease_keeper();

    store::redis_sessions& store() noexcept { return store_; }
    /// Starts the renewal timer (call once, on the directory thread).
    void start();
    /// What an acquire reports: the result and, when the session is held by a live
    /// reflector and may not move now, that reflector's registered ws:// URL (forward).
    using acquired_fn = unique_function<void(store::acquire_result, std::string forward)>;
    /// Tries to take `id` for worker `w` until `wait` has passed (polling while another
    /// reflector holds it, which is asked once to hand it over); then calls `done` on the
    /// directory thread. A session that may not move is reported at once with its
    /// owner's URL, if the owner registered one.
    void acquire(std::string id, unsigned w, std::chrono::steady_clock::time_point until, acquired_fn done,
                 bool asked = false);
    /// Stops renewing; releases it in Redis when `release`.
    void drop(std::string const& id, bool release);
    /// Hand-off on JOIN: asks the holder named in `token` to hand `id` over to this
    /// reflector (through Redis; --handoff-min-interval-ms 0: never asks).
    void want(std::string const& token, std::string const& id);
    std::string const& holder() const noexcept { return holder_; }
    std::uint32_t lease_ms() const noexcept { return store_.options().lease_ms; }
    /// For /health/redis, from any thread: this reflector cannot reach Redis now.
    bool redis_unreachable() const noexcept;

private:
    void renew_all();
    /// acquire() again in 100 ms.
    void retry(std::string id, unsigned w, std::chrono::steady_clock::time_point until, acquired_fn done,
               bool asked);
    /// The sessions other reflectors asked for: each one Redis allows to move is handed
    /// off by its worker.
    void hand_off_wanted();
    struct peer {
        std::string id, url, host, port;  // host and port empty: not a plain ws:// URL
    };
    /// The outage watchdog (its own thread, every 100 ms; it makes no Redis call and
    /// never waits on the directory thread, which Redis' time-outs may hold up): while
    /// the lease link finds Redis unreachable, ride_out_outage().
    void watch();
    /// If every other live reflector says it cannot reach Redis either, nobody can take a
    /// session over, so the held sessions are kept (their validity extended) and, once
    /// Redis has been unreachable for half a lease, shown without Redis (set_outage).
    /// Else they run out as usual. On the watchdog thread.
    void ride_out_outage(std::vector<std::vector<std::string>> const& held, std::vector<peer> const& peers,
                         std::int64_t down_us);
    void set_outage(bool on);
    /// The held ids per worker, for the watchdog (after each renewal round).
    void publish_held();
    /// The other live reflectors (ws:// peer URLs), from the directory, every few seconds.
    void refresh_peers();

    server_state& st_;
    std::unique_ptr<redis::link> link_;
    store::redis_sessions store_;
    std::string holder_;
    struct held {
        store::lease l;
        unsigned worker = 0;
    };
    std::unordered_map<std::string, held> held_;
    std::int64_t unreachable_since_us_ = 0;  // the first failed tick (0: Redis reachable), for the log
    bool silence_logged_ = false;
    std::int64_t peers_refreshed_us_ = 0;
    // Shared with the watchdog thread.
    std::mutex watch_mu_;
    std::condition_variable watch_cv_;
    bool stopping_ = false;
    std::vector<std::vector<std::string>> held_ids_;  // per worker
    std::vector<peer> peers_;
    std::thread watchdog_;
    // The watchdog's own.
    bool outage_ = false;        // the workers show output without Redis
    std::string last_refusal_;   // why the last ride_out_outage() kept nothing (logged once)
};

/// A worker's side.
///
/// @par Thread safety
/// Only on the worker's thread.
class cluster_sessions final : public journal_sink {
public:
    explicit cluster_sessions(worker& w);

    /// True while this worker owns `id` (it may serve it; not while handing it off).
    bool
    owns(std::string const& id) const
    {
        auto it = owned_.find(id);
        return it != owned_.end() && !it->second.moving;
    }
    /// Makes this worker the owner of `id` (restoring it from Redis when stored) and
    /// then calls `done(true)`; `done(false)` when another reflector keeps it or Redis
    /// cannot be reached within --takeover-wait-ms. Concurrent calls share one attempt.
    /// With `done(false, url)` the session stays with a live owner for now (it moved
    /// recently): the JOIN may be forwarded to `url`.
    void acquire(std::string const& id, unique_function<void(bool, std::string const&)> done);

    /// After any call into `s`: stages its new records.
    void capture(session const& s) { tracker_.capture(s, *this); }
    /// Makes everything staged a batch: sent to Redis at once (one pipelined round trip)
    /// when no batch of this worker is waiting for Redis; else merged with the batches
    /// queued behind it (one append per session), sent when that one completes. Under
    /// load Redis gets fewer, larger calls instead of more.
    void barrier();
    /// What output must wait for: 0 when everything `id` has shown or will show is in
    /// Redis (or during an outage every reflector agrees on: set_outage); else the newest
    /// batch holding its records.
    std::uint64_t unconfirmed(std::string const& id) const { return outage_ ? 0 : not_in_redis(id); }
    /// True once `batch` of `id` is in Redis (or during an agreed outage).
    bool confirmed(std::string const& id, std::uint64_t batch) const;
    /// Redis is unreachable for every reflector (the lease keeper asked them all): output
    /// of owned sessions is shown without waiting for Redis; their records are written
    /// (the whole state) as soon as Redis is back. Off: write before show again.
    void set_outage(bool on);
    /// `c` has output waiting for a batch: flushed again when one completes.
    void
    wait(std::shared_ptr<flushable> c)
    {
        if (waiting_set_.insert(c.get()).second)  // once per wake, however often it asks
            waiting_.push_back(std::move(c));
    }
    /// The session leaves memory (linger over): last records sent, then the lease
    /// released. False (nothing released) while Redis does not have all of it. The last
    /// append renews the blobs `h` names with the session's own keys.
    bool release(session_header const& h);
    /// Called from the lease keeper (via defer): renewed until then / lost.
    void renewed(std::vector<std::string> const& ids, std::int64_t valid_until_us);
    void lost(std::string const& id, char const* why);
    /// Redis does not have all of the session (a failed or refused append, or Redis lost
    /// it): its output waits until its whole state is written again.
    void rewrite(std::string const& id, char const* why);
    /// Sessions whose lease could not be renewed in time are given up.
    void check_leases();
    /// Hand-off on JOIN (a JOIN for `id` reached another reflector and Redis allowed the
    /// move), and every session at a drain: its clients are closed with 1001 (they
    /// reconnect through the balancer) and nothing more is shown here, but what they send
    /// until their close reply still goes into the session. Once they all left (at most a
    /// second later) its last records go to Redis, and once Redis has all of them the
    /// session leaves memory and its lease is released.
    void hand_off(std::string const& id, bool draining = false);
    /// A client closed for a move is gone (connection finish).
    void client_left(std::string const& id);
    /// Drain: hand_off() of every session this worker owns.
    void drain();
    /// Sessions this worker owns; any thread (the drain waits for 0).
    std::size_t owned_count() const noexcept { return owned_count_.load(std::memory_order_relaxed); }

    // ---- journal_sink ----
    void begin_base(session_header const& h) override;
    void end_base(std::string const&) override {}
    void header(session_header const& h) override;
    void event(std::string const& id, std::uint32_t seq, std::string_view element) override;
    void seen(std::string const& id, std::int64_t time_ms) override;

private:
    struct owned {
        store::lease l;
        std::int64_t valid_until_us = 0;  // stop serving after this without a renewal
        std::uint64_t last_batch = 0;     // newest batch with its records
        std::uint64_t confirmed = 0;      // newest batch known to be in Redis (all before too)
        bool retry_base = false;          // the last write failed: the whole state goes again
        bool moving = false;              // handed off: released once Redis has everything
        bool draining = false;            // moving because this reflector drains
        std::size_t closing = 0;          // moving: clients not gone yet
        std::int64_t move_deadline_us = 0;  // moving: clients still there then are dropped
    };
    store::session_append& staged(std::string const& id);
    void on_acquired(std::string const& id, store::acquire_result r, std::string const& forward);
    void on_batch(std::uint64_t batch, std::vector<store::session_append> sent,
                  std::vector<store::append_status> results);
    /// Sends batch `batch` (and everything queued before it) to the directory thread.
    void send(std::uint64_t batch, std::vector<store::session_append> sent);
    /// Sends the queued batches now, even behind an unanswered one (before a release:
    /// the directory thread runs tasks in order).
    void send_queued();
    void wake();
    /// 0 when Redis has every record of `id`; else the newest batch holding its records.
    std::uint64_t not_in_redis(std::string const& id) const;
    /// A moving session's clients are gone: its last records go to Redis.
    void complete_move(std::string const& id);
    /// A moving session whose records are all in Redis leaves memory; its lease is released.
    void finish_hand_off(std::string const& id);

    worker& w_;
    capture_tracker tracker_;
    std::unordered_map<std::string, owned> owned_;
    std::unordered_map<std::string, std::vector<unique_function<void(bool, std::string const&)>>> acquiring_;
    std::unordered_map<std::string, std::size_t> staged_index_;
    std::vector<store::session_append> staged_;
    std::uint64_t next_batch_ = 0;
    unsigned in_flight_ = 0;                          // batches sent, not answered yet
    std::vector<store::session_append> queued_;       // merged batches waiting for them
    std::unordered_map<std::string, std::size_t> queued_index_;
    std::uint64_t queued_batch_ = 0;                  // the newest batch in queued_
    std::vector<std::shared_ptr<flushable>> waiting_;
    std::unordered_set<flushable*> waiting_set_;     // the same connections, for wait()
    bool retry_armed_ = false;
    bool outage_ = false;                             // set_outage()
    std::atomic<std::size_t> owned_count_{0};         // owned_.size(), for other threads
};

}  // namespace lockstep
