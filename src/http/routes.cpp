#include "http/routes.hpp"

#include "common/text.hpp"
#include "protocol/url_path.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>

namespace lockstep::http_routes {
namespace {

void
common_headers(http::fields& f)
{
    f.set(http::field::server, "lockstep-reflector");
    // Browser apps served from another origin upload snapshots here.
    f.set(http::field::access_control_allow_origin, "*");
}

std::string_view
path_of(request const& req)
{
    std::string_view t(req.target().data(), req.target().size());
    return t.substr(0, t.find_first_of("?#"));
}

http::message_generator
method_not_allowed(request const& req, char const* allow)
{
    http::response<http::string_body> res{http::status::method_not_allowed, req.version()};
    common_headers(res);
    res.set(http::field::allow, allow);
    res.set(http::field::content_type, "application/json");
    res.body() = safe_dump(nlohmann::json{{"error", "method not allowed"}});
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    return res;
}

void
files(service& svc, request&& req, std::string_view rest, reply_fn reply)
{
    std::string why;
    auto rel = store::blob_path(rest, why);
    if (!rel) {
        spdlog::info("files: rejected path '{}': {}", std::string(rest.substr(0, 200)), why);
        reply(json_error(req, http::status::bad_request, "bad path: " + why));
        return;
    }
    if (auto depth = static_cast<std::size_t>(std::count(rel->begin(), rel->end(), '/')) + 1;
        depth > svc.max_files_depth()) {
        svc.limits().refused(limits::reason::files_depth);
        spdlog::info("files: path of {} segments over --max-files-depth {}: 400", depth, svc.max_files_depth());
        reply(json_error(req, http::status::bad_request,
                         "bad path: more than " + std::to_string(svc.max_files_depth()) + " segments"));
        return;
    }
    if (req.method() == http::verb::put) {
        auto r = std::make_shared<request>(std::move(req));
        svc.run_blocking([&svc, r, rel = std::move(*rel), reply = std::move(reply)]() mutable {
            // One blocking thread writes blobs: the check and the write do not race.
            std::error_code sec;
            auto old_size = std::filesystem::file_size(svc.blobs().file_of(rel), sec);
            if (sec)
                old_size = 0;
            if (!svc.limits().disk_fits(old_size, r->body().size())) {
                spdlog::warn("files: store full (--max-disk-bytes {}): refusing {} bytes with 507",
                             svc.max_disk_bytes(), r->body().size());
                reply(json_error(*r, http::status::insufficient_storage, "blob store full"));
                return;
            }
            auto ec = svc.blobs().put(rel, r->body());
            if (!ec)
                svc.limits().disk_written(old_size, r->body().size());
            if (ec) {
                spdlog::error("files: cannot store {}: {}", rel, ec.message());
                reply(json_error(*r, http::status::internal_server_error, "cannot store blob"));
                return;
            }
            spdlog::debug("files: stored {} ({} bytes)", rel, r->body().size());
            // In a cluster the blob is acknowledged once every reflector can read it:
            // the client names it in SNAP only after this answer.
            auto bytes = r->body();
            svc.shared_blob_put(rel, std::move(bytes), [r, reply = std::move(reply), rel](bool ok) mutable {
                if (!ok) {
                    spdlog::error("files: cannot store {} in the cluster's shared store: 503", rel);
                    reply(json_error(*r, http::status::service_unavailable, "cannot store blob in the cluster"));
                    return;
                }
                reply(text_response(*r, http::status::created, ""));
            });
        });
        return;
    }
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
        reply(method_not_allowed(req, "GET, HEAD, PUT, OPTIONS"));
        return;
    }
    auto path = svc.blobs().file_of(*rel);
    std::error_code fec;
    if (!std::filesystem::is_regular_file(path, fec)) {
        // Uploaded through another reflector of the cluster (which may be gone)?
        auto r = std::make_shared<request>(std::move(req));
        svc.shared_blob_get(*rel, [r, reply = std::move(reply)](std::optional<std::string> bytes) mutable {
            if (!bytes) {
                reply(json_error(*r, http::status::not_found, "no such blob"));
                return;
            }
            http::response<http::string_body> res{http::status::ok, r->version()};
            common_headers(res);
            res.set(http::field::content_type, "application/octet-stream");
            res.keep_alive(r->keep_alive());
            if (r->method() == http::verb::head) {
                res.content_length(bytes->size());
                reply(http::response<http::empty_body>(res.base()));
                return;
            }
            res.body() = std::move(*bytes);
            res.prepare_payload();
            reply(std::move(res));
        });
        return;
    }
    http::file_body::value_type body;
    boost::system::error_code ec;
    body.open(path.c_str(), boost::beast::file_mode::scan, ec);
    if (ec) {
        reply(json_error(req, ec == boost::beast::errc::no_such_file_or_directory ? http::status::not_found
                                                                            : http::status::internal_server_error,
                         "cannot read blob"));
        return;
    }
    auto size = body.size();
    if (req.method() == http::verb::head) {
        http::response<http::empty_body> res{http::status::ok, req.version()};
        common_headers(res);
        res.set(http::field::content_type, "application/octet-stream");
        res.content_length(size);
        res.keep_alive(req.keep_alive());
        reply(std::move(res));
        return;
    }
    http::response<http::file_body> res{std::piecewise_construct, std::make_tuple(std::move(body)),
                                        std::make_tuple(http::status::ok, req.version())};
    common_headers(res);
    res.set(http::field::content_type, "application/octet-stream");
    res.content_length(size);
    res.keep_alive(req.keep_alive());
    reply(std::move(res));
}

// ---- static pages (web/, --web-root) ----

std::string_view
content_type_of(std::filesystem::path const& file)
{
    static constexpr std::pair<std::string_view, std::string_view> types[] = {
        {".html", "text/html; charset=utf-8"},  {".htm", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"}, {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},    {".json", "application/json"},
        {".map", "application/json"},           {".txt", "text/plain; charset=utf-8"},
        {".svg", "image/svg+xml"},              {".png", "image/png"},
        {".jpg", "image/jpeg"},                 {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},                  {".webp", "image/webp"},
        {".ico", "image/x-icon"},               {".wasm", "application/wasm"},
        {".woff2", "font/woff2"},               {".woff", "font/woff"},
    };
    auto ext = file.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    for (auto const& [e, t] : types)
        if (e == ext)
            return t;
    return "application/octet-stream";
}

/// Serves `rel` (the URL path after the prefix, still percent-encoded) from `root`:
/// GET/HEAD only; no segment may be empty, "." or "..", start with '.', or hold '/', '\'
/// or NUL once decoded, and the file must resolve inside `root` (no symlink escapes). A
/// directory serves its index.html ("/dir" is redirected to "/dir/" first).
void
static_file(std::filesystem::path const& root, request const& req, std::string_view url_path, std::string_view rel,
            reply_fn& reply)
{
    if (req.method() != http::verb::get && req.method() != http::verb::head)
        return reply(method_not_allowed(req, "GET, HEAD"));
    if (root.empty())
        return reply(json_error(req, http::status::not_found, "no web root"));
    std::vector<std::string> seg;
    if (!url_path::split_segments(rel, seg))
        return reply(json_error(req, http::status::bad_request, "bad percent-encoding in path"));
    std::filesystem::path file = root;
    for (auto const& s : seg) {
        if (s.empty() || s.front() == '.' || !valid_utf8(s) || s.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos)
            return reply(json_error(req, http::status::bad_request, "bad path"));
        file /= s;
    }
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec)) {
        if (!url_path.empty() && url_path.back() != '/') {
            http::response<http::empty_body> res{http::status::moved_permanently, req.version()};
            common_headers(res);
            res.set(http::field::location, std::string(url_path) + "/");
            res.content_length(0);
            res.keep_alive(req.keep_alive());
            return reply(std::move(res));
        }
        file /= "index.html";
    }
    std::error_code root_ec;
    auto real = std::filesystem::canonical(file, ec);
    auto real_root = std::filesystem::canonical(root, root_ec);
    if (ec || root_ec || !std::filesystem::is_regular_file(real, ec))
        return reply(json_error(req, http::status::not_found, "not found"));
    auto [r_end, f_it] = std::mismatch(real_root.begin(), real_root.end(), real.begin(), real.end());
    if (r_end != real_root.end())
        return reply(json_error(req, http::status::not_found, "not found"));
    http::file_body::value_type body;
    boost::system::error_code bec;
    body.open(real.c_str(), boost::beast::file_mode::scan, bec);
    if (bec)
        return reply(json_error(req, http::status::not_found, "not found"));
    auto size = body.size();
    auto type = content_type_of(real);
    if (req.method() == http::verb::head) {
        http::response<http::empty_body> res{http::status::ok, req.version()};
        common_headers(res);
        res.set(http::field::content_type, type);
        res.set(http::field::cache_control, "no-cache");
        res.content_length(size);
        res.keep_alive(req.keep_alive());
        return reply(std::move(res));
    }
    http::response<http::file_body> res{std::piecewise_construct, std::make_tuple(std::move(body)),
                                        std::make_tuple(http::status::ok, req.version())};
    common_headers(res);
    res.set(http::field::content_type, type);
    res.set(http::field::cache_control, "no-cache");
    res.set("X-Content-Type-Options", "nosniff");
    res.content_length(size);
    res.keep_alive(req.keep_alive());
    reply(std::move(res));
}

