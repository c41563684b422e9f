#include "protocol/json_scan.hpp"

#include <cstring>

namespace lockstep::json_scan {
namespace {

struct cursor {
    char const* p;
    char const* end;
};

inline void
skip_ws(cursor& c)
{
    while (c.p < c.end && (*c.p == ' ' || *c.p == '\t' || *c.p == '\n' || *c.p == '\r'))
        ++c.p;
}

inline bool
is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

// Expects c.p at the opening quote. Leaves c.p after the closing quote.
bool
skip_string(cursor& c)
{
    ++c.p;
    while (c.p < c.end) {
        // Fast scan over the common bytes.
        auto const* q = c.p;
        while (q < c.end && *q != '"' && *q != '\\' && static_cast<unsigned char>(*q) >= 0x20)
            ++q;
        c.p = q;
        if (c.p >= c.end)
            return false;
        char ch = *c.p;
        if (ch == '"') {
            ++c.p;
            return true;
        }
        if (ch != '\\')
            return false;  // raw control character
        if (c.end - c.p < 2)
            return false;
        char e = c.p[1];
        switch (e) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            c.p += 2;
            break;
        case 'u':
            if (c.end - c.p < 6 || !is_hex(c.p[2]) || !is_hex(c.p[3]) || !is_hex(c.p[4]) ||
                !is_hex(c.p[5]))
                return false;
            c.p += 6;
            break;
        default:
            return false;
        }
    }
    return false;
}

bool
skip_number(cursor& c)
{
    auto digits = [&c] {
        auto const* s = c.p;
        while (c.p < c.end && *c.p >= '0' && *c.p <= '9')
            ++c.p;
        return c.p - s;
    };
    if (c.p < c.end && *c.p == '-')
        ++c.p;
    if (c.p >= c.end)
        return false;
    if (*c.p == '0')
        ++c.p;
    else if (digits() == 0)
        return false;
    if (c.p < c.end && *c.p == '.') {
        ++c.p;
        if (digits() == 0)
            return false;
    }
    if (c.p < c.end && (*c.p == 'e' || *c.p == 'E')) {
        ++c.p;
        if (c.p < c.end && (*c.p == '+' || *c.p == '-'))
            ++c.p;
        if (digits() == 0)
            return false;
    }
    return true;
}

bool
skip_literal(cursor& c, char const* lit, std::size_t n)
{
    if (static_cast<std::size_t>(c.end - c.p) < n || std::memcmp(c.p, lit, n) != 0)
        return false;
    c.p += n;
    return true;
}

bool skip_value(cursor& c, int depth);

bool
skip_array(cursor& c, int depth, std::vector<std::string_view>* out)
{
    ++c.p;  // '['
    skip_ws(c);
    if (c.p < c.end && *c.p == ']') {
        ++c.p;
        return true;
    }
    for (;;) {
        skip_ws(c);
        auto const* start = c.p;
        if (!skip_value(c, depth + 1))
            return false;
        if (out)
            out->emplace_back(start, static_cast<std::size_t>(c.p - start));
        skip_ws(c);
        if (c.p >= c.end)
            return false;
        if (*c.p == ',') {
            ++c.p;
            continue;
        }
        if (*c.p == ']') {
            ++c.p;
            return true;
        }
        return false;
    }
}

bool
skip_object(cursor& c, int depth, std::vector<member>* out)
{
    ++c.p;  // '{'
    skip_ws(c);
    if (c.p < c.end && *c.p == '}') {
        ++c.p;
        return true;
    }
    for (;;) {
        skip_ws(c);
        if (c.p >= c.end || *c.p != '"')
            return false;
        auto const* kstart = c.p + 1;
        if (!skip_string(c))
            return false;
        std::string_view key(kstart, static_cast<std::size_t>(c.p - 1 - kstart));
        skip_ws(c);
        if (c.p >= c.end || *c.p != ':')
            return false;
        ++c.p;
        skip_ws(c);
        auto const* vstart = c.p;
        if (!skip_value(c, depth + 1))
            return false;
        if (out)
            out->push_back({key, std::string_view(vstart, static_cast<std::size_t>(c.p - vstart))});
        skip_ws(c);
        if (c.p >= c.end)
            return false;
        if (*c.p == ',') {
            ++c.p;
            continue;
        }
        if (*c.p == '}') {
            ++c.p;
            return true;
        }
        return false;
    }
}

bool
skip_value(cursor& c, int depth)
{
    if (depth > max_depth || c.p >= c.end)
        return false;
    switch (*c.p) {
    case '{': return skip_object(c, depth, nullptr);
    case '[': return skip_array(c, depth, nullptr);
    case '"': return skip_string(c);
    case 't': return skip_literal(c, "true", 4);
    case 'f': return skip_literal(c, "false", 5);
    case 'n': return skip_literal(c, "null", 4);
    default: return skip_number(c);
    }
}

template <class F>
bool
whole(std::string_view text, F&& f)
{
    cursor c{text.data(), text.data() + text.size()};
    skip_ws(c);
    if (!f(c))
        return false;
    skip_ws(c);
    return c.p == c.end;
}

}  // namespace

bool
scan_object(std::string_view text, std::vector<member>& out)
{
    return whole(text, [&](cursor& c) {
        return c.p < c.end && *c.p == '{' && skip_object(c, 1, &out);
    });
}

bool
scan_array(std::string_view text, std::vector<std::string_view>& out)
{
    return whole(text, [&](cursor& c) {
        return c.p < c.end && *c.p == '[' && skip_array(c, 1, &out);
    });
}

bool
validate(std::string_view text)
{
    return whole(text, [](cursor& c) { return skip_value(c, 1); });
}

bool
simple_string(std::string_view value, std::string_view& out)
{
    if (value.size() < 2 || value.front() != '"' || value.back() != '"')
        return false;
    auto inner = value.substr(1, value.size() - 2);
    if (inner.find('\\') != std::string_view::npos)
        return false;
    out = inner;
    return true;
}

}  // namespace lockstep::json_scan
