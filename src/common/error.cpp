#include "common/error.hpp"

#include <string>

namespace lockstep {
namespace {

class category final : public std::error_category {
public:
    char const*
    name() const noexcept override
    {
        return "lockstep";
    }

    std::string
    message(int ev) const override
    {
        switch (static_cast<error>(ev)) {
        case error::not_json: return "frame is not valid JSON";
        case error::not_object: return "frame is not a JSON object";
        case error::bad_args: return "malformed action arguments";
        case error::binary_frame: return "binary frames are not supported";
        case error::queue_overflow: return "outbound queue limit exceeded";
        case error::join_timeout: return "no JOIN received in time";
        case error::no_session_id: return "no session id in the URL path";
        case error::draining: return "server is draining";
        }
        return "unknown lockstep error";
    }
};

}  // namespace

std::error_category const&
error_category() noexcept
{
    static category const c;
    return c;
}

}  // namespace lockstep
