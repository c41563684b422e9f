#include "server/cluster.hpp"

#include "server/durability.hpp"
#include "server/forward.hpp"
#include "server/internal.hpp"
#include "store/journal.hpp"

#include <spdlog/spdlog.h>

namespace lockstep {

namespace {

// Batches of one worker sent to Redis and not answered yet; later ones queue and merge.
constexpr unsigned max_in_flight = 1;

std::int64_t
steady_us()
{
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// An owner serves a session for three quarters of the lease after it last asked Redis
/// to extend it: it stops before the lease can expire for the others.
std::int64_t
valid_until(std::int64_t asked_us, std::uint32_t lease_ms)
{
    return asked_us + static_cast<std::int64_t>(lease_ms) * 750;
}

}  // namespace

// ------------------------------------------------------------------ lease_keeper

lease_keeper::lease_keeper(server_state& st, std::unique_ptr<redis::link> link, store::sessions_options opts)
    : st_(st), link_(std::move(link)), store_(*link_, opts)
{
}

lease_keeper::~lease_keeper()
{
    {
        std::lock_guard lock(watch_mu_);
        stopping_ = true;
    }
    watch_cv_.notify_all();
    if (watchdog_.joinable())
        watchdog_.join();
}

void
lease_keeper::start()
{
    holder_ = st_.self_id + "/" + st_.instance;
    watchdog_ = std::thread([this] { watch(); });
    st_.directory.run_after(std::chrono::milliseconds(lease_ms() / 4), [this] { renew_all(); });
}

void
lease_keeper::acquire(std::string id, unsigned w, std::chrono::steady_clock::time_point until, acquired_fn done,
                      bool asked)
{
    auto r = store_.acquire(id, holder_);
    if (r.what == store::acquire_result::status::acquired) {
        held_[id] = {r.granted, w};
        return done(std::move(r), {});
    }
    if (r.what == store::acquire_result::status::held && !asked) {
        asked = true;  // once per JOIN's wait
        auto holder = store::holder_of(r.holder);
        if (holder != holder_) {
            if (st_.cfg.handoff_min_interval_ms > 0 && !store_.recently_moved(id)) {
                want(holder, id);  // and wait for the hand-off
                return retry(std::move(id), w, until, std::move(done), asked);
            }
            // It may not move now: the JOIN goes to its owner, if the owner registered a
            // URL this reflector can reach; else it waits as for a takeover.
            auto owner_id = holder.substr(0, holder.rfind('/'));
            return st_.directory.post([this, id = std::move(id), w, until, done = std::move(done), r = std::move(r),
                                       owner_id](router::directory& d) mutable {
                std::string host, port;
                for (auto const& e : d.reflectors()) {
                    // Its peer URL (its own address); older registrations have only `url`.
                    auto url = e.value("peer", e.value("url", ""));
                    if (e.value("id", "") != owner_id || !e.value("live", false) || !parse_ws_url(url, host, port))
                        continue;
                    // Only to an owner that answers: one that just died is still listed
                    // live (and holds the lease) for a while; its JOINs wait to take the
                    // session over instead of bouncing off a refused connection.
                    if (http_get_status(host, port, "/health/live", std::chrono::milliseconds(300)) == 200)
                        return done(std::move(r), url);
                    spdlog::info("session {}: its owner {} does not answer at {}: waiting to take it over", id,
                                 owner_id, url);
                    break;
                }
                retry(std::move(id), w, until, std::move(done), true);
            });
        }
    }
    if (std::chrono::steady_clock::now() >= until)
        return done(std::move(r), {});
    retry(std::move(id), w, until, std::move(done), asked);
}

void
lease_keeper::retry(std::string id, unsigned w, std::chrono::steady_clock::time_point until, acquired_fn done,
                    bool asked)
{
    // Held by another reflector (alive, or dead and its lease not expired yet), or Redis
    // unreachable: try again shortly. A takeover waits; it never splits the session.
    st_.directory.run_after(std::chrono::milliseconds(100),
                            [this, id = std::move(id), w, until, asked, done = std::move(done)]() mutable {
                                acquire(std::move(id), w, until, std::move(done), asked);
                            });
}

void
lease_keeper::want(std::string const& token, std::string const& id)
{
    auto holder = store::holder_of(token);
    if (st_.cfg.handoff_min_interval_ms == 0 || holder == holder_)
        return;  // hand-offs off, or this process is the holder (handing it off itself)
    if (store_.want(holder, id))
        spdlog::info("session {}: held by {}; asked it to hand the session over", id, holder);
}

void
lease_keeper::hand_off_wanted()
{
    auto interval = st_.cfg.handoff_min_interval_ms;
    if (interval == 0)
        return;
    for (auto const& id : store_.wanted(holder_, 256)) {
        auto it = held_.find(id);
        if (it == held_.end())
            continue;  // not (or no longer) ours: the asker's acquire gets it or waits
        switch (store_.may_hand_off(id, it->second.l, interval)) {
        case store::handoff_status::allowed: {
            auto& wk = *st_.workers[it->second.worker];
            wk.defer([&wk, id] {
                if (wk.cluster)
                    wk.cluster->hand_off(id);
            });
            break;
        }
        case store::handoff_status::refused:
            spdlog::info("session {}: another reflector got a JOIN for it, but it moved less than "
                         "--handoff-min-interval-ms ({} ms) ago: it stays here",
                         id, interval);
            break;
        case store::handoff_status::not_held:
        case store::handoff_status::unavailable: break;  // the renewal reports a lost lease
        }
    }
}

void
lease_keeper::drop(std::string const& id, bool release)
{
    auto it = held_.find(id);
    if (it == held_.end())
        return;
    if (release && !store_.release(id, it->second.l))
        spdlog::warn("session {}: lease not released (not ours any more, or Redis unreachable)", id);
    held_.erase(it);
}

bool
lease_keeper::redis_unreachable() const noexcept
{
    return redis::link::any_hanging(std::chrono::milliseconds(100));
}

void
lease_keeper::refresh_peers()
{
    st_.directory.post([this](router::directory& d) {
        auto list = d.reflectors();
        if (!d.available())
            return;  // keep the last list (an empty answer from an unreachable Redis)
        std::vector<peer> out;
        for (auto const& e : list) {
            if (!e.is_object() || e.value("id", "") == st_.self_id || !e.value("live", false))
                continue;
            peer p;
            p.id = e.value("id", "");
            p.url = e.value("peer", e.value("url", ""));
            if (!parse_ws_url(p.url, p.host, p.port))
                p.host.clear();
            out.push_back(std::move(p));
        }
        peers_refreshed_us_ = steady_us();
        std::lock_guard lock(watch_mu_);
        peers_ = std::move(out);
    });
}

void
lease_keeper::set_outage(bool on)
{
    outage_ = on;
    for (auto& w : st_.workers) {
        auto& wk = *w;
        wk.defer([&wk, on] {
            if (wk.cluster)
                wk.cluster->set_outage(on);
        });
    }
}

void
lease_keeper::publish_held()
{
    std::vector<std::vector<std::string>> ids(st_.workers.size());
    for (auto const& [id, h] : held_)
        ids[h.worker].push_back(id);
    std::lock_guard lock(watch_mu_);
    held_ids_ = std::move(ids);
}

void
lease_keeper::watch()
{
    std::unique_lock lock(watch_mu_);
    std::int64_t down_since = 0;
    while (!watch_cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stopping_; })) {
        // What the links saw, without a call: a failed last call, or one hanging.
        if (!redis_unreachable()) {
            down_since = 0;
            last_refusal_.clear();
            if (outage_) {
                spdlog::info("redis: reachable again: output of the sessions held here waits for Redis again");
                set_outage(false);  // their whole state goes to Redis before output again
            }
            continue;
        }
        auto now = steady_us();
        if (down_since == 0)
            down_since = now;
        auto held = held_ids_;
        auto peers = peers_;
        lock.unlock();
        ride_out_outage(held, peers, now - down_since);
        lock.lock();
    }
}

