// Structured logs: JSON lines whose fields are members of the object, and one summary
// line when a connection and when a session ends.
#include "support/fixture.hpp"
#include "common/logging.hpp"

#include <spdlog/details/null_mutex.h>
#include <spdlog/sinks/base_sink.h>

#include <gtest/gtest.h>

#include <sstream>

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

namespace {
/// Every JSON line logged so far whose "event" is `event`.
std::vector<json>
events(std::ostringstream& out, std::mutex& mu, std::string const& event)
{
    std::lock_guard lock(mu);
    std::vector<json> found;
    std::istringstream in(out.str());
    for (std::string line; std::getline(in, line);) {
        auto j = json::parse(line);  // every line is one JSON object
        if (j.value("event", "") == event)
            found.push_back(j);
    }
    return found;
}
}  // namespace

TEST(logs, connection_and_session_summaries_as_json_fields)
{
    auto cfg = test_config();
    cfg.session_linger_ms = 100;
    running_server srv(cfg);
    std::ostringstream out;
    std::mutex mu;
    // Collects formatted lines; `mu` also guards reading them.
    struct collecting_sink : spdlog::sinks::base_sink<spdlog::details::null_mutex> {
        std::ostringstream& out;
        std::mutex& m;
        collecting_sink(std::ostringstream& o, std::mutex& m) : out(o), m(m) {}
        void sink_it_(spdlog::details::log_msg const& msg) override
        {
            spdlog::memory_buf_t buf;
            formatter_->format(msg, buf);
            std::lock_guard lock(m);
            out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
        }
        void flush_() override {}
    };
    setup_logging("info", "json", std::make_shared<collecting_sink>(out, mu));
    {
        ws_client a(srv.port(), "/L1");
        a.send_json(join_msg("va"));
        ASSERT_TRUE(a.recv_action("SYNC"));
        for (int i = 0; i < 3; ++i)
            a.send_json(send_msg("e"));
        for (int i = 0; i < 4; ++i)  // the users event and the three
            ASSERT_TRUE(a.recv_action("RECV"));
        a.send_frame(0x8, std::string("\x03\xe8", 2));  // close 1000
        EXPECT_EQ(a.wait_close(), 1000);
    }
    auto started = events(out, mu, "session_start");
    ASSERT_EQ(started.size(), 1u);
    EXPECT_EQ(started[0]["session"], "L1");
    EXPECT_EQ(started[0]["app"], "it");
    std::vector<json> conn, sess;
    for (int i = 0; i < 100 && (conn.empty() || sess.empty()); ++i) {  // bounded: 5 s
        std::this_thread::sleep_for(50ms);
        conn = events(out, mu, "connection_end");
        sess = events(out, mu, "session_end");
    }
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("quiet"));
    ASSERT_EQ(conn.size(), 1u);
    auto const& c = conn[0];
    EXPECT_EQ(c["level"], "info");
    EXPECT_EQ(c["session"], "L1");
    EXPECT_EQ(c["app"], "it");
    EXPECT_EQ(c["code"], 1000);
    EXPECT_TRUE(c["conn"].is_number_integer());
    EXPECT_EQ(c["messages_in"], 4);   // JOIN and three SENDs (the close frame is not a message)
    EXPECT_GE(c["messages_out"], 5);  // SYNC, four RECVs, ticks
    EXPECT_GT(c["bytes_in"], 100);
    EXPECT_GT(c["bytes_out"], c["bytes_in"].get<int>() / 2);
    EXPECT_GE(c["seconds"], 0.0);
    EXPECT_NE(c["msg"].get<std::string>().find("disconnected"), std::string::npos);
    ASSERT_EQ(sess.size(), 1u);
    auto const& s = sess[0];
    EXPECT_EQ(s["session"], "L1");
    EXPECT_EQ(s["app"], "it");
    EXPECT_EQ(s["name"], "it/demo");
    EXPECT_EQ(s["clients"], 1);
    EXPECT_EQ(s["messages_in"], 4);  // the users event and three SENDs were reflected
    EXPECT_GT(s["seconds"], 0.0);
}
