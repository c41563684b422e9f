#include <lockstep/client/session.hpp>

#include "client/crypto.hpp"
#include "client/engine.hpp"
#include "client/json_field.hpp"
#include "client/net.hpp"

#include <lockstep/protocol/constants.hpp>

#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace lockstep::client {

namespace {

using namespace std::chrono_literals;
using detail::engine;

// Part of every session id: clients of different SDK protocol versions never meet.
constexpr std::string_view sdk_protocol = "lockstep-cpp/1";
constexpr std::size_t max_snapshot_bytes = 256u << 20;

class client_category final : public std::error_category {
public:
    char const* name() const noexcept override { return "lockstep.client"; }
    std::string message(int ev) const override
    {
        switch (static_cast<errc>(ev)) {
        case errc::bad_options: return "invalid join options";
        case errc::connect_failed: return "cannot connect to the reflector";
        case errc::join_timeout: return "not in sync within the join timeout";
        case errc::wrong_password: return "wrong session password";
        case errc::rejected: return "the reflector closed the session";
        case errc::protocol_error: return "unexpected message from the reflector";
        case errc::snapshot_unavailable: return "the session snapshot could not be loaded";
        case errc::decrypt_failed: return "decryption failed";
        case errc::left: return "the session was left";
        case errc::router_failed: return "the router could not place this client";
        case errc::model_failed: return "model code threw an exception";
        }
        return "unknown lockstep client error";
    }
};

// One item handed from the network thread to the step() thread.
struct inbound {
    enum class kind { sync, event, tick, requ, closed } what;
    json args{};             // sync: SYNC args; event: the payload
    std::int64_t time = 0;   // event, tick
    std::uint32_t seq = 0;   // event
    int code = 0;            // closed
    std::string reason{};    // closed
    bool reconnecting = false;
};

std::optional<std::int64_t>
time_of(json const& v)
{
    if (v.is_number())
        return v.get<std::int64_t>();
    if (v.is_object() && v.contains("time") && v["time"].is_number())
        return v["time"].get<std::int64_t>();
    return std::nullopt;
}

std::string
pad10(std::int64_t t)
{
    auto s = std::to_string(t);
    return s.size() < 10 ? std::string(10 - s.size(), '0') + s : s;
}

// The hash in a snapshot URL ".../<time>_<seq>-<hash>.snap" (empty if not that shape).
std::string
hash_in_url(std::string const& url)
{
    auto slash = url.rfind('/');
    auto name = url.substr(slash == std::string::npos ? 0 : slash + 1);
    auto dash = name.find('-');
    auto dot = name.rfind(".snap");
    if (dash == std::string::npos || dot == std::string::npos || dot < dash)
        return {};
    return name.substr(dash + 1, dot - dash - 1);
}

// The `messages` of a SYNC (no copy), or an empty list.
json const&
messages_of(json const& sync_args)
{
    static json const none = json::array();
    auto it = sync_args.find("messages");
    return it != sync_args.end() && it->is_array() ? *it : none;
}

// The seq of a logged message [time, seq, payload, ...], if it has that shape.
std::optional<std::uint32_t>
seq_of(json const& msg)
{
    if (!msg.is_array() || msg.size() < 3 || !msg[0].is_number() || !msg[1].is_number_unsigned())
        return std::nullopt;
    return msg[1].get<std::uint32_t>();
}

}  // namespace

std::error_category const&
error_category() noexcept
{
    static client_category c;
    return c;
}

class session::impl {
public:
    explicit impl(join_options o) : opt_(std::move(o)) {}
    ~impl() { shutdown(); }

    std::error_code start();
    bool step();
    bool wait_step(std::chrono::milliseconds max_wait);
    void publish(std::string const& scope, std::string const& event, json const& data, bool internal = false);
    void leave();
    void shutdown();

