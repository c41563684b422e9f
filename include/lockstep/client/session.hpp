// A joined lockstep session: the local replica of the session's models, kept in step with
// every other replica by the events and ticks of a lockstep (or Croquet/Multisynq)
// reflector. See docs/sdk.md for a tutorial and docs/determinism.md for the model rules.
//
// Threads. The SDK owns one network thread per session (WebSocket I/O, reconnects) and,
// once this client uploads a snapshot, one uploader thread; neither touches models or
// calls application code. Model code and
// view handlers run only inside join() and step() (and run_for()/run_until(), which call
// step()), on the thread that calls them. A session is therefore driven by one thread of
// the application's choice: its own frame loop calling step(), or a thread that calls
// run_until(). publish() may be called from any thread; everything else from the driving
// thread only.
#pragma once

#include <lockstep/client/error.hpp>
#include <lockstep/client/model.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace lockstep::client {

/// One reflected input of a replica, as recorded by a session (for synctest).
struct recorded_message {
    enum class kind { event, tick } what = kind::event;
    std::int64_t time = 0;
    std::uint32_t seq = 0;  // events only
    json payload;           // events only: a string (app event) or an object (reflector's)
};

/// A replica whose state hash disagreed with the majority of the session.
struct divergence {
    std::int64_t time = 0;       // model time of the compared state
    std::string local_hash;
    std::string majority_hash;
    std::string what;            // "snapshot vote" or "snapshot load"
};

struct session_stats {
    std::uint64_t events_executed = 0;     // reflected events applied to the replica
    std::uint64_t events_published = 0;    // events this client sent
    std::uint64_t seamless_rejoins = 0;    // reconnects that kept the replica
    std::uint64_t rebuilds = 0;            // reconnects that rebuilt it from SYNC
    std::uint64_t snapshots_uploaded = 0;  // snapshots this client uploaded (SNAP sent)
    std::uint64_t snapshot_votes = 0;      // snapshot votes this client cast
    std::uint64_t divergences = 0;         // state hash disagreements seen
    std::uint64_t undecryptable = 0;       // events dropped because they failed the HMAC
    /// How the replica was first built: "fresh" (new session), "log" (replayed from
    /// time 0), or "snapshot" (loaded a snapshot, then replayed the events since).
    std::string built_from;
};

struct join_options {
    /// Reflector WebSocket URL, e.g. "ws://127.0.0.1:9090", "wss://eu.example.com" or a
    /// router seat URL "ws://host:port/r/<token>". The SDK appends "/<session id>".
    std::string reflector;
    std::string app_id;        // reverse-DNS application id, e.g. "com.example.counter"
    std::string session_name;  // clients with the same app_id, name and code join together
    /// Empty: events travel in clear. Otherwise events and snapshots are encrypted
    /// end-to-end (AES-256-CBC + HMAC-SHA256, key from the password); clients with a
    /// different password cannot join.
    std::string password;
    int tps = 20;              // reflector ticks per second for a new session (1..60)
    /// Files URL for snapshots, e.g. "http://127.0.0.1:9090/files" (or https://). Empty:
    /// no snapshots are taken and late joiners replay the whole session.
    std::string files;
    /// For wss:// and https://: a PEM file of the certificate authorities to trust.
    /// Empty: the system's trust store. The peer's host name is always verified.
    std::string tls_ca_file;
    /// The application's model classes and the class of the root model, which is created
    /// (with init(root_args)) when the session is new.
    model_registry const* models = nullptr;
    std::string root_model;
    json root_args;
    /// Part of the session id: bump it when model code changes incompatibly, so old and
    /// new code never share a session.
    std::string code_version = "1";
    std::string view_id;                   // empty: 10 random base-36 characters
    std::chrono::milliseconds join_timeout{15000};
    /// Model time between snapshots (a client asks for a snapshot vote when the last one
    /// is older). Only used when `files` is set.
    std::int64_t snapshot_interval_ms = 5000;
    /// Keep every reflected input in memory (recorded()) for a synctest replay.
    bool record = false;

    /// Called on the step() thread when a state hash disagrees (also logged at error
    /// level and reported to the reflector's log).
    std::function<void(divergence const&)> on_divergence;
    /// Called on the step() thread after a reconnect rebuilt the replica: every model
    /// reference the view held is gone; look the models up again from root().
    std::function<void()> on_rebuild;
};

class session {
public:
    /// Connects, joins and brings the local replica in sync: the snapshot is loaded, the
    /// log replayed and this view's own view-join executed. Blocks the calling thread,
    /// which becomes the session's driving thread. Returns nullptr and sets `ec` on failure.
    static std::unique_ptr<session> join(join_options options, std::error_code& ec);

    /// Leaves (closes with 1000) if still joined.
    ~session();
    session(session const&) = delete;
    session& operator=(session const&) = delete;

    /// Closes the connection with 1000 and stops. Events published before are sent first
    /// if the connection is up; while disconnected they are dropped.
    void leave();

    /// Applies everything received so far (events, ticks, reconnects) to the replica, then
    /// runs the view handlers of the events the models published. Does not wait for input;
    /// the one blocking case is a reconnect that must rebuild the replica from a snapshot
    /// (downloaded before step() returns). Returns false once the session has ended
    /// (left, or a fatal error(): see error()).
    bool step();
    /// Waits up to `max_wait` for input, then step()s.
    bool wait_step(std::chrono::milliseconds max_wait);
    /// step()s until `done()` is true (checked after every step), the session ends, or
    /// `timeout` passes. Returns done().
    bool run_until(std::function<bool()> const& done, std::chrono::milliseconds timeout);
    void run_for(std::chrono::milliseconds duration);

    /// Sends an event to the models of every replica (this one included) through the
    /// reflector. It is never applied locally first. Thread-safe. Events published while
    /// disconnected are sent after the rejoin; one being written when the connection
    /// fails may be lost (at most once).
    void publish(std::string const& scope, std::string const& event, json const& data = nullptr);

    /// View subscription: `handler(data)` runs on the step() thread for every event that
    /// models publish (or views publish and models receive) on (scope, event).
    void subscribe(std::string const& scope, std::string const& event, std::function<void(json const&)> handler);
    void unsubscribe(std::string const& scope, std::string const& event);

    /// The root model, and any model by id. Read-only for views.
    model const& root() const;
    template <class T>
    T const& root_as() const
    {
        return dynamic_cast<T const&>(root());
    }
    model const* find(model_id id) const;

    std::int64_t now() const;            // model time (ms)
    std::string const& id() const;       // session id
    std::string const& view_id() const;  // this client's view id
    std::string state_hash() const;      // hash of the whole replica state (base64url SHA-256)
    session_stats stats() const;
    std::error_code error() const;       // why the session ended, if it did
    bool connected() const;

    /// Every reflected input so far (join_options::record must be set). Includes the
    /// messages replayed at join when the replica was built from the log.
    std::vector<recorded_message> const& recorded() const;

    /// Testing aid: drops the TCP connection without a close frame, like a network
    /// failure. The SDK reconnects by itself.
    void simulate_network_drop();

    /// Derives the session id the SDK uses for these options (base64url SHA-256 of the
    /// app id, session name, SDK protocol version and code_version).
    static std::string session_id_for(join_options const& o);

    class impl;

private:
    explicit session(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace lockstep::client
