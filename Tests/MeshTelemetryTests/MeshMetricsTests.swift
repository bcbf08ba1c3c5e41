import MeshTelemetry
import Testing

@Suite struct MeshMetricsTests {
    @Test func requestMetricsCountByClassAndTime() {
        let metrics = MeshMetrics()
        let router = metrics.router("out")
        router.requests.increment()
        router.responded(status: 204, nanoseconds: 2_000_000)
        router.responded(status: 503, nanoseconds: 40_000_000)
        router.responded(status: 99, nanoseconds: 1)
        let text = metrics.prometheusText()
        #expect(text.contains(#"meshd_router_requests_total{router="out"} 1"#))
        #expect(text.contains(#"meshd_router_responses_total{router="out",class="2xx"} 1"#))
        #expect(text.contains(#"meshd_router_responses_total{router="out",class="5xx"} 1"#))
        #expect(text.contains(#"meshd_router_responses_total{router="out",class="1xx"} 1"#))
        #expect(text.contains(#"meshd_router_request_duration_seconds_count{router="out"} 3"#))
        #expect(text.contains(#"meshd_router_request_duration_seconds_bucket{router="out",le="0.005"} 2"#))
    }

    @Test func prefixAppliesToEveryName() {
        let metrics = MeshMetrics()
        let router = metrics.router("out")  // series live while their owner does
        router.requests.increment()
        let text = metrics.prometheusText(prefix: "l5d_")
        for line in text.split(separator: "\n") where !line.isEmpty {
            if line.hasPrefix("# ") {
                #expect(line.dropFirst(7).hasPrefix("l5d_"))
            } else {
                #expect(line.hasPrefix("l5d_meshd_"))
            }
        }
    }

    @Test func samplesAreFlat() {
        let metrics = MeshMetrics()
        let router = metrics.router("out")  // series live while their owner does
        router.requests.increment(by: Int64(3))
        let samples = Dictionary(metrics.samples(), uniquingKeysWith: { $1 })
        #expect(samples[#"meshd_router_requests_total{router="out"}"#] == 3)
    }

    @Test func releasedEndpointSeriesDisappear() {
        let metrics = MeshMetrics()
        var endpoint: RequestMetrics? = metrics.endpoint(router: "out", client: "/#/io.l5d.fs/web", endpoint: "127.0.0.1:1")
        endpoint?.requests.increment()
        #expect(metrics.prometheusText().contains("127.0.0.1:1"))
        endpoint = nil
        #expect(!metrics.prometheusText().contains("127.0.0.1:1"))
    }
}
