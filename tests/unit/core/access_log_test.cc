#include "core/access_log.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/json_escape.h"

namespace ballast {
namespace {

namespace fs = std::filesystem;
using namespace std::string_view_literals;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ballast-alog-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(text.substr(start, nl - start));
  if (start != text.size()) lines.push_back(text.substr(start));  // an unterminated tail
  return lines;
}

bool waitFor(const std::function<bool()>& done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// "w<worker> <seq> <padding>": recognisably whole, so a line cut or interleaved with another fails.
std::string makeLine(size_t worker, size_t seq, size_t padding = 60) {
  return "w" + std::to_string(worker) + " " + std::to_string(seq) + " " +
         std::string(padding, static_cast<char>('a' + worker % 26)) + " end";
}

struct ParsedLine {
  size_t worker = 0;
  size_t seq = 0;
};

bool parseLine(const std::string& line, size_t padding, ParsedLine* out) {
  unsigned long w = 0, s = 0;
  int consumed = 0;
  if (std::sscanf(line.c_str(), "w%lu %lu %n", &w, &s, &consumed) != 2) return false;
  out->worker = w;
  out->seq = s;
  return line == makeLine(w, s, padding);
}

TEST(AccessLog, LinesOfTwoWorkersArriveWholeAndInOrder) {
  TempDir dir;
  std::string path = dir.file("access.log");
  std::string error;
  auto log = AccessLog::open(path, 2, &error);
  ASSERT_TRUE(log) << error;
  EXPECT_EQ(log->target(), path);
  // Each worker writes under the buffer cap in total, so nothing can be dropped whatever the
  // scheduling, while the 64 KiB wake mark makes the writer swap buffers in the middle of it.
  constexpr size_t kLines = 10000;
  std::vector<std::thread> workers;
  for (size_t w = 0; w < 2; ++w)
    workers.emplace_back([&log, w] {
      for (size_t i = 0; i < kLines; ++i) log->write(w, makeLine(w, i));
    });
  for (auto& t : workers) t.join();
  ASSERT_TRUE(waitFor([&] { return log->written() == 2 * kLines; })) << log->written();
  EXPECT_EQ(log->dropped(), 0u);

  auto lines = splitLines(readFile(path));
  ASSERT_EQ(lines.size(), 2 * kLines);
  size_t next[2] = {0, 0};
  for (const auto& line : lines) {
    ParsedLine p;
    ASSERT_TRUE(parseLine(line, 60, &p)) << line;
    ASSERT_LT(p.worker, 2u);
    ASSERT_EQ(p.seq, next[p.worker]) << "worker " << p.worker;
    ++next[p.worker];
  }
}

TEST(AccessLog, FileIsCreatedWithMode0640AndAppendedTo) {
  TempDir dir;
  std::string path = dir.file("access.log");
  {
    std::ofstream(path) << "before\n";
  }
  std::string error;
  auto log = AccessLog::open(path, 1, &error);
  ASSERT_TRUE(log) << error;
  log->write(0, "after");
  log.reset();
  EXPECT_EQ(readFile(path), "before\nafter\n");

  std::string fresh = dir.file("fresh.log");
  mode_t mask = umask(0);
  umask(mask);
  log = AccessLog::open(fresh, 1, &error);
  ASSERT_TRUE(log) << error;
  struct stat st {};
  ASSERT_EQ(stat(fresh.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u & ~mask);
}

TEST(AccessLog, DestructorWritesWhatIsBuffered) {
  TempDir dir;
  std::string path = dir.file("access.log");
  std::string error;
  auto log = AccessLog::open(path, 3, &error);
  ASSERT_TRUE(log) << error;
  for (size_t i = 0; i < 100; ++i) log->write(i % 3, makeLine(i % 3, i / 3));
  log.reset();  // well before the writer's first tick
  auto lines = splitLines(readFile(path));
  ASSERT_EQ(lines.size(), 100u);
  for (size_t i = 0; i < 100; ++i) EXPECT_EQ(lines[i].substr(0, 1), "w");
}

TEST(AccessLog, FullBufferDropsAndCountsWholeLines) {
  // A FIFO that nobody reads: the writer blocks in write(2) once its capacity is full. It can then
  // hold at most the FIFO's capacity, the buffer it is writing and the worker's buffer (each the
  // 1 MiB cap plus a line); 3 MiB of lines must therefore drop some, whatever the timing.
  TempDir dir;
  std::string path = dir.file("fifo");
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  int rfd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);  // so that open() won't block
  ASSERT_GE(rfd, 0);
  fcntl(rfd, F_SETPIPE_SZ, 4096);
  std::string error;
  auto log = AccessLog::open(path, 1, &error);
  ASSERT_TRUE(log) << error;

  constexpr size_t kPadding = 90;
  const size_t total = (3u << 20) / (makeLine(0, 0, kPadding).size() + 1);
  for (size_t i = 0; i < total; ++i) log->write(0, makeLine(0, i, kPadding));  // never blocks
  EXPECT_GT(log->dropped(), 0u);

  // Now read everything: the writer catches up, and every line is either written or dropped.
  std::string received;
  std::thread reader([&] {
    fcntl(rfd, F_SETFL, fcntl(rfd, F_GETFL) & ~O_NONBLOCK);
    char buf[65536];
    for (ssize_t n; (n = ::read(rfd, buf, sizeof buf)) != 0;)
      if (n > 0) received.append(buf, static_cast<size_t>(n));
  });
  bool settled = waitFor([&] { return log->written() + log->dropped() == total; });
  uint64_t written = log->written();
  uint64_t dropped = log->dropped();
  log.reset();  // closes the FIFO: the reader sees end of file
  reader.join();
  ::close(rfd);
  ASSERT_TRUE(settled) << written << " + " << dropped << " != " << total;
  EXPECT_GT(dropped, 0u);
  EXPECT_LT(dropped, total);

  auto lines = splitLines(received);
  ASSERT_EQ(lines.size(), written);
  size_t last = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    ParsedLine p;
    ASSERT_TRUE(parseLine(lines[i], kPadding, &p)) << "line " << i << ": " << lines[i];
    if (i > 0) {
      ASSERT_GT(p.seq, last);
    }
    last = p.seq;
  }
}

TEST(AccessLog, WriteErrorsDropAndCountLines) {
  std::string error;
  auto log = AccessLog::open("/dev/full", 2, &error);  // every write fails with ENOSPC
  ASSERT_TRUE(log) << error;
  for (size_t i = 0; i < 5; ++i) log->write(i % 2, "line");
  ASSERT_TRUE(waitFor([&] { return log->dropped() == 5; })) << log->dropped();
  EXPECT_EQ(log->written(), 0u);
}

TEST(AccessLog, LineCutByAFailureIsTerminatedSoTheNextOnesStayWhole) {
  // RLIMIT_FSIZE makes a write stop in the middle of a line (then fail with EFBIG; the writer
  // blocks signals, so SIGXFSZ does not kill the process).
  TempDir dir;
  std::string path = dir.file("access.log");
  std::string error;
  auto log = AccessLog::open(path, 1, &error);
  ASSERT_TRUE(log) << error;
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit limited = saved;
  limited.rlim_cur = 1000;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limited), 0);
  const std::string line(63, 'x');  // 64 bytes with its newline: 15 fit, the 16th is cut
  for (int i = 0; i < 20; ++i) log->write(0, line);
  bool failed = waitFor([&] { return log->written() + log->dropped() == 20; });
  setrlimit(RLIMIT_FSIZE, &saved);
  ASSERT_TRUE(failed);
  EXPECT_EQ(log->written(), 15u);
  EXPECT_EQ(log->dropped(), 5u);

  log->write(0, "after");
  ASSERT_TRUE(waitFor([&] { return log->written() == 16; }));
  auto lines = splitLines(readFile(path));
  ASSERT_EQ(lines.size(), 17u);
  EXPECT_EQ(lines[14], line);
  EXPECT_EQ(lines[15], std::string(1000 - 15 * 64, 'x'));  // the cut line, terminated
  EXPECT_EQ(lines[16], "after");
}