void
lease_keeper::ride_out_outage(std::vector<std::vector<std::string>> const& held, std::vector<peer> const& peers,
                              std::int64_t down_us)
{
    std::size_t n = 0;
    for (auto const& ids : held)
        n += ids.size();
    if (n == 0)
        return;
    // Every other live reflector must answer that it cannot reach Redis either; one that
    // reaches it (or does not answer) could take sessions over once their leases run out.
    std::string why = peers.empty() ? "no other reflector to ask" : "";
    for (auto const& p : peers) {
        if (p.host.empty()) {
            why = "peer " + p.id + " has no plain ws:// URL to ask (" + p.url + ")";
            break;
        }
        auto status = http_get_status(p.host, p.port, "/health/redis", std::chrono::milliseconds(300));
        if (status != 503) {
            why = "peer " + p.id + (status == 0 ? " did not answer" : " reaches Redis");
            break;
        }
    }
    if (!why.empty()) {
        if (outage_ || why != last_refusal_)
            spdlog::warn("redis: unreachable, but {}: the {} session(s) held here wait for Redis and are given up "
                         "when their leases run out",
                         why, n);
        last_refusal_ = why;
        if (outage_)
            set_outage(false);
        return;  // the sessions run out at their validity, as without this
    }
    last_refusal_.clear();
    // Nobody can take a session over while nobody reaches Redis: the held sessions stay
    // valid for another 3/4 lease from now (asked again every 100 ms).
    auto until = valid_until(steady_us(), lease_ms());
    for (std::size_t w = 0; w < held.size() && w < st_.workers.size(); ++w) {
        if (held[w].empty())
            continue;
        auto& wk = *st_.workers[w];
        wk.defer([&wk, list = held[w], until] {
            if (wk.cluster)
                wk.cluster->renewed(list, until);
        });
    }
    // Shown without Redis only once it has been unreachable for half a lease: by then
    // Redis itself sees a silence when it is back and lets nobody take a session over for
    // a lease, so the owners write their sessions first (sessions.lua, clock()).
    if (!outage_ && down_us >= static_cast<std::int64_t>(lease_ms()) * 500) {
        spdlog::warn("redis: unreachable for {} ms from here and from all {} other reflector(s): the {} session(s) "
                     "held here keep running; their records go to Redis when it is back",
                     down_us / 1000, peers.size(), n);
        set_outage(true);
    }
}

