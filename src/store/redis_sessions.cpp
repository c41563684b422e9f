#include "store/redis_sessions.hpp"

#include "store/journal.hpp"
#include "store/sessions_lua.hpp"

#include <spdlog/spdlog.h>

#include <openssl/evp.h>

#include <charconv>
#include <stdexcept>

namespace lockstep::store {

namespace {

template <class T>
bool
parse_number(std::string const& s, T& out)
{
    auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool
is_noscript(redis::value const& v)
{
    return v.is_error() && v.str.rfind("NOSCRIPT", 0) == 0;
}

struct key_set {
    std::string k[7];
    explicit key_set(std::string const& id)
        : k{session_key(id, "lease"), session_key(id, "fence"), session_key(id, "h"), session_key(id, "ev"),
            session_key(id, "moved"), "ls:clock", "ls:outage"}
    {
    }
};

std::string
want_key(std::string const& holder)
{
    return "ls:want:" + holder;
}

}  // namespace

redis_sessions::redis_sessions(redis::link& link, sessions_options opts) : link_(link), opts_(opts)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(sessions_lua, sizeof(sessions_lua) - 1, md, &len, EVP_sha1(), nullptr) != 1)
        throw std::runtime_error("cannot compute the SHA-1 of the sessions script");
    static constexpr char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < len; ++i) {
        sha_.push_back(hex[md[i] >> 4]);
        sha_.push_back(hex[md[i] & 15]);
    }
}

redis::command_args
redis_sessions::script_args(std::string const (&keys)[7], char const* op) const
{
    return {"EVALSHA", sha_, "7", keys[0], keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], op};
}

std::optional<std::vector<redis::value>>
redis_sessions::run_scripts(std::vector<redis::command_args> const& cmds)
{
    // One call goes alone: link::command re-opens a broken connection and tries again.
    auto send = [this](std::vector<redis::command_args> const& c) -> std::optional<std::vector<redis::value>> {
        if (c.size() != 1)
            return link_.pipeline(c);
        auto v = link_.command(c.front());
        if (!v)
            return std::nullopt;
        return std::vector<redis::value>{std::move(*v)};
    };
    auto r = send(cmds);
    if (!r)
        return r;
    std::vector<std::size_t> again;
    for (std::size_t i = 0; i < r->size(); ++i)
        if (is_noscript((*r)[i]))
            again.push_back(i);
    if (again.empty())
        return r;
    // Not in this Redis' script cache (restarted, failed over, SCRIPT FLUSH): load it
    // and run what was refused, in the same order. A refused call ran nothing.
    auto loaded = link_.command({"SCRIPT", "LOAD", sessions_lua});
    if (!loaded || loaded->is_error()) {
        spdlog::error("redis: SCRIPT LOAD failed: {}", loaded ? loaded->str : "unreachable");
        return r;  // the refused calls stay errors
    }
    std::vector<redis::command_args> retry;
    retry.reserve(again.size());
    for (auto i : again)
        retry.push_back(cmds[i]);
    auto r2 = send(retry);
    if (!r2)
        return std::nullopt;  // a prefix may have run: the caller treats it all as unknown
    for (std::size_t j = 0; j < again.size(); ++j)
        (*r)[again[j]] = std::move((*r2)[j]);
    return r;
}

std::string
session_key(std::string const& id, char const* what)
{
    // The braces make every key of one session hash to one Redis Cluster slot.
    return "ls:s:{" + id + "}:" + what;
}