TEST(AccessLog, ReopenAfterRenameWritesToTheNewFile) {
  TempDir dir;
  std::string path = dir.file("access.log");
  std::string rotated = dir.file("access.log.1");
  std::string error;
  auto log = AccessLog::open(path, 2, &error);
  ASSERT_TRUE(log) << error;
  log->write(0, "old");
  ASSERT_TRUE(waitFor([&] { return log->written() == 1; }));
  ASSERT_EQ(std::rename(path.c_str(), rotated.c_str()), 0);
  log->write(1, "after the rename, before the reopen");
  ASSERT_TRUE(waitFor([&] { return log->written() == 2; }));
  ASSERT_TRUE(log->reopen(&error)) << error;
  log->write(0, "new");
  log->write(1, "new too");
  log.reset();
  EXPECT_EQ(readFile(rotated), "old\nafter the rename, before the reopen\n");
  EXPECT_EQ(readFile(path), "new\nnew too\n");
}

TEST(AccessLog, FailedReopenKeepsTheOldFile) {
  TempDir dir;
  fs::create_directory(dir.file("logs"));
  std::string path = dir.file("logs/access.log");
  std::string error;
  auto log = AccessLog::open(path, 1, &error);
  ASSERT_TRUE(log) << error;
  fs::rename(dir.file("logs"), dir.file("moved"));  // the directory is gone: reopen fails
  EXPECT_FALSE(log->reopen(&error));
  EXPECT_EQ(error, "cannot open access log \"" + path + "\": No such file or directory");
  log->write(0, "kept");
  log.reset();
  EXPECT_EQ(readFile(dir.file("moved/access.log")), "kept\n");
}

