#include "server/durability.hpp"

#include "store/file_store.hpp"

#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

namespace lockstep {

namespace fs = std::filesystem;

namespace {

std::string
snapshot_of(session_header const& h)
{
    return h.snapshot_time + "#" + std::to_string(h.snapshot_seq) + "#" + h.snapshot_url;
}

}  // namespace

session_journal::session_journal(durability_options opts, worker_metrics& metrics)
    : opts_(std::move(opts)), metrics_(metrics),
      writer_({opts_.dir, opts_.fsync_ms, [&metrics](double secs) { metrics.observe_fsync(secs); }, opts_.wal_name},
              &stats_)
{
    tracker_.lease_ms = opts_.lease_ms;
    tracker_.seen_per_base = opts_.seen_per_base;
    stats_.tails_dropped.store(opts_.tails_dropped_at_start, std::memory_order_relaxed);
    mirror_stats();
}

session_journal::loaded
session_journal::load(std::string const& id)
{
    loaded l;
    l.stored = writer_.load(id, l.ec);
    return l;
}

bool
session_journal::apply(session& s, loaded l)
{
    auto& ec = l.ec;
    auto& stored = l.stored;
    mirror_stats();
    if (!ec && !stored)
        return false;  // never stored: a new session
    if (!ec && s.restore(stored->header, stored->events, stored->resume_time_ms)) {
        writer_.resumed(s.id(), stored->newest_generation);  // its new base is a newer generation
        metrics_.add(metrics_.sessions_resumed);
        spdlog::info("session {} resumed from {} ({} events, time {}{})", s.id(), stored->file,
                     stored->events.size(), stored->resume_time_ms,
                     stored->dropped_bytes ? ", torn tail dropped" : "");
        capture(s);  // a new generation with the state as resumed
        return true;
    }
    // Unreadable: keep it for the operator, out of the way of the new session.
    auto name = journal::encode_id(s.id());
    auto aside = opts_.dir + "/" + name + ".unreadable-" +
                 std::to_string(std::chrono::system_clock::now().time_since_epoch() / std::chrono::seconds(1));
    std::error_code mv;
    fs::rename(opts_.dir + "/" + name, aside, mv);
    spdlog::error("session {}: journal cannot be resumed ({}); moved to {}{}; the session starts afresh", s.id(),
                  ec ? ec.message() : "its header and log do not fit together", aside,
                  mv ? " (move failed: " + mv.message() + ")" : "");
    return false;
}

void
session_journal::capture(session const& s)
{
    tracker_.capture(s, writer_);
}

void
capture_tracker::capture(session const& s, journal_sink& out)
{
    if (!s.created())
        return;
    auto& j = sessions_[s.id()];
    auto seq = s.seq();
    if (!j.based) {
        rebase(s, j, out);
    } else if (s.header_version() != j.header_version) {
        auto h = s.header();
        if (snapshot_of(h) != j.snapshot) {
            rebase(s, j, out);  // compaction: the new base holds only what the snapshot left
        } else {
            s.each_logged_after(j.seq, [&](std::uint32_t q, std::string_view e) { out.event(s.id(), q, e); });
            out.header(h);
            j.header_version = s.header_version();
            j.seq = seq;
        }
    } else if (seq != j.seq) {
        s.each_logged_after(j.seq, [&](std::uint32_t q, std::string_view e) { out.event(s.id(), q, e); });
        j.seq = seq;
    }
    // No client may be shown a session time the journal does not cover.
    if (s.time_ms() > j.lease_ms) {
        if (++j.seen_records > seen_per_base) {
            rebase(s, j, out);  // compaction without a snapshot: the seen records go
            return;
        }
        j.lease_ms = s.time_ms() + lease_ms;
        out.seen(s.id(), j.lease_ms);
    }
}

void
capture_tracker::restored(session const& s, std::int64_t seen_ms)
{
    auto& j = sessions_[s.id()];
    auto h = s.header();
    j.based = true;
    j.seq = h.seq;
    j.header_version = s.header_version();
    j.snapshot = snapshot_of(h);
    j.lease_ms = seen_ms;
    j.seen_records = 0;
}

void
capture_tracker::rebase(session const& s, journaled& j, journal_sink& out)
{
    auto h = s.header();
    out.begin_base(h);
    s.each_logged_after(h.seq - static_cast<std::uint32_t>(s.log_size()),
                        [&](std::uint32_t q, std::string_view e) { out.event(h.id, q, e); });
    out.end_base(h.id);
    j.based = true;
    j.seq = h.seq;
    j.header_version = s.header_version();
    j.snapshot = snapshot_of(h);
    j.lease_ms = h.time_ms;  // the base covers time up to here; the next tick stages a lease
    j.seen_records = 0;
}

void
session_journal::flush()
{
    bool was_failing = !failing_.empty();
    auto r = writer_.flush();
    mirror_stats();
    // A session's staged records are all retried by each flush: written now, or failing.
    for (auto it = failing_.begin(); it != failing_.end();)
        it = writer_.pending(*it) ? std::next(it) : failing_.erase(it);
    for (auto const& id : r.failed)
        failing_.insert(id);
    if (was_failing && failing_.empty())
        spdlog::info("journal: writing again; every staged record is on disk");
    if (!r.failed.empty() && !was_failing)
        spdlog::error("journal: cannot write {} session(s) (first: {}): {}; their clients are closed with 1013 "
                      "and their records kept in memory until a write succeeds",
                      r.failed.size(), r.failed.front(), r.error.message());
}

bool
session_journal::release(std::string const& id)
{
    writer_.close(id);
    if (writer_.pending(id)) {
        failing_.insert(id);
        return false;
    }
    tracker_.forget(id);
    mirror_stats();
    return true;
}

std::vector<std::string>
session_journal::stored(std::function<bool(std::string const&)> const& mine,
                        std::function<bool(std::string const&)> const& live) const
{
    std::vector<std::string> out;
    for (auto& id : writer_.stored())
        if (mine(id) && !live(id))
            out.push_back(std::move(id));
    return out;
}

std::size_t
session_journal::sweep(std::function<bool(std::string const&)> const& mine,
                       std::function<bool(std::string const&)> const& live)
{
    writer_.sync();  // the segments hold everything written so far (their times are right)
    auto now = fs::file_time_type::clock::now();
    auto limit = std::chrono::seconds(static_cast<std::int64_t>(opts_.retention_s));
    std::size_t removed = 0;
    std::uint64_t bytes = 0;
    std::vector<session_header> expired;
    for (auto const& id : writer_.stored()) {
        if (!mine(id))
            continue;
        std::error_code ec;
        std::uint64_t size = 0;
        auto newest = fs::file_time_type::min();
        for (fs::directory_iterator it(opts_.dir + "/" + journal::encode_id(id), ec), end; !ec && it != end;
             it.increment(ec)) {
            std::error_code e2;
            size += it->file_size(e2);
            newest = std::max(newest, it->last_write_time(e2));
        }
        if (!live(id) && !writer_.in_use(id) && newest != fs::file_time_type::min() && now - newest > limit) {
            std::error_code lec;
            auto gone = writer_.read(id, lec);
            if (!writer_.remove(id)) {
                if (gone)
                    expired.push_back(std::move(gone->header));
                ++removed;
                spdlog::info("session {}: journal deleted after {} s unused (--session-retention)", id,
                             opts_.retention_s);
                continue;
            }
        }
        bytes += size;
    }
    bytes += writer_.wal_bytes();  // this worker's write-ahead logs
    metrics_.journal_disk_bytes.store(static_cast<std::int64_t>(bytes), std::memory_order_relaxed);
    if (!expired.empty() && !opts_.files_dir.empty()) {
        auto n = delete_expired_blobs(opts_.files_dir, expired, referenced_urls(), now - limit);
        if (n)
            spdlog::info("retention: {} blob(s) deleted that only expired sessions referenced", n);
    }
    return removed;
}

std::vector<std::string>
session_journal::referenced_urls()
{
    std::vector<std::string> urls;
    for (auto const& id : writer_.stored()) {
        std::error_code ec;
        if (auto st = writer_.read(id, ec)) {
            urls.push_back(st->header.snapshot_url);
            urls.push_back(st->header.persisted_url);
        }
    }
    std::error_code ec;
    for (fs::directory_iterator it(opts_.persist_dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().extension() != ".json")
            continue;
        std::ifstream in(it->path(), std::ios::binary);
        auto j = nlohmann::json::parse(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), nullptr,
                                       false);
        if (j.is_object() && j.contains("url") && j["url"].is_string())
            urls.push_back(j["url"].get<std::string>());
    }
    return urls;
}

