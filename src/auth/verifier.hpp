// JWT verification (libjwt) and what a verified token grants.
//
// A token is accepted when its signature verifies with the configured key under an
// algorithm of that key's family (HS256/384/512 for --auth-secret, RS* or ES* for the
// key in --auth-public-key: the algorithm named in the token's header must match the
// key, so a token signed "HS256" with the public key as secret is refused), when it
// has an integer `exp` in the future and, if present, an `nbf` in the past.
// Claims (docs/security.md):
//   sub       the user (optional; when present, /v1 seat requests must be for this user)
//   app       appId this token is for (optional; `*` at the end matches any suffix)
//   sessions  array of session-name patterns (optional; same `*` rule)
//   scope     "reflector", "files" or "api": the token is good for WebSocket upgrades,
//             /files or /v1 only (optional; absent: all three)
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::auth {

/// What a verified token allows.
struct grant {
    std::string user;                                // `sub`, may be empty
    std::int64_t expires = 0;                        // `exp`, seconds since the epoch
    std::optional<std::string> app;                  // `app`: allowed appId pattern
    std::optional<std::vector<std::string>> sessions;  // `sessions`: allowed name patterns
    std::string scope;                               // `scope`: "", "reflector", "files" or "api"
    bool expired = false;                            // past `exp` (only with allow_expired)
};

/// Seconds of clock difference tolerated for `exp` and `nbf`.
inline constexpr std::int64_t leeway_s = 30;

class verifier {
public:
    enum class kind { hmac, rsa, ec };

    /// HS256/HS384/HS512 with a shared secret.
    static std::unique_ptr<verifier> from_secret(std::string secret);
    /// RS* or ES* with a PEM public key; throws std::runtime_error if it is neither.
    static std::unique_ptr<verifier> from_public_key_pem(std::string pem);

    /// Verifies `token` at `now_s` (seconds since the epoch). On failure returns nullopt
    /// and a short reason (never the token) in `why`.
    /// `allow_expired`: a token past its `exp` passes with `expired` set (reads of blob
    /// URLs handed out in SYNC, docs/security.md); everything else is still checked.
    std::optional<grant> verify(std::string_view token, std::int64_t now_s, std::string& why,
                                bool allow_expired = false) const;

    kind key_kind() const noexcept { return kind_; }

private:
    verifier(kind k, std::string key) : kind_(k), key_(std::move(key)) {}
    kind kind_;
    std::string key_;
};

/// `*` at the end of `pattern` matches any suffix; otherwise the match is exact.
bool
pattern_match(std::string_view pattern, std::string_view value) noexcept;

/// Whether `g` allows joining the session `name` of app `app_id`. The JOIN's `name`
/// is `<appId>/<session name>` for the Multisynq client; a name without '/' is
/// matched whole. Fills `why` when it does not.
bool
allows_session(grant const& g, std::string_view app_id, std::string_view name, std::string& why);

}  // namespace lockstep::auth
