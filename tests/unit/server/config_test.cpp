#include "server/config.hpp"

#include <lockstep/version.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include <unistd.h>

#include <vector>

using namespace lockstep;

namespace {
std::optional<config>
parse(std::vector<char const*> args, std::string& msg, bool& help)
{
    args.insert(args.begin(), "lockstep-reflector");
    return parse_config(static_cast<int>(args.size()), args.data(), msg, help);
}
}  // namespace

TEST(config, defaults)
{
    std::string msg;
    bool help;
    auto c = parse({}, msg, help);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->bind, "127.0.0.1");
    EXPECT_EQ(c->port, 9090);
    EXPECT_GE(c->threads, 1u);
    EXPECT_EQ(c->public_url, "ws://127.0.0.1:9090");
}

TEST(config, flags_and_errors)
{
    std::string msg;
    bool help;
    auto c = parse({"--port", "1234", "--threads=2", "--log-format", "json", "--max-queue-bytes", "1000"}, msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->port, 1234);
    EXPECT_EQ(c->threads, 2u);
    EXPECT_EQ(c->log_format, "json");
    EXPECT_EQ(c->max_queue_bytes, 1000u);
    EXPECT_FALSE(parse({"--port", "70000"}, msg, help));
    EXPECT_FALSE(parse({"--bogus"}, msg, help));
    EXPECT_NE(msg.find("--bogus"), std::string::npos);
    EXPECT_FALSE(parse({"--log-format", "xml"}, msg, help));
    EXPECT_FALSE(parse({"--port"}, msg, help));
    EXPECT_FALSE(parse({"--help"}, msg, help));
    EXPECT_TRUE(help);
    EXPECT_NE(msg.find("--max-frame-bytes"), std::string::npos);
}

TEST(config, overload_and_polling_flags)
{
    std::string msg;
    bool help;
    auto d = parse({}, msg, help);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->max_tick_stretch_pct, 400u);  // ticks thin out under overload by default
    EXPECT_EQ(d->busy_poll_us, 0u);            // and workers sleep at once
    auto c = parse({"--max-tick-stretch", "100", "--busy-poll-us=500"}, msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->max_tick_stretch_pct, 100u);
    EXPECT_EQ(c->busy_poll_us, 500u);
    EXPECT_FALSE(parse({"--busy-poll-us", "soon"}, msg, help));
    EXPECT_NE(msg.find("--busy-poll-us"), std::string::npos);
    EXPECT_FALSE(parse({"--max-tick-stretch", "-5"}, msg, help));
}

TEST(config, session_limit_flags)
{
    std::string msg;
    bool help;
    auto d = parse({}, msg, help);
    ASSERT_TRUE(d) << msg;
    // Defaults far above real clients and `make bench` (10,000 clients, at most 60 events/s).
    EXPECT_EQ(d->max_message_rate, 100u);
    EXPECT_EQ(d->max_message_burst, 200u);
    EXPECT_EQ(d->max_clients_per_session, 5000u);
    EXPECT_EQ(d->max_sessions, 100000u);
    EXPECT_EQ(d->max_sync_bytes, 1ull << 30);
    EXPECT_EQ(d->log_max_bytes, 64ull << 20);
    auto c = parse({"--max-message-rate", "0", "--max-sessions", "7", "--max-join-bytes", "4096",
                    "--max-sync-bytes", "2000000", "--log-max-bytes", "1000000"},
                   msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->max_message_rate, 0u);
    EXPECT_EQ(c->max_sessions, 7u);
    EXPECT_EQ(c->max_join_bytes, 4096u);
    // A SYNC of a full log must fit the budget with room for another.
    EXPECT_FALSE(parse({"--max-sync-bytes", "1000000", "--log-max-bytes", "1000000"}, msg, help));
    EXPECT_NE(msg.find("--max-sync-bytes"), std::string::npos);
    EXPECT_FALSE(parse({"--log-max-bytes", "0"}, msg, help));  // with the default budget on
    EXPECT_TRUE(parse({"--log-max-bytes", "0", "--max-sync-bytes", "0"}, msg, help)) << msg;
    EXPECT_FALSE(parse({"--max-message-burst", "0"}, msg, help));
}

namespace {
/// Sets an environment variable for the scope of one test.
struct scoped_env {
    std::string name;
    scoped_env(std::string n, char const* value) : name(std::move(n)) { ::setenv(name.c_str(), value, 1); }
    ~scoped_env() { ::unsetenv(name.c_str()); }
};

std::string
write_file(std::string const& text)
{
    std::string path = ::testing::TempDir() + "lockstep-config-" + std::to_string(::getpid()) + ".toml";
    std::ofstream(path) << text;
    return path;
}
}  // namespace

TEST(config, precedence_flag_over_env_over_file_over_default)
{
    std::string msg;
    bool help;
    auto file = write_file("port = 1111\nregion = \"from-file\"\ndata-dir = \"/file/data\"\n"
                           "room-policy = [\"big-*=200\", \"duo=2:0.5\"]\n");
    scoped_env port("LOCKSTEP_PORT", "2222");
    scoped_env region("LOCKSTEP_REGION", "from-env");
    auto c = parse({"--config", file.c_str(), "--port", "3333"}, msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->port, 3333);               // flag beats env and file
    EXPECT_EQ(c->region, "from-env");       // env beats file
    EXPECT_EQ(c->data_dir, "/file/data");   // file beats default
    EXPECT_EQ(c->bind, "127.0.0.1");        // default
    EXPECT_EQ(c->room_policies, (std::vector<std::string>{"big-*=200", "duo=2:0.5"}));
    EXPECT_EQ(c->public_url, "ws://127.0.0.1:3333");
    // The file can also come from the environment.
    scoped_env cfg("LOCKSTEP_CONFIG", file.c_str());
    c = parse({}, msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->port, 2222);
    EXPECT_EQ(c->data_dir, "/file/data");
}

