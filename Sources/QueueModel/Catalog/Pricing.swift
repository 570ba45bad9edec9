import Foundation

/// What a call costs: tokens times the model's price per 1K, input and output apart, in exact
/// decimal arithmetic (never floating point: the sums end up in invoices).
public enum Pricing {
    /// The cost of one call.
    public static func cost(of model: ModelSpec, tokensIn: Int, tokensOut: Int) -> Decimal {
        Decimal(tokensIn) * model.pricePer1KInput / 1000 + Decimal(tokensOut) * model.pricePer1KOutput / 1000
    }
}
