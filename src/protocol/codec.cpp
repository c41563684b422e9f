#include "protocol/codec.hpp"

#include <charconv>

namespace lockstep::codec {
namespace {

action
action_of(std::string_view a)
{
    if (a == "SEND") return action::send;
    if (a == "JOIN") return action::join;
    if (a == "TUTTI") return action::tutti;
    if (a == "SNAP") return action::snap;
    if (a == "SAVE") return action::save;
    if (a == "PING") return action::ping;
    if (a == "PULSE") return action::pulse;
    if (a == "LOG") return action::log;
    if (a == "TICKS") return action::ticks;
    return action::unknown;
}

void
append_int(std::string& out, std::int64_t v)
{
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

void
append_prefix(std::string& out, std::string_view id, std::string_view act)
{
    out.append(R"({"id":)");
    append_json_string(out, id);
    out.append(R"(,"action":")");
    out.append(act);
    out.push_back('"');
}

}  // namespace

void
append_json_string(std::string& out, std::string_view s)
{
    static char const hex[] = "0123456789abcdef";
    out.push_back('"');
    for (char ch : s) {
        auto u = static_cast<unsigned char>(ch);
        switch (ch) {
        case '"': out.append("\\\""); break;
        case '\\': out.append("\\\\"); break;
        case '\n': out.append("\\n"); break;
        case '\r': out.append("\\r"); break;
        case '\t': out.append("\\t"); break;
        case '\b': out.append("\\b"); break;
        case '\f': out.append("\\f"); break;
        default:
            if (u < 0x20) {
                out.append("\\u00");
                out.push_back(hex[u >> 4]);
                out.push_back(hex[u & 0xF]);
            } else {
                out.push_back(ch);
            }
        }
    }
    out.push_back('"');
}

parse_result
parse_client_frame(std::string_view text, client_frame& out, std::vector<json_scan::member>& scratch)
{
    scratch.clear();
    if (!json_scan::scan_object(text, scratch)) {
        // Distinguish "valid JSON but not an object" for a precise log line.
        return json_scan::validate(text) ? parse_result::not_object : parse_result::not_json;
    }
    out = client_frame{};
    for (auto const& m : scratch) {
        if (m.key == "action") {
            std::string_view a;
            if (json_scan::simple_string(m.value, a)) {
                out.action_name = a;
                out.act = action_of(a);
            } else {
                out.action_name = m.value;
            }
        } else if (m.key == "args") {
            out.args = m.value;
        } else if (m.key == "tags") {
            out.tags = m.value;
        }
    }
    return parse_result::ok;
}

bool
split_send_args(std::string_view args, std::string_view& rest, std::vector<std::string_view>& scratch)
{
    scratch.clear();
    if (args.empty() || args.front() != '[')
        return false;
    if (!json_scan::scan_array(args, scratch) || scratch.size() < 3)
        return false;
    // From the first byte of element 2 to the last byte of the final element.
    auto const* begin = scratch[2].data();
    auto const* end = scratch.back().data() + scratch.back().size();
    rest = std::string_view(begin, static_cast<std::size_t>(end - begin));
    return true;
}

out_ptr
make_recv(std::string_view session_id, std::int64_t time, std::uint32_t seq, std::string_view rest)
{
    // Exactly what is written (unless the id needs escapes): the frame is kept in the
    // log as long as the session has no snapshot, so capacity slack would stay too.
    auto digits = [](std::int64_t v) {
        char d[24];
        return static_cast<std::size_t>(std::to_chars(d, d + sizeof d, v).ptr - d);
    };
    auto buf = json_builder(std::string_view(R"({"id":"","action":"RECV","args":[,,]})").size() + session_id.size() +
                            digits(time) + digits(seq) + rest.size());
    append_prefix(buf, session_id, "RECV");
    buf.append(R"(,"args":)");
    std::size_t elem_off = buf.size() - out_message::header_room;
    buf.push_back('[');
    append_int(buf, time);
    buf.push_back(',');
    append_int(buf, seq);
    buf.push_back(',');
    buf.append(rest);
    buf.push_back(']');
    std::size_t elem_len = buf.size() - out_message::header_room - elem_off;
    buf.push_back('}');
    return out_message::from_json(std::move(buf), elem_off, elem_len);
}

out_ptr
make_tick(std::string_view session_id, std::int64_t time)
{
    auto buf = json_builder(session_id.size() + 48);
    append_prefix(buf, session_id, "TICK");
    buf.append(R"(,"args":)");
    append_int(buf, time);
    buf.push_back('}');
    return out_message::from_json(std::move(buf));
}

out_ptr
make_simple(std::string_view session_id, std::string_view act, std::string_view args_json)
{
    auto buf = json_builder(session_id.size() + args_json.size() + 48);
    append_prefix(buf, session_id, act);
    if (!args_json.empty()) {
        buf.append(R"(,"args":)");
        buf.append(args_json);
    }
    buf.push_back('}');
    return out_message::from_json(std::move(buf));
}

out_ptr
make_pong(std::string_view args_json)
{
    auto buf = json_builder(args_json.size() + 32);
    buf.append(R"({"action":"PONG")");
    if (!args_json.empty()) {
        buf.append(R"(,"args":)");
        buf.append(args_json);
    }
    buf.push_back('}');
    return out_message::from_json(std::move(buf));
}

}  // namespace lockstep::codec