TEST(config, bad_input_names_its_source)
{
    std::string msg;
    bool help = true;
    {
        scoped_env port("LOCKSTEP_PORT", "many");
        EXPECT_FALSE(parse({}, msg, help));
        EXPECT_FALSE(help);
        EXPECT_NE(msg.find("LOCKSTEP_PORT"), std::string::npos) << msg;
        // A flag overrides the bad environment value, which is then not read.
        EXPECT_TRUE(parse({"--port", "1"}, msg, help)) << msg;
    }
    auto file = write_file("prot = 4\n");
    EXPECT_FALSE(parse({"--config", file.c_str()}, msg, help));
    EXPECT_NE(msg.find("prot"), std::string::npos) << msg;
    EXPECT_FALSE(parse({"--config", "/nonexistent/lockstep.toml"}, msg, help));
    EXPECT_FALSE(help);
    auto bad = write_file("log-format = \"xml\"\n");
    EXPECT_FALSE(parse({"--config", bad.c_str()}, msg, help));
    EXPECT_NE(msg.find("log-format"), std::string::npos) << msg;
}

TEST(config, print_config_is_a_config_file)
{
    std::string msg;
    bool help = false;
    EXPECT_FALSE(parse({"--print-config", "--port", "4444", "--room-policy", "x*=3", "--room-overflow", "0.5"},
                       msg, help));
    EXPECT_TRUE(help);
    EXPECT_NE(msg.find("port = 4444\n"), std::string::npos) << msg;
    EXPECT_NE(msg.find("room-policy = [\"x*=3\"]\n"), std::string::npos) << msg;
    // Read back, it gives the same configuration.
    auto file = write_file(msg);
    auto c = parse({"--config", file.c_str()}, msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->port, 4444);
    EXPECT_EQ(c->room_overflow, 0.5);
    EXPECT_EQ(c->room_policies, std::vector<std::string>{"x*=3"});
    EXPECT_FALSE(parse({"--version"}, msg, help));
    EXPECT_TRUE(help);
    EXPECT_EQ(msg, std::string("lockstep-reflector ") + LOCKSTEP_VERSION + "\n");
}

TEST(config, print_config_never_prints_a_secret)
{
    std::string msg;
    bool help = false;
    EXPECT_FALSE(parse({"--print-config", "--auth-secret", "s3cr3t-hs256", "--admin-token", "adm1n-t0ken",
                        "--redis", "redis://:pw-in-url@127.0.0.1:6379/2"},
                       msg, help));
    EXPECT_TRUE(help);
    for (auto secret : {"s3cr3t-hs256", "adm1n-t0ken", "pw-in-url"})
        EXPECT_EQ(msg.find(secret), std::string::npos) << secret << " printed:\n" << msg;
    EXPECT_NE(msg.find("# auth-secret: set, not printed"), std::string::npos) << msg;
    EXPECT_NE(msg.find("LOCKSTEP_ADMIN_TOKEN"), std::string::npos) << msg;
    // A Redis URL without a password is printed as it is; the output still reads back.
    EXPECT_FALSE(parse({"--print-config", "--redis", "redis://127.0.0.1:6380", "--admin-token", "x"}, msg, help));
    EXPECT_NE(msg.find("redis = \"redis://127.0.0.1:6380\"\n"), std::string::npos) << msg;
    auto file = write_file(msg);
    auto c = parse({"--config", file.c_str()}, msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->redis, "redis://127.0.0.1:6380");
    EXPECT_EQ(c->admin_token, "");
}

TEST(config, journal_flags)
{
    std::string msg;
    bool help;
    auto d = parse({}, msg, help);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->journal, "file");  // durable by default
    EXPECT_EQ(d->journal_fsync_ms, 100u);
    EXPECT_EQ(d->session_retention_s, 30u * 24 * 3600);
    auto c = parse({"--journal", "none", "--journal-fsync-ms=0", "--session-retention", "12h"}, msg, help);
    ASSERT_TRUE(c) << msg;
    EXPECT_EQ(c->journal, "none");
    EXPECT_EQ(c->journal_fsync_ms, 0u);
    EXPECT_EQ(c->session_retention_s, 12u * 3600);
    for (auto v : {"90", "90s"})
        EXPECT_EQ(parse({"--session-retention", v}, msg, help)->session_retention_s, 90u);
    EXPECT_EQ(parse({"--session-retention", "2d"}, msg, help)->session_retention_s, 2u * 86400);
    for (auto bad : {"", "0", "d", "-1d", "12w", "1.5h", "99999999999999999999"}) {
        EXPECT_FALSE(parse({"--session-retention", bad}, msg, help)) << bad;
        EXPECT_NE(msg.find("--session-retention"), std::string::npos);
    }
    EXPECT_FALSE(parse({"--journal", "redis"}, msg, help));
    EXPECT_FALSE(parse({"--journal-fsync-ms", "-5"}, msg, help));
}
