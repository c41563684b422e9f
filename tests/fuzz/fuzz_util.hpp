// What every fuzz target does: take the input quietly, and abort with the failed check
// and the input when an oracle disagrees (libFuzzer then saves the reproducer).
#pragma once

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace lockstep::fuzz {

/// The input as text; the first call silences logging (the code under test logs every
/// bad input it refuses).
inline std::string_view
input(std::uint8_t const* data, std::size_t size)
{
    static bool quiet = [] {
        spdlog::set_level(spdlog::level::off);
        return true;
    }();
    (void)quiet;
    return {reinterpret_cast<char const*>(data), size};
}

[[noreturn]] inline void
fail(char const* target, char const* what, std::string_view input)
{
    std::fprintf(stderr, "%s fuzz: %s\ninput (%zu bytes): %.*s\n", target, what, input.size(),
                 static_cast<int>(std::min<std::size_t>(input.size(), 2000)), input.data());
    std::abort();
}

}  // namespace lockstep::fuzz
