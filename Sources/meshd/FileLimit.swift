// The process's open-file limit. Every client connection and every pooled upstream connection
// is a file descriptor, and the soft limit a service starts with is often 1,024 while the hard
// limit is far higher; like Go's runtime, meshd raises the soft limit to the hard one at start,
// so that `maxConnections` (10,000 per listener by default) is the bound that holds, not EMFILE.

#if canImport(Glibc)
import Glibc
#endif

enum FileLimit {
    /// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit in force.
    static func raise() -> UInt64? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
    }
}
