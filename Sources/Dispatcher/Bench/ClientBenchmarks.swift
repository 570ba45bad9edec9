import Foundation
import Postgres
import QueueModel

/// The Postgres client's own speed: round trips on one connection and pipelined inserts, each
/// next to what libpq does through `pgbench` (C, no Swift) against the same server in the same run.
enum ClientBenchmarks {
    static func run(_ context: BenchContext, report: inout BenchReport) async throws {
        let connection = try await PostgresConnection.connect(context.configuration)
        defer { Task { await connection.close() } }

        // SELECT 1 round trips on one connection.
        let roundTrips = 20_000
        for _ in 0..<500 { try await connection.query("SELECT 1") }
        let clock = ContinuousClock()
        let started = clock.now
        for _ in 0..<roundTrips { try await connection.query("SELECT 1") }
        let roundTripRate = Double(roundTrips) / (clock.now - started).seconds
        let pgbenchRoundTrips = try await context.pgbench(script: "SELECT 1;\n", seconds: 5)
        report.add(
            Measurement(
                scenario: "client", metric: "SELECT 1 round trips, 1 connection", value: roundTripRate, unit: "/s",
                baseline: pgbenchRoundTrips, baselineName: "pgbench"
            )
        )

        // Pipelined inserts: 100 batches of 1,000 single-row INSERTs, one round trip per batch.
        try await connection.query("DROP TABLE IF EXISTS bench_pipeline")
        try await connection.query("CREATE UNLOGGED TABLE bench_pipeline (id bigint, label text)")
        let batches = 100
        let batchSize = 1000
        let pipelineStarted = clock.now
        for batch in 0..<batches {
            let statements = (0..<batchSize).map { index in
                PostgresStatement(
                    "INSERT INTO bench_pipeline (id, label) VALUES ($1, $2)", [batch * batchSize + index, "row"]
                )
            }
            _ = try await connection.pipeline(statements)
        }
        let pipelineRate = Double(batches * batchSize) / (clock.now - pipelineStarted).seconds
        var script = "\\startpipeline\n"
        for _ in 0..<batchSize { script += "INSERT INTO bench_pipeline (id, label) VALUES (1, 'row');\n" }
        script += "\\endpipeline\n"
        let pgbenchPipeline = try await context.pgbench(script: script, seconds: 5, extendedProtocol: true)
            .map { $0 * Double(batchSize) }
        report.add(
            Measurement(
                scenario: "client", metric: "pipelined INSERTs, batches of 1,000", value: pipelineRate, unit: "rows/s",
                baseline: pgbenchPipeline, baselineName: "pgbench pipeline"
            )
        )
        try await connection.query("DROP TABLE bench_pipeline")
    }
}
