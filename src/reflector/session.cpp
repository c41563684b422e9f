#include "reflector/session.hpp"

#include "common/text.hpp"

#include "protocol/json_scan.hpp"
#include "common/logging.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

namespace lockstep {

using nlohmann::json;
using ordered_json = nlohmann::ordered_json;
using protocol::close_code;

namespace {

constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

std::string
random_timeline()
{
    // Like the reference: lowercase base-36, about 11 characters, new per session.
    thread_local std::mt19937_64 rng{std::random_device{}()};
    static char const digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    std::string s(11, '0');
    for (auto& ch : s)
        ch = digits[rng() % 36];
    return s;
}

/// JavaScript truthiness of a JSON value.
bool
truthy(json const& v)
{
    switch (v.type()) {
    case json::value_t::null:
    case json::value_t::discarded: return false;
    case json::value_t::boolean: return v.get<bool>();
    case json::value_t::string: return !v.get_ref<std::string const&>().empty();
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: {
        double d = v.get<double>();
        return d != 0 && !std::isnan(d);
    }
    default: return true;  // arrays and objects
    }
}

bool
truthy_raw(std::string_view raw)
{
    if (raw.empty())
        return false;
    auto v = json::parse(raw, nullptr, false);
    return truthy(v);
}

/// Length of `s` in UTF-16 code units, as JavaScript's String.length counts it.
std::size_t
utf16_length(std::string_view s)
{
    std::size_t n = 0;
    for (unsigned char ch : s) {
        if ((ch & 0xC0) != 0x80)
            ++n;
        if (ch >= 0xF0)
            ++n;  // astral code point: a surrogate pair
    }
    return n;
}

/// Appends `,"_size":N` before the closing brace, N being the JS length of the object's
/// JSON before the field was added (DePIN accounting; harmless elsewhere).
std::string
with_size(std::string object_json)
{
    auto size = utf16_length(object_json);
    object_json.pop_back();
    object_json += ",\"_size\":" + std::to_string(size) + "}";
    return object_json;
}

std::optional<double>
number_of(json const& o, char const* key)
{
    auto it = o.find(key);
    if (it == o.end() || !it->is_number())
        return std::nullopt;
    return it->get<double>();
}

}  // namespace

session::session(std::string id, clock_source const& clock, session_options const& opts,
                 persistence_index* persistence, session_counters* counters, load_signal const* load)
    : id_(std::move(id)), clock_(clock), opts_(opts), persistence_(persistence), metrics_(counters), load_(load)
{
}

// ---------------------------------------------------------------------------- time

std::int64_t
session::sample_time()
{
    double now = static_cast<double>(clock_.now_us());
    auto t = static_cast<std::int64_t>(std::floor((now - scaled_start_us_) * scale_ / 1000.0));
    // The clock is monotonic, so this only guards against float rounding on rescale.
    time_ = std::max(time_, t);
    return time_;
}

std::int64_t
session::current_time_ms() const noexcept
{
    if (!created_)
        return 0;
    double now = static_cast<double>(clock_.now_us());
    return std::max(time_, static_cast<std::int64_t>(std::floor((now - scaled_start_us_) * scale_ / 1000.0)));
}

std::int64_t
session::tick_period_us() const noexcept
{
    std::int64_t period = static_cast<std::int64_t>(tick_ms_) * 1000;
    if (load_) {  // overload protection (--max-tick-stretch) thins ticks
        auto pct = load_->tick_stretch_pct();
        if (pct > 100)
            period = period * pct / 100;
    }
    return period;
}

void
session::start_ticker()
{
    next_tick_us_ = clock_.now_us() + tick_period_us();
}

// ---------------------------------------------------------------------------- JOIN

bool
session::join(peer& p, std::string_view args_raw)
{
    auto args = json::parse(args_raw, nullptr, false);
    if (!args.is_object() || !truthy(args.value("version", json())) ) {
        spdlog::info("{} JOIN without version or with non-object args: closing 4100", p.tag());
        p.close(close_code::outdated_protocol, "outdated protocol");
        return false;
    }
    if (!args.contains("apiKey")) {
        spdlog::info("{} JOIN without apiKey: closing 4103", p.tag());
        p.close(close_code::bad_api_key, "bad apiKey");
        return false;
    }
    for (char const* key : {"name", "appId", "persistentId"}) {
        if (auto v = args.find(key); v != args.end() && v->is_string() && v->get_ref<std::string const&>().size() > opts_.max_name_bytes) {
            spdlog::info("{} JOIN {} of {} bytes over {}: closing 4102", p.tag(), key,
                         v->get_ref<std::string const&>().size(), opts_.max_name_bytes);
            if (metrics_)
                metrics_->refused_for(refusal::join_args);
            p.close(close_code::malformed_message, "JOIN name too long");
            return false;
        }
    }
    // The flags this JOIN sets (last JOIN wins): a change makes the SYNC differ.
    std::string flags;
    {
        ordered_json f = ordered_json::object();
        if (auto fl = args.find("flags"); fl != args.end() && fl->is_object()) {
            for (char const* k : {"rawtime", "microverse"})
                if (auto it = fl->find(k); it != fl->end() && truthy(*it))
                    f[k] = true;
        }
        flags = f.dump();
    }
    // The SYNC: the one an earlier joiner got if nothing changed since (shared, counted
    // once), else a new one that must fit the budget for SYNC bytes in flight.
    out_ptr shared = created_ && flags == flags_ ? sync_cache_.lock() : nullptr;
    std::size_t reserved = 0;
    if (!shared && opts_.sync_budget) {
        reserved = sync_bytes_estimate();
        if (!opts_.sync_budget->try_take(reserved)) {
            spdlog::warn("{} SYNC of {} bytes would go over --max-sync-bytes ({} of {} in flight): closing 4008",
                         p.tag(), reserved, opts_.sync_budget->used(), opts_.sync_budget->limit());
            if (metrics_)
                metrics_->refused_for(refusal::sync_bytes);
            p.close(close_code::sync_budget, "reflector busy, try again");
            return false;
        }
    }
    auto now = clock_.now_us();
    if (!created_) {
        created_ = true;
        created_at_us_ = now;
        name_ = args.value("name", json("")).is_string() ? args.value("name", std::string()) : std::string();
        if (auto a = args.find("appId"); a != args.end() && a->is_string())
            app_id_ = a->get<std::string>();
        if (auto a = args.find("persistentId"); a != args.end() && a->is_string())
            persistent_id_ = a->get<std::string>();
        if (auto t = args.find("tove"); t != args.end() && !t->is_null())
            tove_ = t->dump();
        timeline_ = random_timeline();
        start_us_ = now;
        scaled_start_us_ = static_cast<double>(now);
        time_ = 0;
        // The reference reflector dies on a creating JOIN without `ticks`; we use the
        // default interval instead (docs/protocol.md, "Deliberate differences").
        tick_ms_ = opts_.default_tick_ms;
        if (auto t = args.find("ticks"); t != args.end() && t->is_object()) {
            if (auto tick = number_of(*t, "tick"); tick && *tick > 0)
                tick_ms_ = static_cast<std::uint32_t>(std::max(1.0, std::min(*tick, 3'600'000.0)));
            if (auto d = number_of(*t, "delay"); d && *d > 0)
                delay_ms_ = static_cast<std::uint32_t>(std::min(*d, 60'000.0));
            if (auto s = number_of(*t, "scale"); s && *s > 0)
                scale_ = std::clamp(*s, 1.0 / 64, 64.0);
        }
        start_ticker();
        if (persistence_ && !app_id_.empty() && !persistent_id_.empty())
            if (auto url = persistence_->lookup(app_id_, persistent_id_))
                persisted_url_ = *url;
        if (metrics_)
            metrics_->add(metrics_->sessions, 1);
        ++header_version_;
        log_event(spdlog::level::info, {.event = "session_start", .session = id_, .app = app_id_, .name = name_},
                  fmt::format("session {} created: name='{}' tick={}ms{} timeline={}", id_, name_, tick_ms_,
                              persisted_url_.empty() ? "" : " persisted", timeline_));
    }
    // Last JOIN wins; absent values reset (as the reference does).
    auto ld = number_of(args, "leaveDelay");
    leave_delay_ms_ = ld && *ld > 0 ? static_cast<std::uint32_t>(std::min(*ld, 600'000.0)) : 0;
    rawtime_ = flags.find("rawtime") != std::string::npos;
    if (flags != flags_) {
        ++header_version_;
        sync_cache_.reset();
    }
    flags_ = std::move(flags);

    client* c = find(p);
    if (!c) {
        client fresh;
        fresh.p = &p;
        fresh.serial = next_serial_++;
        clients_.push_back(std::move(fresh));
        ++clients_joined_;
        c = &clients_.back();
    }
    if (auto u = args.find("user"); u != args.end() && truthy(*u)) {
        // Other clients get the user exactly as it was sent (key order, spacing, number
        // spelling): the raw text of the last "user" member, as nlohmann keeps the last.
        std::vector<json_scan::member> members;
        std::string_view raw;
        if (json_scan::scan_object(args_raw, members))
            for (auto const& m : members)
                if (m.key == "user")
                    raw = m.value;
        c->user = raw.empty() ? u->dump() : std::string(raw);
        c->user_is_string = u->is_string();
    }
    empty_since_us_ = -1;
    // SYNC and activation happen in this one call: no broadcast can come in between.
    send_sync(p, std::move(shared), reserved);
    announce_joined(*c);
    return true;
}

std::size_t
session::sync_bytes_estimate() const noexcept
{
    // The fixed fields, the URLs, tove, flags and the id, then each event and its comma;
    // _CHUNK framing adds 24 bytes per 1 MB.
    std::size_t bytes = 320 + snapshot_url_.size() + persisted_url_.size() + tove_.size() + flags_.size() +
                        opts_.reflector_name.size() + id_.size() + log_bytes_ + log_.size();
    return bytes + bytes / 40000;
}

namespace {

/// A SYNC holding its share of the budget for SYNC bytes in flight: given back when the
/// last connection that queued it has written it (or dropped it).
struct budgeted_sync {
    out_ptr msg;
    byte_budget* budget = nullptr;
    std::size_t bytes = 0;
    budgeted_sync(out_ptr m, byte_budget* b, std::size_t n) : msg(std::move(m)), budget(b), bytes(n) {}
    budgeted_sync(budgeted_sync const&) = delete;
    budgeted_sync& operator=(budgeted_sync const&) = delete;
    ~budgeted_sync()
    {
        if (budget)
            budget->give_back(bytes);
    }
};

}  // namespace

void
session::send_sync(peer& p, out_ptr shared, std::size_t reserved)
{
    if (shared) {
        spdlog::debug("{} SYNC session {} shared with an earlier joiner", p.tag(), id_);
        p.deliver_sync(shared);
        return;
    }
    // Owns the reservation from here, so it is given back whatever happens below.
    auto held = std::make_shared<budgeted_sync>(nullptr, opts_.sync_budget, opts_.sync_budget ? reserved : 0);
    auto buf = json_builder(sync_bytes_estimate());
    buf += R"({"id":)";
    codec::append_json_string(buf, id_);
    buf += R"(,"action":"SYNC","args":{"url":)";
    bool snapshot = !snapshot_url_.empty();
    codec::append_json_string(buf, snapshot ? snapshot_url_ : persisted_url_);
    buf += R"(,"messages":[)";
    bool first = true;
    for (auto const& e : log_) {
        if (!first)
            buf.push_back(',');
        first = false;
        buf += e.msg->element();
    }
    buf += R"(],"time":)";
    buf += std::to_string(sample_time());
    buf += R"(,"seq":)";
    buf += std::to_string(seq_);
    if (!tove_.empty()) {
        buf += R"(,"tove":)";
        buf += tove_;
    }
    buf += R"(,"reflector":)";
    codec::append_json_string(buf, opts_.reflector_name);
    buf += R"(,"timeline":)";
    codec::append_json_string(buf, timeline_);
    buf += R"(,"flags":)";
    buf += flags_;
    if (snapshot) {
        buf += R"(,"snapshotTime":)";
        buf += snapshot_time_raw_;
        buf += R"(,"snapshotSeq":)";
        buf += std::to_string(snapshot_seq_);
    } else if (!persisted_url_.empty()) {
        buf += R"(,"persisted":true)";
    }
    buf += "}}";
    spdlog::debug("{} SYNC session {} time={} seq={} messages={} bytes={}", p.tag(), id_, time_, seq_,
                  log_.size(), buf.size() - out_message::header_room);
    held->msg = out_message::from_json(std::move(buf));
    out_ptr sync(held, held->msg.get());  // keeps `held` (and its reservation) alive
    sync_cache_ = sync;
    p.deliver_sync(sync);
}

// ---------------------------------------------------------------------------- users

void
session::announce_joined(client& c)
{
    if (c.user.empty() || c.active)
        return;
    c.active = true;
    user_ref u{c.user, c.serial, c.user_is_string};
    auto it = std::find_if(users_left_.begin(), users_left_.end(), [&](auto const& o) { return o.same(u); });
    if (it != users_left_.end())
        users_left_.erase(it);
    else
        users_joined_.push_back(std::move(u));
    schedule_users();
}

void
session::announce_left(client& c)
{
    if (c.user.empty() || !c.active)
        return;
    c.active = false;
    user_ref u{c.user, c.serial, c.user_is_string};
    auto it = std::find_if(users_joined_.begin(), users_joined_.end(), [&](auto const& o) { return o.same(u); });
    if (it != users_joined_.end())
        users_joined_.erase(it);
    else
        users_left_.push_back(std::move(u));
    schedule_users();
}

void
session::schedule_users()
{
    if (users_due_us_ == never)
        users_due_us_ = clock_.now_us() + static_cast<std::int64_t>(opts_.users_batch_ms) * 1000;
}

void
session::flush_users()
{
    users_due_us_ = never;
    if (users_joined_.empty() && users_left_.empty())
        return;
    auto active = active_count();
    if (active > 0) {
        std::string o = R"({"what":"users","active":)" + std::to_string(active) +
                        R"(,"total":)" + std::to_string(clients_.size());
        auto list = [&o](char const* key, std::vector<user_ref> const& v) {
            if (v.empty())
                return;
            o += ",\"";
            o += key;
            o += "\":[";
            for (std::size_t i = 0; i < v.size(); ++i) {
                if (i)
                    o.push_back(',');
                o += v[i].json;
            }
            o.push_back(']');
        };
        list("joined", users_joined_);
        list("left", users_left_);
        o.push_back('}');
        reflect_object(o);
    }
    // With nobody active the event is not sent (nobody could hear it); the client's
    // VM repairs the lost leave on the next join (docs/protocol.md, users).
    users_joined_.clear();
    users_left_.clear();
}

std::size_t
session::active_count() const noexcept
{
    return static_cast<std::size_t>(std::count_if(clients_.begin(), clients_.end(), [](auto const& c) { return c.active; }));
}

std::uint64_t
session::effective_log_length() const noexcept
{
    std::uint64_t len = log_.size();
    if (opts_.log_max_bytes == 0)
        return len;
    // Scaled so that log_max_bytes corresponds to log_max (ceil: a byte over is over).
    auto by_bytes = static_cast<std::uint64_t>(
        std::ceil(static_cast<long double>(log_bytes_) * opts_.log_max / static_cast<long double>(opts_.log_max_bytes)));
    return std::max(len, by_bytes);
}

std::size_t
session::connected_count() const noexcept
{
    return static_cast<std::size_t>(std::count_if(clients_.begin(), clients_.end(), [](auto const& c) { return c.p != nullptr; }));
}

std::vector<std::string>
session::users() const
{
    std::vector<std::string> out;
    for (auto const& c : clients_)
        if (c.active && c.p)
            out.push_back(c.user);
    return out;
}

// ---------------------------------------------------------------------------- SEND

namespace {

// Object payloads are what the reflector generates itself (users, tally): a client that
// sends one could forge membership or votes in every replica. Real clients send strings.
bool
object_payload(std::vector<std::string_view> const& elems)
{
    return elems.size() > 2 && !elems[2].empty() && elems[2].front() == '{';
}

}  // namespace

void
session::send(peer& p, std::string_view args, std::string_view tags)
{
    std::vector<std::string_view> elems;
    std::string_view rest;
    if (!codec::split_send_args(args, rest, elems)) {
        spdlog::info("{} SEND args not an array of at least 3 elements: closing 4102", p.tag());
        p.close(close_code::malformed_message, "malformed message");
        return;
    }
    if (object_payload(elems)) {
        spdlog::info("{} SEND payload is an object (reserved for the reflector's own events): closing 4102", p.tag());
        p.close(close_code::malformed_message, "payload may not be an object");
        return;
    }
    if (!tags.empty() && tags != "null") {
        auto t = json::parse(tags, nullptr, false);
        if (t.is_object() && truthy(t.value("debounce", json()))) {
            auto d = number_of(t, "debounce");
            double debounce_ms = d ? *d : 0;
            auto id = t.find("msgID");
            std::string key = id == t.end() ? "undefined" : (id->is_string() ? id->get<std::string>() : id->dump());
            auto now = clock_.now_us();
            auto rec = debounce_.find(key);
            if (rec != debounce_.end() && static_cast<double>(now - rec->second) <= debounce_ms * 1000) {
                if (metrics_)
                    metrics_->add(metrics_->debounced);
                return;
            }
            debounce_[key] = now;
        }
    }
    if (rawtime_) {
        // The rawtime flag replaces the sender's last element (its latency) by the
        // reflector's raw time.
        std::string r(elems[2].data(), elems.back().data() - elems[2].data());
        if (elems.size() < 4)
            r = std::string(rest) + ",";
        r += std::to_string((clock_.now_us() - start_us_) / 1000);
        reflect(r, true);
        return;
    }
    reflect(rest, true);
}

void
session::check_log_growth()
{
    auto len = effective_log_length();
    auto before = std::exchange(requ_checked_, len);
    if (len < opts_.requ_threshold)
        return;
    auto headroom = opts_.log_max - std::min<std::uint64_t>(len, opts_.log_max);
    std::uint64_t every = std::max<std::uint64_t>(1, (headroom / 100) * 10);
    // Every `every` messages; bytes may jump past a multiple, so crossing one counts too.
    if (len % every != 0 && len / every == before / every)
        return;
    spdlog::warn("session {} has {} messages ({} bytes) since its last snapshot: sending REQU", id_, log_.size(),
                 log_bytes_);
    broadcast_active(codec::make_simple(id_, "REQU"));
    if (headroom < (opts_.log_max - opts_.requ_threshold) / 4)
        broadcast_all(codec::make_simple(
            id_, "INFO",
            R"({"code":"SNAPSHOT_NEEDED","msg":"Synchronizer message buffer almost full. Need snapshot ASAP.","options":{"level":"warning"}})"));
}

void
session::reflect(std::string_view rest, bool client_event)
{
    if (client_event && effective_log_length() >= opts_.log_max) {
        // Not accepted: the sender learns it through REQU/INFO. Reflector-generated
        // events (users, tally) are always accepted so membership stays exact.
        broadcast_active(codec::make_simple(id_, "REQU"));
        broadcast_all(codec::make_simple(
            id_, "INFO",
            R"({"code":"SNAPSHOT_NEEDED","msg":"Cannot buffer more messages. Need snapshot.","options":{"level":"warning"}})"));
        if (metrics_)
            metrics_->add(metrics_->refused);
        return;
    }
    check_log_growth();
    auto time = sample_time();
    if (delay_ms_ > 0) {
        double wait = static_cast<double>(last_tick_time_) + delay_ms_ + 0.1 - static_cast<double>(time);
        if (delaying_ || wait > 0) {
            if (!delaying_) {
                delaying_ = true;
                next_tick_us_ = never;  // ticker stopped while events are held
                // +1 ms: released events land strictly after lastTick + delay.
                delayed_until_us_ = clock_.now_us() + static_cast<std::int64_t>(std::ceil(wait * 1000)) + 1000;
            }
            delayed_.emplace_back(rest);
            return;
        }
    }
    reflect_now(rest);
    start_ticker();
}

void
session::reflect_now(std::string_view rest)
{
    seq_ += 1;  // uint32: wraps from 0xFFFFFFFF to 0
    ++events_reflected_;
    auto m = codec::make_recv(id_, time_, seq_, rest);
    auto n = broadcast_active(m);
    log_bytes_ += m->element().size();
    log_.push_back({seq_, std::move(m)});
    sync_cache_.reset();
    if (metrics_) {
        metrics_->add(metrics_->events_in);
        metrics_->add(metrics_->events_out, n);
    }
}

void
session::reflect_object(std::string const& object_json)
{
    auto rest = with_size(object_json);
    if (rawtime_)
        rest += "," + std::to_string((clock_.now_us() - start_us_) / 1000);
    reflect(rest, false);
}

std::uint64_t
session::broadcast_active(out_ptr const& m)
{
    std::uint64_t n = 0;
    for (auto& c : clients_)
        if (c.active && c.p) {
            c.p->deliver(m);
            ++n;
        }
    return n;
}

void
session::broadcast_all(out_ptr const& m)
{
    for (auto& c : clients_)
        if (c.p)
            c.p->deliver(m);
}

// ---------------------------------------------------------------------------- TUTTI

void
session::tutti(peer& p, std::string_view args)
{
    std::vector<std::string_view> e;
    if (!json_scan::scan_array(args, e) || e.size() < 3) {
        spdlog::info("{} TUTTI args not an array of at least 3 elements: closing 4102", p.tag());
        p.close(close_code::malformed_message, "malformed message");
        return;
    }
    auto send_time_j = json::parse(e[0], nullptr, false);
    double send_time = send_time_j.is_number() ? send_time_j.get<double>() : 0;
    std::string key = e.size() > 6 ? std::string(e[6]) : std::string();
    std::string map_key = key.empty() ? "undefined" : key;

    auto it = tallies_.find(map_key);
    if (it == tallies_.end()) {
        double limit = cleanup_completed_tallies();
        if (send_time < limit) {
            spdlog::debug("{} vote for old tally {} ignored", p.tag(), map_key);
            return;
        }
        if (auto done = completed_tallies_.find(map_key); done != completed_tallies_.end() && done->second != 0) {
            spdlog::debug("{} vote for completed tally {} ignored", p.tag(), map_key);
            return;
        }
        if (e.size() > 3 && truthy_raw(e[3])) {
            // firstMessage: [time, seq, payload...] reflected like a SEND.
            std::vector<std::string_view> fe;
            std::string_view frest;
            if (codec::split_send_args(e[3], frest, fe) && !object_payload(fe))
                reflect(frest, true);
            else
                spdlog::info("{} TUTTI firstMessage malformed or with an object payload: not reflected", p.tag());
        }
        tally t;
        t.send_time = std::string(e[0]);
        t.send_time_num = send_time;
        t.expecting = static_cast<std::int64_t>(clients_.size());
        t.deadline_us = clock_.now_us() + static_cast<std::int64_t>(opts_.tally_window_ms) * 1000;
        t.wants_vote = e.size() > 4 && truthy_raw(e[4]);
        if (e.size() > 5)
            t.target = std::string(e[5]);
        t.key = key;
        it = tallies_.emplace(map_key, std::move(t)).first;
    }
    // Votes are counted per distinct payload (JavaScript object keys are strings).
    std::string payload_key;
    auto pj = json::parse(e[2], nullptr, false);
    payload_key = pj.is_string() ? pj.get<std::string>() : std::string(e[2]);
    auto& payloads = it->second.payloads;
    auto pit = std::find_if(payloads.begin(), payloads.end(), [&](auto const& kv) { return kv.first == payload_key; });
    if (pit == payloads.end())
        payloads.emplace_back(std::move(payload_key), 1);
    else
        ++pit->second;
    if (--it->second.expecting == 0)
        complete_tally(map_key);
}

void
session::complete_tally(std::string const& map_key)
{
    auto it = tallies_.find(map_key);
    if (it == tallies_.end())
        return;
    tally t = std::move(it->second);
    tallies_.erase(it);
    if (t.expecting > 0)
        spdlog::debug("session {} tally {} missing {} clients", id_, map_key, t.expecting);
    if (t.wants_vote || t.payloads.size() > 1) {
        ordered_json o = ordered_json::object();
        o["what"] = "tally";
        o["sendTime"] = ordered_json::parse(t.send_time, nullptr, false);
        ordered_json counts = ordered_json::object();
        for (auto const& [k, n] : t.payloads)
            counts[k] = n;
        o["tally"] = std::move(counts);
        if (!t.target.empty())
            o["tallyTarget"] = ordered_json::parse(t.target, nullptr, false);
        if (!t.key.empty())
            o["tuttiKey"] = ordered_json::parse(t.key, nullptr, false);
        o["missingClients"] = t.expecting;
        reflect_object(o.dump(-1, ' ', false, ordered_json::error_handler_t::replace));
    }
    completed_tallies_[map_key] = t.send_time_num;
    cleanup_completed_tallies();
}

double
session::cleanup_completed_tallies()
{
    // Remember completed keys for tally_history_ms of session time, at most
    // tally_history_keys of them; past that a "sentinel" marks how far back we know.
    double limit = std::max<double>(0, static_cast<double>(time_) - opts_.tally_history_ms + 1);
    std::vector<double> keep;
    for (auto const& [k, t] : completed_tallies_)
        if (t >= limit)
            keep.push_back(t);
    std::optional<double> sentinel;
    if (keep.size() > opts_.tally_history_keys && opts_.tally_history_keys >= 2) {
        std::sort(keep.begin(), keep.end(), std::greater<>());
        limit = keep[opts_.tally_history_keys - 2];
        sentinel = keep[opts_.tally_history_keys - 1];
    }
    for (auto i = completed_tallies_.begin(); i != completed_tallies_.end();)
        i = i->second < limit ? completed_tallies_.erase(i) : std::next(i);
    if (sentinel)
        completed_tallies_["sentinel"] = *sentinel;
    if (auto s = completed_tallies_.find("sentinel"); s != completed_tallies_.end())
        limit = s->second;
    return limit;
}

// ---------------------------------------------------------------------------- SNAP / SAVE

void
session::snap(peer& p, std::string_view args_raw)
{
    auto args = json::parse(args_raw, nullptr, false);
    if (!args.is_object()) {
        spdlog::info("{} SNAP args not an object: closing 4102", p.tag());
        p.close(close_code::malformed_message, "malformed message");
        return;
    }
    if (truthy(args.value("dissident", json()))) {
        spdlog::debug("{} dissident snapshot ignored", p.tag());
        return;
    }
    auto time = number_of(args, "time");
    auto seq = number_of(args, "seq");
    auto url = args.find("url");
    if (!time || !seq || url == args.end() || !url->is_string()) {
        spdlog::info("{} SNAP without numeric time/seq or string url: closing 4102", p.tag());
        p.close(close_code::malformed_message, "malformed message");
        return;
    }
    // The snapshot must fit the session: a member cannot announce one from its future
    // or past the last event (the log would be trimmed of events the snapshot lacks),
    // nor an outsized URL that every later SYNC would carry. Interpolated client ticks
    // (ticks.delay) may run up to `delay` ms ahead of the reflector's last tick.
    auto const limit_time = static_cast<double>(current_time_ms() + delay_ms_ + 1);
    bool const seq_ok = *seq >= 0 && *seq <= 4294967295.0 && std::floor(*seq) == *seq &&
                        !protocol::seq_before(seq_, static_cast<std::uint32_t>(*seq));
    if (!(*time >= 0 && *time <= limit_time) || !seq_ok || url->get_ref<std::string const&>().size() > opts_.max_url_bytes) {
        spdlog::info("{} SNAP @{}#{} does not fit session {} (time {}, seq {}, url {} bytes, limit {}): ignored",
                     p.tag(), *time, *seq, id_, limit_time - 1, seq_, url->get_ref<std::string const&>().size(),
                     opts_.max_url_bytes);
        if (metrics_)
            metrics_->refused_for(refusal::snapshot);
        return;
    }
    if (*time <= static_cast<double>(snapshot_time_)) {
        spdlog::debug("{} SNAP @{} not newer than @{}: ignored", p.tag(), *time, snapshot_time_);
        return;
    }
    auto sseq = static_cast<std::uint32_t>(static_cast<std::int64_t>(*seq));
    // Drop every message up to and including the snapshot's seq (wrap-aware).
    auto keep = std::find_if(log_.begin(), log_.end(),
                             [sseq](log_entry const& e) { return protocol::seq_before(sseq, e.seq); });
    auto dropped = std::distance(log_.begin(), keep);
    for (auto it = log_.begin(); it != keep; ++it)
        log_bytes_ -= it->msg->element().size();
    log_.erase(log_.begin(), keep);
    sync_cache_.reset();
    snapshot_time_ = static_cast<std::int64_t>(std::floor(*time));
    snapshot_time_raw_ = args["time"].dump();
    snapshot_seq_ = sseq;
    snapshot_url_ = url->get<std::string>();
    ++header_version_;
    spdlog::info("session {} snapshot @{}#{} ({} messages trimmed, {} kept)", id_, snapshot_time_raw_, sseq,
                 dropped, log_.size());
}

void
session::save(peer& p, std::string_view args_raw)
{
    if (app_id_.empty() || persistent_id_.empty()) {
        spdlog::info("{} SAVE in a session without appId/persistentId: closing 4101", p.tag());
        p.close(close_code::bad_app_id, "bad appId");
        return;
    }
    auto args = json::parse(args_raw, nullptr, false);
    if (!args.is_object() || !args.contains("url") || !args["url"].is_string()) {
        spdlog::info("{} SAVE without url: closing 4102", p.tag());
        p.close(close_code::malformed_message, "malformed message");
        return;
    }
    if (truthy(args.value("dissident", json())))
        return;
    auto url = args["url"].get<std::string>();
    if (url.size() > opts_.max_url_bytes) {
        spdlog::info("{} SAVE url of {} bytes over {}: ignored", p.tag(), url.size(), opts_.max_url_bytes);
        if (metrics_)
            metrics_->refused_for(refusal::url);
        return;
    }
    if (persistence_)
        persistence_->record(app_id_, persistent_id_, url);
    // The URL may carry the client's files token (…/files/t/<jwt>/…): never logged.
    spdlog::info("session {} persistent data for {}/{} saved: {}", id_, app_id_, persistent_id_,
                 redact_credentials(url.substr(0, 500)));
}

void
session::ticks(peer& p, std::string_view args_raw)
{
    auto args = json::parse(args_raw, nullptr, false);
    if (!args.is_object())
        return;
    if (auto d = number_of(args, "delay"); d && *d > 0)
        delay_ms_ = static_cast<std::uint32_t>(std::min(*d, 60'000.0));
    double current = (static_cast<double>(clock_.now_us()) - scaled_start_us_) * scale_;
    auto s = number_of(args, "scale");
    scale_ = s && *s > 0 ? std::clamp(*s, 1.0 / 64, 64.0) : 1.0;
    scaled_start_us_ = static_cast<double>(clock_.now_us()) - current / scale_;
    ++header_version_;  // delay, scale or tick may have changed
    if (auto t = number_of(args, "tick"); t && *t > 0) {
        tick_ms_ = static_cast<std::uint32_t>(std::max(1.0, std::min(*t, 3'600'000.0)));
        if (!delaying_)
            start_ticker();
    }
}

void
session::ping(peer& p, std::string_view args)
{
    if (rawtime_ && !args.empty() && args.front() == '{') {
        auto o = ordered_json::parse(args, nullptr, false);
        if (o.is_object()) {
            o["rawTime"] = (clock_.now_us() - start_us_) / 1000;
            p.deliver(codec::make_pong(o.dump()));
            return;
        }
    }
    p.deliver(codec::make_pong(args));
}

// ---------------------------------------------------------------------------- leaving

session::client*
session::find(peer& p)
{
    for (auto& c : clients_)
        if (c.p == &p)
            return &c;
    return nullptr;
}

void
session::disconnect(peer& p)
{
    client* c = find(p);
    if (!c)
        return;  // never synced: nothing to announce
    c->p = nullptr;
    c->leave_due_us = clock_.now_us() + static_cast<std::int64_t>(leave_delay_ms_) * 1000;
    if (leave_delay_ms_ == 0)
        process_leaves(clock_.now_us());
}

void
session::process_leaves(std::int64_t now)
{
    for (std::size_t i = 0; i < clients_.size();) {
        auto& c = clients_[i];
        if (c.p == nullptr && c.leave_due_us <= now) {
            client gone = std::move(c);
            clients_.erase(clients_.begin() + static_cast<std::ptrdiff_t>(i));
            if (clients_.empty())
                empty_since_us_ = now;
            announce_left(gone);
        } else {
            ++i;
        }
    }
}

void
session::close_all(close_code code, std::string_view reason)
{
    // Copy: close() may call back into disconnect().
    std::vector<peer*> peers;
    for (auto& c : clients_)
        if (c.p)
            peers.push_back(c.p);
    for (auto* p : peers)
        p->close(code, reason);
}

// ---------------------------------------------------------------------------- timers

std::int64_t
session::next_deadline_us() const noexcept
{
    std::int64_t d = std::min({next_tick_us_, users_due_us_, delaying_ ? delayed_until_us_ : never});
    for (auto const& c : clients_)
        if (!c.p)
            d = std::min(d, c.leave_due_us);
    for (auto const& [k, t] : tallies_)
        d = std::min(d, t.deadline_us);
    if (created_ && clients_.empty() && empty_since_us_ >= 0)
        d = std::min(d, empty_since_us_ + static_cast<std::int64_t>(opts_.linger_ms) * 1000);
    return d;
}

bool
session::expired() const noexcept
{
    if (!created_)
        return clients_.empty();
    return clients_.empty() && empty_since_us_ >= 0 &&
           clock_.now_us() >= empty_since_us_ + static_cast<std::int64_t>(opts_.linger_ms) * 1000;
}

void
session::on_timer()
{
    auto now = clock_.now_us();
    process_leaves(now);
    // Tallies first: their result is an event with a time, so it goes before a tick.
    std::vector<std::string> due;
    for (auto const& [k, t] : tallies_)
        if (t.deadline_us <= now)
            due.push_back(k);
    for (auto const& k : due)
        complete_tally(k);
    if (users_due_us_ <= now)
        flush_users();
    if (delaying_ && delayed_until_us_ <= now) {
        delaying_ = false;
        delayed_until_us_ = never;
        auto held = std::move(delayed_);
        delayed_.clear();
        sample_time();
        for (auto const& r : held)
            reflect_now(r);
        start_ticker();
    }
    if (next_tick_us_ <= now) {
        send_tick(next_tick_us_);
        std::int64_t period = tick_period_us();
        next_tick_us_ += period;
        if (next_tick_us_ <= now)  // fell behind: like setInterval, do not burst
            next_tick_us_ = now + period;
    }
}

void
session::send_tick(std::int64_t scheduled_us)
{
    bool anyone = false;
    for (auto const& c : clients_)
        if (c.active && c.p && !c.p->backlogged()) {
            anyone = true;
            break;
        }
    if (!anyone)
        return;  // nobody hears it: do not sample time
    auto time = sample_time();
    last_tick_time_ = time;
    sync_cache_.reset();  // a joiner after this tick must not get an older time
    auto m = codec::make_tick(id_, time);
    std::uint64_t n = 0;
    for (auto& c : clients_)
        if (c.active && c.p && !c.p->backlogged()) {
            c.p->deliver_tick(m);
            ++n;
        }
    if (metrics_) {
        metrics_->add(metrics_->ticks, n);
        metrics_->observe_tick_late(static_cast<double>(clock_.now_us() - scheduled_us) / 1000.0);
    }
}

}  // namespace lockstep
