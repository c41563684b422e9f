// One reflector session: the sequencer, the session clock, ticks, the message log,
// users batching, TUTTI tallies and SEND debounce. Pure logic: no sockets, no Asio.
//
// The owner (a worker thread in the server, a test on a manual clock) calls the
// handlers below, then `next_deadline_us()`, and calls `on_timer()` once that time has
// come. Output goes to `peer`s.
//
// @par Thread safety
// None: a session and all of its peers belong to one thread. That is what makes
// "build SYNC + mark the client active" atomic with respect to broadcasts: both happen
// inside one call on the owning thread.
#pragma once

#include "protocol/codec.hpp"
#include "common/clock.hpp"
#include "reflector/ports.hpp"
#include "reflector/journal_record.hpp"

#include <lockstep/protocol/constants.hpp>

#include <cstdint>
#include <deque>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep {

/// Per-session limits and timings (reference values; see docs/protocol.md).
struct session_options {
    std::uint32_t linger_ms = 10000;          // kept after the last client left
    std::uint32_t requ_threshold = 60000;     // log length from which REQU is sent
    std::uint32_t log_max = 100000;           // log length at which client SENDs are refused
    std::uint64_t log_max_bytes = 0;          // the same in bytes of logged events (0 = count only)
    byte_budget* sync_budget = nullptr;       // SYNC bytes in flight, shared by all sessions (null = none)
    std::uint32_t default_tick_ms = 200;      // JOIN without a usable `ticks`
    std::uint32_t users_batch_ms = 200;       // joins/leaves gathered into one users event
    std::uint32_t tally_window_ms = 1000;     // TUTTI waits at most this long for votes
    std::uint32_t tally_history_ms = 60000;   // completed tally keys remembered this long
    std::uint32_t tally_history_keys = 20;    // and at most this many
    std::uint32_t max_url_bytes = 4096;       // longest SNAP/SAVE url accepted
    std::uint32_t max_name_bytes = 1024;      // longest JOIN name, appId, persistentId (else 4102)
    std::string reflector_name = "local";     // SYNC "reflector"
};

class session {
public:
    session(std::string id, clock_source const& clock, session_options const& opts,
            persistence_index* persistence = nullptr, session_counters* counters = nullptr,
            load_signal const* load = nullptr);
    session(session const&) = delete;
    session& operator=(session const&) = delete;

    // ---- client actions (args are the raw JSON of the frame's "args") ----

    /// JOIN. Creates the session state on the first JOIN; answers SYNC and marks the
    /// client active in the same call. Closes the peer on invalid arguments.
    /// Returns true when the peer was synced (it is then a member until disconnect()).
    bool join(peer& p, std::string_view args);
    /// SEND: reflect to every active client. `tags` may be empty.
    void send(peer& p, std::string_view args, std::string_view tags);
    void tutti(peer& p, std::string_view args);
    void snap(peer& p, std::string_view args);
    void save(peer& p, std::string_view args);
    void ticks(peer& p, std::string_view args);
    /// PING -> PONG (with rawTime when the session has the rawtime flag).
    void ping(peer& p, std::string_view args);
    /// The peer's connection is gone. Its leave is announced after leaveDelay.
    void disconnect(peer& p);

    // ---- timers ----

    /// Earliest time (clock µs) at which on_timer() has work; max() if none.
    std::int64_t next_deadline_us() const noexcept;
    /// Runs everything due at the current clock time.
    void on_timer();
    /// True once the session has had no clients for linger_ms: the owner deletes it.
    bool expired() const noexcept;

    /// Closes every peer (drain/shutdown).
    void close_all(protocol::close_code code, std::string_view reason);

    // ---- introspection (/sessions, tests) ----
    std::string const& id() const noexcept { return id_; }
    std::string const& name() const noexcept { return name_; }
    std::string const& app_id() const noexcept { return app_id_; }
    /// Totals since creation, for the session's summary log line.
    std::uint64_t events_reflected() const noexcept { return events_reflected_; }
    std::uint64_t clients_joined() const noexcept { return clients_joined_; }
    std::int64_t created_at_us() const noexcept { return created_at_us_; }
    bool created() const noexcept { return created_; }
    std::int64_t time_ms() const noexcept { return time_; }
    /// Session time now, without sampling it (reporting only).
    std::int64_t current_time_ms() const noexcept;
    std::uint32_t seq() const noexcept { return seq_; }
    std::size_t log_size() const noexcept { return log_.size(); }
    /// Bytes of the logged events (their `[time,seq,...]` elements, as a SYNC carries them).
    std::uint64_t log_bytes() const noexcept { return log_bytes_; }
    std::size_t client_count() const noexcept { return clients_.size(); }
    /// Members still connected (client_count() less those whose leave is pending).
    std::size_t connected_count() const noexcept;
    std::size_t active_count() const noexcept;
    std::uint32_t tick_ms() const noexcept { return tick_ms_; }
    std::string const& timeline() const noexcept { return timeline_; }
    /// Connected peers that joined (for router membership).
    std::vector<std::string> users() const;

    // ---- durability (the journal; implemented in session_durable.cpp) ----

