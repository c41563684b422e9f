// Plain-HTTP routes on the reflector port: health, metrics, sessions, files, the router
// API. They reach the server only through http_routes::service (http/service.hpp).
#pragma once

#include "common/unique_function.hpp"
#include "http/service.hpp"

#include <boost/beast/http.hpp>

#include <string>
#include <string_view>

namespace lockstep::http_routes {

namespace http = boost::beast::http;

using request = http::request<http::string_body>;
using reply_fn = unique_function<void(http::message_generator)>;

/// Handles one request. `reply` may be called later and from another thread (the
/// directory thread, the disk pool, another worker); the caller gets back onto its
/// own thread.
void
handle(service& svc, request&& req, reply_fn reply);

/// A small response with a body and a content type.
http::message_generator
text_response(request const& req, http::status status, std::string body,
              std::string_view content_type = "text/plain; charset=utf-8");

/// `{"error": message}` with a status.
http::message_generator
json_error(request const& req, http::status status, std::string const& message);

}  // namespace lockstep::http_routes
