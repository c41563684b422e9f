// One plain-HTTP connection on the reflector port (I/O only: the routes are in
// src/http/), and the hand-off of WebSocket upgrades to the worker of their session.
#include "http/routes.hpp"
#include "server/internal.hpp"

#include "auth/token.hpp"
#include "common/text.hpp"

#include <spdlog/spdlog.h>

#include <optional>

namespace lockstep {
namespace {

constexpr std::size_t max_header_bytes = 16 * 1024;
constexpr std::size_t max_plain_body_bytes = 64 * 1024;

class http_connection : public std::enable_shared_from_this<http_connection> {
public:
    http_connection(server_state& st, worker& w, tcp::socket sock, limits::ticket ticket)
        : st_(st), w_(w), stream_(std::move(sock)), ticket_(std::move(ticket))
    {
        error_code ec;
        auto peer = stream_.socket().remote_endpoint(ec);
        if (!ec) {
            ip_ = peer.address().to_string();
            loopback_ = peer.address().is_loopback();
        } else {
            // A TLS client's plaintext arrives over a local socket: its address was
            // taken when the TCP connection was accepted.
            ip_ = ticket_.address();
            loopback_ = ticket_.loopback();
        }
    }

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
        bool is_upgrade = websocket::is_upgrade(h);
        if (!within_limits(h, is_upgrade))
            return;
        if (!admit(h, is_upgrade))
            return;
        if (is_upgrade)
            return upgrade();
        std::string_view target(h.target().data(), h.target().size());
        bool is_put = h.method() == http::verb::put && target.rfind("/files/", 0) == 0;
        std::size_t limit = is_put ? st_.cfg.max_blob_bytes : max_plain_body_bytes;
        if (auto len = header_->content_length(); len && *len > limit) {
            spdlog::info("http: {} body of {} bytes over the limit of {}", auth::redact(target.substr(0, 200)), *len,
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
        if (header_->get().method() == http::verb::put) {
            upload_ = st_.limits_->begin_upload();
            if (!upload_) {
                spdlog::info("http: upload refused: over --max-uploads");
                return fail_status(http::status::service_unavailable, "too many uploads in progress, retry later", false);
            }
        }
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
        // An upload's slot is held until its answer is written (the blob is on disk by
        // then): a drain waits for it, --max-uploads counts it.
        if (ec == http::error::body_limit)
            return fail_status(http::status::payload_too_large, "body too large", false);
        if (ec)
            return shutdown();
        stream_.expires_never();
        auto self = shared_from_this();
        auto req = body_->release();
        // Kept for the log line (credentials redacted): the request moves into the route.
        std::string what = fmt::format("{} {}", std::string_view(req.method_string().data(), req.method_string().size()),
                                       auth::redact(std::string_view(req.target().data(), std::min<std::size_t>(req.target().size(), 200))));
        // A /files token pair is not part of the blob path.
        if (decision_.target.size() != req.target().size())
            req.target(decision_.target);
        std::string why;
        if (int status = st_.gate->check_seat_body(decision_, decision_.target.substr(0, decision_.target.find('?')),
                                                   req.body(), why)) {
            spdlog::info("http: {} refused: {}", what, why);
            return fail_status(static_cast<http::status>(status), why, false);
        }
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
            self->upload_.reset();
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

    /// Edge limits (docs/operations.md, "Limits"): the client's address (X-Forwarded-For
    /// with --trust-proxy) within --max-connections-per-ip, and /v1 and /files requests
    /// within --max-http-rate. Answers the refusal itself and returns false.
    bool
    within_limits(http::request_parser<http::empty_body>::value_type const& h, bool is_upgrade)
    {
        if (st_.cfg.trust_proxy && !ticket_.per_ip_counted()) {
            if (auto it = h.find("X-Forwarded-For"); it != h.end()) {
                std::string_view xff(it->value().data(), it->value().size());
                auto last = xff.substr(xff.rfind(',') + 1);
                while (!last.empty() && last.front() == ' ')
                    last.remove_prefix(1);
                while (!last.empty() && last.back() == ' ')
                    last.remove_suffix(1);
                error_code ec;
                auto a = net::ip::make_address(std::string(last), ec);
                if (!ec) {
                    ip_ = a.to_string();
                    loopback_ = a.is_loopback();
                }
            }
            if (!st_.limits_->take_ip(ticket_, ip_, loopback_)) {
                spdlog::info("http: over --max-connections-per-ip for a forwarded address: 503");
                fail_status(http::status::service_unavailable, "too many connections from this address", false);
                return false;
            }
        }
        std::string_view target(h.target().data(), h.target().size());
        if (!is_upgrade && (target.rfind("/v1/", 0) == 0 || target.rfind("/files/", 0) == 0 ||
                            target.rfind("/t/", 0) == 0)) {
            if (!st_.limits_->allow_request(ip_, loopback_)) {
                fail_status(http::status::too_many_requests, "too many requests from this address, slow down", false);
                return false;
            }
        }
        return true;
    }

    /// Access control (docs/security.md), on the request line and headers alone, before
    /// any body is read. Answers the refusal itself and returns false.
    bool
    admit(http::request_parser<http::empty_body>::value_type const& h, bool is_upgrade)
    {
        std::string_view target(h.target().data(), h.target().size());
        auto header = [&](http::field f) {
            auto it = h.find(f);
            return it == h.end() ? std::string_view() : std::string_view(it->value().data(), it->value().size());
        };
        auth::request_view rv{std::string_view(h.method_string().data(), h.method_string().size()), target,
                              header(http::field::authorization), header(http::field::origin), is_upgrade};
        auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
        decision_ = st_.gate->check(rv, now_s, [this](std::string const& path) {
            auto seat = router::token_from_path(path);
            return !seat.empty() && st_.ask_directory(
                                        [seat](router::directory& d) { return d.seat_live(seat); },
                                        std::chrono::seconds(2));
        });
        if (decision_.status == 200)
            return true;
        spdlog::info("http: {} {} refused {}: {}", rv.method, auth::redact(target.substr(0, 200)), decision_.status,
                     decision_.reason);
        fail_status(static_cast<http::status>(decision_.status), decision_.reason, false);
        return false;
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
        auth::admission adm{std::move(decision_.user), decision_.via_seat};
        start_websocket(st_, w_, stream_.release_socket(), std::move(req), std::move(id), std::move(adm),
                        std::move(ticket_));
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
    auth::decision decision_;  // of the request being read
    limits::ticket ticket_;    // this socket's place in the connection counts
    std::optional<limits::upload_slot> upload_;  // from a PUT's body until its answer is written
    std::string ip_;           // client address (X-Forwarded-For with --trust-proxy)
    bool loopback_ = false;
};

}  // namespace

void
start_http(server_state& st, worker& w, tcp::socket sock, limits::ticket ticket)
{
    std::make_shared<http_connection>(st, w, std::move(sock), std::move(ticket))->start();
}

}  // namespace lockstep
