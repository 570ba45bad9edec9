import Foundation
import QueueModel

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The terminal in raw mode for a full-screen view: keys arrive one at a time without echo, and
/// Ctrl-C arrives as a key (byte 3) instead of killing the process, so the view always gets to
/// restore the terminal. Output processing stays on, so `\n` still starts a new line.
struct RawTerminal: Sendable {
    private let original: termios

    /// Switches stdin to raw mode and stdout to the alternate screen with a hidden cursor.
    /// - Returns: nil when stdin or stdout is not a terminal (nothing is changed then).
    static func enable() -> RawTerminal? {
        guard isatty(STDIN_FILENO) == 1, isatty(STDOUT_FILENO) == 1 else { return nil }
        var original = termios()
        guard tcgetattr(STDIN_FILENO, &original) == 0 else { return nil }
        var raw = original
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        withUnsafeMutableBytes(of: &raw.c_cc) { bytes in
            bytes[Int(VMIN)] = 1
            bytes[Int(VTIME)] = 0
        }
        guard tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0 else { return nil }
        write("\u{1B}[?1049h\u{1B}[?25l")
        return RawTerminal(original: original)
    }

    /// Puts the terminal back as it was: cooked mode, the main screen, a visible cursor.
    func restore() {
        Self.write("\u{1B}[?25h\u{1B}[?1049l")
        var original = original
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &original)
    }

    /// The terminal's size, or 24×80 when it cannot be asked.
    static var size: (rows: Int, columns: Int) {
        var window = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &window) == 0, window.ws_row > 0, window.ws_col > 0 else {
            return (24, 80)
        }
        return (Int(window.ws_row), Int(window.ws_col))
    }

    /// Writes text to stdout at once (unbuffered).
    static func write(_ text: String) {
        StandardStream.output.write(text)
    }
}
