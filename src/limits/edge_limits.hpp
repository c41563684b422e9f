// Limits at the edges of the reflector (docs/operations.md, "Limits"): open sockets in
// total and per client address, /v1 and /files requests per address, concurrent
// uploads and the blob store's disk use. Each refusal is counted by reason for
// /metrics. No Asio, no Beast; thread-safe (accepts, requests and closes happen on
// every worker thread).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <unordered_map>
#include <vector>

namespace lockstep::limits {

struct settings {
    std::uint64_t max_connections = 0;         // open sockets; 0: none (main() derives one from RLIMIT_NOFILE)
    std::uint32_t max_connections_per_ip = 0;  // open sockets per address; 0: none
    std::uint32_t max_http_rate = 0;           // /v1 + /files requests per second per address; 0: none
    bool trust_proxy = false;                  // take the address from X-Forwarded-For
    std::uint32_t max_uploads = 0;             // PUT /files bodies being received at once; 0: none
    std::uint64_t max_disk_bytes = 0;          // blob store size; 0: none
};

enum class reason { connections, connections_per_ip, http_rate, uploads, disk, files_depth, count_ };

char const* name(reason r) noexcept;

class edge_limits;

/// An open socket's place in the counts; released when destroyed. Move-only.
class ticket {
public:
    ticket() = default;
    ticket(ticket&& o) noexcept { *this = std::move(o); }
    ticket& operator=(ticket&& o) noexcept;
    ticket(ticket const&) = delete;
    ticket& operator=(ticket const&) = delete;
    ~ticket() { release(); }
    bool per_ip_counted() const noexcept { return !ip_.empty(); }
    /// The peer address given at accept, and whether it is a loopback one.
    std::string const& address() const noexcept { return address_; }
    bool loopback() const noexcept { return loopback_; }

private:
    friend class edge_limits;
    void release() noexcept;
    edge_limits* owner_ = nullptr;
    std::string ip_;  // counted per address when set
    std::string address_;
    bool loopback_ = false;
};

/// A PUT /files body being received; released when destroyed. Move-only.
class upload_slot {
public:
    upload_slot() = default;
    upload_slot(upload_slot&& o) noexcept : owner_(o.owner_) { o.owner_ = nullptr; }
    upload_slot& operator=(upload_slot&& o) noexcept
    {
        std::swap(owner_, o.owner_);
        return *this;
    }
    upload_slot(upload_slot const&) = delete;
    upload_slot& operator=(upload_slot const&) = delete;
    ~upload_slot();

private:
    friend class edge_limits;
    explicit upload_slot(edge_limits* o) : owner_(o) {}
    edge_limits* owner_ = nullptr;
};

class edge_limits {
public:
    explicit edge_limits(settings s) : s_(s) {}
    settings const& config() const noexcept { return s_; }

    /// A socket was accepted from `ip`. Loopback peers are not counted per address
    /// (benchmarks, local proxies); with trust_proxy the address is counted later, from
    /// the request (take_ip). nullopt: refuse it (the reason was counted).
    std::optional<ticket> admit(std::string const& ip, bool loopback, reason& why);
    /// Counts `t` against `ip` (trust_proxy: the X-Forwarded-For address) if it is not
    /// counted yet. False: over the per-address limit.
    bool take_ip(ticket& t, std::string const& ip, bool loopback);

    /// A /v1 or /files request from `ip`: token bucket of max_http_rate per second with
    /// a burst of twice that. False: refuse it (429).
    bool allow_request(std::string const& ip, bool loopback);

    std::optional<upload_slot> begin_upload();

    /// Blob store accounting, called on the (single) disk thread around a write that
    /// replaces `old_bytes` by `new_bytes`. False: the store would exceed max_disk_bytes.
    bool disk_fits(std::uint64_t old_bytes, std::uint64_t new_bytes);
    void disk_written(std::uint64_t old_bytes, std::uint64_t new_bytes);
    void set_disk_used(std::uint64_t b) noexcept { disk_used_.store(b); }

    void refused(reason r) noexcept { refusals_[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed); }
    void accept_backoff() noexcept { backoffs_.fetch_add(1, std::memory_order_relaxed); }

    /// Prometheus text: refusals by reason (with `more` refusals counted elsewhere, e.g.
    /// by the reflector core, in the same family), open sockets, uploads, blob store bytes.
    std::string render(std::vector<std::pair<std::string, std::uint64_t>> const& more = {}) const;

    std::uint64_t open_sockets() const noexcept { return open_.load(); }
    /// PUT /files requests between their body's first byte and their answer.
    std::uint32_t uploads_in_progress() const noexcept { return uploads_.load(); }

private:
    friend class ticket;
    friend class upload_slot;
    void release(std::string const& ip) noexcept;

    settings s_;
    std::atomic<std::uint64_t> open_{0};
    std::atomic<std::uint32_t> uploads_{0};
    std::atomic<std::uint64_t> disk_used_{0};
    std::atomic<std::uint64_t> backoffs_{0};
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(reason::count_)> refusals_{};
    std::mutex mu_;
    std::unordered_map<std::string, std::uint32_t> per_ip_;
    struct bucket {
        double tokens = 0;
        std::chrono::steady_clock::time_point at;
    };
    std::unordered_map<std::string, bucket> buckets_;
};

}  // namespace lockstep::limits