// ---- router API (docs/router.md) ----

http::message_generator
field_error(request const& req, int status, std::string const& message, std::string const& field)
{
    return text_response(req, static_cast<http::status>(status),
                         safe_dump(nlohmann::json{{"error", message}, {"field", field}}), "application/json");
}

/// 503 while the router's state store (Redis, in cluster mode) cannot be reached.
http::message_generator
router_unavailable(request const& req, std::string const& field)
{
    return field_error(req, 503, router::state_unavailable, field);
}

/// A name from the URL path: non-empty, at most 128 bytes of UTF-8, no control characters.
bool
valid_name(std::string const& s)
{
    if (s.empty() || s.size() > 128 || !valid_utf8(s))
        return false;
    return std::none_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; });
}

/// Parses the JSON body as an object; on failure answers 400 and returns nullopt.
std::optional<nlohmann::json>
body_object(request const& req, reply_fn& reply)
{
    auto j = nlohmann::json::parse(req.body().empty() ? std::string("{}") : req.body(), nullptr, false);
    if (!j.is_object()) {
        reply(field_error(req, 400, "body must be a JSON object", "body"));
        return std::nullopt;
    }
    return j;
}

/// Optional string field; answers 400 if present but not a string.
bool
string_field(nlohmann::json const& j, char const* name, std::string& out, bool required, std::size_t max,
             request const& req, reply_fn& reply)
{
    auto it = j.find(name);
    if (it == j.end() || it->is_null()) {
        if (required) {
            reply(field_error(req, 400, std::string("missing ") + name, name));
            return false;
        }
        return true;
    }
    if (!it->is_string() || it->get_ref<std::string const&>().size() > max ||
        (required && it->get_ref<std::string const&>().empty())) {
        reply(field_error(req, 400, std::string(name) + " must be a non-empty string of at most " + std::to_string(max) + " bytes", name));
        return false;
    }
    out = it->get<std::string>();
    return true;
}

