// lockstep-chat: a terminal chat room. Every line typed is published as an event; the
// replicated room model keeps the last 100 messages, so a late joiner sees the history.
//
// Threads: main() drives the session (join, wait_step); a reader thread only reads stdin
// and calls session::publish, which is thread-safe.
#include <lockstep/client/session.hpp>

#include "common/options.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

namespace lc = lockstep::client;
using lc::json;

namespace {

class room final : public lc::model {
public:
    void init(json const&) override
    {
        subscribe("chat", "post", &room::post);
        subscribe(std::string(lc::session_scope), "view-join", &room::joined);
        subscribe(std::string(lc::session_scope), "view-exit", &room::left);
    }
    void save(json& s) const override { s = {{"messages", messages_}}; }
    void load(json const& s) override { messages_ = s.at("messages"); }
    json const& messages() const { return messages_; }

    void post(json const& m)
    {
        if (!m.is_object() || !m.contains("text") || !m["text"].is_string())
            return;  // a model validates its input: every replica drops the same events
        std::string from = m.contains("from") && m["from"].is_string() ? m["from"].get<std::string>() : "?";
        json entry = {{"time", now()}, {"from", from}, {"text", m["text"]}};
        messages_.push_back(entry);
        if (messages_.size() > 100)
            messages_.erase(messages_.begin());
        publish("chat", "posted", entry);
    }
    void joined(json const& view) { publish("chat", "presence", {{"view", view}, {"here", true}}); }
    void left(json const& view) { publish("chat", "presence", {{"view", view}, {"here", false}}); }

private:
    json messages_ = json::array();
};

void
print(json const& m)
{
    std::printf("[%7.1fs] %s: %s\n", m.value("time", 0) / 1000.0, m.value("from", "?").c_str(),
                m.value("text", "").c_str());
    std::fflush(stdout);
}

}  // namespace

int
main(int argc, char** argv)
{
    spdlog::set_default_logger(spdlog::stderr_color_mt("lockstep"));
    spdlog::set_level(spdlog::level::warn);
    lc::model_registry models;
    models.add<room>("room").method("post", &room::post).method("joined", &room::joined).method("left", &room::left);
    lc::join_options o;
    o.models = &models;
    o.root_model = "room";
    o.app_id = "io.lockstep.chat";
    o.session_name = "lobby";
    std::string nick = "anon";
    // Every option once: flag, LOCKSTEP_CHAT_<NAME>, --config key, --help, docs table.
    lockstep::cli::options cli("lockstep-chat", "lockstep-chat: a chat room on the C++ SDK", "LOCKSTEP_CHAT_");
    cli.app().footer("\nType a line to send it; /quit (or end of input) leaves.");
    cli.group("Chat");
    cli.add("--reflector", o.reflector, "reflector URL, ws://host:port or wss://... (required)");
    cli.add("--room", o.session_name, "room (session) name");
    cli.add("--name", nick, "your nickname");
    cli.add("--password", o.password, "encrypt messages end-to-end");
    cli.add("--files", o.files, "files URL for snapshots, e.g. http://127.0.0.1:9090/files");
    if (int status = lockstep::cli::parse_or_exit_status(cli, argc, argv); status >= 0)
        return status;
    if (o.reflector.empty()) {
        std::fprintf(stderr, "lockstep-chat: --reflector is required (see --help)\n");
        return 2;
    }
    if (std::string printed; cli.finish(printed) == 0) {
        std::fputs(printed.c_str(), stdout);
        return 0;
    }
    std::error_code ec;
    auto s = lc::session::join(o, ec);
    if (!s) {
        std::fprintf(stderr, "lockstep-chat: join failed: %s\n", ec.message().c_str());
        return 1;
    }
    for (auto& m : s->root_as<room>().messages())
        print(m);
    s->subscribe("chat", "posted", print);
    s->subscribe("chat", "presence", [](json const& p) {
        std::printf("* %s %s\n", p.value("view", "?").c_str(), p.value("here", false) ? "joined" : "left");
        std::fflush(stdout);
    });
    std::printf("* joined %s as %s (view %s)\n", o.session_name.c_str(), nick.c_str(), s->view_id().c_str());
    std::fflush(stdout);

    std::atomic<bool> quit{false};
    std::thread reader([&] {
        std::string line;
        while (!quit && std::getline(std::cin, line)) {
            if (line == "/quit")
                break;
            if (!line.empty())
                s->publish("chat", "post", {{"from", nick}, {"text", line}});
        }
        quit = true;
    });
    while (!quit && s->wait_step(std::chrono::milliseconds(20))) {
    }
    // Let what was typed last go out and come back before leaving.
    s->run_for(std::chrono::milliseconds(300));
    s->leave();
    if (!quit.exchange(true)) {
        // The reader still blocks in getline and may publish at any moment: end the
        // process here rather than destroy the session under it.
        std::fflush(stdout);
        std::_Exit(0);
    }
    reader.join();
    return 0;
}