    join_options opt_;
    std::string id_;
    std::string view_id_;
    std::optional<detail::key256> key_;
    std::unique_ptr<engine> engine_;
    std::unique_ptr<detail::transport> net_;

    // Network thread -> step() thread.
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<inbound> in_;

    // step() thread state.
    std::map<std::pair<std::string, std::string>, std::vector<std::function<void(json const&)>>> view_subs_;
    std::deque<std::tuple<std::string, std::string, json>> view_queue_;
    std::string timeline_;
    bool joined_ = false;      // our own view-join has executed
    bool live_ = false;        // applying live RECVs (not a SYNC's catch-up)
    bool need_sync_ = false;   // a protocol error: ignore input until the next SYNC
    bool ended_ = false;
    std::error_code error_;
    session_stats stats_;
    std::vector<recorded_message> recorded_;
    struct vote {
        std::uint32_t seq;
        std::string state;
        std::string hash;
    };
    std::map<std::int64_t, vote> votes_;
    std::chrono::steady_clock::time_point last_poll_sent_{};

    // Shared with other threads.
    std::atomic<std::int64_t> now_{0};
    std::atomic<bool> connected_{false};
    std::atomic<std::uint64_t> published_{0};
    std::atomic<std::uint64_t> uploaded_{0};
    std::mutex upload_mu_;
    std::condition_variable upload_cv_;
    std::deque<std::function<void()>> upload_q_;  // guarded by upload_mu_
    bool upload_stop_ = false;                     // guarded by upload_mu_
    std::thread upload_thread_;

private:
    void on_message(std::string&& text);
    void push(inbound&& item);
    void handle(inbound& item);
    void handle_sync(json const& args);
    bool build(json const& args);
    bool key_matches(json const& args);
    bool apply(json const& msg);
    void apply_event(std::int64_t time, std::uint32_t seq, json const& wire_payload);
    void fail(std::error_code ec, std::string const& why);
    void maybe_poll(bool force);
    void on_poll(std::int64_t time, std::uint32_t seq);
    void on_tally(json const& tally);
    void upload(std::int64_t time, vote v);
    void enqueue_upload(std::function<void()> job);
    void report(divergence const& d);
    std::unique_ptr<engine> make_engine();
    std::string join_frame() const;
    detail::tls_config tls() const { return {opt_.tls_ca_file}; }
};

std::unique_ptr<engine>
session::impl::make_engine()
{
    detail::engine_hooks h;
    h.on_publish = [this](std::string const& scope, std::string const& event, json const& data) {
        // Views see live events only: a catch-up replay (join, rebuild) would repeat
        // what they already showed. After a rebuild they re-read the models instead.
        if (live_ && view_subs_.count({scope, event}))
            view_queue_.emplace_back(scope, event, data);
    };
    h.on_users = [this](std::vector<std::string> const& joined) {
        for (auto& v : joined)
            if (v == view_id_)
                joined_ = true;
    };
    h.on_poll = [this](std::int64_t t, std::uint32_t seq) { on_poll(t, seq); };
    h.on_tally = [this](json const& t) { on_tally(t); };
    return std::make_unique<engine>(*opt_.models, id_, std::move(h));
}

std::string
session::impl::join_frame() const
{
    std::string name = opt_.app_id + "/" + opt_.session_name;
    json args = {
        {"name", name},
        {"apiKey", "none"},
        {"appId", opt_.app_id},
        {"persistentId", detail::sha256_b64url(name)},
        {"sdk", std::string(sdk_protocol)},
        {"developerId", "unknown_dev_id"},
        {"version", 1},
        {"user", view_id_},
        {"ticks", {{"tick", 1000 / opt_.tps}, {"delay", 0}}},
        {"codeHash", detail::sha256_b64url(std::string(sdk_protocol) + "|" + opt_.code_version)},
        {"leaveDelay", 1250},
        {"url", "lockstep-cpp"},
    };
    if (key_)
        args["tove"] = detail::encrypt_text(*key_, id_);
    return json({{"id", id_}, {"action", "JOIN"}, {"args", std::move(args)}}).dump();
}

