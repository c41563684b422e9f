// The standard process_* series of Prometheus client libraries, read from /proc on each
// scrape: CPU time, memory, file descriptors, start time.
#include "server/process_metrics.hpp"

#include <fmt/format.h>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace lockstep {

namespace {

/// Fields 14 (utime), 15 (stime), 22 (starttime) of /proc/self/stat, in clock ticks.
bool
read_stat(unsigned long long& utime, unsigned long long& stime, unsigned long long& start)
{
    std::ifstream f("/proc/self/stat");
    std::string line;
    if (!std::getline(f, line))
        return false;
    // The command name (field 2) may contain spaces; fields after it follow its ')'.
    auto close = line.rfind(')');
    if (close == std::string::npos)
        return false;
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && rest >> field; ++i) {
        if (i == 14)
            utime = std::stoull(field);
        else if (i == 15)
            stime = std::stoull(field);
        else if (i == 22)
            start = std::stoull(field);
    }
    return static_cast<bool>(rest);
}

/// Seconds since the epoch at which the machine booted (/proc/stat btime).
unsigned long long
boot_time()
{
    std::ifstream f("/proc/stat");
    std::string key;
    unsigned long long v = 0;
    while (f >> key) {
        if (key == "btime" && f >> v)
            return v;
        f.ignore(1 << 20, '\n');
    }
    return 0;
}

std::size_t
open_fds()
{
    std::size_t n = 0;
    if (DIR* d = opendir("/proc/self/fd")) {
        while (auto* e = readdir(d))
            if (e->d_name[0] != '.')
                ++n;
        closedir(d);
        --n;  // the descriptor of the listing itself
    }
    return n;
}

}  // namespace

std::string
render_process_metrics()
{
    std::string out;
    auto metric = [&](char const* name, char const* type, char const* help, double v) {
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, v);
    };
    double const tick = static_cast<double>(sysconf(_SC_CLK_TCK));
    unsigned long long utime = 0, stime = 0, start = 0;
    if (read_stat(utime, stime, start)) {
        metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
               static_cast<double>(utime + stime) / tick);
        metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
               static_cast<double>(boot_time()) + static_cast<double>(start) / tick);
    }
    unsigned long long size_pages = 0, resident_pages = 0;
    if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(f, "%llu %llu", &size_pages, &resident_pages) == 2) {
            double const page = static_cast<double>(sysconf(_SC_PAGESIZE));
            metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                   static_cast<double>(size_pages) * page);
            metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                   static_cast<double>(resident_pages) * page);
        }
        std::fclose(f);
    }
    metric("process_open_fds", "gauge", "Number of open file descriptors.", static_cast<double>(open_fds()));
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0)
        metric("process_max_fds", "gauge", "Maximum number of open file descriptors.",
               lim.rlim_cur == RLIM_INFINITY ? -1.0 : static_cast<double>(lim.rlim_cur));
    return out;
}

}  // namespace lockstep
