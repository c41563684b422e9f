// libFuzzer target for the JSON scanner, the codec and the session's argument handling.
//   scripts/fuzz.sh [seconds]   (builds with clang into build-fuzz/ and runs every target)
//
// The oracle is nlohmann/json (an independent parser), checked in both directions:
//  - the scanner never rejects JSON that nlohmann accepts (within the depth limit);
//  - the scanner never accepts text that nlohmann rejects: payloads are forwarded byte
//    for byte to every client, so this is the dangerous direction.
// Documented differences (docs/protocol.md, "Deliberate differences": JSON validation,
// depth), and only those, are excepted:
//  - nesting deeper than json_scan::max_depth is refused by the scanner only;
//  - inputs with a NUL byte are checked by rule instead (nlohmann stops reading at one);
//  - UTF-8 validity is the WebSocket layer's job (text frames are checked before the
//    scanner sees them), so inputs that are not valid UTF-8 are not compared;
//  - `\u` escapes of unpaired surrogates and numbers beyond a double's range are valid by
//    the JSON grammar (RFC 8259, and JavaScript's JSON.parse takes them) but nlohmann
//    refuses them; the scanner accepts them.
// Beyond accept/reject, what the scanner and codec extract is compared with nlohmann's
// parse of the same text (members, array elements, SEND's payload, the RECV built from
// it, read back from the wire bytes without the codec).
#include "protocol/codec.hpp"
#include "protocol/json_scan.hpp"
#include "reflector/session.hpp"

#include <nlohmann/json.hpp>
#include "fuzz_util.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace {

using nlohmann::json;

class sink_peer final : public lockstep::peer {
public:
    void deliver(lockstep::out_ptr const&) override {}
    bool backlogged() const noexcept override { return false; }
    void close(lockstep::protocol::close_code, std::string_view) override {}
    std::string const& tag() const noexcept override { return tag_; }

private:
    std::string tag_ = "fuzz";
};

[[noreturn]] void
fail(char const* what, std::string_view input)
{
    lockstep::fuzz::fail("codec", what, input);
}

/// Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF), written here so the
/// check does not depend on either parser under comparison.
bool
valid_utf8(std::string_view s)
{
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        int n;
        std::uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= s.size())
            return false;
        for (int k = 1; k <= n; ++k) {
            auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

int
depth_of(json const& j)
{
    int d = 0;
    if (j.is_structured())
        for (auto const& e : j)
            d = std::max(d, depth_of(e));
    return j.is_structured() ? d + 1 : 0;
}

enum class verdict { accept, reject, differs_by_design };

/// nlohmann's answer for `text`, with its value when accepted.
verdict
oracle(std::string_view text, std::optional<json>& value)
{
    try {
        value = json::parse(text);
        return verdict::accept;
    } catch (json::exception const& e) {  // parse_error, or out_of_range for a number overflow
        std::string_view what = e.what();
        if (what.find("surrogate") != std::string_view::npos || what.find("number overflow") != std::string_view::npos)
            return verdict::differs_by_design;
        return verdict::reject;
    }
}

json
parse_or_fail(std::string_view text, char const* what, std::string_view input)
{
    try {
        return json::parse(text);
    } catch (json::exception const&) {
        fail(what, input);
    }
}

/// The JSON text of a frame built by the codec, read from the wire bytes by hand: one
/// unmasked FIN text frame (inputs here are far below the _CHUNK threshold).
std::string_view
frame_payload(std::string_view wire, std::string_view input)
{
    if (wire.size() < 2 || static_cast<unsigned char>(wire[0]) != 0x81)
        fail("RECV is not one FIN text frame", input);
    std::size_t len = static_cast<unsigned char>(wire[1]);
    std::size_t off = 2;
    if (len == 126) {
        if (wire.size() < 4)
            fail("short frame header", input);
        len = (static_cast<std::size_t>(static_cast<unsigned char>(wire[2])) << 8) |
              static_cast<unsigned char>(wire[3]);
        off = 4;
    } else if (len == 127) {
        fail("unexpected 64-bit frame length", input);
    }
    if (wire.size() != off + len)
        fail("frame length does not match the bytes", input);
    return wire.substr(off);
}

/// The only value of key `k` in a scanned object, or nullopt if absent or repeated (for
/// repeated keys nlohmann keeps the last and the codec the first; both are documented).
std::optional<std::string_view>
unique_member(std::vector<lockstep::json_scan::member> const& ms, std::string_view k)
{
    std::optional<std::string_view> v;
    for (auto const& m : ms)
        if (m.key == k) {
            if (v)
                return std::nullopt;
            v = m.value;
        }
    return v;
}

}  // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    std::string_view text = lockstep::fuzz::input(data, size);
    if (!valid_utf8(text))
        return 0;  // the WebSocket layer refuses such text frames before the scanner runs

    bool ours = lockstep::json_scan::validate(text);
    // nlohmann's parser ends the input at a NUL byte ("9\0x" parses as 9), so it cannot
    // judge such inputs; the rule is simple enough to check directly: a raw NUL is
    // invalid everywhere in JSON.
    if (text.find('\0') != std::string_view::npos) {
        if (ours)
            fail("scanner accepted a raw NUL byte", text);
        return 0;
    }
    std::optional<json> expected;
    verdict v = oracle(text, expected);
    if (v == verdict::accept && !ours && depth_of(*expected) <= lockstep::json_scan::max_depth)
        fail("scanner rejected JSON that nlohmann accepts", text);
    if (v == verdict::reject && ours)
        fail("scanner accepted text that nlohmann rejects", text);
    if (v != verdict::accept || !ours)
        return 0;
    json const& j = *expected;

    // Members and elements: every raw value is the JSON nlohmann sees there.
    std::vector<lockstep::json_scan::member> members;
    if (lockstep::json_scan::scan_object(text, members) != j.is_object())
        fail("scan_object disagrees on whether the text is an object", text);
    std::vector<std::string_view> elems;
    if (lockstep::json_scan::scan_array(text, elems) != j.is_array())
        fail("scan_array disagrees on whether the text is an array", text);
    if (j.is_array()) {
        if (elems.size() != j.size())
            fail("scan_array element count differs", text);
        for (std::size_t i = 0; i < elems.size(); ++i)
            if (parse_or_fail(elems[i], "array element is not JSON", text) != j[i])
                fail("array element differs", text);
    }
    if (j.is_object()) {
        if (members.size() < j.size())
            fail("scan_object found fewer members than nlohmann", text);
        for (auto const& m : members) {
            auto value = parse_or_fail(m.value, "member value is not JSON", text);
            if (m.key.find('\\') == std::string_view::npos && unique_member(members, m.key)) {
                auto it = j.find(std::string(m.key));
                if (it == j.end() || *it != value)
                    fail("member value differs", text);
            }
        }
    }

    // The codec's view of a frame.
    lockstep::codec::client_frame f;
    auto r = lockstep::codec::parse_client_frame(text, f, members);
    if ((r == lockstep::codec::parse_result::ok) != j.is_object())
        fail("parse_client_frame disagrees on whether the frame is an object", text);
    if (r != lockstep::codec::parse_result::ok)
        return 0;
    // (Repeated keys: the last wins in both. Keys with escapes are compared raw by the
    // codec, decoded by nlohmann, so frames with such keys are not compared here.)
    bool plain_keys = std::none_of(members.begin(), members.end(),
                                   [](auto const& m) { return m.key.find('\\') != std::string_view::npos; });
    if (plain_keys && j.contains("args") != !f.args.empty())
        fail("args found by one parser only", text);
    if (plain_keys && j.contains("args") && parse_or_fail(f.args, "args is not JSON", text) != j["args"])
        fail("args differ", text);

    std::string_view rest;
    bool split = lockstep::codec::split_send_args(f.args, rest, elems);
    if (!f.args.empty()) {
        auto args = parse_or_fail(f.args, "args is not JSON", text);
        bool should = args.is_array() && args.size() >= 3;
        if (split != should)
            fail("split_send_args disagrees on a SEND-shaped args array", text);
        if (split) {
            json payload(args.begin() + 2, args.end());
            if (parse_or_fail("[" + std::string(rest) + "]", "SEND rest is not JSON", text) != payload)
                fail("SEND rest differs from args[2:]", text);
            auto m = lockstep::codec::make_recv("S", 1, 2, rest);
            json want_elem = json::array({1, 2});
            want_elem.insert(want_elem.end(), payload.begin(), payload.end());
            if (parse_or_fail(m->element(), "RECV element is not JSON", text) != want_elem)
                fail("RECV element differs", text);
            json want = {{"id", "S"}, {"action", "RECV"}, {"args", want_elem}};
            if (parse_or_fail(frame_payload(m->wire(), text), "RECV is not JSON", text) != want)
                fail("RECV on the wire differs", text);
        }
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
