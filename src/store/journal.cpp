#include "store/journal.hpp"

#include <lockstep/protocol/constants.hpp>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <tuple>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

namespace lockstep::journal {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------- errors

namespace {

class journal_category final : public std::error_category {
public:
    char const* name() const noexcept override { return "lockstep.journal"; }
    std::string
    message(int ev) const override
    {
        switch (static_cast<errc>(ev)) {
        case errc::bad_id: return "session id cannot name a journal";
        case errc::bad_magic: return "not a journal segment";
        case errc::bad_version: return "journal written by another format version";
        case errc::no_base: return "no journal segment with a complete base";
        case errc::gap: return "journal write-ahead entry starts past the end of its segment";
        }
        return "journal error";
    }
};

}  // namespace

std::error_category const&
error_category() noexcept
{
    static journal_category const c;
    return c;
}

// ---------------------------------------------------------------------------- codec

namespace {

std::array<std::uint32_t, 256> const crc_table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected Castagnoli polynomial
        t[i] = c;
    }
    return t;
}();

/// Little-endian fixed-width integers.
template <class T>
void
put_le(std::string& out, T v)
{
    for (std::size_t i = 0; i < sizeof(T); ++i)
        out.push_back(static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xFF));
}

template <class T>
T
get_le(std::string_view s, std::size_t at)
{
    std::uint64_t v = 0;
    for (std::size_t i = sizeof(T); i-- > 0;)
        v = (v << 8) | static_cast<unsigned char>(s[at + i]);
    return static_cast<T>(v);
}

void
put_u32(std::string& out, std::uint32_t v)
{
    put_le(out, v);
}

std::uint32_t
get_u32(std::string_view s, std::size_t at)
{
    return get_le<std::uint32_t>(s, at);
}

}  // namespace

