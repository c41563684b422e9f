// Durable sessions (docs/durability.md): a real lockstep-reflector process is killed
// with SIGKILL or stopped with SIGTERM and started again on the same port and data
// dir; the session comes back with the same timeline, every event any client saw, a
// continuing seq and a session time no earlier than any client saw. Also: a session
// outlives its last client in the journal, and --journal none keeps the old behaviour.
#include "support/net_util.hpp"
#include "support/ws_client.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using lockstep::test::free_port;
using lockstep::test::http_request;
using lockstep::test::ws_client;

namespace {

/// A lockstep-reflector process with its own data dir; killed and removed at the end.
class reflector_process {
public:
    explicit reflector_process(std::vector<std::string> more = {}, rlim_t file_size_limit = RLIM_INFINITY)
        : port_(free_port()), more_(std::move(more)), fsize_(file_size_limit)
    {
        static int n = 0;
        dir_ = fs::temp_directory_path() / ("lockstep-durable-" + std::to_string(::getpid()) + "-" + std::to_string(++n));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        start();
    }
    ~reflector_process()
    {
        signal_and_wait(SIGKILL);
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    void
    start()
    {
        std::vector<std::string> argv = {LOCKSTEP_REFLECTOR_BIN, "--bind", "127.0.0.1", "--port", std::to_string(port_),
                                         "--data-dir", (dir_ / "data").string(), "--threads", "2",
                                         "--drain-timeout-ms", "2000"};
        argv.insert(argv.end(), more_.begin(), more_.end());
        ++starts_;
        pid_ = ::fork();
        if (pid_ == 0) {
            auto log = (dir_ / ("reflector-" + std::to_string(starts_) + ".log")).string();
            int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            if (fsize_ != RLIM_INFINITY) {
                // A file-size limit stands in for a full disk: writes past it fail (EFBIG).
                ::signal(SIGXFSZ, SIG_IGN);
                rlimit r{};
                ::getrlimit(RLIMIT_FSIZE, &r);
                r.rlim_cur = fsize_;  // the hard limit stays: the test can lift this one again
                ::setrlimit(RLIMIT_FSIZE, &r);
            }
            std::vector<char*> args;
            for (auto& a : argv)
                args.push_back(a.data());
            args.push_back(nullptr);
            ::execv(args[0], args.data());
            ::_exit(127);
        }
        for (int i = 0; i < 200; ++i) {  // bounded: 10 s
            try {
                if (http_request(port_, "GET", "/health/ready").status == 200)
                    return;
            } catch (std::exception const&) {
                // not listening yet
            }
            std::this_thread::sleep_for(50ms);
        }
        ADD_FAILURE() << "reflector did not become ready";
    }
    /// Sends `sig` and waits (bounded) for the process to exit; true if it did.
    bool
    signal_and_wait(int sig, std::chrono::milliseconds timeout = 10s)
    {
        if (pid_ <= 0)
            return true;
        ::kill(pid_, sig);
        auto deadline = std::chrono::steady_clock::now() + timeout;
        int st = 0;
        while (std::chrono::steady_clock::now() < deadline) {
            if (::waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                return true;
            }
            std::this_thread::sleep_for(20ms);
        }
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
        return false;
    }
    bool
    running() const
    {
        return pid_ > 0 && ::kill(pid_, 0) == 0;
    }
    std::uint16_t port() const { return port_; }
    pid_t pid() const { return pid_; }
    /// Later starts run without the file-size limit.
    void lift_file_size_limit() { fsize_ = RLIM_INFINITY; }
    fs::path data() const { return dir_ / "data"; }
    std::string
    log() const
    {
        std::ifstream in(dir_ / ("reflector-" + std::to_string(starts_) + ".log"));
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    double
    metric(std::string const& name) const
    {
        auto body = http_request(port_, "GET", "/metrics").body;
        auto at = body.find("\n" + name + " ");
        return at == std::string::npos ? -1 : std::stod(body.substr(at + name.size() + 2));
    }

private:
    std::uint16_t port_;
    std::vector<std::string> more_;
    rlim_t fsize_;
    fs::path dir_;
    pid_t pid_ = -1;
    int starts_ = 0;
};

json
join_msg(std::string const& user)
{
    return {{"id", "x"},
            {"action", "JOIN"},
            {"args",
             {{"name", "it/durable"},
              {"apiKey", "none"},
              {"appId", "it"},
              {"persistentId", "pid"},
              {"version", 1},
              {"user", user},
              {"ticks", {{"tick", 50}, {"delay", 0}}},
              {"tove", "tv"},
              {"leaveDelay", 0}}}};
}

json
send_msg(std::string const& payload)
{
    return {{"id", "x"}, {"action", "SEND"}, {"args", {0, 0, payload, 5}}};
}

/// What one client saw of a session.
struct seen {
    std::string timeline;
    std::vector<json> recvs;   // RECV args, in order
    std::int64_t last_time = -1;
    std::uint32_t last_seq = 0;
};

/// Reads frames until `done` or the timeout, recording RECVs and times.
void
watch(ws_client& c, seen& s, std::function<bool()> const& done, std::chrono::milliseconds timeout = 5s)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        auto m = c.recv(200ms);
        if (!m)
            continue;
        auto a = m->value("action", "");
        if (a == "RECV") {
            s.recvs.push_back((*m)["args"]);
            s.last_seq = (*m)["args"][1].get<std::uint32_t>();
            s.last_time = std::max(s.last_time, (*m)["args"][0].get<std::int64_t>());
        } else if (a == "TICK") {
            s.last_time = std::max(s.last_time, (*m)["args"].get<std::int64_t>());
        } else if (a == "SYNC") {
            s.timeline = (*m)["args"]["timeline"];
            s.last_time = std::max(s.last_time, (*m)["args"]["time"].get<std::int64_t>());
        }
    }
}

std::size_t
payloads(seen const& s, std::string const& prefix)
{
    std::size_t n = 0;
    for (auto const& r : s.recvs)
        if (r[2].is_string() && r[2].get<std::string>().rfind(prefix, 0) == 0)
            ++n;
    return n;
}

/// Joins, sends `n` events and waits until all came back (and a few ticks).
seen
play(std::uint16_t port, std::string const& session, int n)
{
    ws_client c(port, "/" + session);
    c.send_json(join_msg("alice"));
    seen s;
    watch(c, s, [&] { return !s.timeline.empty(); });
    for (int i = 0; i < n; ++i)
        c.send_json(send_msg("inc" + std::to_string(i)));
    watch(c, s, [&] { return payloads(s, "inc") == static_cast<std::size_t>(n); });
    auto ticks_from = s.last_time;
    watch(c, s, [&] { return s.last_time >= ticks_from + 200; });  // ticks seen after the last event
    return s;
}

/// After the restart: the session as the reconnecting client gets it.
void
expect_resumed(std::uint16_t port, std::string const& session, seen const& before)
{
    ws_client c(port, "/" + session);
    c.send_json(join_msg("alice"));
    auto sync = c.recv_action("SYNC", 5s);
    ASSERT_TRUE(sync);
    auto const& a = (*sync)["args"];
    EXPECT_EQ(a["timeline"], before.timeline);
    EXPECT_EQ(a["seq"].get<std::uint32_t>(), before.last_seq);
    // Seamless rejoin needs time >= the last time seen; the downtime is not added.
    EXPECT_GE(a["time"].get<std::int64_t>(), before.last_time);
    EXPECT_LT(a["time"].get<std::int64_t>(), before.last_time + 5000);
    ASSERT_EQ(a["messages"].size(), before.recvs.size());
    for (std::size_t i = 0; i < before.recvs.size(); ++i)
        EXPECT_EQ(a["messages"][i], before.recvs[i]) << i;
    // The seq continues.
    c.send_json(send_msg("after"));
    auto r = c.recv_action("RECV", 3s);
    for (int i = 0; r && (*r)["args"][2].is_object() && i < 5; ++i)  // skip the users event
        r = c.recv_action("RECV", 3s);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["args"][2], "after");
    EXPECT_GT((*r)["args"][1].get<std::uint32_t>() - before.last_seq, 0u);
    EXPECT_LE((*r)["args"][1].get<std::uint32_t>() - before.last_seq, 2u);  // at most the users event between
    EXPECT_GE((*r)["args"][0].get<std::int64_t>(), before.last_time);
}

}  // namespace

