// Plain-HTTP routes on the reflector port: health, metrics, sessions, files.
#pragma once

#include "server/internal.hpp"
#include "server/unique_function.hpp"

namespace lockstep::http_routes {

using request = http::request<http::string_body>;
using reply_fn = unique_function<void(http::message_generator)>;

/// Handles one request. `reply` may be called later and from another thread; the
/// caller re-dispatches it to the connection's executor.
void
handle(server_state& st, worker& w, request&& req, reply_fn reply);

/// A small response with a body and a content type.
http::message_generator
text_response(request const& req, http::status status, std::string body,
              std::string_view content_type = "text/plain; charset=utf-8");

/// `{"error": message}` with a status.
http::message_generator
json_error(request const& req, http::status status, std::string const& message);

}  // namespace lockstep::http_routes
