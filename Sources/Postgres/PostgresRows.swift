/// The rows a statement returned, copied out of libpq's result (which is freed at once).
public struct PostgresRows: Sendable, RandomAccessCollection {
    /// A result column: its name and type.
    public struct Column: Sendable, Hashable {
        public let name: String
        public let type: PostgresType
    }

    public let columns: [Column]
    /// Row-major cell texts; nil is SQL NULL.
    let cells: [String?]
    /// Rows affected by INSERT/UPDATE/DELETE (or returned by SELECT), from the command tag.
    public let affectedRows: Int
    /// The command tag, e.g. `INSERT 0 1`.
    public let commandTag: String

    init(columns: [Column], cells: [String?], affectedRows: Int, commandTag: String) {
        self.columns = columns
        self.cells = cells
        self.affectedRows = affectedRows
        self.commandTag = commandTag
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { columns.isEmpty ? 0 : cells.count / columns.count }
    public subscript(position: Int) -> PostgresRow { PostgresRow(rows: self, index: position) }

    func columnIndex(_ name: String) -> Int? { columns.firstIndex { $0.name == name } }

    /// The single value of a one-row, one-column result.
    /// - Throws: `.decoding` when the result has no row, or the value does not decode.
    public func scalar<T: PostgresDecodable>(_ type: T.Type = T.self) throws -> T {
        guard let first else { throw PostgresError(.decoding, "expected one row, got none") }
        return try first[0].decode(type)
    }

    /// The single value of a one-row, one-column result, or nil when it is NULL or there is no row.
    public func scalar<T: PostgresDecodable>(_ type: T?.Type) throws -> T? {
        guard let first else { return nil }
        return try first[0].decode(type)
    }
}

/// One row of a result.
public struct PostgresRow: Sendable {
    let rows: PostgresRows
    let index: Int

    public var columns: [PostgresRows.Column] { rows.columns }

    /// The cell at a column position.
    public subscript(column: Int) -> PostgresCell {
        precondition(column >= 0 && column < rows.columns.count, "column \(column) is out of range")
        return PostgresCell(
            column: rows.columns[column], text: rows.cells[index * rows.columns.count + column]
        )
    }

    /// The cell of a named column; a missing name gives a cell whose decoding throws.
    public subscript(column: String) -> PostgresCell {
        guard let position = rows.columnIndex(column) else {
            return PostgresCell(column: .init(name: column, type: .unknown), text: nil, missing: true)
        }
        return self[position]
    }

    /// Decodes a named column.
    public func decode<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        try self[column].decode(type)
    }

    /// Decodes a named, nullable column.
    public func decode<T: PostgresDecodable>(_ column: String, as type: T?.Type) throws -> T? {
        try self[column].decode(type)
    }
}

/// One value of a row, with its column's name and type.
public struct PostgresCell: Sendable {
    public let column: PostgresRows.Column
    /// The text Postgres sent; nil is SQL NULL.
    public let text: String?
    var missing = false

    public var isNull: Bool { text == nil }

    /// Decodes a non-NULL value.
    /// - Throws: `.decoding` for NULL, a missing column, or a value that does not fit `type`.
    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self) throws -> T {
        guard let text else {
            throw PostgresError(
                .decoding,
                missing
                    ? "the result has no column named \(column.name.debugDescription)"
                    : "column \(column.name.debugDescription) is NULL; decode it as \(T.self)? to allow NULL"
            )
        }
        do {
            return try T(postgresText: text, type: column.type)
        } catch var error as PostgresError {
            error.message = "column \(column.name.debugDescription): " + error.message
            throw error
        }
    }

    /// Decodes a value that may be NULL.
    public func decode<T: PostgresDecodable>(_ type: T?.Type) throws -> T? {
        if missing { return try decode(T.self) }
        guard text != nil else { return nil }
        return try decode(T.self)
    }
}