acquire_result
redis_sessions::acquire(std::string const& id, std::string const& holder)
{
    key_set keys(id);
    auto args = script_args(keys.k, "acquire");
    auto lease_ms = std::to_string(opts_.lease_ms);
    args.push_back(holder);
    args.push_back(lease_ms);
    args.push_back(seen_clock_.load() ? "1" : "0");
    acquire_result out;
    auto rs = run_scripts({args});
    auto r = rs ? std::optional<redis::value>(std::move(rs->front())) : std::nullopt;
    if (r && !r->is_error())
        seen_clock_.store(true);
    if (r && r->type == redis::value::kind::array && r->elements.size() == 1 && r->elements[0].integer == 2) {
        out.outage = true;  // Redis was silent: for a lease nobody takes sessions over
        return out;         // unavailable
    }
    if (!r || r->type != redis::value::kind::array || r->elements.size() < 2) {
        if (r)
            spdlog::error("redis: acquire {}: unexpected reply {}", id, r->str);
        return out;  // unavailable
    }
    auto& e = r->elements;
    if (e[0].integer == 0) {
        out.what = acquire_result::status::held;
        out.holder = e[1].str;
        return out;
    }
    out.what = acquire_result::status::acquired;
    if (e.size() < 7) {
        out.unreadable = true;
        return out;
    }
    out.granted.token = e[1].str;
    out.granted.fence = static_cast<std::uint64_t>(e[2].integer);
    if (e[3].str.empty())
        return out;  // never stored: a new session
    auto h = journal::parse_header_json(e[3].str);
    cluster_state st;
    std::uint32_t seq = 0;
    if (!h || !parse_number(e[4].str, seq) || (!e[5].str.empty() && !parse_number(e[5].str, st.seen_ms))) {
        out.unreadable = true;
        return out;
    }
    st.header = std::move(*h);
    st.header.seq = seq;
    auto const& ev = e[6].elements;
    st.events.reserve(ev.size());
    for (std::size_t i = 0; i < ev.size(); ++i)
        st.events.push_back({seq - static_cast<std::uint32_t>(ev.size() - 1 - i), ev[i].str});
    out.state = std::move(st);
    return out;
}

std::vector<redis_sessions::renew_status>
redis_sessions::renew(std::vector<std::pair<std::string, lease>> const& leases)
{
    std::vector<renew_status> out(leases.size(), renew_status::unavailable);
    if (leases.empty())
        return out;
    std::vector<key_set> keys;
    std::vector<std::string> fences;
    keys.reserve(leases.size());
    fences.reserve(leases.size());
    auto lease_ms = std::to_string(opts_.lease_ms);
    std::vector<redis::command_args> cmds;
    for (auto const& [id, l] : leases) {
        keys.emplace_back(id);
        fences.push_back(std::to_string(l.fence));
        auto args = script_args(keys.back().k, "renew");
        args.push_back(l.token);
        args.push_back(fences.back());
        args.push_back(lease_ms);
        cmds.push_back(std::move(args));
    }
    auto r = run_scripts(cmds);
    if (!r)
        return out;
    for (std::size_t i = 0; i < r->size(); ++i)
        if (!(*r)[i].is_error())
            out[i] = (*r)[i].integer == 1   ? renew_status::ok
                     : (*r)[i].integer == 2 ? renew_status::reseeded
                                            : renew_status::lost;
    return out;
}

std::optional<std::int64_t>
redis_sessions::tick()
{
    key_set keys("");
    auto args = script_args(keys.k, "tick");
    auto lease_ms = std::to_string(opts_.lease_ms);
    args.push_back(lease_ms);
    args.push_back(seen_clock_.load() ? "1" : "0");
    auto r = run_scripts({args});
    if (!r || r->front().type != redis::value::kind::integer)
        return std::nullopt;
    seen_clock_.store(true);
    return r->front().integer;
}

bool
redis_sessions::release(std::string const& id, lease const& l)
{
    key_set keys(id);
    auto args = script_args(keys.k, "release");
    args.push_back(l.token);
    auto r = run_scripts({args});
    return r && r->front().integer == 1;
}

std::string
holder_of(std::string const& token)
{
    return token.substr(0, token.rfind('#'));
}

bool
redis_sessions::want(std::string const& holder, std::string const& id)
{
    auto key = want_key(holder);
    // Expires unless asked again: a dead holder's set does not stay behind.
    auto ttl = std::to_string(std::uint64_t{opts_.lease_ms} * 4);
    auto r = link_.pipeline({{"SADD", key, id}, {"PEXPIRE", key, ttl}});
    return r && !r->empty() && !r->front().is_error();
}

bool
redis_sessions::recently_moved(std::string const& id)
{
    auto r = link_.command({"EXISTS", session_key(id, "moved")});
    return r && !r->is_error() && r->integer == 1;
}

