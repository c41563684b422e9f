#include "limits/edge_limits.hpp"

#include <fmt/format.h>

namespace lockstep::limits {

char const*
name(reason r) noexcept
{
    switch (r) {
    case reason::connections: return "connections";
    case reason::connections_per_ip: return "connections_per_ip";
    case reason::http_rate: return "http_rate";
    case reason::uploads: return "uploads";
    case reason::disk: return "disk";
    case reason::files_depth: return "files_depth";
    case reason::count_: break;
    }
    return "?";
}

ticket&
ticket::operator=(ticket&& o) noexcept
{
    if (this != &o) {
        release();
        owner_ = o.owner_;
        ip_ = std::move(o.ip_);
        address_ = std::move(o.address_);
        loopback_ = o.loopback_;
        o.owner_ = nullptr;
        o.ip_.clear();
    }
    return *this;
}

void
ticket::release() noexcept
{
    if (owner_)
        owner_->release(ip_);
    owner_ = nullptr;
    ip_.clear();
}

upload_slot::~upload_slot()
{
    if (owner_)
        owner_->uploads_.fetch_sub(1);
}

std::optional<ticket>
edge_limits::admit(std::string const& ip, bool loopback, reason& why)
{
    if (s_.max_connections && open_.load() >= s_.max_connections) {
        why = reason::connections;
        refused(why);
        return std::nullopt;
    }
    open_.fetch_add(1);
    ticket t;
    t.owner_ = this;
    t.address_ = ip;
    t.loopback_ = loopback;
    if (!s_.trust_proxy && !take_ip(t, ip, loopback)) {
        why = reason::connections_per_ip;
        return std::nullopt;  // t's destructor gives the place back
    }
    return t;
}

bool
edge_limits::take_ip(ticket& t, std::string const& ip, bool loopback)
{
    if (!s_.max_connections_per_ip || loopback || t.per_ip_counted() || ip.empty())
        return true;
    std::lock_guard lock(mu_);
    auto& n = per_ip_[ip];
    if (n >= s_.max_connections_per_ip) {
        if (n == 0)
            per_ip_.erase(ip);
        refused(reason::connections_per_ip);
        return false;
    }
    ++n;
    t.ip_ = ip;
    return true;
}

void
edge_limits::release(std::string const& ip) noexcept
{
    open_.fetch_sub(1);
    if (ip.empty())
        return;
    std::lock_guard lock(mu_);
    auto it = per_ip_.find(ip);
    if (it != per_ip_.end() && --it->second == 0)
        per_ip_.erase(it);
}

bool
edge_limits::allow_request(std::string const& ip, bool loopback)
{
    if (!s_.max_http_rate || loopback || ip.empty())
        return true;
    auto now = std::chrono::steady_clock::now();
    double burst = 2.0 * s_.max_http_rate;
    std::lock_guard lock(mu_);
    // Bounded memory: forget addresses whose buckets are full again.
    if (buckets_.size() > 100'000) {
        for (auto it = buckets_.begin(); it != buckets_.end();) {
            double refill = std::chrono::duration<double>(now - it->second.at).count() * s_.max_http_rate;
            it = it->second.tokens + refill >= burst ? buckets_.erase(it) : std::next(it);
        }
    }
    auto [it, fresh] = buckets_.try_emplace(ip, bucket{burst, now});
    auto& b = it->second;
    if (!fresh) {
        b.tokens = std::min(burst, b.tokens + std::chrono::duration<double>(now - b.at).count() * s_.max_http_rate);
        b.at = now;
    }
    if (b.tokens < 1.0) {
        refused(reason::http_rate);
        return false;
    }
    b.tokens -= 1.0;
    return true;
}

std::optional<upload_slot>
edge_limits::begin_upload()
{
    auto n = uploads_.fetch_add(1) + 1;
    if (s_.max_uploads && n > s_.max_uploads) {
        uploads_.fetch_sub(1);
        refused(reason::uploads);
        return std::nullopt;
    }
    return upload_slot(this);
}

bool
edge_limits::disk_fits(std::uint64_t old_bytes, std::uint64_t new_bytes)
{
    if (!s_.max_disk_bytes || new_bytes <= old_bytes)
        return true;
    if (disk_used_.load() + (new_bytes - old_bytes) > s_.max_disk_bytes) {
        refused(reason::disk);
        return false;
    }
    return true;
}

void
edge_limits::disk_written(std::uint64_t old_bytes, std::uint64_t new_bytes)
{
    if (new_bytes >= old_bytes)
        disk_used_.fetch_add(new_bytes - old_bytes);
    else
        disk_used_.fetch_sub(std::min<std::uint64_t>(old_bytes - new_bytes, disk_used_.load()));
}

std::string
edge_limits::render(std::vector<std::pair<std::string, std::uint64_t>> const& more) const
{
    std::string out =
        "# HELP lockstep_limit_refusals_total Requests, connections and messages refused by a limit, by limit.\n"
        "# TYPE lockstep_limit_refusals_total counter\n";
    for (std::size_t i = 0; i < refusals_.size(); ++i)
        out += fmt::format("lockstep_limit_refusals_total{{limit=\"{}\"}} {}\n", name(static_cast<reason>(i)),
                           refusals_[i].load());
    for (auto const& [label, n] : more)
        out += fmt::format("lockstep_limit_refusals_total{{limit=\"{}\"}} {}\n", label, n);
    out += fmt::format(
        "# HELP lockstep_open_sockets Accepted sockets open now (HTTP and WebSocket).\n"
        "# TYPE lockstep_open_sockets gauge\nlockstep_open_sockets {}\n"
        "# HELP lockstep_uploads_in_progress PUT /files requests being received or stored.\n"
        "# TYPE lockstep_uploads_in_progress gauge\nlockstep_uploads_in_progress {}\n"
        "# HELP lockstep_blob_store_bytes Bytes of blobs in the store (counted against --max-disk-bytes).\n"
        "# TYPE lockstep_blob_store_bytes gauge\nlockstep_blob_store_bytes {}\n"
        "# HELP lockstep_accept_backoffs_total Times accepting paused because the process was out of file descriptors.\n"
        "# TYPE lockstep_accept_backoffs_total counter\nlockstep_accept_backoffs_total {}\n",
        open_.load(), uploads_.load(), disk_used_.load(), backoffs_.load());
    return out;
}

}  // namespace lockstep::limits
