// Cluster mode: three lockstep-reflector processes sharing one real redis-server, all
// started here on free loopback ports and killed at the end.
#include "integration/fixture.hpp"
#include "integration/net_util.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

namespace {


class redis_server {
public:
    /// `password`: started with --requirepass.
    explicit redis_server(std::string const& password = "") : port_(free_port())
    {
        pid_ = ::fork();
        if (pid_ == 0) {
            int devnull = ::open("/dev/null", O_WRONLY);
            ::dup2(devnull, 1);
            auto p = std::to_string(port_);
            if (password.empty())
                ::execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
            else
                ::execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--loglevel", "warning", "--requirepass", password.c_str(),
                         static_cast<char*>(nullptr));
            ::_exit(127);
        }
        // Ready when it answers PING (bounded: 5 s).
        for (int i = 0; i < 100 && !ready_; ++i) {
            std::this_thread::sleep_for(50ms);
            ready_ = ping();
        }
    }
    ~redis_server()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            int st = 0;
            for (int i = 0; i < 100 && ::waitpid(pid_, &st, WNOHANG) == 0; ++i)
                std::this_thread::sleep_for(20ms);
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, &st, WNOHANG);
        }
    }
    bool ready() const { return ready_; }
    std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
    std::uint16_t port() const { return port_; }

private:
    bool
    ping()
    {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port_);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bool ok = false;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            ::send(fd, "PING\r\n", 6, MSG_NOSIGNAL);
            char buf[16] = {};
            // With --requirepass an unauthenticated PING is refused, but answered.
            ok = ::recv(fd, buf, sizeof buf - 1, 0) > 0 &&
                 (std::string(buf).rfind("+PONG", 0) == 0 || std::string(buf).rfind("-NOAUTH", 0) == 0);
        }
        ::close(fd);
        return ok;
    }
    std::uint16_t port_;
    pid_t pid_ = -1;
    bool ready_ = false;
};

/// A real lockstep-reflector process in cluster mode; SIGKILLed by kill() or at the end.
class reflector_process {
public:
    reflector_process(std::string const& redis, std::string const& region, std::uint16_t port = 0)
        : port_(port ? port : free_port()), dir_(test_config().data_dir)
    {
        pid_ = ::fork();
        if (pid_ == 0) {
            auto p = std::to_string(port_);
            ::execl(LOCKSTEP_REFLECTOR_BIN, LOCKSTEP_REFLECTOR_BIN, "--port", p.c_str(), "--data-dir", dir_.c_str(),
                    "--redis", redis.c_str(), "--region", region.c_str(), "--heartbeat-ttl-ms", "1000",
                    "--threads", "1", "--log-level", "warn", static_cast<char*>(nullptr));
            ::_exit(127);
        }
        for (int i = 0; i < 200; ++i) {  // bounded: 10 s (slow under sanitizers)
            std::this_thread::sleep_for(50ms);
            try {
                if (http_request(port_, "GET", "/health/live").status == 200)
                    break;
            } catch (std::exception const&) {
                // not listening yet
            }
        }
    }
    ~reflector_process()
    {
        kill();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    void
    kill()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            int st = 0;
            ::waitpid(pid_, &st, 0);
            pid_ = -1;
        }
    }
    std::uint16_t port() const { return port_; }

private:
    std::uint16_t port_;
    std::string dir_;
    pid_t pid_ = -1;
};

bool
wait_reflectors(std::uint16_t port, std::size_t n)
{
    for (int i = 0; i < 100; ++i) {
        if (json::parse(http_request(port, "GET", "/v1/reflectors").body).size() == n)
            return true;
        std::this_thread::sleep_for(20ms);
    }
    return false;
}

json
post(std::uint16_t port, std::string const& target, json const& body)
{
    auto r = http_request(port, "POST", target, body.dump());
    return json::parse(r.body, nullptr, false);
}

}  // namespace