namespace {

std::uint32_t
crc32c_table(std::string_view data, std::uint32_t crc) noexcept
{
    for (unsigned char ch : data)
        crc = crc_table[(crc ^ ch) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// SSE4.2's crc32 instruction computes exactly this polynomial (Castagnoli), 8 bytes at a
// time: about 20 times the table's speed, which matters for a resume's megabytes.
__attribute__((target("sse4.2"))) std::uint32_t
crc32c_sse42(std::string_view data, std::uint32_t crc) noexcept
{
    auto const* p = reinterpret_cast<unsigned char const*>(data.data());
    auto n = data.size();
    std::uint64_t c = crc;
    while (n >= 8) {
        std::uint64_t word;
        std::memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        n -= 8;
    }
    auto c32 = static_cast<std::uint32_t>(c);
    while (n-- > 0)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}

bool const have_sse42 = [] {
    __builtin_cpu_init();  // may run before libgcc's own initialisation
    return __builtin_cpu_supports("sse4.2") != 0;
}();
#endif

}  // namespace

std::uint32_t
crc32c(std::string_view data, std::uint32_t crc) noexcept
{
    crc = ~crc;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (have_sse42)
        return ~crc32c_sse42(data, crc);
#endif
    return ~crc32c_table(data, crc);
}

std::string
file_header(std::uint32_t version, std::string_view file_magic)
{
    std::string h(file_magic);
    put_u32(h, version);
    put_u32(h, crc32c(h));
    return h;
}

void
append_record(std::string& out, record_type type, std::string_view payload)
{
    std::string head;
    put_u32(head, static_cast<std::uint32_t>(payload.size()));
    char t = static_cast<char>(type);
    std::uint32_t crc = crc32c(payload, crc32c(std::string_view(&t, 1), crc32c(head)));
    out += head;
    put_u32(out, crc);
    out.push_back(t);
    out.append(payload);
}

std::string
header_json(session_header const& h)
{
    nlohmann::ordered_json j = {
        {"id", h.id},
        {"name", h.name},
        {"appId", h.app_id},
        {"persistentId", h.persistent_id},
        {"timeline", h.timeline},
        {"tick", h.tick_ms},
        {"delay", h.delay_ms},
        {"scale", h.scale},
        {"tove", h.tove},
        {"flags", h.flags},
        {"snapshotUrl", h.snapshot_url},
        {"snapshotTime", h.snapshot_time},
        {"snapshotSeq", h.snapshot_seq},
        {"persistedUrl", h.persisted_url},
        {"time", h.time_ms},
        {"seq", h.seq},
    };
    return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

namespace {

using json = nlohmann::json;

bool
get_string(json const& j, char const* key, std::string& out)
{
    auto it = j.find(key);
    if (it == j.end() || !it->is_string())
        return false;
    out = it->get<std::string>();
    return true;
}

template <class T>
bool
get_integer(json const& j, char const* key, T& out)
{
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer())
        return false;
    if (it->is_number_unsigned()) {
        auto v = it->get<std::uint64_t>();
        if (v > static_cast<std::uint64_t>(std::numeric_limits<T>::max()))
            return false;
        out = static_cast<T>(v);
        return true;
    }
    auto v = it->get<std::int64_t>();
    if (v < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
        (v > 0 && static_cast<std::uint64_t>(v) > static_cast<std::uint64_t>(std::numeric_limits<T>::max())))
        return false;
    out = static_cast<T>(v);
    return true;
}

}  // namespace

std::optional<session_header>
parse_header_json(std::string_view text)
{
    auto j = json::parse(text, nullptr, false);
    if (!j.is_object())
        return std::nullopt;
    session_header h;
    bool ok = get_string(j, "id", h.id) && get_string(j, "name", h.name) && get_string(j, "appId", h.app_id) &&
              get_string(j, "persistentId", h.persistent_id) && get_string(j, "timeline", h.timeline) &&
              get_integer(j, "tick", h.tick_ms) && get_integer(j, "delay", h.delay_ms) &&
              get_string(j, "tove", h.tove) && get_string(j, "flags", h.flags) &&
              get_string(j, "snapshotUrl", h.snapshot_url) && get_string(j, "snapshotTime", h.snapshot_time) &&
              get_integer(j, "snapshotSeq", h.snapshot_seq) && get_string(j, "persistedUrl", h.persisted_url) &&
              get_integer(j, "time", h.time_ms) && get_integer(j, "seq", h.seq);
    if (!ok)
        return std::nullopt;
    auto scale = j.find("scale");
    if (scale == j.end() || !scale->is_number())
        return std::nullopt;
    h.scale = scale->get<double>();
    // These are spliced into SYNC as raw JSON: they must be JSON of the right kind.
    if (h.id.empty() || h.tick_ms == 0 || !(h.scale > 0) || h.time_ms < 0)
        return std::nullopt;
    if (!h.tove.empty() && !json::accept(h.tove))
        return std::nullopt;
    auto flags = json::parse(h.flags, nullptr, false);
    if (!flags.is_object())
        return std::nullopt;
    if (!h.snapshot_time.empty()) {
        auto t = json::parse(h.snapshot_time, nullptr, false);
        if (!t.is_number())
            return std::nullopt;
    }
    return h;
}

void
append_header(std::string& out, session_header const& h)
{
    append_record(out, record_type::header, header_json(h));
}

void
append_event(std::string& out, std::uint32_t seq, std::string_view element)
{
    std::string payload;
    payload.reserve(4 + element.size());
    put_u32(payload, seq);
    payload.append(element);
    append_record(out, record_type::event, payload);
}

void
append_seen(std::string& out, std::int64_t time_ms)
{
    std::string payload;
    put_le(payload, static_cast<std::uint64_t>(time_ms));
    append_record(out, record_type::seen, payload);
}

void
append_base(std::string& out)
{
    append_record(out, record_type::base, {});
}

namespace {

bool
safe_id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int
hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;  // encode_id writes upper case only
}

}  // namespace

std::string
encode_id(std::string_view id)
{
    static char const hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : id) {
        if (safe_id_char(c)) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    if (out.size() > 200)
        out.clear();
    return out;
}

std::optional<std::string>
decode_id(std::string_view name)
{
    std::string out;
    for (std::size_t i = 0; i < name.size(); ++i) {
        auto c = static_cast<unsigned char>(name[i]);
        if (safe_id_char(c)) {
            out.push_back(static_cast<char>(c));
            continue;
        }
        if (c != '%' || i + 2 >= name.size())
            return std::nullopt;
        int hi = hex_value(name[i + 1]), lo = hex_value(name[i + 2]);
        if (hi < 0 || lo < 0)
            return std::nullopt;
        auto decoded = static_cast<unsigned char>(hi * 16 + lo);
        if (safe_id_char(decoded))
            return std::nullopt;  // encode_id never escapes these
        out.push_back(static_cast<char>(decoded));
        i += 2;
    }
    if (out.empty() || encode_id(out) != name)
        return std::nullopt;
    return out;
}

// ---------------------------------------------------------------------------- reading

char const*
to_string(tail_problem p) noexcept
{
    switch (p) {
    case tail_problem::none: return "none";
    case tail_problem::torn: return "torn";
    case tail_problem::checksum: return "checksum mismatch";
    case tail_problem::invalid: return "invalid record";
    }
    return "?";
}

namespace {

/// Reads `[time,seq,` at the front of a log element. False if it is not there.
bool
element_prefix(std::string_view e, std::int64_t& time, std::uint32_t& seq)
{
    if (e.size() < 6 || e.front() != '[' || e.back() != ']')
        return false;
    auto const* p = e.data() + 1;
    auto const* end = e.data() + e.size();
    auto r = std::from_chars(p, end, time);
    if (r.ec != std::errc() || r.ptr == end || *r.ptr != ',' || time < 0 || *p == '-' || *p == '+')
        return false;
    p = r.ptr + 1;
    if (p == end || *p < '0' || *p > '9')
        return false;
    r = std::from_chars(p, end, seq);
    return r.ec == std::errc() && r.ptr != end && *r.ptr == ',';
}

/// Checks the 16-byte file header shared by segments and WAL files. False (with `out`'s
/// status, tail and dropped bytes set) when there is nothing to scan after it.
template <class Scan>
bool
file_header_ok(std::string_view bytes, std::string_view file_magic, std::uint32_t version, Scan& out)
{
    if (bytes.empty())
        return false;  // status empty
    if (bytes.size() < file_header_bytes) {
        out.status = scan_status::no_base;
        out.tail = tail_problem::torn;
        out.tail_detail = "file header incomplete";
        out.dropped_bytes = bytes.size();
        return false;
    }
    if (bytes.substr(0, file_magic.size()) != file_magic || get_u32(bytes, 12) != crc32c(bytes.substr(0, 12))) {
        out.status = scan_status::bad_magic;
        out.dropped_bytes = bytes.size();
        return false;
    }
    out.version = get_u32(bytes, 8);
    if (out.version != version) {
        out.status = scan_status::bad_version;
        out.dropped_bytes = bytes.size();
        return false;
    }
    return true;
}

/// The checksummed body of the frame at `at` — u32 n | u32 crc32c(n, body) | body, the
/// body `n + extra` bytes — or nullopt with `out.tail` set (torn, length out of
/// [min_n, max_n], checksum mismatch). Segment records and WAL entries share it.
template <class Scan>
std::optional<std::string_view>
next_frame(std::string_view bytes, std::size_t at, std::size_t extra, std::uint32_t min_n, std::uint32_t max_n,
           char const* what, Scan& out)
{
    auto fail = [&](tail_problem p, std::string why) {
        out.tail = p;
        out.tail_detail = what + (" " + why);
        return std::nullopt;
    };
    auto left = bytes.size() - at;
    if (left < 8 + extra)
        return fail(tail_problem::torn, "header incomplete");
    auto n = get_u32(bytes, at);
    if (n > max_n || n < min_n)
        return fail(tail_problem::invalid, "length " + std::to_string(n) + " out of range");
    if (left - 8 - extra < n)
        return fail(tail_problem::torn, "incomplete");
    auto body = bytes.substr(at + 8, n + extra);
    if (crc32c(body, crc32c(bytes.substr(at, 4))) != get_u32(bytes, at + 4))
        return fail(tail_problem::checksum, "checksum mismatch");
    return body;
}

class scanner {
public:
    explicit scanner(segment_scan& out) : out_(out) {}

    /// Applies one record; false (with out_.tail_detail set) when it breaks the rules.
    bool
    apply(record_type type, std::string_view payload)
    {
        if (!out_.has_header && type != record_type::header)
            return fail("first record is not a header");
        switch (type) {
        case record_type::header: return on_header(payload);
        case record_type::event: return on_event(payload);
        case record_type::seen:
            if (payload.size() != 8)
                return fail("seen record of the wrong size");
            {
                auto t = static_cast<std::int64_t>(get_le<std::uint64_t>(payload, 0));
                if (t < 0)
                    return fail("negative seen time");
                out_.seen_ms = std::max(out_.seen_ms, t);
            }
            return true;
        case record_type::base:
            if (!payload.empty() || based_)
                return fail("second or non-empty base record");
            if (base_events_ && out_.seq != out_.header.seq)
                return fail("the base's log does not end at its header's seq");
            based_ = true;
            return true;
        }
        return fail("unknown record type");
    }

    bool based() const noexcept { return based_; }

private:
    bool
    fail(std::string why)
    {
        out_.tail_detail = std::move(why);
        return false;
    }

