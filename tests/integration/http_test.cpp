// Plain HTTP on the reflector port: health, metrics, sessions, files.
#include "support/fixture.hpp"
#include "support/metrics.hpp"

#include <gtest/gtest.h>

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
    auto mx = metrics::parse(m.body);
    EXPECT_EQ(mx["lockstep_connections"], 1);
    EXPECT_EQ(mx["lockstep_sessions"], 1);
    EXPECT_EQ(mx["lockstep_events_in_total"], 4);  // 3 SENDs and the users event
    EXPECT_EQ(mx["lockstep_events_out_total"], 4);
    EXPECT_GT(mx["lockstep_bytes_in_total"], 0);
    EXPECT_GT(mx["lockstep_bytes_out_total"], 0);
    EXPECT_GE(mx["lockstep_ticks_total"], 0);
    EXPECT_TRUE(mx.has("lockstep_tick_lateness_ms_bucket{le=\"1\"}"));
    EXPECT_GE(mx["lockstep_tick_lateness_ms_bucket{le=\"+Inf\"}"], mx["lockstep_tick_lateness_ms_bucket{le=\"1\"}"]);
    EXPECT_GE(mx["lockstep_outbound_queue_bytes"], 0);
    EXPECT_EQ(mx.types["lockstep_closes_total"], "counter");
    EXPECT_FALSE(mx.has("lockstep_closes_total{code=\"4102\"}"));
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
    EXPECT_EQ(metrics::parse(m.body)["lockstep_closes_total{code=\"4102\"}"], 1);
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

TEST(http, edge_cases_of_the_operations_guide)
{
    auto cfg = test_config();
    cfg.max_blob_bytes = 1000;
    running_server srv(cfg);
    auto status_of = [](std::string const& head) { return head.rfind("HTTP/1.1 ", 0) == 0 ? std::stoi(head.substr(9, 3)) : 0; };
    {
        // Expect: 100-continue: the interim answer first, then the body, then 201.
        tcp_connection c(srv.port());
        c.send("PUT /files/edge/continued HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        auto const& got = c.read_until("\r\n\r\n");
        ASSERT_EQ(status_of(got), 100) << got;
        auto end = got.find("\r\n\r\n") + 4;
        c.send("hello");
        EXPECT_EQ(status_of(c.read_until("\r\n\r\n", end).substr(end)), 201) << c.received();
        EXPECT_EQ(http_request(srv.port(), "GET", "/files/edge/continued").body, "hello");
    }
    {
        // ... but a declared length over --max-blob-bytes gets 413 at once, no 100.
        tcp_connection c(srv.port());
        c.send("PUT /files/edge/big HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
        EXPECT_EQ(status_of(c.read_until("\r\n\r\n")), 413) << c.received();
    }
    {
        // A chunked body that grows over the limit: 413, and the stored blob is untouched.
        ASSERT_EQ(http_request(srv.port(), "PUT", "/files/edge/chunked", "old").status, 201);
        tcp_connection c(srv.port());
        std::string chunk(600, 'c');
        c.send("PUT /files/edge/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n" + chunk +
               "\r\n258\r\n" + chunk + "\r\n0\r\n\r\n");
        auto const& got = c.read_until("\r\n\r\n");
        EXPECT_EQ(status_of(got), 413) << got;
        EXPECT_NE(got.find("body too large"), std::string::npos);
        EXPECT_EQ(http_request(srv.port(), "GET", "/files/edge/chunked").body, "old");
    }
    {
        // Headers over 16 KiB: 400 with a JSON error.
        auto r = http_request(srv.port(), "GET", "/health/live", "", "X-Big: " + std::string(20000, 'h') + "\r\n");
        EXPECT_EQ(r.status, 400);
        EXPECT_TRUE(json::parse(r.body, nullptr, false).contains("error")) << r.body;
    }
    // A wrong method: 405 naming the allowed ones.
    auto wrong = http_request(srv.port(), "POST", "/metrics", "x");
    EXPECT_EQ(wrong.status, 405);
    EXPECT_NE(wrong.headers.find("Allow: GET, HEAD"), std::string::npos) << wrong.headers;
    // OPTIONS anywhere: 204 with the CORS answer.
    auto opt = http_request(srv.port(), "OPTIONS", "/anything/at/all");
    EXPECT_EQ(opt.status, 204);
    EXPECT_NE(opt.headers.find("Access-Control-Allow-Methods: GET, HEAD, PUT, POST, OPTIONS"), std::string::npos);
    EXPECT_NE(opt.headers.find("Access-Control-Allow-Headers: Content-Type, Authorization"), std::string::npos);
    EXPECT_NE(opt.headers.find("Access-Control-Max-Age: 86400"), std::string::npos);
    EXPECT_NE(opt.headers.find("Access-Control-Allow-Origin: *"), std::string::npos);
    // The store's temporary-file names are reserved.
    auto tmp = http_request(srv.port(), "PUT", "/files/edge/x.lockstep-42.tmp", "x");
    EXPECT_EQ(tmp.status, 400);
    EXPECT_EQ(json::parse(tmp.body, nullptr, false).value("error", ""), "bad path: reserved name") << tmp.body;
    // A path that cannot be written (a component is a file): 500, and the process goes on.
    ASSERT_EQ(http_request(srv.port(), "PUT", "/files/edge/file", "x").status, 201);
    auto under_file = http_request(srv.port(), "PUT", "/files/edge/file/inner", "y");
    EXPECT_EQ(under_file.status, 500);
    EXPECT_EQ(json::parse(under_file.body, nullptr, false).value("error", ""), "cannot store blob") << under_file.body;
    EXPECT_EQ(http_request(srv.port(), "GET", "/health/live").status, 200);
}
