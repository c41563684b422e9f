#include "protocol/frame.hpp"

#include <lockstep/protocol/constants.hpp>

namespace lockstep {

void
append_frame_header(std::string& out, std::size_t len, bool fin, bool text)
{
    unsigned char b0 = static_cast<unsigned char>((fin ? 0x80 : 0) | (text ? 0x1 : 0x2));
    out.push_back(static_cast<char>(b0));
    if (len < 126) {
        out.push_back(static_cast<char>(len));
    } else if (len <= 0xFFFF) {
        out.push_back(static_cast<char>(126));
        out.push_back(static_cast<char>((len >> 8) & 0xFF));
        out.push_back(static_cast<char>(len & 0xFF));
    } else {
        out.push_back(static_cast<char>(127));
        for (int i = 7; i >= 0; --i)
            out.push_back(static_cast<char>((static_cast<std::uint64_t>(len) >> (8 * i)) & 0xFF));
    }
}

std::string
close_frame(std::uint16_t code, std::string_view reason)
{
    reason = reason.substr(0, 123);
    std::string out;
    out.reserve(4 + reason.size());
    out.push_back(static_cast<char>(0x88));  // FIN, close
    out.push_back(static_cast<char>(2 + reason.size()));
    out.push_back(static_cast<char>(code >> 8));
    out.push_back(static_cast<char>(code & 0xFF));
    out.append(reason);
    return out;
}

namespace {

std::size_t
header_size(std::size_t len)
{
    return len < 126 ? 2 : (len <= 0xFFFF ? 4 : 10);
}

}  // namespace

std::string
chunk_frames(std::string_view json, std::size_t chunk_bytes)
{
    std::string out;
    out.reserve(json.size() + (json.size() / chunk_bytes + 1) * 24);
    std::size_t pos = 0;
    bool first = true;
    while (pos < json.size()) {
        std::size_t n = std::min(chunk_bytes, json.size() - pos);
        // Never split a UTF-8 sequence: back up over continuation bytes.
        while (pos + n < json.size() && n > 0 &&
               (static_cast<unsigned char>(json[pos + n]) & 0xC0) == 0x80)
            --n;
        bool last = pos + n >= json.size();
        std::string_view slice = json.substr(pos, n);
        std::size_t len = 8 + slice.size();
        append_frame_header(out, len);
        out.append("_CHUNK");
        out.push_back(first ? '1' : '0');
        out.push_back(last ? '1' : '0');
        out.append(slice);
        pos += n;
        first = false;
    }
    return out;
}

std::shared_ptr<out_message const>
out_message::from_json(std::string&& buf, std::size_t elem_off, std::size_t elem_len, bool chunk)
{
    auto m = std::make_shared<out_message>();
    std::size_t json_len = buf.size() - header_room;
    if (json_len > protocol::chunk_threshold && chunk) {
        std::string_view json(buf.data() + header_room, json_len);
        m->bytes_ = chunk_frames(json, protocol::chunk_threshold);
        m->wire_end_ = m->bytes_.size();
        if (elem_len) {  // the element after the frames (they interleave _CHUNK headers)
            m->elem_off_ = m->bytes_.size();
            m->elem_len_ = static_cast<std::uint32_t>(elem_len);
            m->bytes_.append(json.substr(elem_off, elem_len));
        }
        return m;
    }
    std::size_t h = header_size(json_len);
    std::string hdr;
    append_frame_header(hdr, json_len);
    std::size_t start = header_room - h;
    buf.replace(start, h, hdr);
    m->bytes_ = std::move(buf);
    m->wire_off_ = static_cast<std::uint8_t>(start);
    m->wire_end_ = m->bytes_.size();
    m->elem_off_ = header_room + elem_off;
    m->elem_len_ = static_cast<std::uint32_t>(elem_len);
    return m;
}

}  // namespace lockstep
