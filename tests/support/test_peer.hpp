// A peer that records what a session sends it, decoded from the WebSocket frames.
#pragma once

#include "protocol/ws_frame.hpp"
#include "reflector/session.hpp"

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace lockstep::test {

/// Decodes concatenated server frames into their text messages, joining _CHUNK
/// sequences (the code under test: src/protocol/ws_frame.hpp).
inline std::vector<std::string>
decode_frames(std::string_view wire)
{
    std::vector<std::string> out;
    protocol::chunk_assembler chunks;
    protocol::frame_view f;
    while (auto used = protocol::parse_frame(wire, f)) {
        wire.remove_prefix(used);
        std::string_view message;
        auto st = chunks.feed(f.payload, message);
        if (st == protocol::chunk_assembler::status::malformed)
            throw std::runtime_error("test_peer: malformed _CHUNK message");
        if (st == protocol::chunk_assembler::status::complete)
            out.emplace_back(message);
    }
    if (!wire.empty())
        throw std::runtime_error("test_peer: a partial frame was delivered");
    return out;
}

class test_peer final : public peer {
public:
    explicit test_peer(std::string name = "p") : tag_(std::move(name)) {}

    void
    deliver(out_ptr const& m) override
    {
        raw.push_back(m);
        for (auto& text : decode_frames(m->wire()))
            frames.push_back(nlohmann::json::parse(text));
    }
    bool backlogged() const noexcept override { return backlog; }
    void
    close(protocol::close_code code, std::string_view reason) override
    {
        closed = static_cast<int>(code);
        close_reason = std::string(reason);
    }
    std::string const& tag() const noexcept override { return tag_; }

    /// Frames with the given action, in order.
    std::vector<nlohmann::json>
    of(std::string const& action) const
    {
        std::vector<nlohmann::json> v;
        for (auto const& f : frames)
            if (f.value("action", "") == action)
                v.push_back(f);
        return v;
    }
    /// RECV frames whose payload is a reflector object with this `what`.
    std::vector<nlohmann::json>
    events(std::string const& what) const
    {
        std::vector<nlohmann::json> v;
        for (auto const& f : of("RECV"))
            if (f["args"][2].is_object() && f["args"][2].value("what", "") == what)
                v.push_back(f["args"][2]);
        return v;
    }
    void clear() { frames.clear(); raw.clear(); }

    std::vector<nlohmann::json> frames;
    std::vector<out_ptr> raw;
    bool backlog = false;
    int closed = 0;
    std::string close_reason;

private:
    std::string tag_;
};

/// Advances `clock` in 1 ms steps for `ms` and runs the session's timer whenever it is
/// due, as the worker does; `after(s)` runs after each timer call.
template <class After = void (*)(session&)>
void
run_session_ms(session& s, manual_clock& clock, int ms, After after = [](session&) {})
{
    for (int i = 0; i < ms; ++i) {
        clock.advance_ms(1);
        if (s.next_deadline_us() <= clock.now_us()) {
            s.on_timer();
            after(s);
        }
    }
}

}  // namespace lockstep::test
