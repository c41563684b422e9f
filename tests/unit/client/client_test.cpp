// Client SDK: the replica (future queue, event order, views, snapshots), synctest, crypto.
#include "client/engine.hpp"

#include "client/crypto.hpp"

#include <lockstep/client/synctest.hpp>
#include <lockstep/protocol/constants.hpp>

#include <gtest/gtest.h>

namespace lc = lockstep::client;
using lc::json;
using lc::detail::engine;

namespace {

constexpr std::uint32_t first_seq = lockstep::protocol::seq_start + 1;

// Records every call as [what, now, arg]; schedules what init's args ask for.
class recorder : public lc::model {
public:
    void init(json const& args) override
    {
        subscribe("t", "ev", &recorder::ev);
        if (args.is_object() && args.contains("futures"))
            for (auto& f : args["futures"])
                handles_.push_back(future(f[0].get<std::int64_t>(), "mark", f[1]));
    }
    void save(json& s) const override { s = {{"log", log_}, {"handles", handles_}}; }
    void load(json const& s) override
    {
        log_ = s.at("log");
        handles_ = s.at("handles").get<std::vector<std::uint64_t>>();
    }

    void mark(json const& a)
    {
        log_.push_back({"mark", now(), a});
        // {"then": [ms, arg]} schedules one more call from inside this one.
        if (a.is_object() && a.contains("then"))
            future(a["then"][0].get<std::int64_t>(), &recorder::mark, a["then"][1]);
    }
    void ev(json const& a) { log_.push_back({"ev", now(), a}); }
    void draw(json const&) { log_.push_back({"draw", now(), random_u32()}); }
    bool cancel(std::size_t i) { return cancel_future(handles_.at(i)); }

    json log_ = json::array();
    std::vector<std::uint64_t> handles_;
};

lc::model_registry const&
registry()
{
    static lc::model_registry r = [] {
        lc::model_registry r;
        r.add<recorder>("recorder").method("mark", &recorder::mark).method("ev", &recorder::ev).method("draw", &recorder::draw);
        return r;
    }();
    return r;
}

recorder&
root(engine& e)
{
    return static_cast<recorder&>(*e.root());
}

json
ev(std::string_view scope, std::string_view event, json data)
{
    return json::array({scope, event, std::move(data)});
}

std::unique_ptr<engine>
fresh(json args = nullptr, std::string id = "s1")
{
    auto e = std::make_unique<engine>(registry(), id);
    e->start_fresh("recorder", args, lockstep::protocol::seq_start);
    return e;
}

}  // namespace

TEST(ClientFuture, OrderedByTimeThenScheduling)
{
    auto e = fresh({{"futures", {{30, "a"}, {10, "b"}, {10, "c"}, {20, "d"}, {10, "e"}}}});
    e->advance_to(100);
    json expect = {{"mark", 10, "b"}, {"mark", 10, "c"}, {"mark", 10, "e"}, {"mark", 20, "d"}, {"mark", 30, "a"}};
    EXPECT_EQ(root(*e).log_, expect);
    EXPECT_EQ(e->now(), 100);
    EXPECT_EQ(e->pending_futures(), 0u);
}

TEST(ClientFuture, ManyCallsAtOneTimeKeepSchedulingOrder)
{
    json futures = json::array();
    for (int i = 0; i < 1000; ++i)
        futures.push_back({7, i});
    auto e = fresh({{"futures", futures}});
    e->advance_to(6);
    EXPECT_TRUE(root(*e).log_.empty());
    e->advance_to(7);
    ASSERT_EQ(root(*e).log_.size(), 1000u);
    for (int i = 0; i < 1000; ++i)
        EXPECT_EQ(root(*e).log_[i][2], i) << i;
}

