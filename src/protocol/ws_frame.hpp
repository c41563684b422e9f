// Reading WebSocket frames (RFC 6455 section 5.2) and joining _CHUNK messages, for the
// code that speaks the protocol on raw sockets: the load generator, the SDK (whose
// frames come from Beast but whose _CHUNK reassembly is here) and the tests. The
// reflector itself reads frames with Beast.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lockstep::protocol {

/// One frame as it sits in a buffer. `payload` points into the buffer and is still
/// masked when `masked` is set (see unmask()).
struct frame_view {
    bool fin = false;
    int opcode = 0;  // 0x0 continuation, 0x1 text, 0x2 binary, 0x8 close, 0x9 ping, 0xA pong
    bool masked = false;
    std::array<unsigned char, 4> mask{};
    std::string_view payload;
};

/// Parses the frame at the front of `in`. Returns the number of bytes it spans (header
/// and payload), or 0 when `in` does not hold a whole frame yet. Never reads past `in`.
std::size_t
parse_frame(std::string_view in, frame_view& out);

/// The payload of `f` with the mask removed (a copy).
std::string
unmasked_payload(frame_view const& f);

/// The status code of a close frame's (unmasked) payload; 1005 when it carries none.
int
close_code_of(std::string_view payload);

/// Joins _CHUNK messages: a reflector message over protocol::chunk_threshold is sent as
/// text messages "_CHUNK" + first ('1'/'0') + last ('1'/'0') + slice. Other messages may
/// arrive between the chunks of one message and pass through unchanged.
class chunk_assembler {
public:
    enum class status {
        complete,   // `message` is a whole message (the input itself, or the joined chunks)
        partial,    // a chunk was taken; more must follow
        malformed,  // a chunk without its 8-byte header, a flag other than '0'/'1', a
                    // continuation with no first chunk, or over `max_bytes`: the partial
                    // message is dropped
    };

    explicit chunk_assembler(std::size_t max_bytes = std::size_t(1) << 30) : max_bytes_(max_bytes) {}

    /// Takes one text message. On `complete`, `message` views either `text` or the
    /// assembler's buffer (valid until the next feed()).
    status feed(std::string_view text, std::string_view& message);
    /// Drops a partial message (e.g. when the connection is replaced).
    void reset();
    bool in_progress() const noexcept { return open_; }

private:
    std::size_t max_bytes_;
    std::string buf_;
    std::string done_;
    bool open_ = false;
};

}  // namespace lockstep::protocol
