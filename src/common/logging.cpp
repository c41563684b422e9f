#include "common/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>

namespace lockstep {
namespace {

// The fields of the line being logged on this thread (the sink writes synchronously).
thread_local log_fields const* current_fields = nullptr;
bool json_format = false;

void
append_escaped(spdlog::memory_buf_t& dest, std::string_view s)
{
    for (char ch : s) {
        switch (ch) {
        case '"': dest.append(std::string_view("\\\"")); break;
        case '\\': dest.append(std::string_view("\\\\")); break;
        case '\n': dest.append(std::string_view("\\n")); break;
        case '\r': dest.append(std::string_view("\\r")); break;
        case '\t': dest.append(std::string_view("\\t")); break;
        default:
            if (static_cast<unsigned char>(ch) < 0x20)
                fmt::format_to(std::back_inserter(dest), "\\u{:04x}", static_cast<unsigned>(ch));
            else
                dest.push_back(ch);
        }
    }
}

/// Calls put(key, value, quoted) for each field that is set, in a fixed order.
template <class Put>
void
each_field(log_fields const& f, Put put)
{
    auto str = [&](char const* k, std::string_view v) {
        if (!v.empty())
            put(k, v, true);
    };
    auto num = [&](char const* k, auto v) {
        if (v >= 0)
            put(k, fmt::format("{}", v), false);
    };
    str("event", f.event);
    str("session", f.session);
    str("app", f.app);
    str("name", f.name);
    num("conn", f.conn);
    num("code", f.code);
    num("clients", f.clients);
    num("messages_in", f.messages_in);
    num("messages_out", f.messages_out);
    num("bytes_in", f.bytes_in);
    num("bytes_out", f.bytes_out);
    if (f.seconds >= 0)
        put("seconds", fmt::format("{:.3f}", f.seconds), false);
}

// {"ts":"2026-11-22T20:00:00.123Z","level":"info","thread":123,"msg":"...", fields of log_event...}
class json_formatter final : public spdlog::formatter {
public:
    void
    format(spdlog::details::log_msg const& msg, spdlog::memory_buf_t& dest) override
    {
        using namespace std::chrono;
        auto t = system_clock::to_time_t(msg.time);
        auto ms = duration_cast<milliseconds>(msg.time.time_since_epoch()).count() % 1000;
        std::tm tm{};
        gmtime_r(&t, &tm);
        char ts[40];
        std::size_t n = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        auto lvl = spdlog::level::to_string_view(msg.level);
        fmt::format_to(std::back_inserter(dest), R"({{"ts":"{}.{:03}Z","level":"{}","thread":{},"msg":")",
                       std::string_view(ts, n), ms, std::string_view(lvl.data(), lvl.size()), msg.thread_id);
        append_escaped(dest, std::string_view(msg.payload.data(), msg.payload.size()));
        dest.push_back('"');
        if (current_fields)
            each_field(*current_fields, [&](char const* k, std::string_view v, bool quoted) {
                fmt::format_to(std::back_inserter(dest), ",\"{}\":", k);
                if (quoted) {
                    dest.push_back('"');
                    append_escaped(dest, v);
                    dest.push_back('"');
                } else {
                    dest.append(v);
                }
            });
        dest.append(std::string_view("}\n"));
    }

    std::unique_ptr<spdlog::formatter>
    clone() const override
    {
        return std::make_unique<json_formatter>();
    }
};

}  // namespace

void
setup_logging(std::string const& level, std::string const& format, spdlog::sink_ptr sink)
{
    if (!sink)
        sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::logger>("lockstep", sink);
    json_format = format == "json";
    if (format == "json")
        logger->set_formatter(std::make_unique<json_formatter>());
    else if (format == "text")
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%-5l%$ %v", spdlog::pattern_time_type::utc);
    else
        throw std::invalid_argument("unknown log format " + format);
    logger->set_level(spdlog::level::from_str(level));
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(logger);
}

void
log_event(spdlog::level::level_enum level, log_fields const& fields, std::string_view msg)
{
    auto* logger = spdlog::default_logger_raw();
    if (!logger->should_log(level))
        return;
    if (json_format) {
        current_fields = &fields;
        logger->log(level, "{}", msg);
        current_fields = nullptr;
        return;
    }
    std::string text(msg);
    each_field(fields, [&](char const* k, std::string_view v, bool quoted) {
        if (quoted && v.find(' ') != std::string_view::npos)
            text += fmt::format(" {}=\"{}\"", k, v);
        else
            text += fmt::format(" {}={}", k, v);
    });
    logger->log(level, "{}", text);
}

}  // namespace lockstep
