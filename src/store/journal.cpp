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

std::uint32_t
crc32c(std::string_view data, std::uint32_t crc) noexcept
{
    crc = ~crc;
    for (unsigned char ch : data)
        crc = crc_table[(crc ^ ch) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

std::string
file_header(std::uint32_t version)
{
    std::string h(magic);
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
    if (bytes.empty())
        return out;  // status empty
    if (bytes.size() < file_header_bytes) {
        out.status = scan_status::no_base;
        out.tail = tail_problem::torn;
        out.tail_detail = "file header incomplete";
        out.dropped_bytes = bytes.size();
        return out;
    }
    if (bytes.substr(0, magic.size()) != magic || get_u32(bytes, 12) != crc32c(bytes.substr(0, 12))) {
        out.status = scan_status::bad_magic;
        out.dropped_bytes = bytes.size();
        return out;
    }
    out.version = get_u32(bytes, 8);
    if (out.version != format_version) {
        out.status = scan_status::bad_version;
        out.dropped_bytes = bytes.size();
        return out;
    }
    scanner sc(out);
    std::size_t at = file_header_bytes;
    while (at < bytes.size()) {
        auto left = bytes.size() - at;
        if (left < record_header_bytes) {
            out.tail = tail_problem::torn;
            out.tail_detail = "record header incomplete";
            break;
        }
        auto n = get_u32(bytes, at);
        if (n > max_record_bytes) {
            out.tail = tail_problem::invalid;
            out.tail_detail = "record length " + std::to_string(n) + " over the limit";
            break;
        }
        if (left < record_header_bytes + n) {
            out.tail = tail_problem::torn;
            out.tail_detail = "record incomplete";
            break;
        }
        auto type_and_payload = bytes.substr(at + 8, 1 + n);
        if (crc32c(type_and_payload, crc32c(bytes.substr(at, 4))) != get_u32(bytes, at + 4)) {
            out.tail = tail_problem::checksum;
            out.tail_detail = "record checksum mismatch";
            break;
        }
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

// ---------------------------------------------------------------------------- writing

/// An open segment file. Shared by the writer and the fsync thread; closed by the last.
struct journal_writer::segment {
    int fd = -1;
    std::string path;
    std::string dir;
    std::atomic<bool> new_file{true};  // its directory entry still needs an fsync
    ~segment()
    {
        if (fd >= 0)
            ::close(fd);
    }
};

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

std::optional<std::uint64_t>
generation_of(std::string const& file_name)
{
    if (file_name.size() != 16 + 4 || file_name.substr(16) != ".lsj")
        return std::nullopt;
    std::uint64_t g = 0;
    auto r = std::from_chars(file_name.data(), file_name.data() + 16, g, 16);
    if (r.ec != std::errc() || r.ptr != file_name.data() + 16)
        return std::nullopt;
    return g;
}

std::string
segment_name(std::uint64_t generation)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%016llx.lsj", static_cast<unsigned long long>(generation));
    return buf;
}

/// Segment files of a session directory, newest first.
std::vector<std::pair<std::uint64_t, std::string>>
segments_in(std::string const& dir)
{
    std::vector<std::pair<std::uint64_t, std::string>> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (auto g = generation_of(it->path().filename().string()))
            out.emplace_back(*g, it->path().string());
    std::sort(out.begin(), out.end(), std::greater<>());
    return out;
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

journal_writer::journal_writer(writer_options opts, writer_stats* stats)
    : opts_(std::move(opts)), stats_(stats ? stats : &own_stats_)
{
    fs::create_directories(opts_.dir);  // throws std::filesystem_error (a system_error)
    if (opts_.fsync_ms > 0)
        syncer_ = std::thread([this] { sync_loop(); });
}

journal_writer::~journal_writer()
{
    auto r = flush();
    if (r.error)
        spdlog::error("journal: {} sessions not written at shutdown: {}", r.failed.size(), r.error.message());
    if (syncer_.joinable()) {
        {
            std::lock_guard lk(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        syncer_.join();
    }
}

std::optional<stored_session>
journal_writer::load(std::string const& id, std::error_code& ec)
{
    ec.clear();
    auto name = encode_id(id);
    if (name.empty()) {
        ec = make_error_code(errc::bad_id);
        return std::nullopt;
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
            // still holds everything, because it is deleted only after the base is synced.
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

journal_writer::session_file*
journal_writer::file_of(std::string const& id)
{
    auto it = files_.find(id);
    if (it != files_.end())
        return &it->second;
    auto name = encode_id(id);
    if (name.empty())
        return nullptr;
    auto& f = files_[id];
    f.id = id;
    f.path = opts_.dir + "/" + name;
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
    return it != files_.end() && !it->second.staged.empty();
}

std::uint64_t
journal_writer::latest_generation(std::string const& path) const
{
    auto s = segments_in(path);
    return s.empty() ? 0 : s.front().first;
}

std::error_code
journal_writer::write_staged(session_file& f, sync_batch& batch)
{
    if (!f.rebase) {
        if (!f.seg)
            return make_error_code(errc::no_base);  // appends before any base: a caller bug
        if (auto ec = write_all(f.seg->fd, f.staged)) {
            // Roll back a partial write so the file ends on a record boundary.
            if (::ftruncate(f.seg->fd, static_cast<off_t>(f.seg_bytes)) != 0)
                spdlog::error("journal: cannot roll back {}: {}", f.seg->path, last_error().message());
            return ec;
        }
        f.seg_bytes += f.staged.size();
        batch.segments.push_back(f.seg);
        return {};
    }
    std::error_code ec;
    fs::create_directories(f.path, ec);
    if (ec)
        return ec;
    auto generation = std::max(f.generation, latest_generation(f.path)) + 1;
    auto seg = std::make_shared<segment>();
    seg->path = f.path + "/" + segment_name(generation);
    seg->dir = f.path;
    seg->fd = ::open(seg->path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (seg->fd < 0)
        return last_error();
    if ((ec = write_all(seg->fd, f.staged))) {
        ::unlink(seg->path.c_str());
        return ec;
    }
    // Every older generation goes once this one is on disk.
    for (auto const& [g, path] : segments_in(f.path))
        if (g < generation)
            batch.obsolete.push_back(path);
    f.seg = seg;
    f.generation = generation;
    f.seg_bytes = f.staged.size();
    f.rebase = false;
    stats_->segments_created.fetch_add(1, std::memory_order_relaxed);
    batch.segments.push_back(std::move(seg));
    return {};
}

flush_result
journal_writer::flush()
{
    flush_result r;
    if (dirty_.empty())
        return r;
    sync_batch batch;
    auto dirty = std::move(dirty_);
    dirty_.clear();
    for (auto const& id : dirty) {
        auto it = files_.find(id);
        if (it == files_.end())
            continue;
        auto& f = it->second;
        f.queued = false;
        if (f.staged.empty())
            continue;
        auto ec = write_staged(f, batch);
        if (ec) {
            stats_->write_errors.fetch_add(1, std::memory_order_relaxed);
            if (!r.error)
                r.error = ec;
            r.failed.push_back(id);
            if (ec == errc::no_base) {
                spdlog::error("journal: session {}: records staged before its base; dropped", id);
                f.staged.clear();
                f.staged_records = 0;
            } else {
                mark(f, 0);  // stays staged: retried by the next flush
            }
            continue;
        }
        ++r.writes;
        stats_->writes.fetch_add(1, std::memory_order_relaxed);
        stats_->bytes_written.fetch_add(f.staged.size(), std::memory_order_relaxed);
        stats_->records_written.fetch_add(f.staged_records, std::memory_order_relaxed);
        f.staged.clear();
        f.staged_records = 0;
    }
    if (batch.segments.empty() && batch.obsolete.empty())
        return r;
    if (!syncer_.joinable()) {
        run_sync(batch);
        return r;
    }
    std::lock_guard lk(mu_);
    auto& to = to_sync_;
    to.segments.insert(to.segments.end(), batch.segments.begin(), batch.segments.end());
    to.obsolete.insert(to.obsolete.end(), batch.obsolete.begin(), batch.obsolete.end());
    ++handed_;
    return r;
}

void
journal_writer::run_sync(sync_batch& batch)
{
    auto& segs = batch.segments;
    std::sort(segs.begin(), segs.end());
    segs.erase(std::unique(segs.begin(), segs.end()), segs.end());
    for (auto const& seg : segs) {
        auto t0 = std::chrono::steady_clock::now();
        int rc = ::fdatasync(seg->fd);
        auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (rc != 0) {
            stats_->fsync_errors.fetch_add(1, std::memory_order_relaxed);
            spdlog::error("journal: fdatasync {} failed: {}", seg->path, last_error().message());
            continue;
        }
        stats_->fsyncs.fetch_add(1, std::memory_order_relaxed);
        if (opts_.on_fsync)
            opts_.on_fsync(secs);
        if (seg->new_file.exchange(false))
            fsync_dir(seg->dir);
    }
    for (auto const& path : batch.obsolete)
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            spdlog::warn("journal: cannot delete old segment {}: {}", path, last_error().message());
}

void
journal_writer::sync_loop()
{
    std::unique_lock lk(mu_);
    for (;;) {
        cv_.wait_for(lk, std::chrono::milliseconds(opts_.fsync_ms), [this] { return stop_ || urgent_; });
        sync_batch batch = std::move(to_sync_);
        to_sync_ = {};
        auto target = handed_;
        urgent_ = false;
        lk.unlock();
        run_sync(batch);
        lk.lock();
        synced_ = target;
        cv_.notify_all();
        if (stop_ && handed_ == synced_)
            return;
    }
}

void
journal_writer::sync()
{
    if (!syncer_.joinable())
        return;  // flush() synced already
    std::unique_lock lk(mu_);
    auto target = handed_;
    urgent_ = true;
    cv_.notify_all();
    cv_.wait(lk, [&] { return synced_ >= target; });
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
    files_.erase(id);  // the fsync thread keeps its reference to the segment until synced
}

std::error_code
journal_writer::remove(std::string const& id)
{
    if (files_.count(id))
        return std::make_error_code(std::errc::device_or_resource_busy);
    auto name = encode_id(id);
    if (name.empty())
        return make_error_code(errc::bad_id);
    std::error_code ec;
    fs::remove_all(opts_.dir + "/" + name, ec);
    return ec;
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
