// `ballast controller`: the control plane (DESIGN.md, "Processes"; docs/api.md).
#pragma once

#include <string>
#include <vector>

namespace ballast::controller {

// Runs `ballast controller ARGS...` (the arguments after the command name); the exit code.
int main(const std::vector<std::string>& args);

}  // namespace ballast::controller
