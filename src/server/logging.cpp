#include "server/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>

namespace lockstep {
namespace {

// {"ts":"2026-11-22T20:00:00.123Z","level":"info","thread":123,"msg":"..."}
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
        for (char ch : std::string_view(msg.payload.data(), msg.payload.size())) {
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
        dest.append(std::string_view("\"}\n"));
    }

    std::unique_ptr<spdlog::formatter>
    clone() const override
    {
        return std::make_unique<json_formatter>();
    }
};

}  // namespace

void
setup_logging(std::string const& level, std::string const& format)
{
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::logger>("lockstep", sink);
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

}  // namespace lockstep