std::error_code
session::impl::start()
{
    auto bad = [](char const* why) {
        spdlog::error("lockstep: join: {}", why);
        return make_error_code(errc::bad_options);
    };
    if (!opt_.models)
        return bad("join_options::models is not set");
    if (!opt_.models->find(opt_.root_model))
        return bad("join_options::root_model is not a registered model class");
    if (opt_.app_id.empty() || opt_.session_name.empty())
        return bad("join_options::app_id and session_name are required");
    if (opt_.tps < 1 || opt_.tps > 60)
        return bad("join_options::tps must be 1..60");
    if (auto f = detail::parse_url(opt_.files); !opt_.files.empty() && (!f || f->websocket()))
        return bad("join_options::files must be an http:// or https:// URL");
    id_ = session::session_id_for(opt_);
    view_id_ = opt_.view_id.empty() ? detail::random_base36(10) : opt_.view_id;
    if (!opt_.password.empty())
        key_ = detail::derive_key(opt_.password);
    std::string url = opt_.reflector;
    while (!url.empty() && url.back() == '/')
        url.pop_back();
    url += "/" + id_;
    detail::transport::callbacks cb;
    cb.on_message = [this](std::string&& text) { on_message(std::move(text)); };
    cb.on_open = [this] { connected_ = true; };
    cb.on_closed = [this](int code, std::string const& reason, bool again) {
        connected_ = false;
        push(inbound{inbound::kind::closed, {}, 0, 0, code, reason, again});
    };
    auto r = detail::parse_url(url);
    if (!r || !r->websocket())
        return bad("join_options::reflector must be a ws:// or wss:// URL");
    net_ = detail::transport::create(url, join_frame(), std::move(cb), tls());
    if (!net_)
        return bad("join_options::tls_ca_file cannot be loaded");
    net_->start();
    return {};
}

// Network thread: parse, keep only what the replica needs, hand over.
void
session::impl::on_message(std::string&& text)
{
    auto j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("action") || !j["action"].is_string()) {
        spdlog::warn("lockstep: ignoring a reflector message that is not a JSON object with an action");
        return;
    }
    auto const& action = j["action"].get_ref<std::string const&>();
    auto& args = j["args"];
    if (action == "RECV") {
        if (!args.is_array() || args.size() < 3 || !args[0].is_number() || !args[1].is_number_unsigned()) {
            spdlog::warn("lockstep: malformed RECV ignored");
            return;
        }
        push(inbound{inbound::kind::event, std::move(args[2]), args[0].get<std::int64_t>(),
                     args[1].get<std::uint32_t>()});
    } else if (action == "TICK") {
        if (auto t = time_of(args)) {
            std::lock_guard lk(mu_);
            // Consecutive ticks collapse into the newest one.
            if (!in_.empty() && in_.back().what == inbound::kind::tick)
                in_.back().time = *t;
            else
                in_.push_back(inbound{inbound::kind::tick, {}, *t});
            cv_.notify_one();
        }
    } else if (action == "SYNC") {
        net_->set_synced(detail::field(args, "timeline", ""));
        push(inbound{inbound::kind::sync, std::move(args)});
    } else if (action == "REQU") {
        push(inbound{inbound::kind::requ});
    } else if (action == "INFO") {
        spdlog::info("lockstep: reflector says: {}", args.dump());
    }
}

void
session::impl::push(inbound&& item)
{
    std::lock_guard lk(mu_);
    in_.push_back(std::move(item));
    cv_.notify_one();
}

bool
session::impl::wait_step(std::chrono::milliseconds max_wait)
{
    {
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, max_wait, [&] { return !in_.empty(); });
    }
    return step();
}

