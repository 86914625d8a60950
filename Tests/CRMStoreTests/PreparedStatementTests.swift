import CRMCore
import XCTest

@testable import CRMStore

/// Statements with parameters are prepared once per connection, and their column names are
/// read from libpq only once: a schema change must still show through.
final class PreparedStatementTests: XCTestCase {
    func testAChangedTableIsPreparedAfreshWithItsNewColumns() throws {
        let db = try ScratchDatabase.create(for: self)
        let c = try Connection(dsn: db.dsn, connectTimeoutSeconds: 5)
        try c.execute("CREATE TABLE t (id int, a text)")
        try c.execute("INSERT INTO t VALUES (1, 'x'), (2, 'y')")
        let select: (Int) -> SQL = { id in "SELECT * FROM t WHERE id = \(id)" }
        XCTAssertEqual(try c.execute(select(1)).first?.string("a"), "x")
        XCTAssertEqual(try c.execute(select(2)).first?.string("a"), "y", "the same statement, its columns known")
        try c.execute("ALTER TABLE t ADD COLUMN b text DEFAULT 'new'")
        let row = try XCTUnwrap(c.execute(select(1)).first)
        XCTAssertEqual(row.string("a"), "x")
        XCTAssertEqual(row.string("b"), "new", "a plan whose result changed is prepared again, with the new column names")
        try c.execute("ALTER TABLE t RENAME COLUMN a TO renamed")
        let renamed = try XCTUnwrap(c.execute(select(2)).first)
        XCTAssertEqual(renamed.string("renamed"), "y")
        XCTAssertNil(renamed.string("a"))
    }

    /// Fixed statements are found by their id, not their text: each runs as itself, and a
    /// schema change prepares it afresh as it does an interpolated one.
    func testFixedStatementsAreFoundByIdAndPreparedAfreshAfterASchemaChange() throws {
        let db = try ScratchDatabase.create(for: self)
        let c = try Connection(dsn: db.dsn, connectTimeoutSeconds: 5)
        try c.execute("CREATE TABLE t (id int, a text)")
        try c.execute("INSERT INTO t VALUES (1, 'x'), (2, 'y')")
        let byID = SQL.Fixed("SELECT * FROM t WHERE id = $1")
        let byText = SQL.Fixed("SELECT id FROM t WHERE a = $1")
        let sameText = SQL.Fixed("SELECT * FROM t WHERE id = $1")
        XCTAssertNotEqual(byID.id, sameText.id)
        for _ in 0..<2 {
            XCTAssertEqual(try c.execute(byID("1")).first?.string("a"), "x")
            XCTAssertEqual(try c.execute(byText("y")).first?.int("id"), 2)
            XCTAssertEqual(try c.execute(sameText("2")).first?.string("a"), "y")
        }
        try c.execute("ALTER TABLE t ADD COLUMN b text DEFAULT 'new'")
        let row = try XCTUnwrap(c.execute(byID("1")).first)
        XCTAssertEqual(row.string("b"), "new", "prepared again, with the new column names")
        XCTAssertEqual(try c.execute(byText("x")).first?.int("id"), 1)
        XCTAssertEqual(try c.execute(sameText("2")).first?.string("b"), "new", "its twin by text, prepared afresh on its own")
    }

    /// A prepared statement takes PostgreSQL's generic plan after five calls when that looks as
    /// cheap; a statement planned per call is never prepared: it goes as the unnamed statement,
    /// which PostgreSQL plans with the values bound to it.
    func testAStatementPlannedPerCallIsNeverPrepared() throws {
        let db = try ScratchDatabase.create(for: self)
        let c = try Connection(dsn: db.dsn, connectTimeoutSeconds: 5)
        try c.execute("CREATE TABLE t (id int)")
        try c.execute("INSERT INTO t SELECT generate_series(1, 10)")
        let prepared: SQL = "SELECT count(*) AS n FROM t WHERE id > \(2)"
        var perCall: SQL = "SELECT count(*) AS n FROM t WHERE id > \(3)"
        perCall.plannedPerCall = true
        for _ in 1...8 {
            XCTAssertEqual(try c.execute(prepared).first?.int("n"), 8)
            XCTAssertEqual(try c.execute(perCall).first?.int("n"), 7)
        }
        let statements = try c.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements").rows
        XCTAssertEqual(statements.map { [$0.string("statement"), $0.string("generic_plans"), $0.string("custom_plans")] },
                       [[prepared.text, "3", "5"]])
    }

    func testAffectedRowsAreCounted() throws {
        let db = try ScratchDatabase.create(for: self)
        let c = try Connection(dsn: db.dsn, connectTimeoutSeconds: 5)
        try c.execute("CREATE TABLE t (id int)")
        XCTAssertEqual(try c.execute("INSERT INTO t SELECT generate_series(1, \(1234))").affectedRows, 1234)
        XCTAssertEqual(try c.execute("DELETE FROM t WHERE id > \(1000)").affectedRows, 234)
        XCTAssertEqual(try c.execute("SELECT 1 WHERE \(false)").affectedRows, 0)
        XCTAssertEqual(Connection.affectedRows(nil), 0)
        XCTAssertEqual("".withCString { Connection.affectedRows($0) }, 0)
        XCTAssertEqual("42".withCString { Connection.affectedRows($0) }, 42)
    }

    /// Rows read libpq's result in place: they must stay readable after later statements and
    /// after the connection is gone, and tell NULL from the empty string, by name and position.
    func testRowsReadTheirResultAfterTheConnectionMovesOnOrCloses() throws {
        let db = try ScratchDatabase.create(for: self)
        var c: Connection? = try Connection(dsn: db.dsn, connectTimeoutSeconds: 5)
        let rows = try XCTUnwrap(c).execute("""
            SELECT v AS id, CASE WHEN v = 2 THEN NULL ELSE repeat('é', v) END AS text, v % 2 = 0 AS even
              FROM generate_series(\(0), 3) v ORDER BY v
            """).rows
        let later = try XCTUnwrap(c).execute("SELECT \("other") AS text").rows
        c = nil  // PQfinish: results outlive their connection
        XCTAssertEqual(rows.map { $0.int("id") }, [0, 1, 2, 3])
        XCTAssertEqual(rows.map { $0.string("text") }, ["", "é", nil, "ééé"])
        XCTAssertEqual(rows.map { $0.string(at: 1) }, ["", "é", nil, "ééé"])
        XCTAssertEqual(rows.map { $0.bool(at: 2) }, [true, false, true, false])
        XCTAssertNil(rows[0].string(at: 3), "no such column")
        XCTAssertNil(rows[0].string(at: -1))
        XCTAssertEqual(later.first?.string("text"), "other")
    }
}
