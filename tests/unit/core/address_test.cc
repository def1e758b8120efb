#include "core/address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/un.h>

#include <cstring>
#include <string>

namespace ballast {
namespace {

SocketAddress mustParse(const std::string& text) {
  std::string error;
  auto address = SocketAddress::parseLiteral(text, &error);
  EXPECT_TRUE(address.has_value()) << text << ": " << error;
  return address.value_or(SocketAddress{});
}

std::string parseError(const std::string& text) {
  std::string error;
  auto address = SocketAddress::parseLiteral(text, &error);
  EXPECT_FALSE(address.has_value()) << text << " parsed as " << address->toString();
  return error;
}

std::string resolveError(const std::string& text) {
  std::string error;
  auto address = SocketAddress::resolve(text, &error);
  EXPECT_FALSE(address.has_value()) << text << " resolved to " << address->toString();
  return error;
}

TEST(SocketAddressTest, ParsesIpv4) {
  SocketAddress a = mustParse("127.0.0.1:80");
  EXPECT_TRUE(a.valid());
  EXPECT_EQ(a.family(), AF_INET);
  EXPECT_EQ(a.length(), sizeof(sockaddr_in));
  EXPECT_EQ(a.port(), 80);
  EXPECT_EQ(a.hostString(), "127.0.0.1");
  EXPECT_EQ(a.toString(), "127.0.0.1:80");
  auto* sin = reinterpret_cast<const sockaddr_in*>(a.sockaddrPtr());
  EXPECT_EQ(ntohl(sin->sin_addr.s_addr), 0x7f000001u);
  EXPECT_EQ(ntohs(sin->sin_port), 80);
}

TEST(SocketAddressTest, ParsesWildcardAndPortBounds) {
  EXPECT_EQ(mustParse("0.0.0.0:8080").toString(), "0.0.0.0:8080");
  EXPECT_EQ(mustParse("10.1.2.3:1").port(), 1);
  EXPECT_EQ(mustParse("10.1.2.3:65535").port(), 65535);
}

TEST(SocketAddressTest, ParsesIpv6) {
  SocketAddress a = mustParse("[::1]:80");
  EXPECT_EQ(a.family(), AF_INET6);
  EXPECT_EQ(a.length(), sizeof(sockaddr_in6));
  EXPECT_EQ(a.port(), 80);
  EXPECT_EQ(a.hostString(), "::1");
  EXPECT_EQ(a.toString(), "[::1]:80");

  EXPECT_EQ(mustParse("[::]:8080").toString(), "[::]:8080");
  // Formatting is canonical (RFC 5952), whatever the spelling.
  EXPECT_EQ(mustParse("[2001:0DB8:0000:0000::0001]:443").toString(), "[2001:db8::1]:443");
  EXPECT_EQ(mustParse("[::ffff:10.0.0.1]:80").toString(), "[::ffff:10.0.0.1]:80");
}

TEST(SocketAddressTest, RejectsMalformedText) {
  EXPECT_EQ(parseError(""), "expected host:port");
  EXPECT_EQ(parseError("127.0.0.1"), "expected host:port");
  EXPECT_EQ(parseError("127.0.0.1:"), "expected host:port");
  EXPECT_EQ(parseError(":8080"), "expected host:port");
  EXPECT_EQ(parseError("[::1]"), "expected host:port");
  EXPECT_EQ(parseError("[::1]80"), "expected host:port");
  EXPECT_EQ(parseError("[::1:80"), "expected [IPv6]:port");
  EXPECT_EQ(parseError("::1:80"), "an IPv6 address needs brackets, e.g. [::1]:8080");
}

TEST(SocketAddressTest, RejectsBadPorts) {
  for (const char* text : {"127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:99999", "127.0.0.1:-1",
                           "127.0.0.1:+80", "127.0.0.1: 80", "127.0.0.1:80 ", "127.0.0.1:http",
                           "127.0.0.1:0x50", "127.0.0.1:123456", "[::1]:0"}) {
    EXPECT_EQ(parseError(text), "port must be 1-65535") << text;
  }
}

TEST(SocketAddressTest, RejectsHostsThatAreNotIpLiterals) {
  EXPECT_EQ(parseError("*:8080"), "expected an IP address, e.g. 0.0.0.0:8080");
  EXPECT_EQ(parseError("localhost:8080"), "expected an IP address, e.g. 0.0.0.0:8080");
  EXPECT_EQ(parseError(" 127.0.0.1:8080"), "expected an IP address, e.g. 0.0.0.0:8080");
  EXPECT_EQ(parseError("256.0.0.1:80"), "invalid IPv4 address");
  EXPECT_EQ(parseError("1.2.3:80"), "invalid IPv4 address");
  EXPECT_EQ(parseError("010.0.0.1:80"), "invalid IPv4 address");
  EXPECT_EQ(parseError("[::g]:80"), "invalid IPv6 address");
  EXPECT_EQ(parseError("[]:80"), "invalid IPv6 address");
  EXPECT_EQ(parseError("[1.2.3.4]:80"), "invalid IPv6 address");
  EXPECT_EQ(parseError("[fe80::1%eth0]:80"), "invalid IPv6 address");
}

TEST(SocketAddressTest, ErrorPointerMayBeNull) {
  EXPECT_FALSE(SocketAddress::parseLiteral("nope", nullptr).has_value());
  EXPECT_FALSE(SocketAddress::resolve("nope", nullptr).has_value());
  EXPECT_TRUE(SocketAddress::parseLiteral("127.0.0.1:1", nullptr).has_value());
}

TEST(SocketAddressTest, ResolvesLocalhost) {
  std::string error;
  auto address = SocketAddress::resolve("localhost:9001", &error);
  ASSERT_TRUE(address.has_value()) << error;
  EXPECT_EQ(address->port(), 9001);
  // Which loopback comes first depends on the host's resolver configuration.
  EXPECT_TRUE(*address == mustParse("127.0.0.1:9001") || *address == mustParse("[::1]:9001"))
      << address->toString();
}

TEST(SocketAddressTest, ResolveTakesIpLiteralsWithoutLookup) {
  std::string error;
  auto v4 = SocketAddress::resolve("192.0.2.7:9001", &error);
  ASSERT_TRUE(v4.has_value()) << error;
  EXPECT_EQ(*v4, mustParse("192.0.2.7:9001"));
  auto v6 = SocketAddress::resolve("[2001:db8::7]:9001", &error);
  ASSERT_TRUE(v6.has_value()) << error;
  EXPECT_EQ(v6->toString(), "[2001:db8::7]:9001");
}

TEST(SocketAddressTest, ResolveRejectsWhatParseLiteralRejects) {
  EXPECT_EQ(resolveError("localhost"), "expected host:port");
  EXPECT_EQ(resolveError("localhost:0"), "port must be 1-65535");
  EXPECT_EQ(resolveError(":80"), "expected host:port");
  EXPECT_EQ(resolveError("[::1:80"), "expected [IPv6]:port");
  EXPECT_EQ(resolveError("[nope]:80"), "invalid IPv6 address");
  // Digits and dots are never handed to the resolver, which would read "10.1" as 10.0.0.1.
  EXPECT_EQ(resolveError("10.1:80"), "invalid IPv4 address");
  EXPECT_EQ(resolveError("999.1.1.1:80"), "invalid IPv4 address");
}

TEST(SocketAddressTest, ResolveReportsUnknownHosts) {
  // RFC 2606 reserves .invalid: it never resolves.
  std::string error = resolveError("no-such-host.invalid:80");
  EXPECT_EQ(error.rfind("cannot resolve \"no-such-host.invalid\": ", 0), 0u) << error;
  EXPECT_GT(error.size(), std::string("cannot resolve \"no-such-host.invalid\": ").size());
}

TEST(SocketAddressTest, FromSockaddrCopiesInetFamilies) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(4242);
  sin.sin_addr.s_addr = htonl(0x0a000001);
  SocketAddress v4 = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  EXPECT_EQ(v4.toString(), "10.0.0.1:4242");

  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(443);
  sin6.sin6_addr = in6addr_loopback;
  SocketAddress v6 = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof sin6);
  EXPECT_EQ(v6.toString(), "[::1]:443");

