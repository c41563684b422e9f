// Blob storage under the data directory: snapshots and persistent data PUT by clients
// to /files/<path>, and the SAVE index (appId/persistentId -> URL).
//
// Writes are atomic: data goes to a temporary file in the same directory, is fsynced,
// then renamed over the target, so a crash never leaves a half-written blob.
#pragma once

#include "reflector/ports.hpp"

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace lockstep::store {

/// Longest accepted blob path (after /files/), and longest single segment.
inline constexpr std::size_t max_path_bytes = 1024;
inline constexpr std::size_t max_segment_bytes = 255;

/// Percent-decodes and validates the part of a URL path after "/files/". Returns the
/// relative file path, or nullopt with `why` set: empty paths, absolute paths, `.` or
/// `..` segments, empty segments, NUL or control characters, backslashes and over-long
/// names are refused.
std::optional<std::string>
blob_path(std::string_view url_path, std::string& why);

class file_store {
public:
    /// Creates `<root>/files` and `<root>/persist`. Throws std::runtime_error on failure
    /// (start-up only).
    explicit file_store(std::string root);

    std::string const& root() const noexcept { return root_; }
    /// Absolute-ish filesystem path of a validated blob path.
    std::string file_of(std::string const& rel) const;
    /// Atomic write (temp file + fsync + rename).
    std::error_code put(std::string const& rel, std::string_view data) const;

private:
    std::string root_;
};

/// SAVE records kept in memory and written through to <root>/persist/ (one small JSON
/// file per appId/persistentId), so a restarted reflector still knows them.
///
/// @par Thread safety
/// lookup() and record() are called from every worker thread: the map is under `mu_`
/// and the file writes go to `post` (the disk thread), never blocking the caller.
class file_persistence final : public persistence_index {
public:
    /// Runs a blocking task somewhere else (the server's disk thread); default: inline.
    using post_fn = std::function<void(std::function<void()>)>;
    explicit file_persistence(file_store const& store, post_fn post = {});
    std::optional<std::string> lookup(std::string const& app_id, std::string const& persistent_id) override;
    void record(std::string const& app_id, std::string const& persistent_id, std::string const& url) override;

private:
    file_store const& store_;
    post_fn post_;
    std::mutex mu_;                            // guards urls_ (any worker thread)
    std::map<std::string, std::string> urls_;  // JSON ["appId","persistentId"] -> url
};

/// Atomically writes `data` to `path` (temp + fsync + rename). Creates parent dirs.
std::error_code
atomic_write(std::string const& path, std::string_view data);

}  // namespace lockstep::store
