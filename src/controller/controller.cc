// `ballast controller`: command line, token files, the HTTP(S) server and the housekeeping thread
// around Service (service.h), which holds the API itself.
#include "controller/controller.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "config/values.h"
#include "controller/service.h"
#include "controller/store.h"

namespace ballast::controller {
namespace {

constexpr size_t kMaxBody = 4 * 1024 * 1024;
constexpr auto kTickInterval = std::chrono::milliseconds(200);

struct Options {
  std::string listen;
  std::string data_dir;
  std::string tls_cert, tls_key;
  std::string admin_token_file, readonly_token_file, se_token_file;
  std::string se_lost_after = "3s";
  std::string heartbeat_interval = "1s";
  std::string health_interval = "5s";
  std::string health_window = "30s";
  double health_drop_event = 10;
  uint32_t anomaly_warmup = 12;
  uint32_t http_threads = 256;
};

// Thrown for a problem with the arguments: one line on stderr, exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string readToken(const std::string& option, const std::string& path) {
  if (path.empty()) return "";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(option + ": cannot read \"" + path + "\"");
  std::ostringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!token.empty() && space(token.back())) token.pop_back();
  size_t start = 0;
  while (start < token.size() && space(token[start])) ++start;
  token.erase(0, start);
  if (token.empty()) throw UsageError(option + ": \"" + path + "\" is empty");
  if (token.find_first_of(" \t\r\n") != std::string::npos) {
    throw UsageError(option + ": \"" + path + "\" must hold one token (no spaces)");
  }
  return token;
}

std::chrono::milliseconds readDuration(const std::string& option, const std::string& text) {
  config::Duration d{};
  std::string problem;
  if (!config::parseDuration(text, &d, &problem) || d.count() <= 0) {
    throw UsageError(
        option + ": " +
        (problem.empty() ? "expected a duration greater than 0, e.g. 500ms, 3s" : problem));
  }
  return d;
}

// "host:port", "[v6]:port"; an empty host listens on every address.
std::pair<std::string, int> splitListen(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos)
    throw UsageError("--listen: expected host:port, got \"" + text + "\"");
  std::string host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  uint64_t port = 0;
  if (!config::parseUnsigned(port_text, &port) || port > 65535) {
    throw UsageError("--listen: expected a port from 0 to 65535, got \"" + port_text + "\"");
  }
  return {host.empty() ? "0.0.0.0" : host, static_cast<int>(port)};
}

Request toRequest(const httplib::Request& in) {
  Request out;
  out.method = in.method;
  out.path = in.path;
  for (const auto& [k, v] : in.params) out.params.emplace(k, v);
  for (const auto& [k, v] : in.headers) {
    std::string name = k;
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers.emplace(name, v);
  }
  out.body = in.body;
  return out;
}

void writeResponse(const Response& from, httplib::Response& to) {
  to.status = from.status;
  for (const auto& [k, v] : from.headers) to.set_header(k, v);
  if (!from.content_type.empty()) {
    to.set_content(from.raw, from.content_type);
  } else if (!from.body.is_null()) {
    to.set_content(from.body.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n",
                   "application/json");
  }
}

