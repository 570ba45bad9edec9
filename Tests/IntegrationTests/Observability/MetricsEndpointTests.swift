import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import Postgres
import QueueModel
import Testing

@testable import Worker

/// `/metrics` scraped from a worker that ran jobs, read back as Prometheus text.
@Suite("Worker metrics endpoint")
struct MetricsEndpointTests {
    static let catalog = """
        {
          "models": {
            "sim-fast": {"provider": "simulated", "tier": "cheap",
                         "settings": {"latency_p50_ms": 2, "latency_p95_ms": 5, "error_rate": 0, "seed": 1}}
          },
          "routing_rules": {"default": {"primary": "sim-fast"}}
        }
        """

    static func get(_ url: String) async throws -> (status: Int, headers: [String: String], body: String) {
        let exchange = try await HTTPTransport(maximumConnectionsPerHost: 2).send(
            URLRequest(url: URL(string: url)!), timeout: .seconds(10), model: "metrics")
        return (exchange.status, exchange.headers, String(decoding: exchange.body, as: UTF8.self))
    }

    @Test("idle and trickling clients do not hold up a scrape")
    func slowClients() async throws {
        let server = try MetricsServer(port: 0, render: { "up 1\n" })
        server.start()
        defer { server.stop() }
        // Eight connections that send nothing, and one that sends a byte now and then.
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        for _ in 0..<9 {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(server.port).bigEndian)
            inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            #expect(connected == 0)
            sockets.append(descriptor)
        }
        let trickle = Task.detached { [last = sockets[8]] in
            for byte in "GET /metrics HTTP/1.1\r\n".utf8 {
                var value = byte
                _ = send(last, &value, 1, Int32(MSG_NOSIGNAL))
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        defer { trickle.cancel() }
        // Served one at a time, this scrape waited 2 s behind each idle one: past its own 10 s.
        let (status, _, body) = try await Self.get("http://127.0.0.1:\(server.port)/metrics")
        #expect(status == 200 && body == "up 1\n")
    }

    /// An in-process worker that routes with the catalog in `pool`, counting into `metrics`.
    static func routingWorker(
        _ pool: PostgresPool, _ configuration: WorkerConfiguration, metrics: WorkerMetrics,
        logger: Logger = Logger(label: "worker", level: .error) { _ in }
    ) -> WorkerService {
        let fleet = FleetState(pool: pool, logger: logger)
        let executor = RoutingExecutor(
            fleet: fleet, providers: ProviderFactory(concurrency: configuration.identity.concurrency),
            worker: configuration.identity.id, logger: logger, metrics: metrics)
        return WorkerService(
            configuration: configuration, pool: pool, executor: executor, fleet: fleet, logger: logger,
            metrics: metrics)
    }

    @Test("a worker that ran jobs serves every required series in valid Prometheus text; other paths 404")
    func scrapeInProcessWorker() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(Data(Self.catalog.utf8))
            let metrics = WorkerMetrics()
            let service = Self.routingWorker(pool, WorkerServiceTests.configuration(concurrency: 4), metrics: metrics)
            let server = try MetricsServer(port: 0, render: metrics.render)
            server.start()
            defer { server.stop() }
            #expect(server.address == "127.0.0.1" && server.port > 0)

            let running = Task { try await service.run() }
            let store = QueueStore(pool: pool)
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            _ = try await store.submit(batch: (0..<8).map { _ in Submission(request: hello) })
            _ = try await store.submit(batch: (0..<4).map { _ in Submission(request: hello, priority: .background) })
            // The worker counts a job once its result is written and it has let go of it: wait for
            // that, not just for the rows.
            try await waitUntil("the worker has counted all 12 and let go of them") {
                let completed = Priority.allCases.reduce(0.0) { $0 + metrics.jobsCompleted.value([$1.rawValue]) }
                let busy = Priority.allCases.reduce(0.0) { $0 + metrics.inFlight.value([$1.rawValue]) }
                return completed == 12 && busy == 0
            }
            let scrape = try await Self.get("http://127.0.0.1:\(server.port)/metrics")
            service.shutdown()
            try await running.value

            #expect(scrape.status == 200)
            #expect(scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            let text = try PrometheusText(parsing: scrape.body)
            let required: [String: String] = [
                "switchyard_jobs_claimed_total": "counter", "switchyard_jobs_completed_total": "counter",
                "switchyard_jobs_failed_total": "counter", "switchyard_attempts_total": "counter",
                "switchyard_job_latency_seconds": "histogram", "switchyard_attempt_latency_seconds": "histogram",
                "switchyard_jobs_in_flight": "gauge", "switchyard_lease_renewals_total": "counter",
                "switchyard_rescues_total": "counter", "switchyard_db_round_trips_total": "counter",
            ]
            for (name, type) in required {
                #expect(text.types[name] == type, "\(name) should be a \(type)")
                #expect(text.help[name]?.isEmpty == false, "\(name) has no HELP")
            }
            #expect(text.value("switchyard_jobs_claimed_total", ["priority": "interactive"]) == 8)
            #expect(text.value("switchyard_jobs_claimed_total", ["priority": "background"]) == 4)
            #expect(text.value("switchyard_jobs_completed_total", ["priority": "interactive"]) == 8)
            #expect(text.value("switchyard_jobs_completed_total", ["priority": "background"]) == 4)
            #expect(text.value("switchyard_jobs_failed_total", ["priority": "interactive"]) == 0)
            #expect(text.value("switchyard_attempts_total", ["model": "sim-fast", "outcome": "succeeded"]) == 12)
            #expect(
                text.value("switchyard_attempt_latency_seconds_count", ["model": "sim-fast", "tier": "primary"]) == 12)
            #expect(text.value("switchyard_job_latency_seconds_count", ["priority": "interactive"]) == 8)
            #expect(text.values("switchyard_job_latency_seconds_bucket", ["le": "1.5"]).count == 2)
            #expect(text.value("switchyard_jobs_in_flight", ["priority": "interactive"]) == 0)
            #expect(text.value("switchyard_lease_renewals_total") != nil)
            #expect(text.value("switchyard_rescues_total", ["outcome": "requeued"]) == 0)
            #expect((text.value("switchyard_db_round_trips_total", ["operation": "claim"]) ?? 0) >= 1)
            #expect((text.value("switchyard_db_round_trips_total", ["operation": "heartbeat"]) ?? 0) >= 1)
            #expect((text.value("switchyard_db_round_trips_total", ["operation": "complete"]) ?? 0) >= 1)
            #expect(text.value("switchyard_db_errors_total", ["operation": "complete"]) == 0)

