#include <lockstep/client/synctest.hpp>

#include "client/engine.hpp"

#include <lockstep/protocol/constants.hpp>

namespace lockstep::client {

namespace {

using detail::engine;

std::unique_ptr<engine>
fresh(synctest_options const& o, std::vector<recorded_message> const& log)
{
    auto e = std::make_unique<engine>(*o.models, o.session_id);
    std::uint32_t before = protocol::seq_start;
    for (auto& m : log)
        if (m.what == recorded_message::kind::event) {
            before = m.seq - 1;
            break;
        }
    e->start_fresh(o.root_model, o.root_args, before);
    return e;
}

void
feed(engine& e, recorded_message const& m)
{
    if (m.what == recorded_message::kind::tick)
        e.advance_to(m.time);
    else
        (void)e.apply_event(m.time, m.seq, m.payload);
}

std::string
first_difference(engine const& a, engine const& b)
{
    auto patch = json::diff(a.snapshot(), b.snapshot());
    if (patch.empty())
        return {};
    return patch[0].value("path", std::string("/"));
}

}  // namespace

synctest_result
synctest(synctest_options const& o, std::vector<recorded_message> const& log)
{
    synctest_result r;
    auto fail = [&](std::size_t at, char const* what, engine const& a, engine const& b) {
        r.ok = false;
        r.failed_at = at;
        r.what = what;
        r.first_difference = first_difference(a, b);
        return r;
    };
    std::size_t window = o.window == 0 ? 1 : o.window;
    auto a = fresh(o, log);
    auto b = fresh(o, log);
    ++r.checks;
    if (a->state_hash() != b->state_hash())
        return fail(0, "two fresh replicas", *a, *b);
    // c: restored from a's snapshot at the start of each window.
    auto c = std::make_unique<engine>(*o.models, o.session_id);
    std::string why;
    if (!c->restore(a->snapshot(), why))
        return fail(0, "snapshot and restore", *a, *c);
    for (std::size_t i = 0; i < log.size(); ++i) {
        feed(*a, log[i]);
        feed(*b, log[i]);
        feed(*c, log[i]);
        bool boundary = (i + 1) % window == 0 || i + 1 == log.size();
        if (!boundary)
            continue;
        r.checks += 2;
        auto ha = a->state_hash();
        if (ha != b->state_hash())
            return fail(i + 1, "two fresh replicas", *a, *b);
        if (ha != c->state_hash())
            return fail(i + 1, "snapshot and restore", *a, *c);
        c = std::make_unique<engine>(*o.models, o.session_id);
        if (!c->restore(a->snapshot(), why))
            return fail(i + 1, "snapshot and restore", *a, *c);
    }
    return r;
}

}  // namespace lockstep::client
