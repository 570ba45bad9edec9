import Foundation

@main
struct Entrypoint {
    static func main() async {
        exit(await WorkerCommand.run(Array(CommandLine.arguments.dropFirst())))
    }
}
