#include "redis/link.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>

namespace lockstep::redis {

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

value
copy_reply(redisReply const* r)
{
    value v;
    switch (r->type) {
    case REDIS_REPLY_STRING:
        v.type = value::kind::string;
        v.str.assign(r->str, r->len);
        break;
    case REDIS_REPLY_STATUS:
        v.type = value::kind::status;
        v.str.assign(r->str, r->len);
        break;
    case REDIS_REPLY_ERROR:
        v.type = value::kind::error;
        v.str.assign(r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        v.type = value::kind::integer;
        v.integer = r->integer;
        break;
    case REDIS_REPLY_ARRAY:
        v.type = value::kind::array;
        v.elements.reserve(r->elements);
        for (std::size_t i = 0; i < r->elements; ++i)
            v.elements.push_back(copy_reply(r->element[i]));
        break;
    default: v.type = value::kind::nil; break;
    }
    return v;
}

void
argv_of(command_args const& args, std::vector<char const*>& argv, std::vector<std::size_t>& lens)
{
    argv.clear();
    lens.clear();
    for (auto a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
}

}  // namespace

link::link(std::string const& url, std::chrono::milliseconds timeout) : timeout_(timeout)
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
    {
        std::lock_guard lock(mu_);
        if (!connect())
            throw std::runtime_error("cannot connect to Redis at " + endpoint() +
                                     (last_error_.empty() ? "" : ": " + last_error_));
    }
    std::lock_guard all(registry_mu());
    registry().push_back(this);
}

link::~link()
{
    {
        std::lock_guard all(registry_mu());
        auto& r = registry();
        r.erase(std::remove(r.begin(), r.end(), this), r.end());
    }
    if (ctx_)
        redisFree(ctx_);
}

std::mutex&
link::registry_mu()
{
    static std::mutex mu;
    return mu;
}

std::vector<link const*>&
link::registry()
{
    static std::vector<link const*> links;
    return links;
}

bool
link::any_hanging(std::chrono::milliseconds longer_than)
{
    std::lock_guard all(registry_mu());
    for (auto const* l : registry())
        if (l->hanging(longer_than))
            return true;
    return false;
}

bool
link::connect()
{
    if (ctx_)
        redisFree(ctx_);
    // Short time-outs: calls run on the server's directory thread, which also serves the
    // router API; a frozen Redis should make the API answer 503 soon, not hang it.
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout_).count();
    timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
    ctx_ = redisConnectWithTimeout(host_.c_str(), port_, tv);
    if (!ctx_ || ctx_->err) {
        last_error_ = ctx_ ? ctx_->errstr : "cannot allocate context";
        spdlog::error("redis {}: {}", endpoint(), last_error_);
        if (ctx_) {
            redisFree(ctx_);
            ctx_ = nullptr;
        }
        return false;
    }
    redisSetTimeout(ctx_, tv);
    // AUTH and SELECT on every (re)connection. The password is never logged.
    auto setup = [this](command_args const& args, char const* what) {
        std::vector<char const*> argv;
        std::vector<std::size_t> lens;
        argv_of(args, argv, lens);
        auto* r = static_cast<redisReply*>(
            redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        if (!ok) {
            last_error_ = std::string(what) + " failed: " +
                          (r ? std::string(r->str, r->len) : std::string(ctx_->errstr));
            spdlog::error("redis {}: {}", endpoint(), last_error_);
        }
        if (r)
            freeReplyObject(r);
        return ok;
    };
    bool ok = true;
    if (!password_.empty())
        ok = user_.empty() ? setup({"AUTH", password_}, "AUTH") : setup({"AUTH", user_, password_}, "AUTH");
    auto db = std::to_string(db_);
    if (ok && db_ != 0)
        ok = setup({"SELECT", db}, "SELECT");
    // A server that wants a password we did not give answers NOAUTH here, at start-up.
    if (ok)
        ok = setup({"PING"}, "PING");
    if (!ok) {
        redisFree(ctx_);
        ctx_ = nullptr;
        return false;
    }
    return true;
}

namespace {

std::int64_t
steady_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// Marks a call in progress (for hanging()).
struct busy_guard {
    std::atomic<std::int64_t>& since;
    explicit busy_guard(std::atomic<std::int64_t>& s) : since(s) { since = steady_ms(); }
    ~busy_guard() { since = 0; }
};

}  // namespace

bool
link::hanging(std::chrono::milliseconds longer_than) const noexcept
{
    auto since = busy_since_.load();
    return !reachable_.load() || (since != 0 && steady_ms() - since > longer_than.count());
}

bool
link::backing_off() const
{
    return !reachable_.load() && std::chrono::steady_clock::now() - last_failure_ < retry_after;
}

void
link::failed()
{
    reachable_ = false;
    last_failure_ = std::chrono::steady_clock::now();
}

std::optional<value>
link::command(command_args const& args)
{
    std::vector<char const*> argv;
    std::vector<std::size_t> lens;
    argv_of(args, argv, lens);
    std::lock_guard lock(mu_);
    if (!ctx_ && backing_off())
        return std::nullopt;
    busy_guard busy(busy_since_);
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (!ctx_ && !connect()) {
            failed();
            return std::nullopt;
        }
        auto* r = static_cast<redisReply*>(
            redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
        if (!r) {
            // A time-out (Redis hangs: stopped, overloaded, cut off) is not tried again;
            // a broken connection (Redis restarted) is re-opened once.
            bool timed_out = ctx_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
            spdlog::warn("redis {}: {}{}", endpoint(), ctx_->errstr, timed_out ? "" : "; reconnecting");
            redisFree(ctx_);
            ctx_ = nullptr;
            if (timed_out)
                break;
            continue;
        }
        auto v = copy_reply(r);
        freeReplyObject(r);
        reachable_ = true;
        return v;
    }
    failed();
    return std::nullopt;
}

std::optional<std::vector<value>>
link::pipeline(std::vector<command_args> const& cmds)
{
    std::lock_guard lock(mu_);
    if (!ctx_ && backing_off())
        return std::nullopt;
    busy_guard busy(busy_since_);
    if (!ctx_ && !connect()) {
        failed();
        return std::nullopt;
    }
    std::vector<char const*> argv;
    std::vector<std::size_t> lens;
    for (auto const& c : cmds) {
        argv_of(c, argv, lens);
        if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
            spdlog::error("redis {}: cannot queue a command: {}", endpoint(), ctx_->errstr);
            redisFree(ctx_);
            ctx_ = nullptr;
            failed();
            return std::nullopt;
        }
    }
    std::vector<value> out;
    out.reserve(cmds.size());
    for (std::size_t i = 0; i < cmds.size(); ++i) {
        void* raw = nullptr;
        if (redisGetReply(ctx_, &raw) != REDIS_OK || !raw) {
            spdlog::warn("redis {}: {}; the connection is re-opened on the next call", endpoint(), ctx_->errstr);
            if (raw)
                freeReplyObject(raw);
            redisFree(ctx_);
            ctx_ = nullptr;
            failed();
            return std::nullopt;
        }
        out.push_back(copy_reply(static_cast<redisReply*>(raw)));
        freeReplyObject(raw);
    }
    reachable_ = true;
    return out;
}

}  // namespace lockstep::redis
