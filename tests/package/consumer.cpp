// Uses the installed headers and library: a model, a synctest run, the session id.
#include <lockstep/client/router.hpp>
#include <lockstep/client/session.hpp>
#include <lockstep/client/synctest.hpp>

#include <cstdio>

namespace lc = lockstep::client;

struct tally final : lc::model {
    void init(lc::json const&) override { subscribe("t", "add", &tally::add); }
    void save(lc::json& s) const override { s = {{"sum", sum}}; }
    void load(lc::json const& s) override { sum = s.at("sum").get<long>(); }
    void add(lc::json const& v) { sum += v.get<long>() + static_cast<long>(random_u32() % 3); }
    long sum = 0;
};

int
main()
{
    lc::model_registry r;
    r.add<tally>("tally").method("add", &tally::add);
    std::vector<lc::recorded_message> log;
    for (std::uint32_t i = 0; i < 20; ++i)
        log.push_back({lc::recorded_message::kind::event, i * 10, 0xFFFFFFF1u + i, lc::json::array({"t", "add", i})});
    lc::synctest_options o;
    o.models = &r;
    o.root_model = "tally";
    auto res = lc::synctest(o, log);
    lc::join_options j;
    j.app_id = "com.example.app";
    j.session_name = "demo";
    auto id = lc::session::session_id_for(j);
    std::printf("synctest ok=%d checks=%zu session id=%s\n", res.ok, res.checks, id.c_str());
    return res.ok && res.checks > 4 && id.size() == 43 ? 0 : 1;
}
