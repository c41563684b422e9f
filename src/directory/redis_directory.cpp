#include "directory/redis_directory.hpp"

#include "directory/router_lua.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <cstring>
#include <stdexcept>

namespace lockstep::router {

using nlohmann::json;

namespace {

std::string
percent_decode(std::string const& s, bool& ok)
{
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out.push_back(s[i]);
            continue;
        }
        if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
            !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
            ok = false;
            return {};
        }
        out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
        i += 2;
    }
    return out;
}

/// cjson encodes an empty Lua table as {}: where a list is meant, make it [].
json
as_list(json j)
{
    if (j.is_object() && j.empty())
        return json::array();
    return j;
}

}  // namespace

redis_directory::redis_directory(std::string const& url, options opts, std::uint32_t heartbeat_ttl_ms)
    : opts_(std::move(opts)), heartbeat_ttl_ms_(heartbeat_ttl_ms)
{
    // redis://[[user]:password@]host[:port][/db]
    if (url.rfind("redis://", 0) != 0)
        throw std::runtime_error("--redis must be redis://[:PASSWORD@]HOST[:PORT][/DB]");
    auto rest = url.substr(8);
    auto slash = rest.find('/');
    std::string db = slash == std::string::npos ? std::string() : rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    // The credentials end at the last '@' (a password may contain '@' only percent-encoded,
    // but be lenient).
    if (auto at = rest.rfind('@'); at != std::string::npos) {
        auto cred = rest.substr(0, at);
        rest = rest.substr(at + 1);
        auto colon = cred.find(':');
        bool ok = true;
        user_ = percent_decode(colon == std::string::npos ? std::string() : cred.substr(0, colon), ok);
        password_ = percent_decode(colon == std::string::npos ? cred : cred.substr(colon + 1), ok);
        if (!ok)
            throw std::runtime_error("--redis has bad percent-encoding in its credentials");
    }
    if (!db.empty()) {
        char* end = nullptr;
        long d = std::strtol(db.c_str(), &end, 10);
        if (*end != '\0' || d < 0 || d > 65535)
            throw std::runtime_error("--redis has a bad database number: '" + db + "'");
        db_ = static_cast<int>(d);
    }
    auto colon = rest.rfind(':');
    host_ = colon == std::string::npos ? rest : rest.substr(0, colon);
    if (colon != std::string::npos) {
        auto ps = rest.substr(colon + 1);
        char* end = nullptr;
        long p = std::strtol(ps.c_str(), &end, 10);
        if (ps.empty() || *end != '\0' || p <= 0 || p > 65535)
            throw std::runtime_error("--redis has a bad port: '" + ps + "'");
        port_ = static_cast<int>(p);
    }
    if (host_.empty())
        throw std::runtime_error("--redis has no host");
    std::lock_guard lock(mu_);
    if (!connect())
        throw std::runtime_error("cannot connect to Redis at " + host_ + ":" + std::to_string(port_) +
                                 (last_error_.empty() ? "" : ": " + last_error_));
}

redis_directory::~redis_directory()
{
    if (ctx_)
        redisFree(ctx_);
}