TEST(AccessLog, BadPathIsAnError) {
  std::string error;
  auto log = AccessLog::open("/nonexistent-ballast-dir/access.log", 1, &error);
  EXPECT_FALSE(log);
  EXPECT_EQ(error,
            "cannot open access log \"/nonexistent-ballast-dir/access.log\": No such file or "
            "directory");
}

TEST(AccessLog, StdoutOnANonBlockingPipeWaitsForTheReader) {
  // fd 1 becomes a small non-blocking pipe read slowly: the writer meets EAGAIN and must retry.
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  fcntl(fds[1], F_SETPIPE_SZ, 4096);
  fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  std::fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(dup2(fds[1], STDOUT_FILENO), STDOUT_FILENO);
  ::close(fds[1]);

  std::string received;
  std::thread reader([&] {
    char buf[1024];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
      if (n > 0) received.append(buf, static_cast<size_t>(n));
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  constexpr size_t kLines = 2000;  // ~150 KB through a 4 KiB pipe
  std::string error;
  auto log = AccessLog::open("stdout", 1, &error);
  bool opened = log != nullptr;
  if (log) {
    for (size_t i = 0; i < kLines; ++i) log->write(0, makeLine(0, i));
    log.reset();  // flushes to fd 1 and leaves it open
  }
  bool still_open = fcntl(STDOUT_FILENO, F_GETFD) != -1;
  dup2(saved, STDOUT_FILENO);  // the pipe's last write end goes: the reader sees end of file
  ::close(saved);
  reader.join();
  ::close(fds[0]);

  ASSERT_TRUE(opened) << error;
  EXPECT_TRUE(still_open);
  auto lines = splitLines(received);
  ASSERT_EQ(lines.size(), kLines);
  for (size_t i = 0; i < kLines; ++i) ASSERT_EQ(lines[i], makeLine(0, i));
}

std::string json(std::string_view s) {
  std::string out;
  appendJsonString(out, s);
  return out;
}

TEST(JsonEscape, QuotesAndEscapesQuoteAndBackslash) {
  EXPECT_EQ(json(""), R"("")");
  EXPECT_EQ(json("GET /index.html"), R"("GET /index.html")");
  EXPECT_EQ(json(R"(a"b\c)"), R"("a\"b\\c")");
  std::string out = "{\"k\":";
  appendJsonString(out, "v");
  EXPECT_EQ(out, R"({"k":"v")");
}

TEST(JsonEscape, ControlCharactersBecomeUnicodeEscapes) {
  EXPECT_EQ(json("a\nb\tc\r"), R"("a\u000ab\u0009c\u000d")");
  EXPECT_EQ(json("\0\x1f\x7f"sv), R"("\u0000\u001f\u007f")");
  EXPECT_EQ(json(" ~"), R"(" ~")");
}

TEST(JsonEscape, WellFormedUtf8PassesThrough) {
  for (std::string_view s : {"caf\xc3\xa9"sv,                 // U+00E9
                             "\xc2\x80\xc2\x9f"sv,            // C1 controls are well formed
                             "\xe2\x82\xac"sv,                // U+20AC
                             "\xed\x9f\xbf\xee\x80\x80"sv,    // U+D7FF, U+E000: around surrogates
                             "\xef\xbf\xbf"sv,                // U+FFFF
                             "\xf0\x9f\x98\x80"sv,            // U+1F600
                             "\xf4\x8f\xbf\xbf"sv}) {         // U+10FFFF
    EXPECT_EQ(json(s), "\"" + std::string(s) + "\"");
  }
}

TEST(JsonEscape, EachIllFormedSubsequenceBecomesOneReplacement) {
  EXPECT_EQ(json("a\x80z"), R"("a\ufffdz")");                    // a stray continuation
  EXPECT_EQ(json("\xc0\xaf"), R"("\ufffd\ufffd")");              // overlong '/'
  EXPECT_EQ(json("\xc1\xbf"), R"("\ufffd\ufffd")");              // overlong
  EXPECT_EQ(json("\xe0\x80\xaf"), R"("\ufffd\ufffd\ufffd")");    // overlong, 3 bytes
  EXPECT_EQ(json("\xf0\x80\x80\xaf"), R"("\ufffd\ufffd\ufffd\ufffd")");
  EXPECT_EQ(json("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");    // surrogate U+D800
  EXPECT_EQ(json("\xf4\x90\x80\x80"), R"("\ufffd\ufffd\ufffd\ufffd")");  // over U+10FFFF
  EXPECT_EQ(json("\xf5\xff\xfe"), R"("\ufffd\ufffd\ufffd")");
  EXPECT_EQ(json("\xe2\x82"), R"("\ufffd")");                    // truncated at the end
  EXPECT_EQ(json("\xe2\x82z"), R"("\ufffdz")");                  // truncated, then ASCII
  EXPECT_EQ(json("\xf0\x9f\x98\""), R"("\ufffd\"")");            // truncated, then a quote
  EXPECT_EQ(json("\xe2\x82\xe2\x82\xac"), "\"\\ufffd\xe2\x82\xac\"");  // then a whole one
}

}  // namespace
}  // namespace ballast
