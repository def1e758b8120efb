// `ballast ctl`: the command-line client of the controller's REST API (docs/api.md).
#pragma once

#include <string>
#include <vector>

namespace ballast::cli {

// Runs `ballast ctl ARGS...` (the arguments after the command name); the exit code.
int main(const std::vector<std::string>& args);

}  // namespace ballast::cli
