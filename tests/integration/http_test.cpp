// Plain HTTP on the reflector port: health, metrics, sessions, files.
#include "integration/fixture.hpp"

#include <lockstep/version.hpp>

#include <gtest/gtest.h>

#include <ctime>

using namespace lockstep;
using namespace lockstep::test;
using nlohmann::json;

TEST(http, health_and_banner)
{
    running_server srv;
    EXPECT_EQ(http_request(srv.port(), "GET", "/health/live").status, 200);
    auto ready = http_request(srv.port(), "GET", "/health/ready");
    EXPECT_EQ(ready.status, 200);
    EXPECT_EQ(ready.body, "ready\n");
    EXPECT_EQ(http_request(srv.port(), "GET", "/").status, 200);
    auto nf = http_request(srv.port(), "GET", "/nope");
    EXPECT_EQ(nf.status, 404);
    EXPECT_EQ(json::parse(nf.body)["error"], "not found");
    EXPECT_EQ(http_request(srv.port(), "POST", "/health/live", "x").status, 405);
}

TEST(http, metrics_and_sessions_reflect_traffic)
{
    running_server srv;
    ws_client a(srv.port(), "/M1");
    a.send_json(join_msg("va"));
    ASSERT_TRUE(a.recv_action("SYNC"));
    for (int i = 0; i < 3; ++i)
        a.send_json(send_msg("e"));
    for (int i = 0; i < 4; ++i)
        ASSERT_TRUE(a.recv_action("RECV"));
    auto m = http_request(srv.port(), "GET", "/metrics");
    ASSERT_EQ(m.status, 200);
    EXPECT_NE(m.headers.find("text/plain; version=0.0.4"), std::string::npos);
    for (auto name : {"lockstep_connections 1", "lockstep_sessions 1", "lockstep_events_in_total 4",
                      "lockstep_events_out_total 4", "lockstep_bytes_in_total", "lockstep_bytes_out_total",
                      "lockstep_ticks_total", "lockstep_tick_lateness_seconds_bucket{le=\"0.001\"}",
                      "lockstep_outbound_queue_bytes", "lockstep_closes_total"})
        EXPECT_NE(m.body.find(name), std::string::npos) << name;
    for (auto name : {"process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
                      "process_max_fds ", "process_start_time_seconds "})
        EXPECT_NE(m.body.find(name), std::string::npos) << name;
    // This process (the server runs in it) started within the last hour, holds a few
    // descriptors (the client socket at least) and some resident memory.
    auto value = [&](std::string const& name) {
        auto at = m.body.find("\n" + name + " ");
        return at == std::string::npos ? -1.0 : std::stod(m.body.substr(at + name.size() + 2));
    };
    auto now = static_cast<double>(std::time(nullptr));
    EXPECT_LE(value("process_start_time_seconds"), now + 1);
    EXPECT_GT(value("process_start_time_seconds"), now - 3600);
    EXPECT_GT(value("process_open_fds"), 2);
    EXPECT_GT(value("process_resident_memory_bytes"), 1 << 20);
    EXPECT_GE(value("process_cpu_seconds_total"), 0);
    EXPECT_NE(m.body.find("lockstep_build_info{version=\"" LOCKSTEP_VERSION "\"} 1\n"), std::string::npos);
    auto s = http_request(srv.port(), "GET", "/sessions");
    ASSERT_EQ(s.status, 200);
    auto list = json::parse(s.body);
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0]["id"], "M1");
    EXPECT_EQ(list[0]["name"], "it/demo");
    EXPECT_EQ(list[0]["clients"], 1);
    EXPECT_EQ(list[0]["seq"], 0xFFFFFFF4u);
    EXPECT_EQ(list[0]["log"], 4);
    EXPECT_TRUE(list[0]["time"].is_number());
    // A close is counted by code.
    ws_client bad(srv.port(), "/M1");
    bad.send_text("nope");
    EXPECT_EQ(bad.wait_close(), 4102);
    m = http_request(srv.port(), "GET", "/metrics");
    EXPECT_NE(m.body.find("lockstep_closes_total{code=\"4102\"} 1"), std::string::npos);
}

TEST(http, files_round_trip)
{
    running_server srv;
    std::string blob = std::string("CRQ1") + std::string(100000, '\x01') + std::string("\0end", 4);
    auto put = http_request(srv.port(), "PUT", "/files/apps/io.app/snap/v1/pid.sid/0000005377_47.hash", blob,
                            "Content-Type: application/octet-stream\r\n");
    EXPECT_EQ(put.status, 201);
    auto get = http_request(srv.port(), "GET", "/files/apps/io.app/snap/v1/pid.sid/0000005377_47.hash");
    EXPECT_EQ(get.status, 200);
    EXPECT_EQ(get.body, blob);
    EXPECT_NE(get.headers.find("Access-Control-Allow-Origin: *"), std::string::npos);
    auto head = http_request(srv.port(), "HEAD", "/files/apps/io.app/snap/v1/pid.sid/0000005377_47.hash");
    EXPECT_EQ(head.status, 200);
    EXPECT_NE(head.headers.find("Content-Length: " + std::to_string(blob.size())), std::string::npos);
    // Overwrite is atomic and complete.
    EXPECT_EQ(http_request(srv.port(), "PUT", "/files/apps/io.app/x", "v2").status, 201);
    EXPECT_EQ(http_request(srv.port(), "PUT", "/files/apps/io.app/x", "version3").status, 201);
    EXPECT_EQ(http_request(srv.port(), "GET", "/files/apps/io.app/x").body, "version3");
    EXPECT_EQ(http_request(srv.port(), "GET", "/files/apps/io.app/missing").status, 404);
    EXPECT_EQ(http_request(srv.port(), "GET", "/files/apps/io.app").status, 404);  // a directory
    EXPECT_EQ(http_request(srv.port(), "OPTIONS", "/files/apps/x").status, 204);
    EXPECT_EQ(http_request(srv.port(), "DELETE", "/files/apps/io.app/x").status, 405);
}

TEST(http, files_bad_paths_get_400_and_store_nothing)
{
    running_server srv;
    for (std::string bad : std::vector<std::string>{"/files/a/../b", "/files/..", "/files//etc/passwd", "/files/a%00b", "/files/a%2F..%2Fb",
                            "/files/a\\b", "/files/" + std::string(300, 'n'), "/files/a//b"}) {
        auto r = http_request(srv.port(), "PUT", bad, "data");
        EXPECT_EQ(r.status, 400) << bad;
        EXPECT_NE(json::parse(r.body)["error"].get<std::string>().find("bad path"), std::string::npos);
        EXPECT_EQ(http_request(srv.port(), "GET", bad).status, 400) << bad;
    }
    // Nothing escaped the files directory.
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(srv.cfg().data_dir) / "b"));
}

TEST(http, oversized_blob_gets_413_and_keeps_the_old_one)
{
    auto cfg = test_config();
    cfg.max_blob_bytes = 1000;
    running_server srv(cfg);
    EXPECT_EQ(http_request(srv.port(), "PUT", "/files/s/x", "old").status, 201);
    EXPECT_EQ(http_request(srv.port(), "PUT", "/files/s/x", std::string(5000, 'z')).status, 413);
    EXPECT_EQ(http_request(srv.port(), "GET", "/files/s/x").body, "old");
}