    bool
    on_header(std::string_view payload)
    {
        auto h = parse_header_json(payload);
        if (!h)
            return fail("header record is not a valid session header");
        if (out_.has_header) {
            if (!based_)
                return fail("second header inside the base");
            if (h->id != out_.header.id)
                return fail("header of another session");
            if (h->seq != out_.seq)
                return fail("header seq does not match the log");
        } else {
            out_.seq = h->seq;  // the base's events end at this seq
        }
        auto const& old = out_.header;
        bool new_snapshot = out_.has_header && !h->snapshot_time.empty() &&
                            (h->snapshot_time != old.snapshot_time || h->snapshot_seq != old.snapshot_seq ||
                             h->snapshot_url != old.snapshot_url);
        if (new_snapshot) {
            // As the session does at SNAP: drop what the snapshot covers, once.
            auto& ev = out_.events;
            auto keep = std::find_if(ev.begin(), ev.end(), [&](logged_event const& e) {
                return protocol::seq_before(h->snapshot_seq, e.seq);
            });
            ev.erase(ev.begin(), keep);
        }
        out_.seen_ms = std::max(out_.seen_ms, h->time_ms);
        out_.header = std::move(*h);
        out_.has_header = true;
        return true;
    }

    bool
    on_event(std::string_view payload)
    {
        if (payload.size() < 4)
            return fail("event record too short");
        auto seq = get_u32(payload, 0);
        auto element = payload.substr(4);
        // The base's log may start anywhere (it ends at the header's seq, checked at
        // the base record); every other event follows its predecessor.
        if ((based_ || base_events_) && seq != out_.seq + 1) {
            return fail("event seq " + std::to_string(seq) + " does not follow " + std::to_string(out_.seq));
        }
        std::int64_t time = 0;
        std::uint32_t element_seq = 0;
        if (!element_prefix(element, time, element_seq) || element_seq != seq || !json::accept(element))
            return fail("event element is not [time,seq,...] JSON");
        out_.seq = seq;
        out_.seen_ms = std::max(out_.seen_ms, time);
        out_.events.push_back({seq, std::string(element)});
        base_events_ = base_events_ || !based_;
        return true;
    }

    segment_scan& out_;
    bool based_ = false;
    bool base_events_ = false;  // the base holds events (their seqs are checked at its end)
};

}  // namespace

segment_scan
scan_segment(std::string_view bytes)
{
    segment_scan out;
    if (!file_header_ok(bytes, magic, format_version, out))
        return out;
    scanner sc(out);
    std::size_t at = file_header_bytes;
    while (at < bytes.size()) {
        // The body is the type byte and the payload: n + 1 bytes.
        auto frame = next_frame(bytes, at, 1, 0, max_record_bytes, "record", out);
        if (!frame)
            break;
        auto type_and_payload = *frame;
        auto n = static_cast<std::uint32_t>(type_and_payload.size() - 1);
        if (!sc.apply(static_cast<record_type>(static_cast<unsigned char>(type_and_payload[0])),
                      type_and_payload.substr(1))) {
            out.tail = tail_problem::invalid;
            break;
        }
        at += record_header_bytes + n;
    }
    out.valid_bytes = at;
    out.dropped_bytes = bytes.size() - at;
    out.status = sc.based() ? scan_status::ok : scan_status::no_base;
    return out;
}

// ---------------------------------------------------------------------------- write-ahead log

void
append_wal_entry(std::string& out, wal_entry const& e)
{
    auto n = static_cast<std::uint32_t>(wal_body_fixed_bytes + e.id.size() + e.data.size());
    auto start = out.size();
    put_u32(out, n);
    put_u32(out, 0);  // the checksum, filled in below
    out.push_back(static_cast<char>(e.kind));
    put_le(out, e.generation);
    put_le(out, e.offset);
    put_le(out, static_cast<std::uint16_t>(e.id.size()));
    out.append(e.id);
    out.append(e.data);
    std::string_view all(out);
    auto crc = crc32c(all.substr(start + wal_entry_header_bytes), crc32c(all.substr(start, 4)));
    for (std::size_t i = 0; i < 4; ++i)
        out[start + 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xFF);
}

namespace {

/// Why a checksummed WAL body cannot be applied; nullptr when it can.
char const*
wal_body_problem(wal_entry const& e)
{
    if (e.kind != wal_kind::append && e.kind != wal_kind::base)
        return "unknown entry kind";
    if (e.id.empty() || encode_id(e.id).empty())
        return "session id cannot name a journal";
    if (e.generation == 0)
        return "generation 0";
    if (e.data.empty())
        return "no segment bytes";
    if (e.kind == wal_kind::base)
        return e.offset == 0 && e.data.size() >= file_header_bytes && e.data.substr(0, magic.size()) == magic
                   ? nullptr
                   : "base entry is not a whole segment";
    if (e.offset < file_header_bytes || e.offset > std::numeric_limits<std::uint64_t>::max() - e.data.size())
        return "append offset out of range";
    return nullptr;
}

}  // namespace

wal_scan
scan_wal(std::string_view bytes)
{
    wal_scan out;
    if (!file_header_ok(bytes, wal_magic, wal_format_version, out))
        return out;
    out.status = scan_status::ok;
    std::size_t at = file_header_bytes;
    while (at < bytes.size()) {
        auto frame = next_frame(bytes, at, 0, wal_body_fixed_bytes, max_wal_entry_bytes, "entry", out);
        if (!frame)
            break;
        auto body = *frame;
        auto n = body.size();
        wal_entry e;
        e.kind = static_cast<wal_kind>(static_cast<unsigned char>(body[0]));
        e.generation = get_le<std::uint64_t>(body, 1);
        e.offset = get_le<std::uint64_t>(body, 9);
        auto id_len = get_le<std::uint16_t>(body, 17);
        if (wal_body_fixed_bytes + id_len > body.size()) {
            out.tail = tail_problem::invalid;
            out.tail_detail = "session id longer than the entry";
            break;
        }
        e.id = body.substr(wal_body_fixed_bytes, id_len);
        e.data = body.substr(wal_body_fixed_bytes + id_len);
        if (auto why = wal_body_problem(e)) {
            out.tail = tail_problem::invalid;
            out.tail_detail = why;
            break;
        }
        out.entries.push_back(e);
        at += wal_entry_header_bytes + n;
    }
    out.valid_bytes = at;
    out.dropped_bytes = bytes.size() - at;
    return out;
}

// ---------------------------------------------------------------------------- files

namespace {

std::error_code
last_error()
{
    return {errno, std::generic_category()};
}

std::error_code
write_all(int fd, std::string_view data)
{
    while (!data.empty()) {
        auto n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return last_error();
        }
        if (n == 0)
            return std::make_error_code(std::errc::no_space_on_device);
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return {};
}

std::error_code
pwrite_all(int fd, std::string_view data, std::uint64_t offset)
{
    while (!data.empty()) {
        auto n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return last_error();
        }
        if (n == 0)
            return std::make_error_code(std::errc::no_space_on_device);
        data.remove_prefix(static_cast<std::size_t>(n));
        offset += static_cast<std::uint64_t>(n);
    }
    return {};
}

/// "<prefix><16 hex digits><suffix>" -> the number; nullopt for any other name.
std::optional<std::uint64_t>
numbered(std::string_view file_name, std::string_view prefix, std::string_view suffix)
{
    if (file_name.size() != prefix.size() + 16 + suffix.size() || file_name.substr(0, prefix.size()) != prefix ||
        file_name.substr(prefix.size() + 16) != suffix)
        return std::nullopt;
    std::uint64_t g = 0;
    auto const* p = file_name.data() + prefix.size();
    auto r = std::from_chars(p, p + 16, g, 16);
    if (r.ec != std::errc() || r.ptr != p + 16)
        return std::nullopt;
    return g;
}

std::string
numbered_name(std::string_view prefix, std::uint64_t n, std::string_view suffix)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(n));
    return std::string(prefix) + buf + std::string(suffix);
}