TEST(ClientFuture, CallsScheduledFromInsideCallsRunInOrder)
{
    // A (at 10) schedules C at +0 and D at +5; B was already due at 10.
    json a = {{"name", "A"}, {"then", {0, {{"name", "C"}, {"then", {5, "D"}}}}}};
    auto e = fresh({{"futures", {{10, a}, {10, "B"}}}});
    e->advance_to(10);
    auto const& log = root(*e).log_;
    ASSERT_EQ(log.size(), 3u);
    EXPECT_EQ(log[0][2]["name"], "A");
    EXPECT_EQ(log[1][2], "B");
    EXPECT_EQ(log[2][2]["name"], "C");
    EXPECT_EQ(log[2][1], 10);  // a +0 call runs at the same model time
    e->advance_to(14);
    EXPECT_EQ(root(*e).log_.size(), 3u);
    e->advance_to(15);
    ASSERT_EQ(root(*e).log_.size(), 4u);
    EXPECT_EQ(root(*e).log_[3], json({"mark", 15, "D"}));
}

TEST(ClientFuture, Cancellation)
{
    auto e = fresh({{"futures", {{10, "x"}, {20, "y"}}}});
    EXPECT_TRUE(root(*e).cancel(0));
    EXPECT_FALSE(root(*e).cancel(0));  // already cancelled
    e->advance_to(30);
    EXPECT_EQ(root(*e).log_, json({{"mark", 20, "y"}}));
    EXPECT_FALSE(root(*e).cancel(1));  // already ran
}

TEST(ClientFuture, DueCallsRunBeforeAnEventAtTheSameTime)
{
    auto e = fresh({{"futures", {{50, "due"}, {51, "later"}}}});
    ASSERT_FALSE(e->apply_event(50, first_seq, ev("t", "ev", "E")));
    EXPECT_EQ(root(*e).log_, json({{"mark", 50, "due"}, {"ev", 50, "E"}}));
    EXPECT_EQ(e->last_seq(), first_seq);
}

TEST(ClientFuture, PendingCallsSurviveSnapshotAndRestore)
{
    json a = {{"name", "A"}, {"then", {25, "A2"}}};
    auto e = fresh({{"futures", {{10, a}, {40, "B"}, {40, "C"}}}});
    e->advance_to(15);
    ASSERT_EQ(e->pending_futures(), 3u);  // A2 at 35, B and C at 40
    auto snap = e->snapshot();
    engine copy(registry(), "s1");
    std::string why;
    ASSERT_TRUE(copy.restore(snap, why)) << why;
    EXPECT_EQ(copy.state_hash(), e->state_hash());
    EXPECT_EQ(copy.pending_futures(), 3u);
    for (auto* x : {e.get(), &copy}) {
        ASSERT_FALSE(x->apply_event(38, first_seq, ev("t", "ev", 1)));
        x->advance_to(100);
    }
    json expect = {{"mark", 10, a}, {"mark", 35, "A2"}, {"ev", 38, 1}, {"mark", 40, "B"}, {"mark", 40, "C"}};
    EXPECT_EQ(root(*e).log_, expect);
    EXPECT_EQ(root(copy).log_, expect);
    EXPECT_EQ(copy.state_hash(), e->state_hash());
}

TEST(ClientReplica, RejectsGapsAndTimeGoingBackWithoutChange)
{
    auto e = fresh();
    ASSERT_FALSE(e->apply_event(10, first_seq, ev("t", "ev", 1)));
    auto hash = e->state_hash();
    EXPECT_EQ(e->apply_event(20, first_seq + 2, ev("t", "ev", 2)), lc::errc::protocol_error);  // gap
    EXPECT_EQ(e->apply_event(20, first_seq, ev("t", "ev", 2)), lc::errc::protocol_error);      // duplicate
    EXPECT_EQ(e->apply_event(9, first_seq + 1, ev("t", "ev", 2)), lc::errc::protocol_error);   // past
    EXPECT_EQ(e->state_hash(), hash);
    EXPECT_FALSE(e->apply_event(10, first_seq + 1, ev("t", "ev", 3)));
    EXPECT_EQ(root(*e).log_.size(), 2u);
}

TEST(ClientReplica, SequenceNumbersWrap)
{
    auto e = fresh();
    std::uint32_t seq = first_seq;
    for (int i = 0; i < 20; ++i, ++seq)
        ASSERT_FALSE(e->apply_event(i, seq, ev("t", "ev", i))) << i;
    EXPECT_EQ(e->last_seq(), first_seq + 19);  // wrapped past 0xFFFFFFFF
    EXPECT_LT(e->last_seq(), 100u);
}

