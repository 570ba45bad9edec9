import Foundation

/// Small inline SVG charts for the HTML report: no script, no external assets, readable when
/// printed. x is the bucket index; every chart has the same width so their times line up.
struct SVGChart {
    /// One named line or stack layer.
    struct Series {
        var name: String
        var color: String
        /// One value per bucket; nil where there is nothing to plot (the line breaks there).
        var values: [Double?]
    }

    var title: String
    var xLabels: [String]
    var series: [Series]
    /// Formats a y-axis value (`1.2 s`, `$0.04`, `12%`).
    var format: (Double) -> String
    var width = 720.0
    var height = 220.0

    private let left = 64.0
    private let right = 12.0
    private let top = 12.0
    private let bottom = 28.0

    /// The palette series take colours from, in order.
    static let palette = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
    ]

    private var plotWidth: Double { width - left - right }
    private var plotHeight: Double { height - top - bottom }
    private var count: Int { max(xLabels.count, 1) }

    private func x(_ index: Int) -> Double {
        left + (count == 1 ? plotWidth / 2 : plotWidth * Double(index) / Double(count - 1))
    }

    private func y(_ value: Double, max: Double) -> Double { top + plotHeight * (1 - value / max) }

    /// Lines, one per series.
    func lines() -> String {
        let top = niceMaximum(series.flatMap { $0.values.compactMap { $0 } }.max() ?? 0)
        var body = frame(max: top)
        for line in series {
            var path = ""
            var pen = false
            for (index, value) in line.values.enumerated() {
                guard let value else {
                    pen = false
                    continue
                }
                path += "\(pen ? "L" : "M")\(fmt(x(index))),\(fmt(y(value, max: top))) "
                pen = true
            }
            if !path.isEmpty {
                body += "<path d=\"\(path)\" fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"2\"/>"
            }
            // Lone points (between gaps) would be invisible as a path: mark every point.
            for (index, value) in line.values.enumerated() {
                if let value {
                    body +=
                        "<circle cx=\"\(fmt(x(index)))\" cy=\"\(fmt(y(value, max: top)))\" r=\"2\" "
                        + "fill=\"\(line.color)\">"
                        + "<title>\(HTMLText.escape(line.name)) \(HTMLText.escape(xLabels[safe: index] ?? "")): "
                        + "\(HTMLText.escape(format(value)))</title></circle>"
                }
            }
        }
        return wrap(body)
    }

    /// Stacked bars: each bucket's series values stacked in order.
    func stackedBars() -> String {
        let totals = (0..<xLabels.count).map { index in
            series.reduce(0.0) { $0 + ($1.values[safe: index].flatMap { $0 } ?? 0) }
        }
        let top = niceMaximum(totals.max() ?? 0)
        var body = frame(max: top)
        let slot = plotWidth / Double(count)
        let barWidth = max(1, slot * 0.7)
        for index in 0..<xLabels.count {
            var base = 0.0
            let center = left + slot * (Double(index) + 0.5)
            for layer in series {
                guard let value = layer.values[safe: index].flatMap({ $0 }), value > 0 else { continue }
                let y0 = y(base, max: top)
                let y1 = y(base + value, max: top)
                body +=
                    "<rect x=\"\(fmt(center - barWidth / 2))\" y=\"\(fmt(y1))\" width=\"\(fmt(barWidth))\" "
                    + "height=\"\(fmt(max(0.5, y0 - y1)))\" fill=\"\(layer.color)\">"
                    + "<title>\(HTMLText.escape(layer.name)) "
                    + "\(HTMLText.escape(xLabels[index])): \(HTMLText.escape(format(value)))</title></rect>"
                base += value
            }
        }
        return wrap(body)
    }

    /// Axes, grid lines with y labels, and a few x labels.
    private func frame(max top: Double) -> String {
        var body = ""
        for step in 0...4 {
            let value = top * Double(step) / 4
            let lineY = y(value, max: top)
            body +=
                "<line x1=\"\(fmt(left))\" x2=\"\(fmt(width - right))\" y1=\"\(fmt(lineY))\" y2=\"\(fmt(lineY))\" "
                + "stroke=\"#e3e3e3\"/><text x=\"\(fmt(left - 6))\" y=\"\(fmt(lineY + 4))\" text-anchor=\"end\">"
                + "\(HTMLText.escape(format(value)))</text>"
        }
        let labelEvery = max(1, Int((Double(xLabels.count) / 8).rounded(.up)))
        for (index, label) in xLabels.enumerated() where index % labelEvery == 0 {
            body +=
                "<text x=\"\(fmt(x(index)))\" y=\"\(fmt(height - 8))\" text-anchor=\"middle\">"
                + "\(HTMLText.escape(label))</text>"
        }
        return body
    }

    private func wrap(_ body: String) -> String {
        var legend = ""
        for (position, entry) in series.enumerated() {
            legend +=
                "<span class=\"key\"><i style=\"background:\(entry.color)\"></i>\(HTMLText.escape(entry.name))</span>"
            if position > 20 { break }
        }
        return "<figure><figcaption>\(HTMLText.escape(title))</figcaption>"
            + "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(fmt(width)) \(fmt(height))\" "
            + "role=\"img\" aria-label=\"\(HTMLText.escape(title))\">\(body)</svg>"
            + "<div class=\"legend\">\(legend)</div></figure>"
    }

    /// 1, 2 or 5 times a power of ten, at or above the value (1 for nothing).
    private func niceMaximum(_ value: Double) -> Double {
        guard value > 0, value.isFinite else { return 1 }
        let power = pow(10, floor(log10(value)))
        for step in [1.0, 2, 2.5, 5, 10] where step * power >= value { return step * power }
        return 10 * power
    }

    private func fmt(_ value: Double) -> String { String(format: "%.1f", value) }
}

/// Text made safe for HTML bodies and attributes.
enum HTMLText {
    static func escape(_ text: String) -> String {
        var result = ""
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.append(character)
            }
        }
        return result
    }
}

extension Array {
    /// The element at `index`, or nil past either end.
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
