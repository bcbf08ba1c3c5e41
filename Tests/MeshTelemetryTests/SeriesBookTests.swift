import MeshTelemetry
import Testing

/// Series live as long as their owners, and a scope holds at most `seriesLimit` owners.
@Suite struct SeriesBookTests {
    func lines(_ metrics: MeshMetrics, _ name: String) -> [Substring] {
        metrics.prometheusText().split(separator: "\n").filter { $0.hasPrefix(name + "{") }
    }

    @Test func seriesGoWhenTheirLastOwnerGoes() {
        let metrics = MeshMetrics()
        var first: RequestMetrics? = metrics.client(router: "r", client: "/a")
        var second: RequestMetrics? = metrics.client(router: "r", client: "/a")
        first!.requests.increment()
        second!.requests.increment()
        #expect(lines(metrics, "meshd_client_requests_total") == [#"meshd_client_requests_total{router="r",client="/a"} 2"#])
        first = nil
        // Still held by the second owner: the series stays, and still counts.
        second!.requests.increment()
        #expect(lines(metrics, "meshd_client_requests_total") == [#"meshd_client_requests_total{router="r",client="/a"} 3"#])
        second = nil
        #expect(lines(metrics, "meshd_client_requests_total").isEmpty)
        #expect(lines(metrics, "meshd_client_request_duration_seconds_count").isEmpty)
        #expect(metrics.book.owners(in: "client") == 0)
    }

    @Test func ownersPastTheLimitShareTheOtherSeries() {
        let metrics = MeshMetrics(seriesLimit: 3)
        var owners = (0..<10).map { metrics.service(router: "r", service: "/svc/\($0)") }
        for owner in owners { owner.retries.increment() }
        let retries = lines(metrics, "meshd_service_retries_total")
        #expect(retries.count == 4, "three named series and one for the rest: \(retries)")
        #expect(retries.contains(#"meshd_service_retries_total{router="r",service="other"} 7"#))
        #expect(metrics.prometheusText().contains(#"meshd_metric_series_folded_total{scope="service"} 7"#))
        #expect(metrics.book.owners(in: "service") == 3)
        // When named owners go, their places free up for new ones.
        owners.removeFirst(3)
        #expect(metrics.book.owners(in: "service") == 0)
        let fresh = metrics.service(router: "r", service: "/svc/new")
        fresh.retries.increment()
        #expect(lines(metrics, "meshd_service_retries_total").contains(#"meshd_service_retries_total{router="r",service="/svc/new"} 1"#))
        owners.removeAll()
        #expect(lines(metrics, "meshd_service_retries_total") == [#"meshd_service_retries_total{router="r",service="/svc/new"} 1"#])
    }

    @Test func oneOwnersGroupsFoldTogether() {
        let metrics = MeshMetrics(seriesLimit: 1)
        let kept = (metrics.endpoint(router: "r", client: "/c", endpoint: "1.1.1.1:1"), metrics.pool(router: "r", client: "/c", endpoint: "1.1.1.1:1"))
        let folded = (metrics.endpoint(router: "r", client: "/c", endpoint: "2.2.2.2:2"), metrics.pool(router: "r", client: "/c", endpoint: "2.2.2.2:2"))
        kept.0.requests.increment()
        folded.0.requests.increment()
        folded.1.connects.increment()
        #expect(lines(metrics, "meshd_endpoint_requests_total").sorted() == [
            #"meshd_endpoint_requests_total{router="r",client="/c",endpoint="1.1.1.1:1"} 1"#,
            #"meshd_endpoint_requests_total{router="r",client="other",endpoint="other"} 1"#,
        ])
        #expect(lines(metrics, "meshd_pool_connects_total").contains(#"meshd_pool_connects_total{router="r",client="other",endpoint="other"} 1"#))
        #expect(metrics.book.owners(in: "endpoint") == 1)
    }

    @Test func tenThousandOwnersLeaveABoundedPage() {
        let metrics = MeshMetrics(seriesLimit: 100)
        var clients: [RequestMetrics] = []
        for index in 0..<10_000 { clients.append(metrics.client(router: "r", client: "/$/inet/10.0.\(index / 256)/\(index % 256)")) }
        let page = metrics.prometheusText().split(separator: "\n").count
        // 101 owners × (1 requests + 5 classes + 15 buckets + +Inf, sum, count) + headers.
        #expect(page < 101 * 30)
        clients.removeAll()
        #expect(metrics.prometheusText().split(separator: "\n").filter { $0.hasPrefix("meshd_client_") }.isEmpty)
    }
}
