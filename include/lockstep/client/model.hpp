// Replicated models: the deterministic part of a lockstep application.
//
// Every client runs the same model code on the same inputs (the events reflected by the
// reflector, in its order, and its ticks), so every replica holds identical state. A model
// therefore only changes in its own methods, called by the SDK: `init`, subscribed event
// handlers and `future` calls. The rules a model must follow are in docs/determinism.md.
//
// Thread safety: a model is touched only by the thread that calls session::step() (or
// session::join()); none of these functions may be called from another thread.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeindex>
#include <utility>
#include <vector>

namespace lockstep::client {

using json = nlohmann::json;

/// A model's identity within its session: the same number on every replica.
using model_id = std::uint64_t;

/// Scope of the SDK's own events to models: "view-join" and "view-exit", whose data is the
/// view id (a string). Models subscribe with `subscribe(session_scope, "view-join", ...)`.
inline constexpr std::string_view session_scope = "session";

class model;
class model_registry;

namespace detail {

/// What a model reaches through its session's replica. Implemented by the SDK.
class host {
public:
    virtual std::int64_t now() const = 0;
    virtual double random() = 0;
    virtual std::uint32_t random_u32() = 0;
    virtual std::string const& session_id() const = 0;
    virtual model_registry const& registry() const = 0;
    virtual void publish(std::string_view scope, std::string_view event, json const& data) = 0;
    virtual void subscribe(model_id m, std::string scope, std::string event, std::string method) = 0;
    virtual void unsubscribe(model_id m, std::string_view scope, std::string_view event) = 0;
    virtual std::uint64_t future(model_id m, std::int64_t ms, std::string method, json args) = 0;
    virtual bool cancel_future(std::uint64_t handle) = 0;
    virtual model& create(std::type_index type, json const& args) = 0;
    virtual void destroy(model_id m) = 0;
    virtual model* find(model_id m) = 0;
    virtual std::vector<std::string> views() const = 0;

protected:
    ~host() = default;
};

/// Type-erased description of one registered model class.
struct model_class {
    std::string name;
    std::type_index type;
    std::function<std::unique_ptr<model>()> make;
    /// Calls the method registered under `method`; false when there is none.
    std::function<bool(model&, std::string_view method, json const& args)> call;
    /// The registered name of a method pointer (passed by address, with its class).
    std::function<std::string const*(std::type_index, void const*)> name_of;
    std::shared_ptr<void> methods;  // the model_type<M> of this class
};

}  // namespace detail

/// Base class of all models. Derive, register the class in a model_registry, and
/// override `init` (first creation), `save` and `load` (snapshots).
class model {
public:
    virtual ~model() = default;
    model() = default;
    model(model const&) = delete;
    model& operator=(model const&) = delete;

    /// Called once, when the model is created (never again on a replica that loads it
    /// from a snapshot: that replica calls `load` instead).
    virtual void init(json const& args) {}
    /// Writes the whole state of the model. Subscriptions and pending future calls are
    /// kept by the SDK and need not be saved.
    virtual void save(json& state) const {}
    /// Restores what `save` wrote. Other models of the session already exist (find works).
    virtual void load(json const& state) {}

    model_id id() const noexcept { return id_; }
    std::string const& type_name() const noexcept { return type_; }

    /// Views may read models (on the step() thread) but never change them.
    std::int64_t now() const { return host_->now(); }
    std::string const& session_id() const { return host_->session_id(); }
    /// The view ids currently in the session, sorted.
    std::vector<std::string> views() const { return host_->views(); }

protected:
    /// A number in [0, 1) from the session's generator (seeded by the session id and kept
    /// in snapshots). Never use std::rand, std::random_device or unseeded engines.
    double random() { return host_->random(); }
    std::uint32_t random_u32() { return host_->random_u32(); }

    /// Delivers an event synchronously to model subscribers (in subscription order), then
    /// queues it for view subscribers.
    void publish(std::string_view scope, std::string_view event, json const& data = nullptr)
    {
        host_->publish(scope, event, data);
    }

    template <class M>
    void subscribe(std::string scope, std::string event, void (M::*handler)(json const&));
    void subscribe(std::string scope, std::string event, std::string method)
    {
        host_->subscribe(id_, std::move(scope), std::move(event), std::move(method));
    }
    void unsubscribe(std::string_view scope, std::string_view event) { host_->unsubscribe(id_, scope, event); }

    /// Calls `method(args)` on this model at now() + ms of model time. Calls due at the
    /// same time run in the order they were scheduled, and before any reflected event
    /// stamped with that time or later. Returns a handle for cancel_future.
    template <class M>
    std::uint64_t future(std::int64_t ms, void (M::*method)(json const&), json args = nullptr);
    std::uint64_t future(std::int64_t ms, std::string method, json args = nullptr)
    {
        return host_->future(id_, ms, std::move(method), std::move(args));
    }
    /// False when the call already ran or was cancelled.
    bool cancel_future(std::uint64_t handle) { return host_->cancel_future(handle); }

