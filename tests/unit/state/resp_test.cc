// The RESP codec of the Redis store (state/resp.h): commands as Redis expects them, and replies
// parsed in place whatever the way they arrive (split at every byte, pipelined, large), with
// malformed input refused.
#include "state/resp.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace ballast::state::resp {
namespace {

std::string bytes(const ByteQueue& q) { return std::string(q.data(), q.size()); }

// ---- encoding -----------------------------------------------------------------------------------

TEST(RespEncode, CommandIsAnArrayOfBulkStrings) {
  ByteQueue out;
  appendCommand(out,
                {"SET", {"ballast:v1:", "persist:web:k"}, "pool/a", "NX", "GET", "PX", "300000"});
  EXPECT_EQ(bytes(out),
            "*7\r\n$3\r\nSET\r\n$24\r\nballast:v1:persist:web:k\r\n$6\r\npool/a\r\n$2\r\nNX\r\n"
            "$3\r\nGET\r\n$2\r\nPX\r\n$6\r\n300000\r\n");
  EXPECT_EQ(commandSize({"SET", {"ballast:v1:", "persist:web:k"}, "pool/a", "NX", "GET", "PX",
                         "300000"}),
            out.size());
}

TEST(RespEncode, BinaryAndEmptyArgumentsAreSentByteForByte) {
  ByteQueue out;
  const std::string binary("a\0\r\n\xff", 5);
  appendCommand(out, {"GET", {"", binary}, "", {"x", ""}});
  EXPECT_EQ(bytes(out),
            std::string("*4\r\n$3\r\nGET\r\n$5\r\n") + binary + "\r\n$0\r\n\r\n$1\r\nx\r\n");
}

TEST(RespEncode, LengthsOfEveryNumberOfDigits) {
  for (size_t len : {0u, 9u, 10u, 99u, 100u, 12345u, 1000000u}) {
    ByteQueue out;
    std::string arg(len, 'v');
    appendCommand(out, {arg});
    std::string expected = "*1\r\n$" + std::to_string(len) + "\r\n" + arg + "\r\n";
    EXPECT_EQ(bytes(out), expected) << len;
    EXPECT_EQ(commandSize({arg}), expected.size());
  }
  ByteQueue many;
  appendCommandHead(many, 12, {"a", "a"});
  std::string rest;
  for (int i = 0; i < 10; ++i) appendArgs(rest, {"a"});
  many.append(rest);
  std::string expected = "*12\r\n";
  for (int i = 0; i < 12; ++i) expected += "$1\r\na\r\n";
  EXPECT_EQ(bytes(many), expected);
}

// A command in two steps (its head, then arguments kept to be sent again) is the same command.
TEST(RespEncode, HeadThenKeptArgumentsEqualsOneCommand) {
  ByteQueue whole, parts;
  appendCommand(whole, {"EVALSHA", "430f", "1", {"p:", "key"}, "old", "new", "1000", "chan"});
  std::string kept;
  appendArgs(kept, {{"p:", "key"}, "old", "new", "1000", "chan"});
  appendCommandHead(parts, 8, {"EVALSHA", "430f", "1"});
  parts.append(kept);
  EXPECT_EQ(bytes(parts), bytes(whole));
  // Kept arguments can be sent again after a different head.
  appendCommandHead(parts, 8, {"EVAL", "return 1", "1"});
  parts.append(kept);
  EXPECT_NE(bytes(parts).find("$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n1\r\n$5\r\np:key\r\n"),
            std::string::npos);
}

TEST(RespByteQueue, GrowsCompactsAndKeepsWhatIsLeft) {
  ByteQueue q;
  EXPECT_TRUE(q.empty());
  std::string expected;
  for (int i = 0; i < 2000; ++i) {
    std::string piece = "piece-" + std::to_string(i) + ";";
    q.append(piece);
    expected += piece;
    if (i % 3 == 0) {  // consume some from the front now and then
      size_t n = std::min<size_t>(q.size(), 7);
      q.consume(n);
      expected.erase(0, n);
    }
    ASSERT_EQ(bytes(q), expected) << i;
  }
  size_t cap = q.capacity();
  q.consume(q.size());
  EXPECT_TRUE(q.empty());
  q.append("again");  // an emptied queue starts at the front of its block again
  EXPECT_EQ(bytes(q), "again");
  EXPECT_EQ(q.capacity(), cap);
  // reserve() + commit(): what a read() does.
  char* at = q.reserve(10000);
  ASSERT_GE(q.writable(), 10000u);
  std::memcpy(at, "xyz", 3);
  q.commit(3);
  EXPECT_EQ(bytes(q), "againxyz");
  q.clear();
  q.shrinkIfEmpty(1);
  EXPECT_EQ(q.capacity(), 0u);
  q.append("ok");
  EXPECT_EQ(bytes(q), "ok");
}

// ---- parsing ------------------------------------------------------------------------------------

// Parses exactly one complete reply from `in` (which must hold nothing more).
const Value& parseOne(Parser& p, std::string_view in) {
  size_t used = 0;
  EXPECT_EQ(p.parse(in, &used), Parser::Status::Complete) << in;
  EXPECT_EQ(used, in.size()) << in;
  return p.root();
}

TEST(RespParse, Scalars) {
  Parser p;
  const Value* v = &parseOne(p, "+OK\r\n");
  EXPECT_EQ(v->type, Type::Status);
  EXPECT_EQ(v->str, "OK");
  EXPECT_TRUE(v->isString());

  v = &parseOne(p, "-NOSCRIPT No matching script. Please use EVAL.\r\n");
  EXPECT_EQ(v->type, Type::Error);
  EXPECT_EQ(v->str, "NOSCRIPT No matching script. Please use EVAL.");

  v = &parseOne(p, ":1\r\n");
  EXPECT_EQ(v->type, Type::Integer);
  EXPECT_EQ(v->integer, 1);
  v = &parseOne(p, ":-9223372036854775808\r\n");
  EXPECT_EQ(v->integer, INT64_MIN);

  v = &parseOne(p, "$21\r\nbench/127.0.0.1:18181\r\n");
  EXPECT_EQ(v->type, Type::Bulk);
  EXPECT_EQ(v->str, "bench/127.0.0.1:18181");

  v = &parseOne(p, "$0\r\n\r\n");
  EXPECT_EQ(v->type, Type::Bulk);
  EXPECT_EQ(v->str, "");

  v = &parseOne(p, "$-1\r\n");
  EXPECT_EQ(v->type, Type::Nil);
  EXPECT_FALSE(v->isString());

  v = &parseOne(p, "*-1\r\n");
  EXPECT_EQ(v->type, Type::NilArray);

  v = &parseOne(p, "+\r\n");  // an empty status line
  EXPECT_EQ(v->type, Type::Status);
  EXPECT_EQ(v->str, "");
}

// A bulk string holds any bytes, CR and LF included: its length says where it ends.
TEST(RespParse, BulkStringsAreBinarySafe) {
  Parser p;
  const std::string value("a\r\nb\0\r\xff", 8);
  std::string in = "$8\r\n" + value + "\r\n";
  const Value& v = parseOne(p, in);
  EXPECT_EQ(v.type, Type::Bulk);
  EXPECT_EQ(v.str, value);
  EXPECT_EQ(v.str.data(), in.data() + 4);  // in place: no copy
}

TEST(RespParse, Arrays) {
  Parser p;
  // The compare-and-set script's answers.
  const Value& swapped = parseOne(p, "*2\r\n:1\r\n$6\r\npool/b\r\n");
  ASSERT_EQ(swapped.type, Type::Array);
  ASSERT_EQ(swapped.count, 2u);
  EXPECT_EQ(p.at(swapped, 0).type, Type::Integer);
  EXPECT_EQ(p.at(swapped, 0).integer, 1);
  EXPECT_EQ(p.at(swapped, 1).str, "pool/b");

  const Value& kept = parseOne(p, "*2\r\n:0\r\n$-1\r\n");
  ASSERT_EQ(kept.count, 2u);
  EXPECT_EQ(p.at(kept, 0).integer, 0);
  EXPECT_EQ(p.at(kept, 1).type, Type::Nil);

  // A pub/sub message.
  const Value& msg =
      parseOne(p, "*3\r\n$7\r\nmessage\r\n$17\r\nballast:v1:change\r\n$5\r\nkey:1\r\n");
  ASSERT_EQ(msg.count, 3u);
  EXPECT_EQ(p.at(msg, 0).str, "message");
  EXPECT_EQ(p.at(msg, 2).str, "key:1");

  const Value& empty = parseOne(p, "*0\r\n");
  EXPECT_EQ(empty.type, Type::Array);
  EXPECT_EQ(empty.count, 0u);

  // Nested: the elements of each array are contiguous, whatever the nesting.
  const Value& nested = parseOne(p, "*3\r\n*2\r\n:1\r\n:2\r\n+x\r\n*1\r\n*1\r\n$1\r\ny\r\n");
  ASSERT_EQ(nested.count, 3u);
  const Value& first = p.at(nested, 0);
  ASSERT_EQ(first.type, Type::Array);
  EXPECT_EQ(p.at(first, 0).integer, 1);
  EXPECT_EQ(p.at(first, 1).integer, 2);
  EXPECT_EQ(p.at(nested, 1).str, "x");
  const Value& third = p.at(nested, 2);
  ASSERT_EQ(third.count, 1u);
  ASSERT_EQ(p.at(third, 0).count, 1u);
  EXPECT_EQ(p.at(p.at(third, 0), 0).str, "y");
}

// Several replies in one read: each parse takes exactly one.
TEST(RespParse, PipelinedReplies) {
  const std::string in =
      "$-1\r\n$6\r\npool/a\r\n+OK\r\n:7\r\n*2\r\n:0\r\n$-1\r\n-ERR wrong\r\n$0\r\n\r\n";
  Parser p;
  std::vector<Type> types;
  std::vector<std::string> texts;
  size_t at = 0;
  while (at < in.size()) {
    size_t used = 0;
    ASSERT_EQ(p.parse(std::string_view(in).substr(at), &used), Parser::Status::Complete) << at;
    ASSERT_GT(used, 0u);
    types.push_back(p.root().type);
    texts.emplace_back(p.root().str);
    at += used;
  }
  EXPECT_EQ(at, in.size());
  EXPECT_EQ(types, (std::vector<Type>{Type::Nil, Type::Bulk, Type::Status, Type::Integer,
                                      Type::Array, Type::Error, Type::Bulk}));
  EXPECT_EQ(texts[1], "pool/a");
  EXPECT_EQ(texts[5], "ERR wrong");
}

// Replies that arrive in pieces, cut at every byte: incomplete until the last byte of each
// reply has come, then the same values as in one piece.
TEST(RespParse, SplitAtEveryByte) {
  const std::vector<std::string> replies = {
      "+OK\r\n",
      "-ERR unknown command\r\n",
      ":-42\r\n",
      "$5\r\nhe\r\nl\r\n",
      "$-1\r\n",
      "$0\r\n\r\n",
      "*-1\r\n",
      "*2\r\n:1\r\n$6\r\npool/b\r\n",
      "*3\r\n$9\r\nsubscribe\r\n$3\r\nch1\r\n:1\r\n",
      "*2\r\n*1\r\n$-1\r\n*0\r\n",
  };
  std::string all;
  for (const auto& r : replies) all += r;
  // Every way of cutting the stream in two, replies consumed as they complete.
  for (size_t cut = 0; cut <= all.size(); ++cut) {
    Parser p;
    std::string buffer = all.substr(0, cut);
    size_t next = 0;  // the reply expected next
    auto drain = [&] {
      for (;;) {
        size_t used = 0;
        Parser::Status st = p.parse(buffer, &used);
        if (st == Parser::Status::Incomplete) return;
        ASSERT_EQ(st, Parser::Status::Complete) << "cut " << cut;
        ASSERT_LT(next, replies.size());
        ASSERT_EQ(buffer.substr(0, used), replies[next]) << "cut " << cut;
        buffer.erase(0, used);
        ++next;
      }
    };
    drain();
    // Nothing complete is left unparsed, and what is left is a strict prefix of the next reply.
    if (next < replies.size()) {
      ASSERT_LT(buffer.size(), replies[next].size()) << "cut " << cut;
      ASSERT_EQ(replies[next].compare(0, buffer.size(), buffer), 0);
    }
    buffer += all.substr(cut);
    drain();
    EXPECT_EQ(next, replies.size()) << "cut " << cut;
    EXPECT_TRUE(buffer.empty());
  }
  // Fed one byte at a time.
  Parser p;
  std::string buffer;
  size_t done = 0;
  for (char c : all) {
    buffer += c;
    size_t used = 0;
    Parser::Status st = p.parse(buffer, &used);
    ASSERT_NE(st, Parser::Status::Invalid);
    if (st == Parser::Status::Complete) {
      EXPECT_EQ(buffer.substr(0, used), replies[done]);
      buffer.erase(0, used);
      ++done;
    }
  }
  EXPECT_EQ(done, replies.size());
}

TEST(RespParse, LargeValues) {
  std::string value(3 << 20, 'v');
  for (size_t i = 0; i < value.size(); i += 997) value[i] = static_cast<char>(i);
  std::string in = "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n:5\r\n";
  Parser p;
  size_t used = 0;
  // Arriving in 16 KiB reads: incomplete until the whole value is there.
  for (size_t have = 16384; have < value.size(); have += 16384)
    ASSERT_EQ(p.parse(std::string_view(in).substr(0, have), &used), Parser::Status::Incomplete);
  ASSERT_EQ(p.parse(in, &used), Parser::Status::Complete);
  EXPECT_EQ(p.root().type, Type::Bulk);
  EXPECT_EQ(p.root().str.size(), value.size());
  EXPECT_TRUE(p.root().str == value);
  ASSERT_EQ(p.parse(std::string_view(in).substr(used), &used), Parser::Status::Complete);
  EXPECT_EQ(p.root().integer, 5);

  // A long array (as an EXEC or a SCAN would answer).
  std::string arr = "*10000\r\n";
  for (int i = 0; i < 10000; ++i) arr += ":" + std::to_string(i) + "\r\n";
  const Value& a = parseOne(p, arr);
  ASSERT_EQ(a.count, 10000u);
  EXPECT_EQ(p.at(a, 9999).integer, 9999);
}

// An announced array larger than the bytes at hand waits for them (nothing is allocated for
// elements that have not come).
TEST(RespParse, HugeAnnouncedArrayIsIncompleteNotAllocated) {
  Parser p;
  size_t used = 0;
  EXPECT_EQ(p.parse("*2000000000\r\n:1\r\n", &used), Parser::Status::Incomplete);
  EXPECT_EQ(p.parse("$536870912\r\nabc", &used), Parser::Status::Incomplete);
}

TEST(RespParse, MalformedInputIsRefused) {
  for (std::string_view bad : {
           std::string_view("?what\r\n"),     // unknown type
           std::string_view("+OK\rX"),        // CR without LF
           std::string_view(":12a\r\n"),      // not a number
           std::string_view(":\r\n"),         // no number
           std::string_view(":+1\r\n"),       // a sign RESP does not use
           std::string_view(":99999999999999999999\r\n"),  // overflows
           std::string_view("$3\r\nabcd\r\n"),  // longer than announced
           std::string_view("$-2\r\n"),       // negative length
           std::string_view("$x\r\n"),        // not a length
           std::string_view("$536870913\r\n"),  // above Redis's limit
           std::string_view("*-2\r\n"),       // negative count
           std::string_view("*1\r\n!\r\n"),   // bad element
           // nested deeper than the parser goes
           std::string_view("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"),
       }) {
    Parser p;
    size_t used = 0;
    EXPECT_EQ(p.parse(bad, &used), Parser::Status::Invalid) << bad;
  }
  // Incomplete, not invalid, while what came so far may still become a reply.
  for (std::string_view partial :
       {"", "+", "+OK", "+OK\r", ":12", "$3\r\nab", "$3\r\nabc\r", "*2\r\n:1\r\n"}) {
    Parser p;
    size_t used = 0;
    EXPECT_EQ(p.parse(partial, &used), Parser::Status::Incomplete) << partial;
  }
}

}  // namespace
}  // namespace ballast::state::resp
