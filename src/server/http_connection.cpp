// One plain-HTTP connection on the reflector port (I/O only: the routes are in
// src/http/), and the hand-off of WebSocket upgrades to the worker of their session.
#include "http/routes.hpp"
#include "server/internal.hpp"

#include "common/text.hpp"

#include <spdlog/spdlog.h>

#include <optional>

namespace lockstep {
namespace {

constexpr std::size_t max_header_bytes = 16 * 1024;
constexpr std::size_t max_plain_body_bytes = 64 * 1024;

class http_connection : public std::enable_shared_from_this<http_connection> {
public:
    http_connection(server_state& st, worker& w, tcp::socket sock) : st_(st), w_(w), stream_(std::move(sock)) {}

    void
    start()
    {
        do_read();
    }

private:
    void
    do_read()
    {
        header_.emplace();
        header_->header_limit(max_header_bytes);
        header_->body_limit(boost::none);
        stream_.expires_after(std::chrono::seconds(30));
        http::async_read_header(stream_, buf_, *header_,
                                [self = shared_from_this()](error_code ec, std::size_t) { self->on_header(ec); });
    }

    void
    on_header(error_code ec)
    {
        if (ec) {
            if (ec != http::error::end_of_stream && ec != beast::error::timeout && ec != net::error::eof &&
                ec != net::error::connection_reset)
                return bad_request(ec.message());
            return shutdown();
        }
        auto& h = header_->get();
        if (websocket::is_upgrade(h))
            return upgrade();
        std::string_view target(h.target().data(), h.target().size());
        bool is_put = h.method() == http::verb::put && target.rfind("/files/", 0) == 0;
        std::size_t limit = is_put ? st_.cfg.max_blob_bytes : max_plain_body_bytes;
        if (auto len = header_->content_length(); len && *len > limit) {
            spdlog::info("http: {} body of {} bytes over the limit of {}", std::string(target.substr(0, 200)), *len,
                         limit);
            return fail_status(http::status::payload_too_large, "body too large", false);
        }
        if (h[http::field::expect] == "100-continue") {
            auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, h.version());
            http::async_write(stream_, *cont, [self = shared_from_this(), cont, limit](error_code ec, std::size_t) {
                if (ec)
                    return self->shutdown();
                self->read_body(limit);
            });
            return;
        }
        read_body(limit);
    }

    void
    read_body(std::size_t limit)
    {
        body_.emplace(std::move(*header_));
        body_->body_limit(limit);
        // Large blobs over slow links: 10 minutes for the whole body.
        stream_.expires_after(std::chrono::minutes(10));
        http::async_read(stream_, buf_, *body_,
                         [self = shared_from_this()](error_code ec, std::size_t) { self->on_body(ec); });
    }

    void
    on_body(error_code ec)
    {
        if (ec == http::error::body_limit)
            return fail_status(http::status::payload_too_large, "body too large", false);
        if (ec)
            return shutdown();
        stream_.expires_never();
        auto self = shared_from_this();
        auto req = body_->release();
        // Kept for the log line: the request itself moves into the route.
        std::string what = fmt::format("{} {}", std::string_view(req.method_string().data(), req.method_string().size()),
                                       std::string_view(req.target().data(), std::min<std::size_t>(req.target().size(), 200)));
        auto replied = std::make_shared<std::atomic<bool>>(false);
        try {
            http_routes::handle(st_, std::move(req), [self, replied](http::message_generator msg) mutable {
                replied->store(true);
                // Routes may answer from another thread (directory thread, disk pool,
                // other workers): back onto this connection's worker through its entry point.
                auto& w = self->w_;
                w.defer([self = std::move(self), msg = std::move(msg)]() mutable { self->write(std::move(msg)); });
            });
        } catch (std::exception const& e) {
            // Nothing a request contains may end the process: answer 500 and log it.
            spdlog::error("http: {} failed: {}", what, e.what());
            if (!replied->load())
                fail_status(http::status::internal_server_error, "internal error", false);
            else
                shutdown();
        }
    }

    void
    write(http::message_generator msg)
    {
        bool keep = msg.keep_alive();
        // Blob downloads may be large: same window as uploads.
        stream_.expires_after(std::chrono::minutes(10));
        beast::async_write(stream_, std::move(msg), [self = shared_from_this(), keep](error_code ec, std::size_t) {
            if (ec || !keep)
                return self->shutdown();
            self->do_read();
        });
    }

    void
    fail_status(http::status status, std::string const& msg, bool keep)
    {
        http_routes::request req;
        req.version(11);
        req.keep_alive(keep);
        write(http_routes::json_error(req, status, msg));
    }

    void
    bad_request(std::string const& why)
    {
        spdlog::debug("http: bad request: {}", why);
        fail_status(http::status::bad_request, "bad request: " + why, false);
    }

    void
    upgrade()
    {
        auto hreq = header_->release();
        http::request<http::string_body> req;
        req.base() = std::move(hreq.base());
        std::string_view target(req.target().data(), req.target().size());
        target = target.substr(0, target.find_first_of("?#"));
        // Only the last path segment names the session: "/<id>" and "/reflector/<id>".
        auto id = std::string(target.substr(target.rfind('/') + 1));
        if (!valid_utf8(target)) {
            spdlog::info("http: upgrade path is not UTF-8: 400");
            return fail_status(http::status::bad_request, "path is not UTF-8", false);
        }
        if (st_.draining()) {
            return fail_status(http::status::service_unavailable, "draining", false);
        }
        stream_.expires_never();
        start_websocket(st_, w_, stream_.release_socket(), std::move(req), std::move(id));
    }

    void
    shutdown()
    {
        error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }

    server_state& st_;
    worker& w_;
    beast::tcp_stream stream_;
    beast::flat_buffer buf_;
    std::optional<http::request_parser<http::empty_body>> header_;
    std::optional<http::request_parser<http::string_body>> body_;
};

}  // namespace

void
start_http(server_state& st, worker& w, tcp::socket sock)
{
    std::make_shared<http_connection>(st, w, std::move(sock))->start();
}

}  // namespace lockstep