/// The /v1 router API. Runs on the directory thread (`rt` may block).
void
router_api(service& svc, router::directory& rt, request&& req, std::string_view path, reply_fn reply)
{
    // Segments after /v1/
    std::vector<std::string> seg;
    if (!url_path::split_segments(path.substr(4), seg))
        return reply(field_error(req, 400, "bad percent-encoding in path", "path"));
    for (auto const& s : seg)
        if (!valid_utf8(s))
            return reply(field_error(req, 400, "path is not UTF-8 after percent-decoding", "path"));
    auto method = req.method();
    if (seg.size() == 1 && seg[0] == "reflectors") {
        if (method != http::verb::get && method != http::verb::head)
            return reply(method_not_allowed(req, "GET, HEAD"));
        auto list = rt.reflectors();
        if (!rt.available())
            return reply(router_unavailable(req, "path"));
        return reply(text_response(req, http::status::ok, safe_dump(list), "application/json"));
    }
    if (seg.size() == 1 && seg[0] == "rooms") {
        // Every room (the first 1,000 by name) with its shards: for operators (admin scope).
        if (method != http::verb::get && method != http::verb::head)
            return reply(method_not_allowed(req, "GET, HEAD"));
        auto list = rt.rooms(1000);
        if (!rt.available())
            return reply(router_unavailable(req, "path"));
        return reply(text_response(req, http::status::ok, safe_dump(list), "application/json"));
    }
    if (seg.size() >= 2 && seg[0] == "rooms") {
        auto const& room = seg[1];
        // '~' names overflow shards and '/' child sessions: not allowed in room names.
        if (!valid_name(room) || room.find_first_of("~/") != std::string::npos)
            return reply(field_error(req, 400, "room name must be 1-128 bytes of UTF-8 without control characters, '~' or '/'",
                                     "room"));
        if (seg.size() == 2) {
            if (method != http::verb::get && method != http::verb::head)
                return reply(method_not_allowed(req, "GET, HEAD"));
            auto info = rt.room_info(room);
            if (!info && !rt.available())
                return reply(router_unavailable(req, "room"));
            if (!info)
                return reply(field_error(req, 404, "unknown room", "room"));
            return reply(text_response(req, http::status::ok, safe_dump(*info), "application/json"));
        }
        if (seg.size() == 3 && (seg[2] == "join" || seg[2] == "leave")) {
            if (method != http::verb::post)
                return reply(method_not_allowed(req, "POST"));
            auto body = body_object(req, reply);
            if (!body)
                return;
            std::string user, region;
            if (!string_field(*body, "user", user, true, 256, req, reply))
                return;
            if (seg[2] == "leave") {
                bool had = rt.leave(room, user);
                if (!had && !rt.available())
                    return reply(router_unavailable(req, "room"));
                return reply(text_response(req, http::status::ok,
                                           safe_dump(nlohmann::json{{"room", room}, {"user", user}, {"freed", had}}),
                                           "application/json"));
            }
            if (!string_field(*body, "region", region, false, 64, req, reply))
                return;
            if (svc.draining())
                return reply(field_error(req, 503, "this reflector is draining", "region"));
            router::api_error err;
            auto seat = rt.join(room, user, region, err);
            if (!seat)
                return reply(field_error(req, err.status, err.message, err.field));
            return reply(text_response(req, http::status::ok, safe_dump(seat->to_json()), "application/json"));
        }
    }
    if (seg.size() == 3 && seg[0] == "sessions" && seg[2] == "children") {
        auto const& parent = seg[1];
        if (!valid_name(parent))
            return reply(field_error(req, 400, "session name must be 1-128 bytes of UTF-8 without control characters", "name"));
        if (method == http::verb::get || method == http::verb::head) {
            auto kids = rt.children(parent);
            if (!rt.available())
                return reply(router_unavailable(req, "name"));
            return reply(text_response(req, http::status::ok,
                                       safe_dump(nlohmann::json{{"parent", parent}, {"children", kids}}), "application/json"));
        }
        if (method != http::verb::post)
            return reply(method_not_allowed(req, "GET, HEAD, POST"));
        auto body = body_object(req, reply);
        if (!body)
            return;
        std::string purpose, region;
        if (!string_field(*body, "purpose", purpose, true, 64, req, reply))
            return;
        if (purpose.find('/') != std::string::npos || !valid_name(purpose))
            return reply(field_error(req, 400, "purpose must not contain '/' or control characters", "purpose"));
        if (!string_field(*body, "region", region, false, 64, req, reply))
            return;
        router::api_error err;
        auto child = rt.create_child(parent, purpose, region, err);
        if (!child)
            return reply(field_error(req, err.status, err.message, err.field));
        return reply(text_response(req, http::status::created, safe_dump(*child), "application/json"));
    }
    reply(json_error(req, http::status::not_found, "not found"));
}

