#include "server/output_queue.hpp"

#include <algorithm>
#include <cstdint>

namespace lockstep {

namespace {

// A drained buffer above this capacity is freed, so a burst does not stay resident on an
// idle connection.
constexpr std::size_t keep_buffer_bytes = 16u << 10;
// Sent bytes are cut from the front of a partly sent buffer once they exceed this.
constexpr std::size_t compact_bytes = 64u << 10;

}  // namespace

void
output_queue::append(std::string_view wire)
{
    if (chunks_.empty() || chunks_.back().shared) {
        chunks_.emplace_back();
        chunks_.back().own = std::move(spare_);
        spare_.clear();
    }
    chunks_.back().own.append(wire.data(), wire.size());
    pending_ += wire.size();
}

void
output_queue::append_shared(out_ptr m)
{
    auto n = m->wire().size();
    if (n == 0)
        return;
    chunk c;
    c.shared = std::move(m);
    c.end = n;
    chunks_.push_back(std::move(c));
    pending_ += n;
    shared_pending_ += n;
}

std::size_t
output_queue::gather(iovec* iov, std::size_t n) const noexcept
{
    std::size_t used = 0;
    for (std::size_t i = 0; i < chunks_.size() && used < n; ++i) {
        auto const& c = chunks_[i];
        std::size_t from = i == 0 ? head_ : 0;
        if (c.size() <= from)
            continue;
        iov[used].iov_base = const_cast<char*>(c.data() + from);
        iov[used].iov_len = c.size() - from;
        ++used;
    }
    return used;
}

void
output_queue::pop_front()
{
    auto& c = chunks_.front();
    if (!c.shared && chunks_.size() == 1 && c.own.capacity() <= keep_buffer_bytes) {
        spare_ = std::move(c.own);
        spare_.clear();
    }
    chunks_.pop_front();
    head_ = 0;
    frame0_ = 0;
}

void
output_queue::consume(std::size_t n)
{
    pending_ -= std::min(pending_, n);
    while (n > 0 && !chunks_.empty()) {
        auto& c = chunks_.front();
        std::size_t left = c.size() - head_;
        std::size_t take = std::min(left, n);
        if (c.shared)
            shared_pending_ -= std::min(shared_pending_, take);
        n -= take;
        if (take == left) {
            pop_front();
            continue;
        }
        head_ += take;
        if (!c.shared && head_ - frame0_ > compact_bytes) {
            frame_end_after(head_);  // moves frame0_ up to the frame being written
            c.own.erase(0, frame0_);
            head_ -= frame0_;
            frame0_ = 0;
        }
    }
}

std::size_t
output_queue::drop_unsent()
{
    std::size_t before = pending_;
    std::size_t keep = 0;
    if (!chunks_.empty()) {
        keep = frame_end_after(head_) - head_;
        chunks_.erase(chunks_.begin() + 1, chunks_.end());
        auto& c = chunks_.front();
        if (keep == 0) {
            pop_front();
        } else if (c.shared) {
            c.end = head_ + keep;
        } else {
            c.own.resize(head_ + keep);
        }
    }
    pending_ = keep;
    shared_pending_ = !chunks_.empty() && chunks_.front().shared ? keep : 0;
    if (chunks_.empty())
        std::string().swap(spare_);
    return before - keep;
}

/// The end of the frame of the front chunk that contains byte `off` (`off` itself when a
/// frame starts there). Walks the frame headers from frame0_, a known frame start; server
/// frames are unmasked and always complete in their chunk.
std::size_t
output_queue::frame_end_after(std::size_t off)
{
    auto const& c = chunks_.front();
    auto const* b = reinterpret_cast<unsigned char const*>(c.data());
    std::size_t size = c.size();
    std::size_t p = frame0_;
    while (p < off && p + 2 <= size) {
        std::uint64_t len = b[p + 1] & 0x7f;
        std::size_t head = 2;
        if (len == 126) {
            len = (std::uint64_t{b[p + 2]} << 8) | b[p + 3];
            head = 4;
        } else if (len == 127) {
            len = 0;
            for (int i = 0; i < 8; ++i)
                len = (len << 8) | b[p + 2 + i];
            head = 10;
        }
        std::size_t next = p + head + static_cast<std::size_t>(len);
        if (next > off) {
            frame0_ = p;
            return next;
        }
        p = next;
    }
    frame0_ = p;
    return p;
}

}  // namespace lockstep
