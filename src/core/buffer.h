// Fixed-capacity byte queues over blocks from a per-worker pool. An empty buffer can hand its
// block back, so an idle connection holds no buffer memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace ballast {

// Recycles fixed-size blocks. One per worker thread: not thread-safe.
class BufferPool {
 public:
  BufferPool(size_t block_size, size_t max_free) : block_size_(block_size), max_free_(max_free) {}
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  char* acquire();
  void release(char* block);
  size_t blockSize() const { return block_size_; }
  size_t inUse() const { return in_use_; }

 private:
  size_t block_size_;
  size_t max_free_;
  size_t in_use_ = 0;
  std::vector<char*> free_;
};

class Buffer {
 public:
  explicit Buffer(BufferPool& pool) : pool_(&pool) {}
  ~Buffer() { release(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  size_t capacity() const { return pool_->blockSize(); }
  size_t readable() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  bool full() const { return readable() == capacity(); }
  const char* readPtr() const { return data_ + begin_; }
  std::string_view view() const { return {data_ + begin_, readable()}; }

  // Room to write at the end; moves unread bytes to the front when the tail is short.
  char* writePtr() {
    if (data_ == nullptr) data_ = pool_->acquire();
    if (capacity() - end_ < capacity() / 4 && begin_ > 0) compact();
    return data_ + end_;
  }
  size_t writable() const { return data_ == nullptr ? capacity() : capacity() - end_; }
  void produced(size_t n) {
    end_ += static_cast<uint32_t>(n);
    total_produced_ += n;
  }

  void consume(size_t n) {
    total_consumed_ += n;
    begin_ += static_cast<uint32_t>(n);
    if (begin_ == end_) begin_ = end_ = 0;
  }
  // Appends all of [p, p+n) or nothing; false when it does not fit.
  bool append(const char* p, size_t n) {
    if (n > capacity() - readable()) return false;
    if (n > writable()) compact();
    std::memcpy(writePtr(), p, n);
    produced(n);
    return true;
  }
  bool append(std::string_view s) { return append(s.data(), s.size()); }
  // Bytes ever written into / taken out of this buffer (for per-request accounting).
  uint64_t totalProduced() const { return total_produced_; }
  uint64_t totalConsumed() const { return total_consumed_; }
  // Free space anywhere (after compaction).
  size_t space() const { return capacity() - readable(); }
  void compact() {
    if (data_ == nullptr || begin_ == 0) return;
    std::memmove(data_, data_ + begin_, readable());
    end_ -= begin_;
    begin_ = 0;
  }
  // Returns the block to the pool if nothing is buffered.
  void releaseIfEmpty() {
    if (empty()) release();
  }
  void clear() {
    begin_ = end_ = 0;
    release();
  }

 private:
  void release() {
    if (data_ != nullptr) {
      pool_->release(data_);
      data_ = nullptr;
      begin_ = end_ = 0;
    }
  }

  BufferPool* pool_;
  char* data_ = nullptr;
  uint32_t begin_ = 0;
  uint32_t end_ = 0;
  uint64_t total_produced_ = 0;
  uint64_t total_consumed_ = 0;
};

}  // namespace ballast