std::string
segment_name(std::uint64_t generation)
{
    return numbered_name("", generation, ".lsj");
}

/// Files of `dir` named <prefix><16 hex><suffix>, highest number first.
std::vector<std::pair<std::uint64_t, std::string>>
numbered_in(std::string const& dir, std::string_view prefix, std::string_view suffix)
{
    std::vector<std::pair<std::uint64_t, std::string>> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (auto g = numbered(it->path().filename().string(), prefix, suffix))
            out.emplace_back(*g, it->path().string());
    std::sort(out.begin(), out.end(), std::greater<>());
    return out;
}

/// Segment files of a session directory, newest first.
std::vector<std::pair<std::uint64_t, std::string>>
segments_in(std::string const& dir)
{
    return numbered_in(dir, "", ".lsj");
}

std::optional<std::string>
read_file(std::string const& path, std::error_code& ec)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ec = last_error();
        return std::nullopt;
    }
    std::string data;
    char buf[1 << 16];
    for (;;) {
        auto n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ec = last_error();
            ::close(fd);
            return std::nullopt;
        }
        if (n == 0)
            break;
        data.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return data;
}

void
fsync_dir(std::string const& dir)
{
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    ::fsync(fd);
    ::close(fd);
}

}  // namespace

/// Brings segment files up to date from WAL entries (the catch-up thread, recover()).
/// Keeps each session's current segment open; older generations a base replaced are
/// deleted only by delete_obsolete(), once the new base is durable.
class segment_applier {
public:
    segment_applier(std::string dir, writer_stats& stats) : dir_(std::move(dir)), stats_(stats) {}
    ~segment_applier()
    {
        for (auto& [id, s] : open_)
            ::close(s.fd);
    }
    segment_applier(segment_applier const&) = delete;
    segment_applier& operator=(segment_applier const&) = delete;

    std::error_code
    apply(wal_entry const& e)
    {
        auto name = encode_id(e.id);
        if (name.empty())
            return make_error_code(errc::bad_id);
        auto path = dir_ + "/" + name;
        std::string id(e.id);
        auto it = open_.find(id);
        if (e.kind == wal_kind::base) {
            if (it != open_.end()) {
                ::close(it->second.fd);  // replaced: it becomes obsolete below
                open_.erase(it);
            }
            std::error_code ec;
            if (fs::create_directories(path, ec))
                new_dirs_.insert(dir_);
            if (ec)
                return ec;
            auto file = path + "/" + segment_name(e.generation);
            int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0)
                return last_error();
            if ((ec = pwrite_all(fd, e.data, 0))) {
                ::close(fd);
                ::unlink(file.c_str());  // a partial base is of no use; the WAL still has it
                return ec;
            }
            open_[id] = {e.generation, fd, e.data.size(), true, file};
            new_dirs_.insert(path);
            for (auto const& [g, p] : segments_in(path))
                if (g != e.generation)
                    obsolete_.push_back(p);
            count(e.data.size());
            return {};
        }
        if (it == open_.end() || it->second.generation != e.generation) {
            if (it != open_.end()) {
                close_one(it->second);
                open_.erase(it);
            }
            auto file = path + "/" + segment_name(e.generation);
            int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd < 0)
                return last_error();
            struct stat st{};
            if (::fstat(fd, &st) != 0) {
                auto ec = last_error();
                ::close(fd);
                return ec;
            }
            it = open_.emplace(id, seg{e.generation, fd, static_cast<std::uint64_t>(st.st_size), false, file}).first;
        }
        auto& s = it->second;
        if (e.offset > s.size)
            return make_error_code(errc::gap);
        if (auto ec = pwrite_all(s.fd, e.data, e.offset))
            return ec;
        s.size = std::max(s.size, e.offset + e.data.size());
        s.dirty = true;
        count(e.data.size());
        return {};
    }

    /// The session left memory: its segment is closed (and fdatasynced by the next sync()).
    void
    close(std::string const& id)
    {
        auto it = open_.find(id);
        if (it == open_.end())
            return;
        close_one(it->second);
        open_.erase(it);
    }

    /// fdatasyncs every segment written since the last call and the directories that
    /// got new entries. False when one failed (then the WAL must stay).
    bool
    sync()
    {
        bool ok = true;
        for (auto& [id, s] : open_) {
            if (!s.dirty)
                continue;
            if (::fdatasync(s.fd) != 0) {
                spdlog::error("journal: fdatasync of session {}'s segment failed: {}", id, last_error().message());
                stats_.fsync_errors.fetch_add(1, std::memory_order_relaxed);
                ok = false;
                continue;
            }
            s.dirty = false;
        }
        for (auto const& file : closed_unsynced_) {
            int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd < 0)
                continue;  // deleted since (a replaced generation, retention)
            if (::fdatasync(fd) != 0) {
                spdlog::error("journal: fdatasync of {} failed: {}", file, last_error().message());
                stats_.fsync_errors.fetch_add(1, std::memory_order_relaxed);
                ok = false;
            }
            ::close(fd);
        }
        closed_unsynced_.clear();
        for (auto const& d : new_dirs_)
            fsync_dir(d);
        new_dirs_.clear();
        return ok;
    }

    /// Deletes the generations replaced by bases applied so far. Only once those bases
    /// are durable (in a synced WAL or synced segments).
    void
    delete_obsolete()
    {
        for (auto const& path : obsolete_)
            if (::unlink(path.c_str()) != 0 && errno != ENOENT)
                spdlog::warn("journal: cannot delete old segment {}: {}", path, last_error().message());
        obsolete_.clear();
    }