TEST(durability, sigkill_restart_resumes_every_session_a_client_saw)
{
    reflector_process r;
    auto a = play(r.port(), "killA", 30);
    auto b = play(r.port(), "killB", 5);
    ASSERT_EQ(payloads(a, "inc"), 30u);
    ASSERT_TRUE(r.signal_and_wait(SIGKILL));
    r.start();
    expect_resumed(r.port(), "killA", a);
    expect_resumed(r.port(), "killB", b);
    EXPECT_EQ(r.metric("lockstep_sessions_resumed_total"), 2);
    EXPECT_GT(r.metric("lockstep_journal_bytes_total"), 0);
}

// Resume reads the journal on the disk pool while the JOINs wait: two JOINs racing for a
// stored session (the second arrives while the first one's read is under way) get one
// session, resumed once, with the stored timeline and log.
TEST(durability, racing_joins_for_a_stored_session_get_one_resumed_session)
{
    reflector_process r;
    auto a = play(r.port(), "raceA", 60);
    ASSERT_EQ(payloads(a, "inc"), 60u);
    ASSERT_TRUE(r.signal_and_wait(SIGKILL));
    r.start();
    ws_client c1(r.port(), "/raceA");
    ws_client c2(r.port(), "/raceA");
    c1.send_json(join_msg("alice"));
    c2.send_json(join_msg("bob"));
    auto s1 = c1.recv_action("SYNC", 5s);
    auto s2 = c2.recv_action("SYNC", 5s);
    ASSERT_TRUE(s1);
    ASSERT_TRUE(s2);
    EXPECT_EQ((*s1)["args"]["timeline"], a.timeline);
    EXPECT_EQ((*s2)["args"]["timeline"], a.timeline);
    ASSERT_GE((*s1)["args"]["messages"].size(), a.recvs.size());
    for (std::size_t i = 0; i < a.recvs.size(); ++i)
        EXPECT_EQ((*s1)["args"]["messages"][i], a.recvs[i]) << i;
    EXPECT_EQ(r.metric("lockstep_sessions_resumed_total"), 1);
    EXPECT_EQ(r.metric("lockstep_sessions"), 1);
}

