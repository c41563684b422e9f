// lockstep-bench: a load generator that speaks the reflector wire protocol
// (JOIN/SYNC/SEND/RECV/TICK) to any reflector URL, so the same tool measures lockstep
// and the reference reflector.
//
// Built for not being the bottleneck: epoll, non-blocking sockets, no JSON library on
// the receive path (RECV frames are scanned for seq and payload only), masked frames
// with a zero mask key (legal, and no XOR pass), one thread by default.
//
// Every client JOINs its session, then sends one SEND per 1/rate seconds with a payload
// carrying its id and send time; its own echo gives the latency. Every RECV's seq is
// checked against the previous one (gaps), TICK arrivals against the requested interval.
// The last line of output is one JSON object.
#include "common/options.hpp"
#include "protocol/ws_frame.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <queue>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

std::int64_t
now_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count();
}

struct options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 9090;
    std::string path_prefix = "/";   // from --url: ws://host:port/prefix
    int sessions = 10;
    int clients = 100;               // total, spread evenly over sessions
    double rate = 1.0;               // SENDs per second per client
    double seconds = 10;             // measured time
    double warmup = 2;               // after all joined, before measuring
    int payload = 120;               // bytes of the SEND payload string
    int tps = 20;                    // ticks per second requested in JOIN
    int threads = 1;
    std::string run_id;              // session name prefix (fresh sessions per run)
    double join_timeout = 30;
    bool quick_acks = false;         // else TCP_QUICKACK=0 after each read (see --help)
    bool busy_poll = false;          // poll epoll without sleeping (see --help)
    int probe_sockets = 0;           // --loopback-probe N: measure the kernel, not a reflector
    int probe_cpu = 0;
};

