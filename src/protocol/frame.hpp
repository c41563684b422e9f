// Pre-encoded outbound WebSocket messages.
//
// Server-to-client frames are unmasked, so a reflected event's complete frame (header +
// JSON) is the same bytes for every recipient. It is built once, shared immutably by
// every connection's write queue and by the session's message log (the log keeps the
// `[time, seq, payload...]` element so a SYNC is a concatenation).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace lockstep {

/// One outbound message: one or more complete WebSocket text frames (several when the
/// JSON is over the _CHUNK threshold), and optionally the position of the message's
/// `args` element inside the JSON (used by the log).
class out_message {
public:
    /// The bytes to put on the wire.
    std::string_view
    wire() const noexcept
    {
        return std::string_view(bytes_).substr(wire_off_, wire_end_ - wire_off_);
    }

    /// The JSON text of the element recorded for the log (RECV args), or empty.
    std::string_view
    element() const noexcept
    {
        return std::string_view(bytes_).substr(elem_off_, elem_len_);
    }

    std::size_t
    size() const noexcept
    {
        return wire_end_ - wire_off_;
    }

    /// Builds a message from its JSON text. `json` must have `header_room` free bytes at
    /// its front (see json_builder). `elem_off/elem_len` locate the element within the
    /// JSON part (offsets relative to the first JSON byte); pass 0,0 if none. With
    /// `chunk` false a text over the _CHUNK threshold stays one frame (a frame relayed as
    /// it came, already chunked by its sender).
    static std::shared_ptr<out_message const>
    from_json(std::string&& buf, std::size_t elem_off = 0, std::size_t elem_len = 0, bool chunk = true);

    /// Bytes reserved in front of the JSON for the frame header.
    static constexpr std::size_t header_room = 10;

private:
    // Kept small: every logged event is one of these (docs/operations.md, "Memory per
    // logged event"). The element is a slice of the frame, except in a chunked message,
    // whose frames interleave _CHUNK headers: there a copy follows the frames in bytes_.
    std::string bytes_;
    std::size_t wire_end_ = 0;
    std::size_t elem_off_ = 0;
    std::uint32_t elem_len_ = 0;  // client frames are at most --max-frame-bytes
    std::uint8_t wire_off_ = 0;   // < header_room
};

using out_ptr = std::shared_ptr<out_message const>;

/// Starts a buffer with room for the frame header; append JSON after it.
inline std::string
json_builder(std::size_t reserve)
{
    std::string s;
    s.reserve(reserve + out_message::header_room);
    s.append(out_message::header_room, '\0');
    return s;
}

/// Appends the WebSocket header of an unmasked FIN text frame with `len` payload bytes.
void
append_frame_header(std::string& out, std::size_t len, bool fin = true, bool text = true);

/// An unmasked close frame with status `code` and `reason` (cut to the 123 bytes a
/// close frame can carry). The reflector writes it itself for a move's close, so that
/// the client's frames until its close reply are still read (see server/connection.cpp).
std::string
close_frame(std::uint16_t code, std::string_view reason);

/// Splits a JSON text over the _CHUNK threshold into _CHUNK frames on UTF-8 boundaries
/// and returns the concatenated frames (no byte is dropped or re-encoded).
std::string
chunk_frames(std::string_view json, std::size_t chunk_bytes);

}  // namespace lockstep
