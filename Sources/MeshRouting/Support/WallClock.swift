// The wall clock, for deadlines that cross hosts (`l5d-ctx-deadline` is in nanoseconds since
// the Unix epoch). Everything else in meshd measures time on NIO's monotonic uptime clock.

#if canImport(Glibc)
import Glibc
#endif

enum WallClock {
    /// Nanoseconds since the Unix epoch.
    static func nanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}
