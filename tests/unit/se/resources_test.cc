#include "se/resources.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace ballast::se {
namespace {

TEST(Resources, ReadsSaneValuesOfThisProcess) {
  ProcessResources before = readProcessResources();
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ProcessResources r = readProcessResources();
  ::close(fd);
  EXPECT_GE(r.cpu_cores, 1u);
  EXPECT_GT(r.memory_rss_bytes, 1u << 20);  // a gtest binary holds more than a MiB
  EXPECT_GT(r.memory_total_bytes, r.memory_rss_bytes);
  EXPECT_GE(r.open_files, 3u);  // stdin, stdout, stderr at least
  EXPECT_EQ(r.open_files, before.open_files + 1);  // the listing's own descriptor is not counted
  EXPECT_GT(r.max_open_files == 0 ? UINT64_MAX : r.max_open_files, r.open_files);
  EXPECT_GE(r.cpu_seconds, before.cpu_seconds);
}

TEST(Resources, CpuPercentIsOfAllCores) {
  EXPECT_DOUBLE_EQ(cpuPercent(0.5, 1.0, 1), 50.0);
  EXPECT_DOUBLE_EQ(cpuPercent(1.0, 1.0, 4), 25.0);
  EXPECT_DOUBLE_EQ(cpuPercent(9.0, 1.0, 2), 100.0);  // clamped (clock granularity)
  EXPECT_DOUBLE_EQ(cpuPercent(-1.0, 1.0, 2), 0.0);
  EXPECT_DOUBLE_EQ(cpuPercent(1.0, 0.0, 2), 0.0);
  // Burning CPU for a while shows.
  double start = processCpuSeconds();
  volatile uint64_t spin = 0;
  while (processCpuSeconds() - start < 0.05) spin = spin + 1;
  EXPECT_GE(processCpuSeconds() - start, 0.05);
}

TEST(Resources, ParsesMemTotal) {
  EXPECT_EQ(parseMemTotal("MemTotal:       24683652 kB\nMemFree:  1 kB\n"), 24683652ull * 1024);
  EXPECT_EQ(parseMemTotal("MemFree:  1 kB\nMemTotal: 2 kB"), 2048u);
  EXPECT_EQ(parseMemTotal("MemFree:  1 kB\n"), 0u);
  EXPECT_EQ(parseMemTotal(""), 0u);
}

class CgroupTree : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ballast-cgroup-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    std::filesystem::create_directories(root_ + "/a/b");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void write(const std::string& path, const std::string& text) { std::ofstream(root_ + path) << text; }

  std::string root_;
};

TEST_F(CgroupTree, TakesTheSmallestLimitOnTheWayToTheRoot) {
  write("/a/b/memory.max", "max\n");
  write("/a/memory.max", "1073741824\n");
  EXPECT_EQ(cgroupMemoryLimit(root_, "0::/a/b\n"), 1073741824u);
  write("/a/b/memory.max", "536870912\n");
  EXPECT_EQ(cgroupMemoryLimit(root_, "0::/a/b\n"), 536870912u);
  write("/memory.max", "1000\n");  // the namespace's root (a container's own cgroup)
  EXPECT_EQ(cgroupMemoryLimit(root_, "0::/a/b"), 1000u);
  EXPECT_EQ(cgroupMemoryLimit(root_, "0::/\n"), 1000u);
}

TEST_F(CgroupTree, NoLimitWithoutCgroupV2OrWithMaxEverywhere) {
  write("/a/b/memory.max", "max\n");
  write("/a/memory.max", "max\n");
  EXPECT_EQ(cgroupMemoryLimit(root_, "0::/a/b\n"), std::nullopt);
  // cgroup v1 only: no "0::" line.
  EXPECT_EQ(cgroupMemoryLimit(root_, "4:memory:/a\n1:cpu:/\n"), std::nullopt);
  // A hybrid host: the v1 lines come first.
  write("/a/memory.max", "4096\n");
  EXPECT_EQ(cgroupMemoryLimit(root_, "4:memory:/x\n0::/a/b\n"), 4096u);
}

}  // namespace
}  // namespace ballast::se