void
lease_keeper::renew_all()
{
    auto ticked_at = steady_us();
    auto silence = store_.tick();
    if (silence) {
        if (unreachable_since_us_ != 0)
            spdlog::info("redis: reachable again after {} ms", (ticked_at - unreachable_since_us_) / 1000);
        unreachable_since_us_ = 0;
        if (*silence > 0 && !silence_logged_)
            spdlog::warn("redis: nobody reached it for {} ms (stopped, or cut off): for one lease ({} ms) no session "
                         "is taken over, so that their owners renew them first",
                         *silence, lease_ms());
        else if (*silence < 0 && !silence_logged_)
            spdlog::error("redis: it lost its data (restarted without persistence?): for one lease ({} ms) no session "
                          "is taken over, so that their owners write them again",
                          lease_ms());
        silence_logged_ = *silence != 0;
        if (ticked_at - peers_refreshed_us_ > 2'000'000)
            refresh_peers();
    } else if (unreachable_since_us_ == 0) {
        unreachable_since_us_ = ticked_at;
    }
    if (!held_.empty()) {
        std::vector<std::pair<std::string, store::lease>> leases;
        leases.reserve(held_.size());
        for (auto const& [id, h] : held_)
            leases.emplace_back(id, h.l);
        auto asked = steady_us();
        auto results = store_.renew(leases);
        std::vector<std::vector<std::string>> ok(st_.workers.size());
        for (std::size_t i = 0; i < leases.size(); ++i) {
            auto const& id = leases[i].first;
            auto w = held_[id].worker;
            if (results[i] == store::redis_sessions::renew_status::ok) {
                ok[w].push_back(id);
            } else if (results[i] == store::redis_sessions::renew_status::reseeded) {
                ok[w].push_back(id);
                auto& wk = *st_.workers[w];
                wk.defer([&wk, id] {
                    if (wk.cluster)
                        wk.cluster->rewrite(id, "Redis had lost it (restarted empty?)");
                });
            } else if (results[i] == store::redis_sessions::renew_status::lost) {
                held_.erase(id);
                auto& wk = *st_.workers[w];
                wk.defer([&wk, id] {
                    if (wk.cluster)
                        wk.cluster->lost(id, "its lease was taken by another reflector");
                });
            }
        }
        auto until = valid_until(asked, lease_ms());
        for (std::size_t w = 0; w < ok.size(); ++w) {
            if (ok[w].empty())
                continue;
            auto& wk = *st_.workers[w];
            wk.defer([&wk, ids = std::move(ok[w]), until] {
                if (wk.cluster)
                    wk.cluster->renewed(ids, until);
            });
        }
    }
    publish_held();
    if (silence)
        hand_off_wanted();
    st_.directory.run_after(std::chrono::milliseconds(lease_ms() / 4), [this] { renew_all(); });
}