/// Every option of the load generator, once (flag, environment LOCKSTEP_BENCH_<NAME>,
/// --config key, --help, docs/operations.md table).
void
define(lockstep::cli::options& cli, options& o, std::string& url)
{
    cli.app().footer(R"(
Output: progress on stderr; the last line on stdout is one JSON object with joined,
errors, gaps, deliveries_per_s, sent_per_s, p50_ms, p99_ms, p999_ms, max_ms,
ticks_per_s, tick_late_p99_ms and the generator's own cpu_s.)");
    cli.group("Load");
    cli.add("--url", url, "reflector WebSocket URL, e.g. ws://127.0.0.1:9090/reflector",
            "The session id is appended as the last path segment");
    cli.add("--sessions", o.sessions, "number of sessions")->check(CLI::Range(1, 10000000));
    cli.add("--clients", o.clients, "total clients, spread evenly over the sessions")->check(CLI::Range(1, 10000000));
    cli.add("--rate", o.rate, "SENDs per second per client (0 = idle clients)")->check(CLI::Range(0.0, 1e9));
    cli.add("--seconds", o.seconds, "measured duration")->check(CLI::Range(0.0, 1e9));
    cli.add("--warmup", o.warmup, "time after all clients joined before measuring")->check(CLI::Range(0.0, 1e9));
    cli.add("--payload", o.payload, "bytes of each SEND payload (at least 40)")->check(CLI::Range(40, 1 << 24));
    cli.add("--tps", o.tps, "ticks per second requested in JOIN")->check(CLI::Range(1, 10000000));
    cli.add("--threads", o.threads, "generator threads")->check(CLI::Range(1, 10000000));
    cli.add("--run-id", o.run_id, "prefix of the session ids (default: random)");
    cli.add("--join-timeout", o.join_timeout, "give up joining after this many seconds");
    cli.group("Measurement");
    cli.add("--quick-acks", o.quick_acks,
            "let the kernel acknowledge every received segment at once",
            "Default: TCP_QUICKACK=0 after each read, so ACKs are delayed and the generator, which shares the "
            "machine, spends its core on reading rather than on ACK packets");
    cli.add("--busy-poll", o.busy_poll, "never sleep in epoll_wait",
            "The generator's own wake-up delay (ms on some VMs) stays out of the latencies it measures; empty "
            "polls count as idle in cpu_util");
    cli.add("--loopback-probe", o.probe_sockets,
            "no reflector: measure small loopback writes per second over N connections",
            "Opens N loopback TCP connections and measures how many small (30-byte) writes per second one "
            "thread pinned to --probe-cpu can make while this thread reads them: the ceiling any server on "
            "this machine meets when each frame is one write")
        ->type_name("N");
    cli.add("--probe-cpu", o.probe_cpu, "the writer's CPU for --loopback-probe");
}

/// Splits ws://host[:port][/prefix] into the options; false if it is not such a URL.
bool
set_url(std::string u, options& o)
{
    if (u.rfind("ws://", 0) != 0)
        return false;
    u = u.substr(5);
    auto slash = u.find('/');
    std::string hostport = u.substr(0, slash);
    o.path_prefix = slash == std::string::npos ? "/" : u.substr(slash);
    if (o.path_prefix.back() != '/')
        o.path_prefix += '/';
    auto colon = hostport.rfind(':');
    o.host = hostport.substr(0, colon);
    if (o.host.empty())
        return false;
    if (colon == std::string::npos) {
        o.port = 80;
        return true;
    }
    auto p = hostport.substr(colon + 1);
    unsigned v = 0;
    auto r = std::from_chars(p.data(), p.data() + p.size(), v);
    o.port = static_cast<std::uint16_t>(v);
    return r.ec == std::errc{} && r.ptr == p.data() + p.size() && v > 0 && v < 65536;
}

/// -1: go on; otherwise the exit status.
int
parse_args(int argc, char** argv, options& o)
{
    lockstep::cli::options cli("lockstep-bench", "lockstep-bench: load generator for Croquet/Multisynq-protocol reflectors",
                               "LOCKSTEP_BENCH_");
    std::string url = "ws://127.0.0.1:9090/";
    define(cli, o, url);
    if (int status = lockstep::cli::parse_or_exit_status(cli, argc, argv); status >= 0)
        return status;
    char const* error = nullptr;
    if (!set_url(url, o))
        error = "--url must look like ws://HOST[:PORT][/PREFIX]";
    else if (o.clients < o.sessions)
        error = "--clients must be at least --sessions";
    if (error) {
        std::fprintf(stderr, "lockstep-bench: %s (see --help)\n", error);
        return 2;
    }
    std::string printed;
    if (cli.finish(printed) == 0) {
        std::fputs(printed.c_str(), stdout);
        return 0;
    }
    return -1;
}

// Shared phase, set by the main thread.
enum phase : int { joining = 0, warming = 1, measuring = 2, done = 3 };
std::atomic<int> g_phase{joining};

struct client {
    int fd = -1;
    int index = 0;
    int session = 0;
    enum { connecting, upgrading, syncing, joined, dead } state = connecting;
    std::string in;
    std::string out;
    std::size_t out_off = 0;
    lockstep::protocol::chunk_assembler chunks;  // _CHUNK reassembly
    std::uint32_t last_seq = 0;
    bool have_seq = false;
    std::int64_t last_msg_ns = 0;  // last RECV or TICK arrival
    std::int64_t next_send_ns = 0;
    char id[12] = {};
    std::size_t id_len = 0;
    bool want_out = true;          // EPOLLOUT registered (only while output is pending)
};

struct thread_stats {
    std::uint64_t joined = 0, errors = 0, gaps = 0, deliveries = 0, sent = 0, ticks = 0;
    std::vector<std::uint32_t> latency_us;
    std::vector<std::uint32_t> tick_late_us;
    std::int64_t idle_ns = 0;  // empty polls while measuring (--busy-poll)
};

class worker {
public:
    worker(options const& o, int first, int count, std::string const& run_id)
        : o_(o), run_id_(run_id), clients_(static_cast<std::size_t>(count))
    {
        for (int i = 0; i < count; ++i) {
            auto& c = clients_[static_cast<std::size_t>(i)];
            c.index = first + i;
            c.session = c.index % o.sessions;
            c.id_len = static_cast<std::size_t>(std::snprintf(c.id, sizeof c.id, "c%d", c.index));
        }
        stats_.latency_us.reserve(1 << 20);
        padding_.assign(static_cast<std::size_t>(o.payload), 'x');
    }

    void
    run()
    {
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        resolve();
        for (auto& c : clients_)
            start(c);
        std::vector<epoll_event> events(1024);
        while (g_phase.load(std::memory_order_relaxed) != done) {
            auto now = now_ns();
            send_due(now);
            int timeout_ms = o_.busy_poll ? 0 : 1;
            int n = epoll_wait(ep_, events.data(), static_cast<int>(events.size()), timeout_ms);
            if (n == 0 && o_.busy_poll && g_phase.load(std::memory_order_relaxed) == measuring)
                stats_.idle_ns += now_ns() - now;
            for (int i = 0; i < n; ++i) {
                auto& c = clients_[events[static_cast<std::size_t>(i)].data.u32];
                if (events[static_cast<std::size_t>(i)].events & (EPOLLERR | EPOLLHUP)) {
                    fail(c);
                    continue;
                }
                if (events[static_cast<std::size_t>(i)].events & EPOLLOUT)
                    on_writable(c);
                if (events[static_cast<std::size_t>(i)].events & EPOLLIN)
                    on_readable(c);
            }
        }
        for (auto& c : clients_)
            if (c.fd >= 0)
                ::close(c.fd);
        ::close(ep_);
    }

    thread_stats stats_;
    std::atomic<int> joined_count{0};

private:
    void
    resolve()
    {
        addrinfo hints{};
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        if (getaddrinfo(o_.host.c_str(), nullptr, &hints, &res) != 0 || !res) {
            std::fprintf(stderr, "cannot resolve %s\n", o_.host.c_str());
            std::exit(1);
        }
        addr_ = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
        addr_.sin_port = htons(o_.port);
        freeaddrinfo(res);
    }

    void
    start(client& c)
    {
        c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int r = ::connect(c.fd, reinterpret_cast<sockaddr*>(&addr_), sizeof addr_);
        if (r != 0 && errno != EINPROGRESS) {
            fail(c);
            return;
        }
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
        ev.data.u32 = static_cast<std::uint32_t>(&c - clients_.data());
        epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
        c.state = client::upgrading;
        std::string path = o_.path_prefix + session_id(c.session);
        c.out = "GET " + path + " HTTP/1.1\r\nHost: " + o_.host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
                "Sec-WebSocket-Key: bG9ja3N0ZXBiZW5jaDEyMw==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    }

    std::string
    session_id(int s) const
    {
        return run_id_ + "-s" + std::to_string(s);
    }

    void
    fail(client& c)
    {
        if (c.state == client::dead)
            return;
        if (g_phase.load() != done)
            ++stats_.errors;
        if (c.state == client::joined)
            joined_count.fetch_sub(1);
        c.state = client::dead;
        if (c.fd >= 0) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
            ::close(c.fd);
            c.fd = -1;
        }
    }

    void
    queue_frame(client& c, std::string_view payload)
    {
        // Masked (clients must mask) with a zero key: the payload goes out as is.
        std::size_t n = payload.size();
        char h[14];
        std::size_t hl = 0;
        h[hl++] = static_cast<char>(0x81);
        if (n < 126) {
            h[hl++] = static_cast<char>(0x80 | n);
        } else if (n <= 0xFFFF) {
            h[hl++] = static_cast<char>(0x80 | 126);
            h[hl++] = static_cast<char>(n >> 8);
            h[hl++] = static_cast<char>(n & 0xFF);
        } else {
            h[hl++] = static_cast<char>(0x80 | 127);
            for (int i = 7; i >= 0; --i)
                h[hl++] = static_cast<char>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xFF);
        }
        std::memset(h + hl, 0, 4);
        hl += 4;
        if (c.out_off == c.out.size()) {
            c.out.clear();
            c.out_off = 0;
        }
        c.out.append(h, hl);
        c.out.append(payload);
        flush(c);
    }

    void
    flush(client& c)
    {
        while (c.out_off < c.out.size()) {
            auto n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    want_out(c, true);
                    return;
                }
                if (errno == ENOTCONN && c.state == client::upgrading)
                    return;  // still connecting: EPOLLOUT tells when
                fail(c);
                return;
            }
            c.out_off += static_cast<std::size_t>(n);
        }
        want_out(c, false);
    }

    // Level-triggered EPOLLOUT only while there is something to write, else epoll
    // would report every idle socket as writable on every wait.
    void
    want_out(client& c, bool on)
    {
        if (c.want_out == on || c.fd < 0)
            return;
        c.want_out = on;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0u);
        ev.data.u32 = static_cast<std::uint32_t>(&c - clients_.data());
        epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    }

    void
    on_writable(client& c)
    {
        if (c.fd < 0)
            return;
        flush(c);
    }

    void
    on_readable(client& c)
    {
        char buf[65536];
        for (;;) {
            if (c.fd < 0)
                return;
            auto n = ::recv(c.fd, buf, sizeof buf, 0);
            if (n == 0) {
                fail(c);
                return;
            }
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    fail(c);
                break;
            }
            c.in.append(buf, static_cast<std::size_t>(n));
            if (static_cast<std::size_t>(n) < sizeof buf)
                break;
        }
        if (!o_.quick_acks && c.fd >= 0) {
            int zero = 0;
            ::setsockopt(c.fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof zero);
        }
        process_input(c);
    }

    void
    process_input(client& c)
    {
        if (c.state == client::upgrading) {
            auto end = c.in.find("\r\n\r\n");
            if (end == std::string::npos)
                return;
            if (c.in.rfind("HTTP/1.1 101", 0) != 0) {
                fail(c);
                return;
            }
            c.in.erase(0, end + 4);
            c.state = client::syncing;
            std::string join = R"({"id":")" + session_id(c.session) +
                               R"(","action":"JOIN","args":{"name":"bench/)" + session_id(c.session) +
                               R"(","apiKey":"bench","appId":"bench","persistentId":"bench","version":1,"user":")" +
                               std::string(c.id, c.id_len) + R"(","ticks":{"tick":)" + std::to_string(1000 / o_.tps) +
                               R"(,"delay":0},"leaveDelay":1250}})";
            queue_frame(c, join);
        }
        std::size_t pos = 0;
        auto now = now_ns();
        while (c.fd >= 0) {
            lockstep::protocol::frame_view f;
            auto used = lockstep::protocol::parse_frame(std::string_view(c.in).substr(pos), f);
            if (!used)
                break;
            int opcode = f.opcode;
            std::string_view payload = f.payload;  // server frames are not masked
            pos += used;
            if (opcode == 0x9) {
                // ping -> pong (with zero mask)
                std::string pong;
                pong.push_back(static_cast<char>(0x8A));
                pong.push_back(static_cast<char>(0x80 | payload.size()));
                pong.append(4, '\0');
                pong.append(payload);
                c.out.append(pong);
                flush(c);
                continue;
            }
            if (opcode == 0x8) {
                fail(c);
                return;
            }
            if (opcode != 0x1)
                continue;
            on_message(c, payload, now);
        }
        c.in.erase(0, pos);
    }

    static bool
    parse_uint(std::string_view s, std::size_t& p, std::uint64_t& v)
    {
        auto r = std::from_chars(s.data() + p, s.data() + s.size(), v);
        if (r.ec != std::errc{})
            return false;
        p = static_cast<std::size_t>(r.ptr - s.data());
        return true;
    }

    void
    on_message(client& c, std::string_view m, std::int64_t now)
    {
        if (m.rfind("_CHUNK", 0) == 0) {
            std::string_view whole;
            if (c.chunks.feed(m, whole) != lockstep::protocol::chunk_assembler::status::complete)
                return;
            std::string copy(whole);  // the assembler's buffer is reused by the next feed
            on_message(c, copy, now);
            return;
        }
        auto a = m.find(R"("action":")");
        if (a == std::string_view::npos)
            return;
        auto act = m.substr(a + 10, 4);
        if (act == "RECV") {
            on_recv(c, m, now);
        } else if (act == "TICK") {
            if (g_phase.load(std::memory_order_relaxed) == measuring) {
                ++stats_.ticks;
                if (c.last_msg_ns) {
                    double gap_ms = static_cast<double>(now - c.last_msg_ns) / 1e6;
                    double late = std::max(0.0, gap_ms - 1000.0 / o_.tps);
                    stats_.tick_late_us.push_back(static_cast<std::uint32_t>(late * 1000));
                }
            }
            c.last_msg_ns = now;
        } else if (act == "SYNC" && c.state == client::syncing) {
            // "seq":N in the SYNC: the next RECV must be N+1.
            auto s = m.rfind(R"("seq":)");
            std::uint64_t seq = 0;
            std::size_t p = s + 6;
            if (s != std::string_view::npos && parse_uint(m, p, seq)) {
                c.last_seq = static_cast<std::uint32_t>(seq);
                c.have_seq = true;
            }
            c.state = client::joined;
            ++stats_.joined;
            joined_count.fetch_add(1);
            c.last_msg_ns = now;
            if (o_.rate > 0) {
                // Random phase so sends spread evenly over time.
                static thread_local std::mt19937_64 rng{std::random_device{}()};
                auto period = static_cast<std::int64_t>(1e9 / o_.rate);
                c.next_send_ns = now + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(period));
                sends_.push({c.next_send_ns, static_cast<std::uint32_t>(&c - clients_.data())});
            }
        }
    }

    void
    on_recv(client& c, std::string_view m, std::int64_t now)
    {
        c.last_msg_ns = now;
        auto a = m.find(R"("args":[)");
        if (a == std::string_view::npos)
            return;
        std::size_t p = a + 8;
        std::uint64_t t = 0, seq = 0;
        if (!parse_uint(m, p, t) || p >= m.size() || m[p] != ',')
            return;
        ++p;
        if (!parse_uint(m, p, seq))
            return;
        auto s = static_cast<std::uint32_t>(seq);
        bool measuring_now = g_phase.load(std::memory_order_relaxed) == measuring;
        if (c.have_seq && s != static_cast<std::uint32_t>(c.last_seq + 1))
            ++stats_.gaps;
        c.last_seq = s;
        c.have_seq = true;
        if (measuring_now)
            ++stats_.deliveries;
        // Own echo: payload starts with "<id>:<send ns>:"
        if (p + 2 + c.id_len < m.size() && m[p] == ',' && m[p + 1] == '"' &&
            m.compare(p + 2, c.id_len, std::string_view(c.id, c.id_len)) == 0 && m[p + 2 + c.id_len] == ':') {
            std::size_t q = p + 3 + c.id_len;
            std::uint64_t sent = 0;
            if (parse_uint(m, q, sent) && measuring_now) {
                auto us = (now - static_cast<std::int64_t>(sent)) / 1000;
                stats_.latency_us.push_back(static_cast<std::uint32_t>(std::max<std::int64_t>(0, us)));
            }
        }
    }

    void
    send_due(std::int64_t now)
    {
        auto period = static_cast<std::int64_t>(o_.rate > 0 ? 1e9 / o_.rate : 0);
        int ph = g_phase.load(std::memory_order_relaxed);
        while (!sends_.empty() && sends_.top().first <= now) {
            auto [due, idx] = sends_.top();
            sends_.pop();
            auto& c = clients_[idx];
            if (c.state != client::joined)
                continue;
            if (ph == warming || ph == measuring) {
                // {"id":"..","action":"SEND","args":[0,0,"<id>:<ns>:xxxx",0]}
                std::string& f = scratch_;
                f.assign(R"({"action":"SEND","args":[0,0,")");
                std::size_t start = f.size();
                f.append(c.id, c.id_len);
                f.push_back(':');
                char num[24];
                auto r = std::to_chars(num, num + sizeof num, now);
                f.append(num, r.ptr);
                f.push_back(':');
                std::size_t used = f.size() - start;
                if (used < static_cast<std::size_t>(o_.payload))
                    f.append(padding_.data(), static_cast<std::size_t>(o_.payload) - used);
                f.append(R"(",0]})");
                queue_frame(c, f);
                if (ph == measuring)
                    ++stats_.sent;
            }
            // Next send on the fixed schedule (no catch-up bursts if we fell behind).
            c.next_send_ns = std::max(due + period, now);
            sends_.push({c.next_send_ns, idx});
        }
    }

    options const& o_;
    std::string run_id_;
    std::vector<client> clients_;
    int ep_ = -1;
    sockaddr_in addr_{};
    using entry = std::pair<std::int64_t, std::uint32_t>;
    std::priority_queue<entry, std::vector<entry>, std::greater<>> sends_;
    std::string scratch_;
    std::string padding_;
};