/// POST /admin/api/drain and POST /admin/api/sessions/{id}/close.
void
admin_api(service& svc, request&& req, std::string_view rest, reply_fn reply)
{
    std::vector<std::string> seg;
    if (!url_path::split_segments(rest, seg))
        return reply(json_error(req, http::status::bad_request, "bad percent-encoding in path"));
    bool drain = seg.size() == 1 && seg[0] == "drain";
    bool close = seg.size() == 3 && seg[0] == "sessions" && seg[2] == "close";
    if (!drain && !close)
        return reply(json_error(req, http::status::not_found, "not found"));
    if (req.method() != http::verb::post)
        return reply(method_not_allowed(req, "POST"));
    if (drain) {
        spdlog::warn("admin: drain requested over HTTP");
        svc.start_drain();
        return reply(text_response(req, http::status::accepted, safe_dump(nlohmann::json{{"draining", true}}),
                                   "application/json"));
    }
    auto const& id = seg[1];
    if (!valid_name(id))
        return reply(field_error(req, 400, "session id must be 1-128 bytes of UTF-8 without control characters", "id"));
    auto r = std::make_shared<request>(std::move(req));
    svc.close_session_clients(id, [r, id, reply = std::move(reply)](std::size_t n) mutable {
        reply(text_response(*r, http::status::ok, safe_dump(nlohmann::json{{"session", id}, {"closed", n}}),
                            "application/json"));
    });
}

}  // namespace

http::message_generator
text_response(request const& req, http::status status, std::string body, std::string_view content_type)
{
    if (req.method() == http::verb::head) {
        http::response<http::empty_body> res{status, req.version()};
        common_headers(res);
        res.set(http::field::content_type, content_type);
        res.content_length(body.size());
        res.keep_alive(req.keep_alive());
        return res;
    }
    http::response<http::string_body> res{status, req.version()};
    common_headers(res);
    res.set(http::field::content_type, content_type);
    res.body() = std::move(body);
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    return res;
}