    /// The savable header now (time_ms and seq as of the last event or tick).
    session_header header() const;
    /// Grows whenever a header field other than time and seq changes (creation, SNAP,
    /// TICKS, a JOIN that changes the flags): the owner journals a header then.
    std::uint64_t header_version() const noexcept { return header_version_; }
    /// Calls `fn(seq, element)` for each logged event after seq `after`, oldest first
    /// (after == seq() calls nothing; an `after` the log no longer holds calls all).
    template <class F>
    void
    each_logged_after(std::uint32_t after, F&& fn) const
    {
        auto it = log_.end();
        while (it != log_.begin() && protocol::seq_before(after, std::prev(it)->seq))
            --it;
        for (; it != log_.end(); ++it)
            fn(it->seq, it->msg->element());
    }
    /// Makes a not yet created session the stored one: same timeline, the seq goes on
    /// from h.seq, session time from resume_time_ms (the latest any client was shown),
    /// the snapshot and the log come back byte for byte. No clients; it lingers like an
    /// emptied session until someone joins. False (session unchanged) when the session
    /// exists already or the stored data does not fit together.
    bool restore(session_header const& h, std::vector<logged_event> const& log, std::int64_t resume_time_ms);

private:
    struct client {
        peer* p = nullptr;            // null once disconnected (leave pending)
        std::uint64_t serial = 0;     // identity for non-string users
        std::string user;             // raw JSON of `user`; empty when falsy
        bool user_is_string = false;
        bool active = false;
        std::int64_t leave_due_us = 0;  // when p == null: when the leave is processed
    };
    struct user_ref {
        std::string json;
        std::uint64_t serial;
        bool is_string;
        bool
        same(user_ref const& o) const
        {
            return is_string ? (o.is_string && json == o.json) : serial == o.serial;
        }
    };
    struct log_entry {
        std::uint32_t seq;
        out_ptr msg;  // the RECV as broadcast; element() is `[time,seq,...]`
    };
    struct tally {
        std::string send_time;        // raw JSON number
        double send_time_num = 0;
        std::int64_t expecting = 0;
        std::vector<std::pair<std::string, std::int64_t>> payloads;  // insertion order
        std::int64_t deadline_us = 0;
        bool wants_vote = false;
        std::string target;           // raw JSON; empty = absent
        std::string key;              // raw JSON; empty = absent
    };

    std::int64_t sample_time();
    void start_ticker();
    /// The tick interval, stretched while the worker is overloaded.
    std::int64_t tick_period_us() const noexcept;
    void reflect(std::string_view rest, bool client_event);
    void reflect_now(std::string_view rest);
    void reflect_object(std::string const& object_json);
    void send_tick(std::int64_t scheduled_us);
    /// Bytes a SYNC of the session would take now (an upper bound; what the budget counts).
    std::size_t sync_bytes_estimate() const noexcept;
    /// Sends the joiner `shared` (the SYNC built for an earlier joiner since which nothing
    /// changed), or a new SYNC for which `reserved` budget bytes were taken.
    void send_sync(peer& p, out_ptr shared, std::size_t reserved);
    /// Log length as the REQU and refusal rules see it: the count, or the bytes scaled to
    /// a count (log_max_bytes is to log_max), whichever is larger.
    std::uint64_t effective_log_length() const noexcept;
    void announce_joined(client& c);
    void announce_left(client& c);
    void schedule_users();
    void flush_users();
    void complete_tally(std::string const& key);
    double cleanup_completed_tallies();
    void process_leaves(std::int64_t now);
    std::uint64_t broadcast_active(out_ptr const& m);
    void broadcast_all(out_ptr const& m);
    void check_log_growth();
    client* find(peer& p);

    std::string id_;
    clock_source const& clock_;
    session_options opts_;
    persistence_index* persistence_;
    session_counters* metrics_;
    load_signal const* load_;

    bool created_ = false;
    std::uint64_t events_reflected_ = 0, clients_joined_ = 0;
    std::int64_t created_at_us_ = 0;
    std::string name_, app_id_, persistent_id_;
    std::string timeline_;
    std::string tove_;                 // raw JSON; empty = absent
    std::string flags_ = "{}";         // raw JSON of the last JOIN's flags
    bool rawtime_ = false;
    std::uint32_t leave_delay_ms_ = 0;
    std::string persisted_url_;

    // clock
    double scaled_start_us_ = 0;
    double scale_ = 1.0;
    std::int64_t start_us_ = 0;
    std::int64_t time_ = 0;
    std::int64_t last_tick_time_ = -1000;

    // sequencer and log
    std::uint32_t seq_ = protocol::seq_start;
    std::deque<log_entry> log_;
    std::uint64_t log_bytes_ = 0;      // sum of the logged elements' sizes
    std::uint64_t requ_checked_ = 0;   // effective_log_length() at the last REQU check
    std::weak_ptr<out_message const> sync_cache_;  // the last SYNC, while still queued somewhere and current
    std::string snapshot_url_;
    std::int64_t snapshot_time_ = -1;
    std::uint32_t snapshot_seq_ = 0;
    std::string snapshot_time_raw_;

    // ticks
    std::uint32_t tick_ms_ = 0;
    std::uint32_t delay_ms_ = 0;
    std::int64_t next_tick_us_ = std::numeric_limits<std::int64_t>::max();
    std::vector<std::string> delayed_;  // args rests held back by ticks.delay
    std::int64_t delayed_until_us_ = std::numeric_limits<std::int64_t>::max();
    bool delaying_ = false;

    // clients and users
    std::vector<client> clients_;
    std::uint64_t next_serial_ = 1;
    std::vector<user_ref> users_joined_, users_left_;
    std::int64_t users_due_us_ = std::numeric_limits<std::int64_t>::max();
    std::int64_t empty_since_us_ = -1;  // -1 while clients exist

    // tallies and debounce
    std::map<std::string, tally> tallies_;
    std::map<std::string, double> completed_tallies_;  // key -> sendTime; "sentinel" special
    std::map<std::string, std::int64_t> debounce_;     // msgID -> clock µs

    std::uint64_t header_version_ = 0;
};

}  // namespace lockstep