private:
    struct seg {
        std::uint64_t generation = 0;
        int fd = -1;
        std::uint64_t size = 0;
        bool dirty = false;  // written since its last fdatasync
        std::string file;
    };

    /// Closes without waiting for the disk (a close must not hold up a resume's load):
    /// a written segment is fdatasynced by the next sync(), before its WAL goes.
    void
    close_one(seg& s)
    {
        if (s.dirty)
            closed_unsynced_.push_back(s.file);
        ::close(s.fd);
    }

    void
    count(std::size_t)
    {
        stats_.catch_up_writes.fetch_add(1, std::memory_order_relaxed);
    }

    std::string dir_;
    writer_stats& stats_;
    std::unordered_map<std::string, seg> open_;
    std::set<std::string> new_dirs_;
    std::vector<std::string> obsolete_;
    std::vector<std::string> closed_unsynced_;  // segments closed since the last sync()
};

// ---------------------------------------------------------------------------- recovery

namespace {

std::string const wal_suffix = ".lsw";

/// "<name>-<16 hex>.lsw" -> (name, generation).
std::optional<std::pair<std::string, std::uint64_t>>
wal_file_name(std::string const& file_name)
{
    auto dash = file_name.rfind('-');
    if (dash == std::string::npos)
        return std::nullopt;
    auto g = numbered(std::string_view(file_name).substr(dash + 1), "", wal_suffix);
    if (!g)
        return std::nullopt;
    return std::make_pair(file_name.substr(0, dash), *g);
}

}  // namespace

recover_result
recover(std::string const& dir, writer_stats* stats)
{
    writer_stats own;
    auto& st = stats ? *stats : own;
    recover_result r;
    auto wal_dir = dir + "/.wal";
    std::vector<std::tuple<std::string, std::uint64_t, std::string>> files;  // name, generation, path
    std::error_code ec;
    for (fs::directory_iterator it(wal_dir, ec), end; !ec && it != end; it.increment(ec))
        if (auto n = wal_file_name(it->path().filename().string()))
            files.emplace_back(n->first, n->second, it->path().string());
    if (files.empty())
        return r;
    std::sort(files.begin(), files.end());  // each writer's files in the order written
    segment_applier applier(dir, st);
    for (auto const& [name, generation, path] : files) {
        std::error_code rec;
        auto bytes = read_file(path, rec);
        if (!bytes)
            throw std::system_error(rec, "journal: cannot read write-ahead log " + path);
        auto scan = scan_wal(*bytes);
        if (scan.status == scan_status::bad_version)
            throw std::system_error(make_error_code(errc::bad_version),
                                    "journal: write-ahead log " + path + " has format version " +
                                        std::to_string(scan.version));
        if (scan.status == scan_status::bad_magic)
            spdlog::error("journal: {} is not a write-ahead log; ignored and deleted", path);
        if (scan.tail != tail_problem::none) {
            ++r.tails_dropped;
            st.tails_dropped.fetch_add(1, std::memory_order_relaxed);
            spdlog::warn("journal: write-ahead log {}: dropped {} bytes at offset {} ({}: {})", path,
                         scan.dropped_bytes, scan.valid_bytes, to_string(scan.tail), scan.tail_detail);
        }
        for (auto const& e : scan.entries) {
            auto aec = applier.apply(e);
            if (aec == std::errc::no_such_file_or_directory || aec == errc::gap) {
                // Its segment is gone (the session was deleted) or was never reached:
                // nothing to bring up to date.
                spdlog::warn("journal: write-ahead entry for session {} generation {} skipped: {}", e.id,
                             e.generation, aec.message());
                ++r.skipped;
                continue;
            }
            if (aec)
                throw std::system_error(aec, "journal: cannot replay the write-ahead log into session " +
                                                 std::string(e.id) + "'s journal");
            ++r.entries;
        }
        r.bytes += bytes->size();
        ++r.files;
    }
    if (!applier.sync())
        throw std::system_error(std::make_error_code(std::errc::io_error),
                                "journal: cannot fdatasync the segments replayed from the write-ahead log");
    applier.delete_obsolete();
    for (auto const& f : files)
        ::unlink(std::get<2>(f).c_str());
    fsync_dir(wal_dir);
    st.wal_replayed.fetch_add(r.entries, std::memory_order_relaxed);
    spdlog::info("journal: replayed {} write-ahead entries ({} bytes, {} files) into the session journals",
                 r.entries, r.bytes, r.files);
    return r;
}

// ---------------------------------------------------------------------------- writing

/// An open WAL file. Shared by the writer and the catch-up thread; closed by the last.
struct journal_writer::wal_file {
    int fd = -1;
    std::string path;
    std::uint64_t generation = 0;
    std::uint64_t bytes = 0;             // written and kept (writer's thread)
    std::atomic<bool> new_file{true};    // its directory entry still needs an fsync
    ~wal_file()
    {
        if (fd >= 0)
            ::close(fd);
    }
};

/// What the writer hands to the catch-up thread, in order.
struct journal_writer::op {
    enum kind_t { entries, close, retire } kind = entries;
    std::shared_ptr<std::string const> bytes;  // entries: the WAL bytes of one flush
    std::vector<wal_entry> list;               // entries: views into `bytes`
    std::string id;                            // close
    std::shared_ptr<wal_file> wal;             // retire
};

/// One session's segment bytes, gathered from consecutive entries (one pwrite). A single
/// entry is not copied: `view` points into the flush's bytes, which `owner` keeps alive.
struct pending_chunk {
    wal_kind kind = wal_kind::append;
    std::string id;
    std::uint64_t generation = 0, offset = 0;
    std::shared_ptr<std::string const> owner;
    std::string_view view;
    std::string merged;  // used once a second entry is appended
    std::string_view
    data() const
    {
        return merged.empty() ? view : std::string_view(merged);
    }
    void
    append(std::string_view more)
    {
        if (merged.empty())
            merged.assign(view);
        merged.append(more);
        owner.reset();
        view = {};
    }
    wal_entry
    entry() const
    {
        return {kind, id, generation, offset, data()};
    }
};

struct journal_writer::catch_up_state {
    catch_up_state(std::string const& dir, writer_stats& stats) : applier(dir, stats) {}
    segment_applier applier;
    std::unordered_map<std::string, std::vector<pending_chunk>> behind;  // failed catch-up, in order
    std::vector<std::shared_ptr<wal_file>> retire_later;                 // waiting for `behind` to clear
};

journal_writer::journal_writer(writer_options opts, writer_stats* stats)
    : opts_(std::move(opts)), stats_(stats ? stats : &own_stats_), wal_dir_(opts_.dir + "/.wal")
{
    fs::create_directories(wal_dir_);  // throws std::filesystem_error (a system_error)
    for (auto const& [g, path] : numbered_in(wal_dir_, opts_.wal_name + "-", wal_suffix))
        wal_generation_ = std::max(wal_generation_, g);
    wal_ = open_wal();
    if (!wal_)
        throw std::system_error(last_error(), "journal: cannot create a write-ahead log in " + wal_dir_);
    wal_now_ = wal_;
    cu_ = std::make_unique<catch_up_state>(opts_.dir, *stats_);
    thread_ = std::thread([this] { catch_up_loop(); });
}