http::message_generator
json_error(request const& req, http::status status, std::string const& message)
{
    return text_response(req, status, safe_dump(nlohmann::json{{"error", message}}), "application/json");
}

void
handle(service& svc, request&& req, reply_fn reply)
{
    svc.count_request();
    auto path = path_of(req);
    auto method = req.method();

    if (method == http::verb::options) {
        http::response<http::empty_body> res{http::status::no_content, req.version()};
        common_headers(res);
        res.set(http::field::access_control_allow_methods, "GET, HEAD, PUT, POST, OPTIONS");
        res.set(http::field::access_control_allow_headers, "Content-Type, Authorization");
        res.set(http::field::access_control_max_age, "86400");
        res.keep_alive(req.keep_alive());
        reply(std::move(res));
        return;
    }
    if (path.rfind("/files/", 0) == 0) {
        auto rest = path.substr(7);
        std::string copy(rest);
        files(svc, std::move(req), copy, std::move(reply));
        return;
    }
    bool get = method == http::verb::get || method == http::verb::head;
    if (path == "/health/live") {
        if (!get)
            return reply(method_not_allowed(req, "GET, HEAD"));
        return reply(text_response(req, http::status::ok, "ok\n"));
    }
    if (path == "/health/ready") {
        if (!get)
            return reply(method_not_allowed(req, "GET, HEAD"));
        bool draining = svc.draining();
        return reply(text_response(req, draining ? http::status::service_unavailable : http::status::ok,
                                   draining ? "draining\n" : "ready\n"));
    }
    if (path == "/health/redis") {
        if (!get)
            return reply(method_not_allowed(req, "GET, HEAD"));
        auto up = svc.redis_reachable();
        if (!up)
            return reply(text_response(req, http::status::not_found, "not a cluster (no --redis)\n"));
        return reply(text_response(req, *up ? http::status::ok : http::status::service_unavailable,
                                   *up ? "redis reachable\n" : "redis unreachable\n"));
    }
    if (path == "/metrics") {
        if (!get)
            return reply(method_not_allowed(req, "GET, HEAD"));
        return reply(
            text_response(req, http::status::ok, svc.metrics_text(), "text/plain; version=0.0.4; charset=utf-8"));
    }
    if (path == "/sessions") {
        if (!get)
            return reply(method_not_allowed(req, "GET, HEAD"));
        auto r = std::make_shared<request>(std::move(req));
        svc.list_sessions([r, reply = std::move(reply)](nlohmann::json list) mutable {
            reply(text_response(*r, http::status::ok, safe_dump(list), "application/json"));
        });
        return;
    }
    if (path.rfind("/v1/", 0) == 0) {
        svc.with_directory([&svc, r = std::move(req), p = std::string(path),
                            reply = std::move(reply)](router::directory& rt) mutable {
            // On the directory thread: the HTTP connection's own catch cannot see this.
            auto replied = std::make_shared<bool>(false);
            request head;
            head.version(r.version());
            head.keep_alive(false);
            try {
                router_api(svc, rt, std::move(r), p, [&reply, replied](http::message_generator m) mutable {
                    *replied = true;
                    reply(std::move(m));
                });
            } catch (std::exception const& e) {
                spdlog::error("http: {} failed: {}", p.substr(0, 200), e.what());
                if (!*replied)
                    reply(json_error(head, http::status::internal_server_error, "internal error"));
            }
        });
        return;
    }
    if (path == "/healthz") {
        return reply(text_response(req, http::status::ok,
                                   "lockstep-reflector: a Croquet/Multisynq-compatible reflector\n"));
    }
    if (path.rfind("/admin/api/", 0) == 0) {
        std::string rest(path.substr(11));
        return admin_api(svc, std::move(req), rest, std::move(reply));
    }
    // The admin page comes from the built-in pages even when --web-root serves an app.
    if (path == "/admin" || path.rfind("/admin/", 0) == 0)
        return static_file(svc.builtin_web_root().empty() ? std::filesystem::path() : svc.builtin_web_root() / "admin",
                           req, path, path.substr(std::min<std::size_t>(7, path.size())), reply);
    if (path == "/" && svc.web_root().empty())
        return reply(text_response(req, http::status::ok,
                                   "lockstep-reflector: a Croquet/Multisynq-compatible reflector (no web root)\n"));
    static_file(svc.web_root(), req, path, path.substr(1), reply);
}

}  // namespace lockstep::http_routes