TEST(cluster, three_reflectors_share_rooms_and_seats_through_redis)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    std::vector<std::unique_ptr<reflector_process>> nodes;
    for (auto region : {"eu", "us", "eu"})
        nodes.push_back(std::make_unique<reflector_process>(redis.url(), region));
    // All three registered and live.
    ASSERT_TRUE(wait_reflectors(nodes[0]->port(), 3));

    constexpr int threads = 6, per = 100;  // 600 users, joins spread over all three APIs
    std::mutex mu;
    std::map<std::string, int> per_session;
    std::map<std::string, std::string> seat_of;
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < per; ++i) {
                auto user = "u" + std::to_string(t) + "-" + std::to_string(i);
                auto j = post(nodes[static_cast<std::size_t>((t + i) % 3)]->port(), "/v1/rooms/crowd/join",
                              {{"user", user}});
                if (!j.is_object() || !j.contains("session")) {
                    ++failures;
                    continue;
                }
                std::lock_guard lock(mu);
                ++per_session[j["session"].get<std::string>()];
                seat_of[user] = j["reflector"].get<std::string>();
            }
        });
    for (auto& t : ts)
        t.join();
    EXPECT_EQ(failures.load(), 0);
    ASSERT_EQ(seat_of.size(), 600u);
    std::set<std::string> distinct;
    for (auto const& [u, s] : seat_of)
        distinct.insert(s);
    EXPECT_EQ(distinct.size(), 600u);  // never the same seat twice
    for (auto const& [s, n] : per_session)
        EXPECT_LE(n, 50) << s;
    // Any reflector answers the same: same seat for the same user, same room view.
    for (std::size_t k = 0; k < 3; ++k) {
        auto again = post(nodes[k]->port(), "/v1/rooms/crowd/join", {{"user", "u0-0"}});
        EXPECT_EQ(again["reflector"], seat_of["u0-0"]);
    }
    auto view0 = json::parse(http_request(nodes[0]->port(), "GET", "/v1/rooms/crowd").body);
    auto view2 = json::parse(http_request(nodes[2]->port(), "GET", "/v1/rooms/crowd").body);
    EXPECT_EQ(view0["shards"], view2["shards"]);
    EXPECT_EQ(view0["shards"].size(), 13u);  // 12 full shards + headroom
    std::set<std::string> names;
    for (auto const& sh : view0["shards"])
        EXPECT_TRUE(names.insert(sh["session"].get<std::string>()).second);
    // A child created on one reflector is listed by another.
    post(nodes[1]->port(), "/v1/sessions/crowd/children", {{"purpose", "chat"}});
    auto kids = json::parse(http_request(nodes[2]->port(), "GET", "/v1/sessions/crowd/children").body);
    ASSERT_EQ(kids["children"].size(), 1u);
    EXPECT_EQ(kids["children"][0]["session"], "crowd/chat");
}

TEST(cluster, a_dead_reflector_gets_no_placements_after_its_heartbeat_expires)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    auto a = std::make_unique<reflector_process>(redis.url(), "eu");
    auto b = std::make_unique<reflector_process>(redis.url(), "us");
    ASSERT_TRUE(wait_reflectors(a->port(), 2));
    auto b_url = "ws://127.0.0.1:" + std::to_string(b->port()) + "/r/";
    auto first = post(a->port(), "/v1/rooms/r1/join", {{"user", "x"}, {"region", "us"}});
    auto seat_url = first["reflector"].get<std::string>();
    ASSERT_EQ(seat_url.rfind(b_url, 0), 0u);
    // x really joins on b: the seat is confirmed, as any reflector reports.
    ws_client c(b->port(), seat_url.substr(seat_url.find("/r/")) + "/SESSIONHASH");
    auto j = join_msg("vx");
    j["args"]["name"] = "com.example/r1";
    c.send_json(j);
    ASSERT_TRUE(c.recv_action("SYNC"));
    auto room = json::parse(http_request(a->port(), "GET", "/v1/rooms/r1").body);
    EXPECT_EQ(room["shards"][0]["members"], 1);
    b->kill();  // the us reflector dies (SIGKILL: no goodbye)
    std::this_thread::sleep_for(1500ms);
    auto refl = json::parse(http_request(a->port(), "GET", "/v1/reflectors").body);
    int live = 0;
    for (auto const& r : refl)
        live += r["live"].get<bool>();
    EXPECT_EQ(live, 1);
    for (int i = 0; i < 5; ++i) {
        auto j = post(a->port(), "/v1/rooms/after" + std::to_string(i) + "/join", {{"user", "y"}, {"region", "us"}});
        EXPECT_EQ(j["reflector"].get<std::string>().rfind("ws://127.0.0.1:" + std::to_string(a->port()) + "/r/", 0),
                  0u)
            << j;
    }
    // Its connections died with it: x's seat is held for a reconnect, not forever.
    room = json::parse(http_request(a->port(), "GET", "/v1/rooms/r1").body);
    EXPECT_EQ(room["shards"][0]["members"], 0);
    EXPECT_EQ(room["shards"][0]["reserved"], 1);
    // The existing shard moves to a live reflector too.
    auto again = post(a->port(), "/v1/rooms/r1/join", {{"user", "x"}});
    EXPECT_EQ(again["reflector"].get<std::string>().rfind("ws://127.0.0.1:" + std::to_string(a->port()), 0), 0u);
}

