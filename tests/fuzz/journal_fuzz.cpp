// libFuzzer target for the journal reader (src/store/journal.hpp).
//   scripts/fuzz.sh [seconds]   (builds with clang into build-fuzz/ and runs)
//
// The first input byte picks how the rest is read, so the fuzzer reaches past the
// checksums into the record rules:
//   0  the bytes are a whole segment file, as found on disk;
//   1  a valid file header and session header come first, the bytes follow raw;
//   2  the bytes are (type, u8 length, payload) triples framed with correct checksums;
//   3  the bytes are a whole write-ahead log file (scan_wal);
//   4  a valid WAL file header, then (kind, u8 id length, u8 data length, id, data)
//      entries framed with correct checksums, generation and offset from the bytes.
// Checks, besides "no crash, no sanitizer report":
//  - the accounting adds up (valid + dropped = size) and a problem is always named;
//  - the events are contiguous in seq and each is a [time,seq,...] element of its seq;
//  - what was read, written again as a base, reads back identically;
//  - a WAL's entries, written again, are exactly its valid prefix.
#include "store/journal.hpp"

#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace j = lockstep::journal;

namespace {

std::string
with_header(std::string_view rest)
{
    lockstep::session_header h;
    h.id = "F";
    h.timeline = "t";
    h.tick_ms = 100;
    h.seq = 0xFFFFFFF0u;
    auto out = j::file_header();
    j::append_header(out, h);
    out.append(rest);
    return out;
}

std::string
framed(std::string_view in)
{
    auto out = j::file_header();
    while (in.size() >= 2) {
        auto type = static_cast<j::record_type>(static_cast<unsigned char>(in[0]) % 6);
        std::size_t n = std::min<std::size_t>(static_cast<unsigned char>(in[1]), in.size() - 2);
        j::append_record(out, type, in.substr(2, n));
        in.remove_prefix(2 + n);
    }
    return out;
}

void
check(bool ok)
{
    if (!ok)
        std::abort();
}

std::string
framed_wal(std::string_view in)
{
    auto out = j::file_header(j::wal_format_version, j::wal_magic);
    while (in.size() >= 3) {
        j::wal_entry e;
        e.kind = static_cast<j::wal_kind>(static_cast<unsigned char>(in[0]) % 4);
        std::size_t id_len = std::min<std::size_t>(static_cast<unsigned char>(in[1]) % 8, in.size() - 3);
        std::size_t n = std::min<std::size_t>(static_cast<unsigned char>(in[2]), in.size() - 3 - id_len);
        e.id = in.substr(3, id_len);
        e.data = in.substr(3 + id_len, n);
        e.generation = static_cast<unsigned char>(in[0]) >> 2;
        e.offset = e.kind == j::wal_kind::base ? 0 : 16 + n;
        j::append_wal_entry(out, e);
        in.remove_prefix(3 + id_len + n);
    }
    return out;
}

int
check_wal(std::string const& bytes)
{
    auto w = j::scan_wal(bytes);
    check(w.valid_bytes + w.dropped_bytes == bytes.size());
    check(w.tail == j::tail_problem::none || !w.tail_detail.empty());
    if (w.status != j::scan_status::ok)
        return 0;
    auto again = j::file_header(j::wal_format_version, j::wal_magic);
    for (auto const& e : w.entries) {
        check(!e.id.empty() && e.generation > 0 && !e.data.empty());
        j::append_wal_entry(again, e);
    }
    check(again == std::string_view(bytes).substr(0, w.valid_bytes));
    return 0;
}

}  // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    static bool quiet = [] {
        spdlog::set_level(spdlog::level::off);
        return true;
    }();
    (void)quiet;
    if (size == 0)
        return 0;
    std::string_view in(reinterpret_cast<char const*>(data) + 1, size - 1);
    std::string bytes;
    switch (data[0] % 5) {
    case 0: bytes = std::string(in); break;
    case 1: bytes = with_header(in); break;
    case 2: bytes = framed(in); break;
    case 3: return check_wal(std::string(in));
    default: return check_wal(framed_wal(in));
    }

    auto s = j::scan_segment(bytes);
    check(s.valid_bytes + s.dropped_bytes == bytes.size());
    check((s.tail == j::tail_problem::none) == (s.dropped_bytes == 0) || s.status != j::scan_status::ok);
    check(s.tail == j::tail_problem::none || !s.tail_detail.empty());
    for (std::size_t i = 0; i < s.events.size(); ++i) {
        auto const& e = s.events[i];
        if (i > 0)
            check(e.seq == s.events[i - 1].seq + 1);
        auto prefix = "," + std::to_string(e.seq) + ",";
        check(!e.element.empty() && e.element.front() == '[' && e.element.find(prefix) != std::string::npos);
    }
    if (s.status != j::scan_status::ok)
        return 0;
    check(s.has_header && (s.events.empty() || s.events.back().seq == s.seq));

    // Written again as a base, it reads back the same.
    auto h = s.header;
    h.seq = s.seq;
    auto again = j::file_header();
    j::append_header(again, h);
    for (auto const& e : s.events)
        j::append_event(again, e.seq, e.element);
    j::append_base(again);
    auto r = j::scan_segment(again);
    check(r.status == j::scan_status::ok && r.tail == j::tail_problem::none);
    check(j::header_json(r.header) == j::header_json(h));
    check(r.events.size() == s.events.size());
    for (std::size_t i = 0; i < r.events.size(); ++i)
        check(r.events[i].seq == s.events[i].seq && r.events[i].element == s.events[i].element);
    return 0;
}
