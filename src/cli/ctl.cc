#include "cli/ctl.h"

#include <cstdio>

namespace ballast::cli {

int main(const std::vector<std::string>&) {
  std::fprintf(stderr, "ballast ctl: not built yet\n");
  return 2;
}

}  // namespace ballast::cli
