import MeshCore
import Testing

@Suite struct ResponseClassifierTests {
    @Test(arguments: [
        // classifier, method, status (nil: no response), expected
        (ResponseClassifier.nonRetryable5XX, "GET", Optional(200), ResponseClass.success),
        (.nonRetryable5XX, "GET", 404, .success),
        (.nonRetryable5XX, "GET", 503, .failure(retryable: false)),
        (.nonRetryable5XX, "GET", nil, .failure(retryable: false)),
        (.retryableRead5XX, "GET", 503, .failure(retryable: true)),
        (.retryableRead5XX, "HEAD", nil, .failure(retryable: true)),
        (.retryableRead5XX, "PUT", 503, .failure(retryable: false)),
        (.retryableRead5XX, "POST", 500, .failure(retryable: false)),
        (.retryableIdempotent5XX, "PUT", 502, .failure(retryable: true)),
        (.retryableIdempotent5XX, "DELETE", nil, .failure(retryable: true)),
        (.retryableIdempotent5XX, "POST", 503, .failure(retryable: false)),
        (.retryableAll5XX, "POST", 503, .failure(retryable: true)),
        (.allSuccessful, "POST", 500, .success),
        (.allSuccessful, "GET", nil, .success),
    ])
    func classifies(_ classifier: ResponseClassifier, _ method: String, _ status: Int?, _ expected: ResponseClass) {
        #expect(classifier.classify(method: method, status: status) == expected)
    }

    @Test func downstreamRetryableHintUpgradesAFailureOfAnIdempotentRequest() {
        #expect(ResponseClassifier.nonRetryable5XX.classify(method: "GET", status: 503, upstreamSaysRetryable: true) == .failure(retryable: true))
        #expect(ResponseClassifier.nonRetryable5XX.classify(method: "PUT", status: 502, upstreamSaysRetryable: true) == .failure(retryable: true))
        #expect(ResponseClassifier.nonRetryable5XX.classify(method: "GET", status: 200, upstreamSaysRetryable: true) == .success)
    }

    /// Any upstream can send `l5d-retryable: true`; a POST it had acted on must not go twice.
    @Test func downstreamRetryableHintNeverMakesANonIdempotentRequestRetryable() {
        for method in ["POST", "PATCH", "CONNECT"] {
            #expect(ResponseClassifier.nonRetryable5XX.classify(method: method, status: 503, upstreamSaysRetryable: true) == .failure(retryable: false))
            #expect(ResponseClassifier.retryableIdempotent5XX.classify(method: method, status: 500, upstreamSaysRetryable: true) == .failure(retryable: false))
        }
    }
}
