#include "tls/tls_front.hpp"

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <cstring>
#include <stdexcept>

#include <sys/socket.h>
#include <unistd.h>

namespace lockstep::tls {
namespace {

namespace ssl = net::ssl;
using local_socket = net::local::stream_protocol::socket;

/// One TLS client: handshake, then bytes both ways between the TLS stream and the local
/// socket whose other end the plaintext server reads. Ends when either side ends.
class relay : public std::enable_shared_from_this<relay> {
public:
    relay(std::shared_ptr<ssl::context> ctx, tcp::socket sock)
        : ctx_(std::move(ctx)), tls_(std::move(sock), *ctx_), plain_(tls_.get_executor())
    {
    }

    void
    start(unique_function<void(tcp::socket)> serve)
    {
        timer_.expires_after(std::chrono::seconds(10));  // the handshake must not hang
        timer_.async_wait([w = weak_from_this()](error_code ec) {
            if (auto self = w.lock(); self && !ec && !self->shook_) {
                error_code ignored;
                self->tls_.next_layer().close(ignored);
            }
        });
        tls_.async_handshake(ssl::stream_base::server, [self = shared_from_this(), serve = std::move(serve)](
                                                           error_code ec) mutable { self->on_handshake(ec, serve); });
    }

private:
    void
    on_handshake(error_code ec, unique_function<void(tcp::socket)>& serve)
    {
        shook_ = true;
        timer_.cancel();
        if (ec) {
            spdlog::debug("tls: handshake failed: {}", ec.message());
            return;
        }
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
            spdlog::warn("tls: socketpair: {}", std::strerror(errno));
            return;
        }
        error_code e1, e2;
        plain_.assign(net::local::stream_protocol(), fds[0], e1);
        tcp::socket other(tls_.get_executor());
        other.assign(tcp::v4(), fds[1], e2);
        if (e1 || e2) {
            if (e1)
                ::close(fds[0]);
            if (e2)
                ::close(fds[1]);
            return;
        }
        serve(std::move(other));
        read_tls();
        read_plain();
    }

    void
    read_tls()
    {
        tls_.async_read_some(net::buffer(from_tls_), [self = shared_from_this()](error_code ec, std::size_t n) {
            if (ec) {
                error_code ignored;
                self->plain_.shutdown(local_socket::shutdown_send, ignored);
                return;
            }
            net::async_write(self->plain_, net::buffer(self->from_tls_.data(), n),
                             [self](error_code ec2, std::size_t) {
                                 if (!ec2)
                                     self->read_tls();
                             });
        });
    }

    void
    read_plain()
    {
        plain_.async_read_some(net::buffer(to_tls_), [self = shared_from_this()](error_code ec, std::size_t n) {
            if (ec) {
                // The server closed its end: close the TLS session too.
                self->tls_.async_shutdown([self](error_code) {
                    error_code ignored;
                    self->tls_.next_layer().close(ignored);
                });
                return;
            }
            net::async_write(self->tls_, net::buffer(self->to_tls_.data(), n), [self](error_code ec2, std::size_t) {
                if (ec2) {
                    error_code ignored;
                    self->plain_.close(ignored);
                    return;
                }
                self->read_plain();
            });
        });
    }

    std::shared_ptr<ssl::context> ctx_;
    ssl::stream<tcp::socket> tls_;
    local_socket plain_;
    net::steady_timer timer_{tls_.get_executor()};
    bool shook_ = false;
    std::array<char, 16384> from_tls_{};
    std::array<char, 16384> to_tls_{};
};

}  // namespace

front::front(std::string cert_file, std::string key_file)
    : cert_file_(std::move(cert_file)), key_file_(std::move(key_file))
{
    ctx_ = load();
}

front::~front() = default;

std::shared_ptr<ssl::context>
front::load() const
{
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                     ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    error_code ec;
    ctx->use_certificate_chain_file(cert_file_, ec);
    if (ec)
        throw std::runtime_error("cannot use --tls-cert " + cert_file_ + ": " + ec.message());
    ctx->use_private_key_file(key_file_, ssl::context::pem, ec);
    if (ec)
        throw std::runtime_error("cannot use --tls-key " + key_file_ + ": " + ec.message());
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
        throw std::runtime_error("--tls-key does not match --tls-cert");
    return ctx;
}

bool
front::reload()
{
    try {
        auto fresh = load();
        std::lock_guard lock(mu_);
        ctx_ = std::move(fresh);
        spdlog::info("tls: certificate reloaded from {}", cert_file_);
        return true;
    } catch (std::exception const& e) {
        spdlog::error("tls: reload failed, keeping the current certificate: {}", e.what());
        return false;
    }
}

void
front::start(tcp::socket sock, unique_function<void(tcp::socket)> serve)
{
    std::shared_ptr<ssl::context> ctx;
    {
        std::lock_guard lock(mu_);
        ctx = ctx_;
    }
    std::make_shared<relay>(std::move(ctx), std::move(sock))->start(std::move(serve));
}

}  // namespace lockstep::tls