TEST(ClientReplica, UndecryptableEventsAdvanceSeqAndTimeOnly)
{
    auto e = fresh();
    ASSERT_FALSE(e->apply_event(10, first_seq, nullptr));
    EXPECT_EQ(e->last_seq(), first_seq);
    EXPECT_EQ(e->now(), 10);
    EXPECT_TRUE(root(*e).log_.empty());
}

TEST(ClientReplica, ViewJoinAndExitCountConnections)
{
    std::vector<std::string> seen;
    lc::detail::engine_hooks h;
    h.on_publish = [&](std::string const& scope, std::string const& event, json const& data) {
        if (scope == lc::session_scope)
            seen.push_back(event + ":" + data.get<std::string>());
    };
    engine e(registry(), "s1", h);
    e.start_fresh("recorder", nullptr, lockstep::protocol::seq_start);
    std::uint32_t seq = first_seq;
    auto users = [&](json joined, json left, int active) {
        json u = {{"what", "users"}, {"active", active}, {"total", active}};
        if (!joined.empty())
            u["joined"] = joined;
        if (!left.empty())
            u["left"] = left;
        ASSERT_FALSE(e.apply_event(seq, seq, u));
        ++seq;
    };
    users({"a"}, json::array(), 1);
    users({"b"}, json::array(), 2);
    users({"a"}, json::array(), 3);  // a reconnected while its old connection still counts
    users(json::array(), {"a"}, 2);  // the old connection goes: a is still here
    EXPECT_EQ(e.views(), (std::vector<std::string>{"a", "b"}));
    users(json::array(), {"a"}, 1);
    EXPECT_EQ(e.views(), (std::vector<std::string>{"b"}));
    // As many joins as active clients: a resumed session, b is gone.
    users({"c"}, json::array(), 1);
    EXPECT_EQ(e.views(), (std::vector<std::string>{"c"}));
    EXPECT_EQ(seen, (std::vector<std::string>{"view-join:a", "view-join:b", "view-exit:a", "view-exit:b", "view-join:c"}));
}

TEST(ClientReplica, RandomIsSeededBySessionAndSnapshotted)
{
    auto a = fresh(nullptr, "s1");
    auto b = fresh(nullptr, "s1");
    auto c = fresh(nullptr, "s2");
    std::vector<std::uint32_t> va, vb, vc;
    for (int i = 0; i < 8; ++i) {
        va.push_back(a->random_u32());
        vb.push_back(b->random_u32());
        vc.push_back(c->random_u32());
    }
    EXPECT_EQ(va, vb);
    EXPECT_NE(va, vc);
    engine copy(registry(), "other id: the state decides, not the id");
    std::string why;
    ASSERT_TRUE(copy.restore(a->snapshot(), why)) << why;
    EXPECT_EQ(copy.random_u32(), a->random_u32());
    for (int i = 0; i < 1000; ++i) {
        double d = a->random();
        ASSERT_GE(d, 0.0);
        ASSERT_LT(d, 1.0);
    }
}

TEST(ClientReplica, SnapshotPollsRespectTheirMinimumInterval)
{
    std::vector<std::int64_t> polls;
    lc::detail::engine_hooks h;
    h.on_poll = [&](std::int64_t t, std::uint32_t) { polls.push_back(t); };
    engine e(registry(), "s1", h);
    e.start_fresh("recorder", nullptr, lockstep::protocol::seq_start);
    std::uint32_t seq = first_seq;
    auto poll = [&](std::int64_t t, int min_ms) {
        ASSERT_FALSE(e.apply_event(t, seq++, ev(lc::detail::poll_scope, "poll", {{"min_ms", min_ms}})));
    };
    poll(1000, 5000);
    poll(3000, 5000);  // too soon
    poll(6000, 5000);
    poll(6100, 0);     // a forced poll (REQU)
    EXPECT_EQ(polls, (std::vector<std::int64_t>{1000, 6000, 6100}));
    EXPECT_EQ(e.last_poll(), 6100);
}

