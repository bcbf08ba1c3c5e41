import MeshTelemetry
import Testing

@Suite struct StartupPagesTests {
    /// Six mappings as the kernel prints them; only the clean, read-only, file-backed ones with
    /// resident pages may be dropped.
    static let smaps = """
    55d0c0000000-55d0c0100000 r--p 00000000 08:01 1234                       /usr/local/bin/meshd
    Size:               1024 kB
    Rss:                 100 kB
    Anonymous:             0 kB
    VmFlags: rd mr mw me dw sd
    55d0c0100000-55d0c1100000 r-xp 00100000 08:01 1234                       /usr/local/bin/meshd
    Size:              16384 kB
    Rss:                9000 kB
    Anonymous:             0 kB
    VmFlags: rd ex mr mw me dw sd
    55d0c1100000-55d0c1200000 r--p 01100000 08:01 1234                       /usr/local/bin/meshd
    Rss:                 300 kB
    Anonymous:           200 kB
    55d0c1200000-55d0c1210000 rw-p 01200000 08:01 1234                       /usr/local/bin/meshd
    Rss:                  64 kB
    Anonymous:            64 kB
    55d0c2000000-55d0c2400000 rw-p 00000000 00:00 0                          [heap]
    Rss:                2000 kB
    Anonymous:          2000 kB
    7f0000000000-7f0000100000 r-xp 00028000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
    Rss:                 700 kB
    Anonymous:             0 kB
    7f0000200000-7f0000300000 r--p 00000000 08:01 77                         /tmp/old file (deleted)
    Rss:                  40 kB
    Anonymous:             0 kB
    7f0000300000-7f0000400000 r--s 00000000 08:01 78                         /dev/shm/shared
    Rss:                  40 kB
    Anonymous:             0 kB
    7f0000400000-7f0000500000 ---p 00000000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
    Rss:                   0 kB
    Anonymous:             0 kB
    7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
    Rss:                   8 kB
    Anonymous:             0 kB
    """

    @Test func onlyCleanReadOnlyFileMappingsAreDropped() {
        let droppable = StartupPages.droppable(smaps: Self.smaps)
        #expect(droppable.map(\.path) == ["/usr/local/bin/meshd", "/usr/local/bin/meshd", "/usr/lib/x86_64-linux-gnu/libc.so.6"])
        #expect(droppable.map(\.start) == [0x55d0c0000000, 0x55d0c0100000, 0x7f0000000000])
        #expect(droppable.map(\.end) == [0x55d0c0100000, 0x55d0c1100000, 0x7f0000100000])
        #expect(droppable.map(\.residentBytes) == [100 * 1024, 9000 * 1024, 700 * 1024])
    }

    @Test func droppingTheRealProcessKeepsItWorking() {
        // This test process's own pages: after the drop, code and data fault back in as used.
        let before = StartupPages.residentBytes()
        let released = StartupPages.release()
        #expect(before != nil)
        #expect(released > 0)
        let text = String(repeating: "still running ", count: 3)
        #expect(text.hasPrefix("still"))
        #expect(StartupPages.droppable(smaps: "garbage\nRss: 5 kB\n").isEmpty)
    }
}