std::optional<std::string>
blob_of_url(std::string_view url)
{
    auto at = url.find("/files/");
    if (at == std::string_view::npos)
        return std::nullopt;
    auto rest = url.substr(at + 7);
    rest = rest.substr(0, rest.find_first_of("?#"));
    if (rest.rfind("t/", 0) == 0) {  // a t/<token> pair in front of the path
        auto slash = rest.find('/', 2);
        if (slash == std::string_view::npos)
            return std::nullopt;
        rest = rest.substr(slash + 1);
    }
    std::string why;
    return store::blob_path(rest, why);
}

std::size_t
delete_expired_blobs(std::string const& files_dir, std::vector<session_header> const& expired,
                     std::vector<std::string> const& keep, fs::file_time_type older_than)
{
    std::set<std::string> kept;
    for (auto const& u : keep)
        if (auto b = blob_of_url(u))
            kept.insert(*b);
    std::set<std::string> candidates;
    for (auto const& h : expired) {
        for (auto const* u : {&h.snapshot_url, &h.persisted_url})
            if (auto b = blob_of_url(*u))
                candidates.insert(*b);
        // The session's own snapshot directory (`<persistentId>.<sessionId>`): its older
        // snapshots, which no header names any more.
        auto b = blob_of_url(h.snapshot_url);
        auto slash = b ? b->rfind('/') : std::string::npos;
        if (slash == std::string::npos)
            continue;
        auto dir = b->substr(0, slash);
        auto name = dir.substr(dir.rfind('/') + 1);
        if (name.size() <= h.id.size() || name.compare(name.size() - h.id.size() - 1, std::string::npos, "." + h.id) != 0)
            continue;
        std::error_code ec;
        for (fs::directory_iterator it(files_dir + "/" + dir, ec), end; !ec && it != end; it.increment(ec))
            if (it->is_regular_file(ec))
                candidates.insert(dir + "/" + it->path().filename().string());
    }
    std::size_t deleted = 0;
    std::set<std::string> dirs;
    for (auto const& rel : candidates) {
        if (kept.count(rel))
            continue;
        std::error_code ec;
        auto path = files_dir + "/" + rel;
        auto t = fs::last_write_time(path, ec);
        if (ec || t > older_than)
            continue;  // gone already, or written since the session expired: not only theirs
        if (fs::remove(path, ec) && !ec) {
            ++deleted;
            dirs.insert(fs::path(path).parent_path().string());
        } else if (ec) {
            spdlog::warn("retention: cannot delete blob {}: {}", rel, ec.message());
        }
    }
    for (auto const& d : dirs) {  // empty snapshot directories go too (fs::remove keeps a non-empty one)
        std::error_code ec;
        fs::remove(d, ec);
    }
    return deleted;
}

void
session_journal::sync()
{
    barrier();
    writer_.sync();
}

void
session_journal::mirror_stats()
{
    auto copy = [](auto& to, auto const& from) { to.store(from.load(std::memory_order_relaxed), std::memory_order_relaxed); };
    copy(metrics_.journal_bytes, stats_.bytes_written);
    copy(metrics_.journal_writes, stats_.writes);
    copy(metrics_.journal_catch_up_writes, stats_.catch_up_writes);
    copy(metrics_.journal_write_errors, stats_.write_errors);
    copy(metrics_.journal_tails_dropped, stats_.tails_dropped);
}

}  // namespace lockstep
