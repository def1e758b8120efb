#include "se/managed.h"

#include <cstdio>

namespace ballast::se {

int runManaged(const ManagedOptions&) {
  std::fprintf(stderr, "ballast se --controller: not built yet\n");
  return 2;
}

}  // namespace ballast::se
