// Edge limits on a running reflector: each limit hit with the input itself, refused with
// its documented status, counted in /metrics, and a legitimate client beside it unaffected.
#include "support/fixture.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/net_util.hpp"

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

namespace {

std::string
xff(std::string const& ip)
{
    return "X-Forwarded-For: 10.0.0.1, " + ip + "\r\n";
}

/// The status line of a refused upgrade ("" if it was accepted).
std::string
refused_upgrade(std::uint16_t port, std::string const& extra = "")
{
    try {
        ws_client c(port, "/S1", extra);
        return "";
    } catch (std::exception const& e) {
        return e.what();
    }
}

bool
metric_at_least(std::uint16_t port, std::string const& line_prefix, long min)
{
    auto m = http_request(port, "GET", "/metrics").body;
    auto at = m.find("\n" + line_prefix + " ");
    return at != std::string::npos && std::atol(m.c_str() + at + line_prefix.size() + 2) >= min;
}

int
raw_connect(std::uint16_t port)
{
    try {
        return connect_loopback(port);
    } catch (std::exception const&) {
        return -1;
    }
}

std::string
read_some(int fd, std::chrono::milliseconds timeout = 3000ms)
{
    std::string out;
    char buf[4096];
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.find("\r\n\r\n") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) > 0) {
            auto n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            out.append(buf, static_cast<std::size_t>(n));
        }
    }
    return out;
}

}  // namespace

TEST(limits, max_connections)
{
    auto c = test_config();
    c.max_connections = 3;
    running_server srv(c);
    auto port = srv.port();
    auto a = std::make_unique<ws_client>(port, "/S1");
    a->send_json(join_msg("a"));
    ASSERT_TRUE(a->recv_action("SYNC"));
    ws_client b(port, "/S1");
    ws_client d(port, "/S1");
    auto why = refused_upgrade(port);
    EXPECT_NE(why.find("503"), std::string::npos) << why;
    auto r = http_request(port, "GET", "/health/live");
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(json::parse(r.body)["error"], "too many connections");
    // The members are unaffected; a closed one frees its place.
    a->send_json(send_msg("still"));
    ASSERT_TRUE(a->recv_action("RECV"));
    a.reset();
    bool in = false;
    for (int i = 0; i < 100 && !in; ++i) {
        in = http_request(port, "GET", "/health/live").status == 200;
        if (!in)
            std::this_thread::sleep_for(20ms);
    }
    EXPECT_TRUE(in);
    EXPECT_TRUE(metric_at_least(port, "lockstep_limit_refusals_total{limit=\"connections\"}", 2));
}

TEST(limits, connections_per_address_behind_a_trusted_proxy)
{
    auto c = test_config();
    c.trust_proxy = true;
    c.max_connections_per_ip = 2;
    running_server srv(c);
    auto port = srv.port();
    ws_client a(port, "/S1", xff("203.0.113.5"));
    ws_client b(port, "/S1", xff("203.0.113.5"));
    auto why = refused_upgrade(port, xff("203.0.113.5"));
    EXPECT_NE(why.find("503"), std::string::npos) << why;
    EXPECT_EQ(refused_upgrade(port, xff("203.0.113.6")), "");  // another address
    // Loopback peers (no forwarded address) are not limited per address.
    ws_client l1(port, "/S1"), l2(port, "/S1"), l3(port, "/S1");
    a.send_json(join_msg("a"));
    EXPECT_TRUE(a.recv_action("SYNC"));
    EXPECT_TRUE(metric_at_least(port, "lockstep_limit_refusals_total{limit=\"connections_per_ip\"}", 1));
}

