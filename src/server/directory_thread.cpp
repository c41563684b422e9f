#include "server/directory_thread.hpp"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

namespace lockstep {

namespace net = boost::asio;

namespace {
// How often a seat report is retried while the directory is unreachable.
constexpr auto seat_retry = std::chrono::milliseconds(200);
}  // namespace

directory_thread::directory_thread(std::unique_ptr<router::directory> dir) : dir_(std::move(dir))
{
    guard_.emplace(ioc_.get_executor());
    thread_ = std::thread([this] {
        // Last line of defence, as on the workers: a task that throws (a malformed reply
        // from Redis, a bug) is logged and the thread carries on with the next one.
        for (;;) {
            try {
                ioc_.run();
                return;
            } catch (std::exception const& e) {
                spdlog::error("directory thread: a task threw, continuing: {}", e.what());
            }
        }
    });
}

directory_thread::~directory_thread()
{
    stop();
}

void
directory_thread::post(unique_function<void(router::directory&)> task)
{
    net::post(ioc_, [this, t = std::move(task)]() mutable { t(*dir_); });
}

void
directory_thread::run(unique_function<void()> task)
{
    net::post(ioc_, std::move(task));
}

void
directory_thread::run_after(std::chrono::milliseconds delay, unique_function<void()> task)
{
    auto timer = std::make_shared<net::steady_timer>(ioc_, delay);
    timer->async_wait([this, timer, t = std::move(task)](boost::system::error_code ec) mutable {
        if (!ec && !stopping_)
            t();
    });
}

void
directory_thread::seat_joined(std::string token, std::string name, std::string conn)
{
    net::post(ioc_, [this, token = std::move(token), name = std::move(name), conn = std::move(conn)]() mutable {
        auto& r = seats_[conn];
        r.token = std::move(token);
        r.name = std::move(name);
        try_join(conn);
    });
}

void
directory_thread::try_join(std::string const& conn)
{
    auto it = seats_.find(conn);
    if (it == seats_.end() || stopping_)
        return;
    auto& r = it->second;
    r.confirmed = dir_->member_joined(r.token, r.name, conn);
    if (r.confirmed || dir_->available()) {
        r.retry.reset();
        if (!r.confirmed)
            seats_.erase(it);  // not this seat's session, or no such seat: nothing to report later
        return;
    }
    if (!r.retry)
        r.retry = std::make_unique<net::steady_timer>(ioc_);
    r.retry->expires_after(seat_retry);
    r.retry->async_wait([this, conn](boost::system::error_code ec) {
        if (!ec)
            try_join(conn);
    });
}

void
directory_thread::seat_left(std::string token, bool normal, std::string conn)
{
    net::post(ioc_, [this, token = std::move(token), normal, conn = std::move(conn)] {
        auto it = seats_.find(conn);
        if (it == seats_.end())
            return;  // never confirmed: nothing to give back
        bool confirmed = it->second.confirmed;
        seats_.erase(it);  // also cancels a pending retry
        if (confirmed)
            dir_->member_left(token, normal, conn);
    });
}

void
directory_thread::start_heartbeat(std::chrono::milliseconds interval, std::function<router::reflector_info()> make)
{
    net::post(ioc_, [this, interval, make = std::move(make)]() mutable {
        hb_interval_ = interval;
        hb_make_ = std::move(make);
        dir_->register_reflector(hb_make_());
        arm_heartbeat();
    });
}

void
directory_thread::arm_heartbeat()
{
    hb_timer_.expires_after(hb_interval_);
    hb_timer_.async_wait([this](boost::system::error_code ec) {
        if (ec || stopping_)
            return;
        dir_->register_reflector(hb_make_());
        arm_heartbeat();
    });
}

void
directory_thread::stop()
{
    if (stopped_.exchange(true))
        return;
    net::post(ioc_, [this] {
        stopping_ = true;
        hb_timer_.cancel();
        for (auto& [conn, r] : seats_)
            if (r.retry)
                r.retry->cancel();
    });
    guard_.reset();
    if (thread_.joinable())
        thread_.join();
}

}  // namespace lockstep
