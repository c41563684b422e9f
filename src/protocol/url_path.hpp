// URL path pieces shared by the HTTP routes (/v1/...) and the blob store (/files/...):
// percent-decoding and splitting into decoded segments. No allocation beyond the
// results; no exceptions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::url_path {

/// Decodes %XX escapes (either hex case). Every other byte, '+' included, is kept as it
/// is. Returns nullopt when a '%' is not followed by two hex digits.
std::optional<std::string>
percent_decode(std::string_view s);

/// Splits `path` at '/' and percent-decodes each segment. An empty path gives no
/// segments, and one trailing '/' adds none ("a/b/" is {"a","b"}); other empty segments
/// are kept ("a//b" is {"a","","b"}). Returns false on a bad escape.
bool
split_segments(std::string_view path, std::vector<std::string>& out);

}  // namespace lockstep::url_path
