// Calls back when a directory's files change: inotify where the kernel offers it, polling where
// it does not (inotify limits reached, file systems without events). A dedicated thread waits on
// the inotify descriptor, so event loops never block on the file system. Events are coalesced
// for a short moment, so that an editor's write-rename-chmod sequence gives one rescan, and only
// completed writes count (close after write, renames, creates, deletes), so a half-written file
// is not read. A full rescan also runs every `pollInterval` as a safety net, and once when the
// watch is set up (to catch what changed before it was).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Logging
import MeshTelemetry
import NIOConcurrencyHelpers

public final class DirectoryWatcher: Sendable {
    public enum Mode: String, Sendable {
        case inotify
        case polling
    }

    private let directory: String
    private let pollInterval: Duration
    private let fallbackPollInterval: Duration
    private let settleTime: Duration
    private let onChange: @Sendable () -> Void
    private let logger: Logger
    private let state = NIOLockedValueBox<(stopped: Bool, mode: Mode?)>((false, nil))
    /// A pipe written to wake the thread for `stop()`: read end, write end.
    private let wake: (read: Int32, write: Int32)

    /// - Parameters:
    ///   - pollInterval: rescan this often even when inotify reports nothing.
    ///   - fallbackPollInterval: rescan this often when inotify is unavailable.
    public init(
        directory: String,
        pollInterval: Duration = .seconds(10),
        fallbackPollInterval: Duration = .seconds(1),
        settleTime: Duration = .milliseconds(20),
        logger: Logger,
        onChange: @escaping @Sendable () -> Void
    ) {
        self.directory = directory
        self.pollInterval = pollInterval
        self.fallbackPollInterval = fallbackPollInterval
        self.settleTime = settleTime
        self.logger = logger
        self.onChange = onChange
        var fds: [Int32] = [-1, -1]
        _ = pipe(&fds)
        self.wake = (fds[0], fds[1])
    }

    deinit {
        close(wake.read)
        close(wake.write)
    }

    /// How changes are being noticed, once started.
    public var mode: Mode? { state.withLockedValue { $0.mode } }

    public func start() {
        let thread = Thread { [self] in self.run() }
        thread.name = "meshd-fs-watch"
        thread.start()
    }

    public func stop() {
        state.withLockedValue { $0.stopped = true }
        var one: UInt8 = 1
        _ = write(wake.write, &one, 1)
    }

    private var stopped: Bool { state.withLockedValue { $0.stopped } }

    private func run() {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        var watching = false
        if fd >= 0 {
            let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB)
            watching = inotify_add_watch(fd, directory, mask) >= 0
        }
        let mode: Mode = watching ? .inotify : .polling
        state.withLockedValue { $0.mode = mode }
        if !watching {
            logger.warning("inotify is unavailable; polling the directory instead", metadata: [
                LogKeys.rootDir: "\(directory)", LogKeys.error: "\(String(cString: strerror(errno)))",
            ])
        }
        defer { if fd >= 0 { close(fd) } }
        // Whatever changed between the caller's first read and the watch being set up.
        onChange()
        let interval = watching ? pollInterval : fallbackPollInterval
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while !stopped {
            var fds = [pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
            if watching { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(interval.milliseconds))
            if stopped { return }
            if ready > 0, watching, fds[1].revents != 0 {
                // Let a burst of events settle, then drain them all and rescan once.
                usleep(useconds_t(settleTime.milliseconds * 1000))
                while read(fd, &buffer, buffer.count) > 0 {}
            }
            onChange()
        }
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
