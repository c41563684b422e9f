// Logging set-up: spdlog to stderr, as text for people or one JSON object per line for
// log collectors (--log-format json).
#pragma once

#include <spdlog/common.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace lockstep {

/// Fields of a structured log line. With --log-format json they are members of the line's
/// object ({"ts":…,"level":…,"event":"connection_end","session":…,"msg":…}); as text they
/// follow the message as key=value. Empty strings and negative numbers are left out.
struct log_fields {
    std::string_view event;    // what happened: session_start, session_end, connection_end, ...
    std::string_view session;  // session id
    std::string_view app;      // appId of the session
    std::string_view name = {};  // session name
    std::int64_t conn = -1;    // connection serial (the c<N> of other lines)
    int code = -1;             // WebSocket close code
    std::int64_t bytes_in = -1, bytes_out = -1, messages_in = -1, messages_out = -1;
    std::int64_t clients = -1; // clients ever joined (session_end)
    double seconds = -1;       // how long the connection or session lasted
};

/// Logs `msg` with `fields` at `level` through the default logger.
void
log_event(spdlog::level::level_enum level, log_fields const& fields, std::string_view msg);

/// Installs the default logger, writing to `sink` (default: stderr). Throws
/// std::invalid_argument on an unknown format.
void
setup_logging(std::string const& level, std::string const& format, spdlog::sink_ptr sink = nullptr);

}  // namespace lockstep