std::vector<std::string>
redis_sessions::wanted(std::string const& holder, std::size_t max)
{
    std::vector<std::string> out;
    auto count = std::to_string(max);
    auto r = link_.command({"SPOP", want_key(holder), count});
    if (!r || r->type != redis::value::kind::array)
        return out;
    out.reserve(r->elements.size());
    for (auto& e : r->elements)
        out.push_back(std::move(e.str));
    return out;
}

handoff_status
redis_sessions::may_hand_off(std::string const& id, lease const& l, std::uint32_t min_interval_ms)
{
    key_set keys(id);
    auto args = script_args(keys.k, "handoff");
    auto interval = std::to_string(min_interval_ms);
    args.push_back(l.token);
    args.push_back(interval);
    auto r = run_scripts({args});
    if (!r || r->front().is_error())
        return handoff_status::unavailable;
    auto v = r->front().integer;
    return v == 1 ? handoff_status::allowed : v == 0 ? handoff_status::not_held : handoff_status::refused;
}

std::vector<append_status>
redis_sessions::append(std::vector<session_append> const& batch)
{
    std::vector<append_status> out(batch.size(), append_status::unavailable);
    if (batch.empty())
        return out;
    std::vector<key_set> keys;
    std::vector<std::array<std::string, 5>> nums;  // fence, seq, seen, retention, first seq
    keys.reserve(batch.size());
    nums.reserve(batch.size());
    std::vector<redis::command_args> cmds;
    for (auto const& a : batch) {
        keys.emplace_back(a.id);
        auto first = a.events.empty() ? std::string()
                                      : std::to_string(a.seq - static_cast<std::uint32_t>(a.events.size() - 1));
        bool seq_known = a.rebase || !a.events.empty() || !a.header_json.empty();
        nums.push_back({std::to_string(a.fence), seq_known ? std::to_string(a.seq) : std::string(),
                        a.seen_ms < 0 ? std::string() : std::to_string(a.seen_ms), std::to_string(opts_.retention_ms),
                        std::move(first)});
        auto const& n = nums.back();
        auto args = script_args(keys.back().k, "append");
        args.insert(args.end(), {n[0], a.rebase ? "1" : "0", a.header_json, n[1], n[2], n[3], n[4]});
        for (auto const& e : a.events)
            args.push_back(e);
        cmds.push_back(std::move(args));
    }
    auto r = run_scripts(cmds);
    if (!r)
        return out;
    for (std::size_t i = 0; i < r->size(); ++i) {
        auto const& v = (*r)[i];
        if (v.is_error()) {
            spdlog::error("redis: journal append for session {} failed: {}", batch[i].id, v.str);
            continue;
        }
        out[i] = v.integer == 1 ? append_status::ok : v.integer == 0 ? append_status::fenced : append_status::gap;
    }
    // Only the owner keeps blobs alive: a fenced writer's header is not the session's.
    std::vector<std::string> blob_keys;  // owned here: command_args views them
    for (std::size_t i = 0; i < batch.size(); ++i)
        if (out[i] == append_status::ok)
            for (auto const& b : batch[i].blobs)
                blob_keys.push_back("ls:blob:" + b);
    auto const ttl = std::to_string(opts_.retention_ms);
    std::vector<redis::command_args> touch;
    touch.reserve(blob_keys.size());
    for (auto const& k : blob_keys)
        touch.push_back({"PEXPIRE", k, ttl});
    if (!touch.empty() && !link_.pipeline(touch))
        spdlog::warn("redis: the time to live of {} blob(s) was not renewed (Redis unreachable)", touch.size());
    return out;
}

bool
redis_sessions::put_blob(std::string const& path, std::string_view bytes, std::uint64_t ttl_s)
{
    auto key = "ls:blob:" + path;
    auto ttl = std::to_string(std::max<std::uint64_t>(1, ttl_s));
    auto r = link_.command({"SET", key, bytes, "EX", ttl});
    return r && !r->is_error();
}

std::optional<std::string>
redis_sessions::get_blob(std::string const& path, bool& reachable)
{
    auto r = link_.command({"GET", "ls:blob:" + path});
    reachable = r.has_value();
    if (!r || r->type != redis::value::kind::string)
        return std::nullopt;
    return std::move(r->str);
}

}  // namespace lockstep::store
