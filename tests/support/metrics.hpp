// Reads the Prometheus text exposition format (version 0.0.4) that /metrics serves, so
// tests compare a series' value instead of searching the text ("lockstep_connections 1"
// would also match 10 to 19).
#pragma once

#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

namespace lockstep::test {

/// Every sample of an exposition, keyed by the series exactly as written:
/// `name` or `name{label="value",...}`. Throws std::runtime_error on a malformed line or
/// a series written twice.
struct metrics {
    std::map<std::string, double> samples;
    std::map<std::string, std::string> types;  // family name -> counter, gauge, histogram...

    static metrics
    parse(std::string const& text)
    {
        metrics m;
        std::istringstream in(text);
        std::string line;
        while (std::getline(in, line)) {
            if (line.empty())
                continue;
            if (line[0] == '#') {
                std::istringstream h(line);
                std::string hash, kind, name, type;
                h >> hash >> kind >> name >> type;
                if (kind == "TYPE")
                    m.types[name] = type;
                continue;
            }
            std::size_t end = line.find_first_of(" {");
            if (end == std::string::npos || end == 0)
                throw std::runtime_error("metrics: no value in line: " + line);
            if (line[end] == '{') {
                // Label values are quoted and may hold spaces, braces and escaped quotes.
                bool quoted = false;
                std::size_t i = end + 1;
                for (; i < line.size(); ++i) {
                    if (quoted && line[i] == '\\') {
                        ++i;
                        continue;
                    }
                    if (line[i] == '"')
                        quoted = !quoted;
                    else if (!quoted && line[i] == '}')
                        break;
                }
                if (i >= line.size())
                    throw std::runtime_error("metrics: unterminated labels: " + line);
                end = i + 1;
            }
            std::string series = line.substr(0, end);
            std::istringstream rest(line.substr(end));
            std::string value;
            if (!(rest >> value))
                throw std::runtime_error("metrics: no value in line: " + line);
            char* stop = nullptr;
            double v = std::strtod(value.c_str(), &stop);
            if (value == "+Inf")
                v = HUGE_VAL;
            else if (value == "-Inf")
                v = -HUGE_VAL;
            else if (*stop != '\0')
                throw std::runtime_error("metrics: bad value in line: " + line);
            if (!m.samples.emplace(series, v).second)
                throw std::runtime_error("metrics: series written twice: " + series);
        }
        return m;
    }

    bool has(std::string const& series) const { return samples.count(series) != 0; }
    /// The value of a series; throws if it is absent (a test then fails with its name).
    double
    operator[](std::string const& series) const
    {
        auto it = samples.find(series);
        if (it == samples.end())
            throw std::runtime_error("metrics: no series " + series);
        return it->second;
    }
};

}  // namespace lockstep::test