TEST(durability, sigterm_drain_writes_everything_and_the_restart_continues)
{
    reflector_process r({"--journal-fsync-ms", "1000"});
    auto a = play(r.port(), "termA", 20);
    ws_client watcher(r.port(), "/termA");
    watcher.send_json(join_msg("bob"));
    ASSERT_TRUE(watcher.recv_action("SYNC"));
    ASSERT_TRUE(r.signal_and_wait(SIGTERM, 10s));
    EXPECT_EQ(watcher.wait_close(3s), 1001);  // asked to reconnect
    r.start();
    // bob's join is in the log too (users event): resume shows at least alice's view.
    ws_client c(r.port(), "/termA");
    c.send_json(join_msg("alice"));
    auto sync = c.recv_action("SYNC", 5s);
    ASSERT_TRUE(sync);
    auto const& args = (*sync)["args"];
    EXPECT_EQ(args["timeline"], a.timeline);
    ASSERT_GE(args["messages"].size(), a.recvs.size());
    for (std::size_t i = 0; i < a.recvs.size(); ++i)
        EXPECT_EQ(args["messages"][i], a.recvs[i]) << i;
    EXPECT_GE(args["time"].get<std::int64_t>(), a.last_time);
}

TEST(durability, a_drain_keeps_what_a_client_sent_before_it_read_the_close)
{
    // The drain asks the client to reconnect (1001), and what it sent after that close
    // frame left but before it read it still goes into the session and its journal: the
    // reflector reads on until the client's close reply, then exits.
    reflector_process r;
    ws_client c(r.port(), "/termLate");
    c.send_json(join_msg("alice"));
    ASSERT_TRUE(c.recv_action("SYNC"));
    c.send_json(send_msg("before"));
    ASSERT_TRUE(c.recv_action("RECV"));
    ::kill(r.pid(), SIGTERM);
    std::this_thread::sleep_for(300ms);  // the close frame is on its way; not read yet
    constexpr int late = 20;
    for (int i = 0; i < late; ++i)
        c.send_json(send_msg("late-" + std::to_string(100 + i)));
    EXPECT_EQ(c.wait_close(3s), 1001);
    auto rest = c.rest_after_close();
    ASSERT_TRUE(rest) << "the reflector did not end the connection after the close handshake";
    EXPECT_EQ(rest->size(), 0u) << "bytes after the close frame";
    ASSERT_TRUE(r.signal_and_wait(0, 5s)) << "the drain did not end once its client left";
    r.start();
    ws_client c2(r.port(), "/termLate");
    c2.send_json(join_msg("bob"));
    auto sync = c2.recv_action("SYNC", 5s);
    ASSERT_TRUE(sync);
    auto const messages = (*sync)["args"]["messages"].dump();
    EXPECT_NE(messages.find("before"), std::string::npos);
    int missing = 0;
    for (int i = 0; i < late; ++i)
        missing += messages.find("late-" + std::to_string(100 + i)) == std::string::npos;
    EXPECT_EQ(missing, 0) << "of " << late << " frames sent before the close was read";
}

