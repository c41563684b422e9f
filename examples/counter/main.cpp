// lockstep-counter: a counter replicated on every client of a session.
//
// The model counts "increment" events published by views and runs a clock with
// future(100); every 20 clock ticks it records a checkpoint. Every replica of a session
// must end with identical checkpoints; the last line printed is `RESULT {json}`.
#include <lockstep/client/router.hpp>
#include <lockstep/client/session.hpp>

#include "common/options.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <unistd.h>

namespace lc = lockstep::client;
using lc::json;

namespace {

// FNV-1a, 64 bit: a digest of the ordered event history that any language can recompute.
std::uint64_t
fnv1a(std::uint64_t h, std::string const& s)
{
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return h;
}

std::string
hex(std::uint64_t v)
{
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

class counter final : public lc::model {
public:
    static void describe(lc::model_registry& r)
    {
        r.add<counter>("counter")
            .method("increment", &counter::increment)
            .method("tick", &counter::tick)
            .method("view_join", &counter::view_join)
            .method("view_exit", &counter::view_exit);
    }

    void init(json const&) override
    {
        subscribe("counter", "increment", &counter::increment);
        subscribe(std::string(lc::session_scope), "view-join", &counter::view_join);
        subscribe(std::string(lc::session_scope), "view-exit", &counter::view_exit);
        future(100, &counter::tick);
    }

    void save(json& s) const override
    {
        s = {{"count", count_}, {"clock", clock_}, {"views", views_}, {"digest", hex(digest_)},
             {"checkpoints", checkpoints_}};
    }
    void load(json const& s) override
    {
        count_ = s.at("count").get<std::int64_t>();
        clock_ = s.at("clock").get<std::int64_t>();
        views_ = s.at("views").get<std::int64_t>();
        digest_ = std::stoull(s.at("digest").get<std::string>(), nullptr, 16);
        checkpoints_ = s.at("checkpoints");
    }

    std::int64_t count() const { return count_; }
    std::int64_t clock() const { return clock_; }
    std::string digest() const { return hex(digest_); }
    json const& checkpoints() const { return checkpoints_; }

private:
    void increment(json const& e)
    {
        // Events come from any client: validate, so every replica drops the same bad ones.
        if (!e.is_object() || !e.contains("n") || !e["n"].is_number_integer())
            return;
        count_ += e["n"].get<std::int64_t>();
        digest_ = fnv1a(digest_, std::to_string(now()) + ":" + e.dump());
        publish("counter", "changed", count_);
    }
    void tick(json const&)
    {
        ++clock_;
        if (clock_ % 20 == 0)
            checkpoints_.push_back({now(), clock_, count_, views_, hex(digest_)});
        future(100, &counter::tick);
    }
    void view_join(json const&) { ++views_; }
    void view_exit(json const&) { --views_; }

    std::int64_t count_ = 0, clock_ = 0, views_ = 0;
    std::uint64_t digest_ = 0xcbf29ce484222325ull;
    json checkpoints_ = json::array();
};

}  // namespace

int
main(int argc, char** argv)
{
    spdlog::set_default_logger(spdlog::stderr_color_mt("lockstep"));
    spdlog::set_level(spdlog::level::warn);
    lc::model_registry models;
    counter::describe(models);
    lc::join_options o;
    o.models = &models;
    o.root_model = "counter";
    o.app_id = "io.lockstep.counter";
    long sends = 0, send_ms = 100, run_ms = 5000, drop_at = -1;
    std::string router, room, user, region;
    bool verbose = false;
    // Every option once: flag, LOCKSTEP_COUNTER_<NAME>, --config key, --help, docs table.
    lockstep::cli::options cli("lockstep-counter",
                               "lockstep-counter: a replicated counter on the C++ SDK\n"
                               "  lockstep-counter --reflector URL --session NAME [options]\n"
                               "  lockstep-counter --router URL --room NAME --user NAME [options]",
                               "LOCKSTEP_COUNTER_");
    cli.app().footer("\nThe last line on stdout is RESULT {json} with count, clock, digest and checkpoints\n"
                     "([model_time, clock, count, views, digest] every 20 clock ticks).");
    auto nonneg = CLI::Range(0L, 1000000000L);
    cli.group("Session");
    cli.add("--reflector", o.reflector, "ws://host:port (or a router seat URL)");
    cli.add("--session", o.session_name, "session name (with the app id it names the session)");
    cli.add("--app-id", o.app_id, "application id");
    cli.add("--files", o.files, "files URL for snapshots, e.g. http://127.0.0.1:9090/files");
    cli.add("--password", o.password, "encrypt events and snapshots end-to-end");
    cli.add("--tls-ca", o.tls_ca_file, "PEM certificate authorities for wss:// and https:// (default: system)");
    cli.add("--tps", o.tps, "reflector ticks per second for a new session")->check(CLI::Range(1, 60));
    cli.add("--snapshot-ms", o.snapshot_interval_ms, "model time between snapshots")->check(nonneg);
    cli.group("Router");
    cli.add("--router", router, "ask this router (a reflector's http://host:port) for a seat");
    cli.add("--room", room, "room to join through the router (the shard is the session)");
    cli.add("--user", user, "user name for the router's seat (default: counter-<pid>)");
    cli.add("--region", region, "region asked of the router (default: any)");
    cli.group("Run");
    cli.add("--sends", sends, "increments to publish")->check(nonneg);
    cli.add("--send-ms", send_ms, "interval between increments")->check(nonneg);
    cli.add("--run-ms", run_ms, "how long to run after joining")->check(nonneg);
    cli.add("--drop-at-ms", drop_at, "testing: drop the TCP connection once, MS after joining (-1: never)");
    cli.add("--verbose", verbose, "SDK logs at info level (default: warnings)");
    if (int status = lockstep::cli::parse_or_exit_status(cli, argc, argv); status >= 0)
        return status;
    if (verbose)
        spdlog::set_level(spdlog::level::info);
    if (router.empty() && (o.reflector.empty() || o.session_name.empty())) {
        std::fprintf(stderr, "lockstep-counter: --reflector and --session are required (see --help)\n");
        return 2;
    }
    if (!router.empty() && room.empty()) {
        std::fprintf(stderr, "lockstep-counter: --router needs --room (see --help)\n");
        return 2;
    }
    if (std::string printed; cli.finish(printed) == 0) {
        std::fputs(printed.c_str(), stdout);
        return 0;
    }

    std::error_code ec;
    std::unique_ptr<lc::session> s;
    lc::room_seat seat;
    if (router.empty())
        s = lc::session::join(o, ec);
    else
        s = lc::join_room(router, room, user.empty() ? "counter-" + std::to_string(::getpid()) : user, o, ec, region, &seat);
    if (!s) {
        std::fprintf(stderr, "lockstep-counter: join failed: %s\n", ec.message().c_str());
        std::printf("RESULT %s\n", json({{"error", ec.message()}}).dump().c_str());
        return 1;
    }
    using clock = std::chrono::steady_clock;
    auto start = clock::now();
    auto next_send = start;
    long sent = 0;
    bool dropped = false;
    bool alive = true;
    while (alive) {
        auto now = clock::now();
        auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count();
        if (elapsed >= run_ms)
            break;
        if (sent < sends && now >= next_send) {
            s->publish("counter", "increment", {{"n", 1}, {"from", s->view_id()}, {"i", sent}});
            ++sent;
            next_send += std::chrono::milliseconds(send_ms);
        }
        if (drop_at >= 0 && !dropped && elapsed >= drop_at) {
            s->simulate_network_drop();
            dropped = true;
        }
        alive = s->wait_step(std::chrono::milliseconds(5));
    }
    auto const& c = s->root_as<counter>();
    auto st = s->stats();
    json result = {
        {"count", c.count()},
        {"clock", c.clock()},
        {"digest", c.digest()},
        {"checkpoints", c.checkpoints()},
        {"model_time", s->now()},
        {"view_id", s->view_id()},
        {"session_id", s->id()},
        {"session_name", router.empty() ? o.session_name : seat.session},
        {"shard", seat.shard},
        {"sent", sent},
        {"built_from", st.built_from},
        {"stats",
         {{"events_executed", st.events_executed},
          {"seamless_rejoins", st.seamless_rejoins},
          {"rebuilds", st.rebuilds},
          {"snapshot_votes", st.snapshot_votes},
          {"snapshots_uploaded", st.snapshots_uploaded},
          {"divergences", st.divergences},
          {"undecryptable", st.undecryptable}}},
    };
    if (!alive)
        result["error"] = s->error().message();
    s->leave();
    std::printf("RESULT %s\n", result.dump().c_str());
    std::fflush(stdout);
    return alive ? 0 : 1;
}
