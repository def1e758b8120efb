#include "state/resp.h"

#include <charconv>
#include <cstring>

namespace ballast::state::resp {

// ---- ByteQueue ----------------------------------------------------------------------------------

char* ByteQueue::reserve(size_t n) {
  if (capacity_ - end_ >= n) return writePtr();
  size_t used = end_ - begin_;
  if (capacity_ - used >= n && begin_ >= used) {
    // Enough room once what is left moves to the front (and it is cheap to move: no more than
    // what is freed).
    std::memmove(block_.get(), block_.get() + begin_, used);
  } else {
    size_t cap = capacity_ < 4096 ? 4096 : capacity_;
    while (cap - used < n) cap *= 2;
    auto block = std::make_unique<char[]>(cap);
    if (used > 0) std::memcpy(block.get(), block_.get() + begin_, used);
    block_ = std::move(block);
    capacity_ = cap;
  }
  begin_ = 0;
  end_ = used;
  return writePtr();
}

void ByteQueue::append(std::string_view s) {
  std::memcpy(reserve(s.size()), s.data(), s.size());
  end_ += s.size();
}

void ByteQueue::consume(size_t n) {
  begin_ += n;
  if (begin_ >= end_) begin_ = end_ = 0;
}

void ByteQueue::shrinkIfEmpty(size_t keep) {
  if (!empty() || capacity_ <= keep) return;
  block_.reset();
  capacity_ = begin_ = end_ = 0;
}

// ---- encoding -----------------------------------------------------------------------------------

namespace {

size_t digits(size_t n) {
  size_t d = 1;
  while (n >= 10) {
    n /= 10;
    ++d;
  }
  return d;
}

// "<mark><n>\r\n"
char* putCount(char* p, char mark, size_t n) {
  *p++ = mark;
  p = std::to_chars(p, p + 20, n).ptr;
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

size_t argSize(const Arg& a) {
  size_t n = a.size();
  return 1 + digits(n) + 2 + n + 2;
}

char* putArg(char* p, const Arg& a) {
  p = putCount(p, '$', a.size());
  if (!a.a.empty()) std::memcpy(p, a.a.data(), a.a.size());
  p += a.a.size();
  if (!a.b.empty()) std::memcpy(p, a.b.data(), a.b.size());
  p += a.b.size();
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

}  // namespace

size_t commandSize(std::initializer_list<Arg> args) {
  size_t n = 1 + digits(args.size()) + 2;
  for (const Arg& a : args) n += argSize(a);
  return n;
}

void appendCommand(ByteQueue& out, std::initializer_list<Arg> args) {
  appendCommandHead(out, args.size(), args);
}

void appendCommandHead(ByteQueue& out, size_t total_args, std::initializer_list<Arg> args) {
  size_t n = 1 + digits(total_args) + 2;
  for (const Arg& a : args) n += argSize(a);
  char* start = out.reserve(n);
  char* p = putCount(start, '*', total_args);
  for (const Arg& a : args) p = putArg(p, a);
  out.commit(static_cast<size_t>(p - start));
}

void appendArgs(std::string& out, std::initializer_list<Arg> args) {
  size_t n = 0;
  for (const Arg& a : args) n += argSize(a);
  size_t at = out.size();
  out.resize(at + n);
  char* start = out.data() + at;
  char* p = start;
  for (const Arg& a : args) p = putArg(p, a);
  out.resize(at + static_cast<size_t>(p - start));
}

// ---- parsing ------------------------------------------------------------------------------------

// The text of a line from in[*pos] to its CRLF (excluded); *pos moves past the CRLF.
Parser::Status Parser::line(std::string_view in, size_t* pos, std::string_view* out) {
  const char* begin = in.data() + *pos;
  size_t left = in.size() - *pos;
  const void* cr = std::memchr(begin, '\r', left);
  if (cr == nullptr) return Status::Incomplete;
  size_t len = static_cast<size_t>(static_cast<const char*>(cr) - begin);
  if (len + 1 >= left) return Status::Incomplete;  // the LF is not there yet
  if (begin[len + 1] != '\n') return Status::Invalid;
  *out = std::string_view(begin, len);
  *pos += len + 2;
  return Status::Complete;
}

bool Parser::integer(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  const char* first = text.data();
  const char* last = first + text.size();
  if (*first == '+') return false;  // from_chars would refuse it anyway; be explicit
  auto [ptr, ec] = std::from_chars(first, last, *out);
  return ec == std::errc() && ptr == last;
}

Parser::Status Parser::value(std::string_view in, size_t* pos, size_t index, size_t depth) {
  if (*pos >= in.size()) return Status::Incomplete;
  char mark = in[*pos];
  ++*pos;
  std::string_view text;
  Status st = line(in, pos, &text);
  if (st != Status::Complete) return st;
  Value v;
  switch (mark) {
    case '+':
      v.type = Type::Status;
      v.str = text;
      break;
    case '-':
      v.type = Type::Error;
      v.str = text;
      break;
    case ':':
      v.type = Type::Integer;
      if (!integer(text, &v.integer)) return Status::Invalid;
      break;
    case '$': {
      int64_t len = 0;
      if (!integer(text, &len) || len < -1 || len > kMaxBulk) return Status::Invalid;
      if (len == -1) {
        v.type = Type::Nil;
        break;
      }
      size_t n = static_cast<size_t>(len);
      if (in.size() - *pos < n + 2) return Status::Incomplete;
      if (in[*pos + n] != '\r' || in[*pos + n + 1] != '\n') return Status::Invalid;
      v.type = Type::Bulk;
      v.str = in.substr(*pos, n);
      *pos += n + 2;
      break;
    }
    case '*': {
      int64_t count = 0;
      if (!integer(text, &count) || count < -1) return Status::Invalid;
      if (count == -1) {
        v.type = Type::NilArray;
        break;
      }
      if (depth + 1 > kMaxDepth || count > UINT32_MAX / 2) return Status::Invalid;
      // Every element takes at least 3 bytes (":0\r\n" is 4, "+\r\n" 3): an array longer than what
      // is left cannot be complete yet, so nothing is allocated for it before the bytes came.
      if (static_cast<uint64_t>(count) > (in.size() - *pos) / 3) return Status::Incomplete;
      v.type = Type::Array;
      v.count = static_cast<uint32_t>(count);
      v.first = static_cast<uint32_t>(nodes_.size());
      nodes_.resize(nodes_.size() + v.count);
      for (uint32_t i = 0; i < v.count; ++i) {
        st = value(in, pos, v.first + i, depth + 1);
        if (st != Status::Complete) return st;
      }
      break;
    }
    default:
      return Status::Invalid;
  }
  nodes_[index] = v;
  return Status::Complete;
}

Parser::Status Parser::parse(std::string_view in, size_t* consumed) {
  nodes_.resize(1);
  size_t pos = 0;
  Status st = value(in, &pos, 0, 0);
  if (st == Status::Complete) *consumed = pos;
  return st;
}

}  // namespace ballast::state::resp
