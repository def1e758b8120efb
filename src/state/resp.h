// RESP (the Redis serialization protocol, version 2), as the worker connections of the Redis
// store speak it: commands encoded straight into the connection's output buffer, replies parsed in
// place from its input buffer. Nothing here allocates once the buffers have grown to their working
// size (the parser's node list too), and nothing does I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ballast::state::resp {

// A byte queue: written at the back, consumed at the front; grows (doubling) when a write does not
// fit, and moves what is left to the front when that makes room. Keeps its block when emptied.
class ByteQueue {
 public:
  ByteQueue() = default;
  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;

  const char* data() const { return block_.get() + begin_; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  size_t capacity() const { return capacity_; }

  // At least n writable bytes at the back; commit() what was written.
  char* reserve(size_t n);
  size_t writable() const { return capacity_ - end_; }
  char* writePtr() { return block_.get() + end_; }
  void commit(size_t n) { end_ += n; }
  void append(std::string_view s);

  void consume(size_t n);  // from the front
  void clear() { begin_ = end_ = 0; }
  // Gives the block back when it grew beyond `keep` bytes and is empty now (one big burst does
  // not pin its memory for good).
  void shrinkIfEmpty(size_t keep);

 private:
  std::unique_ptr<char[]> block_;
  size_t capacity_ = 0;
  size_t begin_ = 0;
  size_t end_ = 0;
};

// One argument of a command: `a` followed by `b` (b is for a key and its namespace prefix, sent as
// one argument without being put together first).
struct Arg {
  std::string_view a;
  std::string_view b = {};
  Arg(std::string_view first) : a(first) {}  // NOLINT: implicit on purpose
  Arg(std::string_view first, std::string_view second) : a(first), b(second) {}
  Arg(const char* first) : a(first) {}  // NOLINT
  Arg(const std::string& first) : a(first) {}  // NOLINT
  size_t size() const { return a.size() + b.size(); }
};

// Appends one command (an array of bulk strings) to out.
void appendCommand(ByteQueue& out, std::initializer_list<Arg> args);
// The same, in two steps: the head of the command (its element count and its first `args`), then
// arguments encoded earlier with appendArgs() (kept to send the command again).
void appendCommandHead(ByteQueue& out, size_t total_args, std::initializer_list<Arg> args);
void appendArgs(std::string& out, std::initializer_list<Arg> args);

// The size of what appendCommand writes.
size_t commandSize(std::initializer_list<Arg> args);

enum class Type : uint8_t {
  Status,    // +OK
  Error,     // -ERR ...
  Integer,   // :42
  Bulk,      // $3 abc
  Nil,       // $-1
  Array,     // *2 ...
  NilArray,  // *-1
};

// One value of a parsed reply. Strings (status, error and bulk text) point into the parsed input.
struct Value {
  Type type = Type::Nil;
  std::string_view str;  // Status, Error, Bulk
  int64_t integer = 0;   // Integer
  uint32_t count = 0;    // Array: elements
  uint32_t first = 0;    // Array: the index of its first element (elements are contiguous)

  bool isString() const { return type == Type::Bulk || type == Type::Status; }
};

class Parser {
 public:
  enum class Status : uint8_t {
    Complete,    // one reply parsed: root() and at(); `consumed` bytes of the input were used
    Incomplete,  // the input ends before the reply does: call again with more (from its start)
    Invalid,     // not RESP (or nested deeper, or larger, than this parser accepts)
  };
  static constexpr size_t kMaxDepth = 8;
  static constexpr int64_t kMaxBulk = int64_t{512} << 20;  // Redis's own limit

  // Parses the first reply in `in`. On Complete, the values stay valid until the next parse() and
  // while the input's bytes do.
  Status parse(std::string_view in, size_t* consumed);

  const Value& root() const { return nodes_[0]; }
  // Element i of an array value.
  const Value& at(const Value& array, size_t i) const { return nodes_[array.first + i]; }

 private:
  // Parses the value at in[*pos] into nodes_[index]; advances *pos.
  Status value(std::string_view in, size_t* pos, size_t index, size_t depth);
  static Status line(std::string_view in, size_t* pos, std::string_view* out);
  static bool integer(std::string_view text, int64_t* out);

  std::vector<Value> nodes_;
};

}  // namespace ballast::state::resp