TEST(durability, a_session_outlives_its_last_client_and_lists_as_stored)
{
    reflector_process r({"--session-linger-ms", "300"});
    auto a = play(r.port(), "lingerA", 10);
    // The client is gone (ws_client closed in play); past the linger time the session
    // is out of memory.
    std::string state;
    for (int i = 0; i < 100 && state != "stored"; ++i) {  // bounded: 5 s
        std::this_thread::sleep_for(50ms);
        auto list = json::parse(http_request(r.port(), "GET", "/sessions").body, nullptr, false);
        for (auto const& e : list)
            if (e.value("id", "") == "lingerA")
                state = e.value("state", "");
    }
    EXPECT_EQ(state, "stored");
    EXPECT_EQ(r.metric("lockstep_sessions"), 0);
    expect_resumed(r.port(), "lingerA", a);
    EXPECT_EQ(r.metric("lockstep_sessions_resumed_total"), 1);
}

TEST(durability, a_torn_journal_tail_is_dropped_and_the_rest_resumes)
{
    reflector_process r;
    auto a = play(r.port(), "tornA", 8);
    ASSERT_TRUE(r.signal_and_wait(SIGKILL));
    // An entry cut short at the end of a write-ahead log (as a machine crash in the
    // middle of a write leaves it); the segment files may not have caught up yet.
    fs::path wal;
    for (auto const& e : fs::directory_iterator(r.data() / "journal" / ".wal"))
        if (e.path().extension() == ".lsw" && fs::file_size(e.path()) > 16)
            wal = e.path();
    ASSERT_FALSE(wal.empty());
    {
        std::ofstream out(wal, std::ios::binary | std::ios::app);
        out << std::string("\x40\x00\x00\x00\x12\x34", 6);
    }
    r.start();
    // Start-up replayed the log into the session journals, without the torn entry.
    EXPECT_NE(r.log().find("dropped 6 bytes"), std::string::npos) << r.log();
    expect_resumed(r.port(), "tornA", a);
    EXPECT_EQ(r.metric("lockstep_journal_tails_dropped_total"), 1);
}

TEST(durability, journal_none_keeps_sessions_in_memory_only)
{
    reflector_process r({"--journal", "none"});
    auto a = play(r.port(), "noneA", 3);
    ASSERT_TRUE(r.signal_and_wait(SIGKILL));
    r.start();
    ws_client c(r.port(), "/noneA");
    c.send_json(join_msg("alice"));
    auto sync = c.recv_action("SYNC", 5s);
    ASSERT_TRUE(sync);
    EXPECT_NE((*sync)["args"]["timeline"], a.timeline);
    EXPECT_EQ((*sync)["args"]["messages"].size(), 0u);
    EXPECT_FALSE(fs::exists(r.data() / "journal"));
}

