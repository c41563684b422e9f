#include "client/engine.hpp"

#include "client/crypto.hpp"
#include "client/json_field.hpp"

#include <lockstep/client/error.hpp>
#include <lockstep/protocol/constants.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <set>

namespace lockstep::client {

// Sets the fields of the model base class that only the replica may set.
struct model_access {
    static void attach(model& m, detail::host* h, model_id id, std::string const& type)
    {
        m.host_ = h;
        m.id_ = id;
        m.type_ = type;
    }
};

namespace detail {

namespace {

std::uint64_t
splitmix64(std::uint64_t& x)
{
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

std::uint64_t
rotl(std::uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

// A view id from an entry of a users message: the SDK sends strings; other clients may
// send [id] or {id, data}.
std::string
view_of(json const& u)
{
    if (u.is_string())
        return u.get<std::string>();
    if (u.is_array() && !u.empty() && u[0].is_string())
        return u[0].get<std::string>();
    if (u.is_object() && u.contains("id") && u["id"].is_string())
        return u["id"].get<std::string>();
    return u.dump();
}

std::string
hex64(std::uint64_t v)
{
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

}  // namespace

engine::engine(model_registry const& registry, std::string session_id, engine_hooks hooks)
    : registry_(registry), session_id_(std::move(session_id)), hooks_(std::move(hooks))
{
    // Seed from the session id, so every replica of a session draws the same numbers.
    std::string h = sha256_b64url("lockstep-rng|" + session_id_);
    std::uint64_t seed = 0;
    std::memcpy(&seed, h.data(), sizeof seed);
    for (auto& s : rng_)
        s = splitmix64(seed);
}

engine::~engine() = default;

void
engine::start_fresh(std::string const& root_type, json const& args, std::uint32_t last_seq)
{
    last_seq_ = last_seq;
    auto c = registry_.find(root_type);
    if (!c)
        throw std::invalid_argument("root model class not registered: " + root_type);
    create(c->type, args);
}

model&
engine::make(model_class const& c, model_id id)
{
    auto m = c.make();
    model_access::attach(*m, this, id, c.name);
    auto& ref = *m;
    models_[id] = std::move(m);
    return ref;
}

model*
engine::root() const
{
    auto it = models_.find(1);
    return it == models_.end() ? nullptr : it->second.get();
}

double
engine::random()
{
    return static_cast<double>(next64() >> 11) * 0x1.0p-53;
}

std::uint32_t
engine::random_u32()
{
    return static_cast<std::uint32_t>(next64() >> 32);
}

std::uint64_t
engine::next64()
{
    // xoshiro256**
    std::uint64_t result = rotl(rng_[1] * 5, 7) * 9;
    std::uint64_t t = rng_[1] << 17;
    rng_[2] ^= rng_[0];
    rng_[3] ^= rng_[1];
    rng_[1] ^= rng_[2];
    rng_[0] ^= rng_[3];
    rng_[2] ^= t;
    rng_[3] = rotl(rng_[3], 45);
    return result;
}

void
engine::publish(std::string_view scope, std::string_view event, json const& data)
{
    topic const key{std::string(scope), std::string(event)};
    auto it = subs_.find(key);
    if (it != subs_.end()) {
        // Handlers may (un)subscribe: iterate over a copy, skip the ones removed meanwhile.
        auto subscribers = it->second;
        for (auto& [m, method] : subscribers) {
            auto now_it = subs_.find(key);
            if (now_it == subs_.end() ||
                std::find(now_it->second.begin(), now_it->second.end(), subscriber(m, method)) ==
                    now_it->second.end())
                continue;
            call(m, method, data);
        }
    }
    if (hooks_.on_publish)
        hooks_.on_publish(key.first, key.second, data);
}

void
engine::subscribe(model_id m, std::string scope, std::string event, std::string method)
{
    auto& list = subs_[topic(std::move(scope), std::move(event))];
    subscriber s(m, std::move(method));
    if (std::find(list.begin(), list.end(), s) == list.end())
        list.push_back(std::move(s));
}

void
engine::unsubscribe(model_id m, std::string_view scope, std::string_view event)
{
    auto it = subs_.find(topic(std::string(scope), std::string(event)));
    if (it == subs_.end())
        return;
    std::erase_if(it->second, [m](subscriber const& s) { return s.first == m; });
    if (it->second.empty())
        subs_.erase(it);
}

std::uint64_t
engine::future(model_id m, std::int64_t ms, std::string method, json args)
{
    if (ms < 0)
        ms = 0;
    std::uint64_t handle = next_future_++;
    std::int64_t at = now_ + ms;
    futures_.emplace(std::make_pair(at, handle), pending_call{m, std::move(method), std::move(args)});
    future_times_.emplace(handle, at);
    return handle;
}

bool
engine::cancel_future(std::uint64_t handle)
{
    auto it = future_times_.find(handle);
    if (it == future_times_.end())
        return false;
    futures_.erase(std::make_pair(it->second, handle));
    future_times_.erase(it);
    return true;
}

model&
engine::create(std::type_index type, json const& args)
{
    auto c = registry_.find(type);
    if (!c)
        throw std::invalid_argument(std::string("model class not registered: ") + type.name());
    auto& m = make(*c, next_model_++);
    m.init(args);
    return m;
}

void
engine::destroy(model_id m)
{
    for (auto it = subs_.begin(); it != subs_.end();) {
        std::erase_if(it->second, [m](subscriber const& s) { return s.first == m; });
        it = it->second.empty() ? subs_.erase(it) : std::next(it);
    }
    for (auto it = futures_.begin(); it != futures_.end();) {
        if (it->second.target == m) {
            future_times_.erase(it->first.second);
            it = futures_.erase(it);
        } else {
            ++it;
        }
    }
    models_.erase(m);
}

model*
engine::find(model_id m)
{
    auto it = models_.find(m);
    return it == models_.end() ? nullptr : it->second.get();
}

std::vector<std::string>
engine::views() const
{
    std::vector<std::string> out;
    for (auto& [v, n] : views_)
        out.push_back(v);
    return out;
}

void
engine::call(model_id target, std::string const& method, json const& args)
{
    auto m = find(target);
    if (!m)
        return;  // destroyed meanwhile
    auto c = registry_.find(m->type_name());
    if (!c || !c->call(*m, method, args))
        spdlog::error("lockstep: model {} ({}) has no method '{}'", target, m->type_name(), method);
}

void
engine::run_due(std::int64_t time)
{
    while (!futures_.empty() && futures_.begin()->first.first <= time) {
        auto node = futures_.extract(futures_.begin());
        future_times_.erase(node.key().second);
        now_ = std::max(now_, node.key().first);
        call(node.mapped().target, node.mapped().method, node.mapped().args);
    }
}

void
engine::advance_to(std::int64_t time)
{
    if (time < now_)
        return;
    run_due(time);
    now_ = time;
}

std::error_code
engine::apply_event(std::int64_t time, std::uint32_t seq, json const& payload)
{
    if (seq != static_cast<std::uint32_t>(last_seq_ + 1)) {
        spdlog::error("lockstep: expected event #{} got #{}", static_cast<std::uint32_t>(last_seq_ + 1), seq);
        return errc::protocol_error;
    }
    if (time < now_) {
        spdlog::error("lockstep: event #{} at {} is before model time {}", seq, time, now_);
        return errc::protocol_error;
    }
    run_due(time);
    now_ = time;
    last_seq_ = seq;
    if (payload.is_object()) {
        auto what = field(payload, "what", "");
        if (what == "users")
            on_users(payload);
        else if (what == "tally" && hooks_.on_tally)
            hooks_.on_tally(payload);
        return {};
    }
    if (!payload.is_array() || payload.size() < 2 || !payload[0].is_string() || !payload[1].is_string())
        return {};  // undecryptable or not ours: time and seq advanced, nothing else
    auto const& scope = payload[0].get_ref<std::string const&>();
    auto const& event = payload[1].get_ref<std::string const&>();
    json const& data = payload.size() > 2 ? payload[2] : json();
    if (scope == poll_scope) {
        on_poll(data, seq);
        return {};
    }
    publish(scope, event, data);
    return {};
}

void
engine::on_poll(json const& data, std::uint32_t seq)
{
    std::int64_t min_ms = field(data, "min_ms", std::int64_t(0));
    if (last_poll_ != 0 && now_ - last_poll_ < min_ms)
        return;
    last_poll_ = now_ == 0 ? 1 : now_;
    if (hooks_.on_poll)
        hooks_.on_poll(now_, seq);
}

void
engine::on_users(json const& msg)
{
    static json const empty = json::array();
    auto const& joined = msg.contains("joined") && msg["joined"].is_array() ? msg["joined"] : empty;
    auto const& left = msg.contains("left") && msg["left"].is_array() ? msg["left"] : empty;
    std::vector<std::string> joined_ids;
    for (auto& u : joined)
        joined_ids.push_back(view_of(u));
    // As many joins as active clients: the session was resumed without us, so every view
    // we remember that is not in this message is gone.
    auto active = field(msg, "active", std::int64_t(-1));
    if (active >= 0 && static_cast<std::size_t>(active) == joined_ids.size() && !views_.empty()) {
        std::set<std::string> keep(joined_ids.begin(), joined_ids.end());
        std::vector<std::string> gone;
        for (auto& [v, n] : views_)
            if (!keep.count(v))
                gone.push_back(v);
        for (auto& v : gone) {
            views_[v] = 1;
            on_view_left(v);
        }
    }
    for (auto& u : left)
        on_view_left(view_of(u));
    for (auto& v : joined_ids)
        on_view_joined(v);
    if (hooks_.on_users)
        hooks_.on_users(joined_ids);
}

void
engine::on_view_joined(std::string const& v)
{
    if (views_[v]++ == 0)
        publish(session_scope, "view-join", v);
}

void
engine::on_view_left(std::string const& v)
{
    auto it = views_.find(v);
    if (it == views_.end())
        return;
    if (--it->second <= 0) {
        views_.erase(it);
        publish(session_scope, "view-exit", v);
    }
}

json
engine::snapshot() const
{
    json s = json::object();
    s["format"] = "lockstep-snapshot-1";
    s["time"] = now_;
    s["seq"] = last_seq_;
    s["rng"] = json::array({hex64(rng_[0]), hex64(rng_[1]), hex64(rng_[2]), hex64(rng_[3])});
    s["next_model"] = next_model_;
    s["next_future"] = next_future_;
    s["last_poll"] = last_poll_;
    json models = json::array();
    for (auto& [id, m] : models_) {
        json state = json::object();
        m->save(state);
        models.push_back({{"id", id}, {"type", m->type_name()}, {"state", std::move(state)}});
    }
    s["models"] = std::move(models);
    json futures = json::array();
    for (auto& [key, call] : futures_)
        futures.push_back({key.first, key.second, call.target, call.method, call.args});
    s["futures"] = std::move(futures);
    json subs = json::array();
    for (auto& [t, list] : subs_)
        for (auto& [m, method] : list)
            subs.push_back({t.first, t.second, m, method});
    s["subscriptions"] = std::move(subs);
    json views = json::object();
    for (auto& [v, n] : views_)
        views[v] = n;
    s["views"] = std::move(views);
    return s;
}

std::string
engine::state_hash() const
{
    return sha256_b64url(snapshot().dump());
}

bool
engine::restore(json const& s, std::string& why)
{
    auto fail = [&](std::string w) {
        why = std::move(w);
        models_.clear();
        return false;
    };
    if (!s.is_object() || field(s, "format", "") != "lockstep-snapshot-1")
        return fail("not a lockstep snapshot");
    try {
        now_ = s.at("time").get<std::int64_t>();
        last_seq_ = s.at("seq").get<std::uint32_t>();
        auto& rng = s.at("rng");
        for (std::size_t i = 0; i < 4; ++i)
            rng_[i] = std::stoull(rng.at(i).get<std::string>(), nullptr, 16);
        next_model_ = s.at("next_model").get<model_id>();
        next_future_ = s.at("next_future").get<std::uint64_t>();
        last_poll_ = s.at("last_poll").get<std::int64_t>();
        models_.clear();
        // All models first, then their state: load() may look other models up.
        for (auto& m : s.at("models")) {
            auto type = m.at("type").get<std::string>();
            auto c = registry_.find(type);
            if (!c)
                return fail("snapshot has a model class this client did not register: " + type);
            make(*c, m.at("id").get<model_id>());
        }
        for (auto& m : s.at("models"))
            models_.at(m.at("id").get<model_id>())->load(m.at("state"));
        futures_.clear();
        future_times_.clear();
        for (auto& f : s.at("futures")) {
            auto at = f.at(0).get<std::int64_t>();
            auto handle = f.at(1).get<std::uint64_t>();
            futures_.emplace(std::make_pair(at, handle),
                             pending_call{f.at(2).get<model_id>(), f.at(3).get<std::string>(), f.at(4)});
            future_times_.emplace(handle, at);
        }
        subs_.clear();
        for (auto& x : s.at("subscriptions"))
            subs_[topic(x.at(0).get<std::string>(), x.at(1).get<std::string>())].emplace_back(
                x.at(2).get<model_id>(), x.at(3).get<std::string>());
        views_.clear();
        for (auto& [v, n] : s.at("views").items())
            views_[v] = n.get<int>();
    } catch (std::exception const& e) {
        return fail(std::string("malformed snapshot: ") + e.what());
    }
    return true;
}

}  // namespace detail
}  // namespace lockstep::client