TEST(ClientReplica, RestoreRejectsForeignAndMalformedSnapshots)
{
    engine e(registry(), "s1");
    std::string why;
    EXPECT_FALSE(e.restore(json::object(), why));
    EXPECT_NE(why.find("not a lockstep snapshot"), std::string::npos);
    auto snap = fresh()->snapshot();
    snap["models"][0]["type"] = "unknown";
    EXPECT_FALSE(e.restore(snap, why));
    EXPECT_NE(why.find("unknown"), std::string::npos);
    snap = fresh()->snapshot();
    snap["futures"] = "not a list";
    EXPECT_FALSE(e.restore(snap, why));
    EXPECT_NE(why.find("malformed"), std::string::npos);
}

// --- synctest --------------------------------------------------------------------------

namespace {

// Deterministic: a random walk driven by events and a future() clock.
class walker : public lc::model {
public:
    void init(json const&) override
    {
        subscribe("walk", "step", &walker::step);
        future(50, &walker::tick);
    }
    void save(json& s) const override { s = {{"pos", pos_}, {"ticks", ticks_}, {"children", children_}}; }
    void load(json const& s) override
    {
        pos_ = s.at("pos").get<std::int64_t>();
        ticks_ = s.at("ticks").get<std::int64_t>();
        children_ = s.at("children").get<std::vector<lc::model_id>>();
    }
    virtual void step(json const& e)
    {
        pos_ += e.get<int>() * static_cast<int>(random_u32() % 7);
        if (id() == 1 && pos_ % 5 == 0 && children_.size() < 4)
            children_.push_back(create<walker>().id());
    }
    void tick(json const&)
    {
        ++ticks_;
        pos_ += ticks_ % 3 + static_cast<std::int64_t>(random() * 3);
        future(50, &walker::tick);
    }

protected:
    std::int64_t pos_ = 0, ticks_ = 0;
    std::vector<lc::model_id> children_;
};

// Reads hidden state shared by all replicas of the process.
class leaky : public walker {
public:
    void step(json const& e) override
    {
        static int calls = 0;
        pos_ += ++calls;
    }
};

// Forgets a field in save().
class forgetful : public walker {
public:
    void save(json& s) const override
    {
        walker::save(s);
        s["ticks"] = 0;
    }
};

std::vector<lc::recorded_message>
sample_log()
{
    std::vector<lc::recorded_message> log;
    std::uint32_t seq = first_seq;
    for (int i = 0; i < 60; ++i) {
        std::int64_t t = 20 * i;
        if (i % 3 == 0)
            log.push_back({lc::recorded_message::kind::tick, t, 0, nullptr});
        else
            log.push_back({lc::recorded_message::kind::event, t, seq++, ev("walk", "step", i % 4 + 1)});
    }
    return log;
}

}  // namespace

// Synctest of the sample log with root class M (walkers registered too: M creates them).
template <class M>
lc::synctest_result
synctest_of(char const* name, std::size_t window)
{
    lc::model_registry r;
    r.add<walker>("walker").method("step", &walker::step).method("tick", &walker::tick);
    if constexpr (!std::is_same_v<M, walker>)
        r.add<M>(name).method("step", &walker::step).method("tick", &walker::tick);
    lc::synctest_options o;
    o.models = &r;
    o.root_model = name;
    o.window = window;
    return lc::synctest(o, sample_log());
}

TEST(ClientSynctest, DeterministicModelPasses)
{
    auto res = synctest_of<walker>("walker", 5);
    EXPECT_TRUE(res.ok) << res.what << " at " << res.failed_at << ": " << res.first_difference;
    EXPECT_GE(res.checks, 24u);
}

TEST(ClientSynctest, HiddenStateIsFound)
{
    auto res = synctest_of<leaky>("leaky", 8);
    EXPECT_FALSE(res.ok);
    EXPECT_EQ(res.what, "two fresh replicas");
    EXPECT_EQ(res.first_difference, "/models/0/state/pos");
}

TEST(ClientSynctest, IncompleteSaveIsFound)
{
    auto res = synctest_of<forgetful>("forgetful", 4);
    EXPECT_FALSE(res.ok);
    EXPECT_EQ(res.what, "snapshot and restore");
}

// --- crypto ----------------------------------------------------------------------------