    /// Creates another model of a registered class; `init(args)` runs before this returns.
    template <class T>
    T& create(json const& args = nullptr)
    {
        return static_cast<T&>(host_->create(std::type_index(typeid(T)), args));
    }
    /// Removes this model with its subscriptions and pending calls. Do not touch `*this`
    /// afterwards.
    void destroy() { host_->destroy(id_); }

public:
    /// Another model of the session by id (nullptr if it does not exist). Models refer to
    /// each other by id, never by pointer (pointers do not survive a snapshot).
    model* find(model_id m) const { return host_->find(m); }
    template <class T>
    T* find_as(model_id m) const
    {
        return dynamic_cast<T*>(host_->find(m));
    }

private:
    template <class M>
    std::string method_name(void (M::*fn)(json const&)) const;

    friend class model_registry;
    friend struct model_access;
    detail::host* host_ = nullptr;
    model_id id_ = 0;
    std::string type_;
};

/// The methods of one model class that can be subscribed or scheduled, by stable name.
template <class M>
class model_type {
public:
    using method_ptr = void (M::*)(json const&);

    /// Registers `fn` under `name` (names are what snapshots store; keep them stable).
    /// `fn` may be a method of a base class of M (virtual methods dispatch as usual).
    template <class B>
    model_type& method(std::string name, void (B::*fn)(json const&))
    {
        static_assert(std::is_base_of_v<B, M>, "a method of the model class or of one of its bases");
        // Remembers fn with its declaring class, so model code can name it as &B::fn.
        auto same = [fn](std::type_index t, void const* p) {
            return t == std::type_index(typeid(B)) && *static_cast<void (B::* const*)(json const&)>(p) == fn;
        };
        methods_.push_back({std::move(name), static_cast<method_ptr>(fn), same});
        return *this;
    }

    method_ptr find(std::string_view name) const
    {
        for (auto& m : methods_)
            if (m.name == name)
                return m.fn;
        return nullptr;
    }
    /// The name of a method given as a pointer to a member of class `declaring`.
    std::string const* name_of(std::type_index declaring, void const* member_ptr) const
    {
        for (auto& m : methods_)
            if (m.same(declaring, member_ptr))
                return &m.name;
        return nullptr;
    }

private:
    struct entry {
        std::string name;
        method_ptr fn;
        std::function<bool(std::type_index, void const*)> same;
    };
    std::vector<entry> methods_;
};

/// The model classes of an application, each under a stable name. Every client of a
/// session must register the same classes. Build it once, before joining; it must
/// outlive the sessions that use it.
class model_registry {
public:
    template <class M>
    model_type<M>& add(std::string name)
    {
        static_assert(std::is_base_of_v<model, M>, "models derive from lockstep::client::model");
        auto methods = std::make_shared<model_type<M>>();
        auto* raw = methods.get();
        detail::model_class c{
            std::move(name), std::type_index(typeid(M)), [] { return std::make_unique<M>(); },
            [raw](model& m, std::string_view method, json const& args) {
                auto fn = raw->find(method);
                if (!fn)
                    return false;
                (static_cast<M&>(m).*fn)(args);
                return true;
            },
            [raw](std::type_index t, void const* p) { return raw->name_of(t, p); }, methods};
        if (find(c.name) || find(c.type))
            throw std::invalid_argument("model class registered twice: " + c.name);
        classes_.push_back(std::move(c));
        return *raw;
    }

    detail::model_class const* find(std::string_view name) const
    {
        for (auto& c : classes_)
            if (c.name == name)
                return &c;
        return nullptr;
    }
    detail::model_class const* find(std::type_index type) const
    {
        for (auto& c : classes_)
            if (c.type == type)
                return &c;
        return nullptr;
    }
    std::vector<detail::model_class> const& classes() const { return classes_; }

private:
    std::vector<detail::model_class> classes_;
};

template <class M>
std::string
model::method_name(void (M::*fn)(json const&)) const
{
    auto c = host_->registry().find(type_);
    auto name = c ? c->name_of(std::type_index(typeid(M)), &fn) : nullptr;
    if (!name)
        throw std::invalid_argument("method not registered with model_type<" + type_ +
                                    ">::method (register it, or pass its name)");
    return *name;
}

template <class M>
void
model::subscribe(std::string scope, std::string event, void (M::*handler)(json const&))
{
    subscribe(std::move(scope), std::move(event), method_name(handler));
}

template <class M>
std::uint64_t
model::future(std::int64_t ms, void (M::*method)(json const&), json args)
{
    return future(ms, method_name(method), std::move(args));
}

}  // namespace lockstep::client
