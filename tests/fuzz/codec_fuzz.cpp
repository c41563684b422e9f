// libFuzzer target for the codec and the session's argument handling.
//   scripts/fuzz.sh [seconds]   (builds with clang into build-fuzz/ and runs)
// Checks, besides "no crash, no sanitizer report":
//  - the scanner never rejects JSON that nlohmann/json accepts (below our depth limit);
//  - a SEND the codec accepts becomes a RECV whose element is valid JSON again.
#include "protocol/codec.hpp"
#include "protocol/json_scan.hpp"
#include "reflector/session.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

class sink_peer final : public lockstep::peer {
public:
    void deliver(lockstep::out_ptr const&) override {}
    bool backlogged() const noexcept override { return false; }
    void close(lockstep::protocol::close_code, std::string_view) override {}
    std::string const& tag() const noexcept override { return tag_; }

private:
    std::string tag_ = "fuzz";
};

int
depth_of(std::string_view s)
{
    int d = 0, mx = 0;
    for (char c : s) {
        if (c == '[' || c == '{')
            mx = std::max(mx, ++d);
        else if (c == ']' || c == '}')
            --d;
    }
    return mx;
}

}  // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    static bool quiet = [] {
        spdlog::set_level(spdlog::level::off);
        return true;
    }();
    (void)quiet;
    std::string_view text(reinterpret_cast<char const*>(data), size);

    // (nlohmann's lexer ends the input at a NUL byte, so such inputs are not compared.)
    if (text.find('\0') == std::string_view::npos && depth_of(text) < 60 && nlohmann::json::accept(text) &&
        !lockstep::json_scan::validate(text))
        std::abort();  // we rejected valid JSON

    std::vector<lockstep::json_scan::member> members;
    lockstep::codec::client_frame f;
    if (lockstep::codec::parse_client_frame(text, f, members) != lockstep::codec::parse_result::ok)
        return 0;
    std::vector<std::string_view> elems;
    std::string_view rest;
    if (lockstep::codec::split_send_args(f.args, rest, elems)) {
        auto m = lockstep::codec::make_recv("S", 1, 2, rest);
        if (!lockstep::json_scan::validate(m->element()))
            std::abort();
    }

    // Drive a session with whatever arguments the frame carries.
    lockstep::manual_clock clock;
    lockstep::session_options opts;
    lockstep::session s("S", clock, opts);
    sink_peer p;
    s.join(p, R"({"version":1,"apiKey":"x","user":"u","appId":"a","persistentId":"p"})");
    if (f.args.empty())
        return 0;
    switch (f.act) {
    case lockstep::codec::action::join: s.join(p, f.args); break;
    case lockstep::codec::action::send: s.send(p, f.args, f.tags); break;
    case lockstep::codec::action::tutti: s.tutti(p, f.args); break;
    case lockstep::codec::action::snap: s.snap(p, f.args); break;
    case lockstep::codec::action::save: s.save(p, f.args); break;
    case lockstep::codec::action::ticks: s.ticks(p, f.args); break;
    case lockstep::codec::action::ping: s.ping(p, f.args); break;
    default: break;
    }
    clock.advance_ms(1500);
    s.on_timer();
    return 0;
}
