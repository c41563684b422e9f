#include "server/server.hpp"

#include "server/internal.hpp"
#include "common/logging.hpp"

#include "directory/redis_directory.hpp"
#include "router/memory_directory.hpp"
#include "tls/tls_front.hpp"

#include <spdlog/spdlog.h>

#include <future>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <ctime>
#include <functional>
#include <utility>

namespace lockstep {

// ------------------------------------------------------------------ sessions/workers

session_slot::session_slot(worker& wk, std::string const& id)
    : session(id, wk.clock, wk.st.sopts, &wk.st.persistence, &wk.metrics, &wk.load), w(wk), timer(wk.ioc)
{
    if (!std::exchange(w.slot_reserved, false))
        w.st.session_slots.fetch_add(1, std::memory_order_relaxed);
}

session_slot::~session_slot()
{
    w.st.session_slots.fetch_sub(1, std::memory_order_relaxed);
}

dispatch_limits const&
worker::limits() const noexcept
{
    return st.dlimits;
}

bool
worker::may_create_session() noexcept
{
    // Over all workers, exactly: the JOIN reserves its slot here, and session_for (called
    // next, on this thread) fills it, so JOINs on several workers cannot pass together.
    if (st.cfg.max_sessions == 0)
        return true;
    auto n = st.session_slots.load(std::memory_order_relaxed);
    do {
        if (n >= st.cfg.max_sessions)
            return false;
    } while (!st.session_slots.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    slot_reserved = true;
    return true;
}

worker::worker(server_state& state, unsigned i) : st(state), index(i)
{
    if (st.cluster) {
        // Redis is the journal (write before show through Redis); no local file journal,
        // which another reflector could not read anyway.
        cluster = std::make_unique<cluster_sessions>(*this);
    } else if (st.cfg.journal == "file") {
        durability_options o;
        o.dir = st.cfg.data_dir + "/journal";
        o.fsync_ms = static_cast<std::int32_t>(std::min<std::uint32_t>(st.cfg.journal_fsync_ms, 3'600'000));
        o.retention_s = st.cfg.session_retention_s;
        o.files_dir = st.cfg.data_dir + "/files";
        o.persist_dir = st.cfg.data_dir + "/persist";
        o.wal_name = "w" + std::to_string(index);
        o.tails_dropped_at_start = index == 0 ? st.journal_tails_recovered : 0;
        journal = std::make_unique<session_journal>(std::move(o), metrics);
    }
}

void
worker::start_journal_sweep(std::chrono::milliseconds first)
{
    if (!journal)
        return;
    sweep_timer.expires_after(first);
    sweep_timer.async_wait([this](error_code ec) {
        if (ec)
            return;
        // A new WAL file, so the one before can be retired and the sessions it names
        // deleted if expired. The sweep itself (directory scans, every stored header,
        // blob deletion) runs on the disk pool; the writer knows which sessions are
        // open or being resumed, so it needs nothing of this loop.
        journal->rotate();
        net::post(st.disk, [this] {
            auto mine = [this](std::string const& id) { return &st.worker_for(id) == this; };
            journal->sweep(mine, [](std::string const&) { return false; });
            defer([this] { start_journal_sweep(std::chrono::minutes(5)); });
        });
    });
}

void
worker::start_cluster_timer()
{
    if (!cluster)
        return;
    cluster_timer.expires_after(std::chrono::milliseconds(100));
    cluster_timer.async_wait([this](error_code ec) {
        if (ec)
            return;
        cluster->check_leases();
        start_cluster_timer();
    });
}

void
worker::drop_session(std::string const& id)
{
    auto it = sessions.find(id);
    if (it == sessions.end())
        return;
    if (it->second->created())
        metrics.add(metrics.sessions, -1);
    sessions.erase(it);
}

void
worker::schedule_flush(std::shared_ptr<flushable> f, bool urgent)
{
    if (coalesce_us > 0 && !urgent) {
        deferred.push_back(std::move(f));
        if (coalesce_armed)
            return;
        coalesce_armed = true;
        coalesce_timer.expires_after(std::chrono::microseconds(coalesce_us));
        coalesce_timer.async_wait([this](error_code ec) {
            coalesce_armed = false;
            auto list = std::move(deferred);
            deferred.clear();
            for (auto& c : list)
                c->flush();
            (void)ec;
        });
        return;
    }
    to_flush.push_back(std::move(f));
    if (flush_posted)
        return;
    flush_posted = true;
    defer([this] {
        flush_posted = false;
        auto list = std::move(to_flush);
        to_flush.clear();
        for (auto& c : list)
            c->flush();
    });
}

namespace {

std::int64_t
thread_cpu_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// The calling thread's demand for a CPU: the time it ran plus the time it was runnable
/// but waited for a CPU (/proc/thread-self/schedstat). A worker that always has work is
/// loaded whether it runs or queues behind other processes: its ticks are late either way.
/// Falls back to the CPU time where the kernel has no scheduler statistics.
std::int64_t
thread_demand_ns()
{
    // One small read of a proc file per 100 ms sample; no allocation.
    int fd = ::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[96];
        auto n = ::read(fd, buf, sizeof buf - 1);
        ::close(fd);
        if (n > 0) {
            buf[n] = 0;
            char* end = nullptr;
            auto run = std::strtoll(buf, &end, 10);
            if (end != buf) {
                char* end2 = nullptr;
                auto wait = std::strtoll(end, &end2, 10);
                if (end2 != end)
                    return run + wait;
            }
        }
    }
    return thread_cpu_ns();
}

std::int64_t
wall_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

}  // namespace

void
worker::start_load_sampling()
{
    // Runs on the worker's own thread (the CPU clock is per thread).
    load_demand_ns = thread_demand_ns();
    load_wall_ns = wall_ns();
    load_spin_ns = spin_ns;
    load_timer.expires_after(std::chrono::milliseconds(100));
    load_timer.async_wait([this](error_code ec) {
        if (ec)
            return;
        // Polling for work that did not come is idle time, not load.
        double busy = static_cast<double>(thread_demand_ns() - load_demand_ns - (spin_ns - load_spin_ns)) /
                      static_cast<double>(std::max<std::int64_t>(1, wall_ns() - load_wall_ns));
        auto max_us = static_cast<std::int64_t>(st.cfg.max_coalesce_us);
        // Grow gently while saturated, back off fast when there is headroom: the
        // interval settles where the worker just keeps up, and adds no latency idle.
        if (busy > 0.85 && coalesce_us < max_us)
            coalesce_us = std::min(max_us, coalesce_us + 1000);
        else if (busy < 0.6 && coalesce_us > 0)
            coalesce_us = coalesce_us >= 2000 ? coalesce_us / 2 : 0;
        metrics.coalesce_us.store(coalesce_us, std::memory_order_relaxed);
        // Overload: more writes are due than the core can make. Coalescing cannot merge
        // ticks (each is due at its own time), so thin them: events keep their latency
        // and the clients' clocks still advance, in coarser steps.
        auto stretch = load.tick_stretch_pct();
        auto max_stretch = static_cast<std::int64_t>(std::max<std::uint32_t>(100, st.cfg.max_tick_stretch_pct));
        if (busy > 0.9 && (coalesce_us >= max_us || max_us == 0) && stretch < max_stretch)
            stretch = std::min(max_stretch, stretch * 5 / 4 + 1);
        else if (busy < 0.75 && stretch > 100)
            stretch = std::max<std::int64_t>(100, stretch * 4 / 5);
        load.set_tick_stretch_pct(stretch);
        metrics.tick_stretch_pct.store(stretch, std::memory_order_relaxed);
        start_load_sampling();
    });
}

void
worker::run()
{
    // Last line of defence: handlers catch at their own boundary, but an exception that
    // still escapes one must not end the process and every session in it. Asio allows
    // run() to be called again after a handler threw.
    for (;;) {
        try {
            run_loop();
            return;
        } catch (std::exception const& e) {
            spdlog::error("worker {}: a handler threw, continuing: {}", index, e.what());
        }
    }
}

void
worker::run_loop()
{
    if (st.cfg.busy_poll_us == 0) {
        ioc.run();
        return;
    }
    auto const spin = static_cast<std::int64_t>(st.cfg.busy_poll_us) * 1000;
    while (!ioc.stopped()) {
        if (ioc.poll() > 0)
            continue;
        auto t0 = wall_ns();
        auto t = t0;
        bool work = false;
        while (t - t0 < spin && !ioc.stopped()) {
            if (ioc.poll() > 0) {
                work = true;
                break;
            }
            t = wall_ns();
        }
        spin_ns += t - t0;
        if (!work && !ioc.stopped())
            ioc.run_one();  // sleep until something happens
    }
}

session&
worker::session_for(std::string const& id)
{
    auto& slot = sessions[id];
    if (!slot) {
        slot = std::make_unique<session_slot>(*this, id);
        // Connections read a stored session on the disk pool first (load_session); a
        // slot made here without that (no connection) reads it on this thread.
        if (journal && id != not_stored)
            journal->resume(*slot);
    }
    return *slot;
}

void
worker::load_session(std::string const& id, unique_function<void()> then)
{
    if (!journal || sessions.count(id))
        return then();
    auto& waiters = loading[id];
    waiters.push_back(std::move(then));
    if (waiters.size() > 1)
        return;  // read once for every JOIN that arrives meanwhile
    net::post(st.disk, [this, id] {
        auto l = journal->load(id);
        defer([this, id, l = std::move(l)]() mutable {
            auto waiters = std::move(loading[id]);
            loading.erase(id);
            // Only a stored session is made here, and only within --max-sessions; a
            // new one is made by the JOIN's dispatch, which checks the limit itself.
            bool const nothing_stored = !l.stored && !l.ec;
            if (journal && !sessions.count(id) && l.stored && may_create_session()) {
                auto& slot = sessions[id];
                slot = std::make_unique<session_slot>(*this, id);
                journal->apply(*slot, std::move(l));
            }
            // Read and found nothing stored: the JOINs below make a new session without
            // reading the disk again on this loop.
            not_stored = nothing_stored ? id : std::string();
            for (auto& f : waiters)
                f();
            not_stored.clear();
        });
    });
}

session*
worker::find_session(std::string const& id)
{
    auto it = sessions.find(id);
    return it == sessions.end() ? nullptr : it->second.get();
}

void
worker::seat_joined(std::string const& token, std::string const& name, std::string const& conn)
{
    st.directory.seat_joined(token, name, conn);
}

void
worker::seat_left(std::string const& token, bool normal, std::string const& conn)
{
    st.directory.seat_left(token, normal, conn);
}

nlohmann::json
worker::session_list() const
{
    nlohmann::json mine = nlohmann::json::array();
    for (auto const& [id, s] : sessions) {
        if (!s->created())
            continue;
        mine.push_back({{"id", id},
                        {"name", s->name()},
                        {"clients", s->client_count()},
                        {"active", s->active_count()},
                        {"time", s->current_time_ms()},
                        {"seq", s->seq()},
                        {"log", s->log_size()},
                        {"tick_ms", s->tick_ms()},
                        {"timeline", s->timeline()},
                        {"events", s->events_reflected()},
                        {"age_s", static_cast<double>(clock.now_us() - s->created_at_us()) / 1e6},
                        {"worker", index},
                        {"state", "live"}});
    }
    // Stored: not in memory, resumed by the next JOIN (docs/durability.md).
    if (journal) {
        auto owned = [this](std::string const& id) { return &st.worker_for(id) == this; };
        auto live = [this](std::string const& id) {
            auto it = sessions.find(id);
            return it != sessions.end() && it->second->created();
        };
        for (auto& id : journal->stored(owned, live))
            mine.push_back({{"id", std::move(id)}, {"worker", index}, {"state", "stored"}});
    }
    return mine;
}

void
worker::touched(session& s)
{
    auto& slot = static_cast<session_slot&>(s);  // every session of a worker is a slot
    if (journal)
        journal->capture(slot);
    if (cluster)
        cluster->capture(slot);
    if (slot.expired()) {
        if (journal && slot.created() && !journal->release(slot.id()))
            return;  // its journal cannot be written: kept in memory (a JOIN retries)
        if (cluster && !cluster->release(slot.header()))
            return;  // Redis does not have all of it yet: kept in memory
        if (slot.created()) {
            log_fields f{.event = "session_end", .session = slot.id(), .app = slot.app_id(), .name = slot.name()};
            f.clients = static_cast<std::int64_t>(slot.clients_joined());
            f.messages_in = static_cast<std::int64_t>(slot.events_reflected());
            f.seconds = static_cast<double>(clock.now_us() - slot.created_at_us()) / 1e6;
            log_event(spdlog::level::info, f,
                      fmt::format("session {} {} (no clients for {} ms)", slot.id(),
                                  journal || cluster ? "left memory, its journal stays" : "ended",
                                  st.sopts.linger_ms));
            metrics.add(metrics.sessions, -1);
        }
        std::string id = slot.id();  // not a reference into what erase() destroys
        sessions.erase(id);          // destroys slot (and cancels its timer)
        return;
    }
    auto deadline = slot.next_deadline_us();
    if (deadline == slot.armed_us)
        return;
    slot.armed_us = deadline;
    if (deadline == std::numeric_limits<std::int64_t>::max()) {
        slot.timer.cancel();
        return;
    }
    slot.timer.expires_at(net::steady_timer::time_point(std::chrono::microseconds(deadline)));
    // The handler finds the slot by id: it may have been deleted meanwhile.
    slot.timer.async_wait([this, id = slot.id(), slotp = &slot](error_code ec) {
        if (ec)
            return;
        auto it = sessions.find(id);
        if (it == sessions.end() || it->second.get() != slotp)
            return;
        slotp->armed_us = std::numeric_limits<std::int64_t>::max();
        slotp->on_timer();
        touched(*slotp);
    });
}

namespace {

/// The built-in pages: share/lockstep/web next to an installed binary, else the source
/// tree's web/ (binary in build/bin/). Empty when neither has an index.html.
std::filesystem::path
find_builtin_web_root()
{
    std::error_code ec;
    auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec)
        return {};
    auto bin = exe.parent_path();
    for (auto const& dir : {bin.parent_path() / "share" / "lockstep" / "web", bin.parent_path().parent_path() / "web"})
        if (std::filesystem::is_regular_file(dir / "index.html", ec))
            return dir.lexically_normal();
    return {};
}

router::options
router_options(config const& cfg)
{
    router::options ro;
    ro.defaults.capacity = cfg.room_capacity;
    ro.defaults.overflow = cfg.room_overflow;
    ro.defaults.seat_ttl_ms = cfg.seat_ttl_ms;
    ro.defaults.retire_ms = cfg.shard_retire_ms;
    for (auto const& p : cfg.room_policies) {
        // Validated by parse_config: PATTERN=CAPACITY[:OVERFLOW]
        auto eq = p.find('=');
        router::policy pol = ro.defaults;
        char* end = nullptr;
        pol.capacity = static_cast<std::uint32_t>(std::strtoul(p.c_str() + eq + 1, &end, 10));
        if (end && *end == ':')
            pol.overflow = std::strtod(end + 1, nullptr);
        ro.patterns.emplace_back(p.substr(0, eq), pol);
    }
    return ro;
}

std::unique_ptr<router::directory>
make_directory(config const& cfg, clock_source const& clock)
{
    if (cfg.redis.empty())
        return std::make_unique<router::memory_directory>(clock, router_options(cfg), cfg.heartbeat_ttl_ms);
    return std::make_unique<router::redis_directory>(cfg.redis, router_options(cfg), cfg.heartbeat_ttl_ms);
}

}  // namespace

