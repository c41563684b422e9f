// lockstep's error codes for asynchronous paths (exceptions are used only at start-up).
#pragma once

#include <system_error>

namespace lockstep {

enum class error {
    not_json = 1,        // frame is not valid JSON
    not_object,          // frame is JSON but not an object
    bad_args,            // action arguments of the wrong shape
    binary_frame,        // a binary frame (clients only send text)
    queue_overflow,      // outbound queue over --max-queue-bytes
    join_timeout,        // no JOIN within --join-timeout-ms
    no_session_id,       // upgrade path has an empty last segment
    draining,            // server is draining
};

std::error_category const&
error_category() noexcept;

inline std::error_code
make_error_code(error e) noexcept
{
    return {static_cast<int>(e), error_category()};
}

}  // namespace lockstep

template <>
struct std::is_error_code_enum<lockstep::error> : std::true_type {};
