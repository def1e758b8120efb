// The controller's REST API (docs/api.md) as `ballast ctl` uses it: one request at a time, every
// failure turned into a CtlError whose text is what the user reads.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace httplib {
class Client;
class Result;
}  // namespace httplib

namespace ballast::cli {

// Ends the command: `what()` is printed after "ballast ctl: ", one line per line of it.
class CtlError : public std::runtime_error {
 public:
  static constexpr int kUsage = 2;   // the command line is wrong
  static constexpr int kFailed = 1;  // the controller, the network or a file said no

  CtlError(const std::string& message, int exit_code)
      : std::runtime_error(message), code_(exit_code) {}
  int exit_code() const { return code_; }

 private:
  int code_;
};

struct ApiOptions {
  std::string url;        // http(s)://host[:port][/prefix]
  std::string token;      // bearer token; empty: none sent
  std::string ca_file;    // https: trust this CA instead of the system's
  bool insecure = false;  // https: do not verify the certificate
};

class ApiClient {
 public:
  // Throws CtlError(kUsage) for a URL that is not http(s)://host[:port][/prefix].
  explicit ApiClient(const ApiOptions& options);
  ~ApiClient();

  // `path` is below /api/v1 (e.g. "/pools/web"). The parsed JSON answer (null for 204); throws
  // CtlError for anything but a 2xx.
  nlohmann::ordered_json get(const std::string& path);
  nlohmann::ordered_json post(const std::string& path, const std::string& body,
                              const std::string& content_type);
  nlohmann::ordered_json remove(const std::string& path, const std::string& if_match);

 private:
  nlohmann::ordered_json answer(const httplib::Result& result) const;

  std::string url_;          // as given, for messages
  std::string host_, port_;  // to explain a failed connection
  std::string prefix_;       // the URL's path, put before /api/v1
  bool has_token_;
  std::unique_ptr<httplib::Client> http_;
};

// Percent-encodes one path segment or query value.
std::string url_encode(const std::string& text);

}  // namespace ballast::cli
