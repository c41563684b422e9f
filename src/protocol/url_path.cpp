#include "protocol/url_path.hpp"

namespace lockstep::url_path {
namespace {

int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

}  // namespace

std::optional<std::string>
percent_decode(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c == '%') {
            if (s.size() - i < 3)
                return std::nullopt;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return std::nullopt;
            c = static_cast<char>(hi * 16 + lo);
            i += 2;
        }
        out.push_back(c);
    }
    return out;
}

bool
split_segments(std::string_view path, std::vector<std::string>& out)
{
    while (!path.empty()) {
        auto slash = path.find('/');
        auto seg = percent_decode(path.substr(0, slash));
        if (!seg)
            return false;
        out.push_back(std::move(*seg));
        if (slash == std::string_view::npos)
            break;
        path = path.substr(slash + 1);
    }
    return true;
}

}  // namespace lockstep::url_path