int run(const Options& options) {
  ServiceOptions service_options;
  service_options.admin_token = readToken("--admin-token-file", options.admin_token_file);
  service_options.readonly_token = readToken("--readonly-token-file", options.readonly_token_file);
  service_options.se_token = readToken("--se-token-file", options.se_token_file);
  service_options.se_lost_after = readDuration("--se-lost-after", options.se_lost_after);
  service_options.heartbeat_interval =
      readDuration("--heartbeat-interval", options.heartbeat_interval);
  // An engine reports once per heartbeat: a shorter silence than two of them is no loss.
  if (service_options.se_lost_after < 2 * service_options.heartbeat_interval) {
    throw UsageError("--se-lost-after (" + options.se_lost_after +
                     ") must be at least twice --heartbeat-interval (" +
                     options.heartbeat_interval + "): engines report once per heartbeat");
  }
  service_options.tls = !options.tls_cert.empty();
  service_options.max_long_polls = options.http_threads / 2;
  service_options.analytics_db = options.data_dir + "/analytics.db";
  MonitorOptions& monitor = service_options.monitor;
  monitor.health_interval = readDuration("--health-interval", options.health_interval);
  monitor.health_window = readDuration("--health-window", options.health_window);
  if (options.health_drop_event <= 0 || options.health_drop_event > 100) {
    throw UsageError("--health-drop-event: expected points from 0 (excluded) to 100");
  }
  monitor.drop_event_points = options.health_drop_event;
  monitor.score.anomaly.warmup_samples = options.anomaly_warmup;
  auto [host, port] = splitListen(options.listen);
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    throw UsageError("--tls-cert and --tls-key go together");
  }

  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    throw UsageError("--data-dir: cannot create \"" + options.data_dir + "\": " + ec.message());
  }
  // One controller per data directory: two would each keep their own view of the SEs.
  int lock_fd = ::open((options.data_dir + "/controller.lock").c_str(),
                       O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  struct flock whole_file {};
  whole_file.l_type = F_WRLCK;
  whole_file.l_whence = SEEK_SET;
  if (lock_fd < 0 || ::fcntl(lock_fd, F_SETLK, &whole_file) != 0) {
    std::fprintf(stderr, "ballast controller: %s is in use by another controller (or unusable)\n",
                 options.data_dir.c_str());
    return 1;
  }  // the descriptor stays open (and locked) until the process exits
  std::string error;
  std::unique_ptr<Store> store = Store::open(options.data_dir + "/controller.db", &error);
  if (!store) {
    std::fprintf(stderr, "ballast controller: %s\n", error.c_str());
    return 1;
  }

  std::unique_ptr<httplib::Server> server;
  if (!options.tls_cert.empty()) {
    auto tls =
        std::make_unique<httplib::SSLServer>(options.tls_cert.c_str(), options.tls_key.c_str());
    if (!tls->is_valid()) {
      throw UsageError("--tls-cert/--tls-key: cannot load the certificate \"" + options.tls_cert +
                       "\" with the key \"" + options.tls_key + "\"");
    }
    server = std::move(tls);
  } else {
    server = std::make_unique<httplib::Server>();
  }

  // Signals are taken by the housekeeping thread only; every thread started below inherits
  // the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Service service(std::move(store), service_options);

  // A thread per request, and per keep-alive connection while it lasts: a managed engine holds
  // up to two (its config long poll, for up to a minute, and its report connection between
  // heartbeats). Long polls may take half of them (ServiceOptions::max_long_polls).
  const size_t threads = options.http_threads;
  server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server->set_payload_max_length(kMaxBody);
  // httplib's default adds SO_REUSEPORT, which would let a second controller share the port.
  server->set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server->set_keep_alive_max_count(1000);
  // An idle keep-alive connection holds a worker until this runs out, and stop() waits for it.
  server->set_keep_alive_timeout(2);
  auto handler = [&service](const httplib::Request& req, httplib::Response& res) {
    Response response = service.handle(toRequest(req));
    writeResponse(response, res);
    if (req.method != "GET" || response.status >= 400) {
      spdlog::debug("controller: {} {} -> {}", req.method, req.path, response.status);
    }
  };
  for (auto method :
       {&httplib::Server::Get, &httplib::Server::Post, &httplib::Server::Put,
        &httplib::Server::Delete, &httplib::Server::Patch, &httplib::Server::Options}) {
    (server.get()->*method)(".*", handler);
  }
  // Answers httplib makes itself (413, 400 on a malformed request) get a JSON body too.
  httplib::Server::HandlerWithResponse on_error = [](const httplib::Request&,
                                                     httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = res.status == 413   ? "body too large (at most 4 MiB)"
                          : res.status == 400 ? "bad request"
                                              : "HTTP status " + std::to_string(res.status);
    res.set_content(Json{{"error", message}}.dump() + "\n", "application/json");
    return httplib::Server::HandlerResponse::Handled;
  };
  server->set_error_handler(on_error);
  server->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        res.status = 500;
        res.set_content(R"({"error": "internal error"})"
                        "\n",
                        "application/json");
      });

  if (!server->bind_to_port(host.c_str(), port)) {
    std::fprintf(stderr, "ballast controller: cannot listen on %s\n", options.listen.c_str());
    return 1;
  }
  spdlog::info("controller: listening on {} ({}), data in {}", options.listen,
               options.tls_cert.empty() ? "http" : "https", options.data_dir);

  std::atomic<bool> done{false};
  std::thread housekeeping([&] {
    timespec interval{0,
                      std::chrono::duration_cast<std::chrono::nanoseconds>(kTickInterval).count()};
    bool stopping = false;
    while (!done.load()) {
      int sig = sigtimedwait(&signals, nullptr, &interval);
      if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
        spdlog::info("controller: signal {}, stopping", sig);
        stopping = true;
        service.shutdown();
      }
      if (stopping) {
        // Until listen_after_bind() returns: a stop() before it started would be lost.
        server->stop();
        continue;
      }
      service.tick();
    }
  });
  bool ok = server->listen_after_bind();
  done = true;
  service.shutdown();
  server->stop();
  housekeeping.join();
  spdlog::info("controller: stopped");
  return ok ? 0 : 1;
}

}  // namespace

int main(const std::vector<std::string>& args) {
  CLI::App app{"Ballast controller: REST API, service engine registry and placement (docs/api.md)",
               "ballast controller"};
  Options options;
  app.add_option("--listen", options.listen, "Address of the API (host:port)")->required();
  app.add_option("--data-dir", options.data_dir, "Directory of the SQLite database (created)")
      ->required();
  app.add_option("--tls-cert", options.tls_cert, "Serve HTTPS with this certificate (PEM)");
  app.add_option("--tls-key", options.tls_key, "... and this private key (PEM)");
  app.add_option("--admin-token-file", options.admin_token_file,
                 "File holding the admin (read-write) token")
      ->required();
  app.add_option("--readonly-token-file", options.readonly_token_file,
                 "File holding the read-only token");
  app.add_option("--se-token-file", options.se_token_file,
                 "File holding the token of service engines");
  app.add_option("--se-lost-after", options.se_lost_after,
                 "An SE is lost after this long without a report (default 3s)");
  app.add_option("--heartbeat-interval", options.heartbeat_interval,
                 "How often SEs report (told at registration; default 1s)");
  app.add_option("--health-interval", options.health_interval,
                 "How often health scores are computed (default 5s)");
  app.add_option("--health-window", options.health_window,
                 "The analytics a health score looks at: the last ... (default 30s)");
  app.add_option("--health-drop-event", options.health_drop_event,
                 "A score falling this many points raises health_changed (default 10)");
  app.add_option("--anomaly-warmup", options.anomaly_warmup,
                 "Health intervals an object's baseline learns before anomalies count (default 12)");
  app.add_option("--http-threads", options.http_threads,
                 "Threads serving the API (default 256, at least 16); config long polls of "
                 "managed engines may hold half of them")
      ->check(CLI::Range(16, 100000));
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    std::fprintf(stderr, "ballast controller: %s (see ballast controller --help)\n", what.c_str());
    return 2;
  }
  try {
    return run(options);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "ballast controller: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ballast controller: %s\n", e.what());
    return 1;
  }
}

}  // namespace ballast::controller
