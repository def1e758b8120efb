#include "cli/render.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <regex>

namespace ballast::cli {

Column field(const std::string& header, const std::string& key, const std::string& absent) {
  return {header, [key, absent](const Json& item) {
            return item.is_object() && item.contains(key) ? cell_text(item[key]) : absent;
          }};
}

std::string cell_text(const Json& value) {
  if (value.is_null()) return "-";
  if (value.is_string()) {
    std::string text = value.get<std::string>();
    return text.empty() ? "-" : text;
  }
  if (value.is_array()) {
    if (value.empty()) return "-";
    std::string joined;
    for (const Json& item : value) {
      if (!joined.empty()) joined += ",";
      joined += cell_text(item);
    }
    return joined;
  }
  return value.dump();
}

std::string render_table(const std::vector<Column>& columns, const Json& items) {
  std::vector<std::vector<std::string>> rows;
  rows.emplace_back();
  for (const Column& column : columns) rows.back().push_back(column.header);
  for (const Json& item : items) {
    rows.emplace_back();
    for (const Column& column : columns) {
      std::string cell = column.cell(item);
      // One row per item, whatever the value holds.
      std::replace_if(
          cell.begin(), cell.end(), [](char c) { return c == '\n' || c == '\r' || c == '\t'; },
          ' ');
      rows.back().push_back(std::move(cell));
    }
  }
  std::vector<size_t> widths(columns.size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string render_json(const Json& value) { return value.dump(2) + "\n"; }

namespace {

// A plain YAML scalar that a reader would take for a number, a boolean or null.
bool needs_quotes(const std::string& text) {
  if (text.empty()) return true;
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const char* kWords[] = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"};
  for (const char* word : kWords) {
    if (lower == word) return true;
  }
  // Numbers as YAML 1.1 and 1.2 readers see them: decimal, float, hex, octal, base 60.
  if (lower.find_first_of("0123456789") == std::string::npos) {
    return lower == ".inf" || lower == "-.inf" || lower == "+.inf" || lower == ".nan";
  }
  static const std::regex kNumber(
      R"(^[-+]?(0x[0-9a-f_]+|0o?[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|)"
      R"([0-9_]*\.?[0-9_]*(e[-+]?[0-9]+)?)$)");
  return std::regex_match(lower, kNumber);
}

void emit(YAML::Emitter& out, const Json& value) {
  switch (value.type()) {
    case Json::value_t::object:
      out << YAML::BeginMap;
      for (const auto& [key, item] : value.items()) {
        out << YAML::Key << key << YAML::Value;
        emit(out, item);
      }
      out << YAML::EndMap;
      break;
    case Json::value_t::array:
      out << YAML::BeginSeq;
      for (const Json& item : value) emit(out, item);
      out << YAML::EndSeq;
      break;
    case Json::value_t::string: {
      const std::string& text = value.get_ref<const std::string&>();
      if (needs_quotes(text)) out << YAML::DoubleQuoted;
      out << text;
      break;
    }
    case Json::value_t::boolean:
      out << value.get<bool>();
      break;
    case Json::value_t::number_integer:
      out << value.get<int64_t>();
      break;
    case Json::value_t::number_unsigned:
      out << value.get<uint64_t>();
      break;
    case Json::value_t::number_float:
      out << value.dump();  // the shortest text that reads back the same
      break;
    default:
      out << YAML::Null;
      break;
  }
}

}  // namespace

std::string render_yaml(const Json& value) {
  YAML::Emitter out;
  out.SetBoolFormat(YAML::TrueFalseBool);
  out.SetNullFormat(YAML::LowerNull);
  emit(out, value);
  return std::string(out.c_str()) + "\n";
}

}  // namespace ballast::cli
