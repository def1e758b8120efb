#include "core/buffer.h"

#include <gtest/gtest.h>

#include <string>

namespace ballast {
namespace {

TEST(BufferPool, RecyclesBlocksUpToItsLimit) {
  BufferPool pool(64, 1);
  char* a = pool.acquire();
  char* b = pool.acquire();
  EXPECT_EQ(pool.inUse(), 2u);
  pool.release(a);
  pool.release(b);  // over the free limit: given back to the allocator
  EXPECT_EQ(pool.inUse(), 0u);
  EXPECT_EQ(pool.acquire(), a);  // the kept block comes back first
  pool.release(a);
}

TEST(Buffer, HoldsNoBlockUntilWrittenAndAfterRelease) {
  BufferPool pool(64, 4);
  Buffer buf(pool);
  EXPECT_EQ(pool.inUse(), 0u);
  EXPECT_EQ(buf.writable(), 64u);
  ASSERT_TRUE(buf.append("hello"));
  EXPECT_EQ(pool.inUse(), 1u);
  buf.consume(5);
  buf.releaseIfEmpty();
  EXPECT_EQ(pool.inUse(), 0u);
}

TEST(Buffer, AppendIsAllOrNothing) {
  BufferPool pool(8, 4);
  Buffer buf(pool);
  ASSERT_TRUE(buf.append("12345"));
  EXPECT_FALSE(buf.append("6789"));
  EXPECT_EQ(buf.view(), "12345");
  EXPECT_TRUE(buf.append("678"));
  EXPECT_TRUE(buf.full());
  EXPECT_EQ(buf.space(), 0u);
}

TEST(Buffer, CompactsToMakeRoomAfterConsuming) {
  BufferPool pool(16, 4);
  Buffer buf(pool);
  ASSERT_TRUE(buf.append("0123456789abcdef"));
  buf.consume(10);
  EXPECT_EQ(buf.space(), 10u);
  ASSERT_TRUE(buf.append("ghij"));  // needs the consumed front
  EXPECT_EQ(buf.view(), "abcdefghij");
  // writePtr compacts when the tail is short (under a quarter), keeping unread bytes in order.
  ASSERT_TRUE(buf.append("klmn"));  // 14 bytes: a 2-byte tail
  buf.consume(2);
  char* p = buf.writePtr();
  EXPECT_EQ(buf.writable(), 4u);
  p[0] = 'o';
  buf.produced(1);
  EXPECT_EQ(buf.view(), "cdefghijklmno");
}

TEST(Buffer, ConsumingEverythingRewinds) {
  BufferPool pool(16, 4);
  Buffer buf(pool);
  ASSERT_TRUE(buf.append("abc"));
  buf.consume(3);
  EXPECT_TRUE(buf.empty());
  EXPECT_EQ(buf.writable(), 16u);
}

}  // namespace
}  // namespace ballast