TEST(limits, http_requests_per_address)
{
    auto c = test_config();
    c.trust_proxy = true;
    c.max_http_rate = 5;  // bursts of 10
    running_server srv(c);
    auto port = srv.port();
    int ok = 0, limited = 0;
    for (int i = 0; i < 40; ++i) {
        auto s = http_request(port, "GET", "/files/apps/a/x", "", xff("198.51.100.7")).status;
        (s == 429 ? limited : ok) += 1;
    }
    EXPECT_GE(ok, 10);
    EXPECT_LT(ok, 20);
    EXPECT_GE(limited, 20);
    EXPECT_EQ(http_request(port, "GET", "/files/apps/a/x", "", xff("198.51.100.8")).status, 404);
    EXPECT_EQ(http_request(port, "GET", "/health/live", "", xff("198.51.100.7")).status, 200);
    EXPECT_TRUE(metric_at_least(port, "lockstep_limit_refusals_total{limit=\"http_rate\"}", 20));
}

TEST(limits, files_path_depth)
{
    auto c = test_config();
    c.max_files_depth = 8;
    running_server srv(c);
    std::string deep = "/files";
    for (int i = 0; i < 500; ++i)
        deep += "/a";
    EXPECT_EQ(http_request(srv.port(), "PUT", deep + "/f", "x").status, 400);
    EXPECT_EQ(http_request(srv.port(), "PUT", "/files/a/a/a/a/a/a/a/a/f", "x").status, 400);  // 9 segments
    EXPECT_EQ(http_request(srv.port(), "PUT", "/files/a/a/a/a/a/a/a/f", "x").status, 201);    // 8
    EXPECT_TRUE(metric_at_least(srv.port(), "lockstep_limit_refusals_total{limit=\"files_depth\"}", 2));
}

TEST(limits, disk_quota)
{
    auto c = test_config();
    c.max_disk_bytes = 1000;
    running_server srv(c);
    auto port = srv.port();
    EXPECT_EQ(http_request(port, "PUT", "/files/apps/a/one", std::string(600, '1')).status, 201);
    auto full = http_request(port, "PUT", "/files/apps/a/two", std::string(600, '2'));
    EXPECT_EQ(full.status, 507);
    EXPECT_EQ(json::parse(full.body)["error"], "blob store full");
    EXPECT_EQ(http_request(port, "GET", "/files/apps/a/two").status, 404);
    EXPECT_EQ(http_request(port, "GET", "/files/apps/a/one").body, std::string(600, '1'));
    // Replacing a blob counts only the difference.
    EXPECT_EQ(http_request(port, "PUT", "/files/apps/a/one", std::string(900, '3')).status, 201);
    EXPECT_EQ(http_request(port, "PUT", "/files/apps/a/small", std::string(100, '4')).status, 201);
    EXPECT_EQ(http_request(port, "PUT", "/files/apps/a/more", "x").status, 507);
    EXPECT_TRUE(metric_at_least(port, "lockstep_blob_store_bytes", 1000));
    EXPECT_TRUE(metric_at_least(port, "lockstep_limit_refusals_total{limit=\"disk\"}", 2));
}

TEST(limits, disk_quota_counts_blobs_from_before_a_restart)
{
    auto c = test_config();
    {
        running_server first(c);
        EXPECT_EQ(http_request(first.port(), "PUT", "/files/apps/a/one", std::string(800, '1')).status, 201);
        // The server's destructor removes the data directory: a blob is put back below,
        // as if it had been stored before this process started.
    }
    std::filesystem::create_directories(std::filesystem::path(c.data_dir) / "files/apps/a");
    {
        std::ofstream(std::filesystem::path(c.data_dir) / "files/apps/a/old") << std::string(800, 'o');
    }
    c.max_disk_bytes = 1000;
    running_server srv(c);
    EXPECT_TRUE(metric_at_least(srv.port(), "lockstep_blob_store_bytes", 800));
    EXPECT_EQ(http_request(srv.port(), "PUT", "/files/apps/a/new", std::string(300, 'n')).status, 507);
    EXPECT_EQ(http_request(srv.port(), "PUT", "/files/apps/a/new", std::string(100, 'n')).status, 201);
}

