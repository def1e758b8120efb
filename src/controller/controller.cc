#include "controller/controller.h"

#include <cstdio>

namespace ballast::controller {

int main(const std::vector<std::string>&) {
  std::fprintf(stderr, "ballast controller: not built yet\n");
  return 2;
}

}  // namespace ballast::controller