// ------------------------------------------------------------------ cluster_sessions

cluster_sessions::cluster_sessions(worker& w) : w_(w)
{
    tracker_.lease_ms = 1000;
}

void
cluster_sessions::acquire(std::string const& id, unique_function<void(bool, std::string const&)> done)
{
    if (owns(id))
        return done(true, {});
    auto& waiters = acquiring_[id];
    waiters.push_back(std::move(done));
    if (waiters.size() > 1)
        return;  // one attempt for every JOIN that arrives meanwhile
    auto& st = w_.st;
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(st.cfg.takeover_wait_ms);
    st.directory.run([&st, &wk = w_, id, until] {
        st.cluster->acquire(id, wk.index, until, [&wk, id](store::acquire_result r, std::string forward) {
            wk.defer([&wk, id, r = std::move(r), forward = std::move(forward)]() mutable {
                if (wk.cluster)
                    wk.cluster->on_acquired(id, std::move(r), forward);
            });
        });
    });
}

void
cluster_sessions::on_acquired(std::string const& id, store::acquire_result r, std::string const& forward)
{
    auto waiters = std::move(acquiring_[id]);
    acquiring_.erase(id);
    bool ok = r.what == store::acquire_result::status::acquired;
    if (ok) {
        auto& o = owned_[id];
        o = owned{};
        owned_count_.store(owned_.size(), std::memory_order_relaxed);
        o.l = r.granted;
        o.valid_until_us = valid_until(steady_us(), w_.st.cfg.lease_ms);
        tracker_.forget(id);
        if (r.unreadable)
            spdlog::error("session {}: its state in Redis cannot be read; the session starts afresh", id);
        if (r.state) {
            auto& s = w_.session_for(id);
            if (!s.created() && s.restore(r.state->header, r.state->events, r.state->seen_ms)) {
                tracker_.restored(s, r.state->seen_ms);
                w_.metrics.add(w_.metrics.sessions_resumed);
                spdlog::info("session {} taken over from Redis (fence {}, {} events, time {})", id, o.l.fence,
                             r.state->events.size(), s.time_ms());
                w_.touched(s);
            } else if (!s.created()) {
                spdlog::error("session {}: its state in Redis does not fit together; the session starts afresh", id);
            }
        } else {
            spdlog::debug("session {}: lease taken (fence {}), nothing stored", id, o.l.fence);
        }
    } else if (!forward.empty()) {
        spdlog::info("session {}: held by {}, which may not hand it off yet (--handoff-min-interval-ms): "
                     "forwarding {} JOIN(s) to {}",
                     id, r.holder, waiters.size(), forward);
    } else {
        spdlog::warn("session {}: {} within --takeover-wait-ms ({} ms); asking {} client(s) to retry", id,
                     r.what == store::acquire_result::status::held ? "held by " + r.holder
                                                                   : std::string("Redis unreachable"),
                     w_.st.cfg.takeover_wait_ms, waiters.size());
    }
    for (auto& f : waiters)
        f(ok, forward);
}

