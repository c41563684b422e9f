// The codec: the only place that turns client frames into typed messages and typed
// reflector messages into JSON text.
#pragma once

#include "protocol/frame.hpp"
#include "protocol/json_scan.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::codec {

enum class action { join, send, tutti, snap, save, ping, pulse, log, ticks, unknown };

/// A parsed client frame. Views point into the frame text, which must outlive it.
struct client_frame {
    action act = action::unknown;
    std::string_view action_name;  // raw, for logging unknown actions
    std::string_view args;         // raw JSON of "args", empty if absent
    std::string_view tags;         // raw JSON of "tags", empty if absent
};

enum class parse_result { ok, not_json, not_object };

/// Validates the whole frame and extracts action/args/tags.
parse_result
parse_client_frame(std::string_view text, client_frame& out, std::vector<json_scan::member>& scratch);

/// SEND args split: `[t, 0, payload, ...]` -> the raw text after the second element
/// (payload and everything the sender appended), without the closing bracket.
/// Returns false when args is not an array of at least three elements.
bool
split_send_args(std::string_view args, std::string_view& rest, std::vector<std::string_view>& scratch);

/// Builds `{"id":"<id>","action":"RECV","args":[time,seq,<rest>]}` with the element
/// recorded for the log. `rest` is copied verbatim.
out_ptr
make_recv(std::string_view session_id, std::int64_t time, std::uint32_t seq, std::string_view rest);

/// `{"id":"<id>","action":"TICK","args":time}`
out_ptr
make_tick(std::string_view session_id, std::int64_t time);

/// `{"id":"<id>","action":"<action>"[,"args":<args_json>]}` (args omitted if empty).
out_ptr
make_simple(std::string_view session_id, std::string_view action, std::string_view args_json = {});

/// `{"action":"PONG","args":<args_json>}` (no id, as the client expects).
out_ptr
make_pong(std::string_view args_json);

/// Appends `s` as a JSON string literal (quoted and escaped).
void
append_json_string(std::string& out, std::string_view s);

}  // namespace lockstep::codec