bool
session::impl::step()
{
    if (ended_)
        return false;
    std::deque<inbound> batch;
    {
        std::lock_guard lk(mu_);
        batch.swap(in_);
    }
    for (auto& item : batch) {
        // Model code must not throw; if it does, this replica is half-way through an event
        // and cannot be trusted any more: end the session instead of diverging silently.
        try {
            handle(item);
        } catch (std::exception const& e) {
            fail(errc::model_failed, e.what());
        }
        if (ended_)
            break;
    }
    if (engine_)
        now_ = engine_->now();
    // View handlers run after the models, with the events they published.
    while (!view_queue_.empty()) {
        auto [scope, event, data] = std::move(view_queue_.front());
        view_queue_.pop_front();
        auto it = view_subs_.find({scope, event});
        if (it == view_subs_.end())
            continue;
        auto handlers = it->second;
        for (auto& h : handlers)
            h(data);
    }
    if (!ended_)
        maybe_poll(false);
    return !ended_;
}

void
session::impl::handle(inbound& item)
{
    switch (item.what) {
    case inbound::kind::sync:
        need_sync_ = false;
        handle_sync(item.args);
        break;
    case inbound::kind::event:
        if (engine_ && !need_sync_)
            apply_event(item.time, item.seq, item.args);
        break;
    case inbound::kind::tick:
        if (engine_ && !need_sync_) {
            engine_->advance_to(item.time);
            if (opt_.record)
                recorded_.push_back({recorded_message::kind::tick, item.time, 0, nullptr});
        }
        break;
    case inbound::kind::requ:
        maybe_poll(true);
        break;
    case inbound::kind::closed:
        if (!item.reconnecting) {
            if (item.code == 0)
                fail(errc::connect_failed, item.reason);
            else
                fail(errc::rejected, "closed by the reflector: " + std::to_string(item.code) + " " + item.reason);
        } else {
            spdlog::info("lockstep: connection lost ({} {}); reconnecting", item.code, item.reason);
        }
        break;
    }
}

void
session::impl::fail(std::error_code ec, std::string const& why)
{
    if (ended_)
        return;
    if (ec != errc::left)
        spdlog::error("lockstep: session {} ended: {} ({})", id_, ec.message(), why);
    ended_ = true;
    error_ = ec;
    if (net_)
        net_->close();
}

void
session::impl::apply_event(std::int64_t time, std::uint32_t seq, json const& wire)
{
    json decoded;
    if (wire.is_string()) {
        auto const& text = wire.get_ref<std::string const&>();
        std::optional<std::string> plain;
        if (key_)
            plain = detail::decrypt_text(*key_, text);
        else
            plain = text;
        if (!plain) {
            ++stats_.undecryptable;
            spdlog::warn("lockstep: event #{} failed its HMAC check (forged, or another password); dropped", seq);
        } else {
            decoded = json::parse(*plain, nullptr, false);
            if (decoded.is_discarded())
                decoded = nullptr;
        }
    } else if (wire.is_object()) {
        decoded = wire;
    }
    if (auto ec = engine_->apply_event(time, seq, decoded)) {
        // A gap or time going back: the replica cannot continue from this connection.
        need_sync_ = true;
        net_->reconnect(4000, "event out of order");
        return;
    }
    ++stats_.events_executed;
    if (opt_.record)
        recorded_.push_back({recorded_message::kind::event, time, seq, decoded});
}

bool
session::impl::apply(json const& msg)
{
    auto seq = seq_of(msg);
    if (!seq)
        return false;
    if (!protocol::seq_before(engine_->last_seq(), *seq))
        return true;  // already executed (a snapshot or a seamless rejoin covers it)
    apply_event(msg[0].get<std::int64_t>(), *seq, msg[2]);
    return !need_sync_;
}