server_state::server_state(config c)
    : cfg(std::move(c)), files(cfg.data_dir),
      persistence(files, [this](std::function<void()> f) { net::post(disk, std::move(f)); }),
      directory(make_directory(cfg, router_clock))
{
    if (!cfg.redis.empty() && cfg.journal_sync == "redis") {
        store::sessions_options so;
        so.lease_ms = cfg.lease_ms;
        so.retention_ms = cfg.session_retention_s * 1000;
        cluster = std::make_unique<lease_keeper>(*this, std::make_unique<redis::link>(cfg.redis), so);
    }
    auth::settings as;
    as.secret = cfg.auth_secret;
    as.public_key_file = cfg.auth_public_key;
    as.admin_token = cfg.admin_token;
    as.metrics_open = cfg.metrics_open;
    as.allowed_origins = cfg.allowed_origins;
    gate = std::make_unique<auth::gate>(std::move(as));
    if (!cfg.tls_cert.empty())
        tls = std::make_shared<tls::front>(cfg.tls_cert, cfg.tls_key);
    {
        // Many clients need many descriptors: raise the soft limit to the hard one, and
        // refuse sockets cleanly (503) before accept() could fail for lack of them.
        rlimit rl{};
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            auto before = rl.rlim_cur;
            rl.rlim_cur = rl.rlim_max;
            if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
                spdlog::info("file-descriptor limit raised from {} to {}", before, rl.rlim_cur);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        limits::settings ls;
        ls.max_connections = cfg.max_connections;
        if (ls.max_connections == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > 128)
            ls.max_connections = rl.rlim_cur - 64;  // room for files, Redis, the listener
        ls.max_connections_per_ip = cfg.max_connections_per_ip;
        ls.max_http_rate = cfg.max_http_rate;
        ls.trust_proxy = cfg.trust_proxy;
        ls.max_uploads = cfg.max_uploads;
        ls.max_disk_bytes = cfg.max_disk_bytes;
        limits_ = std::make_unique<limits::edge_limits>(ls);
        // The blob store's size, counted against --max-disk-bytes from here on.
        std::uint64_t used = 0;
        std::error_code ec;
        for (auto it = std::filesystem::recursive_directory_iterator(std::filesystem::path(cfg.data_dir) / "files", ec);
             !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
            if (it->is_regular_file(ec))
                used += it->file_size(ec);
        limits_->set_disk_used(used);
    }
    sopts.linger_ms = cfg.session_linger_ms;
    sopts.requ_threshold = cfg.log_requ_threshold;
    sopts.log_max = cfg.log_max;
    sopts.default_tick_ms = cfg.default_tick_ms;
    sopts.reflector_name = cfg.region;
    sopts.log_max_bytes = cfg.log_max_bytes;
    sync_budget.set_limit(cfg.max_sync_bytes);
    sopts.sync_budget = &sync_budget;
    dlimits.max_join_bytes = cfg.max_join_bytes;
    dlimits.max_clients_per_session = cfg.max_clients_per_session;
    dlimits.message_rate = cfg.max_message_rate;
    dlimits.message_burst = cfg.max_message_burst;
    if (!cluster && cfg.journal == "file") {
        // Before any worker writes: what the last process wrote to its write-ahead logs
        // but had not yet copied into the session journals (a crash) goes there now.
        // The cost follows the WAL sizes, not the number of stored sessions.
        auto r = journal::recover(cfg.data_dir + "/journal");
        journal_tails_recovered = r.tails_dropped;
        if (r.files > 0)
            spdlog::info("journal: recovered {} write-ahead entries from {} file(s) left by the last run", r.entries,
                         r.files);
    }
    for (unsigned i = 0; i < cfg.threads; ++i)
        workers.push_back(std::make_unique<worker>(*this, i));
    builtin_web_root_ = find_builtin_web_root();
    web_root_ = cfg.web_root.empty() ? builtin_web_root_ : std::filesystem::path(cfg.web_root);
}

void
server_state::close_session_clients(std::string const& session_id, unique_function<void(std::size_t)> done)
{
    worker& w = worker_for(session_id);
    w.defer([&w, id = session_id, done = std::move(done)]() mutable {
        auto n = close_session_connections(w, id, protocol::close_code::going_away, "closed by an operator");
        spdlog::info("admin: closed {} client(s) of session {}", n, id);
        done(n);
    });
}

router::reflector_info
server_state::self_info(std::uint16_t port) const
{
    router::reflector_info r;
    r.id = self_id;
    // A draining reflector stays registered as draining: no new placements.
    r.draining = draining_.load();
    r.instance = instance;
    r.region = cfg.region;
    auto pub = cfg.public_url;
    auto scheme = tls ? "wss://" : "ws://";
    if (pub.empty() || (cfg.port == 0 && pub == scheme + cfg.bind + ":0"))
        pub = scheme + cfg.bind + ":" + std::to_string(port);
    r.url = pub;
    r.peer_url = cfg.peer_url;
    if (r.peer_url.empty()) {
        // This reflector's own address: the bind address, or the host name for a bind-all one.
        auto host = cfg.bind;
        if (host == "0.0.0.0" || host == "::" || host.empty()) {
            char name[256] = {};
            host = ::gethostname(name, sizeof name - 1) == 0 && name[0] ? name : "localhost";
        } else if (host.find(':') != std::string::npos) {
            host = "[" + host + "]";
        }
        r.peer_url = scheme + host + ":" + std::to_string(port);
    }
    auto http = pub.rfind("wss://", 0) == 0 ? "https://" + pub.substr(6)
                                             : (pub.rfind("ws://", 0) == 0 ? "http://" + pub.substr(5) : pub);
    while (!http.empty() && http.back() == '/')
        http.pop_back();
    r.files_url = http + "/files";
    long load = 0;
    for (auto const& w : workers)
        load += w->metrics.connections.load(std::memory_order_relaxed);
    r.load = static_cast<double>(load);
    return r;
}

std::string
server_state::metrics_text() const
{
    // The core's refusals (membership, message limits) join the edge limits' family.
    std::vector<std::pair<std::string, std::uint64_t>> core;
    for (std::size_t i = 0; i < static_cast<std::size_t>(refusal::count_); ++i) {
        std::uint64_t n = 0;
        for (auto const* w : metrics())
            n += w->refusals[i].load(std::memory_order_relaxed);
        core.emplace_back(refusal_name(static_cast<refusal>(i)), n);
    }
    return render_metrics(metrics(), closes, http_requests.load(), draining_.load()) + limits_->render(core) +
           fmt::format("# HELP lockstep_sync_bytes_in_flight Bytes of SYNC messages queued to joiners and not yet "
                       "written (counted once when joiners share one; bounded by --max-sync-bytes).\n"
                       "# TYPE lockstep_sync_bytes_in_flight gauge\nlockstep_sync_bytes_in_flight {}\n",
                       sync_budget.used());
}

void
server_state::list_sessions(unique_function<void(nlohmann::json)> done)
{
    struct gather {
        std::mutex mu;
        nlohmann::json list = nlohmann::json::array();
        std::size_t left;
        unique_function<void(nlohmann::json)> done;
    };
    auto g = std::make_shared<gather>();
    g->left = workers.size();
    g->done = std::move(done);
    for (auto& wp : workers) {
        worker& wk = *wp;
        wk.defer([g, &wk] {
            auto mine = wk.session_list();
            std::lock_guard lock(g->mu);
            for (auto& e : mine)
                g->list.push_back(std::move(e));
            if (--g->left == 0)
                g->done(std::move(g->list));
        });
    }
}

void
server_state::with_directory(unique_function<void(router::directory&)> task)
{
    directory.post(std::move(task));
}

std::optional<bool>
server_state::redis_reachable() const
{
    if (!cluster)
        return std::nullopt;
    return !cluster->redis_unreachable();
}

bool
server_state::ask_directory(std::function<bool(router::directory&)> question, std::chrono::milliseconds timeout)
{
    auto answer = std::make_shared<std::promise<bool>>();
    auto result = answer->get_future();
    directory.post([answer, question = std::move(question)](router::directory& d) {
        bool ok = false;
        try {
            ok = question(d);
        } catch (std::exception const& e) {
            spdlog::warn("directory: {}", e.what());
        }
        answer->set_value(ok);
    });
    return result.wait_for(timeout) == std::future_status::ready && result.get();
}

void
server_state::run_blocking(unique_function<void()> task)
{
    net::post(disk, std::move(task));
}

void
server_state::shared_blob_put(std::string path, std::string bytes, unique_function<void(bool)> done)
{
    if (!cluster)
        return done(true);
    directory.run([this, path = std::move(path), bytes = std::move(bytes), done = std::move(done)]() mutable {
        done(cluster->store().put_blob(path, bytes, cfg.session_retention_s));
    });
}

void
server_state::shared_blob_get(std::string path, unique_function<void(std::optional<std::string>)> done)
{
    if (!cluster)
        return done(std::nullopt);
    directory.run([this, path = std::move(path), done = std::move(done)]() mutable {
        bool reachable = false;
        auto bytes = cluster->store().get_blob(path, reachable);
        if (!reachable)
            spdlog::warn("files: {} not here and Redis unreachable", path);
        done(std::move(bytes));
    });
}

worker&
server_state::worker_for(std::string_view session_id)
{
    return *workers[std::hash<std::string_view>{}(session_id) % workers.size()];
}

std::vector<worker_metrics const*>
server_state::metrics() const
{
    std::vector<worker_metrics const*> v;
    for (auto const& w : workers)
        v.push_back(&w->metrics);
    return v;
}

// ------------------------------------------------------------------ server

struct server::impl {
    server_state st;
    tcp::acceptor acceptor;
    std::size_t next_worker = 0;
    std::atomic<bool> stopped{false};
    std::mutex mu;
    std::condition_variable cv;
    bool drain_requested = false;
    std::vector<std::optional<net::executor_work_guard<net::io_context::executor_type>>> guards;

    net::steady_timer accept_timer{st.workers[0]->ioc};  // pause after EMFILE/ENFILE

    /// A socket over a connection limit gets a short 503 (best effort, never blocks)
    /// and is closed.
    void
    refuse(tcp::socket& sock, limits::reason why)
    {
        static constexpr char const body_total[] = R"({"error":"too many connections"})";
        static constexpr char const body_ip[] = R"({"error":"too many connections from this address"})";
        std::string_view body = why == limits::reason::connections ? body_total : body_ip;
        auto msg = fmt::format("HTTP/1.1 503 Service Unavailable\r\nServer: lockstep-reflector\r\n"
                               "Content-Type: application/json\r\nRetry-After: 5\r\nConnection: close\r\n"
                               "Content-Length: {}\r\n\r\n{}",
                               body.size(), body);
        error_code ec;
        sock.non_blocking(true, ec);
        sock.write_some(net::buffer(msg), ec);
        sock.shutdown(tcp::socket::shutdown_both, ec);
        sock.close(ec);
        // One line per second at most: a flood must not flood the log too.
        auto now = std::chrono::steady_clock::now();
        if (now - last_refusal_log > std::chrono::seconds(1)) {
            last_refusal_log = now;
            spdlog::warn("refusing connections: over --{} ({} open)",
                         why == limits::reason::connections ? "max-connections" : "max-connections-per-ip",
                         st.limits_->open_sockets());
        }
    }
    std::chrono::steady_clock::time_point last_refusal_log{};

    explicit impl(config c) : st(std::move(c)), acceptor(st.workers[0]->ioc)
    {
        error_code ec;
        auto addr = net::ip::make_address(st.cfg.bind, ec);
        if (ec)
            throw std::runtime_error("bad --bind address '" + st.cfg.bind + "': " + ec.message());
        tcp::endpoint ep(addr, st.cfg.port);
        acceptor.open(ep.protocol(), ec);
        if (!ec)
            acceptor.set_option(net::socket_base::reuse_address(true), ec);
        if (!ec)
            acceptor.bind(ep, ec);
        if (!ec)
            acceptor.listen(net::socket_base::max_listen_connections, ec);
        if (ec)
            throw std::runtime_error("cannot listen on " + st.cfg.bind + ":" + std::to_string(st.cfg.port) + ": " +
                                     ec.message());
    }

    void
    do_accept()
    {
        // Plain HTTP and upgrade requests are read on the workers in turn; a WebSocket
        // then moves to the worker that owns its session.
        worker& w = *st.workers[next_worker++ % st.workers.size()];
        acceptor.async_accept(w.ioc, [this, &w](error_code ec, tcp::socket sock) {
            if (ec) {
                if (ec == net::error::operation_aborted || !acceptor.is_open())
                    return;
                if (ec == net::error::no_descriptors || ec.value() == ENFILE || ec == net::error::no_buffer_space ||
                    ec == net::error::no_memory) {
                    // Out of descriptors: retrying at once would spin. Pause, then retry.
                    st.limits_->accept_backoff();
                    spdlog::warn("accept: {}; pausing accepts for 100 ms", ec.message());
                    accept_timer.expires_after(std::chrono::milliseconds(100));
                    accept_timer.async_wait([this](error_code e) {
                        if (!e && !stopped)
                            do_accept();
                    });
                    return;
                }
                spdlog::warn("accept: {}", ec.message());
            } else {
                error_code pec;
                auto peer = sock.remote_endpoint(pec);
                auto ip = pec ? std::string() : peer.address().to_string();
                limits::reason why{};
                auto ticket = st.limits_->admit(ip, !pec && peer.address().is_loopback(), why);
                if (!ticket) {
                    refuse(sock, why);
                } else {
                    w.defer([this, &w, s = std::move(sock), t = std::move(*ticket)]() mutable {
                        error_code ignored;
                        s.set_option(tcp::no_delay(true), ignored);
                        if (!st.tls)
                            return start_http(st, w, std::move(s), std::move(t));
                        st.tls->start(std::move(s), [this, &w, t = std::move(t)](tcp::socket plain) mutable {
                            start_http(st, w, std::move(plain), std::move(t));
                        });
                    });
                }
            }
            do_accept();
        });
    }
};

server::server(config cfg) : impl_(std::make_unique<impl>(std::move(cfg)))
{
    impl_->st.drain_hook = [this] { drain(); };
}

server::~server()
{
    stop();
}

std::uint16_t
server::port() const noexcept
{
    error_code ec;
    return impl_->acceptor.local_endpoint(ec).port();
}

void
server::run()
{
    auto& st = impl_->st;
    spdlog::info("lockstep-reflector listening on {}:{} ({} worker threads, data in {}, region {})", st.cfg.bind,
                 port(), st.workers.size(), st.cfg.data_dir, st.cfg.region);
    {
        error_code ec;
        auto a = net::ip::make_address(st.cfg.bind, ec);
        if (!ec && !a.is_loopback()) {
            if (!st.gate->user_auth())
                spdlog::warn("listening on {} without --auth-secret/--auth-public-key: anyone who can reach this "
                             "port may open sessions, store blobs and use /v1 (docs/security.md)",
                             st.cfg.bind);
            if (!st.gate->admin_auth() && !st.gate->user_auth())
                spdlog::warn("listening on {} without --admin-token: /sessions and /metrics are open to anyone",
                             st.cfg.bind);
        }
    }
    impl_->guards.resize(st.workers.size());
    for (std::size_t i = 0; i < st.workers.size(); ++i)
        impl_->guards[i].emplace(st.workers[i]->ioc.get_executor());
    impl_->do_accept();
    // Register with the router now and refresh every 2 s (load and heartbeat), on the
    // directory thread: a slow Redis never holds up an event loop.
    st.self_id = st.cfg.reflector_id.empty() ? st.cfg.region + "-" + std::to_string(port()) : st.cfg.reflector_id;
    st.instance = std::to_string(std::random_device{}()) + std::to_string(std::random_device{}());
    st.directory.start_heartbeat(std::chrono::milliseconds(std::min<std::uint32_t>(2000, st.cfg.heartbeat_ttl_ms / 5)),
                                 [&st, p = port()] { return st.self_info(p); });
    for (auto& w : st.workers)
        if (st.cfg.max_coalesce_us > 0 || st.cfg.max_tick_stretch_pct > 100)
            w->defer([wp = w.get()] { wp->start_load_sampling(); });
    for (auto& w : st.workers)
        w->defer([wp = w.get()] {
            wp->start_journal_sweep(std::chrono::seconds(5));
            wp->start_cluster_timer();
        });
    if (st.cluster)
        st.directory.run([&st] { st.cluster->start(); });
    for (std::size_t i = 1; i < st.workers.size(); ++i)
        st.workers[i]->thread = std::thread([w = st.workers[i].get()] { w->run(); });
    st.workers[0]->run();
    for (std::size_t i = 1; i < st.workers.size(); ++i)
        if (st.workers[i]->thread.joinable())
            st.workers[i]->thread.join();
    st.disk.join();
    st.directory.stop();
    spdlog::info("lockstep-reflector stopped");
}

void
server::drain()
{
    auto& st = impl_->st;
    if (st.draining_.exchange(true))
        return;
    spdlog::info("draining: not ready, refusing new WebSocket sessions, asking {} clients to reconnect elsewhere",
                 [&] {
                     long n = 0;
                     for (auto const& w : st.workers)
                         n += w->metrics.connections.load();
                     return n;
                 }());
    // HTTP stays up (readiness answers 503, so load balancers move away); new
    // WebSocket upgrades are refused with 503; the router stops placing sessions here.
    st.directory.post([&st, p = port()](router::directory& d) { d.register_reflector(st.self_info(p)); });
    // Clients are asked to reconnect (1001); what they send until their close reply
    // still goes into their sessions (nothing is shown here any more: the reflector they
    // rejoin sends it). In a cluster each session, once its clients left, writes its last
    // records to Redis and releases its lease, so the reflector they reconnect to takes
    // it over at once; standalone, the journal has it for the restart.
    for (auto& w : st.workers)
        w->defer([wp = w.get()] {
            if (wp->journal)
                wp->journal->sync();
            if (wp->cluster)
                wp->cluster->drain();
            close_all_connections(*wp, protocol::close_code::going_away, "reflector draining", true);
        });
    // Give clients the drain timeout to go, then stop.
    auto timer = std::make_shared<net::steady_timer>(st.workers[0]->ioc);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(st.cfg.drain_timeout_ms);
    // The function holds itself only weakly; each pending wait holds it strongly, so
    // it is freed when the drain ends or when the worker is torn down mid-drain.
    auto check = std::make_shared<std::function<void()>>();
    *check = [this, timer, deadline, weak = std::weak_ptr<std::function<void()>>(check)] {
        long n = 0;
        std::size_t held = 0;  // cluster sessions not written and released yet
        for (auto const& w : impl_->st.workers) {
            n += w->metrics.connections.load();
            if (w->cluster)
                held += w->cluster->owned_count();
        }
        // Uploads in progress finish too (a client's snapshot arriving as the drain
        // starts is stored and answered): HTTP stays up until then.
        auto uploads = impl_->st.limits_->uploads_in_progress();
        if ((n == 0 && uploads == 0 && held == 0) || std::chrono::steady_clock::now() >= deadline) {
            if (n || uploads || held)
                spdlog::warn("drain timeout: {} connections still open, {} uploads in progress, {} cluster "
                             "session(s) not released",
                             n, uploads, held);
            stop();
            return;
        }
        timer->expires_after(std::chrono::milliseconds(50));
        timer->async_wait([self = weak.lock()](error_code) {
            if (self)
                (*self)();
        });
    };
    st.workers[0]->defer([check] { (*check)(); });
}

bool
server::reload_tls()
{
    return impl_->st.tls && impl_->st.tls->reload();
}

void
server::stop()
{
    if (impl_->stopped.exchange(true))
        return;
    for (auto& g : impl_->guards)
        g.reset();
    for (auto& w : impl_->st.workers)
        w->defer([wp = w.get()] {
            wp->load_timer.cancel();
            wp->coalesce_timer.cancel();
            wp->sweep_timer.cancel();
            wp->cluster_timer.cancel();
        });
    impl_->st.workers[0]->defer([this] { impl_->accept_timer.cancel(); });
    for (auto& w : impl_->st.workers)
        w->ioc.stop();
}

}  // namespace lockstep
