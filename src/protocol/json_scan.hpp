// A strict, allocation-free JSON validator that reports where values sit in the input.
//
// The reflector must not re-serialise application payloads: a SEND's payload is copied
// byte for byte into the RECV it becomes. This scanner validates the whole frame (so the
// reflector never forwards invalid JSON) and returns string_views into the original
// text; nlohmann/json is used only for the small, rare control messages.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace lockstep::json_scan {

/// One member of a JSON object: raw key (without quotes, escapes not decoded) and the
/// raw text of its value.
struct member {
    std::string_view key;
    std::string_view value;
};

/// Maximum nesting depth accepted in any frame.
inline constexpr int max_depth = 64;

/// Validates that `text` holds exactly one JSON object (surrounding whitespace allowed)
/// and appends its members to `out`. Returns false on any syntax error.
bool
scan_object(std::string_view text, std::vector<member>& out);

/// Validates that `text` holds exactly one JSON array and appends the raw text of each
/// element to `out`. Returns false if it is not a valid array.
bool
scan_array(std::string_view text, std::vector<std::string_view>& out);

/// Validates that `text` is exactly one JSON value of any kind.
bool
validate(std::string_view text);

/// If `value` is a JSON string without escape sequences, its contents; else nullopt-like
/// empty result with ok=false.
bool
simple_string(std::string_view value, std::string_view& out);

}  // namespace lockstep::json_scan
