// `kind:` polymorphism: each block names its implementation; meshd says plainly when a kind is one
// that Linkerd 1.x has and meshd does not, and suggests a spelling when it is neither.

extension ConfigMapping {
    /// Reads the discriminator key (`kind`, or `protocol` for routers).
    ///
    /// - Parameters:
    ///   - supported: kinds meshd implements.
    ///   - linkerdOnly: kinds Linkerd 1.x has that meshd does not (yet); named in the error.
    ///   - what: what the kind selects, e.g. "namer", for messages.
    ///   - defaultKind: used when the key is absent; nil makes the key required.
    func kind(
        key: String = "kind",
        supported: [String],
        linkerdOnly: [String] = [],
        what: String,
        defaultKind: String? = nil
    ) -> String? {
        guard let node = defaultKind == nil ? required(key) : optional(key) else { return defaultKind }
        guard let value = node.string else { return nil }
        if supported.contains(value) { return value }
        let list = supported.map { "'\($0)'" }.joined(separator: ", ")
        if linkerdOnly.contains(value) {
            node.error("\(what) \(key) '\(value)' is a Linkerd 1.x \(what) that meshd does not support; supported: \(list)")
        } else {
            node.error("unknown \(what) \(key) '\(value)'\(Suggestion.didYouMean(value, in: supported + linkerdOnly)); supported: \(list)")
        }
        return nil
    }
}
