// process_* series (CPU, memory, file descriptors, start time) for /metrics.
#pragma once

#include <string>

namespace lockstep {

/// Prometheus text exposition of the standard process_* series, read from /proc.
std::string
render_process_metrics();

}  // namespace lockstep