// A fresh replica from a SYNC: the snapshot if there is one, then the log.
// Returns whether the replica was replaced (the old one is kept if the snapshot cannot be
// loaded, so views can still read it after the session ended).
bool
session::impl::build(json const& args)
{
    auto fresh = make_engine();
    auto url = detail::field(args, "url", "");
    auto const& messages = messages_of(args);
    if (!url.empty()) {
        // Blocking: a replica cannot go on before its snapshot is loaded.
        auto r = detail::http_request("GET", url, {}, {}, 30s, tls());
        if (r.ec || r.status != 200) {
            fail(errc::snapshot_unavailable, url + ": " + (r.ec ? r.ec.message() : "HTTP " + std::to_string(r.status)));
            return false;
        }
        std::optional<std::string> data = std::move(r.body);
        if (key_) {
            // An encrypted session only trusts snapshots sealed with its key.
            data = detail::decrypt_binary(*key_, *data);
            if (!data) {
                fail(errc::decrypt_failed, url + ": snapshot is not sealed with this session's key");
                return false;
            }
        } else if (detail::is_encrypted_binary(*data)) {
            fail(errc::wrong_password, url + ": snapshot is encrypted");
            return false;
        }
        data = detail::gunzip(*data, max_snapshot_bytes);
        json snap = data ? json::parse(*data, nullptr, false) : json();
        std::string why = "not gzip'd JSON";
        if (!data || snap.is_discarded() || !fresh->restore(snap, why)) {
            fail(errc::snapshot_unavailable, url + ": " + why);
            return false;
        }
        // The uploader named the hash of the state it voted for: anything else is
        // corrupted or forged, and a replica built on it would diverge.
        auto expect = hash_in_url(url);
        auto got = fresh->state_hash();
        if (!expect.empty() && expect != got) {
            report({fresh->now(), got, expect, "snapshot load"});
            fail(errc::snapshot_unavailable, url + ": state hash does not match the snapshot's name");
            return false;
        }
        stats_.built_from = "snapshot";
    } else {
        std::uint32_t before_first = detail::field(args, "seq", protocol::seq_start);
        if (auto first = messages.empty() ? std::nullopt : seq_of(messages[0]))
            before_first = *first - 1;
        fresh->start_fresh(opt_.root_model, opt_.root_args, before_first);
        stats_.built_from = messages.empty() ? "fresh" : "log";
    }
    engine_ = std::move(fresh);
    recorded_.clear();
    // The catch-up is not live (no votes, no view events), whatever way this returns.
    live_ = false;
    struct live_again {
        bool& live;
        ~live_again() { live = true; }
    } guard{live_};
    for (auto& m : messages)
        if (!apply(m))
            return true;  // a gap: need_sync_ is set and the next SYNC rebuilds again
    if (auto t = time_of(args.value("time", json())))
        engine_->advance_to(*t);
    return true;
}

// The session's tove must decrypt to its id with our key; a session without a password
// has none.
bool
session::impl::key_matches(json const& args)
{
    auto tove = detail::field(args, "tove", "");
    bool ok = key_ ? (!tove.empty() && detail::decrypt_text(*key_, tove) == id_) : tove.empty();
    if (!ok)
        fail(errc::wrong_password, key_ ? "the session's key check failed" : "the session is encrypted");
    return ok;
}

