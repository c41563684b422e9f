// Who may use what on the reflector port (docs/security.md). Decides from the request
// line and headers alone, before a body is read; no Asio, no Beast.
//
//   /health/*, /, /healthz, CORS preflights        open
//   /metrics                                        admin token, unless --metrics-open
//   /sessions, /admin*, /v1/reflectors              admin token
//   /files/*, other /v1/*                           user token (a JWT) or the admin token
//   WebSocket upgrades                              user token, or a live router seat
//                                                   (/r/<seat>/<id>: the seat is the credential)
// With neither --auth-secret nor --auth-public-key, user routes are open; with no
// --admin-token, admin routes are open unless user auth is on (then they are closed).
// --allowed-origins applies to every request that carries an Origin header.
#pragma once

#include "auth/verifier.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::auth {

struct settings {
    std::string secret;                    // --auth-secret (HS256)
    std::string public_key_file;           // --auth-public-key (RS256/ES256 PEM)
    std::string admin_token;               // --admin-token
    bool metrics_open = false;             // --metrics-open
    std::vector<std::string> allowed_origins;  // --allowed-origins (empty: any)
};

/// The request as the gate sees it.
struct request_view {
    std::string_view method;         // "GET", "PUT", ...
    std::string_view target;         // path and query, as received
    std::string_view authorization;  // Authorization header value, or ""
    std::string_view origin;         // Origin header value, or ""
    bool upgrade = false;            // a WebSocket upgrade
};

/// What the gate decided.
struct decision {
    int status = 200;                // 200: go on; else 401/403 (the answer to send)
    std::string reason;              // for the answer and the log; never a token
    std::optional<grant> user;       // the verified user token, if one was given
    bool admin = false;              // the admin token was given
    bool via_seat = false;           // admitted by a router seat in the path
    std::string target;              // the target to route (the /files token pair removed)
};

/// What an accepted WebSocket carries to its JOIN.
struct admission {
    std::optional<grant> user;  // checked against the JOIN's appId and name
    bool via_seat = false;      // the router seat must be for the session JOINed
};

/// `appId` and `name` of a JOIN's arguments ("" where absent or not strings).
void
join_names(std::string_view join_args, std::string& app_id, std::string& name);

class gate {
public:
    /// Reads the key file; throws std::runtime_error on a bad key (start-up only).
    explicit gate(settings s);

    /// True when user tokens are required (a secret or a public key is configured).
    bool user_auth() const noexcept { return verifier_ != nullptr; }
    bool admin_auth() const noexcept { return !s_.admin_token.empty(); }

    /// Decides on a request at `now_s`. `seat_live` answers whether a router seat token
    /// from an upgrade path is live (asked only for upgrades without a user token).
    decision check(request_view const& r, std::int64_t now_s,
                   std::function<bool(std::string const&)> const& seat_live = {}) const;

    /// Whether `origin` may use this reflector (always true without --allowed-origins).
    bool origin_allowed(std::string_view origin) const;

    /// `/v1/rooms/<room>/join|leave` with a user token that names a user: the body's
    /// `user` must be that user. Returns 0 if fine, else the status (403) and `why`.
    int check_seat_body(decision const& d, std::string_view path, std::string_view body, std::string& why) const;

    settings const& config() const noexcept { return s_; }

private:
    settings s_;
    std::unique_ptr<verifier> verifier_;
};

}  // namespace lockstep::auth
