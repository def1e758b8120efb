// Loading and validating the YAML configuration: loadFile and loadString.
//
// The loader walks the yaml-cpp node tree once, collecting every error it finds instead of
// stopping at the first, so an operator fixes a file in one round. Errors about a value carry the
// line of its key (yaml-cpp gives null values the position of the next token, which misleads).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "config/config.h"
#include "config/values.h"

namespace ballast::config {
namespace {

constexpr Duration kMaxTimeout = std::chrono::hours(24);
// sizeof(sockaddr_un::sun_path) on Linux, less the terminating NUL.
constexpr size_t kMaxSocketPath = 107;

constexpr const char* kTokenChars = "A-Z a-z 0-9 !#$%&'*+-.^_`|~";

// The longest password read from store.redis.password_file.
constexpr size_t kMaxPassword = 4096;

// Persistence entries live at most this long after their last use.
constexpr Duration kMaxPersistenceTimeout = std::chrono::hours(30 * 24);

// The content of a file holding a secret (a password), without trailing whitespace, or nullopt
// after setting *problem. The secret never appears in a message.
std::optional<std::string> readSecretFile(const std::string& path, std::string* problem) {
  auto cannotRead = [&](int error_number) {
    *problem = "cannot read \"" + path + "\": " + std::strerror(error_number);
    return std::nullopt;
  };
  // O_NONBLOCK: a FIFO without a writer reads as empty instead of stalling the load.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return cannotRead(errno);
  std::string text;
  char buffer[1024];
  int error_number = 0;
  bool end = false;
  // Stops at twice the limit (room for trailing whitespace): a file may be endless (/dev/zero).
  while (!end && text.size() <= 2 * kMaxPassword) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error_number = errno;
      break;
    }
    end = n == 0;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  if (error_number != 0) return cannotRead(error_number);
  std::string_view secret = stripTrailingWhitespace(text);
  if (!end || secret.size() > kMaxPassword) {
    *problem = "\"" + path + "\" is too long for a password (at most " +
               std::to_string(kMaxPassword) + " bytes)";
    return std::nullopt;
  }
  if (secret.empty()) {
    *problem = "\"" + path + "\" is empty";
    return std::nullopt;
  }
  return std::string(secret);
}

// Why `path` cannot be a file that the service engine creates or opens when it starts (an access
// log, a Unix socket), or "" when it can. The file itself need not exist; its directory must.
std::string filePathProblem(const std::string& path) {
  if (std::any_of(path.begin(), path.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return "the path contains a control character";
  }
  if (path.back() == '/') return "expected a file path, not a directory";
  size_t slash = path.rfind('/');
  std::string directory = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  struct stat info {};
  if (::stat(directory.c_str(), &info) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return "directory \"" + directory + "\" does not exist";
    }
    return "cannot check directory \"" + directory + "\": " + std::strerror(errno);
  }
  if (!S_ISDIR(info.st_mode)) return "\"" + directory + "\" is not a directory";
  if (::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
    return "\"" + path + "\" is a directory";
  }
  return "";
}

int lineOf(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  return mark.is_null() ? 0 : mark.line + 1;
}

std::string joinPath(const std::string& parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return parent + "." + std::string(key);
}

std::string indexPath(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

// One key of a map, with where it was written.
struct Field {
  std::string key;
  std::string path;  // full key path, e.g. "pools[0].servers"
  YAML::Node value;
  int line = 0;  // line of the key
};

// Collects errors for one load.
class Errors {
 public:
  explicit Errors(std::string file) : file_(std::move(file)) {}

  void add(int line, std::string path, std::string message) {
    errors_.push_back(ConfigError{file_, line, std::move(path), std::move(message)});
  }
  void add(const Field& field, std::string message) {
    add(field.line, field.path, std::move(message));
  }

  bool empty() const { return errors_.empty(); }

  // In file order; errors found in the same place keep the order they were found in.
  std::vector<ConfigError> take() {
    std::stable_sort(errors_.begin(), errors_.end(),
                     [](const ConfigError& a, const ConfigError& b) { return a.line < b.line; });
    return std::move(errors_);
  }

 private:
  std::string file_;
  std::vector<ConfigError> errors_;
};

// The keys of one YAML map, checked against the keys its schema allows. Reports keys that are
// not strings, duplicate keys, keys that are not supported yet and unknown keys; the first of
// duplicate keys is the one used.
class MapFields {
 public:
  MapFields(Errors& errors, const YAML::Node& map, std::string path,
            std::initializer_list<std::string_view> known,
            std::initializer_list<std::string_view> unsupported = {})
      : path_(std::move(path)), line_(lineOf(map)) {
    for (const auto& pair : map) {
      // Copies: yaml-cpp's iterators hand out temporaries.
      const YAML::Node key = pair.first;
      int key_line = lineOf(key);
      if (!key.IsScalar()) {
        errors.add(key_line, path_, "keys must be strings");
        continue;
      }
      const std::string& name = key.Scalar();
      Field field{name, joinPath(path_, name), pair.second, key_line};
      if (const Field* first = find(name)) {
        errors.add(field, "duplicate key (first on line " + std::to_string(first->line) + ")");
        continue;
      }
      if (contains(unsupported, name)) {
        errors.add(field, "not supported yet");
      } else if (!contains(known, name)) {
        errors.add(field, "unknown key (expected one of: " + join(known) + ")");
      } else {
        fields_.push_back(std::move(field));
        continue;
      }
      // Remembered only to detect duplicates of it.
      rejected_.push_back(std::move(field));
    }
  }

  // A known key that is present, or nullptr.
  const Field* get(std::string_view key) const {
    for (const Field& field : fields_) {
      if (field.key == key) return &field;
    }
    return nullptr;
  }

  const std::string& path() const { return path_; }
  int line() const { return line_; }

 private:
  const Field* find(std::string_view key) const {
    if (const Field* field = get(key)) return field;
    for (const Field& field : rejected_) {
      if (field.key == key) return &field;
    }
    return nullptr;
  }

  static bool contains(std::initializer_list<std::string_view> keys, std::string_view key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
  }

  static std::string join(std::initializer_list<std::string_view> keys) {
    std::string text;
    for (std::string_view key : keys) {
      if (!text.empty()) text += ", ";
      text += key;
    }
    return text;
  }

  std::string path_;
  int line_ = 0;
  std::vector<Field> fields_;
  std::vector<Field> rejected_;
};

// Typed readers. Each reads one field, reports a problem with it and returns false, or stores
// the value and returns true; the caller's default stays in place on failure.
class Reader {
 public:
  explicit Reader(Errors& errors) : errors_(errors) {}

  bool requireField(const MapFields& map, std::string_view key) {
    if (map.get(key) != nullptr) return true;
    errors_.add(map.line(), joinPath(map.path(), key), "required key is missing");
    return false;
  }

  bool string(const Field& field, std::string* out) {
    if (!field.value.IsScalar()) {
      errors_.add(field, "expected a string");
      return false;
    }
    *out = field.value.Scalar();
    return true;
  }

  bool name(const Field& field, std::string* out) {
    if (!field.value.IsScalar() || !isValidName(field.value.Scalar())) {
      errors_.add(field, "expected a name of 1-64 characters from A-Z a-z 0-9 _ . -");
      return false;
    }
    *out = field.value.Scalar();
    return true;
  }

  template <typename T>
  bool integer(const Field& field, uint64_t min, uint64_t max, T* out) {
    uint64_t value = 0;
    if (!field.value.IsScalar() || !parseUnsigned(field.value.Scalar(), &value) || value < min ||
        value > max) {
      errors_.add(field,
                  "expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
      return false;
    }
    *out = static_cast<T>(value);
    return true;
  }

  bool boolean(const Field& field, bool* out) {
    if (!field.value.IsScalar() || !parseBool(field.value.Scalar(), out)) {
      errors_.add(field, "expected true or false");
      return false;
    }
    return true;
  }

  // A duration in [min, max]; with `positive`, 0 is rejected too. A bound that comes from another
  // key is named in the message: "at most the interval (5s)".
  bool duration(const Field& field, Duration min, Duration max, bool positive, Duration* out,
                std::string_view min_name = {}, std::string_view max_name = {}) {
    std::string error;
    Duration value{};
    if (!field.value.IsScalar()) {
      errors_.add(field, "expected a duration with a unit, e.g. 300ms, 2s, 5m");
      return false;
    }
    if (!parseDuration(field.value.Scalar(), &value, &error)) {
      errors_.add(field, error);
      return false;
    }
    if (value < min || value > max || (positive && value.count() == 0)) {
      auto bound = [](std::string_view name, Duration d) {
        return name.empty() ? formatDuration(d)
                            : std::string(name) + " (" + formatDuration(d) + ")";
      };
      errors_.add(
          field, positive ? "expected a duration greater than 0 and at most " + bound(max_name, max)
                          : "expected a duration from " + bound(min_name, min) + " to " +
                                bound(max_name, max));
      return false;
    }
    *out = value;
    return true;
  }

  bool timeout(const Field& field, Duration* out) {
    return duration(field, Duration(0), kMaxTimeout, /*positive=*/true, out);
  }

  bool size(const Field& field, uint64_t min, uint64_t max, uint32_t* out) {
    uint64_t value = 0;
    if (!field.value.IsScalar() || !parseSize(field.value.Scalar(), &value)) {
      errors_.add(field, "expected a size, e.g. 16384, 16KiB, 1MiB");
      return false;
    }
    if (value < min || value > max) {
      errors_.add(field, "expected a size from " + formatSize(min) + " to " + formatSize(max));
      return false;
    }
    *out = static_cast<uint32_t>(value);
    return true;
  }

  // A map value; null (an empty "key:") counts as an empty map.
  bool isMap(const Field& field) {
    if (field.value.IsMap() || field.value.IsNull()) return true;
    errors_.add(field, "expected a map");
    return false;
  }

  // A list value; null counts as an empty list.
  bool isList(const Field& field) {
    if (field.value.IsSequence() || field.value.IsNull()) return true;
    errors_.add(field, "expected a list");
    return false;
  }

 private:
  Errors& errors_;
};

// Records where documents start; the events inside them are not needed.
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;

  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

unsigned defaultWorkers() {
  unsigned cpus = std::thread::hardware_concurrency();
  return std::clamp(cpus, 1u, 256u);
}

class Loader {
 public:
  explicit Loader(const std::string& source) : errors_(source), read_(errors_) {
    config_.source = source;
    config_.se.workers = defaultWorkers();
    if (auto address = SocketAddress::parseLiteral(config_.store.redis.address_text, nullptr)) {
      config_.store.redis.address = *address;
    }
  }

  LoadResult load(const std::string& text) {
    try {
      loadDocument(text);
    } catch (const std::exception& e) {
      // Not expected (the walk checks node types before using them); keep loadString total.
      errors_.add(0, "", std::string("internal error while loading: ") + e.what());
    }
    LoadResult result;
    if (errors_.empty()) {
      result.config = std::make_shared<const Config>(std::move(config_));
    } else {
      result.errors = errors_.take();
    }
    return result;
  }

 private:
  // A virtual service or pool name with where it was defined, for uniqueness checks.
  struct Seen {
    std::string name;
    int line = 0;
  };

  // The first YAML document, or nullopt after reporting a syntax error.
  std::optional<YAML::Node> parse(const std::string& text) {
    try {
      if (!checkDocuments(text)) return std::nullopt;
      return YAML::Load(text);  // the first document only
    } catch (const YAML::ParserException& e) {
      int line = e.mark.is_null() ? 0 : e.mark.line + 1;
      errors_.add(line, "", "YAML syntax error: " + e.msg);
      return std::nullopt;
    }
  }

  void loadDocument(const std::string& text) {
    std::optional<YAML::Node> document = parse(text);
    if (!document) return;
    const YAML::Node& root = *document;
    if (root.IsNull()) {
      errors_.add(0, "", "the configuration is empty");
      return;
    }
    if (!root.IsMap()) {
      errors_.add(lineOf(root), "",
                  "expected a map at the top level (keys: se, store, virtual_services, pools, "
                  "health_monitors, se_groups)");
      return;
    }

    MapFields top(errors_, root, "",
                  {"se", "store", "virtual_services", "pools", "health_monitors", "se_groups"});
    if (const Field* se = top.get("se"); se != nullptr && read_.isMap(*se)) loadSe(*se);
    if (const Field* store = top.get("store"); store != nullptr && read_.isMap(*store)) {
      loadStore(*store);
    }
    // Before pools, which name monitors.
    if (const Field* monitors = top.get("health_monitors");
        monitors != nullptr && read_.isList(*monitors)) {
      forEachMap(*monitors, &Loader::loadHealthMonitor);
    }
    if (const Field* pools = top.get("pools"); pools != nullptr && read_.isList(*pools)) {
      forEachMap(*pools, &Loader::loadPool);
    }
    if (const Field* groups = top.get("se_groups"); groups != nullptr && read_.isList(*groups)) {
      forEachMap(*groups, &Loader::loadSeGroup);
    }
    if (const Field* vss = top.get("virtual_services"); vss != nullptr && read_.isList(*vss)) {
      forEachMap(*vss, &Loader::loadVirtualService);
    }
    checkPoolReferences();
    checkSeGroupReferences();
  }

  // Calls load(item, "list[i]") for each item of a list of maps (an item that is not a map is an
  // error).
  void forEachMap(const Field& field, void (Loader::*load)(const YAML::Node&, const std::string&)) {
    size_t i = 0;
    for (const YAML::Node& item : field.value) {
      std::string path = indexPath(field.path, i++);
      if (!item.IsMap()) {
        errors_.add(lineOf(item), path, "expected a map");
        continue;
      }
      (this->*load)(item, path);
    }
  }

  // Rejects a stream of several documents. Also catches input that yaml-cpp 0.7 cannot parse
  // but does not reject (a document starting with ","): its parser then reports an endless
  // series of empty documents at the same position, and YAML::LoadAll would allocate until
  // memory runs out (yaml-cpp issue #1040), which is why it is not used. Throws
  // YAML::ParserException for syntax errors in the first two documents.
  bool checkDocuments(const std::string& text) {
    std::istringstream stream(text);
    YAML::Parser parser(stream);
    DocumentStarts starts;
    if (!parser.HandleNextDocument(starts) || !parser.HandleNextDocument(starts)) return true;
    const YAML::Mark& first = starts.marks.at(0);
    const YAML::Mark& second = starts.marks.at(1);
    if (second.pos == first.pos) {
      size_t pos = static_cast<size_t>(first.pos);
      char c = pos < text.size() ? text[pos] : '\0';
      errors_.add(first.line + 1, "",
                  c > ' ' && c < 127 ? std::string("YAML syntax error: unexpected \"") + c + "\""
                                     : std::string("YAML syntax error: unexpected input"));
      return false;
    }
    errors_.add(second.line + 1, "", "expected a single YAML document");
    return true;  // still check the first document
  }

  void loadSe(const Field& field) {
    MapFields map(errors_, field.value, field.path,
                  {"workers", "admin", "drain_timeout", "buffer_size", "control_socket"});
    SeSettings& se = config_.se;
    if (const Field* f = map.get("workers")) read_.integer(*f, 1, 256, &se.workers);
    if (const Field* f = map.get("admin"); f != nullptr && read_.string(*f, &se.admin_text)) {
      std::string error;
      se.admin = SocketAddress::parseLiteral(se.admin_text, &error);
      if (!se.admin) errors_.add(*f, error);
    }
    if (const Field* f = map.get("drain_timeout")) {
      read_.duration(*f, Duration(0), std::chrono::hours(1), /*positive=*/false, &se.drain_timeout);
    }
    if (const Field* f = map.get("buffer_size")) {
      read_.size(*f, 4 * 1024, 1024 * 1024, &se.buffer_size);
    }
    if (const Field* f = map.get("control_socket")) {
      std::string path;
      if (read_.string(*f, &path)) {
        if (path.empty()) {
          errors_.add(*f, "expected the path of a Unix socket");
        } else if (path.size() > kMaxSocketPath) {
          errors_.add(*f, "expected a path of at most " + std::to_string(kMaxSocketPath) +
                              " bytes (the limit of a Unix socket address)");
        } else if (std::string problem = filePathProblem(path); !problem.empty()) {
          errors_.add(*f, problem);
        } else {
          se.control_socket = path;
        }
      }
    }
  }

  void loadStore(const Field& field) {
    MapFields map(errors_, field.value, field.path, {"type", "redis", "cache_size"});
    StoreSettings& store = config_.store;
    // Read first: it decides whether redis is allowed. With an invalid type, redis is checked as
    // if the type were redis.
    bool redis_allowed = false;
    if (const Field* f = map.get("type")) {
      redis_allowed = true;
      std::string type;
      if (read_.string(*f, &type)) {
        if (type == "memory" || type == "redis") {
          store.type = type;
          redis_allowed = type == "redis";
        } else {
          errors_.add(*f, "expected one of: memory, redis");
        }
      }
    }
    if (const Field* f = map.get("redis")) {
      if (!redis_allowed) {
        errors_.add(*f, "only for type redis");
      } else if (read_.isMap(*f)) {
        loadRedis(*f, &store.redis);
      }
    }
    if (const Field* f = map.get("cache_size")) {
      read_.integer(*f, 0, 10'000'000, &store.cache_size);
    }
  }

  void loadRedis(const Field& field, RedisSettings* redis) {
    MapFields map(errors_, field.value, field.path,
                  {"address", "password_file", "prefix", "connect_timeout", "timeout"});
    if (const Field* f = map.get("address")) {
      std::string text;
      if (read_.string(*f, &text)) {
        std::string error;
        if (auto address = SocketAddress::resolve(text, &error)) {
          redis->address = *address;
          redis->address_text = text;
        } else {
          errors_.add(*f, error);
        }
      }
    }
    // "" (as in `password_file: ""`) is the same as no key: no AUTH.
    if (const Field* f = map.get("password_file")) {
      std::string path;
      if (read_.string(*f, &path) && !path.empty()) {
        std::string problem;
        if (std::optional<std::string> password = readSecretFile(path, &problem)) {
          redis->password_file = path;
          redis->password = std::move(*password);
        } else {
          errors_.add(*f, problem);
        }
      }
    }
    if (const Field* f = map.get("prefix")) {
      if (f->value.IsScalar() && isValidKeyPrefix(f->value.Scalar())) {
        redis->prefix = f->value.Scalar();
      } else {
        errors_.add(*f, "expected a prefix of 1-64 characters from A-Z a-z 0-9 _ . - :");
      }
    }
    if (const Field* f = map.get("connect_timeout")) {
      read_.duration(*f, Duration(0), std::chrono::minutes(1), /*positive=*/true,
                     &redis->connect_timeout);
    }
    if (const Field* f = map.get("timeout")) {
      read_.duration(*f, Duration(0), std::chrono::seconds(10), /*positive=*/true, &redis->timeout);
    }
  }

  void loadVirtualService(const YAML::Node& node, const std::string& path) {
    MapFields map(errors_, node, path,
                  {"name", "listen", "protocol", "pool", "max_connections", "max_header_size",
                   "max_headers", "x_forwarded_for", "timeouts", "retries", "access_log",
                   "persistence", "se_group", "apdex_threshold"});
    VirtualService vs;
    vs.line = map.line();

    if (read_.requireField(map, "name")) {
      const Field& f = *map.get("name");
      if (read_.name(f, &vs.name)) checkUnique(f, vs.name, "virtual service", &vs_names_);
    }

    if (read_.requireField(map, "listen")) {
      const Field& f = *map.get("listen");
      if (read_.string(f, &vs.listen_text)) {
        std::string error;
        if (auto address = SocketAddress::parseLiteral(vs.listen_text, &error)) {
          vs.listen = *address;
          checkListenUnique(f, vs);
        } else {
          errors_.add(f, error);
        }
      }
    }

    // Read first: it decides which other keys are allowed.
    bool is_tcp = false;
    if (read_.requireField(map, "protocol")) {
      const Field& f = *map.get("protocol");
      std::string protocol;
      if (read_.string(f, &protocol)) {
        if (protocol == "tcp") {
          vs.protocol = Protocol::Tcp;
          is_tcp = true;
        } else if (protocol == "http") {
          vs.protocol = Protocol::Http;
        } else if (protocol == "https") {
          errors_.add(f, "https is not supported yet");
        } else {
          errors_.add(f, "expected one of: tcp, http, https");
        }
      }
    }

    if (read_.requireField(map, "pool")) {
      const Field& f = *map.get("pool");
      if (read_.string(f, &vs.pool)) {
        pool_references_.push_back({vs.pool, f.line, f.path, is_tcp});
      }
    }
    if (const Field* f = map.get("se_group"); f != nullptr && read_.name(*f, &vs.se_group)) {
      group_references_.push_back({vs.se_group, f->line, f->path});
    }

    if (const Field* f = map.get("max_connections")) {
      read_.integer(*f, 0, 10'000'000, &vs.max_connections);
    }
    if (const Field* f = map.get("apdex_threshold")) read_.timeout(*f, &vs.apdex_threshold);
    // Keys that only mean something for HTTP are errors on a TCP service, so that a setting that
    // would silently do nothing is caught. With an unknown protocol they are checked as if HTTP.
    auto httpOnly = [&](const MapFields& fields, std::string_view key) -> const Field* {
      const Field* f = fields.get(key);
      if (f != nullptr && is_tcp) {
        errors_.add(*f, "only for protocol http");
        return nullptr;
      }
      return f;
    };
    if (const Field* f = httpOnly(map, "max_header_size")) {
      read_.size(*f, 1024, 1024 * 1024, &vs.max_header_size);
    }
    if (const Field* f = httpOnly(map, "max_headers")) read_.integer(*f, 1, 1000, &vs.max_headers);
    if (const Field* f = httpOnly(map, "x_forwarded_for")) read_.boolean(*f, &vs.x_forwarded_for);

    if (const Field* f = map.get("timeouts"); f != nullptr && read_.isMap(*f)) {
      MapFields timeouts(errors_, f->value, f->path,
                         {"client_header", "idle", "client", "connect", "server"});
      VsTimeouts& t = vs.timeouts;
      if (const Field* g = httpOnly(timeouts, "client_header")) read_.timeout(*g, &t.client_header);
      if (const Field* g = timeouts.get("idle")) read_.timeout(*g, &t.idle);
      if (const Field* g = httpOnly(timeouts, "client")) read_.timeout(*g, &t.client);
      if (const Field* g = timeouts.get("connect")) read_.timeout(*g, &t.connect);
      if (const Field* g = httpOnly(timeouts, "server")) read_.timeout(*g, &t.server);
    }

    if (const Field* f = map.get("retries")) read_.integer(*f, 0, 10, &vs.retries);
    if (const Field* f = map.get("access_log")) {
      std::string target;
      if (read_.string(*f, &target)) {
        if (target.empty()) {
          errors_.add(*f, "expected stdout or a file path");
        } else if (target == "stderr") {
          // A file named "stderr" in the working directory is surely not what was meant.
          errors_.add(*f, "expected stdout or a file path (stderr is not supported)");
        } else if (std::string problem = target == "stdout" ? "" : filePathProblem(target);
                   !problem.empty()) {
          errors_.add(*f, problem);
        } else {
          vs.access_log = target;
        }
      }
    }

    if (const Field* f = map.get("persistence"); f != nullptr && read_.isMap(*f)) {
      loadPersistence(*f, is_tcp, &vs.persistence);
    }

    config_.virtual_services.push_back(std::move(vs));
  }

  // virtual_services[].persistence. `tcp`: the service is tcp, so only client_ip works.
  void loadPersistence(const Field& field, bool tcp, Persistence* persistence) {
    if (field.value.IsNull()) {  // "persistence:" with nothing: the map's line would mislead
      errors_.add(field.line, joinPath(field.path, "type"), "required key is missing");
      return;
    }
    MapFields map(errors_, field.value, field.path,
                  {"type", "timeout", "header", "cookie", "ipv4_prefix", "ipv6_prefix"});

    // Read first: it decides which other keys are allowed. With an invalid or missing type, every
    // key is allowed and checked for its syntax.
    std::optional<PersistenceType> type;
    if (read_.requireField(map, "type")) {
      static constexpr std::pair<std::string_view, PersistenceType> kTypes[] = {
          {"client_ip", PersistenceType::ClientIp},
          {"http_header", PersistenceType::HttpHeader},
          {"http_cookie", PersistenceType::HttpCookie},
          {"app_cookie", PersistenceType::AppCookie},
      };
      const Field& f = *map.get("type");
      std::string text;
      if (read_.string(f, &text)) {
        auto it = std::find_if(std::begin(kTypes), std::end(kTypes),
                               [&](const auto& entry) { return entry.first == text; });
        if (it == std::end(kTypes)) {
          errors_.add(f, "expected one of: client_ip, http_header, http_cookie, app_cookie");
        } else {
          type = it->second;
          persistence->type = it->second;
          // A tcp service has no HTTP header or cookie to key on.
          if (tcp && it->second != PersistenceType::ClientIp) {
            errors_.add(f, "only client_ip persistence works for protocol tcp");
          }
        }
      }
    }

    // A key of another type is an error, so that a setting that would do nothing is caught.
    auto forTypes = [&](std::string_view key, std::initializer_list<PersistenceType> types,
                        const char* names) -> const Field* {
      const Field* f = map.get(key);
      if (f != nullptr && type && std::find(types.begin(), types.end(), *type) == types.end()) {
        errors_.add(*f, std::string("only for type ") + names);
        return nullptr;
      }
      return f;
    };

    if (const Field* f = map.get("timeout")) {
      read_.duration(*f, std::chrono::seconds(1), kMaxPersistenceTimeout, /*positive=*/false,
                     &persistence->timeout);
    }

    if (const Field* f = forTypes("header", {PersistenceType::HttpHeader}, "http_header")) {
      if (f->value.IsScalar() && isToken(f->value.Scalar())) {
        persistence->header = f->value.Scalar();
      } else {
        errors_.add(*f, std::string("expected a header field name (a token of ") + kTokenChars +
                            ")");
      }
    } else if (type == PersistenceType::HttpHeader) {
      read_.requireField(map, "header");
    }

    if (const Field* f =
            forTypes("cookie", {PersistenceType::HttpCookie, PersistenceType::AppCookie},
                     "http_cookie or app_cookie")) {
      auto prefixed = [](const std::string& name, std::string_view prefix) {
        return name.size() >= prefix.size() &&
               std::equal(prefix.begin(), prefix.end(), name.begin(),
                          [](char a, char b) { return std::tolower(a) == std::tolower(b); });
      };
      if (f->value.IsScalar() && isToken(f->value.Scalar())) {
        persistence->cookie = f->value.Scalar();
        // Browsers accept these names only with Secure, which needs HTTPS (not yet served).
        if (type == PersistenceType::HttpCookie &&
            (prefixed(persistence->cookie, "__Host-") || prefixed(persistence->cookie, "__Secure-")))
          errors_.add(*f, "a __Host- or __Secure- cookie needs the Secure attribute, which "
                          "needs HTTPS: browsers would drop it");
      } else {
        errors_.add(*f, std::string("expected a cookie name (a token of ") + kTokenChars + ")");
      }
    } else if (type == PersistenceType::AppCookie) {
      read_.requireField(map, "cookie");
    } else if (type == PersistenceType::HttpCookie) {
      persistence->cookie = "BALLAST_SERVER";
    }

    if (const Field* f = forTypes("ipv4_prefix", {PersistenceType::ClientIp}, "client_ip")) {
      read_.integer(*f, 1, 32, &persistence->ipv4_prefix);
    }
    if (const Field* f = forTypes("ipv6_prefix", {PersistenceType::ClientIp}, "client_ip")) {
      read_.integer(*f, 1, 128, &persistence->ipv6_prefix);
    }
  }

  void loadPool(const YAML::Node& node, const std::string& path) {
    MapFields map(errors_, node, path,
                  {"name", "lb_algorithm", "hash_key", "servers", "connection_pool",
                   "health_monitors", "outlier_detection"});
    Pool pool;
    pool.line = map.line();

    if (read_.requireField(map, "name")) {
      const Field& f = *map.get("name");
      if (read_.name(f, &pool.name)) checkUnique(f, pool.name, "pool", &pool_names_);
    }

    // Read first: it decides whether hash_key is allowed. With an invalid algorithm, hash_key is
    // checked as if for consistent_hash.
    bool hashing = false;
    if (const Field* f = map.get("lb_algorithm")) {
      static constexpr std::pair<std::string_view, LbAlgorithm> kAlgorithms[] = {
          {"round_robin", LbAlgorithm::RoundRobin},
          {"least_connections", LbAlgorithm::LeastConnections},
          {"least_response_time", LbAlgorithm::LeastResponseTime},
          {"consistent_hash", LbAlgorithm::ConsistentHash},
          {"random_two_choices", LbAlgorithm::RandomTwoChoices},
      };
      hashing = true;
      std::string algorithm;
      if (read_.string(*f, &algorithm)) {
        auto it = std::find_if(std::begin(kAlgorithms), std::end(kAlgorithms),
                               [&](const auto& entry) { return entry.first == algorithm; });
        if (it != std::end(kAlgorithms)) {
          pool.lb_algorithm = it->second;
          hashing = it->second == LbAlgorithm::ConsistentHash;
        } else {
          errors_.add(*f,
                      "expected one of: round_robin, least_connections, least_response_time, "
                      "consistent_hash, random_two_choices");
        }
      }
    }

    if (const Field* f = map.get("hash_key")) {
      if (!hashing) {
        errors_.add(*f, "only for lb_algorithm consistent_hash");
      } else if (read_.isMap(*f)) {
        loadHashKey(*f, &pool.hash_key);
      }
    }

    const Field* servers = map.get("servers");
    if (servers == nullptr) {
      errors_.add(map.line(), joinPath(path, "servers"), "at least one server is required");
    } else if (read_.isList(*servers)) {
      if (servers->value.IsNull() || servers->value.size() == 0) {
        errors_.add(*servers, "at least one server is required");
      } else {
        loadServers(*servers, &pool);
      }
    }

    if (const Field* f = map.get("connection_pool"); f != nullptr && read_.isMap(*f)) {
      MapFields settings(errors_, f->value, f->path, {"max_idle_per_server", "idle_timeout"});
      ConnectionPoolSettings& cp = pool.connection_pool;
      if (const Field* g = settings.get("max_idle_per_server")) {
        read_.integer(*g, 0, 100'000, &cp.max_idle_per_server);
      }
      if (const Field* g = settings.get("idle_timeout")) read_.timeout(*g, &cp.idle_timeout);
    }

    if (const Field* f = map.get("health_monitors"); f != nullptr && read_.isList(*f)) {
      loadMonitorReferences(*f, &pool);
    }
    if (const Field* f = map.get("outlier_detection"); f != nullptr && read_.isMap(*f)) {
      loadOutlierDetection(*f, &pool.outlier_detection);
    }

    config_.pools.push_back(std::move(pool));
  }

  void loadHashKey(const Field& field, HashKey* key) {
    if (field.value.IsNull()) {  // "hash_key:" with nothing: the map's line would mislead
      errors_.add(field.line, joinPath(field.path, "type"), "required key is missing");
      return;
    }
    MapFields map(errors_, field.value, field.path, {"type", "name"});
    std::optional<HashKeyType> type;
    if (read_.requireField(map, "type")) {
      const Field& f = *map.get("type");
      std::string text;
      if (read_.string(f, &text)) {
        if (text == "client_ip") {
          type = HashKeyType::ClientIp;
        } else if (text == "header") {
          type = HashKeyType::Header;
        } else if (text == "path") {
          type = HashKeyType::Path;
        } else if (text == "cookie") {
          type = HashKeyType::Cookie;
        } else {
          errors_.add(f, "expected one of: client_ip, header, path, cookie");
        }
      }
    }
    if (type) key->type = *type;

    // With an invalid type, a name is checked as if for a header.
    bool named = !type || *type == HashKeyType::Header || *type == HashKeyType::Cookie;
    const Field* name = map.get("name");
    if (!named) {
      if (name != nullptr) errors_.add(*name, "only for type header or cookie");
    } else if (name == nullptr) {
      if (type) read_.requireField(map, "name");
    } else if (!name->value.IsScalar() || !isToken(name->value.Scalar())) {
      const char* what = type == HashKeyType::Cookie ? "a cookie name" : "a header field name";
      errors_.add(*name, std::string("expected ") + what + " (a token of " + kTokenChars + ")");
    } else {
      key->name = name->value.Scalar();
    }
  }

  // pools[].health_monitors: names of entries of the top-level list, read before the pools.
  void loadMonitorReferences(const Field& field, Pool* pool) {
    std::vector<size_t> indexes;  // list index of each name in pool->health_monitors
    size_t i = 0;
    for (const YAML::Node& item : field.value) {
      size_t index = i++;
      std::string path = indexPath(field.path, index);
      if (!item.IsScalar()) {
        errors_.add(lineOf(item), path, "expected a string");
        continue;
      }
      const std::string& name = item.Scalar();
      auto same = std::find(pool->health_monitors.begin(), pool->health_monitors.end(), name);
      if (same != pool->health_monitors.end()) {
        size_t first = indexes[static_cast<size_t>(same - pool->health_monitors.begin())];
        errors_.add(lineOf(item), path,
                    "duplicate health monitor \"" + name + "\" (same as " +
                        indexPath("health_monitors", first) + ")");
        continue;
      }
      if (!std::any_of(monitor_names_.begin(), monitor_names_.end(),
                       [&](const Seen& seen) { return seen.name == name; })) {
        errors_.add(lineOf(item), path, "no health monitor named \"" + name + "\"");
      }
      pool->health_monitors.push_back(name);
      indexes.push_back(index);
    }
  }

  void loadOutlierDetection(const Field& field, OutlierDetection* od) {
    MapFields map(
        errors_, field.value, field.path,
        {"enabled", "consecutive_5xx", "consecutive_gateway_failure", "base_ejection_time",
         "max_ejection_time", "max_ejection_percent", "panic_threshold"});
    if (const Field* f = map.get("enabled")) read_.boolean(*f, &od->enabled);
    if (const Field* f = map.get("consecutive_5xx")) {
      read_.integer(*f, 0, 1000, &od->consecutive_5xx);
    }
    if (const Field* f = map.get("consecutive_gateway_failure")) {
      read_.integer(*f, 0, 1000, &od->consecutive_gateway_failure);
    }
    bool base_ok = true;
    if (const Field* f = map.get("base_ejection_time")) {
      base_ok = read_.timeout(*f, &od->base_ejection_time);
    }
    if (const Field* f = map.get("max_ejection_time")) {
      if (base_ok) {
        read_.duration(*f, od->base_ejection_time, kMaxTimeout, /*positive=*/false,
                       &od->max_ejection_time, "base_ejection_time");
      } else {
        read_.timeout(*f, &od->max_ejection_time);
      }
    } else {
      // As Envoy does: the default (300s) or base_ejection_time, whichever is longer.
      od->max_ejection_time = std::max(od->max_ejection_time, od->base_ejection_time);
    }
    if (const Field* f = map.get("max_ejection_percent")) {
      read_.integer(*f, 0, 100, &od->max_ejection_percent);
    }
    if (const Field* f = map.get("panic_threshold")) {
      read_.integer(*f, 0, 100, &od->panic_threshold);
    }
  }

  void loadSeGroup(const YAML::Node& node, const std::string& path) {
    MapFields map(errors_, node, path, {"name", "max_vs_per_se", "min_se_per_vs", "ha_mode", "spares"});
    SeGroup group;
    group.line = map.line();
    if (read_.requireField(map, "name")) {
      const Field& f = *map.get("name");
      if (read_.name(f, &group.name)) checkUnique(f, group.name, "SE group", &group_names_);
    }
    if (const Field* f = map.get("max_vs_per_se")) read_.integer(*f, 1, 100000, &group.max_vs_per_se);
    if (const Field* f = map.get("min_se_per_vs")) read_.integer(*f, 1, 1000, &group.min_se_per_vs);
    if (const Field* f = map.get("spares")) read_.integer(*f, 0, 1000, &group.spares);
    if (const Field* f = map.get("ha_mode"); f != nullptr && read_.string(*f, &group.ha_mode) &&
                                             group.ha_mode != "n_plus_m") {
      errors_.add(*f, "expected n_plus_m (the only HA mode for now)");
    }
    config_.se_groups.push_back(std::move(group));
  }

  // A virtual service's se_group names a group of the document, or the implied "default".
  void checkSeGroupReferences() {
    for (const GroupReference& ref : group_references_) {
      if (ref.group == "default") continue;
      bool found = std::any_of(group_names_.begin(), group_names_.end(),
                               [&](const Seen& seen) { return seen.name == ref.group; });
      if (!found) errors_.add(ref.line, ref.path, "no SE group named \"" + ref.group + "\"");
    }
  }

  void loadHealthMonitor(const YAML::Node& node, const std::string& path) {
    MapFields map(errors_, node, path,
                  {"name", "type", "interval", "timeout", "rise", "fall", "request", "host",
                   "expect", "body", "port"});
    HealthMonitor monitor;
    monitor.line = map.line();

    if (read_.requireField(map, "name")) {
      const Field& f = *map.get("name");
      if (read_.name(f, &monitor.name)) {
        checkUnique(f, monitor.name, "health monitor", &monitor_names_);
      }
    }

    // Read first: it decides which other keys are allowed. With an invalid type they are checked
    // as if for http.
    bool is_tcp = false;
    if (read_.requireField(map, "type")) {
      const Field& f = *map.get("type");
      std::string type;
      if (read_.string(f, &type)) {
        if (type == "tcp") {
          monitor.type = MonitorType::Tcp;
          is_tcp = true;
        } else if (type == "http") {
          monitor.type = MonitorType::Http;
        } else if (type == "https") {
          monitor.type = MonitorType::Https;
        } else {
          errors_.add(f, "expected one of: tcp, http, https");
        }
      }
    }

    bool interval_ok = true;
    if (const Field* f = map.get("interval")) {
      interval_ok = read_.duration(*f, std::chrono::milliseconds(100), std::chrono::hours(1),
                                   /*positive=*/false, &monitor.interval);
    }
    if (const Field* f = map.get("timeout")) {
      if (interval_ok) {
        read_.duration(*f, Duration(0), monitor.interval, /*positive=*/true, &monitor.timeout, {},
                       "the interval");
      } else {
        read_.duration(*f, Duration(0), std::chrono::hours(1), /*positive=*/true, &monitor.timeout);
      }
    } else {
      // The default (2s), or the interval when that is shorter: a check ends before the next.
      monitor.timeout = std::min(monitor.timeout, monitor.interval);
    }
    if (const Field* f = map.get("rise")) read_.integer(*f, 1, 100, &monitor.rise);
    if (const Field* f = map.get("fall")) read_.integer(*f, 1, 100, &monitor.fall);
    if (const Field* f = map.get("port")) read_.integer(*f, 1, 65535, &monitor.port);

    // Keys of the HTTP request and response are errors on a tcp monitor, as for virtual services.
    auto httpOnly = [&](std::string_view key) -> const Field* {
      const Field* f = map.get(key);
      if (f != nullptr && is_tcp) {
        errors_.add(*f, "only for type http or https");
        return nullptr;
      }
      return f;
    };
    if (const Field* f = httpOnly("request")) {
      std::string text;
      std::string error;
      if (read_.string(*f, &text) &&
          !parseRequestLine(text, &monitor.method, &monitor.path, &error)) {
        errors_.add(*f, error);
      }
    }
    if (const Field* f = httpOnly("host")) {
      std::string host;
      if (read_.string(*f, &host)) {
        if (isValidHost(host)) {
          monitor.host = host;
        } else {
          errors_.add(*f,
                      "expected a host name or IP address and an optional port, e.g. "
                      "health.example.com or 10.0.0.1:8080");
        }
      }
    }
    if (const Field* f = httpOnly("expect"); f != nullptr && read_.isList(*f)) {
      loadExpect(*f, &monitor);
    }
    if (const Field* f = httpOnly("body")) {
      std::string body;
      if (read_.string(*f, &body)) {
        if (body.empty()) {
          errors_.add(*f, "expected a non-empty string (leave the key out to accept any body)");
        } else {
          monitor.body = body;
        }
      }
    }

    config_.health_monitors.push_back(std::move(monitor));
  }

  void loadExpect(const Field& field, HealthMonitor* monitor) {
    if (field.value.IsNull() || field.value.size() == 0) {
      errors_.add(field, "expected at least one status code or class");
      return;
    }
    std::vector<std::pair<int, int>> ranges;
    bool ok = true;
    size_t i = 0;
    for (const YAML::Node& item : field.value) {
      std::string path = indexPath(field.path, i++);
      std::pair<int, int> range;
      if (!item.IsScalar() || !parseStatusRange(item.Scalar(), &range)) {
        errors_.add(lineOf(item), path,
                    "expected a status code from 100 to 599 or a class from 2xx to 5xx");
        ok = false;
        continue;
      }
      ranges.push_back(range);
    }
    if (ok) monitor->expect = std::move(ranges);
  }

  void loadServers(const Field& field, Pool* pool) {
    // Index in the YAML list of each server in pool->servers, to name the first of duplicates.
    std::vector<size_t> indexes;
    size_t i = 0;
    for (const YAML::Node& item : field.value) {
      size_t index = i++;
      std::string path = indexPath(field.path, index);
      if (!item.IsMap()) {
        errors_.add(lineOf(item), path, "expected a map");
        continue;
      }
      MapFields map(errors_, item, path,
                    {"address", "weight", "enabled", "drain", "max_connections"});
      Server server;
      bool resolved = false;
      if (read_.requireField(map, "address")) {
        const Field& f = *map.get("address");
        if (read_.string(f, &server.address_text)) {
          std::string error;
          if (auto address = SocketAddress::resolve(server.address_text, &error)) {
            server.address = *address;
            resolved = true;
          } else {
            errors_.add(f, error);
          }
        }
        if (resolved) {
          for (size_t j = 0; j < pool->servers.size(); ++j) {
            if (pool->servers[j].address.valid() && pool->servers[j].address == server.address) {
              errors_.add(f, "duplicate address " + server.address.toString() + " (same as " +
                                 indexPath("servers", indexes[j]) + ")");
              break;
            }
          }
        }
      }
      if (const Field* f = map.get("weight")) read_.integer(*f, 1, 256, &server.weight);
      if (const Field* f = map.get("enabled")) read_.boolean(*f, &server.enabled);
      if (const Field* f = map.get("drain")) read_.boolean(*f, &server.drain);
      if (const Field* f = map.get("max_connections")) {
        read_.integer(*f, 0, 1'000'000, &server.max_connections);
      }
      pool->servers.push_back(std::move(server));
      indexes.push_back(index);
    }
  }

  void checkUnique(const Field& field, const std::string& name, const char* kind,
                   std::vector<Seen>* seen) {
    for (const Seen& other : *seen) {
      if (other.name == name) {
        errors_.add(field, std::string(kind) + " \"" + name + "\" is already defined on line " +
                               std::to_string(other.line));
        return;
      }
    }
    seen->push_back({name, field.line});
  }

  void checkListenUnique(const Field& field, const VirtualService& vs) {
    for (const VirtualService& other : config_.virtual_services) {
      if (other.listen.valid() && other.listen == vs.listen) {
        std::string owner =
            other.name.empty() ? "on line " + std::to_string(other.line) : "\"" + other.name + "\"";
        errors_.add(field, vs.listen.toString() + " is already used by virtual service " + owner);
        return;
      }
    }
  }

  // Pool references are checked once all pools are read: a virtual service may name a pool
  // defined further down. Any pool with that name counts, even one with errors of its own.
  void checkPoolReferences() {
    for (const PoolReference& ref : pool_references_) {
      bool found = std::any_of(pool_names_.begin(), pool_names_.end(),
                               [&](const Seen& seen) { return seen.name == ref.pool; });
      if (!found) {
        errors_.add(ref.line, ref.path, "no pool named \"" + ref.pool + "\"");
        continue;
      }
      // A tcp service has no HTTP request to take a hash key from.
      const Pool* pool = ref.tcp ? config_.findPool(ref.pool) : nullptr;
      if (pool == nullptr || pool->hash_key.type == HashKeyType::ClientIp) continue;
      const char* what = pool->hash_key.type == HashKeyType::Header ? "a header"
                         : pool->hash_key.type == HashKeyType::Path ? "the URI path"
                                                                    : "a cookie";
      errors_.add(ref.line, ref.path,
                  "pool \"" + ref.pool + "\" hashes on " + what +
                      ", which a tcp virtual service does not have");
    }
  }

  struct PoolReference {
    std::string pool;
    int line = 0;
    std::string path;
    bool tcp = false;  // from a tcp virtual service
  };

  Errors errors_;
  Reader read_;
  Config config_;
  std::vector<Seen> vs_names_;
  std::vector<Seen> pool_names_;
  std::vector<Seen> monitor_names_;
  std::vector<Seen> group_names_;
  struct GroupReference {
    std::string group;
    int line = 0;
    std::string path;
  };
  std::vector<GroupReference> group_references_;
  std::vector<PoolReference> pool_references_;
};

}  // namespace

LoadResult loadString(const std::string& yaml_text, const std::string& source_name) {
  try {
    return Loader(source_name).load(yaml_text);
  } catch (const std::exception& e) {  // e.g. std::bad_alloc while building the result
    LoadResult result;
    result.errors.push_back(
        ConfigError{source_name, 0, "", std::string("internal error while loading: ") + e.what()});
    return result;
  }
}

namespace {

LoadResult readAndLoad(const std::string& path) {
  auto cannotRead = [&](int error_number) {
    LoadResult result;
    result.errors.push_back(
        ConfigError{path, 0, "", std::string("cannot read: ") + std::strerror(error_number)});
    return result;
  };
  // Closes the file on every way out, including an exception from std::string.
  struct File {
    int fd;
    ~File() {
      if (fd >= 0) ::close(fd);
    }
  } file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) return cannotRead(errno);
  std::string text;
  char buffer[64 * 1024];
  for (;;) {
    ssize_t n = ::read(file.fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return cannotRead(errno);
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  return loadString(text, path);
}

}  // namespace

LoadResult loadFile(const std::string& path) {
  try {
    return readAndLoad(path);
  } catch (const std::exception& e) {  // std::bad_alloc for a file that does not fit in memory
    LoadResult result;
    result.errors.push_back(ConfigError{path, 0, "", std::string("cannot read: ") + e.what()});
    return result;
  }
}

}  // namespace ballast::config