void
session::impl::handle_sync(json const& args)
{
    if (!args.is_object()) {
        fail(errc::protocol_error, "SYNC without arguments");
        return;
    }
    auto timeline = detail::field(args, "timeline", "");
    if (!engine_) {
        if (!key_matches(args))
            return;
        timeline_ = timeline;
        build(args);
        return;
    }
    // A reconnect: keep the replica if the reflector still has our place in its log.
    auto const& messages = messages_of(args);
    std::uint32_t last = engine_->last_seq();
    std::uint32_t sync_seq = detail::field(args, "seq", std::uint32_t(0));
    std::uint32_t first = sync_seq + 1;
    if (auto f = messages.empty() ? std::nullopt : seq_of(messages[0]))
        first = *f;
    auto time = time_of(args.value("time", json())).value_or(0);
    bool seamless = !timeline.empty() && timeline == timeline_ && !protocol::seq_before(last + 1, first) && !protocol::seq_before(sync_seq, last) &&
                    time >= engine_->now();
    // A catch-up saying we left means the others already saw our view go.
    for (auto& m : messages) {
        if (!seamless)
            break;
        auto seq = seq_of(m);
        if (seq && protocol::seq_before(last, *seq) && m[2].is_object() && detail::field(m[2], "what", "") == "users" &&
            m[2].contains("left") && m[2]["left"].is_array())
            for (auto& u : m[2]["left"])
                if (u == view_id_)
                    seamless = false;
    }
    if (seamless) {
        for (auto& m : messages)
            if (!apply(m))
                return;
        engine_->advance_to(time);
        ++stats_.seamless_rejoins;
        spdlog::info("lockstep: seamless rejoin of session {} at seq {}", id_, engine_->last_seq());
        return;
    }
    spdlog::warn("lockstep: rejoin of session {} not seamless (timeline or log moved on); rebuilding", id_);
    if (!key_matches(args))  // the session may have been created again, with another password
        return;
    timeline_ = timeline;
    votes_.clear();
    ++stats_.rebuilds;
    if (build(args) && !ended_ && opt_.on_rebuild)
        opt_.on_rebuild();
}

void
session::impl::publish(std::string const& scope, std::string const& event, json const& data, bool internal)
{
    if (!internal && scope.rfind(detail::reserved_scope_prefix, 0) == 0)
        throw std::invalid_argument("scopes starting with \"lockstep.\" are reserved for the SDK");
    std::string payload = json::array({scope, event, data}).dump();
    if (key_)
        payload = detail::encrypt_text(*key_, payload);
    json frame = {{"id", id_}, {"action", "SEND"}, {"args", {now_.load(), 0, std::move(payload), 0}}};
    if (internal)
        frame["tags"] = {{"debounce", 2000}, {"msgID", std::string(detail::poll_scope)}};
    net_->send(frame.dump());
    if (!internal)
        ++published_;
}

// Asks every replica for a snapshot vote when the last snapshot is older than the interval.
void
session::impl::maybe_poll(bool force)
{
    if (opt_.files.empty() || !engine_ || !joined_ || need_sync_)
        return;
    auto since = engine_->now() - engine_->last_poll();
    if (!force && since < opt_.snapshot_interval_ms)
        return;
    auto wall = std::chrono::steady_clock::now();
    if (wall - last_poll_sent_ < 2s)
        return;
    last_poll_sent_ = wall;
    publish(std::string(detail::poll_scope), "poll", {{"min_ms", force ? 0 : opt_.snapshot_interval_ms / 2}}, true);
}

// Every live replica hashes the state at the poll and votes; the tally elects the uploader.
void
session::impl::on_poll(std::int64_t time, std::uint32_t seq)
{
    if (!live_ || opt_.files.empty() || need_sync_)
        return;
    auto state = engine_->snapshot().dump();
    auto hash = detail::sha256_b64url(state);
    json v = {{"hash", hash}, {"view", view_id_}};
    json frame = {{"id", id_},
                  {"action", "TUTTI"},
                  {"args", {time, 0, v.dump(), nullptr, true, nullptr, "snapshot@" + std::to_string(time)}}};
    net_->send(frame.dump(), timeline_);
    ++stats_.snapshot_votes;
    votes_[time] = vote{seq, std::move(state), std::move(hash)};
    while (votes_.size() > 4)
        votes_.erase(votes_.begin());
}

