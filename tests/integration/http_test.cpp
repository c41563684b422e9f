// Plain HTTP on the reflector port: health, metrics, sessions, files.
#include "support/fixture.hpp"
#include "support/metrics.hpp"

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
    auto mx = metrics::parse(m.body);
    EXPECT_EQ(mx["lockstep_connections"], 1);
    EXPECT_EQ(mx["lockstep_sessions"], 1);
    EXPECT_EQ(mx["lockstep_events_in_total"], 4);  // 3 SENDs and the users event
    EXPECT_EQ(mx["lockstep_events_out_total"], 4);
    EXPECT_GT(mx["lockstep_bytes_in_total"], 0);
    EXPECT_GT(mx["lockstep_bytes_out_total"], 0);
    EXPECT_GE(mx["lockstep_ticks_total"], 0);
    EXPECT_TRUE(mx.has("lockstep_tick_lateness_seconds_bucket{le=\"0.001\"}"));
    EXPECT_GE(mx["lockstep_tick_lateness_seconds_bucket{le=\"+Inf\"}"],
              mx["lockstep_tick_lateness_seconds_bucket{le=\"0.001\"}"]);
    EXPECT_GE(mx["lockstep_outbound_queue_bytes"], 0);
    EXPECT_EQ(mx.types["lockstep_closes_total"], "counter");
    EXPECT_FALSE(mx.has("lockstep_closes_total{code=\"4102\"}"));
    EXPECT_EQ(mx["lockstep_build_info{version=\"" LOCKSTEP_VERSION "\"}"], 1);
    // This process (the server runs in it) started within the last hour, holds a few
    // descriptors (the client socket at least) and some resident memory.
    auto now = static_cast<double>(std::time(nullptr));
    EXPECT_LE(mx["process_start_time_seconds"], now + 1);
    EXPECT_GT(mx["process_start_time_seconds"], now - 3600);
    EXPECT_GT(mx["process_open_fds"], 2);
    EXPECT_GT(mx["process_max_fds"], mx["process_open_fds"]);
    EXPECT_GT(mx["process_resident_memory_bytes"], 1 << 20);
    EXPECT_GE(mx["process_cpu_seconds_total"], 0);
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

// Each of these once ended the process (a JSON serializer threw on bytes that are not
// UTF-8). Now each gets a 400, the process stays up, and a session already running on
// the same reflector loses nothing.
TEST(http, non_utf8_names_get_400_and_nothing_else_is_hurt)
{
    running_server srv;
    ws_client a(srv.port(), "/U1");
    a.send_json(join_msg("va"));
    ASSERT_TRUE(a.recv_action("SYNC"));
    a.send_json(send_msg("before"));
    ASSERT_TRUE(a.recv_action("RECV"));  // the view-join event
    ASSERT_TRUE(a.recv_action("RECV"));

    auto leave = http_request(srv.port(), "POST", "/v1/rooms/%FF/leave", R"({"user":"u"})",
                              "Content-Type: application/json\r\n");
    EXPECT_EQ(leave.status, 400);
    EXPECT_EQ(json::parse(leave.body)["field"], "path");
    auto kids = http_request(srv.port(), "GET", "/v1/sessions/%FF/children");
    EXPECT_EQ(kids.status, 400);
    EXPECT_EQ(http_request(srv.port(), "GET", "/v1/rooms/a%C0%AFb").status, 400);  // overlong '/'
    EXPECT_EQ(http_request(srv.port(), "GET", "/v1/rooms/%ED%A0%80").status, 400);  // a surrogate
    // A WebSocket upgrade whose session id is not UTF-8 is refused before the handshake...
    auto up = http_request(srv.port(), "GET", "/reflector/\xFF\xFE",
                           "", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    EXPECT_EQ(up.status, 400);
    // ...so the session listing stays valid JSON.
    auto s = http_request(srv.port(), "GET", "/sessions");
    ASSERT_EQ(s.status, 200);
    auto list = json::parse(s.body);
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0]["id"], "U1");
    // /files paths must be UTF-8 too.
    EXPECT_EQ(http_request(srv.port(), "PUT", "/files/a/%FF", "x").status, 400);

    // A valid UTF-8 room name still works.
    auto join = http_request(srv.port(), "POST", "/v1/rooms/%C3%A9t%C3%A9/join", R"({"user":"u"})",
                             "Content-Type: application/json\r\n");
    EXPECT_EQ(join.status, 200);
    EXPECT_EQ(json::parse(join.body)["room"], "\xC3\xA9t\xC3\xA9");

    // The process is alive and the running session still reflects, in order.
    EXPECT_EQ(http_request(srv.port(), "GET", "/health/live").status, 200);
    a.send_json(send_msg("after"));
    auto m = a.recv_action("RECV");
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)["args"][2], "after");
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

TEST(http, admin_api_closes_one_sessions_clients_and_drains)
{
    running_server srv;
    ws_client a(srv.port(), "/A1"), b(srv.port(), "/A1"), other(srv.port(), "/B1");
    for (auto* c : {&a, &b, &other}) {
        c->send_json(join_msg("v"));
        ASSERT_TRUE(c->recv_action("SYNC"));
    }
    a.send_json(send_msg("one"));
    ASSERT_TRUE(a.recv_action("RECV"));
    ASSERT_TRUE(b.recv_action("RECV"));
    auto list = json::parse(http_request(srv.port(), "GET", "/sessions").body);
    ASSERT_EQ(list.size(), 2u);
    for (auto const& s : list) {
        EXPECT_GE(s["age_s"].get<double>(), 0.0);
        EXPECT_LT(s["age_s"].get<double>(), 60.0);
        EXPECT_EQ(s["events"], s["id"] == "A1" ? 1 : 0);  // events sent by clients
    }
    EXPECT_EQ(http_request(srv.port(), "GET", "/admin/api/sessions/A1/close").status, 405);
    EXPECT_EQ(http_request(srv.port(), "POST", "/admin/api/sessions/%zz/close").status, 400);
    EXPECT_EQ(http_request(srv.port(), "POST", "/admin/api/sessions/A1/open").status, 404);
    auto r = http_request(srv.port(), "POST", "/admin/api/sessions/A1/close");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(json::parse(r.body)["closed"], 2);
    EXPECT_EQ(a.wait_close(), 1001);
    EXPECT_EQ(b.wait_close(), 1001);
    // The other session is untouched.
    other.send_json(send_msg("still here"));
    EXPECT_TRUE(other.recv_action("RECV"));
    EXPECT_EQ(json::parse(http_request(srv.port(), "POST", "/admin/api/sessions/NOPE/close").body)["closed"], 0);
    r = http_request(srv.port(), "POST", "/admin/api/drain");
    EXPECT_EQ(r.status, 202);
    EXPECT_EQ(http_request(srv.port(), "GET", "/health/ready").status, 503);
    EXPECT_EQ(other.wait_close(), 1001);
}
