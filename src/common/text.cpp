#include "common/text.hpp"

#include <vector>

namespace lockstep {

bool
valid_utf8(std::string_view s) noexcept
{
    auto const* p = reinterpret_cast<unsigned char const*>(s.data());
    auto const* end = p + s.size();
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        std::size_t len;
        unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;  // overlong
            else if (c == 0xED)
                hi = 0x9F;  // UTF-16 surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;  // overlong
            else if (c == 0xF4)
                hi = 0x8F;  // above U+10FFFF
        } else {
            return false;  // continuation byte, overlong lead (C0, C1) or F5..FF
        }
        if (static_cast<std::size_t>(end - p) < len || p[1] < lo || p[1] > hi)
            return false;
        for (std::size_t i = 2; i < len; ++i)
            if ((p[i] & 0xC0) != 0x80)
                return false;
        p += len;
    }
    return true;
}

std::vector<std::string_view>
path_segments(std::string_view path)
{
    std::vector<std::string_view> out;
    if (!path.empty() && path.front() == '/')
        path.remove_prefix(1);
    while (true) {
        auto slash = path.find('/');
        out.push_back(path.substr(0, slash));
        if (slash == std::string_view::npos)
            break;
        path.remove_prefix(slash + 1);
    }
    return out;
}

std::string
redact_credentials(std::string_view target)
{
    auto q = target.find('?');
    auto path = target.substr(0, q);
    std::string out;
    out.reserve(target.size());
    auto seg = path_segments(path);
    bool hide_next = false;
    for (std::size_t i = 0; i < seg.size(); ++i) {
        if (!path.empty() && (path.front() == '/' || i > 0))
            out.push_back('/');
        // Only segments with a next segment can be a credential in front of an id.
        if (hide_next && !seg[i].empty()) {
            out += "***";
        } else {
            out.append(seg[i]);
        }
        hide_next = (seg[i] == "t" || seg[i] == "r");
    }
    if (q == std::string_view::npos)
        return out;
    auto query = target.substr(q + 1);
    out.push_back('?');
    bool first = true;
    while (true) {
        auto amp = query.find('&');
        auto param = query.substr(0, amp);
        if (!first)
            out.push_back('&');
        first = false;
        if (param.substr(0, 6) == "token=")
            out += "token=***";
        else
            out.append(param);
        if (amp == std::string_view::npos)
            break;
        query.remove_prefix(amp + 1);
    }
    return out;
}

}  // namespace lockstep
