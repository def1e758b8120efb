#include "core/buffer.h"

#include <cstdlib>
#include <new>

namespace ballast {

BufferPool::~BufferPool() {
  for (char* block : free_) std::free(block);
}

char* BufferPool::acquire() {
  ++in_use_;
  if (!free_.empty()) {
    char* block = free_.back();
    free_.pop_back();
    return block;
  }
  char* block = static_cast<char*>(std::malloc(block_size_));
  if (block == nullptr) throw std::bad_alloc();
  return block;
}

void BufferPool::release(char* block) {
  --in_use_;
  if (free_.size() < max_free_) {
    free_.push_back(block);
  } else {
    std::free(block);
  }
}

}  // namespace ballast
