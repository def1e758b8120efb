#include "se/resources.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>

namespace ballast::se {

namespace {

// The whole of a small file (/proc files have no size to ask for), or nullopt.
std::optional<std::string> readSmallFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

std::optional<uint64_t> parseUnsigned(std::string_view text) {
  size_t start = text.find_first_not_of(" \t");
  if (start == std::string_view::npos) return std::nullopt;
  text.remove_prefix(start);
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  return value;
}

// Resident pages (the second field of /proc/self/statm) in bytes.
uint64_t residentBytes() {
  std::optional<std::string> statm = readSmallFile("/proc/self/statm");
  if (!statm) return 0;
  size_t space = statm->find(' ');
  if (space == std::string::npos) return 0;
  std::optional<uint64_t> pages = parseUnsigned(std::string_view(*statm).substr(space + 1));
  long page = ::sysconf(_SC_PAGESIZE);
  return pages && page > 0 ? *pages * static_cast<uint64_t>(page) : 0;
}

uint64_t openFiles() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  // The listing's own descriptor is in it: not one the engine holds.
  std::string own = std::to_string(::dirfd(dir));
  uint64_t n = 0;
  while (dirent* entry = ::readdir(dir)) {
    std::string_view name = entry->d_name;
    if (name != "." && name != ".." && name != own) ++n;
  }
  ::closedir(dir);
  return n;
}

}  // namespace

double processCpuSeconds() {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

double cpuPercent(double cpu_seconds, double interval_seconds, unsigned cores) {
  if (interval_seconds <= 0 || cores == 0 || cpu_seconds <= 0) return 0;
  return std::clamp(100.0 * cpu_seconds / (interval_seconds * cores), 0.0, 100.0);
}

uint64_t parseMemTotal(std::string_view meminfo) {
  constexpr std::string_view kKey = "MemTotal:";
  size_t at = 0;
  while (at < meminfo.size()) {
    size_t end = meminfo.find('\n', at);
    std::string_view line = meminfo.substr(at, end == std::string_view::npos ? end : end - at);
    if (line.substr(0, kKey.size()) == kKey) {
      std::optional<uint64_t> kib = parseUnsigned(line.substr(kKey.size()));
      return kib ? *kib * 1024 : 0;  // the kernel writes it in kB (KiB)
    }
    if (end == std::string_view::npos) break;
    at = end + 1;
  }
  return 0;
}

std::optional<uint64_t> cgroupMemoryLimit(const std::string& cgroup_root, std::string_view proc_self_cgroup) {
  // cgroup v2 is the line of hierarchy 0 with no controller list: "0::/path".
  std::optional<std::string> path;
  size_t at = 0;
  while (at < proc_self_cgroup.size()) {
    size_t end = proc_self_cgroup.find('\n', at);
    std::string_view line =
        proc_self_cgroup.substr(at, end == std::string_view::npos ? end : end - at);
    if (line.substr(0, 3) == "0::") {
      path = std::string(line.substr(3));
      break;
    }
    if (end == std::string_view::npos) break;
    at = end + 1;
  }
  if (!path) return std::nullopt;
  while (!path->empty() && path->back() == '/') path->pop_back();
  std::optional<uint64_t> limit;
  for (;;) {
    // "max" (no limit) does not parse; the root has no memory.max at all.
    if (std::optional<std::string> text = readSmallFile(cgroup_root + *path + "/memory.max"))
      if (std::optional<uint64_t> bytes = parseUnsigned(*text))
        limit = limit ? std::min(*limit, *bytes) : *bytes;
    if (path->empty()) break;
    path->erase(path->rfind('/') == std::string::npos ? 0 : path->rfind('/'));
  }
  return limit;
}

ProcessResources readProcessResources() {
  ProcessResources r;
  r.cpu_seconds = processCpuSeconds();
  long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  r.cpu_cores = cores > 0 ? static_cast<unsigned>(cores) : 1;
  r.memory_rss_bytes = residentBytes();
  if (std::optional<std::string> meminfo = readSmallFile("/proc/meminfo"))
    r.memory_total_bytes = parseMemTotal(*meminfo);
  if (std::optional<std::string> cgroup = readSmallFile("/proc/self/cgroup")) {
    std::optional<uint64_t> limit = cgroupMemoryLimit("/sys/fs/cgroup", *cgroup);
    if (limit && (r.memory_total_bytes == 0 || *limit < r.memory_total_bytes)) r.memory_total_bytes = *limit;
  }
  r.open_files = openFiles();
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0)
    r.max_open_files = files.rlim_cur == RLIM_INFINITY ? 0 : static_cast<uint64_t>(files.rlim_cur);
  return r;
}

}  // namespace ballast::se