journal_writer::~journal_writer()
{
    bool crashed;
    {
        std::lock_guard lk(mu_);
        crashed = crashed_;
    }
    if (!crashed) {
        auto r = flush();
        if (r.error)
            spdlog::error("journal: {} sessions not written at shutdown: {}", r.failed.size(), r.error.message());
        {
            std::lock_guard lk(mu_);
            stop_ = true;
        }
        cv_.notify_all();
    }
    if (thread_.joinable())
        thread_.join();
}

std::shared_ptr<journal_writer::wal_file>
journal_writer::open_wal()
{
    for (int attempt = 0; attempt < 1000; ++attempt) {
        auto w = std::make_shared<wal_file>();
        w->generation = ++wal_generation_;
        w->path = wal_dir_ + "/" + numbered_name(opts_.wal_name + "-", w->generation, wal_suffix);
        w->fd = ::open(w->path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
        if (w->fd >= 0)
            return w;
        if (errno != EEXIST)
            return nullptr;
    }
    return nullptr;
}

void
journal_writer::hand(op o)
{
    std::lock_guard lk(mu_);
    queue_.push_back(std::move(o));
    ++handed_;
}

void
journal_writer::wait_applied(std::unique_lock<std::mutex>& lk, bool whole_round)
{
    auto target = handed_;
    auto const& done = whole_round ? finished_ : applied_;
    if (done >= target || crashed_ || !thread_.joinable())
        return;
    urgent_ = true;
    cv_.notify_all();
    cv_.wait(lk, [&] { return done >= target || crashed_; });
}

std::optional<stored_session>
journal_writer::load(std::string const& id, std::error_code& ec)
{
    {
        std::lock_guard lk(mu_);
        loaded_[id] = std::chrono::steady_clock::now();
    }
    return read(id, ec);
}

std::optional<stored_session>
journal_writer::read(std::string const& id, std::error_code& ec)
{
    ec.clear();
    auto name = encode_id(id);
    if (name.empty()) {
        ec = make_error_code(errc::bad_id);
        return std::nullopt;
    }
    {
        std::unique_lock lk(mu_);
        wait_applied(lk, false);  // what this writer wrote for it is in its segment now
    }
    auto segments = segments_in(opts_.dir + "/" + name);
    for (auto const& [generation, path] : segments) {
        std::error_code rec;
        auto bytes = read_file(path, rec);
        if (!bytes) {
            spdlog::error("journal: cannot read {}: {}", path, rec.message());
            ec = rec;
            return std::nullopt;
        }
        auto scan = scan_segment(*bytes);
        if (scan.status == scan_status::bad_version) {
            spdlog::error("journal: {} has format version {}, this build reads {}", path, scan.version,
                          format_version);
            ec = make_error_code(errc::bad_version);
            return std::nullopt;
        }
        if (scan.status == scan_status::ok && scan.header.id != id) {
            spdlog::error("journal: {} belongs to session {}, not {}", path, scan.header.id, id);
            scan.status = scan_status::bad_magic;
        }
        if (scan.status != scan_status::ok) {
            // A crash while a new segment's base was being written: its predecessor
            // still holds everything, because it is deleted only after the base is durable.
            spdlog::warn("journal: {} has no complete base ({}{}{}): trying the previous generation", path,
                         scan.status == scan_status::bad_magic ? "bad magic or wrong session" : "incomplete",
                         scan.tail_detail.empty() ? "" : ", ", scan.tail_detail);
            stats_->tails_dropped.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        if (scan.tail != tail_problem::none) {
            spdlog::warn("journal: session {}: dropped {} bytes at offset {} of {} ({}: {})", id,
                         scan.dropped_bytes, scan.valid_bytes, path, to_string(scan.tail), scan.tail_detail);
            stats_->tails_dropped.fetch_add(1, std::memory_order_relaxed);
        }
        stored_session s;
        s.resume_time_ms = scan.seen_ms;
        s.header = std::move(scan.header);
        s.header.seq = scan.seq;
        s.events = std::move(scan.events);
        s.file = path;
        s.generation = generation;
        s.newest_generation = segments.front().first;
        s.dropped_bytes = scan.dropped_bytes;
        stats_->sessions_loaded.fetch_add(1, std::memory_order_relaxed);
        return s;
    }
    if (!segments.empty()) {
        spdlog::error("journal: session {}: none of its {} segments is readable", id, segments.size());
        ec = make_error_code(errc::no_base);
    }
    return std::nullopt;
}

void
journal_writer::resumed(std::string const& id, std::uint64_t generation)
{
    if (auto* f = file_of(id))
        f->generation = std::max(f->generation, generation);
}

journal_writer::session_file*
journal_writer::file_of(std::string const& id)
{
    auto it = files_.find(id);
    if (it != files_.end())
        return &it->second;
    if (encode_id(id).empty())
        return nullptr;
    auto& f = files_[id];
    f.id = id;
    std::lock_guard lk(mu_);
    open_.insert(id);
    last_wal_.erase(id);
    return &f;
}

void
journal_writer::mark(session_file& f, std::size_t records)
{
    f.staged_records += records;
    if (!f.queued) {
        f.queued = true;
        dirty_.push_back(f.id);
    }
}

void
journal_writer::begin_base(session_header const& h)
{
    auto* f = file_of(h.id);
    if (!f) {
        spdlog::warn("journal: session id of {} bytes cannot be journaled", h.id.size());
        return;
    }
    f->staged = file_header();
    f->staged_records = 0;
    f->rebase = true;
    append_header(f->staged, h);
    mark(*f, 1);
}

void
journal_writer::end_base(std::string const& id)
{
    if (auto* f = file_of(id)) {
        append_base(f->staged);
        mark(*f, 1);
    }
}

void
journal_writer::header(session_header const& h)
{
    if (auto* f = file_of(h.id)) {
        append_header(f->staged, h);
        mark(*f, 1);
    }
}

void
journal_writer::event(std::string const& id, std::uint32_t seq, std::string_view element)
{
    if (auto* f = file_of(id)) {
        append_event(f->staged, seq, element);
        mark(*f, 1);
    }
}

void
journal_writer::seen(std::string const& id, std::int64_t time_ms)
{
    if (auto* f = file_of(id)) {
        append_seen(f->staged, time_ms);
        mark(*f, 1);
    }
}

bool
journal_writer::pending(std::string const& id) const
{
    auto it = files_.find(id);
    if (it != files_.end() && !it->second.staged.empty())
        return true;
    std::lock_guard lk(mu_);
    return !behind_.empty() && behind_.count(id) > 0;
}

flush_result
journal_writer::flush()
{
    flush_result r;
    if (dirty_.empty())
        return r;
    auto dirty = std::move(dirty_);
    dirty_.clear();
    auto bytes = std::make_shared<std::string>();
    if (wal_->bytes == 0)
        *bytes = file_header(wal_format_version, wal_magic);
    struct placed {
        session_file* f;
        wal_entry e;
        std::size_t data_at;
    };
    std::vector<placed> included;
    std::size_t records = 0;
    for (auto const& id : dirty) {
        auto it = files_.find(id);
        if (it == files_.end())
            continue;
        auto& f = it->second;
        f.queued = false;
        if (f.staged.empty())
            continue;
        if (!f.rebase && f.generation == 0) {
            // Appends before any base: a caller bug; there is no segment to put them in.
            spdlog::error("journal: session {}: records staged before its base; dropped", id);
            stats_->write_errors.fetch_add(1, std::memory_order_relaxed);
            if (!r.error)
                r.error = make_error_code(errc::no_base);
            r.failed.push_back(id);
            f.staged.clear();
            f.staged_records = 0;
            continue;
        }
        wal_entry e{f.rebase ? wal_kind::base : wal_kind::append, f.id, f.rebase ? f.generation + 1 : f.generation,
                    f.rebase ? 0 : f.seg_bytes, f.staged};
        append_wal_entry(*bytes, e);
        included.push_back({&f, e, bytes->size() - f.staged.size()});
        records += f.staged_records;
    }
    if (included.empty())
        return r;
    // The one write of this turn: every session's records, before any output is shown.
    if (auto ec = write_all(wal_->fd, *bytes)) {
        // Roll back a partial write so the WAL ends on an entry boundary.
        if (::ftruncate(wal_->fd, static_cast<off_t>(wal_->bytes)) != 0)
            spdlog::error("journal: cannot roll back {}: {}", wal_->path, last_error().message());
        stats_->write_errors.fetch_add(1, std::memory_order_relaxed);
        if (!r.error)
            r.error = ec;
        for (auto& p : included) {
            r.failed.push_back(p.f->id);
            mark(*p.f, 0);  // stays staged: retried by the next flush
        }
        return r;
    }
    wal_->bytes += bytes->size();
    ++r.writes;
    stats_->writes.fetch_add(1, std::memory_order_relaxed);
    stats_->bytes_written.fetch_add(bytes->size(), std::memory_order_relaxed);
    stats_->records_written.fetch_add(records, std::memory_order_relaxed);
    if (opts_.fsync_ms == 0)
        sync_wal(*wal_);
    op o;
    o.bytes = bytes;
    o.list.reserve(included.size());
    for (auto& p : included) {
        auto& f = *p.f;
        if (f.rebase) {
            f.generation = p.e.generation;
            f.seg_bytes = 0;
            f.rebase = false;
            stats_->segments_created.fetch_add(1, std::memory_order_relaxed);
        }
        f.seg_bytes += f.staged.size();
        f.wal = wal_->generation;
        p.e.data = std::string_view(*bytes).substr(p.data_at, f.staged.size());
        f.staged.clear();
        f.staged_records = 0;
        o.list.push_back(p.e);
    }
    // The ids must outlive the files_ entries (close may erase them first): point them
    // into the WAL bytes, where each entry carries its id just before its data.
    for (auto& e : o.list) {
        auto data_at = static_cast<std::size_t>(e.data.data() - bytes->data());
        e.id = std::string_view(*bytes).substr(data_at - e.id.size(), e.id.size());
    }
    hand(std::move(o));
    if (wal_->bytes >= opts_.rotate_bytes)
        rotate();
    return r;
}

void
journal_writer::rotate()
{
    if (wal_->bytes == 0)
        return;
    auto next = open_wal();
    if (!next) {
        spdlog::warn("journal: cannot start a new write-ahead log in {}: {}; the current one keeps growing",
                     wal_dir_, last_error().message());
        return;
    }
    stats_->wal_rotations.fetch_add(1, std::memory_order_relaxed);
    op o;
    o.kind = op::retire;
    o.wal = std::move(wal_);
    wal_ = std::move(next);
    std::lock_guard lk(mu_);
    queue_.push_back(std::move(o));
    ++handed_;
    wal_now_ = wal_;
}

void
journal_writer::sync_wal(wal_file& wal)
{
    auto t0 = std::chrono::steady_clock::now();
    int rc = ::fdatasync(wal.fd);
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rc != 0) {
        stats_->fsync_errors.fetch_add(1, std::memory_order_relaxed);
        spdlog::error("journal: fdatasync {} failed: {}", wal.path, last_error().message());
        return;
    }
    stats_->fsyncs.fetch_add(1, std::memory_order_relaxed);
    if (opts_.on_fsync)
        opts_.on_fsync(secs);
    if (wal.new_file.exchange(false))
        fsync_dir(wal_dir_);
}

void
journal_writer::retire(std::shared_ptr<wal_file> const& wal)
{
    // Everything in it is in the segments; once they are durable it is not needed.
    if (!cu_->behind.empty() || !cu_->applier.sync()) {
        cu_->retire_later.push_back(wal);
        return;
    }
    cu_->applier.delete_obsolete();
    if (::unlink(wal->path.c_str()) != 0 && errno != ENOENT)
        spdlog::warn("journal: cannot delete write-ahead log {}: {}", wal->path, last_error().message());
    stats_->wal_retired.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lk(mu_);
    retired_below_ = std::max(retired_below_, wal->generation + 1);
    for (auto it = last_wal_.begin(); it != last_wal_.end();)
        it = it->second < retired_below_ ? last_wal_.erase(it) : std::next(it);
}

void
journal_writer::process(std::vector<op>& ops)
{
    auto& cu = *cu_;
    auto apply = [&](pending_chunk&& c) {
        auto b = cu.behind.find(c.id);
        if (b != cu.behind.end()) {
            b->second.push_back(std::move(c));  // after the ones that failed, in order
            return;
        }
        if (auto ec = cu.applier.apply(c.entry())) {
            stats_->catch_up_errors.fetch_add(1, std::memory_order_relaxed);
            spdlog::error("journal: session {}: cannot bring its segment up to date ({}); its records are safe in "
                          "the write-ahead log and retried",
                          c.id, ec.message());
            cu.behind[c.id].push_back(std::move(c));
        }
    };
    // Retry what failed before, in order.
    for (auto it = cu.behind.begin(); it != cu.behind.end();) {
        auto& chunks = it->second;
        std::size_t done = 0;
        while (done < chunks.size() && !cu.applier.apply(chunks[done].entry()))
            ++done;
        chunks.erase(chunks.begin(), chunks.begin() + static_cast<std::ptrdiff_t>(done));
        if (chunks.empty()) {
            spdlog::info("journal: session {}: segment up to date again", it->first);
            it = cu.behind.erase(it);
        } else {
            ++it;
        }
    }
    // Consecutive entries of one session become one chunk: one pwrite per session.
    std::vector<pending_chunk> chunks;
    std::unordered_map<std::string_view, std::size_t> last;  // id -> index of its newest chunk
    auto apply_all = [&] {
        for (auto& c : chunks)
            apply(std::move(c));
        chunks.clear();
        last.clear();
    };
    for (auto& o : ops) {
        switch (o.kind) {
        case op::entries:
            for (auto const& e : o.list) {
                auto it = last.find(e.id);
                if (it != last.end()) {
                    auto& c = chunks[it->second];
                    if (e.kind == wal_kind::append && c.generation == e.generation &&
                        c.offset + c.data().size() == e.offset) {
                        c.append(e.data);
                        continue;
                    }
                }
                chunks.push_back({e.kind, std::string(e.id), e.generation, e.offset, o.bytes, e.data, {}});
                last[e.id] = chunks.size() - 1;  // a view into the WAL bytes: stable while `ops` lives
            }
            break;
        case op::close:
            apply_all();
            cu.applier.close(o.id);
            break;
        case op::retire:
            apply_all();
            cu.retire_later.push_back(o.wal);  // after the round's loads are answered
            break;
        }
    }
    apply_all();
}

void
journal_writer::catch_up_loop()
{
    using clock = std::chrono::steady_clock;
    auto const period = std::chrono::milliseconds(std::max(1, opts_.catch_up_ms));
    auto const fsync_period = std::chrono::milliseconds(std::max(1, opts_.fsync_ms));
    auto last_sync = clock::now();
    std::unique_lock lk(mu_);
    for (;;) {
        cv_.wait_for(lk, period, [this] { return stop_ || crashed_ || urgent_ || sync_wanted_; });
        if (crashed_)
            return;  // as if killed: nothing more reaches the segments
        auto ops = std::move(queue_);
        queue_.clear();
        auto target = handed_;
        bool want_sync = sync_wanted_;
        bool stopping = stop_;
        urgent_ = sync_wanted_ = false;
        auto wal = wal_now_;
        lk.unlock();
        process(ops);
        ops.clear();  // the WAL bytes (and their views) go before the lock is retaken
        // The segments hold what was handed: loads waiting for that go on now, before
        // this round's fdatasyncs.
        lk.lock();
        applied_ = target;
        behind_.clear();
        for (auto const& [id, chunks] : cu_->behind)
            behind_.insert(id);
        cv_.notify_all();
        lk.unlock();
        bool synced = opts_.fsync_ms == 0;  // flush() synced the WAL already
        bool written = target != synced_;   // something handed since the last sync
        if (!synced && (want_sync || (written && (stopping || clock::now() - last_sync >= fsync_period)))) {
            sync_wal(*wal);
            last_sync = clock::now();
            synced = true;
        }
        if (synced)
            cu_->applier.delete_obsolete();  // their successors' bases are in a synced WAL
        if (cu_->behind.empty() && !cu_->retire_later.empty()) {
            auto retiring = std::move(cu_->retire_later);
            cu_->retire_later.clear();
            for (auto const& w : retiring)
                retire(w);  // back into retire_later if a segment cannot be synced
        }
        lk.lock();
        finished_ = target;
        if (synced)
            synced_ = target;
        cv_.notify_all();
        if (stopping && handed_ == finished_)
            break;
    }
    // Shut down: every segment durable, then the WAL goes (nothing to replay at start-up).
    auto wal = wal_now_;
    lk.unlock();
    if (cu_->behind.empty()) {
        retire(wal);
        if (!cu_->retire_later.empty())
            spdlog::error("journal: write-ahead log kept in {}: segments could not be synced; it is replayed at the "
                          "next start",
                          wal_dir_);
    } else {
        sync_wal(*wal);
        spdlog::error("journal: {} session(s) have records only in the write-ahead log in {}; they are replayed "
                      "at the next start",
                      cu_->behind.size(), wal_dir_);
    }
}

void
journal_writer::sync()
{
    std::unique_lock lk(mu_);
    auto target = handed_;
    if (crashed_ || !thread_.joinable())
        return;
    sync_wanted_ = true;
    cv_.notify_all();
    cv_.wait(lk, [&] { return synced_ >= target || crashed_; });
}

void
journal_writer::crash_for_test()
{
    {
        std::lock_guard lk(mu_);
        crashed_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable())
        thread_.join();
}

void
journal_writer::close(std::string const& id)
{
    auto it = files_.find(id);
    if (it == files_.end())
        return;
    if (!it->second.staged.empty())
        flush();
    if (!it->second.staged.empty())
        return;  // not written (disk full): kept, so nothing is lost
    auto wal = it->second.wal;
    files_.erase(it);
    op o;
    o.kind = op::close;
    o.id = id;
    std::lock_guard lk(mu_);
    open_.erase(id);
    if (wal)
        last_wal_[id] = wal;
    queue_.push_back(std::move(o));
    ++handed_;
}

std::error_code
journal_writer::remove(std::string const& id)
{
    auto name = encode_id(id);
    if (name.empty())
        return make_error_code(errc::bad_id);
    std::unique_lock lk(mu_);
    wait_applied(lk, true);  // with the WAL retirements that were handed
    if (open_.count(id) || behind_.count(id))
        return std::make_error_code(std::errc::device_or_resource_busy);
    // A WAL not yet retired still holds its records: a replay after a crash would bring
    // the session back (without the blobs retention deletes with it).
    auto w = last_wal_.find(id);
    if (w != last_wal_.end() && w->second >= retired_below_)
        return std::make_error_code(std::errc::device_or_resource_busy);
    std::error_code ec;
    fs::remove_all(opts_.dir + "/" + name, ec);
    loaded_.erase(id);
    return ec;
}

bool
journal_writer::in_use(std::string const& id)
{
    std::lock_guard lk(mu_);
    if (open_.count(id) || behind_.count(id))
        return true;
    auto now = std::chrono::steady_clock::now();
    for (auto it = loaded_.begin(); it != loaded_.end();)
        it = now - it->second > std::chrono::minutes(10) ? loaded_.erase(it) : std::next(it);
    return loaded_.count(id) > 0;
}

std::uint64_t
journal_writer::wal_bytes() const
{
    std::uint64_t bytes = 0;
    for (auto const& [g, path] : numbered_in(wal_dir_, opts_.wal_name + "-", wal_suffix)) {
        std::error_code ec;
        auto n = fs::file_size(path, ec);  // a file retired meanwhile counts nothing
        if (!ec)
            bytes += n;
    }
    return bytes;
}

std::vector<std::string>
journal_writer::stored() const
{
    std::vector<std::string> out;
    std::error_code ec;
    for (fs::directory_iterator it(opts_.dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_directory())
            if (auto id = decode_id(it->path().filename().string()))
                out.push_back(std::move(*id));
    return out;
}

}  // namespace lockstep::journal
