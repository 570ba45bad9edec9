import Foundation
import QueueModel

@main
struct Entrypoint {
    static func main() async {
        exit(await DispatcherCommand.run(Array(CommandLine.arguments.dropFirst())))
    }
}