void
session::impl::on_tally(json const& msg)
{
    auto key = detail::field(msg, "tuttiKey", "");
    if (key.rfind("snapshot@", 0) != 0 || !msg.contains("tally") || !msg["tally"].is_object())
        return;
    std::int64_t time = 0;
    try {
        time = std::stoll(key.substr(9));
    } catch (...) {
        return;
    }
    // Every replica computes the same answer: the hash with most votes (ties: the smaller
    // hash) and, among its voters, the smallest view id.
    std::map<std::string, std::pair<int, std::string>> by_hash;  // hash -> (votes, lowest view)
    for (auto& [payload, count] : msg["tally"].items()) {
        auto v = json::parse(payload, nullptr, false);
        if (v.is_discarded() || !v.is_object() || !v.contains("hash") || !v.contains("view") || !v["hash"].is_string() ||
            !v["view"].is_string())
            continue;
        auto& e = by_hash[v["hash"].get<std::string>()];
        e.first += count.is_number() ? count.get<int>() : 1;
        auto view = v["view"].get<std::string>();
        if (e.second.empty() || view < e.second)
            e.second = view;
    }
    if (by_hash.empty())
        return;
    auto best = by_hash.begin();
    for (auto it = by_hash.begin(); it != by_hash.end(); ++it)
        if (it->second.first > best->second.first)
            best = it;
    auto mine = votes_.find(time);
    if (mine == votes_.end())
        return;
    vote v = std::move(mine->second);
    votes_.erase(votes_.begin(), std::next(mine));
    if (v.hash != best->first) {
        report({time, v.hash, best->first, "snapshot vote"});
        return;
    }
    if (best->second.second == view_id_)
        upload(time, std::move(v));
}

void
session::impl::upload(std::int64_t time, vote v)
{
    std::string files = opt_.files;
    while (!files.empty() && files.back() == '/')
        files.pop_back();
    std::string url =
        files + "/snapshots/" + id_ + "/" + pad10(time) + "_" + std::to_string(v.seq) + "-" + v.hash + ".snap";
    json snap = {{"id", id_},
                 {"action", "SNAP"},
                 {"args", {{"time", time}, {"seq", v.seq}, {"hash", v.hash}, {"url", url}, {"dissident", nullptr}}}};
    // Off the step() thread (compression and encryption included): an upload may take a
    // while and the replica must go on.
    enqueue_upload([this, url, state = std::move(v.state), frame = snap.dump(), timeline = timeline_] {
        std::string body = detail::gzip(state);
        if (key_)
            body = detail::encrypt_binary(*key_, body);
        auto r = detail::http_request("PUT", url, body, "application/octet-stream", 30s, tls());
        if (r.ec || r.status / 100 != 2) {
            spdlog::warn("lockstep: snapshot upload to {} failed: {}", url,
                         r.ec ? r.ec.message() : "HTTP " + std::to_string(r.status));
            return;
        }
        net_->send(frame, timeline);  // dropped if the session is another one by now
        ++uploaded_;
    });
}

void
session::impl::report(divergence const& d)
{
    ++stats_.divergences;
    spdlog::error("lockstep: replica of session {} diverged at model time {} ({}): local state {} but {} expected",
                  id_, d.time, d.what, d.local_hash, d.majority_hash);
    json log = {{"action", "LOG"},
                {"args", "lockstep replica " + view_id_ + " diverged at " + std::to_string(d.time) + " (" + d.what + ")"}};
    net_->send(log.dump());
    if (opt_.on_divergence)
        opt_.on_divergence(d);
}

void
session::impl::leave()
{
    if (!ended_) {
        ended_ = true;
        error_ = errc::left;
    }
    shutdown();
}

// One uploader thread per session, started with the first upload; it finishes the queued
// uploads (and their SNAPs) before the session closes.
void
session::impl::enqueue_upload(std::function<void()> job)
{
    std::lock_guard lk(upload_mu_);
    if (upload_stop_)
        return;
    upload_q_.push_back(std::move(job));
    if (!upload_thread_.joinable())
        upload_thread_ = std::thread([this] {
            for (;;) {
                std::function<void()> next;
                {
                    std::unique_lock lk(upload_mu_);
                    upload_cv_.wait(lk, [&] { return upload_stop_ || !upload_q_.empty(); });
                    if (upload_q_.empty())
                        return;
                    next = std::move(upload_q_.front());
                    upload_q_.pop_front();
                }
                next();
            }
        });
    upload_cv_.notify_one();
}