store::session_append&
cluster_sessions::staged(std::string const& id)
{
    auto [it, fresh] = staged_index_.try_emplace(id, staged_.size());
    if (fresh) {
        staged_.emplace_back();
        staged_.back().id = id;
    }
    return staged_[it->second];
}

namespace {

/// The blobs a header names, as /files paths (the keys blobs have in Redis).
std::vector<std::string>
blobs_of(session_header const& h)
{
    std::vector<std::string> out;
    for (auto const* url : {&h.snapshot_url, &h.persisted_url})
        if (auto p = blob_of_url(*url))
            out.push_back(std::move(*p));
    return out;
}

}  // namespace

void
cluster_sessions::begin_base(session_header const& h)
{
    auto& a = staged(h.id);
    a.rebase = true;
    a.events.clear();
    a.header_json = journal::header_json(h);
    a.blobs = blobs_of(h);
    a.seq = h.seq;
}

void
cluster_sessions::header(session_header const& h)
{
    auto& a = staged(h.id);
    a.header_json = journal::header_json(h);
    a.blobs = blobs_of(h);
    a.seq = h.seq;
}

void
cluster_sessions::event(std::string const& id, std::uint32_t seq, std::string_view element)
{
    auto& a = staged(id);
    a.events.emplace_back(element);
    a.seq = seq;
}

void
cluster_sessions::seen(std::string const& id, std::int64_t time_ms)
{
    staged(id).seen_ms = time_ms;
}

void
cluster_sessions::barrier()
{
    if (staged_.empty())
        return;
    auto batch = ++next_batch_;
    std::vector<store::session_append> sent;
    sent.reserve(staged_.size());
    for (auto& a : staged_) {
        auto it = owned_.find(a.id);
        if (it == owned_.end())
            continue;  // given up meanwhile: nothing of it may be written
        a.fence = it->second.l.fence;
        it->second.last_batch = batch;
        sent.push_back(std::move(a));
    }
    staged_.clear();
    staged_index_.clear();
    if (sent.empty())
        return;
    if (in_flight_ < max_in_flight)
        return send(batch, std::move(sent));
    // Queued behind the unanswered batch: merged, one append per session.
    queued_batch_ = batch;
    for (auto& a : sent) {
        auto [it, fresh] = queued_index_.try_emplace(a.id, queued_.size());
        if (fresh || queued_[it->second].fence != a.fence) {
            it->second = queued_.size();
            queued_.push_back(std::move(a));
            continue;
        }
        auto& q = queued_[it->second];
        if (a.rebase) {  // the whole state: replaces what was queued
            q = std::move(a);
            continue;
        }
        if (!a.events.empty() || !a.header_json.empty())
            q.seq = a.seq;
        if (!a.header_json.empty())
            q.header_json = std::move(a.header_json);
        if (!a.blobs.empty())
            q.blobs = std::move(a.blobs);
        if (a.seen_ms >= 0)
            q.seen_ms = a.seen_ms;
        q.events.insert(q.events.end(), std::make_move_iterator(a.events.begin()),
                        std::make_move_iterator(a.events.end()));
    }
}

void
cluster_sessions::send_queued()
{
    if (queued_.empty())
        return;
    std::vector<store::session_append> sent;
    sent.reserve(queued_.size());
    for (auto& a : queued_) {
        auto it = owned_.find(a.id);
        if (it != owned_.end() && it->second.l.fence == a.fence)
            sent.push_back(std::move(a));  // else given up meanwhile: nothing of it may be written
    }
    queued_.clear();
    queued_index_.clear();
    if (!sent.empty())
        send(queued_batch_, std::move(sent));
}

void
cluster_sessions::send(std::uint64_t batch, std::vector<store::session_append> sent)
{
    ++in_flight_;
    auto& st = w_.st;
    st.directory.run([&st, &wk = w_, batch, sent = std::move(sent)]() mutable {
        auto results = st.cluster->store().append(sent);
        wk.defer([&wk, batch, sent = std::move(sent), results = std::move(results)]() mutable {
            if (wk.cluster)
                wk.cluster->on_batch(batch, std::move(sent), std::move(results));
        });
    });
}

