// TLS on the reflector's own port (--tls-cert/--tls-key): wss:// and https://.
//
// Each accepted socket does its TLS handshake here (Asio's SSL stream over OpenSSL),
// then its plaintext is relayed through a local socket pair to the ordinary HTTP /
// WebSocket path, which serves the other end exactly as it serves a TCP client. So the
// plaintext path (and its non-blocking raw writes) stays as it is, at the cost of one
// extra copy per byte for TLS clients. The certificate and key are read again on
// reload() (SIGHUP); connections already open keep the certificate they started with.
#pragma once

#include "server/internal.hpp"
#include "common/unique_function.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace boost::asio::ssl {
class context;
}

namespace lockstep::tls {

class front {
public:
    /// Reads the PEM certificate chain and key; throws std::runtime_error if they cannot
    /// be used (start-up).
    front(std::string cert_file, std::string key_file);
    ~front();

    /// Reads the files again. On failure keeps the current certificate, logs, returns false.
    bool reload();

    /// Serves `sock` over TLS: after the handshake `serve` is called on the socket's
    /// executor with the plaintext end (a local socket, wrapped as a tcp::socket).
    void start(tcp::socket sock, unique_function<void(tcp::socket)> serve);

private:
    std::shared_ptr<net::ssl::context> load() const;
    std::string cert_file_, key_file_;
    std::mutex mu_;
    std::shared_ptr<net::ssl::context> ctx_;
};

}  // namespace lockstep::tls