TEST(ClientCrypto, DecryptsTheJavaScriptClientFormat)
{
    // Made with Node's crypto: pbkdf2Sync("secret", "", 1, 32, "sha1"), a fixed IV,
    // HMAC-SHA256 of the plaintext, AES-256-CBC.
    auto key = lc::detail::derive_key("secret");
    char hex[65];
    for (int i = 0; i < 32; ++i)
        std::snprintf(hex + 2 * i, 3, "%02x", key[i]);
    EXPECT_STREQ(hex, "f44d6c121a3dc66652b8b9f6c9cd6014bdd151f4ff0380b2a608d68546dad078");
    auto text = "AAECAwQFBgcICQoLDA0ODw==CRUnZDzTJoMuZFXLx10ek39ntbDGzM/qZexDSc57+wg="
                "4l2ge8pwPmoGwpe4A2XrNZAgcoCRYmotoygZn/yHkUE=";
    auto plain = lc::detail::decrypt_text(key, text);
    ASSERT_TRUE(plain);
    EXPECT_EQ(*plain, R"(["counter","increment",{"n":1}])");
}

TEST(ClientCrypto, RoundTripsAndRejectsTamperingAndWrongKeys)
{
    auto key = lc::detail::derive_key("pw");
    auto other = lc::detail::derive_key("pw2");
    auto t = lc::detail::encrypt_text(key, "hello");
    EXPECT_NE(t.find("=="), std::string::npos);
    EXPECT_EQ(lc::detail::decrypt_text(key, t), "hello");
    EXPECT_NE(lc::detail::encrypt_text(key, "hello"), t);  // fresh IV each time
    EXPECT_FALSE(lc::detail::decrypt_text(other, t));
    auto forged = t;
    forged[30] = forged[30] == 'A' ? 'B' : 'A';  // inside the HMAC
    EXPECT_FALSE(lc::detail::decrypt_text(key, forged));
    EXPECT_FALSE(lc::detail::decrypt_text(key, "short"));
    EXPECT_FALSE(lc::detail::decrypt_text(key, std::string(100, '!')));

    std::string big(100000, 'x');
    auto b = lc::detail::encrypt_binary(key, big);
    EXPECT_TRUE(lc::detail::is_encrypted_binary(b));
    EXPECT_EQ(lc::detail::decrypt_binary(key, b), big);
    EXPECT_FALSE(lc::detail::decrypt_binary(other, b));
    b.back() ^= 1;
    EXPECT_FALSE(lc::detail::decrypt_binary(key, b));
}

TEST(ClientCrypto, GzipRoundTripAndLimits)
{
    std::string data;
    for (int i = 0; i < 10000; ++i)
        data += std::to_string(i) + ",";
    auto z = lc::detail::gzip(data);
    EXPECT_LT(z.size(), data.size() / 2);
    EXPECT_EQ(lc::detail::gunzip(z, 1 << 20), data);
    EXPECT_FALSE(lc::detail::gunzip(z, 1000));                 // over the limit
    EXPECT_FALSE(lc::detail::gunzip("not gzip at all", 1000));  // garbage
    EXPECT_FALSE(lc::detail::gunzip(z.substr(0, z.size() / 2), 1 << 20));  // truncated
}

TEST(ClientCrypto, HashesAreBase64UrlSha256)
{
    // SHA-256("abc") = ba7816bf...; base64url without padding.
    EXPECT_EQ(lc::detail::sha256_b64url("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
}

TEST(ClientReplica, MalformedReflectorObjectsDoNotThrow)
{
    auto e = fresh();
    std::uint32_t seq = first_seq;
    for (json bad : {json({{"what", 5}}), json({{"what", "users"}, {"active", "x"}, {"joined", "y"}}),
                     json({{"what", "users"}, {"joined", {1, json::object(), json::array()}}}),
                     json({{"what", "tally"}, {"tally", 3}}), json::object(), json::array({1, 2})}) {
        EXPECT_NO_THROW(EXPECT_FALSE(e->apply_event(seq, seq, bad))) << bad.dump();
        ++seq;
    }
    EXPECT_EQ(e->last_seq(), seq - 1);
    EXPECT_EQ(e->apply_event(seq, seq, ev(lc::detail::poll_scope, "poll", {{"min_ms", "x"}})), std::error_code());
}
