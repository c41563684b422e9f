#include "reflector/dispatch.hpp"

#include "protocol/codec.hpp"

#include <spdlog/spdlog.h>

namespace lockstep {

using protocol::close_code;

namespace {

void
refused(session_host& host, refusal r)
{
    if (auto* c = host.counters())
        c->refused_for(r);
}

void
dispatch_frame(session_host& host, membership& m, peer& p, std::string_view text)
{
    auto const& lim = host.limits();
    if (lim.message_rate && !m.rate.take(host.now_us(), lim.message_rate, lim.message_burst)) {
        refused(host, refusal::message_rate);
        spdlog::info("{} more than {} frames/s (burst {}): closing 4005", p.tag(), lim.message_rate, lim.message_burst);
        p.close(close_code::too_many_messages, "too many messages");
        return;
    }
    codec::client_frame f;
    auto r = codec::parse_client_frame(text, f, m.scratch);
    if (r != codec::parse_result::ok) {
        spdlog::info("{} {}: closing 4102", p.tag(),
                     r == codec::parse_result::not_json ? "frame is not JSON" : "frame is not a JSON object");
        p.close(close_code::malformed_message, "malformed message");
        return;
    }
    using codec::action;
    switch (f.act) {
    case action::send:
        if (!m.joined) {
            spdlog::debug("{} SEND before JOIN ignored", p.tag());
            return;
        }
        m.joined->send(p, f.args, f.tags);
        host.touched(*m.joined);
        return;
    case action::join: {
        if (m.joined) {
            // One SYNC per connection: a repeated JOIN would queue another copy of the
            // whole log (real clients JOIN once per socket; reconnecting opens a new one).
            refused(host, refusal::repeated_join);
            spdlog::debug("{} JOIN on a joined connection ignored", p.tag());
            return;
        }
        m.join_seen = true;
        if (!valid_session_id(m.session_id)) {
            refused(host, refusal::session_id);
            spdlog::info("{} JOIN for a session id of {} bytes that is not 1-{} URL segment characters: closing 4100",
                         p.tag(), m.session_id.size(), max_session_id_bytes);
            p.close(close_code::outdated_protocol, "bad session id");
            return;
        }
        if (lim.max_join_bytes && f.args.size() > lim.max_join_bytes) {
            refused(host, refusal::join_args);
            spdlog::info("{} JOIN args of {} bytes over --max-join-bytes {}: closing 4102", p.tag(), f.args.size(),
                         lim.max_join_bytes);
            p.close(close_code::malformed_message, "JOIN too large");
            return;
        }
        if (!host.find_session(m.session_id) && !host.may_create_session()) {
            refused(host, refusal::sessions);
            spdlog::warn("{} JOIN would create a session over --max-sessions: closing 4006", p.tag());
            p.close(close_code::too_many_sessions, "too many sessions");
            return;
        }
        auto& s = host.session_for(m.session_id);
        if (std::string why; m.admit_join && !m.admit_join(s, f.args, why)) {
            spdlog::info("{} JOIN refused ({}): closing 4103", p.tag(), why);
            p.close(close_code::bad_api_key, why);
            host.touched(s);
            return;
        }
        if (lim.max_clients_per_session && s.connected_count() >= lim.max_clients_per_session) {
            refused(host, refusal::clients_per_session);
            spdlog::warn("{} session has {} members (--max-clients-per-session): closing 4007", p.tag(),
                         s.connected_count());
            p.close(close_code::session_full, "session full");
            host.touched(s);
            return;
        }
        if (s.join(p, f.args.empty() ? std::string_view("null") : f.args)) {
            m.joined = &s;
            if (!m.seat_token.empty() && !m.seat_reported) {  // came through a router seat
                m.seat_reported = true;
                host.seat_joined(m.seat_token, s.name(), m.conn_key);
            }
        }
        host.touched(s);
        return;
    }
    case action::tutti:
    case action::snap:
    case action::save:
    case action::ticks: {
        // Only members act on a session: without this a stranger could stop its ticks
        // or point every later joiner at its own snapshot. From the connection's side
        // there is no session, so it gets what the reference sends for an unknown one
        // (4000: a confused real client reconnects and JOINs first).
        session* s = m.joined;
        if (!s) {
            refused(host, refusal::not_member);
            spdlog::info("{} {} without a JOIN on this connection: closing 4000", p.tag(), f.action_name);
            p.close(close_code::unknown_session, "not a member of this session");
            return;
        }
        if (f.act == action::tutti)
            s->tutti(p, f.args);
        else if (f.act == action::snap)
            s->snap(p, f.args);
        else if (f.act == action::save)
            s->save(p, f.args);
        else
            s->ticks(p, f.args);
        host.touched(*s);
        return;
    }
    case action::ping:
        if (m.joined)
            m.joined->ping(p, f.args);
        else
            p.deliver(codec::make_pong(f.args));
        return;
    case action::pulse:
        return;
    case action::log:
        spdlog::info("{} LOG {}", p.tag(), f.args.substr(0, 2000));
        return;
    case action::unknown:
        spdlog::warn("{} unknown action {} ignored", p.tag(), f.action_name.substr(0, 100));
        return;
    }
}

}  // namespace

bool
valid_session_id(std::string_view id) noexcept
{
    if (id.empty() || id.size() > max_session_id_bytes)
        return false;
    for (char ch : id) {
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!ok) {
            switch (ch) {
            case '-': case '_': case '.': case '~': case '%': case '!': case '$': case '&': case '\'':
            case '(': case ')': case '*': case '+': case ',': case ';': case '=': case ':': case '@':
                ok = true;
                break;
            default: break;
            }
        }
        if (!ok)
            return false;
    }
    return true;
}

void
dispatch(session_host& host, membership& m, peer& p, std::string_view text)
{
    try {
        dispatch_frame(host, m, p, text);
    } catch (std::exception const& e) {
        // Nothing a frame contains may end the process or touch other sessions.
        spdlog::error("{} frame handling failed: {}: closing 1011", p.tag(), e.what());
        p.close(close_code::internal_error, "internal error");
    }
}

void
hang_up(session_host& host, membership& m, peer& p, bool normal_close)
{
    if (m.joined) {
        auto* s = m.joined;
        m.joined = nullptr;
        s->disconnect(p);
        host.touched(*s);
    }
    if (m.seat_reported) {
        m.seat_reported = false;
        host.seat_left(m.seat_token, normal_close, m.conn_key);
    }
}

}  // namespace lockstep
