// Command-line options of every lockstep program, on CLI11. Each option is defined once
// (`options::add`) and that definition yields the parser, --help, the environment variable,
// the config-file key, --print-config and the Markdown table of docs/operations.md.
//
// Sources, highest first: command-line flag > environment variable PREFIX_NAME (e.g.
// LOCKSTEP_DATA_DIR for --data-dir) > --config FILE (TOML: `data-dir = "/var/lib/x"`) >
// default. Bad input of any source: a message naming it and exit status 2.
//
// Header-only (CLI11 is): used by the reflector, the load generator and the examples.
#pragma once

#include <lockstep/version.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

namespace lockstep::cli {

class options {
public:
    /// `program` names the binary; `env_prefix` is prepended to each option's upper-cased
    /// name to form its environment variable (e.g. "LOCKSTEP_").
    options(std::string program, std::string description, std::string env_prefix)
        : app_(std::move(description), program), program_(std::move(program)), prefix_(std::move(env_prefix))
    {
        app_.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
        app_.get_formatter()->column_width(34);
        app_.set_version_flag("--version", program_ + " " + version, "print the version and exit");
        app_.set_config("--config", "", "read options from this TOML file (key = long option name)")
            ->envname(prefix_ + "CONFIG")
            ->group("Configuration");
        app_.allow_config_extras(CLI::config_extras_mode::error);
        app_.add_flag("--print-config", print_config_,
                      "print the effective configuration as TOML (a valid --config file) and exit")
            ->configurable(false)
            ->group("Configuration");
        app_.add_flag("--options-markdown", markdown_, "the option table of the docs")->configurable(false)->group("");
    }

    /// Defines one option bound to `field` (its initial value is the default). `help` is
    /// the --help line; `notes`, if any, are added to it in the docs' table. A flag (bool
    /// field) takes no value on the command line; `true`/`false` in env and file.
    template <class T>
    CLI::Option*
    add(std::string const& flag, T& field, std::string help, std::string notes = {})
    {
        CLI::Option* o;
        if constexpr (std::is_same_v<T, bool>)
            o = app_.add_flag(flag, field, help);
        else
            o = app_.add_option(flag, field, help)->capture_default_str();
        if constexpr (std::is_same_v<T, std::vector<std::string>>)
            o->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
        o->envname(env_name(flag))->group(group_);
        entries_.push_back({o, std::move(notes), [&field] { return toml(field); }, {}});
        return o;
    }

    /// The option defined last holds a secret: --print-config shows it only as a comment
    /// (set or not), never its value; give it back through the environment or the flag.
    /// `when` narrows it to some values (a URL with a password, say).
    void
    secret(std::function<bool(std::string const&)> when = [](std::string const&) { return true; })
    {
        entries_.back().secret = std::move(when);
    }

    /// Options defined after this call are listed under `name`.
    void
    group(std::string name)
    {
        group_ = std::move(name);
    }

    CLI::App&
    app()
    {
        return app_;
    }

    /// Parses argv and the environment (and --config). Returns -1 to go on, else the exit
    /// status: 0 after --help/--version, 2 after bad input (message on stderr).
    /// Call finish() after validating the values, for --print-config.
    int
    parse(int argc, char const* const* argv, std::string& message)
    {
        // Environment values go in front of the command line: a later flag wins, so the
        // command line overrides them, and options they set are no longer read from the
        // config file, which CLI11 consults only for options not given.
        std::vector<std::string> args = {argv[0]};
        std::vector<std::string> from_env;
        // CLI11 reads the config file before the environment: pass the file's name as a flag.
        auto* config = app_.get_config_ptr();
        if (char const* v = std::getenv(config->get_envname().c_str()); v && *v && !given(argc, argv, "--config"))
            args.push_back(std::string("--config=") + v);
        for (auto const& e : entries_) {
            auto const& name = e.option->get_name();
            char const* v = std::getenv(e.option->get_envname().c_str());
            if (!v || !*v || given(argc, argv, name))
                continue;
            args.push_back(name + "=" + v);
            from_env.push_back(name);
        }
        for (int i = 1; i < argc; ++i)
            args.emplace_back(argv[i]);
        std::vector<char const*> ptrs;
        for (auto const& a : args)
            ptrs.push_back(a.c_str());
        try {
            app_.parse(static_cast<int>(ptrs.size()), ptrs.data());
        } catch (CLI::CallForHelp const&) {
            message = app_.help();
            return 0;
        } catch (CLI::CallForVersion const& v) {
            message = v.what() + std::string("\n");
            return 0;
        } catch (CLI::ParseError const& e) {
            message = program_ + ": " + e.what();
            bool named = false;
            for (auto const& name : from_env)
                if (message.find(name) != std::string::npos) {
                    message += " (from " + env_name(name) + ")";
                    named = true;
                }
            auto* file = app_.get_config_ptr();
            bool from_file = dynamic_cast<CLI::ConfigError const*>(&e) || dynamic_cast<CLI::FileError const*>(&e);
            if (!named && from_file && file->count() > 0)
                message += " (in --config " + file->as<std::string>() + ")";
            message += " (see --help)";
            return 2;
        }
        if (markdown_) {
            message = markdown();
            return 0;
        }
        return -1;
    }

