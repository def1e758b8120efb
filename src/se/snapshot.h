// Builds the data path's view of a configuration.
#pragma once

#include <memory>

#include "config/config.h"
#include "proxy/service.h"
#include "se/stats_registry.h"

namespace ballast::se {

std::shared_ptr<const proxy::Snapshot> buildSnapshot(std::shared_ptr<const config::Config> config,
                                                     StatsRegistry& stats);

// Bytes per connection buffer: the configured size, or more when a virtual service allows heads
// larger than that (a whole head must fit in one buffer, with room for what is added to it).
size_t bufferBlockSize(const config::Config& config);

}  // namespace ballast::se
