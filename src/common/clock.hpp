// Injected time. The session logic and the router never read a clock directly: the server passes a
// steady clock, tests pass a manual one.
#pragma once

#include <chrono>
#include <cstdint>

namespace lockstep {

/// Monotonic microseconds since an arbitrary origin.
class clock_source {
public:
    virtual ~clock_source() = default;
    virtual std::int64_t now_us() const noexcept = 0;
};

class steady_clock_source final : public clock_source {
public:
    std::int64_t
    now_us() const noexcept override
    {
        using namespace std::chrono;
        return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
    }
};

/// Test clock: time moves only when told to.
class manual_clock final : public clock_source {
public:
    explicit manual_clock(std::int64_t start_us = 1'000'000) : now_(start_us) {}
    std::int64_t
    now_us() const noexcept override
    {
        return now_;
    }
    void
    advance_ms(std::int64_t ms) noexcept
    {
        now_ += ms * 1000;
    }
    void
    advance_us(std::int64_t us) noexcept
    {
        now_ += us;
    }

private:
    std::int64_t now_;
};

}  // namespace lockstep
