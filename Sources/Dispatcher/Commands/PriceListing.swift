import Foundation
import Postgres
import QueueModel

/// `dispatcher models prices [--at TIME]`: what each model costs at an instant.
enum PriceListing {
    static func run(_ arguments: Arguments) async throws -> Int32 {
        let instant = try SubmitCommand.time(arguments, "at") ?? Date()
        let pool = try Database.pool(arguments, applicationName: "switchyard-models", maxConnections: 1)
        defer { Task { await pool.close() } }
        try await Migrator().requireCurrent(pool)
        let catalog = try await CatalogStore(pool: pool).load()
        let schedules = catalog.models.map(PriceSchedule.init)
        if arguments.flag("json") {
            let items: [JSONValue] = schedules.map { schedule in
                let (input, output) = schedule.multipliers(at: instant)
                var item: [String: JSONValue] = [
                    "model": .string(schedule.model.name), "tier": .string(schedule.model.tier),
                    "list_input_per_1k": .string(schedule.model.pricePer1KInput.description),
                    "list_output_per_1k": .string(schedule.model.pricePer1KOutput.description),
                    "input_per_1k": .string((schedule.model.pricePer1KInput * input).description),
                    "output_per_1k": .string((schedule.model.pricePer1KOutput * output).description),
                    "off_peak": .bool(input < 1 || output < 1),
                    "surcharged": .bool(input > 1 || output > 1),
                ]
                if let next = schedule.nextWindowStart(after: instant) { item["next_window_start"] = .string(next.postgresText) }
                return .object(item)
            }
            print(JSONValue.object(["at": .string(instant.postgresText), "models": .array(items)]).prettyText)
            return ExitCode.success
        }
        print("prices at \(instant.formatted(.iso8601)) (per 1K tokens, input / output)")
        // "now" titled the prices of another time (--at 8h).
        var table = TextTable(["model", "tier", "list", arguments.value("at") == nil ? "now" : "then", "window", "next window"])
        for schedule in schedules {
            let (input, output) = schedule.multipliers(at: instant)
            let model = schedule.model
            let window =
                input < 1 || output < 1
                ? "off-peak ×\(input)/×\(output)"
                : input > 1 || output > 1 ? "surcharged ×\(input)/×\(output)" : schedule.windows.isEmpty ? "-" : "list price"
            table.append([
                model.name, model.tier, "\(dollars(model.pricePer1KInput)) / \(dollars(model.pricePer1KOutput))",
                "\(dollars(model.pricePer1KInput * input)) / \(dollars(model.pricePer1KOutput * output))", window,
                schedule.nextWindowStart(after: instant).map { $0.formatted(.iso8601) } ?? "-",
            ])
        }
        print(table.lines.joined(separator: "\n"))
        return ExitCode.success
    }

    static func dollars(_ value: Decimal) -> String { "$\(value)" }
}
