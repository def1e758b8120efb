#include "http/cookie.h"

#include <gtest/gtest.h>

namespace ballast::http {
namespace {

TEST(CookieIn, FindsTheNamedCookieWithWhitespaceAroundIgnored) {
  EXPECT_EQ(cookieIn("a=1; SID=x2; b=3", "SID"), "x2");
  EXPECT_EQ(cookieIn("SID=x2", "SID"), "x2");
  EXPECT_EQ(cookieIn("a=1;\tSID=x2", "SID"), "x2");
  EXPECT_EQ(cookieIn("SID=x2 ; a=1", "SID"), "x2");
  EXPECT_EQ(cookieIn("a=1;  SID =  x2  ", "SID"), "x2");
  EXPECT_EQ(cookieIn("SID=\"q v\"", "SID"), "\"q v\"");  // a quoted value is the value as sent
  EXPECT_EQ(cookieIn("SID=; a=1", "SID"), "");
  EXPECT_EQ(cookieIn("SID=first; SID=second", "SID"), "first");
}

TEST(CookieIn, NamesMatchExactly) {
  EXPECT_EQ(cookieIn("XSID=1; SID2=2; sid=3", "SID"), std::nullopt);
  EXPECT_EQ(cookieIn("SID", "SID"), std::nullopt);  // no '='
  EXPECT_EQ(cookieIn("", "SID"), std::nullopt);
  EXPECT_EQ(cookieIn("a=SID=1", "SID"), std::nullopt);
}

constexpr std::time_t kNow = 1796000000;  // 2026-11-30

TEST(SetCookie, NameValueAndAttributes) {
  auto c = parseSetCookie("JSESSIONID=w2 ; Path=/; HttpOnly", kNow);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->name, "JSESSIONID");
  EXPECT_EQ(c->value, "w2");
  EXPECT_FALSE(c->expires_now);
  c = parseSetCookie(" JSESSIONID = w1", kNow);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->name, "JSESSIONID");
  EXPECT_EQ(c->value, "w1");
  EXPECT_EQ(setCookieName(" JSESSIONID = w1; Path=/"), "JSESSIONID");
  EXPECT_EQ(setCookieName("novalue; Path=/"), "");
  EXPECT_FALSE(parseSetCookie("novalue; Path=/", kNow));
  EXPECT_FALSE(parseSetCookie("=v", kNow));
}

TEST(SetCookie, DeletionByMaxAgeOrAPastExpires) {
  EXPECT_TRUE(parseSetCookie("S=deleted; Max-Age=0", kNow)->expires_now);
  EXPECT_TRUE(parseSetCookie("S=deleted; max-age=-1", kNow)->expires_now);
  EXPECT_FALSE(parseSetCookie("S=v; Max-Age=3600", kNow)->expires_now);
  EXPECT_TRUE(parseSetCookie("S=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT", kNow)->expires_now);
  EXPECT_TRUE(parseSetCookie("S=deleted; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/", kNow)
                  ->expires_now);
  EXPECT_FALSE(parseSetCookie("S=v; Expires=Wed, 30 Nov 2033 10:00:00 GMT", kNow)->expires_now);
  // Max-Age wins over Expires (RFC 6265 5.3 step 3), whatever their order.
  EXPECT_FALSE(parseSetCookie("S=v; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=60", kNow)
                   ->expires_now);
  EXPECT_FALSE(parseSetCookie("S=v; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT", kNow)
                   ->expires_now);
  // Attributes that do not parse are ignored.
  EXPECT_FALSE(parseSetCookie("S=v; Max-Age=soon; Expires=never", kNow)->expires_now);
}

TEST(CookieDate, TheFormsRfc6265Reads) {
  EXPECT_EQ(parseCookieDate("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
  EXPECT_EQ(parseCookieDate("Thu, 01-Jan-70 00:00:01 GMT"), 1);
  EXPECT_EQ(parseCookieDate("Sun Nov  6 08:49:37 1994"), 784111777);  // asctime
  EXPECT_EQ(parseCookieDate("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
  EXPECT_EQ(parseCookieDate("06 november 2094 08:49:37"), 3939871777);
  EXPECT_EQ(parseCookieDate("Sun, 06 Nov 1994"), std::nullopt);  // no time
  EXPECT_EQ(parseCookieDate("Sun, 32 Nov 1994 08:49:37"), std::nullopt);
  EXPECT_EQ(parseCookieDate("Sun, 06 Nov 1994 24:00:00"), std::nullopt);
  EXPECT_EQ(parseCookieDate("Sun, 06 Xyz 1994 08:49:37"), std::nullopt);
  EXPECT_EQ(parseCookieDate("Sun, 06 Nov 1600 08:49:37"), std::nullopt);
  EXPECT_EQ(parseCookieDate(""), std::nullopt);
}

}  // namespace
}  // namespace ballast::http
