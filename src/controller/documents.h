// Pure logic on configuration documents for the controller: validating a change with the
// configuration loader (the same rules as a YAML file), diffing an applied document against the
// stored objects, and rendering what one service engine runs. No I/O.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ballast::controller {

using Json = nlohmann::json;

// The object kinds of the API, in the order a document lists them.
extern const std::vector<std::string> kKinds;
bool isKind(const std::string& kind);

// kind -> object bodies (each with "name", without "version").
using Document = std::map<std::string, std::vector<Json>>;

// The body of a request as JSON: JSON text, or YAML (JSON is tried first). nullopt with *error
// set when it is neither.
std::optional<Json> parseBody(const std::string& text, std::string* error);

// `node` as JSON: plain scalars that read as null, booleans or numbers become those, quoted
// scalars stay strings.
Json yamlToJson(const std::string& yaml_text);

// Validates `object` of `kind` as it would be with `current` once written (replacing the object
// of the same name). nullopt when valid, else the 422 body:
// {"error": "invalid pools/web", "errors": [{"path", "message"} or, for an error the change causes
// in another object, {"object": "virtual_services/x", "path", "message"}]}.
std::optional<Json> validateChange(const Document& current, const std::string& kind,
                                   const Json& object);

// The objects that refer to kind/name: "virtual_services/web" etc. (empty: none).
std::vector<std::string> usersOf(const Document& current, const std::string& kind,
                                 const std::string& name);

struct Change {
  std::string op;  // create | update | delete
  std::string kind;
  std::string name;
  Json body;  // create/update: the new body
};

// A parsed and validated document for POST /api/v1/apply: `status` 0 and `desired` on success,
// else the HTTP status (400 or 422) and the error body.
struct ApplyDocument {
  int status = 0;
  Json error;
  Document desired;
};
ApplyDocument parseApplyDocument(const std::string& text);

// What turns `current` into `desired`, kinds in document order, names sorted. se_groups/default
// is never deleted (it always exists).
std::vector<Change> diff(const Document& current, const Document& desired);

// What one SE runs: {"virtual_services": [...], "pools": [...], "health_monitors": [...]} for the
// named virtual services, their pools and the monitors those use, sorted by name. se_group is
// left out of virtual services: placement is the controller's business, and the SE's own
// document has no SE groups to refer to.
Json renderSeConfig(const Document& current, const std::vector<std::string>& virtual_services);

}  // namespace ballast::controller
