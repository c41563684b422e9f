// A WebSocket connection's unsent output: complete server frames, in order. Ordinary
// frames (RECV, TICK, PONG...) are copied into one growing buffer, so a write carries
// many of them; a SYNC is held as the session's shared immutable buffer, never copied,
// so simultaneous joiners of one session hold one copy of the log between them (and
// the budget for SYNC bytes in flight counts it once). No Asio; one thread.
#pragma once

#include "protocol/frame.hpp"

#include <sys/uio.h>

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>

namespace lockstep {

class output_queue {
public:
    /// Appends a copy of `wire` (complete frames).
    void append(std::string_view wire);
    /// Appends `m`'s frames by reference: `m` is kept until they are sent or dropped.
    void append_shared(out_ptr m);

    /// Bytes not sent yet, and how many of them are in shared buffers.
    std::size_t pending() const noexcept { return pending_; }
    std::size_t shared_pending() const noexcept { return shared_pending_; }

    /// Points up to `n` iovecs at the unsent bytes, in order; returns how many it used.
    std::size_t gather(iovec* iov, std::size_t n) const noexcept;
    /// The first `n` unsent bytes were taken by the socket.
    void consume(std::size_t n);
    /// Drops everything not sent except the rest of a frame the socket already took the
    /// start of (the stream must stay well-formed for a close frame). Returns the bytes
    /// dropped.
    std::size_t drop_unsent();

private:
    struct chunk {
        out_ptr shared;       // a shared message's frames; else `own`
        std::string own;
        std::size_t end = 0;  // shared: bytes of it to send (less than all after a drop)
        char const* data() const noexcept { return shared ? shared->wire().data() : own.data(); }
        std::size_t size() const noexcept { return shared ? end : own.size(); }
    };
    std::size_t frame_end_after(std::size_t off);
    void pop_front();

    std::deque<chunk> chunks_;
    std::size_t head_ = 0;    // bytes of the front chunk already sent
    std::size_t frame0_ = 0;  // a frame boundary in the front chunk at or before head_
    std::size_t pending_ = 0;
    std::size_t shared_pending_ = 0;
    std::string spare_;       // a drained buffer kept for reuse (if small)
};

}  // namespace lockstep