TEST(limits, concurrent_uploads)
{
    auto c = test_config();
    c.max_uploads = 1;
    running_server srv(c);
    auto port = srv.port();
    int slow = raw_connect(port);
    ASSERT_GE(slow, 0);
    std::string head = "PUT /files/apps/a/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
    ASSERT_EQ(::send(slow, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
    ASSERT_EQ(::send(slow, std::string(500, 's').data(), 500, MSG_NOSIGNAL), 500);
    std::this_thread::sleep_for(100ms);  // the body is being read
    auto busy = http_request(port, "PUT", "/files/apps/a/other", "x");
    EXPECT_EQ(busy.status, 503);
    EXPECT_EQ(http_request(port, "GET", "/health/live").status, 200);
    ASSERT_EQ(::send(slow, std::string(500, 's').data(), 500, MSG_NOSIGNAL), 500);
    EXPECT_NE(read_some(slow).find("201 Created"), std::string::npos);
    ::close(slow);
    EXPECT_EQ(http_request(port, "PUT", "/files/apps/a/other", "x").status, 201);
    EXPECT_TRUE(metric_at_least(port, "lockstep_limit_refusals_total{limit=\"uploads\"}", 1));
}

// A real reflector process whose descriptor limit is tiny (hard limit 64, so raising the
// soft limit cannot help) and whose --max-connections is above it: accept() fails with
// EMFILE. It must pause instead of spinning, and serve again once sockets close.
TEST(limits, out_of_descriptors_backs_off_instead_of_spinning)
{
    auto port = free_port();
    auto dir = test_config().data_dir;
    pid_t pid = ::fork();
    if (pid == 0) {
        rlimit rl{64, 64};
        ::setrlimit(RLIMIT_NOFILE, &rl);
        auto p = std::to_string(port);
        ::execl(LOCKSTEP_REFLECTOR_BIN, LOCKSTEP_REFLECTOR_BIN, "--port", p.c_str(), "--data-dir", dir.c_str(),
                "--threads", "1", "--max-connections", "1000", "--log-level", "error", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ASSERT_GT(pid, 0);
    struct reaper {
        pid_t pid;
        std::string dir;
        ~reaper()
        {
            ::kill(pid, SIGKILL);
            int st = 0;
            ::waitpid(pid, &st, 0);
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    } reap{pid, dir};
    bool up = false;
    for (int i = 0; i < 200 && !up; ++i) {
        std::this_thread::sleep_for(50ms);
        int probe = raw_connect(port);
        if (probe >= 0) {
            ::close(probe);
            up = http_request(port, "GET", "/health/live").status == 200;
        }
    }
    ASSERT_TRUE(up);
    std::vector<int> held;
    for (int i = 0; i < 100; ++i)
        if (int fd = raw_connect(port); fd >= 0)
            held.push_back(fd);  // the kernel queues them even when the process cannot accept
    auto cpu = [pid] {
        std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
        std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::istringstream fields(s.substr(s.rfind(')') + 2));
        std::string f;
        long ticks = 0;
        for (int i = 3; i <= 15 && fields >> f; ++i)
            if (i == 14 || i == 15)
                ticks += std::atol(f.c_str());
        return ticks;
    };
    std::this_thread::sleep_for(300ms);
    auto before = cpu();
    std::this_thread::sleep_for(1s);
    auto used = cpu() - before;
    EXPECT_LT(used, sysconf(_SC_CLK_TCK) / 4) << "the reflector spun on accept() for " << used << " ticks in 1 s";
    for (int fd : held)
        ::close(fd);
    bool back = false;
    for (int i = 0; i < 100 && !back; ++i) {
        back = http_request(port, "GET", "/health/live").status == 200;
        if (!back)
            std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(back);
    EXPECT_TRUE(metric_at_least(port, "lockstep_accept_backoffs_total", 1));
}