            let missing = try await Self.get("http://127.0.0.1:\(server.port)/other")
            #expect(missing.status == 404)
        }
    }

    @Test("job latency counts each job once, at its result: not the attempts that ended in a retry")
    func jobLatencyOncePerJob() async throws {
        try await TestDatabase.withMigratedPool { pool in
            _ = try await CatalogStore(pool: pool).importDocument(
                Data(Self.catalog.replacingOccurrences(of: "\"error_rate\": 0", with: "\"error_rate\": 1").utf8))
            let metrics = WorkerMetrics()
            var configuration = WorkerServiceTests.configuration(concurrency: 4)
            configuration.retryPolicy = RetryPolicy(base: .milliseconds(10), maximum: .milliseconds(10), jitter: 0)
            // The worker's log, for a failure: on a loaded machine its start alone took over 20 s.
            let log = LogCapture()
            let service = Self.routingWorker(pool, configuration, metrics: metrics, logger: log.logger(level: .debug))
            let running = Task { try await service.run() }
            let hello: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
            _ = try await QueueStore(pool: pool).submit(batch: [Submission(request: hello, maxAttempts: 3)])
            do {
                try await waitUntil("the job has failed its three attempts", limit: .seconds(120)) {
                    metrics.jobsFailed.value([Priority.interactive.rawValue]) == 1
                        && metrics.inFlight.value([Priority.interactive.rawValue]) == 0
                }
            } catch {
                Issue.record("\(error); the worker's log:\n\(log.all.joined(separator: "\n"))")
                service.shutdown()
                try await running.value
                return
            }
            service.shutdown()
            try await running.value
            let text = try PrometheusText(parsing: metrics.render())
            #expect(text.value("switchyard_attempts_total", ["model": "sim-fast", "outcome": "error"]) == 3)
            #expect(text.value("switchyard_job_latency_seconds_count", ["priority": "interactive"]) == 1)
        }
    }

    @Test("`worker --metrics-port 0` serves /metrics on 127.0.0.1 at the port its log names")
    func workerProcessServesMetrics() async throws {
        try await TestDatabase.withMigrated { configuration in
            let worker = try WorkerProcess.start(
                configuration, id: "metrics-process",
                arguments: ["--metrics-port", "0", "--simulated-latency", "1ms", "--concurrency", "2"])
            defer { worker.kill() }
            var port: Int?
            try? await waitUntil("the worker says where it serves metrics") {
                if let match = worker.log.firstMatch(of: /msg="serving metrics".* address=127\.0\.0\.1 port=(\d+)/) {
                    port = Int(match.1)
                }
                return port != nil
            }
            let bound = try #require(port, "the worker never said where it serves metrics:\n\(worker.log)")
            let scrape = try await Self.get("http://127.0.0.1:\(bound)/metrics")
            #expect(scrape.status == 200)
            let text = try PrometheusText(parsing: scrape.body)
            #expect(text.value("switchyard_worker_concurrency") == 2)
            worker.terminate()
            #expect(await worker.wait() == 0)
        }
    }

    @Test("the registry escapes label values and help text, and renders histograms cumulatively")
    func registryRendering() throws {
        let registry = MetricsRegistry()
        let counter = registry.counter("test_total", help: "A \\ counter\nwith two lines.", labels: ["model"])
        counter.increment(["quote\"back\\slash\nnewline"], by: 2)
        let histogram = registry.histogram("test_seconds", help: "Durations.", labels: [], buckets: [0.5, 1])
        for value in [0.25, 0.75, 0.875, 3] { histogram.observe(value) }
        let gauge = registry.gauge("test_gauge", help: "A gauge.")
        gauge.add(-1.5)
        let rendered = registry.render()
        #expect(rendered.contains("# HELP test_total A \\\\ counter\\nwith two lines.\n"))
        #expect(rendered.contains(#"test_total{model="quote\"back\\slash\nnewline"} 2"#))
        #expect(rendered.contains("test_seconds_bucket{le=\"0.5\"} 1\ntest_seconds_bucket{le=\"1\"} 3\n"))
        #expect(rendered.contains("test_seconds_bucket{le=\"+Inf\"} 4\ntest_seconds_sum 4.875\ntest_seconds_count 4\n"))
        #expect(rendered.contains("test_gauge -1.5\n"))
        let text = try PrometheusText(parsing: rendered)
        #expect(text.value("test_total", ["model": "quote\"back\\slash\nnewline"]) == 2)
    }
}
