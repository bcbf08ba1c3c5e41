// `meshd check`'s test that every listen address can be bound: a port another process holds is
// reported as a config error at the server's line.

#if canImport(Glibc)
import Glibc
#endif
import MeshConfig
import NIOCore
import NIOPosix

enum PortCheck {
    static func unavailable(_ config: MeshdConfig) -> [ConfigError] {
        var errors: [ConfigError] = []
        var listeners: [(ip: String, port: Int, origin: ConfigOrigin, what: String)] = [(config.admin.ip, config.admin.port, config.admin.origin, "admin")]
        for router in config.routers {
            for server in router.servers { listeners.append((server.ip, server.port, server.origin, "server")) }
        }
        for listener in listeners where listener.port != 0 {
            if let reason = bindFailure(ip: listener.ip, port: listener.port) {
                errors.append(listener.origin.error("cannot listen on \(listener.ip):\(listener.port): \(reason)"))
            }
        }
        return errors
    }

    private static func bindFailure(ip: String, port: Int) -> String? {
        guard let address = try? SocketAddress(ipAddress: ip, port: port) else { return "not an IP address" }
        let fd = socket(Int32(address.protocol.rawValue), Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return "cannot open a socket" }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let result = address.withSockAddr { pointer, length in bind(fd, pointer, socklen_t(length)) }
        guard result != 0 else { return nil }
        switch errno {
        case EADDRINUSE: return "the address is already in use"
        case EACCES: return "permission denied (ports below 1024 need privileges)"
        case EADDRNOTAVAIL: return "the address is not available on this host"
        default: return String(cString: strerror(errno))
        }
    }
}