void
session::impl::shutdown()
{
    {
        std::lock_guard lk(upload_mu_);
        upload_stop_ = true;
        if (error_ != errc::left)
            upload_q_.clear();  // a failed session has nothing worth uploading
    }
    upload_cv_.notify_one();
    if (upload_thread_.joinable())
        upload_thread_.join();
    if (net_)
        net_->close();
    connected_ = false;
}

// ---------------------------------------------------------------------------------------

session::session(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
session::~session() { impl_->leave(); }

std::unique_ptr<session>
session::join(join_options options, std::error_code& ec)
{
    ec.clear();
    auto p = std::make_unique<impl>(std::move(options));
    if ((ec = p->start()))
        return nullptr;
    auto deadline = std::chrono::steady_clock::now() + p->opt_.join_timeout;
    while (!p->joined_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left <= 0ms) {
            spdlog::error("lockstep: session {} not in sync after {} ms", p->id_, p->opt_.join_timeout.count());
            ec = errc::join_timeout;
            p->leave();
            return nullptr;
        }
        if (!p->wait_step(std::min(left, std::chrono::milliseconds(50)))) {
            ec = p->error_;
            p->leave();
            return nullptr;
        }
    }
    return std::unique_ptr<session>(new session(std::move(p)));
}

void session::leave() { impl_->leave(); }
bool session::step() { return impl_->step(); }
bool session::wait_step(std::chrono::milliseconds max_wait) { return impl_->wait_step(max_wait); }

bool
session::run_until(std::function<bool()> const& done, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left <= 0ms || !impl_->wait_step(std::min(left, std::chrono::milliseconds(20))))
            break;
    }
    return done();
}

void
session::run_for(std::chrono::milliseconds duration)
{
    auto deadline = std::chrono::steady_clock::now() + duration;
    run_until([&] { return std::chrono::steady_clock::now() >= deadline; }, duration + 1ms);
}

void
session::publish(std::string const& scope, std::string const& event, json const& data)
{
    impl_->publish(scope, event, data);
}

void
session::subscribe(std::string const& scope, std::string const& event, std::function<void(json const&)> handler)
{
    impl_->view_subs_[{scope, event}].push_back(std::move(handler));
}

void
session::unsubscribe(std::string const& scope, std::string const& event)
{
    impl_->view_subs_.erase({scope, event});
}

model const&
session::root() const
{
    auto r = impl_->engine_ ? impl_->engine_->root() : nullptr;
    if (!r)
        throw std::logic_error("lockstep: the session has no root model");
    return *r;
}
model const* session::find(model_id id) const { return impl_->engine_->find(id); }
std::int64_t session::now() const { return impl_->engine_->now(); }
std::string const& session::id() const { return impl_->id_; }
std::string const& session::view_id() const { return impl_->view_id_; }
std::string session::state_hash() const { return impl_->engine_->state_hash(); }
std::error_code session::error() const { return impl_->error_; }
bool session::connected() const { return impl_->connected_; }
std::vector<recorded_message> const& session::recorded() const { return impl_->recorded_; }
void session::simulate_network_drop() { impl_->net_->drop(); }

session_stats
session::stats() const
{
    auto s = impl_->stats_;
    s.events_published = impl_->published_;
    s.snapshots_uploaded = impl_->uploaded_;
    return s;
}

std::string
session::session_id_for(join_options const& o)
{
    return detail::sha256_b64url(o.app_id + "/" + o.session_name + "|" + std::string(sdk_protocol) + "|" +
                                 o.code_version);
}

}  // namespace lockstep::client
