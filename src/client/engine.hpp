// The replica: models, their subscriptions, the future queue, the random generator and
// the view set of one session, advanced only by reflected events and ticks. No I/O and no
// clocks: the session feeds it, tests and synctest drive it directly.
//
// Thread safety: none; owned and used by one thread (the session's step() thread).
#pragma once

#include <lockstep/client/model.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace lockstep::client::detail {

/// Scope prefix of the SDK's own events ("lockstep.poll" asks for a snapshot vote).
inline constexpr std::string_view reserved_scope_prefix = "lockstep.";
inline constexpr std::string_view poll_scope = "lockstep.poll";

struct engine_hooks {
    /// Every publish (by a model, or a reflected view event) for view subscribers.
    std::function<void(std::string const& scope, std::string const& event, json const& data)> on_publish;
    /// A reflected "users" message was executed; `joined` are its view ids.
    std::function<void(std::vector<std::string> const& joined)> on_users;
    /// A snapshot poll was accepted: the state right now is the one to vote on.
    std::function<void(std::int64_t time, std::uint32_t seq)> on_poll;
    /// A reflected "tally" (TUTTI result) was executed.
    std::function<void(json const& tally)> on_tally;
};

class engine final : public host {
public:
    engine(model_registry const& registry, std::string session_id, engine_hooks hooks = {});
    ~engine();

    /// A new replica at time 0 with the root model created by init(args).
    void start_fresh(std::string const& root_type, json const& args, std::uint32_t last_seq);
    /// A replica from a snapshot(); false (and `why`) if it does not fit the registry.
    bool restore(json const& snapshot, std::string& why);

    /// Executes one reflected event: due future calls first, then the event at `time`.
    /// Errors (replica unchanged): a seq that is not last_seq()+1, a time before now().
    /// `payload` is an app event as decoded JSON ([scope, event, data]), a reflector
    /// object (users, tally), or null for an event that could not be decrypted (the seq
    /// and time still advance).
    std::error_code apply_event(std::int64_t time, std::uint32_t seq, json const& payload);
    /// A tick: runs due future calls; model time becomes `time` (older ticks are ignored).
    void advance_to(std::int64_t time);

    json snapshot() const;
    std::string state_hash() const;  // base64url SHA-256 of snapshot().dump()

    std::uint32_t last_seq() const noexcept { return last_seq_; }
    std::int64_t last_poll() const noexcept { return last_poll_; }
    model* root() const;
    std::size_t pending_futures() const noexcept { return futures_.size(); }

    // host
    std::int64_t now() const override { return now_; }
    double random() override;
    std::uint32_t random_u32() override;
    std::string const& session_id() const override { return session_id_; }
    model_registry const& registry() const override { return registry_; }
    void publish(std::string_view scope, std::string_view event, json const& data) override;
    void subscribe(model_id m, std::string scope, std::string event, std::string method) override;
    void unsubscribe(model_id m, std::string_view scope, std::string_view event) override;
    std::uint64_t future(model_id m, std::int64_t ms, std::string method, json args) override;
    bool cancel_future(std::uint64_t handle) override;
    model& create(std::type_index type, json const& args) override;
    void destroy(model_id m) override;
    model* find(model_id m) override;
    std::vector<std::string> views() const override;

private:
    struct pending_call {
        model_id target;
        std::string method;
        json args;
    };
    using topic = std::pair<std::string, std::string>;
    using subscriber = std::pair<model_id, std::string>;

    model& make(model_class const& c, model_id id);
    std::uint64_t next64();
    void run_due(std::int64_t time);
    void call(model_id target, std::string const& method, json const& args);
    void on_users(json const& msg);
    void on_view_joined(std::string const& v);
    void on_view_left(std::string const& v);
    void on_poll(json const& data, std::uint32_t seq);

    model_registry const& registry_;
    std::string session_id_;
    engine_hooks hooks_;

    // Replica state: everything below is in the snapshot.
    std::int64_t now_ = 0;
    std::uint32_t last_seq_ = 0;
    std::uint64_t rng_[4] = {};
    model_id next_model_ = 1;
    std::uint64_t next_future_ = 1;
    std::int64_t last_poll_ = 0;
    std::map<model_id, std::unique_ptr<model>> models_;
    std::map<std::pair<std::int64_t, std::uint64_t>, pending_call> futures_;  // (time, order)
    std::map<std::uint64_t, std::int64_t> future_times_;                       // handle -> time
    std::map<topic, std::vector<subscriber>> subs_;                            // insertion order
    std::map<std::string, int> views_;  // view id -> connections counted
};

}  // namespace lockstep::client::detail
