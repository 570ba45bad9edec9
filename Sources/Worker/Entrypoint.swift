import Foundation
import QueueModel

@main
struct Entrypoint {
    static func main() async {
        print("worker: not yet implemented")
        exit(1)
    }
}