void
cluster_sessions::on_batch(std::uint64_t batch, std::vector<store::session_append> sent,
                           std::vector<store::append_status> results)
{
    --in_flight_;
    for (std::size_t i = 0; i < sent.size(); ++i) {
        auto const& id = sent[i].id;
        auto it = owned_.find(id);
        if (it == owned_.end() || it->second.l.fence != sent[i].fence)
            continue;  // not ours any more, or written under an earlier lease
        auto& o = it->second;
        switch (results[i]) {
        case store::append_status::ok:
            // After a failure only a whole state confirms anything.
            if (!o.retry_base || sent[i].rebase) {
                o.retry_base = false;
                o.confirmed = std::max(o.confirmed, batch);
            }
            break;
        case store::append_status::fenced: lost(id, "another reflector took it over (fenced write)"); break;
        case store::append_status::gap:
        case store::append_status::unavailable:
            rewrite(id, results[i] == store::append_status::gap ? "seq gap, or Redis lost it" : "Redis unreachable");
            break;
        }
    }
    for (auto const& a : sent)
        if (auto it = owned_.find(a.id);
            it != owned_.end() && it->second.moving && it->second.closing == 0 && not_in_redis(a.id) == 0)
            finish_hand_off(a.id);
    if (in_flight_ < max_in_flight)
        send_queued();
    wake();
}

void
cluster_sessions::rewrite(std::string const& id, char const* why)
{
    auto it = owned_.find(id);
    if (it == owned_.end())
        return;
    if (!it->second.retry_base)
        spdlog::warn("session {}: journal in Redis incomplete ({}); its output waits, the whole state is written again",
                     id, why);
    it->second.retry_base = true;
    tracker_.force_base(id);
}

void
cluster_sessions::wake()
{
    auto list = std::move(waiting_);
    waiting_.clear();
    waiting_set_.clear();
    for (auto& c : list)
        c->flush();
}

void
cluster_sessions::set_outage(bool on)
{
    outage_ = on;
    w_.metrics.cluster_outage.store(on ? 1 : 0, std::memory_order_relaxed);
    if (on)
        wake();  // output that waited for Redis may go now
}

std::uint64_t
cluster_sessions::not_in_redis(std::string const& id) const
{
    auto it = owned_.find(id);
    if (it == owned_.end())
        return 0;
    auto const& o = it->second;
    return o.retry_base || o.last_batch > o.confirmed ? std::max<std::uint64_t>(o.last_batch, 1) : 0;
}

bool
cluster_sessions::confirmed(std::string const& id, std::uint64_t batch) const
{
    if (outage_)
        return true;
    auto it = owned_.find(id);
    if (it == owned_.end())
        return false;
    return !it->second.retry_base && it->second.confirmed >= batch;
}

bool
cluster_sessions::release(session_header const& h)
{
    auto const& id = h.id;
    auto it = owned_.find(id);
    if (it == owned_.end())
        return true;
    if (it->second.retry_base)
        return false;  // Redis does not have all of it yet: stays in memory
    // Its keys get the retention with this last append; so do the blobs it needs.
    staged(id).blobs = blobs_of(h);
    barrier();
    send_queued();  // its last records go before the lease is released
    owned_.erase(it);
    owned_count_.store(owned_.size(), std::memory_order_relaxed);
    tracker_.forget(id);
    auto& st = w_.st;
    // After the last append (the directory thread runs tasks in order).
    st.directory.run([&st, id] { st.cluster->drop(id, true); });
    return true;
}

void
cluster_sessions::renewed(std::vector<std::string> const& ids, std::int64_t until_us)
{
    for (auto const& id : ids)
        if (auto it = owned_.find(id); it != owned_.end())
            it->second.valid_until_us = std::max(it->second.valid_until_us, until_us);
}

