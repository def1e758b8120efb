// How `ballast ctl` prints API answers: aligned tables for people, JSON and YAML for programs.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ballast::cli {

using Json = nlohmann::ordered_json;

struct Column {
  std::string header;
  std::function<std::string(const Json& item)> cell;
};

// A column showing item[key] (see cell_text); `absent` when the item does not have it.
Column field(const std::string& header, const std::string& key, const std::string& absent = "-");

// A value as one table cell: strings as they are, lists joined with ",", null/absent as "-".
std::string cell_text(const Json& value);

// A header row and one row per item, columns separated by at least two spaces.
std::string render_table(const std::vector<Column>& columns, const Json& items);

// Pretty JSON (two-space indent), ending with a newline.
std::string render_json(const Json& value);

// The same value as a YAML document (block style; strings that would read back as another type
// are quoted), ending with a newline.
std::string render_yaml(const Json& value);

}  // namespace ballast::cli
