#include "protocol/ws_frame.hpp"

namespace lockstep::protocol {

std::size_t
parse_frame(std::string_view in, frame_view& out)
{
    if (in.size() < 2)
        return 0;
    auto const* h = reinterpret_cast<unsigned char const*>(in.data());
    std::uint64_t len = h[1] & 0x7F;
    std::size_t hl = 2;
    if (len == 126) {
        if (in.size() < 4)
            return 0;
        len = (static_cast<std::uint64_t>(h[2]) << 8) | h[3];
        hl = 4;
    } else if (len == 127) {
        if (in.size() < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; ++i)
            len = (len << 8) | h[2 + i];
        hl = 10;
    }
    bool masked = (h[1] & 0x80) != 0;
    if (masked) {
        if (in.size() < hl + 4)
            return 0;
        for (int i = 0; i < 4; ++i)
            out.mask[i] = h[hl + i];
        hl += 4;
    }
    if (in.size() - hl < len)
        return 0;
    out.fin = (h[0] & 0x80) != 0;
    out.opcode = h[0] & 0x0F;
    out.masked = masked;
    out.payload = in.substr(hl, static_cast<std::size_t>(len));
    return hl + static_cast<std::size_t>(len);
}

std::string
unmasked_payload(frame_view const& f)
{
    std::string p(f.payload);
    if (f.masked)
        for (std::size_t i = 0; i < p.size(); ++i)
            p[i] = static_cast<char>(p[i] ^ f.mask[i % 4]);
    return p;
}

int
close_code_of(std::string_view payload)
{
    if (payload.size() < 2)
        return 1005;
    return (static_cast<unsigned char>(payload[0]) << 8) | static_cast<unsigned char>(payload[1]);
}

chunk_assembler::status
chunk_assembler::feed(std::string_view text, std::string_view& message)
{
    if (text.substr(0, 6) != "_CHUNK") {
        message = text;
        return status::complete;
    }
    if (text.size() < 8 || (text[6] != '0' && text[6] != '1') || (text[7] != '0' && text[7] != '1') ||
        (text[6] == '0' && !open_) || (text[6] == '0' ? buf_.size() : 0) + text.size() - 8 > max_bytes_) {
        reset();
        return status::malformed;
    }
    if (text[6] == '1')
        buf_.clear();  // a new message replaces an unfinished one, as the JavaScript client does
    buf_.append(text.substr(8));
    open_ = true;
    if (text[7] != '1')
        return status::partial;
    done_ = std::move(buf_);
    buf_.clear();
    open_ = false;
    message = done_;
    return status::complete;
}

void
chunk_assembler::reset()
{
    buf_.clear();
    open_ = false;
}

}  // namespace lockstep::protocol