double
percentile_ms(std::vector<std::uint32_t>& v, double q)
{
    if (v.empty())
        return 0;
    auto k = static_cast<std::size_t>(std::min<double>(static_cast<double>(v.size() - 1), std::floor(q * static_cast<double>(v.size()))));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k] / 1000.0;
}

/// CPU seconds (user + system) of the process, or of the calling thread (RUSAGE_THREAD).
double
cpu_seconds(int who = RUSAGE_SELF)
{
    rusage ru{};
    getrusage(who, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/// --loopback-probe: the machine's cost of one small TCP write over loopback, where the
/// sender's core also runs the receiving side's TCP processing. Prints one JSON line.
int
loopback_probe(options const& o)
{
    int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (ls < 0 || ::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(ls, 4096) != 0 ||
        ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        std::fprintf(stderr, "loopback probe: cannot listen: %s\n", std::strerror(errno));
        return 1;
    }
    std::vector<int> wr, rd;
    int one = 1;
    for (int i = 0; i < o.probe_sockets; ++i) {
        int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            std::fprintf(stderr, "loopback probe: connect %d: %s\n", i, std::strerror(errno));
            return 1;
        }
        int s = ::accept4(ls, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ::fcntl(c, F_SETFL, O_NONBLOCK);
        wr.push_back(s);
        rd.push_back(c);
    }
    std::atomic<bool> stop{false};
    std::uint64_t writes = 0;
    double busy_s = 0, wall_s = 0;
    std::thread writer([&] {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(o.probe_cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
        char frame[30];
        std::memset(frame, 'x', sizeof frame);
        double cpu0 = cpu_seconds(RUSAGE_THREAD);
        auto t0 = std::chrono::steady_clock::now();
        while (!stop.load(std::memory_order_relaxed))
            for (int fd : wr)
                if (::send(fd, frame, sizeof frame, MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
                    ++writes;
        wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        busy_s = cpu_seconds(RUSAGE_THREAD) - cpu0;
    });
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (std::size_t i = 0; i < rd.size(); ++i) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u32 = static_cast<std::uint32_t>(i);
        epoll_ctl(ep, EPOLL_CTL_ADD, rd[i], &ev);
    }
    std::vector<epoll_event> evs(1024);
    char buf[65536];
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.seconds);
    while (std::chrono::steady_clock::now() < end) {
        int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 10);
        for (int i = 0; i < n; ++i)
            while (::recv(rd[evs[static_cast<std::size_t>(i)].data.u32], buf, sizeof buf, 0) > 0) {
            }
    }
    stop = true;
    writer.join();
    for (int fd : wr)
        ::close(fd);
    for (int fd : rd)
        ::close(fd);
    ::close(ep);
    ::close(ls);
    double per_s = static_cast<double>(writes) / std::max(1e-9, wall_s);
    std::printf("{\"probe\":\"loopback\",\"sockets\":%d,\"bytes_per_write\":30,\"seconds\":%.2f,"
                "\"writes_per_s\":%.0f,\"writer_cpu_util\":%.2f,\"us_per_write\":%.2f}\n",
                o.probe_sockets, wall_s, per_s, busy_s / std::max(1e-9, wall_s),
                writes ? busy_s * 1e6 / static_cast<double>(writes) : 0.0);
    return 0;
}

}  // namespace

int
main(int argc, char** argv)
{
    options o;
    if (int status = parse_args(argc, argv, o); status >= 0)
        return status;
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < static_cast<rlim_t>(std::max(o.clients, 2 * o.probe_sockets) + 64)) {
        rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, static_cast<rlim_t>(std::max(o.clients, 2 * o.probe_sockets) + 1024));
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (o.probe_sockets > 0)
        return loopback_probe(o);
    if (o.run_id.empty())
        o.run_id = "bench" + std::to_string(std::random_device{}() % 1000000);

    std::vector<std::unique_ptr<worker>> workers;
    int per = o.clients / o.threads, extra = o.clients % o.threads, first = 0;
    for (int t = 0; t < o.threads; ++t) {
        int n = per + (t < extra ? 1 : 0);
        workers.push_back(std::make_unique<worker>(o, first, n, o.run_id));
        first += n;
    }
    std::vector<std::thread> threads;
    for (auto& w : workers)
        threads.emplace_back([&w] { w->run(); });

    auto joined = [&] {
        int n = 0;
        for (auto& w : workers)
            n += w->joined_count.load();
        return n;
    };
    auto t0 = clock_type::now();
    while (joined() < o.clients &&
           clock_type::now() - t0 < std::chrono::duration<double>(o.join_timeout))
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // join_s to the ms
    double join_s = std::chrono::duration<double>(clock_type::now() - t0).count();
    std::fprintf(stderr, "joined %d/%d clients in %.2f s\n", joined(), o.clients, join_s);
    g_phase = warming;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup));
    double cpu0 = cpu_seconds();
    g_phase = measuring;
    auto m0 = clock_type::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    g_phase = done;
    double elapsed = std::chrono::duration<double>(clock_type::now() - m0).count();
    for (auto& t : threads)
        t.join();
    double cpu = cpu_seconds() - cpu0;

    thread_stats all;
    for (auto& w : workers) {
        auto& s = w->stats_;
        all.joined += s.joined;
        all.errors += s.errors;
        all.gaps += s.gaps;
        all.deliveries += s.deliveries;
        all.sent += s.sent;
        all.ticks += s.ticks;
        all.idle_ns += s.idle_ns;
        all.latency_us.insert(all.latency_us.end(), s.latency_us.begin(), s.latency_us.end());
        all.tick_late_us.insert(all.tick_late_us.end(), s.tick_late_us.begin(), s.tick_late_us.end());
    }
    cpu = std::max(0.0, cpu - static_cast<double>(all.idle_ns) / 1e9);  // --busy-poll: empty polls are idle
    if (all.joined < static_cast<std::uint64_t>(o.clients))
        all.errors += static_cast<std::uint64_t>(o.clients) - all.joined;
    double max_ms = all.latency_us.empty() ? 0 : *std::max_element(all.latency_us.begin(), all.latency_us.end()) / 1000.0;
    std::printf(
        "{\"sessions\":%d,\"clients\":%d,\"rate\":%g,\"payload\":%d,\"tps\":%d,\"seconds\":%.2f,"
        "\"joined\":%llu,\"join_s\":%.3f,\"errors\":%llu,\"gaps\":%llu,\"deliveries_per_s\":%.0f,\"sent_per_s\":%.0f,"
        "\"offered_per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"ticks_per_s\":%.0f,"
        "\"tick_late_p99_ms\":%.3f,\"latency_samples\":%zu,\"cpu_s\":%.2f,\"cpu_util\":%.2f}\n",
        o.sessions, o.clients, o.rate, o.payload, o.tps, elapsed, static_cast<unsigned long long>(all.joined), join_s,
        static_cast<unsigned long long>(all.errors), static_cast<unsigned long long>(all.gaps),
        static_cast<double>(all.deliveries) / elapsed, static_cast<double>(all.sent) / elapsed, o.clients * o.rate,
        percentile_ms(all.latency_us, 0.5), percentile_ms(all.latency_us, 0.99), percentile_ms(all.latency_us, 0.999),
        max_ms, static_cast<double>(all.ticks) / elapsed, percentile_ms(all.tick_late_us, 0.99), all.latency_us.size(), cpu,
        cpu / elapsed);
    return all.errors == 0 ? 0 : 1;
}