TEST(cluster, a_restarted_reflector_does_not_keep_its_old_connections)
{
    redis_server redis;
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    auto a = std::make_unique<reflector_process>(redis.url(), "eu");
    ASSERT_TRUE(wait_reflectors(a->port(), 1));
    auto seat = post(a->port(), "/v1/rooms/rr/join", {{"user", "x"}})["reflector"].get<std::string>();
    {
        ws_client c(a->port(), seat.substr(seat.find("/r/")) + "/SESSIONHASH");
        auto j = join_msg("vx");
        j["args"]["name"] = "com.example/rr";
        c.send_json(j);
        ASSERT_TRUE(c.recv_action("SYNC"));
        EXPECT_EQ(json::parse(http_request(a->port(), "GET", "/v1/rooms/rr").body)["shards"][0]["members"], 1);
        auto port = a->port();
        a->kill();  // crash, then the same reflector (same id and port) comes back at once
        a = std::make_unique<reflector_process>(redis.url(), "eu", port);
    }
    // Well within the heartbeat TTL: the old process's connection no longer counts.
    for (int i = 0; i < 50; ++i) {
        auto room = json::parse(http_request(a->port(), "GET", "/v1/rooms/rr").body);
        if (room.is_object() && room["shards"][0]["members"] == 0)
            break;
        std::this_thread::sleep_for(20ms);
    }
    auto room = json::parse(http_request(a->port(), "GET", "/v1/rooms/rr").body);
    EXPECT_EQ(room["shards"][0]["members"], 0);
    EXPECT_EQ(room["shards"][0]["reserved"], 1);
}

TEST(cluster, redis_with_a_password_and_a_database_number)
{
    std::string const password = "p@ss:w/rd";
    redis_server redis(password);
    ASSERT_TRUE(redis.ready()) << "redis-server did not start";
    auto base = "127.0.0.1:" + std::to_string(redis.port());
    auto with = [](std::string url) {
        auto c = test_config();
        c.redis = std::move(url);
        return c;
    };
    // Without the password, or with a wrong one, the reflector does not start, and the
    // error names neither.
    for (auto const& url : {"redis://" + base, "redis://:wrong@" + base}) {
        try {
            server s(with(url));
            ADD_FAILURE() << "started without the right password: " << url;
        } catch (std::exception const& e) {
            EXPECT_NE(std::string(e.what()).find("AUTH"), std::string::npos) << e.what();  // NOAUTH, AUTH failed
            EXPECT_EQ(std::string(e.what()).find("wrong"), std::string::npos) << e.what();
        }
    }
    EXPECT_THROW(server(with("redis://:x@" + base + "/notanumber")), std::runtime_error);
    EXPECT_THROW(server(with("redis://:%zz@" + base)), std::runtime_error);
    // Percent-encoded password, database 3: the router's state lands in db 3.
    // With access control on, the seat check (seat_live) also goes through Redis.
    auto c = with("redis://:p%40ss%3Aw%2Frd@" + base + "/3");
    c.admin_token = "adm";
    c.auth_secret = "k";
    running_server srv(c);
    auto r = http_request(srv.port(), "POST", "/v1/rooms/lobby/join", R"({"user":"alice"})",
                          "Content-Type: application/json\r\nAuthorization: Bearer adm\r\n");
    ASSERT_EQ(r.status, 200) << r.body;
    auto url = nlohmann::json::parse(r.body)["reflector"].get<std::string>();
    {
        ws_client seated(srv.port(), url.substr(url.find("/r/")) + "/LOBBYHASH");
        auto j = join_msg("alice");
        j["args"]["name"] = "it/lobby";
        seated.send_json(j);
        EXPECT_TRUE(seated.recv_action("SYNC"));
    }
    EXPECT_THROW(ws_client(srv.port(), "/r/00000000000000000000000000000000/LOBBYHASH"), std::runtime_error);
    auto count_keys = [&](int db) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(redis.port());
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        std::string out;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            auto cmd = "AUTH \"" + password + "\"\r\nSELECT " + std::to_string(db) + "\r\nDBSIZE\r\n";
            ::send(fd, cmd.data(), cmd.size(), MSG_NOSIGNAL);
            char buf[256];
            auto deadline = std::chrono::steady_clock::now() + 2s;
            while (std::count(out.begin(), out.end(), '\n') < 3 && std::chrono::steady_clock::now() < deadline) {
                pollfd p{fd, POLLIN, 0};
                if (::poll(&p, 1, 200) > 0) {
                    auto n = ::recv(fd, buf, sizeof buf, 0);
                    if (n <= 0)
                        break;
                    out.append(buf, static_cast<std::size_t>(n));
                }
            }
        }
        ::close(fd);
        auto colon = out.rfind(':');
        return colon == std::string::npos ? -1 : std::atoi(out.c_str() + colon + 1);
    };
    EXPECT_GT(count_keys(3), 0);
    EXPECT_EQ(count_keys(0), 0);
}
