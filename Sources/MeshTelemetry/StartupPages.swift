// Gives back the memory of start-up code once meshd is ready.
//
// Most of an idle meshd's resident set is not memory it allocated but pages of its own binary
// (and, in a dynamically linked build, of the Swift runtime and Foundation): code and read-only
// data that parsing the config, Yams and Foundation's initialisation touched once, each fault
// pulling in its neighbours too (the kernel's fault-around maps 64 KiB at a time). Those pages
// are clean copies of files on disk, so dropping them from meshd's page tables loses nothing:
// what runs afterwards faults its own pages back in, and only those stay resident.
//
// Only mappings that cannot hold data of meshd's own are dropped: file-backed, not writable, and
// with no anonymous (copy-on-write) pages — a read-only relocation segment that the loader wrote
// to has anonymous pages and is left alone.

#if canImport(Glibc)
import Glibc
#endif

public enum StartupPages {
    /// One mapping of /proc/self/smaps that may be dropped.
    public struct Mapping: Equatable, Sendable {
        public let start: UInt
        public let end: UInt
        /// Resident bytes before the drop.
        public let residentBytes: Int
        public let path: String
    }

    /// The mappings of an smaps text that are file-backed, not writable, and hold no anonymous
    /// pages.
    public static func droppable(smaps: String) -> [Mapping] {
        var result: [Mapping] = []
        var current: (start: UInt, end: UInt, path: String, eligible: Bool)?
        var resident = 0
        var anonymous = 0
        func close() {
            if let mapping = current, mapping.eligible, anonymous == 0, resident > 0 {
                result.append(Mapping(start: mapping.start, end: mapping.end, residentBytes: resident, path: mapping.path))
            }
            current = nil
            resident = 0
            anonymous = 0
        }
        for line in smaps.split(separator: "\n", omittingEmptySubsequences: true) {
            if let header = parseHeader(line) {
                close()
                current = header
                continue
            }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let value = Int(fields[1]) else { continue }
            switch fields[0] {
            case "Rss:": resident = value * 1024
            case "Anonymous:": anonymous = value * 1024
            default: break
            }
        }
        close()
        return result
    }

    /// A mapping's header line: `start-end perms offset dev inode [path]`.
    private static func parseHeader(_ line: Substring) -> (start: UInt, end: UInt, path: String, eligible: Bool)? {
        let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
        guard fields.count >= 5, fields[0].contains("-"), !fields[0].hasSuffix(":") else { return nil }
        let range = fields[0].split(separator: "-")
        guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16) else { return nil }
        let perms = fields[1]
        guard perms.count == 4 else { return nil }
        let path = fields.count > 5 ? String(fields[5]).trimmingSpaces : ""
        // File-backed (an absolute path, not "[heap]", "[vdso]" or a deleted file), private, and
        // never writable.
        let eligible = path.hasPrefix("/") && !path.hasSuffix("(deleted)") && !perms.contains("w") && perms.hasSuffix("p")
        return (start, end, path, eligible)
    }

    /// Drops the droppable mappings of this process; returns the resident bytes they held.
    @discardableResult
    public static func release() -> Int {
        #if os(Linux)
        guard let smaps = readFile("/proc/self/smaps") else { return 0 }
        var released = 0
        for mapping in droppable(smaps: smaps) {
            guard let address = UnsafeMutableRawPointer(bitPattern: mapping.start) else { continue }
            if madvise(address, Int(mapping.end - mapping.start), MADV_DONTNEED) == 0 {
                released += mapping.residentBytes
            }
        }
        return released
        #else
        return 0
        #endif
    }

    /// Resident bytes of this process (VmRSS), or nil where /proc is not available.
    public static func residentBytes() -> Int? {
        guard let status = readFile("/proc/self/status") else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, let kib = Int(fields[1]) { return kib * 1024 }
        }
        return nil
    }

    /// Reads a /proc file whole. (Foundation's `FileManager.contents(atPath:)` returns only the
    /// first few KiB of /proc files, whose size the kernel reports as 0.)
    private static func readFile(_ path: String) -> String? {
        #if canImport(Glibc)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
        #else
        return nil
        #endif
    }
}

extension StringProtocol {
    fileprivate var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
