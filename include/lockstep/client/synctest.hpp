// A determinism check in the spirit of GGPO's synctest backend: replays a recorded input
// log (session::recorded(), or one built by hand) through fresh replicas and compares
// their state hashes. It finds models that read hidden state (statics, wall clocks,
// unseeded random numbers, pointer order) and save()/load() pairs that forget something.
//
// Thread safety: a free function with no shared state; call it from any thread.
#pragma once

#include <lockstep/client/model.hpp>
#include <lockstep/client/session.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace lockstep::client {

struct synctest_options {
    model_registry const* models = nullptr;
    std::string root_model;
    json root_args;
    std::string session_id = "synctest";  // seeds the random generator
    /// Inputs per window: after each window the state of the first replica is saved,
    /// loaded into a fresh replica, and the next window is run on both.
    std::size_t window = 8;
};

struct synctest_result {
    bool ok = true;
    std::size_t checks = 0;          // hash comparisons made
    std::size_t failed_at = 0;       // input index after which the first mismatch showed
    std::string what;                // "two fresh replicas" or "snapshot and restore"
    std::string first_difference;    // JSON pointer of the first differing state value
};

/// Runs the log (events and ticks, in order) through (a) two replicas built fresh and
/// (b) at every window boundary, a replica restored from the first one's snapshot;
/// compares hashes after every window. Stops at the first mismatch.
synctest_result
synctest(synctest_options const& options, std::vector<recorded_message> const& log);

}  // namespace lockstep::client
