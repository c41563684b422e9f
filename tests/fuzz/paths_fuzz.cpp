// libFuzzer target for the URL path parsers: /v1/... segments (url_path) and /files/...
// blob paths (store::blob_path, which decides which file a PUT writes).
//   scripts/fuzz.sh [seconds]
//
// The oracle is a reference implementation written here from the rules in
// docs/operations.md and file_store.hpp, deliberately simple (decode with strtol, split
// with a stream of characters): accept/reject and the decoded result must agree in both
// directions. Independently of the reference, an accepted blob path must stay inside the
// files directory: no absolute path, no '.'/'..' segment, no NUL/control character/
// backslash, and the lexically normalised path equals the path itself.
#include "protocol/url_path.hpp"
#include "store/file_store.hpp"

#include "fuzz_util.hpp"

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

[[noreturn]] void
fail(char const* what, std::string_view input)
{
    lockstep::fuzz::fail("paths", what, input);
}

std::optional<std::string>
ref_decode(std::string_view s)
{
    std::string out;
    std::size_t i = 0;
    while (i < s.size()) {
        if (s[i] != '%') {
            out += s[i++];
            continue;
        }
        if (s.size() - i < 3)
            return std::nullopt;
        char two[3] = {s[i + 1], s[i + 2], 0};
        char* end = nullptr;
        bool hex = std::isxdigit(static_cast<unsigned char>(two[0])) && std::isxdigit(static_cast<unsigned char>(two[1]));
        long v = std::strtol(two, &end, 16);
        if (!hex || end != two + 2)
            return std::nullopt;
        out += static_cast<char>(v);
        i += 3;
    }
    return out;
}

std::optional<std::vector<std::string>>
ref_segments(std::string_view path)
{
    std::vector<std::string> out;
    if (path.empty())
        return out;
    std::string cur;
    std::vector<std::string> raw;
    for (char c : path) {
        if (c == '/') {
            raw.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    if (!cur.empty())
        raw.push_back(cur);  // a trailing '/' adds no segment
    for (auto const& r : raw) {
        auto d = ref_decode(r);
        if (!d)
            return std::nullopt;
        out.push_back(*d);
    }
    return out;
}

bool
reserved_temp_name(std::string const& seg)
{
    return seg.size() > 4 && seg.compare(seg.size() - 4, 4, ".tmp") == 0 && seg.find(".lockstep-") != std::string::npos;
}

std::optional<std::string>
ref_blob_path(std::string_view url)
{
    auto q = url.find_first_of("?#");
    auto d = ref_decode(url.substr(0, q));
    if (!d || d->empty() || d->size() > lockstep::store::max_path_bytes || (*d)[0] == '/')
        return std::nullopt;
    for (unsigned char c : *d)
        if (c < 0x20 || c == 0x7F || c == '\\')
            return std::nullopt;
    std::string seg;
    for (std::size_t i = 0; i <= d->size(); ++i) {
        if (i < d->size() && (*d)[i] != '/') {
            seg += (*d)[i];
            continue;
        }
        if (seg.empty() || seg == "." || seg == ".." || seg.size() > lockstep::store::max_segment_bytes ||
            reserved_temp_name(seg))
            return std::nullopt;
        seg.clear();
    }
    return d;
}

}  // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    std::string_view text = lockstep::fuzz::input(data, size);

    auto dec = lockstep::url_path::percent_decode(text);
    if (dec != ref_decode(text))
        fail("percent_decode differs from the reference", text);

    std::vector<std::string> segs;
    bool ok = lockstep::url_path::split_segments(text, segs);
    auto ref = ref_segments(text);
    if (ok != ref.has_value() || (ok && segs != *ref))
        fail("split_segments differs from the reference", text);

    std::string why;
    auto blob = lockstep::store::blob_path(text, why);
    auto want = ref_blob_path(text);
    if (blob.has_value() != want.has_value())
        fail(blob ? "blob_path accepted a path the rules refuse" : "blob_path refused a path the rules allow", text);
    if (!blob) {
        if (why.empty())
            fail("blob_path refused without a reason", text);
        return 0;
    }
    if (*blob != *want)
        fail("blob_path result differs from the reference", text);
    // Containment, by the standard library's own path logic.
    std::filesystem::path p(*blob);
    if (p.is_absolute() || p.has_root_path() || p.lexically_normal() != p)
        fail("accepted blob path is not a plain relative path", text);
    for (auto const& part : p)
        if (part == "." || part == "..")
            fail("accepted blob path has a dot segment", text);
    return 0;
}