    /// After validation: 0 with the TOML in `message` for --print-config, else -1.
    int
    finish(std::string& message) const
    {
        if (!print_config_)
            return -1;
        message = "# " + program_ + " " + version + ": effective configuration\n";
        std::string group;
        for (auto const& e : entries_) {
            if (e.option->get_group() != group) {
                group = e.option->get_group();
                message += "\n# " + group + "\n";
            }
            // An empty list does not read back (CLI11 takes it for one empty value): it is
            // the default anyway, so it is shown commented out.
            auto value = e.value();
            auto key = e.option->get_name().substr(2);
            if (e.secret && value != "\"\"" && e.secret(value)) {
                message += "# " + key + ": set, not printed (a secret; give it through " +
                           e.option->get_envname() + " or " + e.option->get_name() + ")\n";
                continue;
            }
            message += (value == "[]" ? "# " : "") + key + " = " + value + "\n";
        }
        return 0;
    }

    /// The docs' table: flag, environment variable, default, meaning.
    std::string
    markdown() const
    {
        std::string out = "| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n";
        for (auto const& e : entries_) {
            auto* o = e.option;
            std::string flag = o->get_name();
            if (o->get_type_name().size() && o->get_expected_max() > 0)
                flag += " " + o->get_type_name();
            std::string def = o->get_default_str();
            std::string text = o->get_description();
            if (!e.notes.empty())
                text += ". " + e.notes;
            out += "| `" + flag + "` | `" + o->get_envname() + "` | " + (def.empty() ? "" : "`" + def + "`") +
                   " | " + text + " |\n";
        }
        return out;
    }

    std::string
    env_name(std::string const& flag) const
    {
        std::string n = prefix_;
        for (char c : flag.substr(flag.find_first_not_of('-')))
            n += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return n;
    }

private:
    struct entry {
        CLI::Option* option;
        std::string notes;
        std::function<std::string()> value;
        std::function<bool(std::string const&)> secret;  // true for a value not to print
    };

    static bool
    given(int argc, char const* const* argv, std::string const& name)
    {
        for (int i = 1; i < argc; ++i) {
            std::string a = argv[i];
            if (a == name || a.rfind(name + "=", 0) == 0)
                return true;
        }
        return false;
    }

    static std::string
    quote(std::string const& s)
    {
        std::string q = "\"";
        for (char c : s) {
            if (c == '"' || c == '\\')
                q += '\\';
            q += c;
        }
        return q + "\"";
    }
    static std::string toml(std::string const& s) { return quote(s); }
    static std::string toml(bool b) { return b ? "true" : "false"; }
    static std::string
    toml(double d)
    {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", d);
        return buf;
    }
    template <class T>
    static std::enable_if_t<std::is_integral_v<T>, std::string>
    toml(T v)
    {
        return std::to_string(v);
    }
    static std::string
    toml(std::vector<std::string> const& v)
    {
        std::string s = "[";
        for (auto const& x : v)
            s += (s.size() > 1 ? ", " : "") + quote(x);
        return s + "]";
    }

    CLI::App app_;
    std::string program_, prefix_, group_ = "Options";
    std::vector<entry> entries_;
    bool print_config_ = false, markdown_ = false;
};

/// For main(): parse, print what needs printing, and say whether to go on (-1) or exit
/// with the returned status.
inline int
parse_or_exit_status(options& o, int argc, char const* const* argv)
{
    std::string message;
    int status = o.parse(argc, argv, message);
    if (status >= 0)
        std::fprintf(status == 0 ? stdout : stderr, "%s%s", message.c_str(),
                     message.empty() || message.back() == '\n' ? "" : "\n");
    return status;
}

}  // namespace lockstep::cli
