// libFuzzer target for JOIN arguments (session::join), on a new session and on one that
// already exists, followed by a SEND, the users batch and a tick.
//   scripts/fuzz.sh [seconds]
//
// The oracle is the rule set of docs/protocol.md, evaluated here on nlohmann's parse of
// the same arguments:
//  - not an object, or `version` falsy (JavaScript truthiness) -> close 4100, nothing sent;
//  - no `apiKey` -> close 4103, nothing sent;
//  - a string `name`, `appId` or `persistentId` over 1024 bytes -> close 4102, nothing sent;
//  - otherwise exactly one SYNC to the joiner at once, for this session, carrying `tove`
//    as given, and the session keeps working (a SEND is reflected as a RECV, within the
//    60,000 ms cap on `ticks.delay`).
// Every byte the session delivers must be valid JSON to nlohmann (the arguments end up
// inside SYNCs and users events that every client parses).
#include "support/test_peer.hpp"

#include <nlohmann/json.hpp>
#include "fuzz_util.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using nlohmann::json;

[[noreturn]] void
fail(char const* what, std::string_view input)
{
    lockstep::fuzz::fail("join", what, input);
}

bool
js_truthy(json const& v)
{
    if (v.is_null() || v.is_discarded())
        return false;
    if (v.is_boolean())
        return v.get<bool>();
    if (v.is_string())
        return !v.get<std::string>().empty();
    if (v.is_number()) {
        double d = v.get<double>();
        return d != 0 && !std::isnan(d);
    }
    return true;
}

/// Every delivered frame as JSON; aborts if one is not valid JSON.
std::vector<json>
frames_of(lockstep::test::test_peer const& p, std::string_view input)
{
    std::vector<json> out;
    for (auto const& m : p.raw)
        for (auto const& text : lockstep::test::decode_frames(m->wire())) {
            auto j = json::parse(text, nullptr, false);
            if (j.is_discarded())
                fail("the session delivered invalid JSON", input);
            out.push_back(std::move(j));
        }
    return out;
}

int
expected_close(json const& args)
{
    if (!args.is_object() || !js_truthy(args.value("version", json())))
        return 4100;
    if (!args.contains("apiKey"))
        return 4103;
    lockstep::session_options const defaults;
    for (char const* key : {"name", "appId", "persistentId"})
        if (auto v = args.find(key); v != args.end() && v->is_string() && v->get<std::string>().size() > defaults.max_name_bytes)
            return 4102;
    return 0;
}

}  // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    std::string_view args = lockstep::fuzz::input(data, size);
    auto parsed = json::parse(args, nullptr, false);
    int want_close = expected_close(parsed);

    lockstep::manual_clock clock;
    lockstep::session_options opts;
    lockstep::session s("S1", clock, opts);
    lockstep::test::test_peer first("first");
    lockstep::test::test_peer second("second");

    // 1. The fuzzed JOIN creates the session; 2. a valid JOIN; 3. the fuzzed JOIN again
    // on the existing session.
    bool ok = s.join(first, args);
    if (ok != (want_close == 0) || first.closed != want_close)
        fail("JOIN on a new session: outcome differs from the rules", args);
    auto f1 = frames_of(first, args);
    if (!ok && !f1.empty())
        fail("a refused JOIN got frames", args);
    if (ok) {
        if (f1.size() != 1 || f1[0].value("action", "") != "SYNC" || f1[0].value("id", "") != "S1")
            fail("an accepted JOIN did not get exactly one SYNC", args);
        auto const& sync = f1[0]["args"];
        if (!sync.is_object() || !sync["messages"].is_array())
            fail("SYNC without a messages array", args);
        if (auto t = parsed.find("tove"); t != parsed.end() && !t->is_null() && sync.value("tove", json()) != *t)
            fail("SYNC does not carry the tove of the creating JOIN", args);
    }
    if (!s.join(second, R"({"version":1,"apiKey":"k","user":"second"})") || second.closed)
        fail("a valid JOIN after the fuzzed one was refused", args);
    lockstep::test::test_peer third("third");
    if (s.join(third, args) != (want_close == 0) || third.closed != want_close)
        fail("JOIN on an existing session: outcome differs from the rules", args);

    s.send(second, R"([0,0,"after",1])", {});
    // A fuzzed `ticks.delay` may hold events back for up to its 60,000 ms cap
    // (docs/protocol.md, section 7.4): the session must reflect within that.
    clock.advance_ms(1500);
    s.on_timer();
    clock.advance_ms(60'000);
    s.on_timer();
    bool reflected = false;
    for (auto const& f : frames_of(second, args))
        if (f.value("action", "") == "RECV" && f["args"].is_array() && f["args"].size() >= 3 && f["args"][2] == "after")
            reflected = true;
    if (!reflected)
        fail("the session stopped reflecting after the fuzzed JOIN", args);
    frames_of(first, args);
    frames_of(third, args);
    return 0;
}
