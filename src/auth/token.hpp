// Where a credential travels in a request, and how it is kept out of logs.
//
// The unmodified Multisynq/Croquet client cannot add headers or query parameters to the
// reflector connection, so a token travels in the URL path as a segment pair
// `t/<token>`: `wss://host/t/<jwt>` becomes `wss://host/t/<jwt>/<sessionId>`, and
// `https://host/files/t/<jwt>` becomes `.../files/t/<jwt>/<blob path>`. Other callers
// may send `Authorization: Bearer <jwt>` or `?token=<jwt>`. No Boost, no JWT library:
// this is text handling only (fuzzed by tests/fuzz/token_fuzz.cpp).
#pragma once

#include <string>
#include <string_view>

namespace lockstep::auth {

/// Longest token accepted anywhere; longer ones are refused before any parsing.
inline constexpr std::size_t max_token_bytes = 8192;

/// True for the shape of a compact JWS: three non-empty base64url parts joined by '.'.
bool
looks_like_jwt(std::string_view s) noexcept;

/// A WebSocket upgrade path (`/<prefix...>/<sessionId>`, no query): the token of the
/// first `t/<jwt>` segment pair that ends before the last segment, or "" if none.
std::string
ws_path_token(std::string_view path);

/// A `/files/...` path (no query). If it starts with `/files/t/<jwt>/`, returns the
/// token and sets `stripped` to the path without the pair (`/files/<blob path>`);
/// otherwise returns "" and sets `stripped` to `path`.
std::string
files_path_token(std::string_view path, std::string& stripped);

/// The token of an `Authorization: Bearer <token>` header value, or "".
std::string
bearer_token(std::string_view authorization);

/// The value of the first `token=` query parameter of a request target, or "".
std::string
query_token(std::string_view target);

/// The request target with every credential replaced by `***` (path pairs `t/<x>`,
/// router seat pairs `r/<x>`, and `token=` query values), for log lines.
std::string
redact(std::string_view target);

/// Compares two secrets in time that does not depend on where they differ.
bool
equal_secret(std::string_view a, std::string_view b) noexcept;

}  // namespace lockstep::auth
