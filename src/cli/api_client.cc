#include "cli/api_client.h"

#include <httplib.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

namespace ballast::cli {

namespace {

using Json = nlohmann::ordered_json;

// Why a connection to host:port fails, in the system's words ("Connection refused"). httplib
// only says that it failed, so this tries once more itself, blocking, with a short timeout.
std::string connect_failure(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return std::string("cannot resolve ") + host + ": " + ::gai_strerror(rc);
  }
  std::string reason = "cannot connect";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    timeval timeout{3, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      reason = "connection failed";  // it works now: a transient failure
      ::close(fd);
      break;
    }
    reason =
        errno == EINPROGRESS || errno == EAGAIN ? "connection timed out" : std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return reason;
}

// Whether the error happened after a connection was made (TLS, or the exchange itself).
bool reaches(httplib::Error error) {
  return error != httplib::Error::Connection && error != httplib::Error::ConnectionTimeout;
}

// Why a request got no answer, in words.
std::string failure_reason(httplib::Error error, const std::string& host, const std::string& port) {
  switch (error) {
    case httplib::Error::Connection:
      return connect_failure(host, port);
    case httplib::Error::ConnectionTimeout:
      return "connection timed out";
    case httplib::Error::Read:
      return "no answer (connection closed or read timed out)";
    case httplib::Error::Write:
      return "cannot send the request (connection closed)";
    case httplib::Error::SSLConnection:
      return "TLS handshake failed";
    case httplib::Error::SSLLoadingCerts:
      return "cannot load the CA certificates";
    case httplib::Error::SSLServerVerification:
      return "TLS certificate not trusted (use --ca-file, or --insecure)";
    default:
      return httplib::to_string(error);
  }
}

std::string reason_phrase(int status) {
  switch (status) {
    case 400:
      return "bad request";
    case 401:
      return "unauthorized";
    case 403:
      return "forbidden";
    case 404:
      return "not found";
    case 405:
      return "method not allowed";
    case 409:
      return "conflict";
    case 413:
      return "body too large";
    case 422:
      return "invalid";
    case 500:
      return "internal server error";
    case 502:
      return "bad gateway";
    case 503:
      return "service unavailable";
    default:
      return "error";
  }
}

std::string first_line(const std::string& text, size_t limit = 200) {
  std::string line = text.substr(0, text.find_first_of("\r\n"));
  if (line.size() > limit) line = line.substr(0, limit) + "...";
  return line;
}

// One validation problem as text: "line 12: pools[0].servers[1].address: expected host:port".
std::string problem_text(const Json& item) {
  if (item.is_string()) return item.get<std::string>();
  if (!item.is_object()) return "";
  std::string text;
  if (item.contains("line") && item["line"].is_number()) {
    text += "line " + std::to_string(item["line"].get<int64_t>()) + ": ";
  }
  if (item.contains("path") && item["path"].is_string() &&
      !item["path"].get<std::string>().empty()) {
    text += item["path"].get<std::string>() + ": ";
  }
  if (item.contains("message") && item["message"].is_string()) {
    text += item["message"].get<std::string>();
  }
  return text;
}

// The error line(s) for a non-2xx answer: "409 version mismatch: current is 7"; a validation
// error gives one line per problem: "422 invalid pools/web: servers[1].address: expected
// host:port".
std::string error_text(int status, const std::string& body, bool sent_token) {
  const std::string code = std::to_string(status);
  Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object() || !parsed.contains("error") || !parsed["error"].is_string()) {
    const std::string text = first_line(body);
    return code + " " + reason_phrase(status) + (text.empty() ? "" : ": " + text);
  }
  std::string error = parsed["error"].get<std::string>();
  std::vector<std::string> problems;
  if (parsed.contains("errors") && parsed["errors"].is_array()) {
    for (const Json& item : parsed["errors"]) {
      if (std::string text = problem_text(item); !text.empty()) problems.push_back(text);
    }
  }
  if (problems.empty()) {
    if (status == 401 && !sent_token)
      error += " (no token: use --token-file or BALLAST_TOKEN_FILE)";
    return code + " " + error;
  }
  // The summary may already quote the first problem ("invalid document: line 5: ... (and 3
  // more)"): keep only what comes before it, so each line names one problem once.
  if (size_t at = error.find(problems.front()); at != std::string::npos) {
    error = error.substr(0, at);
    while (!error.empty() && (error.back() == ' ' || error.back() == ':')) error.pop_back();
  }
  std::string lines;
  for (const std::string& problem : problems) {
    lines += (lines.empty() ? "" : "\n") + code + " " + error + ": " + problem;
  }
  return lines;
}

}  // namespace

