#include "auth/access.hpp"

#include "auth/token.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace lockstep::auth {
namespace {

enum class scope { open, user, admin };

bool
starts_with(std::string_view s, std::string_view p) noexcept
{
    return s.substr(0, p.size()) == p;
}

scope
scope_of(request_view const& r, std::string_view path, bool metrics_open)
{
    if (r.upgrade)
        return scope::user;
    if (r.method == "OPTIONS")
        return scope::open;  // CORS preflights carry no credentials
    if (starts_with(path, "/files/"))
        return scope::user;
    if (path == "/metrics")
        return metrics_open ? scope::open : scope::admin;
    // The admin page itself is static HTML with no data; it asks for the token when its
    // API answers 401 and sends it as a Bearer header (a browser cannot on navigation).
    if (path == "/sessions" || starts_with(path, "/admin/api/") || path == "/v1/reflectors" || path == "/v1/rooms" ||
        starts_with(path, "/v1/reflectors/"))
        return scope::admin;
    if (starts_with(path, "/v1/"))
        return scope::user;
    return scope::open;
}

decision
refuse(int status, std::string why)
{
    decision d;
    d.status = status;
    d.reason = std::move(why);
    return d;
}

}  // namespace

void
join_names(std::string_view join_args, std::string& app_id, std::string& name)
{
    app_id.clear();
    name.clear();
    auto j = nlohmann::json::parse(join_args, nullptr, false);
    if (!j.is_object())
        return;
    if (auto a = j.find("appId"); a != j.end() && a->is_string())
        app_id = a->get<std::string>();
    if (auto n = j.find("name"); n != j.end() && n->is_string())
        name = n->get<std::string>();
}

gate::gate(settings s) : s_(std::move(s))
{
    if (!s_.secret.empty() && !s_.public_key_file.empty())
        throw std::runtime_error("use either --auth-secret or --auth-public-key, not both");
    if (!s_.secret.empty()) {
        verifier_ = verifier::from_secret(s_.secret);
    } else if (!s_.public_key_file.empty()) {
        std::ifstream in(s_.public_key_file, std::ios::binary);
        if (!in)
            throw std::runtime_error("cannot read --auth-public-key file " + s_.public_key_file);
        std::stringstream ss;
        ss << in.rdbuf();
        verifier_ = verifier::from_public_key_pem(ss.str());
    }
}

bool
gate::origin_allowed(std::string_view origin) const
{
    if (s_.allowed_origins.empty())
        return true;
    for (auto const& o : s_.allowed_origins)
        if (o == "*" || o == origin)
            return true;
    return false;
}

decision
gate::check(request_view const& r, std::int64_t now_s, std::function<bool(std::string const&)> const& seat_live) const
{
    if (!r.origin.empty() && !origin_allowed(r.origin))
        return refuse(403, "origin not allowed");

    decision d;
    d.target.assign(r.target);
    auto bearer = bearer_token(r.authorization);
    d.admin = admin_auth() && !bearer.empty() && equal_secret(bearer, s_.admin_token);

    // Token pairs in HTTP paths (`/files/t/<jwt>/<blob>`, and `/t/<jwt>/<route>` for a
    // base URL such as the SDK's router URL) are removed whether or not tokens are
    // required, so a client configured with a token URL works against any reflector.
    std::string path_token;
    if (!r.upgrade) {
        std::string_view path = r.target.substr(0, r.target.find_first_of("?#"));
        std::string stripped;
        if (starts_with(path, "/t/"))
            path_token = files_path_token("/files" + std::string(path), stripped);
        if (!path_token.empty())
            stripped.erase(0, 6);  // "/files"
        else if (starts_with(path, "/files/t/"))
            path_token = files_path_token(path, stripped);
        if (!path_token.empty())
            d.target = stripped + std::string(r.target.substr(path.size()));
    }
    std::string_view path = std::string_view(d.target).substr(0, d.target.find_first_of("?#"));
    if (r.upgrade)
        path_token = ws_path_token(path);

    switch (scope_of(r, path, s_.metrics_open)) {
    case scope::open:
        return d;
    case scope::admin:
        if (!admin_auth()) {
            if (user_auth())
                return refuse(403, "admin endpoints are closed: start the reflector with --admin-token");
            return d;
        }
        if (d.admin)
            return d;
        return bearer.empty() ? refuse(401, "admin token required (Authorization: Bearer)")
                              : refuse(403, "not the admin token");
    case scope::user:
        break;
    }
    if (!user_auth() || d.admin)
        return d;
    std::string token = !path_token.empty() ? path_token : (!bearer.empty() ? bearer : query_token(r.target));
    bool files = !r.upgrade && starts_with(path, "/files/");
    if (token.empty()) {
        if (r.upgrade && seat_live && seat_live(std::string(path))) {
            d.via_seat = true;
            return d;
        }
        return refuse(401, "token required");
    }
    // A blob URL in a SYNC carries the token of the client that stored it, and a late
    // joiner may read it long after that token expired: reads through a path token
    // accept an expired (still correctly signed) token.
    bool read_grace = files && !path_token.empty() && (r.method == "GET" || r.method == "HEAD");
    std::string why;
    auto g = verifier_->verify(token, now_s, why, read_grace);
    if (!g)
        return refuse(401, "invalid token: " + why);
    std::string_view want = r.upgrade ? "reflector" : (files ? "files" : "api");
    if (!g->scope.empty() && g->scope != want)
        return refuse(403, "token scope is " + g->scope + ", not " + std::string(want));
    if (files && g->app) {
        // Blobs of an app live under /files/apps/<appId>/ (the client's layout).
        auto rest = path.substr(std::string_view("/files/").size());
        bool ok = starts_with(rest, "apps/");
        if (ok) {
            rest.remove_prefix(5);
            ok = pattern_match(*g->app, rest.substr(0, rest.find('/')));
        }
        if (!ok)
            return refuse(403, "token is not for this app's files");
    }
    d.user = std::move(*g);
    return d;
}

int
gate::check_seat_body(decision const& d, std::string_view path, std::string_view body, std::string& why) const
{
    if (d.admin || !d.user || d.user->user.empty() || !starts_with(path, "/v1/rooms/"))
        return 0;
    if (!(path.size() > 5 && (path.substr(path.size() - 5) == "/join" || path.substr(path.size() - 6) == "/leave")))
        return 0;
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object())
        return 0;  // the route answers 400
    auto u = j.find("user");
    if (u == j.end() || !u->is_string())
        return 0;
    if (u->get_ref<std::string const&>() != d.user->user) {
        why = "token is for another user";
        return 403;
    }
    return 0;
}

}  // namespace lockstep::auth
