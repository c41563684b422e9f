// A move-only std::function: completion handlers are move-only.
#pragma once

#include <memory>
#include <utility>

namespace lockstep {

template <class Sig>
class unique_function;

template <class R, class... A>
class unique_function<R(A...)> {
    struct base {
        virtual ~base() = default;
        virtual R call(A... a) = 0;
    };
    template <class F>
    struct holder final : base {
        F f;
        explicit holder(F&& fn) : f(std::move(fn)) {}
        R
        call(A... a) override
        {
            return f(std::forward<A>(a)...);
        }
    };
    std::unique_ptr<base> p_;

public:
    unique_function() = default;
    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, unique_function>>>
    unique_function(F f) : p_(std::make_unique<holder<F>>(std::move(f)))
    {
    }
    R
    operator()(A... a)
    {
        return p_->call(std::forward<A>(a)...);
    }
    explicit operator bool() const noexcept { return static_cast<bool>(p_); }
    void reset() noexcept { p_.reset(); }
};

}  // namespace lockstep