ApiClient::ApiClient(const ApiOptions& options)
    : url_(options.url), has_token_(!options.token.empty()) {
  const size_t scheme_end = url_.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : url_.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") {
    throw CtlError("invalid controller URL '" + url_ + "': expected http(s)://host[:port]",
                   CtlError::kUsage);
  }
  const size_t path_start = url_.find('/', scheme_end + 3);
  std::string origin = url_.substr(0, path_start);
  if (path_start != std::string::npos) {
    prefix_ = url_.substr(path_start);
    while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
  }
  if (origin.size() == scheme_end + 3) {
    throw CtlError("invalid controller URL '" + url_ + "': no host", CtlError::kUsage);
  }
  const std::string authority = origin.substr(scheme_end + 3);
  const size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']', colon) == std::string::npos) {
    host_ = authority.substr(0, colon);
    port_ = authority.substr(colon + 1);
  } else {
    host_ = authority;
    port_ = scheme == "https" ? "443" : "80";
  }
  if (host_.size() > 2 && host_.front() == '[' && host_.back() == ']')
    host_ = host_.substr(1, host_.size() - 2);
  if (port_.empty() || port_.find_first_not_of("0123456789") != std::string::npos) {
    throw CtlError("invalid controller URL '" + url_ + "': bad port", CtlError::kUsage);
  }
  http_ = std::make_unique<httplib::Client>(origin);
  if (!http_->is_valid()) {
    throw CtlError("invalid controller URL '" + url_ + "'", CtlError::kUsage);
  }
  http_->set_connection_timeout(5, 0);
  http_->set_read_timeout(60, 0);  // an apply may take a while; the long poll is not ours
  http_->set_write_timeout(30, 0);
  http_->set_keep_alive(true);
  if (has_token_) http_->set_bearer_token_auth(options.token.c_str());
  if (scheme == "https") {
    if (!options.ca_file.empty()) {
      if (::access(options.ca_file.c_str(), R_OK) != 0) {
        throw CtlError("cannot read CA file " + options.ca_file + ": " + std::strerror(errno),
                       CtlError::kFailed);
      }
      http_->set_ca_cert_path(options.ca_file.c_str());
    }
    http_->enable_server_certificate_verification(!options.insecure);
  }
}

ApiClient::~ApiClient() = default;

Json ApiClient::answer(const httplib::Result& result) const {
  if (!result) {
    throw CtlError("controller " + url_ + (reaches(result.error()) ? ": " : " unreachable: ") +
                       failure_reason(result.error(), host_, port_),
                   CtlError::kFailed);
  }
  const httplib::Response& response = *result;
  if (response.status < 200 || response.status > 299) {
    throw CtlError(error_text(response.status, response.body, has_token_), CtlError::kFailed);
  }
  if (response.status == 204 || response.body.empty()) return nullptr;
  Json parsed = Json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    throw CtlError("controller answered " + std::to_string(response.status) +
                       " with a body that is not JSON: " + first_line(response.body),
                   CtlError::kFailed);
  }
  return parsed;
}

namespace {

httplib::Headers base_headers() {
  return {{"Accept", "application/json"},
          {"User-Agent", std::string("ballast-ctl/") + BALLAST_VERSION}};
}

}  // namespace

Json ApiClient::get(const std::string& path) {
  httplib::Result result = http_->Get((prefix_ + "/api/v1" + path).c_str(), base_headers());
  return answer(result);
}

Json ApiClient::post(const std::string& path, const std::string& body,
                     const std::string& content_type) {
  httplib::Result result =
      http_->Post((prefix_ + "/api/v1" + path).c_str(), base_headers(), body, content_type.c_str());
  return answer(result);
}

Json ApiClient::remove(const std::string& path, const std::string& if_match) {
  httplib::Headers headers = base_headers();
  if (!if_match.empty()) headers.emplace("If-Match", "\"" + if_match + "\"");
  httplib::Result result = http_->Delete((prefix_ + "/api/v1" + path).c_str(), headers);
  return answer(result);
}

std::string url_encode(const std::string& text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace ballast::cli
