#include "store/file_store.hpp"

#include "common/text.hpp"
#include "protocol/url_path.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace lockstep::store {
namespace {

/// File name of a persistence record: SHA-256 of the key, hex (the key itself is
/// stored inside the file).
std::string
record_name(std::string_view key)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<unsigned char const*>(key.data()), key.size(), md);
    static char const digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : md) {
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 0xF]);
    }
    return out + ".json";
}

/// Unambiguous key: an appId may itself contain '/'.
std::string
record_key(std::string const& app_id, std::string const& persistent_id)
{
    return nlohmann::json::array({app_id, persistent_id}).dump();
}

}  // namespace

std::optional<std::string>
blob_path(std::string_view url_path, std::string& why)
{
    if (auto q = url_path.find_first_of("?#"); q != std::string_view::npos)
        url_path = url_path.substr(0, q);
    auto maybe = lockstep::url_path::percent_decode(url_path);
    if (!maybe) {
        why = "bad percent-encoding";
        return std::nullopt;
    }
    std::string decoded = std::move(*maybe);
    if (decoded.empty()) {
        why = "empty path";
        return std::nullopt;
    }
    if (decoded.size() > max_path_bytes) {
        why = "path too long";
        return std::nullopt;
    }
    if (!valid_utf8(decoded)) {
        why = "path is not UTF-8";
        return std::nullopt;
    }
    if (decoded.front() == '/') {
        why = "absolute path";
        return std::nullopt;
    }
    for (unsigned char c : decoded) {
        if (c == 0) {
            why = "NUL in path";
            return std::nullopt;
        }
        if (c < 0x20 || c == 0x7F || c == '\\') {
            why = "control character or backslash in path";
            return std::nullopt;
        }
    }
    std::size_t start = 0;
    while (start <= decoded.size()) {
        auto end = decoded.find('/', start);
        if (end == std::string::npos)
            end = decoded.size();
        auto seg = std::string_view(decoded).substr(start, end - start);
        if (seg.empty()) {
            why = "empty path segment";
            return std::nullopt;
        }
        if (seg == "." || seg == "..") {
            why = "'.' or '..' in path";
            return std::nullopt;
        }
        if (seg.size() > max_segment_bytes) {
            why = "path segment too long";
            return std::nullopt;
        }
        if (seg.size() > 4 && seg.substr(seg.size() - 4) == ".tmp" && seg.find(".lockstep-") != std::string_view::npos) {
            why = "reserved name";
            return std::nullopt;
        }
        start = end + 1;
        if (end == decoded.size())
            break;
    }
    return decoded;
}

std::error_code
atomic_write(std::string const& path, std::string_view data)
{
    static std::atomic<std::uint64_t> counter{0};
    std::error_code ec;
    fs::path target(path);
    fs::create_directories(target.parent_path(), ec);
    if (ec)
        return ec;
    auto tmp = target.parent_path() /
               (target.filename().string() + ".lockstep-" + std::to_string(::getpid()) + "-" +
                std::to_string(counter.fetch_add(1)) + ".tmp");
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return {errno, std::generic_category()};
    std::size_t off = 0;
    while (off < data.size()) {
        auto n = ::write(fd, data.data() + off, data.size() - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ec = {errno, std::generic_category()};
            ::close(fd);
            ::unlink(tmp.c_str());
            return ec;
        }
        off += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) {
        ec = {errno, std::generic_category()};
        ::close(fd);
        ::unlink(tmp.c_str());
        return ec;
    }
    ::close(fd);
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
        ec = {errno, std::generic_category()};
        ::unlink(tmp.c_str());
        return ec;
    }
    return {};
}

file_store::file_store(std::string root) : root_(std::move(root))
{
    std::error_code ec;
    fs::create_directories(fs::path(root_) / "files", ec);
    if (!ec)
        fs::create_directories(fs::path(root_) / "persist", ec);
    if (ec)
        throw std::runtime_error("cannot create data directory " + root_ + ": " + ec.message());
}

std::string
file_store::file_of(std::string const& rel) const
{
    return (fs::path(root_) / "files" / rel).string();
}

std::error_code
file_store::put(std::string const& rel, std::string_view data) const
{
    return atomic_write(file_of(rel), data);
}

file_persistence::file_persistence(file_store const& store, post_fn post) : store_(store), post_(std::move(post))
{
    std::error_code ec;
    for (auto const& e : fs::directory_iterator(fs::path(store_.root()) / "persist", ec)) {
        if (e.path().extension() != ".json")
            continue;
        std::ifstream in(e.path());
        std::stringstream ss;
        ss << in.rdbuf();
        auto j = nlohmann::json::parse(ss.str(), nullptr, false);
        if (j.is_object() && j.contains("key") && j["key"].is_string() && j.contains("url") && j["url"].is_string())
            urls_[j["key"].get<std::string>()] = j["url"].get<std::string>();
        else
            spdlog::warn("ignoring unreadable persistence record {}", e.path().string());
    }
}

std::optional<std::string>
file_persistence::lookup(std::string const& app_id, std::string const& persistent_id)
{
    std::lock_guard lock(mu_);
    auto it = urls_.find(record_key(app_id, persistent_id));
    if (it == urls_.end())
        return std::nullopt;
    return it->second;
}

void
file_persistence::record(std::string const& app_id, std::string const& persistent_id, std::string const& url)
{
    auto key = record_key(app_id, persistent_id);
    {
        std::lock_guard lock(mu_);
        urls_[key] = url;
    }
    nlohmann::json j = {{"key", key}, {"appId", app_id}, {"persistentId", persistent_id}, {"url", url}};
    auto path = (fs::path(store_.root()) / "persist" / record_name(key)).string();
    auto write = [path, data = j.dump()] {
        if (auto ec = atomic_write(path, data))
            spdlog::error("cannot write persistence record {}: {}", path, ec.message());
    };
    // Off the event loop when we can: fsync may take milliseconds.
    if (post_)
        post_(std::move(write));
    else
        write();
}

}  // namespace lockstep::store