bool
redis_directory::connect()
{
    if (ctx_)
        redisFree(ctx_);
    // Short time-outs: calls run on the server's directory thread, which also serves the
    // router API; a frozen Redis should make the API answer 503 soon, not hang it.
    timeval tv{0, 500000};
    ctx_ = redisConnectWithTimeout(host_.c_str(), port_, tv);
    if (!ctx_ || ctx_->err) {
        last_error_ = ctx_ ? ctx_->errstr : "cannot allocate context";
        spdlog::error("redis {}:{}: {}", host_, port_, last_error_);
        if (ctx_) {
            redisFree(ctx_);
            ctx_ = nullptr;
        }
        return false;
    }
    redisSetTimeout(ctx_, tv);
    // AUTH and SELECT on every (re)connection. The password is never logged.
    auto command = [this](std::vector<std::string> const& args, char const* what) {
        std::vector<char const*> argv;
        std::vector<std::size_t> lens;
        for (auto const& a : args) {
            argv.push_back(a.c_str());
            lens.push_back(a.size());
        }
        auto* r = static_cast<redisReply*>(
            redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        if (!ok) {
            last_error_ = std::string(what) + " failed: " +
                          (r ? std::string(r->str, r->len) : std::string(ctx_->errstr));
            spdlog::error("redis {}:{}: {}", host_, port_, last_error_);
        }
        if (r)
            freeReplyObject(r);
        return ok;
    };
    bool ok = true;
    if (!password_.empty())
        ok = user_.empty() ? command({"AUTH", password_}, "AUTH") : command({"AUTH", user_, password_}, "AUTH");
    if (ok && db_ != 0)
        ok = command({"SELECT", std::to_string(db_)}, "SELECT");
    // A server that wants a password we did not give answers NOAUTH here, at start-up.
    if (ok)
        ok = command({"PING"}, "PING");
    if (!ok) {
        redisFree(ctx_);
        ctx_ = nullptr;
        return false;
    }
    return true;
}

bool
redis_directory::eval(std::vector<std::string> const& args, std::string& out_str, long long& out_int, bool& is_nil)
{
    std::vector<char const*> argv{"EVAL", router_lua, "0"};
    std::vector<std::size_t> lens{4, std::strlen(router_lua), 1};
    std::string ttl = std::to_string(heartbeat_ttl_ms_);
    argv.push_back(args[0].c_str());
    lens.push_back(args[0].size());
    argv.push_back(ttl.c_str());
    lens.push_back(ttl.size());
    for (std::size_t i = 1; i < args.size(); ++i) {
        argv.push_back(args[i].c_str());
        lens.push_back(args[i].size());
    }
    std::lock_guard lock(mu_);
    // A retry after a broken connection may run the script twice: every operation is
    // idempotent for that reason (seat reports name their connection).
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (!ctx_ && !connect()) {
            reachable_ = false;
            return false;
        }
        auto* r = static_cast<redisReply*>(
            redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
        if (!r) {
            // Connection broken: reconnect once.
            spdlog::warn("redis: {}; reconnecting", ctx_->errstr);
            redisFree(ctx_);
            ctx_ = nullptr;
            continue;
        }
        bool ok = true;
        is_nil = false;
        switch (r->type) {
        case REDIS_REPLY_STRING:
        case REDIS_REPLY_STATUS: out_str.assign(r->str, r->len); break;
        case REDIS_REPLY_INTEGER: out_int = r->integer; break;
        case REDIS_REPLY_NIL: is_nil = true; break;
        case REDIS_REPLY_ERROR:
            spdlog::error("redis script error: {}", std::string(r->str, r->len));
            ok = false;
            break;
        default: break;
        }
        freeReplyObject(r);
        reachable_ = true;
        return ok;
    }
    reachable_ = false;
    return false;
}

std::optional<seat_answer>
redis_directory::join(std::string const& room, std::string const& user, std::string const& region, api_error& err)
{
    auto pol = policy_for(opts_, room);
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"join", room, user, region, random_token(), std::to_string(pol.capacity), std::to_string(pol.overflow),
               std::to_string(pol.seat_ttl_ms), std::to_string(pol.retire_ms)},
              s, n, nil)) {
        err = {503, state_unavailable, "room"};
        return std::nullopt;
    }
    auto j = json::parse(s, nullptr, false);
    if (!j.is_object()) {
        err = {500, "bad router state", "room"};
        return std::nullopt;
    }
    if (j.contains("error")) {
        err = {j.value("status", 500), j.value("error", ""), j.value("field", "")};
        return std::nullopt;
    }
    seat_answer a;
    a.room = j.value("room", "");
    a.session = j.value("session", "");
    a.shard = j.value("shard", 0u);
    a.reflector = j.value("reflector", "");
    a.files = j.value("files", "");
    a.expires_in_ms = j.value("expires_in_ms", std::int64_t{0});
    return a;
}

bool
redis_directory::leave(std::string const& room, std::string const& user)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    return eval({"leave", room, user}, s, n, nil) && n == 1;
}

std::optional<json>
redis_directory::room_info(std::string const& room)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"room", room}, s, n, nil) || nil || s.empty())
        return std::nullopt;
    auto j = json::parse(s, nullptr, false);
    if (!j.is_object())
        return std::nullopt;
    j["shards"] = as_list(j["shards"]);
    return j;
}

json
redis_directory::rooms(std::size_t limit)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"rooms", std::to_string(limit)}, s, n, nil) || nil || s.empty())
        return json::array();
    auto list = as_list(json::parse(s, nullptr, false));
    if (!list.is_array())
        return json::array();
    for (auto& room : list)
        if (room.is_object())
            room["shards"] = as_list(room["shards"]);
    return list;
}

std::optional<json>
redis_directory::create_child(std::string const& parent, std::string const& purpose, std::string const& region,
                              api_error& err)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"child", parent, purpose, region}, s, n, nil)) {
        err = {503, state_unavailable, "name"};
        return std::nullopt;
    }
    auto j = json::parse(s, nullptr, false);
    if (j.contains("error")) {
        err = {j.value("status", 500), j.value("error", ""), j.value("field", "")};
        return std::nullopt;
    }
    return j;
}

json
redis_directory::children(std::string const& parent)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"children", parent}, s, n, nil))
        return json::array();
    return as_list(json::parse(s, nullptr, false));
}

void
redis_directory::register_reflector(reflector_info r)
{
    json info = {{"region", r.region}, {"url", r.url}, {"files", r.files_url}, {"load", r.load},
                 {"draining", r.draining}, {"instance", r.instance}};
    std::string s;
    long long n = 0;
    bool nil = false;
    eval({"register", r.id, info.dump()}, s, n, nil);
}

json
redis_directory::reflectors()
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"reflectors"}, s, n, nil))
        return json::array();
    return as_list(json::parse(s, nullptr, false));
}

bool
redis_directory::member_joined(std::string const& token, std::string const& name, std::string const& conn)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    return eval({"mjoin", token, name, conn}, s, n, nil) && n == 1;
}

void
redis_directory::member_left(std::string const& token, bool left, std::string const& conn)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    eval({"mleft", token, left ? "1" : "0", conn}, s, n, nil);
}

bool
redis_directory::seat_live(std::string const& token)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    return eval({"seat", token}, s, n, nil) && n == 1;
}

}  // namespace lockstep::router
