// `ballast ctl status vs NAME` for people: the API's status answer as a few short sections.
#pragma once

#include <string>

#include "cli/render.h"

namespace ballast::cli {

// Placement, each SE's state and configuration versions, each server's health per SE. Parts of
// the answer it does not know are shown as YAML at the end rather than dropped.
std::string render_vs_status(const std::string& name, const Json& status);

}  // namespace ballast::cli
