// Text checks for bytes that come from the network: every name, id and path that reaches
// a JSON document (an HTTP answer, /sessions, a log line) passes through these first.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace lockstep {

/// True when `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
/// above U+10FFFF). JSON texts must be UTF-8, so bytes that fail this are refused where
/// they enter instead of failing later inside a serializer.
bool
valid_utf8(std::string_view s) noexcept;

/// Serializes `j` without ever throwing: a string that is not UTF-8 (which validation at
/// the edges should already have refused) comes out with U+FFFD in place of the bad bytes.
inline std::string
safe_dump(nlohmann::json const& j)
{
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// The segments of a URL path, leading slash dropped ("/a//b" gives "a", "", "b"); they
/// point into `path`.
std::vector<std::string_view>
path_segments(std::string_view path);

/// A URL or request target with every credential replaced by `***` (path pairs `t/<x>`,
/// router seat pairs `r/<x>`, and `token=` query values), for log lines.
std::string
redact_credentials(std::string_view target);

}  // namespace lockstep
