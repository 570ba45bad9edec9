import Foundation

@main
struct Entrypoint {
    static func main() async {
        // A reader of stdout or stderr that goes away (`| head`, a log shipper restarting) must not
        // kill the process mid-job: a write to it fails instead, and is dropped.
        signal(SIGPIPE, SIG_IGN)
        exit(await WorkerCommand.run(Array(CommandLine.arguments.dropFirst())))
    }
}
