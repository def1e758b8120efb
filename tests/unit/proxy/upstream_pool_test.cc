#include "proxy/upstream.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "core/address.h"
#include "core/event_loop.h"
#include "lb/server_state.h"

namespace ballast::proxy {
namespace {

struct NoUser : UpstreamUser {
  void onUpstreamEvents(uint32_t) override {}
};

// A listening socket on 127.0.0.1 and a pooled connection to it, idle in the pool, whose server
// side the test holds: nothing runs the loop, so the pool learns of a close only by asking.
class IdleConnection : public ::testing::Test {
 protected:
  void SetUp() override {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(listener_, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(::listen(listener_, 4), 0);
    socklen_t len = sizeof sa;
    ASSERT_EQ(::getsockname(listener_, reinterpret_cast<sockaddr*>(&sa), &len), 0);
    std::string error;
    auto address =
        SocketAddress::parseLiteral("127.0.0.1:" + std::to_string(ntohs(sa.sin_port)), &error);
    ASSERT_TRUE(address) << error;

    UpstreamConn* conn = pool_.connect(*address, state_, 0, &user_);
    ASSERT_NE(conn, nullptr);
    pollfd p{conn->fd(), POLLOUT, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);  // connected
    server_ = ::accept(listener_, nullptr, nullptr);
    ASSERT_GE(server_, 0);
    pool_.release(conn, settings_);
    ASSERT_EQ(pool_.idleCount(), 1u);
  }
  void TearDown() override {
    pool_.closeIdle();
    if (server_ >= 0) ::close(server_);
    if (listener_ >= 0) ::close(listener_);
  }
  // Waits until the server side's close reached the pooled socket.
  void waitForClose(int fd) {
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
  }

  EventLoop loop_;
  UpstreamPool pool_{loop_, 0};
  std::shared_ptr<lb::ServerState> state_ = std::make_shared<lb::ServerState>("p/s", 1, 0);
  config::ConnectionPoolSettings settings_;
  NoUser user_;
  int listener_ = -1;
  int server_ = -1;
};

TEST_F(IdleConnection, AnOpenConnectionIsTakenWithOrWithoutTheCheck) {
  UpstreamConn* conn = pool_.take(state_->key(), 0, &user_, /*check_open=*/true);
  ASSERT_NE(conn, nullptr);
  EXPECT_TRUE(conn->reused());
  pool_.release(conn, settings_);
  conn = pool_.take(state_->key(), 0, &user_);
  ASSERT_NE(conn, nullptr);
  pool_.close(conn);
}

TEST_F(IdleConnection, TheCheckDropsAConnectionTheServerClosed) {
  int fd = -1;
  {
    UpstreamConn* conn = pool_.take(state_->key(), 0, &user_);
    ASSERT_NE(conn, nullptr);
    fd = conn->fd();
    pool_.release(conn, settings_);
  }
  ::close(server_);
  server_ = -1;
  waitForClose(fd);
  // Its FIN is here, but the loop has not run: only the check sees it.
  EXPECT_EQ(pool_.take(state_->key(), 0, &user_, /*check_open=*/true), nullptr);
  EXPECT_EQ(pool_.idleCount(), 0u);
}

TEST_F(IdleConnection, WithoutTheCheckTheClosedConnectionIsHandedOut) {
  UpstreamConn* conn = pool_.take(state_->key(), 0, &user_);
  ASSERT_NE(conn, nullptr);
  int fd = conn->fd();
  pool_.release(conn, settings_);
  ::close(server_);
  server_ = -1;
  waitForClose(fd);
  conn = pool_.take(state_->key(), 0, &user_);  // idempotent requests: a replay covers the race
  ASSERT_NE(conn, nullptr);
  pool_.close(conn);
}

TEST_F(IdleConnection, TheCheckDropsAConnectionWithStrayBytes) {
  ASSERT_EQ(::send(server_, "x", 1, 0), 1);  // an idle server may only close
  UpstreamConn* conn = pool_.take(state_->key(), 0, &user_);
  ASSERT_NE(conn, nullptr);
  int fd = conn->fd();
  pool_.release(conn, settings_);
  waitForClose(fd);  // readable
  EXPECT_EQ(pool_.take(state_->key(), 0, &user_, /*check_open=*/true), nullptr);
}

}  // namespace
}  // namespace ballast::proxy