TEST(durability, a_full_disk_closes_that_sessions_clients_and_loses_nothing_accepted)
{
    // Files may grow to 256 KiB: the first session's records fill the worker's write-ahead
    // log (one worker: both sessions write through it).
    reflector_process r({"--session-linger-ms", "300", "--threads", "1"}, 256 * 1024);
    auto b = play(r.port(), "fullB", 5);
    ASSERT_EQ(payloads(b, "inc"), 5u);

    ws_client a(r.port(), "/fullA");
    a.send_json(join_msg("alice"));
    seen sa;
    watch(a, sa, [&] { return !sa.timeline.empty(); });
    std::string big(2000, 'x');
    for (int i = 0; i < 200; ++i)
        a.send_json(send_msg("big" + std::to_string(i) + big));
    watch(a, sa, [&] { return a.closed(); }, 10s);
    EXPECT_EQ(a.close_code(), 1013);
    auto shown = payloads(sa, "big");
    EXPECT_GT(shown, 0u);
    EXPECT_LT(shown, 200u);  // what did not fit was never shown
    EXPECT_TRUE(r.running());
    EXPECT_GT(r.metric("lockstep_journal_write_errors_total"), 0);
    EXPECT_NE(r.log().find("cannot write 1 session(s) (first: fullA)"), std::string::npos) << r.log();

    // One write per turn holds every session's records: while the disk is full, another
    // session with new records (a resume writes its state) is refused the same way, and
    // the reflector keeps running.
    {
        ws_client other(r.port(), "/fullB");
        other.send_json(join_msg("bob"));
        seen so;
        // Its SYNC may go out (it shows nothing the journal lacks), its next event not.
        watch(other, so, [&] { return !so.timeline.empty() || other.closed(); });
        other.send_json(send_msg("refused"));
        watch(other, so, [&] { return other.closed(); }, 10s);
        EXPECT_EQ(other.close_code(), 1013) << r.log();
        EXPECT_EQ(payloads(so, "refused"), 0u);
    }
    EXPECT_TRUE(r.running());

    // While the disk is full the session is not shown to anyone.
    {
        ws_client again(r.port(), "/fullA");
        again.send_json(join_msg("alice"));
        EXPECT_FALSE(again.recv_action("SYNC", 1s));
        EXPECT_EQ(again.wait_close(3s), 1013);
    }
    // Space again: everything it accepted was kept and comes back, also after a crash.
    rlimit limit{};
    ASSERT_EQ(::prlimit(r.pid(), RLIMIT_FSIZE, nullptr, &limit), 0);
    limit.rlim_cur = limit.rlim_max;
    ASSERT_EQ(::prlimit(r.pid(), RLIMIT_FSIZE, &limit, nullptr), 0) << std::strerror(errno);
    std::vector<json> messages;
    for (int attempt = 0; attempt < 2; ++attempt) {
        ws_client c(r.port(), "/fullA");
        c.send_json(join_msg("alice"));
        auto sync = c.recv_action("SYNC", 5s);
        ASSERT_TRUE(sync) << "close " << c.close_code() << "\n" << r.log();
        auto const& m = (*sync)["args"]["messages"];
        EXPECT_EQ((*sync)["args"]["timeline"], sa.timeline);
        ASSERT_GE(m.size(), sa.recvs.size());
        for (std::size_t i = 0; i < sa.recvs.size(); ++i)
            EXPECT_EQ(m[i], sa.recvs[i]) << i;
        if (attempt == 0) {
            messages.assign(m.begin(), m.end());
            EXPECT_GT(messages.size(), sa.recvs.size());  // accepted before the failure, shown now
            c.drop();
            ASSERT_TRUE(r.signal_and_wait(SIGKILL));
            r.lift_file_size_limit();
            r.start();
        } else {
            ASSERT_GE(m.size(), messages.size());
            for (std::size_t i = 0; i < messages.size(); ++i)
                EXPECT_EQ(m[i], messages[i]) << i;
        }
    }
    // The other session lost nothing either.
    auto b2 = play(r.port(), "fullB", 3);
    EXPECT_EQ(b2.timeline, b.timeline);
    EXPECT_EQ(payloads(b2, "inc"), 3u);
}