  // A sockaddr_storage-sized length (as accept() reports it) is fine too.
  sockaddr_storage storage{};
  std::memcpy(&storage, &sin, sizeof sin);
  EXPECT_EQ(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&storage), sizeof storage), v4);
}

TEST(SocketAddressTest, FromSockaddrRejectsOtherFamiliesAndShortLengths) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  EXPECT_FALSE(
      SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof sin - 1).valid());
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  EXPECT_FALSE(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sun), sizeof sun).valid());
  EXPECT_FALSE(SocketAddress::fromSockaddr(nullptr, 0).valid());
}

TEST(SocketAddressTest, DefaultIsInvalid) {
  SocketAddress a;
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(a.length(), 0u);
  EXPECT_EQ(a.port(), 0);
  EXPECT_EQ(a.toString(), "");
  EXPECT_EQ(a.hostString(), "");
}

TEST(SocketAddressTest, EqualityComparesFamilyAddressAndPort) {
  EXPECT_EQ(mustParse("127.0.0.1:80"), mustParse("127.0.0.1:80"));
  EXPECT_EQ(mustParse("[::1]:80"), mustParse("[0:0::1]:80"));
  EXPECT_FALSE(mustParse("127.0.0.1:80") == mustParse("127.0.0.1:81"));
  EXPECT_FALSE(mustParse("127.0.0.1:80") == mustParse("127.0.0.2:80"));
  EXPECT_FALSE(mustParse("[::1]:80") == mustParse("[::2]:80"));
  // An IPv4-mapped IPv6 address is a different socket address from the IPv4 one.
  EXPECT_FALSE(mustParse("10.0.0.1:80") == mustParse("[::ffff:10.0.0.1]:80"));
  EXPECT_EQ(SocketAddress{}, SocketAddress{});
  EXPECT_FALSE(SocketAddress{} == mustParse("0.0.0.0:1"));
}

}  // namespace
}  // namespace ballast
