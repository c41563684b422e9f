// What a session is on disk: its header and the events since its last snapshot.
//
// Plain data, standard library only, so the journal (src/store/journal.hpp) can read
// and write it without depending on the session logic, and the session can export and
// restore it without depending on the journal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace lockstep {

/// The savable fields of a session (PROTOCOL.md 8.5) at one moment.
struct session_header {
    std::string id;
    std::string name;
    std::string app_id;
    std::string persistent_id;
    std::string timeline;
    std::uint32_t tick_ms = 0;      // tick interval
    std::uint32_t delay_ms = 0;     // ticks.delay
    double scale = 1.0;             // ticks.scale (session time per real time)
    std::string tove;               // raw JSON of the creating JOIN's tove; empty = absent
    std::string flags = "{}";       // raw JSON of the SYNC flags
    std::string snapshot_url;       // empty = no snapshot yet
    std::string snapshot_time;      // raw JSON number of the snapshot's time; empty = none
    std::uint32_t snapshot_seq = 0;
    std::string persisted_url;      // persistent data found at creation
    std::int64_t time_ms = 0;       // session time when the header was taken
    std::uint32_t seq = 0;          // last seq handed out when the header was taken
};

/// One entry of a session's log: its seq and the `[time,seq,...]` element exactly as
/// clients received it in RECV and SYNC.
struct logged_event {
    std::uint32_t seq = 0;
    std::string element;
};

/// Where a session's journal records go (the file journal, or a cluster's Redis
/// staging). A base is the whole state: begin_base, event() for each log entry, end_base.
class journal_sink {
public:
    virtual ~journal_sink() = default;
    virtual void begin_base(session_header const& h) = 0;
    virtual void end_base(std::string const& id) = 0;
    virtual void header(session_header const& h) = 0;
    virtual void event(std::string const& id, std::uint32_t seq, std::string_view element) = 0;
    virtual void seen(std::string const& id, std::int64_t time_ms) = 0;
};

}  // namespace lockstep
