#include "router/memory_directory.hpp"

#include <algorithm>
#include <cmath>

namespace lockstep::router {

using nlohmann::json;

namespace {

/// Seats at which a shard counts as full for overflow: ceil(capacity * overflow),
/// computed so that 50 * 0.56 is 28, not 29.
std::size_t
threshold_of(policy const& p)
{
    auto t = static_cast<std::size_t>(std::ceil(p.capacity * p.overflow - 1e-9));
    return std::max<std::size_t>(1, t);
}

}  // namespace

memory_directory::memory_directory(clock_source const& clock, options opts, std::uint32_t heartbeat_ttl_ms)
    : clock_(clock), opts_(std::move(opts)), heartbeat_ttl_us_(static_cast<std::int64_t>(heartbeat_ttl_ms) * 1000)
{
}

void
memory_directory::sweep(room& r, std::int64_t now)
{
    for (auto& sh : r.shards) {
        for (auto it = sh.seats.begin(); it != sh.seats.end();) {
            if (!it->second.confirmed && it->second.expires_us <= now) {
                tokens_.erase(it->second.token);
                it = sh.seats.erase(it);
            } else {
                ++it;
            }
        }
        if (sh.seats.empty() && sh.empty_since_us == 0)
            sh.empty_since_us = now;
        else if (!sh.seats.empty())
            sh.empty_since_us = 0;
    }
    // Retire empty overflow shards (never the first) after the grace period, but keep
    // headroom: one empty shard stays if every other one is at the threshold.
    auto threshold = [&r](shard const& s) { return s.seats.size() >= threshold_of(r.pol); };
    for (std::size_t i = r.shards.size(); i-- > 1;) {
        auto& sh = r.shards[i];
        if (!sh.seats.empty() || now - sh.empty_since_us < static_cast<std::int64_t>(r.pol.retire_ms) * 1000)
            continue;
        bool others_full = std::all_of(r.shards.begin(), r.shards.end(),
                                       [&](shard const& o) { return &o == &sh || threshold(o); });
        if (others_full)
            continue;
        r.shards.erase(r.shards.begin() + static_cast<std::ptrdiff_t>(i));
    }
}

reflector_info const*
memory_directory::reflector_by_id(std::string const& id) const
{
    auto it = reflectors_.find(id);
    return it == reflectors_.end() ? nullptr : &it->second;
}

reflector_info const*
memory_directory::place(std::string const& region)
{
    auto now = clock_.now_us();
    reflector_info const* best = nullptr;
    reflector_info const* best_any = nullptr;
    for (auto const& [id, r] : reflectors_) {
        if (now - r.heartbeat_us > heartbeat_ttl_us_ || r.draining)
            continue;  // heartbeat expired or draining: no new placements
        if (!best_any || r.load < best_any->load)
            best_any = &r;
        if (!region.empty() && r.region == region && (!best || r.load < best->load))
            best = &r;
    }
    return best ? best : best_any;
}

memory_directory::shard&
memory_directory::spawn(std::string const& name, room& r, std::string const& region)
{
    shard sh;
    sh.index = r.next_index++;
    sh.session = sh.index == 1 ? name : name + "~" + std::to_string(sh.index);
    if (auto const* refl = place(region))
        sh.reflector_id = refl->id;
    sh.empty_since_us = clock_.now_us();
    r.shards.push_back(std::move(sh));
    return r.shards.back();
}

std::optional<seat_answer>
memory_directory::join(std::string const& name, std::string const& user, std::string const& region, api_error& err)
{
    std::lock_guard lock(mu_);
    auto now = clock_.now_us();
    if (reflectors_.empty() || !place(region)) {
        err = {503, "no live reflector to place the session on", "region"};
        return std::nullopt;
    }
    auto [it, created] = rooms_.try_emplace(name);
    room& r = it->second;
    if (created)
        r.pol = policy_for(opts_, name);
    sweep(r, now);

    auto answer = [&](shard& sh, seat const& st) {
        seat_answer a;
        a.room = name;
        a.session = sh.session;
        a.shard = sh.index;
        auto const* refl = reflector_by_id(sh.reflector_id);
        if (!refl || refl->draining || now - refl->heartbeat_us > heartbeat_ttl_us_) {
            // Its reflector is gone or draining: move the shard, so all its users go to
            // one live place.
            refl = place(region);
            if (refl)
                sh.reflector_id = refl->id;
        }
        a.reflector = refl ? seat_url(refl->url, st.token) : "";
        a.files = refl ? refl->files_url : "";
        a.expires_in_ms = st.confirmed ? 0 : std::max<std::int64_t>(0, (st.expires_us - now) / 1000);
        return a;
    };
    // The same user asking twice gets the same seat.
    for (auto& sh : r.shards) {
        auto s = sh.seats.find(user);
        if (s != sh.seats.end()) {
            if (!s->second.confirmed)
                s->second.expires_us = now + static_cast<std::int64_t>(r.pol.seat_ttl_ms) * 1000;
            return answer(sh, s->second);
        }
    }
    shard* target = nullptr;
    for (auto& sh : r.shards)
        if (sh.seats.size() < r.pol.capacity) {
            target = &sh;
            break;
        }
    if (!target)
        target = &spawn(name, r, region);
    seat st;
    st.user = user;
    st.token = random_token();
    st.expires_us = now + static_cast<std::int64_t>(r.pol.seat_ttl_ms) * 1000;
    auto& placed = target->seats.emplace(user, st).first->second;
    target->empty_since_us = 0;
    tokens_[st.token] = {name, user};
    auto result = answer(*target, placed);
    // Always keep headroom: when every shard is at the threshold, open the next one.
    auto limit = threshold_of(r.pol);
    if (std::all_of(r.shards.begin(), r.shards.end(), [&](shard const& s) { return s.seats.size() >= limit; }))
        spawn(name, r, region);
    return result;
}

bool
memory_directory::leave(std::string const& name, std::string const& user)
{
    std::lock_guard lock(mu_);
    auto it = rooms_.find(name);
    if (it == rooms_.end())
        return false;
    for (auto& sh : it->second.shards) {
        auto s = sh.seats.find(user);
        if (s != sh.seats.end()) {
            free_seat(sh, s);
            return true;
        }
    }
    return false;
}

void
memory_directory::free_seat(shard& sh, std::map<std::string, seat>::iterator s)
{
    tokens_.erase(s->second.token);
    sh.seats.erase(s);
    if (sh.seats.empty())
        sh.empty_since_us = clock_.now_us();
}

std::optional<memory_directory::seat_ref>
memory_directory::find_by_token(std::string const& token)
{
    auto t = tokens_.find(token);
    if (t == tokens_.end())
        return std::nullopt;
    auto r = rooms_.find(t->second.first);
    if (r == rooms_.end())
        return std::nullopt;
    for (auto& sh : r->second.shards) {
        auto s = sh.seats.find(t->second.second);
        if (s != sh.seats.end() && s->second.token == token)
            return seat_ref{&r->second, &sh, s};
    }
    return std::nullopt;
}

json
memory_directory::rooms(std::size_t limit)
{
    std::vector<std::string> names;
    {
        std::lock_guard lock(mu_);
        for (auto const& [name, r] : rooms_) {  // a std::map: by name
            if (names.size() == limit)
                break;
            names.push_back(name);
        }
    }
    json out = json::array();
    for (auto const& name : names)
        if (auto info = room_info(name))
            out.push_back(std::move(*info));
    return out;
}

std::optional<json>
memory_directory::room_info(std::string const& name)
{
    std::lock_guard lock(mu_);
    auto it = rooms_.find(name);
    if (it == rooms_.end())
        return std::nullopt;
    auto& r = it->second;
    sweep(r, clock_.now_us());
    json shards = json::array();
    for (auto const& sh : r.shards) {
        int members = 0, reserved = 0;
        for (auto const& [u, s] : sh.seats)
            (s.confirmed ? members : reserved) += 1;
        auto const* refl = reflector_by_id(sh.reflector_id);
        shards.push_back({{"session", sh.session},
                          {"shard", sh.index},
                          {"members", members},
                          {"reserved", reserved},
                          {"capacity", r.pol.capacity},
                          {"reflector", refl ? refl->id : ""}});
    }
    return json{{"room", name}, {"capacity", r.pol.capacity}, {"overflow", r.pol.overflow}, {"shards", shards}};
}

std::optional<json>
memory_directory::create_child(std::string const& parent, std::string const& purpose, std::string const& region,
                     api_error& err)
{
    std::lock_guard lock(mu_);
    auto& list = children_[parent];
    for (auto const& c : list)
        if (c.purpose == purpose) {
            auto const* refl = reflector_by_id(c.reflector_id);
            return json{{"parent", parent},
                        {"session", c.session},
                        {"purpose", purpose},
                        {"reflector", refl ? refl->url : ""},
                        {"files", refl ? refl->files_url : ""}};
        }
    auto const* refl = place(region);
    if (!refl) {
        err = {503, "no live reflector to place the session on", "region"};
        return std::nullopt;
    }
    child c{parent + "/" + purpose, purpose, refl->id};
    list.push_back(c);
    return json{{"parent", parent},
                {"session", c.session},
                {"purpose", purpose},
                {"reflector", refl->url},
                {"files", refl->files_url}};
}

json
memory_directory::children(std::string const& parent)
{
    std::lock_guard lock(mu_);
    json out = json::array();
    auto it = children_.find(parent);
    if (it == children_.end())
        return out;
    for (auto const& c : it->second) {
        auto const* refl = reflector_by_id(c.reflector_id);
        out.push_back({{"session", c.session}, {"purpose", c.purpose}, {"reflector", refl ? refl->url : ""}});
    }
    return out;
}

void
memory_directory::register_reflector(reflector_info r)
{
    std::lock_guard lock(mu_);
    r.heartbeat_us = clock_.now_us();
    reflectors_[r.id] = std::move(r);
}

json
memory_directory::reflectors()
{
    std::lock_guard lock(mu_);
    auto now = clock_.now_us();
    json out = json::array();
    for (auto const& [id, r] : reflectors_)
        out.push_back({{"id", id},
                       {"region", r.region},
                       {"url", r.url},
                       {"peer", r.peer_url},
                       {"files", r.files_url},
                       {"load", r.load},
                       {"last_heartbeat_ms_ago", (now - r.heartbeat_us) / 1000},
                       {"live", now - r.heartbeat_us <= heartbeat_ttl_us_},
                       {"draining", r.draining}});
    return out;
}

bool
memory_directory::member_joined(std::string const& token, std::string const& name, std::string const& conn)
{
    std::lock_guard lock(mu_);
    auto ref = find_by_token(token);
    if (!ref)
        return false;
    auto& st = ref->s->second;
    // JOIN names are "<appId>/<session>" (an appId has no '/'); a seat only counts in
    // its own session, and an expired reservation not yet swept does not count.
    auto slash = name.find('/');
    auto const& session = ref->sh->session;
    bool same = name == session || (slash != std::string::npos && name.substr(slash + 1) == session);
    if (!same || (!st.confirmed && st.expires_us < clock_.now_us()))
        return false;
    st.confirmed = true;
    st.conns.insert(conn);
    return true;
}

bool
memory_directory::seat_live(std::string const& token)
{
    std::lock_guard lock(mu_);
    auto ref = find_by_token(token);
    return ref && (ref->s->second.confirmed || ref->s->second.expires_us >= clock_.now_us());
}

void
memory_directory::member_left(std::string const& token, bool left, std::string const& conn)
{
    std::lock_guard lock(mu_);
    auto ref = find_by_token(token);
    if (!ref)
        return;
    auto& st = ref->s->second;
    st.conns.erase(conn);
    if (!st.conns.empty() || !st.confirmed)
        return;
    if (left) {
        free_seat(*ref->sh, ref->s);
        return;
    }
    // Back to reserved: a reconnect within the TTL takes it again.
    st.confirmed = false;
    st.expires_us = clock_.now_us() + static_cast<std::int64_t>(ref->r->pol.seat_ttl_ms) * 1000;
}

}  // namespace lockstep::router