void
cluster_sessions::lost(std::string const& id, char const* why)
{
    if (owned_.erase(id) == 0)
        return;
    owned_count_.store(owned_.size(), std::memory_order_relaxed);
    spdlog::warn("session {}: no longer served here: {}; its clients are asked to reconnect (4003)", id, why);
    abandon_session_connections(w_, id, protocol::close_code::please_reconnect, "session moved to another reflector");
    w_.drop_session(id);
    tracker_.forget(id);  // what is staged for it is never sent: barrier() skips sessions not owned
    auto& st = w_.st;
    st.directory.run([&st, id] { st.cluster->drop(id, true); });
}

void
cluster_sessions::hand_off(std::string const& id, bool draining)
{
    auto it = owned_.find(id);
    if (it == owned_.end() || it->second.moving)
        return;
    it->second.moving = true;
    it->second.draining = draining;
    // The clients are closed first (1001): nothing more is shown here, output not shown
    // yet is dropped (their new reflector's SYNC carries it), but what they send until
    // their close reply still goes into the session. Once they all left (or after a
    // second) its last records go to Redis, then the lease.
    auto n = close_session_connections_for_move(w_, id, protocol::close_code::going_away,
                                                draining ? "reflector draining" : "session moved to another reflector");
    it = owned_.find(id);
    if (it == owned_.end())
        return;
    it->second.closing = n;
    it->second.move_deadline_us = steady_us() + 1'000'000;
    if (!draining)
        spdlog::info("session {}: handed off (a JOIN for it reached another reflector); {} client(s) asked to "
                     "reconnect (1001)",
                     id, n);
    if (n == 0)
        complete_move(id);
}

void
cluster_sessions::client_left(std::string const& id)
{
    auto it = owned_.find(id);
    if (it == owned_.end() || !it->second.moving || it->second.closing == 0)
        return;
    if (--it->second.closing == 0)
        complete_move(id);
}

void
cluster_sessions::complete_move(std::string const& id)
{
    // Its last records go to Redis before the lease (captured once more here: staging is
    // idempotent, and nothing the session holds may be left out of the last batch).
    if (auto* s = w_.find_session(id); s && s->created())
        capture(*s);
    barrier();
    send_queued();
    if (not_in_redis(id) == 0)
        finish_hand_off(id);
    // else: on_batch() finishes it once Redis has everything; a failed write is retried
    // with the whole state (check_leases), the lease renewed meanwhile.
}

void
cluster_sessions::drain()
{
    std::vector<std::string> ids;
    for (auto const& [id, o] : owned_)
        ids.push_back(id);
    for (auto const& id : ids)
        hand_off(id, true);
    if (!ids.empty())
        spdlog::info("draining: {} session(s) leave once their clients did; then their last records go to Redis and "
                     "their leases are released, so other reflectors take them over at once",
                     ids.size());
}

void
cluster_sessions::finish_hand_off(std::string const& id)
{
    auto it = owned_.find(id);
    if (it != owned_.end() && !it->second.draining)
        w_.metrics.add(w_.metrics.sessions_handed_off);
    owned_.erase(id);
    owned_count_.store(owned_.size(), std::memory_order_relaxed);
    tracker_.forget(id);
    w_.drop_session(id);
    auto& st = w_.st;
    // After its last append (the directory thread runs tasks in order).
    st.directory.run([&st, id] { st.cluster->drop(id, true); });
}

void
cluster_sessions::check_leases()
{
    auto now = steady_us();
    std::vector<std::string> expired, retry, slow;
    for (auto const& [id, o] : owned_) {
        if (now > o.valid_until_us)
            expired.push_back(id);
        else if (o.moving && o.closing > 0 && now > o.move_deadline_us)
            slow.push_back(id);
        else if (o.retry_base)
            retry.push_back(id);
    }
    for (auto const& id : expired)
        lost(id, "its lease could not be renewed in time");
    for (auto const& id : slow) {
        // Clients that did not answer the close within a second leave now.
        abandon_session_connections(w_, id, protocol::close_code::going_away, "session moved to another reflector");
        if (auto it = owned_.find(id); it != owned_.end()) {
            it->second.closing = 0;
            complete_move(id);
        }
    }
    for (auto const& id : retry)
        if (auto* s = w_.find_session(id); s && s->created())
            capture(*s);
    barrier();
}

}  // namespace lockstep
