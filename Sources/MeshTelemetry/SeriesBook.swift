// Who holds which metric series, and how many distinct owners each scope has.
//
// Series are labelled by names a client or upstream controls (the bound name of a client, the
// logical name of a service, an endpoint's address), so two things must hold:
// - a series lives exactly as long as something that records into it: the group of handles
//   that a client, service or endpoint keeps takes a place here when it is made and gives it
//   back when it goes (its deinit); the last one out unregisters the series. (The registry
//   hands the same handle to everyone asking for the same name and labels, so unregistering on
//   behalf of one holder would take the series from the others.)
// - a scope ("client", "service", "endpoint", …) has at most `limit` distinct owners at once.
//   Past it, new owners share one series per family whose owner labels read `other`, and the
//   fold is counted in `meshd_metric_series_folded_total{scope}`. Linkerd 1.x and
//   linkerd2-proxy both ran out of memory on unbounded label sets.
// Acquiring and releasing run under one lock together with the registry calls they make, so a
// series is never unregistered under a holder that has just been given it.

import Synchronization
import Prometheus

public final class SeriesBook: Sendable {
    /// The value that stands for every owner past the limit.
    public static let otherValue = "other"

    fileprivate struct Key: Hashable, Sendable {
        let group: String
        let labels: [String]
    }

    private struct State {
        /// Holders per group of series (its kind and labels).
        var holders: [Key: Int] = [:]
        /// Groups held per owner identity in a scope.
        var owners: [Key: Int] = [:]
        /// Distinct owners per scope (the folded one not counted).
        var ownersPerScope: [String: Int] = [:]
    }

    public let limit: Int
    private let state = Mutex(State())
    private let registry: PrometheusCollectorRegistry
    private let folds = Mutex<[String: Counter]>([:])

    init(registry: PrometheusCollectorRegistry, limit: Int) {
        self.registry = registry
        self.limit = limit
    }

    /// A place taken in the book; give it back with `release`.
    public struct Lease: Sendable {
        fileprivate let group: Key
        fileprivate let owner: Key
        fileprivate let scope: String
        fileprivate let folded: Bool
        /// The labels to make the group's series with.
        public let labels: [(String, String)]
    }

    /// Takes a place for the group `group` of `scope`'s owner `owner` (its labels after the
    /// `fixed` ones), and calls `make` with the labels to use, under the book's lock.
    fileprivate func acquire(group: String, scope: String, fixed: [(String, String)], owner: [(String, String)], make: ([(String, String)]) -> Void) -> Lease {
        var folded = false
        let lease = state.withLock { state -> Lease in
            var ownerLabels = owner
            var ownerKey = Key(group: scope, labels: (fixed + owner).map(\.1))
            if state.owners[ownerKey] == nil, !owner.isEmpty, state.ownersPerScope[scope, default: 0] >= limit {
                folded = true
                ownerLabels = owner.map { ($0.0, Self.otherValue) }
                ownerKey = Key(group: scope, labels: (fixed + ownerLabels).map(\.1))
            }
            let labels = fixed + ownerLabels
            if state.owners[ownerKey] == nil, !folded { state.ownersPerScope[scope, default: 0] += 1 }
            state.owners[ownerKey, default: 0] += 1
            let groupKey = Key(group: group, labels: labels.map(\.1))
            state.holders[groupKey, default: 0] += 1
            make(labels)
            return Lease(group: groupKey, owner: ownerKey, scope: scope, folded: folded, labels: labels)
        }
        if folded { foldCounter(scope).increment() }
        return lease
    }

    /// Gives a place back; `unregister` runs (under the lock) when it was the group's last holder.
    fileprivate func release(_ lease: Lease, unregister: () -> Void) {
        state.withLock { state in
            let holders = state.holders[lease.group, default: 1] - 1
            if holders == 0 {
                state.holders[lease.group] = nil
                unregister()
            } else {
                state.holders[lease.group] = holders
            }
            let owners = state.owners[lease.owner, default: 1] - 1
            if owners == 0 {
                state.owners[lease.owner] = nil
                if !lease.folded { state.ownersPerScope[lease.scope, default: 1] -= 1 }
            } else {
                state.owners[lease.owner] = owners
            }
        }
    }

    /// Distinct owners in `scope` now (for tests and the admin port).
    public func owners(in scope: String) -> Int {
        state.withLock { $0.ownersPerScope[scope, default: 0] }
    }

    private func foldCounter(_ scope: String) -> Counter {
        folds.withLock { folds in
            if let counter = folds[scope] { return counter }
            let counter = registry.makeCounter(
                descriptor: .init(metricName: "meshd_metric_series_folded_total", unitName: "", helpText: "Groups of series (a client's, a service's, an endpoint's …) folded into label value 'other' because their scope reached admin.metricSeriesLimit."),
                labels: [("scope", scope)]
            )
            folds[scope] = counter
            return counter
        }
    }
}

/// Makes the series of one group, and remembers them so that they go together.
public final class SeriesMaker: @unchecked Sendable {
    // Written only while the group is made (under the book's lock), read only when it goes.
    private let registry: PrometheusCollectorRegistry
    /// The labels every series of the group starts with (owner folded to `other` past the limit).
    public let labels: [(String, String)]
    private var counters: [Counter] = []
    private var gauges: [Gauge] = []
    private var histograms: [DurationHistogram] = []

    fileprivate init(registry: PrometheusCollectorRegistry, labels: [(String, String)]) {
        self.registry = registry
        self.labels = labels
    }

    public func counter(_ name: String, _ help: String, extra: [(String, String)] = []) -> Counter {
        let counter = registry.makeCounter(descriptor: .init(metricName: name, unitName: "", helpText: help), labels: labels + extra)
        counters.append(counter)
        return counter
    }

    public func gauge(_ name: String, _ help: String) -> Gauge {
        let gauge = registry.makeGauge(descriptor: .init(metricName: name, unitName: "", helpText: help), labels: labels)
        gauges.append(gauge)
        return gauge
    }

    public func histogram(_ name: String, _ help: String, buckets: [Duration]) -> DurationHistogram {
        let histogram = registry.makeDurationHistogram(descriptor: .init(metricName: name, unitName: "", helpText: help), labels: labels, buckets: buckets)
        histograms.append(histogram)
        return histogram
    }

    fileprivate func unregisterAll() {
        for counter in counters { registry.unregisterCounter(counter) }
        for gauge in gauges { registry.unregisterGauge(gauge) }
        for histogram in histograms { registry.unregisterDurationHistogram(histogram) }
    }
}

/// One owner's place in the book, held by its group of handles: made with it, given back (and
/// its series unregistered, when it was the last holder) when the group goes.
public final class OwnedSeries: Sendable {
    private let book: SeriesBook
    private let lease: SeriesBook.Lease
    private let maker: SeriesMaker

    /// `make` creates the group's handles through the maker it is given.
    init(book: SeriesBook, registry: PrometheusCollectorRegistry, group: String, scope: String, fixed: [(String, String)], owner: [(String, String)], make: (SeriesMaker) -> Void) {
        var made: SeriesMaker?
        self.book = book
        self.lease = book.acquire(group: group, scope: scope, fixed: fixed, owner: owner) { labels in
            let maker = SeriesMaker(registry: registry, labels: labels)
            make(maker)
            made = maker
        }
        self.maker = made!
    }

    deinit {
        book.release(lease) { maker.unregisterAll() }
    }
}
