// Logging set-up: spdlog to stderr, as text for people or one JSON object per line for
// log collectors (--log-format json).
#pragma once

#include <string>

namespace lockstep {

/// Installs the default logger. Throws std::invalid_argument on an unknown format.
void
setup_logging(std::string const& level, std::string const& format);

}  // namespace lockstep
