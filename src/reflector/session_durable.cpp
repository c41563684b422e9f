// The session's side of durability: what it exports to the journal and how it comes
// back from it (docs/durability.md). Kept apart from session.cpp, which is the
// protocol; this file only reads and sets the session's fields.
#include "reflector/session.hpp"


#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cmath>

namespace lockstep {

session_header
session::header() const
{
    session_header h;
    h.id = id_;
    h.name = name_;
    h.app_id = app_id_;
    h.persistent_id = persistent_id_;
    h.timeline = timeline_;
    h.tick_ms = tick_ms_;
    h.delay_ms = delay_ms_;
    h.scale = scale_;
    h.tove = tove_;
    h.flags = flags_;
    h.snapshot_url = snapshot_url_;
    h.snapshot_time = snapshot_time_raw_;  // empty until a snapshot was accepted
    h.snapshot_seq = snapshot_seq_;
    h.persisted_url = persisted_url_;
    h.time_ms = time_;
    h.seq = seq_;
    return h;
}

namespace {

/// Splits a log element `[time,seq,rest]` as codec::make_recv writes it.
bool
split_element(std::string_view e, std::int64_t& time, std::uint32_t& seq, std::string_view& rest)
{
    if (e.size() < 6 || e.front() != '[' || e.back() != ']')
        return false;
    auto const* end = e.data() + e.size();
    auto r = std::from_chars(e.data() + 1, end, time);
    if (r.ec != std::errc() || r.ptr == end || *r.ptr != ',')
        return false;
    r = std::from_chars(r.ptr + 1, end, seq);
    if (r.ec != std::errc() || r.ptr == end || *r.ptr != ',')
        return false;
    rest = std::string_view(r.ptr + 1, static_cast<std::size_t>(end - 1 - (r.ptr + 1)));
    return true;
}

}  // namespace

bool
session::restore(session_header const& h, std::vector<logged_event> const& log, std::int64_t resume_time_ms)
{
    if (created_ || h.id != id_ || h.timeline.empty() || h.tick_ms == 0 || !(h.scale > 0))
        return false;
    if (!log.empty() && log.back().seq != h.seq)
        return false;
    auto flags = nlohmann::json::parse(h.flags, nullptr, false);
    if (!flags.is_object())
        return false;
    std::int64_t snapshot_time = -1;
    if (!h.snapshot_time.empty()) {
        auto t = nlohmann::json::parse(h.snapshot_time, nullptr, false);
        if (!t.is_number())
            return false;
        snapshot_time = static_cast<std::int64_t>(std::floor(t.get<double>()));
    }
    // Rebuild each RECV from its element; it must come out byte for byte the same.
    std::deque<log_entry> restored;
    for (std::size_t i = 0; i < log.size(); ++i) {
        auto const& e = log[i];
        std::int64_t time = 0;
        std::uint32_t seq = 0;
        std::string_view rest;
        if (!split_element(e.element, time, seq, rest) || seq != e.seq || (i > 0 && seq != log[i - 1].seq + 1))
            return false;
        auto m = codec::make_recv(id_, time, seq, rest);
        if (m->element() != e.element)
            return false;
        restored.push_back({seq, std::move(m)});
    }

    created_ = true;
    name_ = h.name;
    app_id_ = h.app_id;
    persistent_id_ = h.persistent_id;
    timeline_ = h.timeline;
    tove_ = h.tove;
    flags_ = h.flags;
    rawtime_ = flags.contains("rawtime");
    tick_ms_ = h.tick_ms;
    delay_ms_ = h.delay_ms;
    scale_ = std::clamp(h.scale, 1.0 / 64, 64.0);
    snapshot_url_ = h.snapshot_url;
    snapshot_time_ = snapshot_time;
    snapshot_time_raw_ = h.snapshot_time;
    snapshot_seq_ = h.snapshot_seq;
    persisted_url_ = h.persisted_url;
    seq_ = h.seq;
    log_ = std::move(restored);
    log_bytes_ = 0;
    for (auto const& e : log_)
        log_bytes_ += e.msg->element().size();
    requ_checked_ = effective_log_length();
    sync_cache_.reset();

    // Session time continues where the clients last saw it; the downtime is skipped.
    auto now = clock_.now_us();
    time_ = std::max<std::int64_t>({resume_time_ms, h.time_ms, 0});
    scaled_start_us_ = static_cast<double>(now) - static_cast<double>(time_) * 1000.0 / scale_;
    start_us_ = now - time_ * 1000;
    last_tick_time_ = time_;
    start_ticker();
    empty_since_us_ = now;  // no clients yet: lingers until someone joins
    ++header_version_;
    if (metrics_)
        metrics_->add(metrics_->sessions, 1);
    spdlog::info("session {} resumed: timeline={} time={} seq={} messages={}{}", id_, timeline_, time_, seq_,
                 log_.size(), snapshot_url_.empty() ? "" : " snapshot");
    return true;
}

}  // namespace lockstep
